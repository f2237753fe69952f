"""The single-threaded server mode: one selector loop, every call inline (layer 5).

The thread that calls ``handleRequests`` accepts, reads and runs calls; all connections share
one thread-local storage, as in Pyro 3 (use ``tls.caller`` to tell sessions apart). A call
into this daemon made from inside one of its own calls deadlocks, as Pyro 3 documents; use
the threaded mode for callbacks into the same process.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._serverbase import ServerHost, select_round

__all__ = ["SingleServer"]

_EXPIRY_INTERVAL = 0.25


class SingleServer:
    """Serves every connection from the thread that runs the request loop.

    Args:
        daemon: the TCPServer this mode serves.
    """

    shared_tls = True

    def __init__(self, daemon: ServerHost) -> None:
        self.daemon = daemon
        self.selector = selectors.DefaultSelector()
        self.selector.register(daemon.sock.fileno(), selectors.EVENT_READ, None)
        self._next_expiry = 0.0

    def submit(self, task: Callable[[], None]) -> None:
        """Run a call now, in this thread."""
        task()

    def register(self, conn: Any) -> None:
        """Start watching a new connection."""
        self.selector.register(conn.fd, selectors.EVENT_READ, conn)

    def forget(self, conn: Any) -> None:
        """Stop watching a connection (before its socket is closed)."""
        try:
            self.selector.unregister(conn.fd)
        except (KeyError, ValueError):
            pass

    def resume(self, conn: Any) -> None:
        """Nothing to do: the loop that ran the call goes on with the connection's frames."""

    def handle_requests(
        self, timeout: float | None, others: Sequence[Any], callback: Callable[..., Any] | None
    ) -> None:
        """One round: accept, read and run calls, then report ready ``others``."""

        def on_event(conn: Any) -> None:
            if conn is None:
                new = self.daemon.accept_connection()
                if new is not None:
                    self.register(new)
            else:
                self.daemon.connection_readable(conn)

        select_round(self.selector, timeout, others, callback, on_event)
        now = time.monotonic()
        # Walking every connection after every round would make idle connections slow down
        # the busy ones: deadlines and idle timeouts are checked a few times a second.
        if now >= self._next_expiry:
            self._next_expiry = now + _EXPIRY_INTERVAL
            self.daemon.expire_connections(now)

    def server_sockets(self) -> list[Any]:
        """The listening socket and every connection socket (this changes over time)."""
        return [self.daemon.sock, *(c.channel.sock for c in list(self.daemon.connections.values()))]

    def close(self) -> None:
        """Release the selector."""
        self.selector.close()
