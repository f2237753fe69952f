"""Serves the Pyro5 benchmark object with Pyro5's default configuration: ``python pyro5_server.py``.

``python pyro5_server.py --ident PASSPHRASE``: the same, but the daemon refuses a connection
whose handshake data is not ``PASSPHRASE`` (``Daemon.validateHandshake``; the client sets
``proxy._pyroHandshake``). Pyro5 5.x has no HMAC key any more (Pyro4's ``_pyroHmacKey`` is
gone); the handshake is its documented hook for authenticating a connection, so this is the
closest equivalent of pyroact's ``setAllowedIdentifications`` (it sends the passphrase in clear,
where pyroact answers a challenge with an HMAC).

The client chooses the serializer; the daemon accepts every one Pyro5 ships (serpent, marshal,
json, msgpack if installed), so one server process serves both the default and the marshal runs.
Objects: ``bench`` (announced) and ``burner`` (``PYRO:burner@host:port``: ``burn()``, the 5 ms
CPU workload of ``_cpuwork.py``), both on Pyro5's default thread-pool server.
"""

from __future__ import annotations

import sys
from typing import Any

import Pyro5.api
import Pyro5.errors
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


class IdentDaemon(Pyro5.api.Daemon):
    """A daemon that accepts a connection only with the right handshake data."""

    def __init__(self, passphrase: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.passphrase = passphrase

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802 - Pyro5 API
        if data != self.passphrase:
            raise Pyro5.errors.SecurityError("wrong passphrase")
        return "hello"


def main() -> None:
    watch_parent()
    if "--ident" in sys.argv:
        passphrase = sys.argv[sys.argv.index("--ident") + 1]
        daemon: Pyro5.api.Daemon = IdentDaemon(passphrase, host="127.0.0.1", port=0)
    else:
        daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Bench(), "bench")
    daemon.register(Burner, "burner")  # a class: Pyro5 makes an instance per session
    announce(str(uri))
    daemon.requestLoop()


if __name__ == "__main__":
    main()
