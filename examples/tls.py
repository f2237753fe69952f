"""Thread-local storage (TLS) in Pyro objects: getLocalStorage(), caller and setInitTLS.

In a threaded daemon every connection (so every proxy) has its own storage; in a
single-threaded daemon all calls share one. ``tls.caller`` is the connection of the call
being served (pyroact also sets it for oneway calls).
"""

from __future__ import annotations

import threading

import pyroact.core


def initTLS(tls: object) -> None:
    """Run once for each new storage: create the attributes the methods rely on."""
    tls.calls = 0  # type: ignore[attr-defined]


class Session(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.oneway_callers: list[object] = []
        self.oneway_seen = threading.Event()

    def hit(self) -> tuple[int, int]:
        tls = self.getLocalStorage()
        tls.calls += 1
        return tls.calls, tls.caller.addr[1]  # the client's port identifies the connection

    def note(self) -> None:  # called oneway
        self.oneway_callers.append(self.getLocalStorage().caller)
        self.oneway_seen.set()


def run(mode: str) -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0, mode=mode)
    daemon.setInitTLS(initTLS)
    session = Session()
    uri = daemon.connect(session)
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        first, second = pyroact.core.getProxyForURI(uri), pyroact.core.getProxyForURI(uri)
        results = [first.hit(), first.hit(), second.hit()]
        print(f"{mode:8}: (calls, client port) per call: {results}")
        first._setOneway("note")
        first.note()
        session.oneway_seen.wait(5)
        print(f"{mode:8}: oneway call saw caller: {session.oneway_callers[0] is not None}")
        first._release()
        second._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()


def main() -> None:
    run("threaded")  # counts 1, 2 on the first proxy and 1 on the second
    run("single")  # one shared storage: 1, 2, 3
    print("tls done")


if __name__ == "__main__":
    main()
