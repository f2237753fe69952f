"""Serves the Pyro5 benchmark object with Pyro5's default configuration: ``python pyro5_server.py``.

The client chooses the serializer; the daemon accepts every one Pyro5 ships (serpent, marshal,
json, msgpack if installed), so one server process serves both the default and the marshal runs.
"""

from __future__ import annotations

from typing import Any

import Pyro5.api
import serpent
from _common import announce, watch_parent


@Pyro5.api.expose
class Bench:
    """The benchmark object (the same methods as the pyroact and RPyC servers)."""

    def __init__(self) -> None:
        self.received = 0

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, data: Any) -> Any:
        # serpent sends bytes as a base64 dict; a user wanting bytes converts, as here (marshal
        # gives bytes already).
        return serpent.tobytes(data) if isinstance(data, dict) else data

    @Pyro5.api.oneway
    def notify(self, value: int) -> None:
        self.received += 1

    def count(self) -> int:
        return self.received


def main() -> None:
    watch_parent()
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Bench(), "bench")
    announce(str(uri))
    daemon.requestLoop()


if __name__ == "__main__":
    main()
