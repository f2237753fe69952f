"""The completion board: shared memory where a worker marks the calls it answered itself (layer 4).

How it works
------------
A process-mode worker that writes a reply straight to the client's socket used to send its
parent a "delivered" notice for every call, so that the parent could count the call as done:
one more message, and one more wake-up of the parent, per call. With a board the worker marks
the call here instead, and the parent reads the mark when it needs to know:

* when the client's next frame arrives on that connection (a client sends it only after the
  reply, and the mark is written before the reply, so the mark is always visible by then);
* when it counts a worker's outstanding calls (placement, draining at shutdown);
* when the worker dies (a marked call was answered; the others fail);
* every quarter of a second, to forget the calls of clients that went quiet.

The board is one shared memory file (``memfd_create``) per worker, mapped by both processes:
a 64-bit count of the calls marked, written by the worker only, then ``SLOTS`` 32-bit slots; a
call's id goes into slot ``id % SLOTS``. The parent never gives two pending silent calls ids
with the same slot, so a mark stays until the parent has read it. Each field has a single
writer and is written with one aligned store, so a reader never sees half of a value.
"""

from __future__ import annotations

import mmap
import os

__all__ = ["SLOTS", "CompletionBoard", "boards_supported"]

SLOTS = 1 << 16
_HEADER = 8  # the count of marked calls
_SIZE = _HEADER + 4 * SLOTS


def boards_supported() -> bool:
    """Tell whether this platform has anonymous shared memory files (Linux)."""
    return hasattr(os, "memfd_create")


class CompletionBoard:
    """One worker's board, as the parent or the worker maps it.

    Args:
        fd: the shared memory file (the board keeps its own duplicate).

    Raises:
        OSError: ``fd`` cannot be mapped.
    """

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)
        try:
            if os.fstat(self.fd).st_size < _SIZE:
                os.ftruncate(self.fd, _SIZE)
            self._map = mmap.mmap(self.fd, _SIZE)
        except BaseException:
            os.close(self.fd)
            raise
        self._count = memoryview(self._map)[:_HEADER].cast("Q")
        self._slots = memoryview(self._map)[_HEADER:].cast("I")
        self._final = 0  # the count when the board was closed

    @classmethod
    def create(cls) -> CompletionBoard:
        """A new, empty board (in the parent).

        Raises:
            OSError: no shared memory file could be made.
        """
        fd = os.memfd_create("pyroact-board", os.MFD_CLOEXEC)
        try:
            return cls(fd)
        finally:
            os.close(fd)

    def unmark(self, call_id: int) -> None:
        """Take a mark back (the reply turned out not to go in one write: see the worker)."""
        if self._slots[call_id % SLOTS] == call_id:
            self._slots[call_id % SLOTS] = (call_id + 1) & 0xFFFFFFFF
            self._count[0] -= 1

    def mark(self, call_id: int) -> None:
        """Record that call ``call_id`` was answered (in the worker, before the reply is sent).

        The worker marks under one lock: the count is read, incremented and written back.
        """
        self._slots[call_id % SLOTS] = call_id
        self._count[0] += 1

    def is_marked(self, call_id: int) -> bool:
        """Tell whether call ``call_id`` was answered by the worker itself (False once closed)."""
        try:
            return self._slots[call_id % SLOTS] == call_id
        except ValueError:  # closed (by another thread, even while this one was reading)
            return False

    @property
    def marked(self) -> int:
        """How many calls the worker has marked so far (until the board was closed)."""
        try:
            return int(self._count[0])
        except ValueError:
            return self._final

    def close(self) -> None:
        """Unmap the board; idempotent."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        self._final = int(self._count[0])
        self._count.release()
        self._slots.release()
        self._map.close()
        os.close(fd)
