"""Timeouts and cleaning up: proxy timeouts, _release, transient reaping and _gotReaped.

``proxy._setTimeout(s)`` bounds connecting and every call; on expiry a ``TimeoutError`` (a
``ConnectionClosedError``) is raised and the connection is dropped. The call may still run on
the server (at-most-once semantics). ``daemon.setTransientsCleanupAge(s)`` disconnects
unnamed objects that were not used for ``s`` seconds and calls their ``_gotReaped()``.
"""

from __future__ import annotations

import threading
import time

import pyroact.core
from pyroact.errors import ConnectionClosedError, ProtocolError, TimeoutError


class Job(pyroact.core.ObjBase):
    reaped = threading.Event()

    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)

    def status(self) -> str:
        return "running"

    def _gotReaped(self) -> None:
        Job.reaped.set()


class Service(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)

    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "finally done"

    def new_job(self) -> pyroact.core.DynamicProxy:
        job = Job()
        daemon = self.getDaemon()
        assert daemon is not None
        daemon.connect(job)  # unnamed: a transient, so it can be reaped
        return job.getProxy()


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    daemon.setTimeout(20)  # server-side I/O timeout (None clears it)
    uri = daemon.connect(Service(), "service")  # named: never reaped
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        service = pyroact.core.getProxyForURI(uri)
        service._setTimeout(0.2)
        start = time.monotonic()
        try:
            service.slow(0.6)
        except TimeoutError as exc:
            print(
                f"TimeoutError after {time.monotonic() - start:.1f}s,",
                "is a ConnectionClosedError:",
                isinstance(exc, ConnectionClosedError),
            )
        service._setTimeout(None)
        print("next call reconnects:", service.slow(0))

        service._release()  # drop the connection; the proxy reconnects when used again
        print("after _release, connected:", service.adapter.connected)

        daemon.setTransientsCleanupAge(0.3)
        job = service.new_job()
        print("job status:", job.status())
        print("job reaped after idling:", Job.reaped.wait(5))
        try:
            job.status()
        except ProtocolError as exc:
            print("calling the reaped job:", str(exc).split(" '")[0])
        print("the named service is still there:", service.slow(0))
        service._release()
        job._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("timeouts_reaping done")


if __name__ == "__main__":
    main()
