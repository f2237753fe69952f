"""Helpers for the remote-object tests: daemons in threads and processes, raw clients, waiting.

Everything here binds 127.0.0.1 with port 0 and bounds every wait with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyroact
from pyroact import _connection as connection_sm
from pyroact import _wirespec as spec
from pyroact import serializer
from pyroact.core import Daemon
from pyroact.transport import Channel, connect
from pyroact.wire import Frame

MODES = ("single", "threaded")
TESTS_DIR = Path(__file__).resolve().parent
SERVERS_DIR = TESTS_DIR / "servers"


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds.

    Returns:
        The predicate's truthy value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def start_in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` in a new thread; the thread and the list its result (or error) goes to."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # reported by the assertion on the result
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@contextlib.contextmanager
def config_values(**items: Any) -> Iterator[None]:
    """Set ``pyroact.config`` items for the duration of the block, then restore them."""
    cfg = pyroact.config
    saved: dict[str, Any] = {}
    for name in items:
        saved[name] = getattr(cfg, name) if cfg.source(name) == "code" else _UNSET
    try:
        for name, value in items.items():
            setattr(cfg, name, value)
        yield
    finally:
        for name, value in saved.items():
            if value is _UNSET:
                cfg.reset(name)
            else:
                setattr(cfg, name, value)


_UNSET = object()


class LoopThread:
    """Runs ``daemon.requestLoop`` in a thread and records what the loop raised."""

    def __init__(self, daemon: Daemon, timeout: float = 0.1) -> None:
        self.daemon = daemon
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(
            target=self._run, args=(timeout,), name="test-requestloop", daemon=True
        )

    def _run(self, timeout: float) -> None:
        try:
            self.daemon.requestLoop(timeout=timeout)
        except BaseException as exc:  # recorded and re-raised by the test's context manager
            self.errors.append(exc)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.daemon.shutdown()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "request loop did not stop after shutdown()"


@contextlib.contextmanager
def serving(
    mode: str, *, check_errors: bool = True, daemon_class: type[Daemon] = Daemon, **kwargs: Any
) -> Iterator[Daemon]:
    """A Daemon in ``mode`` whose request loop (timeout 0.1) runs in a background thread.

    Always shuts down, joins the loop thread and calls ``closedown``. An exception that
    escaped the request loop fails the test (unless ``check_errors`` is False).
    """
    daemon = daemon_class(mode=mode, **kwargs)
    loop = LoopThread(daemon)
    daemon.test_loop = loop  # type: ignore[attr-defined]
    loop.start()
    try:
        yield daemon
    finally:
        try:
            loop.stop()
        finally:
            daemon.closedown()
    if check_errors and loop.errors:
        raise AssertionError(f"request loop raised {loop.errors!r}") from loop.errors[0]


class ServerProcess:
    """A pyroact server in a separate process (``tests/servers/<script>``), printing its URI.

    The script prints one line ``URI <uri>`` when it serves, then runs until killed or until
    its stdin closes.
    """

    def __init__(self, script: str, *args: str, timeout: float = 20.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS_DIR.parent), *filter(None, [env.get("PYTHONPATH")])]
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVERS_DIR / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(SERVERS_DIR),
        )
        self.uri = self._read_uri(timeout)

    def _read_uri(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise AssertionError(f"server process printed no URI within {timeout}s")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.kill()
                    raise AssertionError(f"server process exited early:\n{err}")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode().strip()
        assert line.startswith("URI "), line
        return line[4:]

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class RawClient:
    """A hand-driven client built from ``pyroact._connection`` and ``pyroact.transport``."""

    def __init__(
        self, port: int, ident: str | None = None, *, handshake: bool = True, timeout: float = 5
    ) -> None:
        self.sock = connect("127.0.0.1", port, timeout=timeout)
        self.channel = Channel(self.sock, timeout=timeout)
        self.sm = connection_sm.Connection(connection_sm.CLIENT)
        self.key = connection_sm.munge_ident(ident) if ident else None
        if handshake:
            self.handshake()

    def handshake(self) -> None:
        self.sm.start()
        self.sm.handle_challenge(self.channel.recv_frame())
        token = connection_sm.client_token(self.key, self.sm.transcript) if self.key else b""
        self.channel.send(self.sm.build_connect(token, self.key if token else None))
        self.sm.handle_grant(self.channel.recv_frame())

    def request_segments(
        self, object_id: str, method: str, args: Sequence[Any] = (), *, oneway: bool = False
    ) -> tuple[int, list[Any]]:
        payload, buffers, flags = serializer.dumps_call(tuple(args), {})
        seq = self.sm.next_seq()
        msg = spec.MSG_ONEWAY if oneway else spec.MSG_REQUEST
        segments = self.sm.build(
            msg,
            seq=seq,
            object_id=object_id,
            method=method,
            payload=payload,
            buffers=buffers,
            flags=flags,
        )
        return seq, segments

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, object_id: str, method: str, *args: Any) -> Frame:
        """Send a request and return the (checked) reply frame."""
        _seq, segments = self.request_segments(object_id, method, args)
        self.channel.send(segments)
        return self.sm.check(self.channel.recv_frame())

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` for the server to close the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
        return False

    def close(self) -> None:
        self.channel.close()


def segments_bytes(segments: Sequence[Any]) -> bytes:
    """The bytes of an encoded frame."""
    return b"".join(bytes(memoryview(s).cast("B")) for s in segments)
