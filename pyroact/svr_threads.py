"""The threaded server mode: a selector parks idle connections, a bounded pool runs calls (layer 5).

The request-loop thread only accepts (so ``getServerSockets`` is the listening socket, as in
Pyro 3). Accepted connections go to one I/O thread, which reads frames and hands calls to a
:class:`~pyroact._mailbox.ThreadPool`; a connection holds a thread only while one of its calls
runs, so a thousand idle clients cost no threads. While a call runs its connection is taken
out of the selector (its later frames wait in the kernel), and the call's end puts it back:
calls on one connection run in order, calls on different connections run concurrently.

On Linux each connection is registered with ``EPOLLONESHOT``: an event disarms it, so the
connection is parked for free while its call runs, and the thread that ends the call goes on
with the connection's queued frames and re-arms it itself: no wake-up of the I/O thread and no
re-registration per call. Elsewhere the I/O thread makes every change to its selector itself,
from a command queue that other threads fill and wake it for.

The process mode's parent also reads its worker links on this thread (:meth:`add_reader`):
a reply, a held call's turn and the next client frame are then handled in one thread and often
in one wake-up, and no link thread contends with the I/O thread for the GIL.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._mailbox import ThreadPool
from ._serverbase import ServerHost, select_round

__all__ = ["ThreadedServer"]

# How often the I/O thread checks handshake deadlines and idle timeouts.
_EXPIRY_INTERVAL = 0.25
_ONESHOT_READ = getattr(select, "EPOLLIN", 1) | getattr(select, "EPOLLONESHOT", 0)


class _Reader:
    """The selector data of a descriptor read for someone else (not a connection)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class ThreadedServer:
    """Serves connections from an I/O thread and a pool of call threads.

    Args:
        daemon: the TCPServer this mode serves.
        max_threads: the most calls running at once (``PYRO_THREADPOOL_SIZE``).
    """

    shared_tls = False

    def __init__(self, daemon: ServerHost, *, max_threads: int) -> None:
        self.daemon = daemon
        self.pool = ThreadPool(max_threads, name="pyroact-call")
        self.accept_selector = selectors.DefaultSelector()
        self.accept_selector.register(daemon.sock.fileno(), selectors.EVENT_READ, None)
        self._io = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._io.register(self._wake_r.fileno(), selectors.EVENT_READ, None)
        self._commands: collections.deque[tuple[str, Any]] = collections.deque()
        self._closed = False
        self._registered: set[int] = set()
        self._epoll: Any = None
        self._conns: dict[int, Any] = {}
        # Taken by register() and forget(): a connection's socket may be closed before it is
        # forgotten (at EOF), so its descriptor number can already belong to a connection being
        # registered on another thread; done in turns, forget() never unregisters that one.
        self._conns_lock = threading.Lock()
        # Descriptors this thread reads for someone else (add_reader): fd -> on_readable.
        self._readers: dict[int, Callable[[], None]] = {}
        if hasattr(select, "epoll"):
            self._epoll = select.epoll()
            self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)
        self._thread = threading.Thread(target=self._io_loop, name="pyroact-io", daemon=True)
        self._thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        """Run a call on the pool."""
        self.pool.submit(task)

    def _command(self, name: str, conn: Any) -> None:
        self._commands.append((name, conn))
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the wake-up pipe is full (so the thread will wake anyway) or closed

    def register(self, conn: Any) -> None:
        """Hand a new connection to the I/O thread."""
        if self._epoll is not None:
            with self._conns_lock:
                self._conns[conn.fd] = conn
                try:
                    self._epoll.register(conn.fd, _ONESHOT_READ)
                except OSError:
                    # Closed meanwhile (expired or refused): nothing to watch.
                    self._conns.pop(conn.fd, None)
        else:
            self._command("add", conn)

    def resume(self, conn: Any) -> None:
        """A call ended: go on with the connection's queued frames and watch it again."""
        if self._epoll is not None:
            self.daemon.process_backlog(conn)
            self._rearm(conn)
        else:
            self._command("resume", conn)

    def add_reader(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable()`` on the I/O thread whenever ``fd`` is readable.

        The watcher owns ``fd`` from now on: :meth:`remove_reader` closes it, so its number
        cannot be reused by a connection while it is still watched. ``on_readable`` must never
        block: every connection waits while it runs.

        Args:
            fd: a descriptor (level-triggered: it is reported until it is read).
            on_readable: what to call.
        """
        self._readers[fd] = on_readable
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            self._command("reader", fd)

    def remove_reader(self, fd: int) -> None:
        """Stop watching a descriptor given to :meth:`add_reader`, and close it; idempotent."""
        if self._readers.pop(fd, None) is None:
            return
        if self._epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        else:
            self._command("unreader", fd)  # the I/O thread unregisters it, then closes it

    def on_io_thread(self) -> bool:
        """Tell whether the calling thread is the I/O thread."""
        return threading.current_thread() is self._thread

    def _rearm(self, conn: Any) -> None:
        fd = conn.fd
        if not conn.paused and conn.connected and self._conns.get(fd) is conn:
            try:
                self._epoll.modify(fd, _ONESHOT_READ)
            except OSError:
                pass  # closed meanwhile

    def forget(self, conn: Any) -> None:
        """Stop watching a connection (before its socket is closed, or just after, at EOF)."""
        if self._epoll is not None:
            fd = conn.fd
            with self._conns_lock:
                if self._conns.get(fd) is conn:
                    del self._conns[fd]
                    try:
                        self._epoll.unregister(fd)
                    except OSError:
                        pass
        elif threading.current_thread() is self._thread:
            self._unwatch(conn.fd)
        else:
            self._command("del", conn)

    def handle_requests(
        self, timeout: float | None, others: Sequence[Any], callback: Callable[..., Any] | None
    ) -> None:
        """One round of the request loop: accept new connections, report ready ``others``."""

        def on_event(_data: Any) -> None:
            new = self.daemon.accept_connection()
            if new is not None:
                self.register(new)

        select_round(self.accept_selector, timeout, others, callback, on_event)

    def server_sockets(self) -> list[Any]:
        """The listening socket (connections are served in the background)."""
        return [self.daemon.sock]

    def _watch(self, conn: Any) -> None:
        fd = conn.fd
        if fd not in self._registered and conn.connected:
            self._io.register(fd, selectors.EVENT_READ, conn)
            self._registered.add(fd)

    def _unwatch(self, fd: int) -> None:
        if fd in self._registered:
            self._registered.discard(fd)
            self._io.unregister(fd)

    def _run_commands(self) -> None:
        while self._commands:
            name, conn = self._commands.popleft()
            if name == "add":
                self._watch(conn)
            elif name == "del":
                self._unwatch(conn.fd)
            elif name == "resume":
                self.daemon.process_backlog(conn)
                if not conn.paused:
                    self._watch(conn)
            elif name == "reader" and conn in self._readers:
                self._io.register(conn, selectors.EVENT_READ, _Reader(conn))
            elif name == "unreader":
                with contextlib.suppress(KeyError, ValueError):
                    self._io.unregister(conn)
                os.close(conn)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _epoll_loop(self) -> None:
        wake_fd = self._wake_r.fileno()
        next_expiry = time.monotonic() + _EXPIRY_INTERVAL
        while not self._closed:
            for fd, _mask in self._epoll.poll(_EXPIRY_INTERVAL):
                if fd == wake_fd:
                    self._drain_wakeups()
                    continue
                conn = self._conns.get(fd)
                if conn is not None:
                    self.daemon.connection_readable(conn)
                    self._rearm(conn)
                    continue
                on_readable = self._readers.get(fd)
                if on_readable is not None:
                    on_readable()
            now = time.monotonic()
            if now >= next_expiry:
                self.daemon.expire_connections(now)
                next_expiry = now + _EXPIRY_INTERVAL

    def _io_loop(self) -> None:
        if self._epoll is not None:
            self._epoll_loop()
            return
        next_expiry = time.monotonic() + _EXPIRY_INTERVAL
        while not self._closed:
            events = self._io.select(_EXPIRY_INTERVAL)
            for key, _mask in events:
                conn = key.data
                if conn is None:
                    self._drain_wakeups()
                    continue
                if isinstance(conn, _Reader):
                    on_readable = self._readers.get(conn.fd)
                    if on_readable is not None:
                        on_readable()
                    continue
                if conn.paused:
                    # Park it until its running call ends; the kernel holds what it sends.
                    self._unwatch(key.fd)
                    continue
                self.daemon.connection_readable(conn)
                if conn.paused:
                    self._unwatch(key.fd)
            self._run_commands()
            now = time.monotonic()
            if now >= next_expiry:
                self.daemon.expire_connections(now)
                next_expiry = now + _EXPIRY_INTERVAL

    def close(self) -> None:
        """Stop the I/O thread and the pool."""
        self._closed = True
        self._command("stop", None)
        self._thread.join(2.0)
        self.pool.shutdown(2.0)
        for fd in list(self._readers):
            if self._readers.pop(fd, None) is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._io.close()
        if self._epoll is not None:
            self._epoll.close()
        self.accept_selector.close()
        self._wake_r.close()
        self._wake_w.close()
