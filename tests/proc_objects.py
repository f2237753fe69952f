"""Server-side classes for the process-mode tests (importable in worker processes).

Worker processes cannot share Python objects with the test, so the objects here report what
happened through their return values, through files whose paths the test passes in (file
gates: a method waits for a file to appear), or through the daemon's counters.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pyroact.core import ObjBase, SynchronizedObjBase


def burn(seconds: float) -> int:
    """Busy-loop pure-Python CPU for ``seconds``; returns the iteration count."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def wait_for_file(path: str, timeout: float) -> bool:
    """Poll until ``path`` exists (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.005)
    return False


def timed_echo_call(uri: Any, value: Any) -> tuple[Any, float]:
    """Call ``echo(value)`` on ``uri`` (from inside a server call): (its result, seconds)."""
    from pyroact.core import DynamicProxy

    proxy = DynamicProxy(uri)
    try:
        start = time.monotonic()
        result = proxy.echo(value)
        return result, time.monotonic() - start
    finally:
        proxy._release()


def init_tls(tls: Any) -> None:
    """A module-level TLS initialiser (picklable by reference, so workers can run it)."""
    tls.init_count = getattr(tls, "init_count", 0) + 1
    tls.init_pid = os.getpid()
    tls.marker = f"{os.getpid()}-{id(tls)}-{time.monotonic_ns()}"


def init_tls_failing_in_workers(tls: Any) -> None:
    """A TLS initialiser that works in the parent and raises in a worker (a missing resource)."""
    if type(getattr(tls, "caller", None)).__name__ == "WorkerCaller":
        raise RuntimeError("no database connection in this worker")


class Worker(ObjBase):
    """A general object for the process-mode tests (its state is picklable)."""

    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.value = 0
        self.log: list[Any] = []

    def pid(self) -> int:
        return os.getpid()

    def echo(self, value: Any) -> Any:
        return value

    def record(self, value: Any) -> None:
        self.log.append(value)

    def get_log(self) -> list[Any]:
        return list(self.log)

    def bump(self) -> int:
        self.value += 1
        return self.value

    def burn(self, seconds: float) -> int:
        burn(seconds)
        return os.getpid()

    def sleep(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    def timed_burn(self, seconds: float) -> tuple[float, float]:
        """Burn CPU for ``seconds``; (start, end) on the system-wide monotonic clock."""
        start = time.monotonic()
        burn(seconds)
        return start, time.monotonic()

    def burn_then_wait(self, seconds: float, path: str, timeout: float) -> bool:
        """Burn CPU for ``seconds``, then wait for ``path`` to exist (True if it did)."""
        burn(seconds)
        return wait_for_file(path, timeout)

    def burn_marked(self, path: str, seconds: float) -> tuple[float, float]:
        """Create ``path`` (the call has started), burn CPU for ``seconds``; (start, end)."""
        Path(path).touch()
        return self.timed_burn(seconds)

    def burn_then_call(self, seconds: float, uri: Any, value: Any) -> tuple[Any, float]:
        """Burn CPU, then call ``echo(value)`` on ``uri``: (its result, seconds it took)."""
        burn(seconds)
        return timed_echo_call(uri, value)

    def wait_then_call(self, path: str, uri: Any, value: Any, timeout: float) -> tuple[Any, float]:
        """Wait (idle) for ``path``, then call ``echo(value)`` on ``uri``: as burn_then_call."""
        assert wait_for_file(path, timeout), f"{path} did not appear"
        return timed_echo_call(uri, value)

    def wait_then_connect(self, path: str, timeout: float) -> float:
        """Wait (idle) for ``path``, then host a new object here; the seconds it took."""
        assert wait_for_file(path, timeout), f"{path} did not appear"
        start = time.monotonic()
        self.getDaemon().connect(Worker())
        return time.monotonic() - start

    def burn_until(self, path: str, timeout: float) -> tuple[float, float]:
        """Burn CPU until ``path`` exists (at most ``timeout`` s); (start, end)."""
        start = time.monotonic()
        # Look at the gate less often than the GIL switch interval (5 ms): a thread that
        # drops and retakes the GIL every millisecond (a syscall each time) keeps a waiting
        # thread, such as the worker's link reader, from ever asking for the GIL, so it
        # could starve for seconds (CPython's convoy effect).
        while not os.path.exists(path) and time.monotonic() - start < timeout:
            burn(0.02)
        return start, time.monotonic()

    def timed_echo(self, value: Any) -> tuple[Any, float]:
        """``value`` and when the call ran (system-wide monotonic clock)."""
        return value, time.monotonic()

    def burn_then_connect(self, seconds: float) -> float:
        """Burn CPU, then host a new object here; the seconds the ``connect()`` took."""
        burn(seconds)
        start = time.monotonic()
        self.getDaemon().connect(Worker())
        return time.monotonic() - start

    def touch(self, path: str) -> None:
        Path(path).touch()

    def hang(self, started: str, release: str, timeout: float = 30.0) -> bool:
        """Say it started (create ``started``), then wait for ``release`` to exist."""
        Path(started).touch()
        return wait_for_file(release, timeout)

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def make_child(self) -> Any:
        child = Worker()
        self.getDaemon().connect(child)
        return child.getProxy()

    def make_attr_child(self) -> Any:
        child = Worker()
        child.value = 41
        self.getDaemon().connect(child)
        return child.getAttrProxy()

    def my_proxy(self) -> Any:
        return self.getProxy()

    def my_attr_proxy(self) -> Any:
        return self.getAttrProxy()

    def call_back(self, callback: Any, value: Any) -> Any:
        return callback.notify((value, os.getpid()))

    def caller_addr(self) -> Any:
        caller = self.getLocalStorage().caller
        return None if caller is None else tuple(caller.addr)

    def caller_attr(self, name: str) -> Any:
        return getattr(self.getLocalStorage().caller, name, None)

    def tls_info(self) -> tuple[Any, Any, Any]:
        tls = self.getLocalStorage()
        return (
            getattr(tls, "init_count", None),
            getattr(tls, "marker", None),
            getattr(tls, "init_pid", None),
        )


class SyncRecorder(SynchronizedObjBase):
    """Records calls in order and the most calls it saw running at once."""

    def __init__(self) -> None:
        SynchronizedObjBase.__init__(self)
        self.log: list[Any] = []
        self.active = 0
        self.max_active = 0

    def record(self, value: Any, hold: float = 0.0) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if hold:
                time.sleep(hold)
            self.log.append(value)
        finally:
            self.active -= 1
        return os.getpid()

    def record_sync(self, value: Any) -> int:
        return self.record(value)

    def get_log(self) -> list[Any]:
        return list(self.log)

    def get_max_active(self) -> int:
        return self.max_active

    def block(self, release: str, timeout: float = 20.0) -> bool:
        return wait_for_file(release, timeout)


class Reapable(Worker):
    """Writes a marker file from ``_gotReaped`` (which runs where the object lives)."""

    def __init__(self, marker: str) -> None:
        Worker.__init__(self)
        self.marker = marker

    def _gotReaped(self) -> None:
        with open(self.marker, "a") as f:
            f.write(f"{os.getpid()}\n")


class LockHolder(ObjBase):
    """Holds a lock: its instances cannot be pickled."""

    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.lock = threading.Lock()

    def pid(self) -> int:
        return os.getpid()


class SocketHolder(ObjBase):
    """Holds an open socket: its instances cannot be pickled."""

    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def pid(self) -> int:
        return os.getpid()


class FileHolder(ObjBase):
    """Keeps a file open for its whole life (possible only when created inside the worker)."""

    def __init__(self, path: str) -> None:
        ObjBase.__init__(self)
        self.file = open(path, "w+")  # noqa: SIM115 - held open on purpose

    def write_and_read(self, text: str) -> tuple[str, int]:
        self.file.seek(0)
        self.file.truncate()
        self.file.write(text)
        self.file.flush()
        self.file.seek(0)
        return self.file.read(), os.getpid()


class SyncWorker(SynchronizedObjBase, Worker):
    """``Worker`` as a SynchronizedObjBase: one call at a time."""
