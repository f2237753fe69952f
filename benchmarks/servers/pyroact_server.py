"""Serves the pyroact benchmark objects: ``python pyroact_server.py MODE [--ident PASSPHRASE]``.

``MODE`` is ``single``, ``threaded`` or ``process``. With ``--ident`` the daemon requires that
passphrase (``setAllowedIdentifications([PASSPHRASE])``): clients must call
``proxy._setIdentification(PASSPHRASE)``. ``--maxconn N`` sets ``PYRO_MAXCONNECTIONS`` (Pyro 3's
default of 200 simultaneous connections would refuse the idle-connection workload's 1,000
with "server too busy"). ``--instance K`` does nothing but tell apart independent servers of
the same mode (the CPU group's per-core reference row starts one per core). The soft
descriptor limit is raised to the hard one, so the idle-connection workload can hold 1,000
connections.

Objects (``_objects.py``), each connected by class so that the process mode creates them inside
its workers:

* ``bench`` (announced): ``add``/``echo``/``notify``/``count``; *replicated* in the process
  mode (one instance per worker, each call to the least-loaded worker);
* ``bench-pinned``: the same class, *pinned* (one instance on one worker) in the process mode,
  for the oneway workload, whose ``count()`` must see every ``notify``; in the other modes it
  is just a second instance;
* ``burner``: ``burn()``, about 5 ms of pure-Python CPU (``_cpuwork.burn``), replicated in the
  process mode;
* ``burner-sync``: the same as a ``SynchronizedObjBase`` (one call at a time per instance, so
  per worker in the process mode).

The process mode runs ``os.cpu_count()`` workers. Clients reach the other objects by
``PYROLOC://host:port/<name>``.
"""

from __future__ import annotations

import os
import sys

from _common import announce, raise_fd_limit, watch_parent
from _objects import Bench, Burner, SyncBurner

import pyroact
import pyroact.wire
from pyroact.core import Daemon


def main() -> None:
    mode = sys.argv[1]
    ident = sys.argv[sys.argv.index("--ident") + 1] if "--ident" in sys.argv else None
    watch_parent()
    raise_fd_limit()
    if "--maxconn" in sys.argv:
        pyroact.config.PYRO_MAXCONNECTIONS = int(sys.argv[sys.argv.index("--maxconn") + 1])
    workers = os.cpu_count() or 1 if mode == "process" else None
    daemon = Daemon(host="127.0.0.1", port=0, norange=1, mode=mode, workers=workers)
    if ident is not None:
        daemon.setAllowedIdentifications([ident])
    uri = daemon.connect(Bench, "bench", placement="replicated")
    daemon.connect(Bench, "bench-pinned", placement="pinned")
    daemon.connect(Burner, "burner", placement="replicated")
    daemon.connect(SyncBurner, "burner-sync", placement="replicated")
    announce(str(uri), pyroact.wire.IMPLEMENTATION)
    daemon.requestLoop()


if __name__ == "__main__":
    main()
