"""Multithreading: threaded vs single-threaded daemons, and SynchronizedObjBase.

A threaded daemon runs calls that arrive over different connections (proxies) at the same
time; a single-threaded daemon runs them one after another in its request-loop thread.
``SynchronizedObjBase`` serialises the calls of one object even in a threaded daemon.
"""

from __future__ import annotations

import threading
import time

import pyroact.core
import pyroact.util


class Worker(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def work(self, seconds: float) -> None:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        time.sleep(seconds)
        with self._lock:
            self.running -= 1

    def peak(self) -> int:
        return self.max_running


class SyncWorker(pyroact.core.SynchronizedObjBase, Worker):
    """Same code; the base class makes its remote calls run one at a time."""

    def __init__(self) -> None:
        Worker.__init__(self)


def measure(mode: str, obj: Worker, clients: int = 3, seconds: float = 0.2) -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0, mode=mode)
    uri = daemon.connect(obj)
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.05}, daemon=True)
    loop.start()
    try:
        # One proxy per client thread: a shared proxy would serialise the calls itself.
        proxies = [pyroact.core.getProxyForURI(uri) for _ in range(clients)]
        threads = [threading.Thread(target=p.work, args=(seconds,)) for p in proxies]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        elapsed = time.monotonic() - start
        print(
            f"{mode:8} daemon, {type(obj).__name__:10}: {clients} calls of {seconds}s "
            f"took {elapsed:.2f}s, at most {proxies[0].peak()} at once"
        )
        for p in proxies:
            p._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()


def main() -> None:
    print("supports_multithreading():", pyroact.util.supports_multithreading())
    measure("threaded", Worker())
    measure("single", Worker())
    measure("threaded", SyncWorker())
    print("multithreading done")


if __name__ == "__main__":
    main()
