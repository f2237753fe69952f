"""What the server modes share: the daemon interface they see and one select round (layer 4).

Server modes never import ``protocol`` or ``core``; the daemon is passed in and used through
the :class:`ServerHost` interface below.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["ServerHost", "select_round"]


class ServerHost(Protocol):
    """The part of ``protocol.TCPServer`` a server mode calls."""

    sock: socket.socket
    connections: dict[int, Any]

    def accept_connection(self) -> Any:
        """Accept one connection and start its handshake; None when refused."""

    def connection_readable(self, conn: Any) -> None:
        """Read what a connection sent and act on its complete frames."""

    def process_backlog(self, conn: Any) -> None:
        """Go on with a connection's queued frames (after its call ended)."""

    def expire_connections(self, now: float) -> None:
        """Close connections past their handshake deadline or idle timeout."""


def select_round(
    selector: selectors.BaseSelector,
    timeout: float | None,
    others: Sequence[Any],
    callback: Callable[[list[Any]], Any] | None,
    on_event: Callable[[Any], None],
) -> None:
    """Wait once on ``selector`` plus ``others``; call ``on_event(data)`` per ready key.

    Args:
        selector: the mode's selector; each key's ``data`` is handed to ``on_event``.
        timeout: seconds to wait, None to block.
        others: extra file objects to watch this round (Pyro 3's ``others``).
        callback: called with the ready ``others``.
        on_event: called for each ready registered key.
    """
    extra: list[Any] = []
    for other in others:
        try:
            selector.register(other, selectors.EVENT_READ, ("other", other))
            extra.append(other)
        except KeyError:
            pass
    try:
        events = selector.select(timeout)
    finally:
        for other in extra:
            selector.unregister(other)
    ready: list[Any] = []
    for key, _mask in events:
        data = key.data
        if isinstance(data, tuple) and data[:1] == ("other",):
            ready.append(data[1])
        else:
            on_event(data)
    if ready and callback is not None:
        callback(ready)
