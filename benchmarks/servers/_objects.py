"""The pyroact benchmark objects, in a module of their own so process-mode workers import them.

A process-mode worker is a fresh interpreter: an object connected by class is created there
from ``_objects.Bench``, which it imports (the parent passes its ``sys.path``, which starts with
this directory). A class defined in the server script would be ``__main__.Bench`` instead.
"""

from __future__ import annotations

from typing import Any

from _cpuwork import burn

from pyroact.core import ObjBase, SynchronizedObjBase


class Bench(ObjBase):
    """The benchmark object (the same methods as the Pyro5 and RPyC servers)."""

    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.received = 0

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, data: Any) -> Any:
        return data

    def notify(self, value: int) -> None:
        """The oneway target."""
        self.received += 1

    def count(self) -> int:
        """How many ``notify`` calls have run so far (the synchronous call after oneways)."""
        return self.received


class Burner(ObjBase):
    """The CPU workload: ``burn()`` runs about 5 ms of pure Python (``_cpuwork.burn``)."""

    def burn(self) -> int:
        return burn()


class SyncBurner(SynchronizedObjBase):
    """``Burner`` as a ``SynchronizedObjBase``: each instance runs one call at a time.

    Replicated in the process mode, that is one burn at a time per worker, the rest queued in
    the worker's mailbox without a thread; an ``ObjBase`` instead runs a worker's queued calls
    concurrently on its thread pool, where CPU-bound calls only share that process's GIL.
    """

    def burn(self) -> int:
        return burn()
