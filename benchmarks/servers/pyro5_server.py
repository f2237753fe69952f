"""Serves the Pyro5 benchmark object with Pyro5's default configuration: ``python pyro5_server.py``.

The client chooses the serializer; the daemon accepts every one Pyro5 ships (serpent, marshal,
json, msgpack if installed), so one server process serves both the default and the marshal runs.
Objects: ``bench`` (announced) and ``burner`` (``PYRO:burner@host:port``: ``burn()``, the 5 ms
CPU workload of ``_cpuwork.py``), both on Pyro5's default thread-pool server.
"""

from __future__ import annotations

from typing import Any

import Pyro5.api
import serpent
from _common import announce, watch_parent
from _cpuwork import burn


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


@Pyro5.api.expose
class Burner:
    """The CPU workload (the same loop as the pyroact server's ``Burner``)."""

    def burn(self) -> int:
        return burn()


def main() -> None:
    watch_parent()
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Bench(), "bench")
    daemon.register(Burner, "burner")  # a class: Pyro5 makes an instance per session
    announce(str(uri))
    daemon.requestLoop()


if __name__ == "__main__":
    main()
