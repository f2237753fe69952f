"""Client connections a process-mode worker reads itself (layer 4).

How it works
------------
With ``PYRO_WORKER_READS`` the daemon hands a plain connection to the worker that serves its
calls: it stops watching the socket (the worker already has a duplicate of it, for writing
replies) and marks the call it forwards as the hand-over. From then on the worker's link
reader watches the socket beside the link, decodes the client's frames itself and runs the
calls of its own objects with no hop through the daemon's process, which is then not woken
for them at all. Each such call is recorded in the connection's slot of the worker's
completion board (``_board``), so the daemon can still count the worker's load, apply its
idle timeout and, should the worker die, fail the request in flight by name.

Anything else goes back: a frame the worker cannot serve (another worker's object, the
daemon's own object, a frame that is not a call), the end of the stream or a malformed one.
The worker stops running the connection's calls, lets the ones already admitted end, reads
on until no frame is half-received, and then sends the daemon the frames it has not acted on
(re-encoded: a connection without a session key has no MACs to keep) in a ``give_back``
notice. The daemon acts on them as if it had read them and watches the socket again, so the
connection's frames are still handled one after the other, by one reader at a time.

This module holds the connections and reads them; :mod:`pyroact._worker` decides what to do
with each frame.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any

from .errors import PyroError
from .wire import Frame, FrameDecoder, encode_frame

__all__ = ["ReadConnection", "ReadConnections", "encode_frames"]


class ReadConnection:
    """One client connection the worker reads.

    Attributes:
        key: the daemon's connection key (as in the forwarded frames).
        slot: the connection's record on the completion board.
        sock: the worker's duplicate of the client's socket (shared with the reply path).
        decoder: decodes what the client sent.
        frames: decoded frames not acted on yet.
        running: its calls admitted here and not ended (under the worker's lock).
        returning: None while the worker serves the connection; once it gives it back, the
            frames to hand to the daemon (with ``note``, why the stream cannot go on).
        free_since: when its last request ended (``time.monotonic()``; when it was handed
            over, before its first): its next frames can wait for the reader only from then.
    """

    __slots__ = (
        "busy",
        "decoder",
        "frames",
        "free_since",
        "given_back",
        "key",
        "note",
        "returning",
        "running",
        "slot",
        "sock",
        "watched",
        "write_lock",
    )

    def __init__(self, key: str, slot: int, sock: socket.socket, max_message_size: int) -> None:
        self.key = key
        self.slot = slot
        self.sock = sock
        self.decoder = FrameDecoder(max_message_size=max_message_size)
        self.frames: collections.deque[Frame] = collections.deque()
        self.running = 0
        # A call of it runs that holds back its next frames (a request, as in the other
        # modes: one connection's calls run one after the other); the reader does not
        # watch it meanwhile.
        self.busy = False
        self.free_since = time.monotonic()
        self.returning: list[Frame] | None = None
        self.note: str | None = None
        self.watched = False  # in the worker's ReadConnections
        self.given_back = False  # the give_back notice is sent (or the daemon closed it)
        self.write_lock = threading.Lock()  # one reply at a time on the socket

    def fill(self) -> bool:
        """Read what the socket has now into :attr:`frames`, without blocking.

        Returns:
            False when the stream cannot go on (its end, a broken connection, a malformed
            frame; :attr:`note` says which, None for a plain end): the daemon must take it.
        """
        try:
            count = self.sock.recv_into(self.decoder.get_buffer(), 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False  # (the daemon's own read reports the broken connection)
        if count == 0:
            return False  # the end: the daemon sees it too once it watches the socket
        try:
            self.frames.extend(self.decoder.buffer_updated(count))
        except PyroError as exc:
            self.note = str(exc)
            return False
        return True

    @property
    def half_received(self) -> bool:
        """Whether part of a frame has arrived and the rest not yet."""
        return bool(self.decoder.buffered)


class ReadConnections:
    """The connections one worker reads, by key and by descriptor.

    Any thread may look; ``version`` changes with every change, so each thread's poll
    objects know when to rebuild.
    """

    def __init__(self) -> None:
        self._by_key: dict[str, ReadConnection] = {}
        self._by_fd: dict[int, ReadConnection] = {}
        self._lock = threading.Lock()
        self.version = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, conn: ReadConnection) -> None:
        """Start watching ``conn``."""
        with self._lock:
            self._by_key[conn.key] = conn
            self._by_fd[conn.sock.fileno()] = conn
            conn.watched = True
            self.version += 1

    def remove(self, conn: ReadConnection) -> None:
        """Stop watching ``conn``; idempotent."""
        with self._lock:
            conn.watched = False
            if self._by_key.get(conn.key) is conn:
                del self._by_key[conn.key]
                self._by_fd = {fd: c for fd, c in self._by_fd.items() if c is not conn}
                self.version += 1

    def pause(self, conn: ReadConnection) -> None:
        """Stop watching ``conn``'s socket until :meth:`resume` (its frames wait)."""
        with self._lock:
            if self._by_fd.pop(conn.sock.fileno(), None) is not None:
                self.version += 1

    def resume(self, conn: ReadConnection) -> bool:
        """Watch a paused connection again (if it is still watched at all).

        Returns:
            Whether it was paused.
        """
        with self._lock:
            if self._by_key.get(conn.key) is conn and conn.sock.fileno() not in self._by_fd:
                self._by_fd[conn.sock.fileno()] = conn
                self.version += 1
                return True
        return False

    def get(self, key: str) -> ReadConnection | None:
        """The connection with this key, if the worker reads it."""
        return self._by_key.get(key)

    def by_fd(self, fd: int) -> ReadConnection | None:
        """The connection whose socket is ``fd``."""
        return self._by_fd.get(fd)

    def fds(self) -> list[int]:
        """The descriptors to watch."""
        return list(self._by_fd)

    def with_frames(self) -> ReadConnection | None:
        """A connection with decoded frames waiting, if any."""
        for conn in list(self._by_key.values()):
            if conn.frames and not conn.busy:
                return conn
        return None


def encode_frames(frames: list[Frame]) -> bytes:
    """The bytes of ``frames`` as the client sent them (for a connection without MACs)."""
    parts: list[Any] = []
    for frame in frames:
        parts.extend(
            encode_frame(
                frame.msg_type,
                seq=frame.seq,
                object_id=frame.object_id,
                method=frame.method,
                payload=frame.payload,
                buffers=frame.buffers,
                flags=frame.flags,
            )
        )
    return b"".join(bytes(part) for part in parts)
