"""Server-side classes the remote-object tests serve (importable by client and server)."""

from __future__ import annotations

import threading
import time
from typing import Any

from pyroact.core import CallbackObjBase, ObjBase, SynchronizedObjBase

# Set when a Bomb is unpickled anywhere in this process.
UNPICKLED = threading.Event()


def _explode() -> str:
    UNPICKLED.set()
    return "exploded"


class Bomb:
    """Unpickling this sets UNPICKLED (proves whether a peer's pickle was loaded)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


class Sub:
    def __init__(self) -> None:
        self.x = 1

    def bump(self) -> int:
        self.x += 1
        return self.x


class CustomInitError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"error {code}: {detail}")
        self.code = code
        self.detail = detail


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("Unpicklable cannot be pickled")


class Echo(ObjBase):
    """A general-purpose test object."""

    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.value = 0
        self.sub = Sub()
        self.gate = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.log: list[str] = []
        self.callers: list[Any] = []
        self.reaped = 0
        self._private_state = "hidden"

    def echo(self, value: Any) -> Any:
        self.log.append(f"echo {value!r}")
        return value

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def fail(self, message: str) -> None:
        secret_local = "xyzzy-42"  # noqa: F841 - shown by PYRO_DETAILED_TRACEBACK
        raise ValueError(message)

    def fail_custom(self) -> None:
        raise CustomInitError(7, "custom")

    def unpicklable(self) -> Any:
        return Unpicklable()

    def wait_gate(self, timeout: float = 10.0) -> bool:
        self.log.append("wait_gate start")
        self.started.set()
        opened = self.gate.wait(timeout)
        self.log.append("wait_gate end")
        self.finished.set()
        return opened

    def record_caller(self) -> Any:
        caller = self.getLocalStorage().caller
        self.callers.append(caller)
        return caller.addr if caller is not None else None

    def tls_marker(self) -> str:
        tls = self.getLocalStorage()
        if not hasattr(tls, "marker"):
            tls.marker = f"tls-{id(tls)}-{time.monotonic_ns()}"
        return str(tls.marker)

    def tls_attr(self, name: str) -> Any:
        return getattr(self.getLocalStorage(), name, None)

    def caller_attr(self, name: str) -> Any:
        return getattr(self.getLocalStorage().caller, name, None)

    def identity(self, value: Any) -> Any:
        return value

    def call_through(self, proxy: Any, value: Any) -> Any:
        return proxy.echo(value)

    def make_child(self) -> Any:
        child = Echo()
        self.getDaemon().connect(child)
        return child.getProxy()

    def _private(self) -> str:
        return "private"

    def _gotReaped(self) -> None:
        self.reaped += 1


class Counter(ObjBase):
    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.value = 0

    def __iadd__(self, other: int) -> Any:
        self.value += other
        return self.getAttrProxy()

    def __add__(self, other: int) -> int:
        return self.value + other


class Container(ObjBase):
    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.data = [10, 20, 30]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> int:
        return self.data[index]

    def __setitem__(self, index: int, value: int) -> None:
        self.data[index] = value

    def __contains__(self, value: int) -> bool:
        return value in self.data


class ConcurrencyProbe:
    """Counts how many calls are inside ``enter`` at once."""

    def __init__(self, parties: int) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.parties = parties
        self.all_in = threading.Event()

    def enter(self, hold: float) -> int:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            if self.active >= self.parties:
                self.all_in.set()
        try:
            # Wait (bounded) for the other calls to arrive: concurrent objects see them all.
            self.all_in.wait(hold)
        finally:
            with self.lock:
                self.active -= 1
        return self.max_active


class ProbeObj(ObjBase):
    def __init__(self, parties: int) -> None:
        ObjBase.__init__(self)
        self.probe = ConcurrencyProbe(parties)

    def enter(self, hold: float) -> int:
        return self.probe.enter(hold)


class SyncProbeObj(SynchronizedObjBase):
    def __init__(self, parties: int) -> None:
        SynchronizedObjBase.__init__(self)
        self.probe = ConcurrencyProbe(parties)

    def enter(self, hold: float) -> int:
        return self.probe.enter(hold)


class Callback(CallbackObjBase):
    def __init__(self) -> None:
        CallbackObjBase.__init__(self)
        self.received: list[Any] = []

    def notify(self, value: Any) -> str:
        self.received.append(value)
        return f"got {value}"

    def explode(self, message: str) -> None:
        raise ValueError(message)


class CallbackServer(ObjBase):
    """Stores callback proxies and calls them."""

    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.lock = threading.Lock()
        self.callbacks: list[Any] = []

    def register(self, callback: Any) -> None:
        with self.lock:
            self.callbacks.append(callback)

    def fire(self, value: Any) -> list[str]:
        results: list[str] = []
        with self.lock:
            callbacks = list(self.callbacks)
        for cb in callbacks:
            try:
                results.append(cb.notify(value))
            except Exception as exc:
                results.append(f"dead: {type(exc).__name__}: {exc}")
        return results


class Bouncer(ObjBase):
    """A->B->A->B: each hop calls the other side with a fresh proxy to itself."""

    def __init__(self) -> None:
        ObjBase.__init__(self)
        self.peer_uri: Any = None
        self.max_depth = 0

    def bounce(self, n: int, caller: Any) -> int:
        self.max_depth = max(self.max_depth, n)
        if n <= 0:
            return 0
        return caller.bounce(n - 1, self.getProxy()) + 1


class Plain:
    """A delegate that is not an ObjBase."""

    def __init__(self) -> None:
        self.colour = "blue"

    def shout(self, word: str) -> str:
        return word.upper() + "!"
