"""Serves the RPyC benchmark service (default protocol config): ``python rpyc_server.py``."""

from __future__ import annotations

import logging
from typing import Any

import rpyc
from _common import announce, watch_parent
from rpyc.utils.server import ThreadedServer


class BenchService(rpyc.Service):
    """The benchmark service (the same methods as the pyroact and Pyro5 servers)."""

    def exposed_add(self, a: int, b: int) -> int:
        return a + b

    def exposed_echo(self, data: Any) -> Any:
        return data


def main() -> None:
    watch_parent()
    quiet = logging.getLogger("rpyc-bench")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    server = ThreadedServer(
        BenchService, hostname="127.0.0.1", port=0, auto_register=False, logger=quiet
    )
    announce(f"127.0.0.1:{server.port}")
    server.start()


if __name__ == "__main__":
    main()
