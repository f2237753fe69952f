"""A pyroact server for the mobile-code tests, run as a separate process.

Usage: python mobile_server.py MODE [--mobile] [--validator V] [--path DIR]

Serves a ``mobile_objects.Shop`` (validator ``V``, see there) as ``shop`` and, in the process
mode (two workers), also a replicated one as ``replicated``, on 127.0.0.1 (any port). With
``--mobile``, ``PYRO_MOBILE_CODE`` is on. ``--path DIR`` puts DIR on this process's
``sys.path`` only (modules the client lacks). Prints ``URI <shop uri>`` and serves until stdin
closes or the process is killed. The test client's own module folders are never on this
process's path, so the modules it uploads are really missing here (and in the workers, which
inherit this path).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_objects import Shop  # noqa: E402
from serve_until_stdin_closes import serve  # noqa: E402

import pyroact.core  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--mobile", action="store_true")
    parser.add_argument("--validator", default="none")
    parser.add_argument("--path")
    opts = parser.parse_args()
    if opts.path:
        sys.path.insert(0, opts.path)
    pyroact.config.PYRO_MOBILE_CODE = opts.mobile
    process = opts.mode == "process"
    daemon = pyroact.core.Daemon(
        host="127.0.0.1", port=0, mode=opts.mode, workers=2 if process else None
    )
    factory = functools.partial(Shop, opts.validator)
    uri = daemon.connect(factory if process else factory(), "shop")
    if process:
        daemon.connect(factory, "replicated", placement="replicated")
    serve(daemon, uri)


if __name__ == "__main__":
    main()
