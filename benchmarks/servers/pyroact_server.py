"""Serves one pyroact benchmark object: ``python pyroact_server.py single|threaded``."""

from __future__ import annotations

import sys
from typing import Any

from _common import announce, watch_parent

import pyroact.wire
from pyroact.core import Daemon, ObjBase


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


def main() -> None:
    mode = sys.argv[1]
    watch_parent()
    daemon = Daemon(host="127.0.0.1", port=0, norange=1, mode=mode)
    uri = daemon.connect(Bench(), "bench")
    announce(str(uri), pyroact.wire.IMPLEMENTATION)
    daemon.requestLoop()


if __name__ == "__main__":
    main()
