"""The threaded server mode's I/O thread: connections registered and forgotten from two threads.

A connection's socket is closed as soon as its peer's EOF is read, before the daemon forgets
the connection, so its descriptor number may already belong to a new connection that the
accepting thread is registering. Forgetting the old one must never unregister the new one
(which would then never be read, and be dropped at its handshake deadline).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until

from pyroact.svr_threads import ThreadedServer

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="the epoll I/O loop")


class FakeConnection:
    """What the I/O thread needs of a connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.paused = False
        self.connected = True


class FakeDaemon:
    """What a server mode needs of its daemon: here, only a record of what was readable."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections: dict[int, Any] = {}
        self.readable: list[FakeConnection] = []

    def accept_connection(self) -> None:
        return None

    def connection_readable(self, conn: FakeConnection) -> None:
        conn.sock.recv(4096)
        self.readable.append(conn)

    def process_backlog(self, conn: FakeConnection) -> None:
        pass

    def expire_connections(self, now: float) -> None:
        pass


class InterleavingEpoll:
    """An epoll that runs ``before_unregister`` (once) just before it unregisters."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.before_unregister: Any = None

    def unregister(self, fd: int) -> None:
        hook, self.before_unregister = self.before_unregister, None
        if hook is not None:
            hook()
        self.real.unregister(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def server() -> Iterator[tuple[ThreadedServer, FakeDaemon]]:
    daemon = FakeDaemon()
    srv = ThreadedServer(daemon, max_threads=2)  # type: ignore[arg-type]
    try:
        yield srv, daemon
    finally:
        srv.close()
        daemon.sock.close()


def test_forgetting_a_closed_connection_never_unregisters_the_one_that_reused_its_number(
    server: tuple[ThreadedServer, FakeDaemon],
) -> None:
    srv, daemon = server
    old_sock, old_peer = socket.socketpair()
    old = FakeConnection(old_sock)
    srv.register(old)
    old_sock.close()  # (as at EOF: closed before the daemon forgets it)
    new_sock, new_peer = socket.socketpair()
    if new_sock.fileno() != old.fd:
        pytest.skip("the new socket did not get the old descriptor number")
    new = FakeConnection(new_sock)
    epoll = InterleavingEpoll(srv._epoll)
    srv._epoll = epoll
    registering = threading.Thread(target=srv.register, args=(new,))

    def register_meanwhile() -> None:
        # The accepting thread registers the new connection while the old one is being
        # forgotten; it may have to wait for that, but only so long.
        registering.start()
        registering.join(0.3)

    epoll.before_unregister = register_meanwhile
    srv.forget(old)
    registering.join(5.0)
    assert not registering.is_alive()
    new_peer.sendall(b"CONNECT")
    wait_until(lambda: new in daemon.readable, timeout=5, what="the new connection read")
    for s in (old_peer, new_sock, new_peer):
        s.close()
