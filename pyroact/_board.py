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

With ``PYRO_WORKER_READS`` a worker also reads connections itself, and the parent hears of
their calls only here: a 64-bit count of such calls running or queued in the worker (the
parent adds it to the worker's load), then ``CONNECTION_SLOTS`` records, one per connection
the worker reads (the parent hands out the slot numbers), each with the request in flight
(sequence id, object id and method: what a ``WorkerDiedError`` names when the worker dies)
and the time of the connection's last frame (for the daemon's idle timeout). The parent reads
a record's object id and method only once the worker is dead, so it never sees them half
written; while the worker lives it looks only at the in-flight flag and the time.
"""

from __future__ import annotations

import mmap
import os
import struct
import time

__all__ = ["CONNECTION_SLOTS", "SLOTS", "CompletionBoard", "LoadTable", "boards_supported"]

SLOTS = 1 << 16
CONNECTION_SLOTS = 1024
_HEADER = 8  # the count of marked calls
_READING = _HEADER + 4 * SLOTS  # the count of calls of connections the worker reads
_RECORDS = _READING + 8
_RECORD = struct.Struct("=IIdB55sB55s")  # in flight, seq, last frame, object id, method
_NAME_LIMIT = 55
_SIZE = _RECORDS + _RECORD.size * CONNECTION_SLOTS


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
        self._slots = memoryview(self._map)[_HEADER:_READING].cast("I")
        self._reading = memoryview(self._map)[_READING:_RECORDS].cast("Q")
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

    # -- connections the worker reads -----------------------------------------------------------

    @property
    def reading(self) -> int:
        """Calls of connections the worker reads that are queued or running there now."""
        try:
            return int(self._reading[0])
        except ValueError:
            return 0

    def call_began(self, slot: int, seq: int | None, object_id: str, method: str) -> None:
        """Record a call the worker read itself (in the worker, under its lock).

        Args:
            slot: the connection's record.
            seq: the client's sequence id of a request, or None for a oneway call (nobody
                waits for its answer).
            object_id: the object called.
            method: the method called.
        """
        self._reading[0] += 1
        offset = _RECORDS + slot * _RECORD.size
        now = time.monotonic()
        if seq is None:
            struct.pack_into("=d", self._map, offset + 8, now)
            return
        _RECORD.pack_into(
            self._map,
            offset,
            1,
            seq,
            now,
            min(len(object_id), _NAME_LIMIT),
            object_id.encode()[:_NAME_LIMIT],
            min(len(method), _NAME_LIMIT),
            method.encode()[:_NAME_LIMIT],
        )

    def call_ended(self, slot: int, request: bool) -> None:
        """Record that a call :meth:`call_began` recorded has ended (in the worker, locked)."""
        self._reading[0] -= 1
        if request:
            struct.pack_into("=I", self._map, _RECORDS + slot * _RECORD.size, 0)

    def request_in_flight(self, slot: int) -> tuple[int, str, str] | None:
        """The request a connection's record holds, read once the worker is dead.

        Returns:
            ``(seq, object_id, method)``, or None when no request was in flight.
        """
        state, seq, _when, oid_len, oid, meth_len, meth = _RECORD.unpack_from(
            self._map, _RECORDS + slot * _RECORD.size
        )
        if not state:
            return None
        return seq, oid[:oid_len].decode(errors="replace"), meth[:meth_len].decode(errors="replace")

    def in_flight(self, slot: int) -> bool:
        """Whether the connection's record holds a request not answered yet."""
        try:
            return bool(struct.unpack_from("=I", self._map, _RECORDS + slot * _RECORD.size)[0])
        except ValueError:
            return False

    def last_frame(self, slot: int) -> float:
        """When the worker last read a call from the connection (``time.monotonic()``)."""
        try:
            return float(struct.unpack_from("=d", self._map, _RECORDS + slot * _RECORD.size + 8)[0])
        except ValueError:
            return 0.0

    def clear_record(self, slot: int) -> None:
        """Empty a connection's record before its slot is handed out (in the parent)."""
        offset = _RECORDS + slot * _RECORD.size
        self._map[offset : offset + _RECORD.size] = bytes(_RECORD.size)

    def close(self) -> None:
        """Unmap the board; idempotent."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        self._final = int(self._count[0])
        self._count.release()
        self._slots.release()
        self._reading.release()
        self._map.close()
        os.close(fd)


class LoadTable:
    """How many calls each worker has read from its clients and not ended, in shared memory.

    One 64-bit count per worker, each written by its own worker only (under its lock) and
    read by the others: a worker that reads a connection itself sends a replicated object's
    call elsewhere when another worker has fewer calls (see ``pyroact._worker``).

    Args:
        fd: the shared memory file (the table keeps its own duplicate).
        count: how many workers.

    Raises:
        OSError: ``fd`` cannot be mapped.
    """

    def __init__(self, fd: int, count: int) -> None:
        self.fd = os.dup(fd)
        self.count = count
        size = 8 * count
        try:
            if os.fstat(self.fd).st_size < size:
                os.ftruncate(self.fd, size)
            self._map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self._counts = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, count: int) -> LoadTable:
        """A new table of zeros (in the parent).

        Raises:
            OSError: no shared memory file could be made.
        """
        fd = os.memfd_create("pyroact-loads", os.MFD_CLOEXEC)
        try:
            return cls(fd, count)
        finally:
            os.close(fd)

    def add(self, index: int, delta: int) -> None:
        """Change worker ``index``'s count (in that worker, under its lock)."""
        self._counts[index] += delta

    def reset(self, index: int) -> None:
        """Zero a worker's count (in the parent, before a restarted worker starts)."""
        self._counts[index] = 0

    def least_elsewhere(self, index: int) -> int | None:
        """The smallest count among the other workers (None when there is no other)."""
        others = [self._counts[i] for i in range(self.count) if i != index]
        return min(others) if others else None

    def close(self) -> None:
        """Unmap the table; idempotent."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        self._counts.release()
        self._map.close()
        os.close(fd)
