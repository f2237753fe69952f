"""Quickstart: one ObjBase served by a Daemon, called through a proxy.

The daemon runs its request loop in a background thread of this same script; the main thread
is the client. Everything stays on 127.0.0.1 and the OS picks the port (port 0).
"""

from __future__ import annotations

import threading

import pyroact.core


class Greeter(pyroact.core.ObjBase):
    """A remote object: subclass ObjBase and call its __init__."""

    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.greeted: list[str] = []

    def greet(self, name: str) -> str:
        self.greeted.append(name)
        return f"Hello, {name}!"

    def count(self) -> int:
        return len(self.greeted)


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    uri = daemon.connect(Greeter(), "greeter")
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        print("server URI:", uri)
        greeter = pyroact.core.getProxyForURI(uri)  # lazy: connects on the first call
        print(greeter.greet("world"))
        # PYROLOC asks the daemon itself for the object named "greeter" (no name server).
        by_name = pyroact.core.getProxyForURI(f"PYROLOC://127.0.0.1:{daemon.port}/greeter")
        print(by_name.greet("again"))
        print("calls served:", greeter.count())
        greeter._release()
        by_name._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("quickstart done")


if __name__ == "__main__":
    main()
