"""A process-mode worker: objects in actor mailboxes, their calls on a thread pool (layer 8).

How it works
------------
``python -m pyroact._worker --fd N ...`` is started by :mod:`pyroact.svr_procpool` with one end
of a Unix socket pair (the *link*; its frame format is in that module's docstring). One thread
of the worker's pool at a time reads the link (leader/follower): control requests (object id
``""``) are handled at once, in order, and each call enters its object's
:class:`~pyroact._mailbox.Mailbox` in arrival order; then the reader passes the reading to
another pool thread and runs the call itself, with the same :func:`pyroact.core.execute_call`
the other modes use, so ``SynchronizedObjBase`` means one call at a time here too and a call
starts without a thread hand-off. Each client connection has its own
thread-local storage in the worker, whose ``caller`` carries the address and the validator's
attributes the parent forwarded.

While a call computes (its thread's CPU clock says so, as for lingering mailboxes), the reader
*holds off*: it leaves the link alone for up to ``PYRO_WORKER_LINGER`` and the thread whose
call ends takes what arrived meanwhile, running the next call itself. Under the GIL a reader
woken by each frame would only take the interpreter from the computing call; this way a CPU-bound
object's calls follow each other on one thread with no wake-up between them. A call that waits
(I/O, a nested remote call) does not hold the reader off, and a frame never waits on the link
longer than the linger time.

Objects see a :class:`WorkerDaemon` through ``getDaemon()``: ``connect()`` there hosts a new
object in this worker and tells the parent to route its id here, so factories and
``getProxy()`` work as in the other modes. When the link reaches EOF the parent is gone and the
worker exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import pickle
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pyroact

from . import _mailbox, core, serializer
from . import _wirespec as spec
from ._board import CompletionBoard, LoadTable
from ._mailbox import (
    BUSY,
    CAN_LINGER,
    IDLE,
    UNKNOWN,
    Mailbox,
    RunningCall,
    Task,
    ThreadPool,
)
from ._readconns import ReadConnection, ReadConnections, encode_frames
from .errors import BusyError, DaemonError, ProtocolError, PyroError
from .protocol import LocalStorage, current_call
from .svr_procpool import COMPUTED, DELIVERED, DELIVERED_COMPUTED
from .transport import Channel, nonblocking_step, send_available, send_waiting
from .wire import Frame, encode_frame

__all__ = ["WorkerCaller", "WorkerDaemon", "main"]

log = logging.getLogger("pyroact.system")

# How long a worker waits for the daemon to confirm a notification (it only logs, then goes on).
ACK_TIMEOUT = 10.0
# The most frames one thread takes off the link in a row before it lets the others look.
FRAMES_PER_TAKE = 256
# Replies up to this size are marked answered before they are written (see _reply_silently).
EARLY_MARK_LIMIT = 64 * 1024


class WorkerCaller:
    """What ``tls.caller`` is inside a worker: the client's address and validator attributes.

    Attributes:
        addr: the client's ``(host, port)``.
    """

    connected = True

    def __init__(self, addr: Any, attrs: dict[str, Any]) -> None:
        self.__dict__.update(attrs)
        self.addr = addr

    def __repr__(self) -> str:
        return f"<TCPConnection with {self.addr} connected=1 (in a worker)>"


class WorkerDaemon:
    """The daemon as the objects of one worker see it.

    Args:
        link: the channel to the parent.
        fd_channel: the socket the parent passes client sockets on (None: none passed).
        board: where this worker marks the silent calls it answered (None: no board).
        host: the published host of the parent daemon (for URIs).
        port: the parent daemon's port.
        index: this worker's index.
        count: how many workers the daemon has.
        name: the daemon's name.
    """

    threaded = True

    def __init__(
        self,
        link: Channel,
        *,
        fd_channel: socket.socket | None = None,
        board: CompletionBoard | None = None,
        loads: LoadTable | None = None,
        host: str,
        port: int,
        index: int,
        count: int,
        name: str,
    ) -> None:
        self.link = link
        # (Kept: a failed send closes the link, and its fileno() is -1 from then on, but the
        # waits must go on seeing the descriptor, to read the end and exit.)
        self._link_fd = link.fileno()
        self.fd_channel = fd_channel
        self.board = board
        self.loads = loads
        # Objects placed on every worker, whose calls may go to any of them.
        self._replicated: set[str] = set()
        # Silent calls whose answer the parent wants a notice of after all (under _lock).
        self._notify: set[int] = set()
        # Client sockets the parent passed, by connection key: replies go straight to them.
        self._direct: dict[str, socket.socket] = {}
        self.direct_replies = 0
        self.taken_after_call = 0  # calls a thread took off the link as its call ended
        self.overdue_reads = 0  # reads of frames that waited their linger time on the link
        # Client connections this worker reads itself (PYRO_WORKER_READS; see _readconns).
        self.read_conns = ReadConnections()
        self.read_calls = 0  # calls read from them
        self._polled_version = 0  # read_conns.version that _link_or_wake watches
        self.hostname = host
        self.port = port
        self.index = index
        self.count = count
        self.name = name
        self.objects: dict[str, core._Entry] = {}
        self.pool = ThreadPool(pyroact.config.PYRO_THREADPOOL_SIZE, name="pyroact-worker")
        self.shared_tls = LocalStorage()
        self._tls: dict[str, LocalStorage] = {}
        self._init_tls: Any = None
        self._send_lock = threading.Lock()
        self._lock = threading.RLock()
        self._reap_age: float | None = None
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        self._reading = threading.local()  # .active on the thread reading the link
        self._acks: dict[int, threading.Event] = {}
        self._last_ack = 0
        self._outbox: queue.SimpleQueue[Sequence[Any] | None] = queue.SimpleQueue()
        # Whoever holds the token reads the link and acts on what it read (the reader, or a
        # thread whose call just ended), so frames enter their mailboxes in arrival order.
        self._read_token = threading.Lock()
        # Mailboxes whose calls wait for a busy call (lingering); the link reader starts them
        # when their time is up. Only the holder of the read token touches it.
        self._lingering: set[Mailbox] = set()
        # The calls running now, by thread, to tell whether one computes (see the docstring).
        self._calls: dict[int, RunningCall] = {}
        self._reader_holds = False  # the reader leaves the link to the ends of calls now
        # Whether the reader's last wait held off: it then goes on holding off for a call that
        # has only just started (only the reader touches it).
        self._held = False
        # When a reader last found the link empty: whatever waits on it arrived later, and is
        # read by then + PYRO_WORKER_LINGER at the latest, computing call or not.
        self._link_emptied = 0.0
        self._wake_r, self._wake_w = os.pipe()  # wakes the reader (see _wake_reader)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._woken = False  # a wake-up is in the pipe (or on its way)
        # (poll: any descriptor number, unlike select())
        # A poll object serves one thread at a time: each thread that looks has its own.
        self._link_only = threading.local()
        self._link_or_wake = _poller((link.fileno(), select.POLLIN), (self._wake_r, select.POLLIN))
        # While holding off: the wake pipe, and the link only for a hang-up (the parent gone).
        self._hold_poll = _poller(
            (self._wake_r, select.POLLIN), (link.fileno(), getattr(select, "POLLRDHUP", 0))
        )
        self._overdue = False  # the frames the reader reads next waited their linger time
        self._frames_taken = 0  # frames read off the link (by the holder of the read token)
        self.pool.on_blocking = self._call_blocks

    # -- link ----------------------------------------------------------------------------------

    def send(self, segments: Sequence[Any]) -> None:
        """Send one frame to the parent (frames from pool threads never interleave)."""
        with self._send_lock:
            self.link.send(segments)

    def notify(self, name: str, *args: Any, confirmed: bool = False) -> None:
        """Tell the parent something (a ``ONEWAY`` control frame).

        Args:
            name: the notification.
            *args: its arguments.
            confirmed: wait until the parent has acted on it. A new object's URI must not
                reach a client before the parent routes its id: a reply the worker writes to
                the client itself could otherwise overtake the notification.
        """
        seq, done = 0, None
        if confirmed and not getattr(self._reading, "active", False):
            # (The thread reading the link cannot wait: it is the one that reads the answer.)
            with self._lock:
                self._last_ack = seq = (self._last_ack + 1) & spec.MAX_SEQ or 1
                done = self._acks[seq] = threading.Event()
        self.send(
            encode_frame(spec.MSG_ONEWAY, seq=seq, method=name, payload=pickle.dumps(args, 5))
        )
        if done is None:
            return
        self._call_blocks()  # (from any thread: while an ack is awaited the reader reads)
        with _mailbox.blocking():  # this call computes no more: the reader must read the ack
            confirmed = done.wait(ACK_TIMEOUT)
        if not confirmed:
            with self._lock:
                self._acks.pop(seq, None)
            log.warning("worker %d: the daemon did not confirm %r in time", self.index, name)

    def _send_later(self, segments: Sequence[Any]) -> None:
        # The thread reading the link never sends: if it blocked on a send while the parent
        # blocked sending to it, both would wait forever. The sender thread sends instead,
        # so control answers never wait for a busy call thread either.
        self._outbox.put(segments)

    def _send_outbox(self) -> None:
        while True:
            segments = self._outbox.get()
            if segments is None:
                return
            try:
                self.send(segments)
            except PyroError:
                return  # the parent is gone: the reader ends the process

    def _reply_exception(self, seq: int, exc: BaseException) -> None:
        if not seq:  # a oneway call nobody waits for: its failure can only be logged
            log.warning("oneway call refused in worker %d: %s", self.index, exc)
            return
        self._answered_on_link(seq)
        self._send_later(
            encode_frame(spec.MSG_EXCEPTION, seq=seq, payload=serializer.dumps_exception(exc, []))
        )

    # -- the daemon API objects use ----------------------------------------------------------

    def uri_for(self, guid: str) -> core.PyroURI:
        """The PYRO URI of an object of this daemon."""
        return core.PyroURI(self.hostname, guid, self.port)

    def connect(self, obj: core.ObjBase, name: str | None = None) -> core.PyroURI:
        """Host ``obj`` in this worker and have the parent route its id here.

        Args:
            obj: an ObjBase instance.
            name: its name (PYROLOC), or None for a transient.

        Returns:
            Its URI.

        Raises:
            TypeError: ``obj`` is not an ObjBase.
        """
        self._host(obj, name, persistent=False)
        self.notify("registered", obj.GUID(), name, type(obj).__name__, confirmed=True)
        return self.uri_for(obj.GUID())

    def _host(self, obj: core.ObjBase, name: str | None, *, persistent: bool) -> None:
        if not isinstance(obj, core.ObjBase):
            raise TypeError(f"a Pyro object must inherit from ObjBase, not {type(obj).__name__}")
        guid = obj.GUID()
        mailbox = Mailbox(
            self._submit_calls,
            serial=isinstance(obj, core.SynchronizedObjBase),
            maxsize=pyroact.config.PYRO_MAILBOX_SIZE,
            name=f"{type(obj).__name__} {guid}",
            linger=pyroact.config.PYRO_WORKER_LINGER,
            queued=self.pool.has_queued,
        )
        with self._lock:
            self.objects[guid] = core._Entry(obj, name, mailbox, persistent)
        obj.setPyroDaemon(self)
        obj.lastUsed = time.time()

    def disconnect(self, obj_or_id: core.ObjBase | str) -> None:
        """Stop hosting an object.

        Raises:
            KeyError: no such object here.
        """
        guid = obj_or_id.GUID() if isinstance(obj_or_id, core.ObjBase) else str(obj_or_id)
        with self._lock:
            entry = self.objects.pop(guid)
        entry.obj.setPyroDaemon(None)
        self.notify("unregistered", guid)

    def getRegistered(self) -> dict[str, str | None]:
        """``{guid: name}`` of the objects in this worker."""
        with self._lock:
            return {guid: e.name for guid, e in self.objects.items()}

    def getLocalStorage(self) -> LocalStorage:
        """The storage of the current call."""
        return current_call.tls or self.shared_tls

    def getProxyForObj(self, obj: core.ObjBase) -> core.DynamicProxy:
        """A proxy for an object of this daemon."""
        return core.DynamicProxy(self.uri_for(obj.GUID()))

    def getAttrProxyForObj(self, obj: core.ObjBase) -> core.DynamicProxyWithAttrs:
        """An attribute proxy for an object of this daemon."""
        return core.DynamicProxyWithAttrs(self.uri_for(obj.GUID()))

    def setTransientsCleanupAge(self, secs: float | None) -> None:
        """Reap this worker's idle transients (started by the parent daemon's setting)."""
        self._reap_age = secs or None
        if self._reap_age is not None and self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap_loop, name="pyroact-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_loop(self) -> None:
        while self._reap_age is not None:
            age = self._reap_age
            time.sleep(max(age / 5, 0.05))
            for entry in core.reap_transients(self.objects, self._lock, age):
                self.notify("unregistered", entry.obj.GUID())

    # -- serving -------------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve the link until the parent says CLOSE or goes away."""
        sender = threading.Thread(target=self._send_outbox, name="pyroact-sender", daemon=True)
        sender.start()
        self.notify("ready", os.getpid())
        self.pool.submit(self._lead)
        self._closed.wait()
        self.pool.shutdown(5.0)
        self._outbox.put(None)
        sender.join(5.0)
        log.info("worker %d stats at shutdown: %s", self.index, self.stats())

    def _lead(self) -> None:
        try:
            self._read_link()
        except BaseException:
            # Nothing would read the link again: exit, so that the daemon fails this worker's
            # calls at once and restarts it, rather than leave them hanging.
            log.exception("worker %d: the link reader failed; the worker exits", self.index)
            os._exit(1)

    def _read_link(self) -> None:
        # Leader/follower: one pool thread at a time reads the link. When it reads a call and
        # nothing else is waiting on the link, it hands the reading to another thread and runs
        # the call itself, so the call starts without a thread wake-up; otherwise it queues
        # the call and keeps reading, so the link is never left unread.
        pool = self.pool
        self._reading.active = True
        while not self._closed.is_set():
            pool._enter_blocking()  # waiting on the link does not hold one of the pool's threads
            try:
                ready = self._wait_for_frames()
            finally:
                pool._exit_blocking()
            if not ready:
                continue
            with self._read_token:
                start = self._take_pending(overdue=self._overdue)
            # Frames decoded with the overdue ones were on the link as long: overdue too.
            self._overdue = self._overdue and self.link.pending()
            if start is None:
                continue
            if not self.link.pending() and pool.hand_off(self._lead):
                self._reading.active = False  # another thread reads now
                self._run_calls(start)
                return
            # More frames are already here (a burst of oneways), or every thread is busy:
            # the pool runs this call while the reader goes on.
            try:
                pool.submit(functools.partial(self._run_calls, start))
            except RuntimeError:
                # The pool is shutting down (a thread whose call ended took CLOSE) or cannot
                # start a thread: the call was admitted, so it runs here.
                self._run_calls(start)

    def _wait_for_frames(self) -> bool:
        # Waits until the reader should read: True then. False when it was woken or a timer
        # ran out (a lingering call's time, a look at the running calls), to look again.
        if self._woken:  # first: a wake-up from now on is seen by the waits below
            self._woken = False
            _drain(self._wake_r)
        if self._closed.is_set():
            return False
        timeout = None
        if self._lingering:  # (a thread that adds one wakes the reader: see _after_call)
            with self._read_token:
                timeout = self._expire_lingering()
        if self.link.pending():
            return True
        # Set before the look at the calls: a call ending from now on wakes the reader. (Other
        # threads read it without a lock; a stale value only costs or saves a wake-up, since
        # the reader looks at the link and the calls again after every wait.)
        self._reader_holds = self._holds_off()
        now = time.monotonic()
        state = self._computing(now)
        if state == IDLE or (state == UNKNOWN and not self._held):
            # Watch the link. A call that has only just started may well be short: holding
            # off for it would cost a wake-up at its end, for nothing.
            self._reader_holds = self._held = False
            if self._readable_now():  # (frames a thread whose call ended left: _after_call)
                return True
            self._link_emptied = now
            if self._polled_version != self.read_conns.version:
                self._polled_version = self.read_conns.version
                self._link_or_wake = _poller(*self._watched(), (self._wake_r, select.POLLIN))
            ready = self._link_or_wake.poll(None if timeout is None else _ms(timeout))
            if not self._link_in(ready):
                return False
            # A frame arrived: hold off rather than read it if a call computes by now. (The
            # link was empty until now: the linger of what arrived starts now.)
            self._link_emptied = time.monotonic()
            return self._computing(self._link_emptied) != BUSY
        self._held = True
        linger = pyroact.config.PYRO_WORKER_LINGER
        due = self._link_emptied + linger
        if due <= now:
            since = self._waiting_since()
            if since is None:
                self._link_emptied, due = now, now + linger
            elif since + linger <= now:
                # It may have waited that long: read it, computing call or not (and its call
                # does not linger again in its mailbox).
                self._reader_holds = False
                self._overdue = True
                self.overdue_reads += 1
                return True
            else:
                due = since + linger
        # (Also for a call that has only just started, or is ending, while the reader holds
        # off: the calls most likely go on computing, and a look at each one's start would
        # take the GIL from it. The linger bounds the wait either way.) At most a second at a
        # time, as in _expire_lingering: a linger of hours must not overflow the wait.
        wait = min(due - now, 1.0)
        wait = wait if timeout is None else min(wait, timeout)
        events = self._hold_poll.poll(_ms(wait))
        self._reader_holds = False
        return self._link_in(events)  # hung up: read the EOF

    def _link_in(self, events: list[tuple[int, int]]) -> bool:
        # Whether a poll's events include the link's. A readable wake pipe is drained by the
        # next wait, whatever _woken says now (a wake-up can set it just before the drain
        # and write just after).
        link = False
        for fd, _mask in events:
            if fd == self._wake_r:
                self._woken = True
            else:
                link = True
        return link

    def _computing(self, now: float) -> int:
        # BUSY when a running call computes (the reader should hold off), else UNKNOWN when
        # one has only just started, else IDLE: also when holding off is turned off, and
        # when a call waits for something the link may bring (a nested call, a confirmation).
        if not self._holds_off() or not self._calls or self._acks:
            return IDLE
        calls = list(self._calls.values())
        if any(running.waiting for running in calls):
            return IDLE
        found = IDLE
        for running in calls:
            # A call that has done its work is about to end, and its thread to look at the
            # link: like a call just started, it keeps a reader that holds off holding off.
            state = UNKNOWN if running.done else running.state(now)
            if state == BUSY:
                return BUSY
            found = max(found, state)
        return found

    def _expire_lingering(self) -> float | None:
        # Called with the read token held: starts the lingering calls whose time is up, and
        # says how long until the next one (at most a second at a time: a linger of hours
        # must not overflow the wait), or None when no call lingers.
        if not self._lingering:
            return None
        now = time.monotonic()
        deadlines = []
        for mailbox in list(self._lingering):
            deadline = mailbox.expire(now)
            if deadline is None:
                self._lingering.discard(mailbox)
            else:
                deadlines.append(deadline)
        if not deadlines:
            return None
        return min(max(0.0, min(deadlines) - now), 1.0)

    def _watched(self) -> list[tuple[int, int]]:
        # The link and the client connections this worker reads.
        return [(fd, select.POLLIN) for fd in (self._link_fd, *self.read_conns.fds())]

    def _look(self) -> list[tuple[int, int]]:
        # Which of the link and the connections read here have something now (no wait).
        local = self._link_only
        if getattr(local, "version", None) != self.read_conns.version:
            local.version = self.read_conns.version
            local.poller = _poller(*self._watched())
        events: list[tuple[int, int]] = local.poller.poll(0)
        return events

    def _waiting_since(self) -> float | None:
        # The earliest time the frames that wait for the reader now can have started to
        # wait; None when none wait. Nothing waited at _link_emptied, and a connection's
        # frames wait for the reader only once its request before has ended: under a steady
        # load the link is rarely seen empty, and its clients' frames are younger than that.
        if self.link.pending():
            return self._link_emptied
        buffered = self.read_conns.with_frames()
        waiting = [] if buffered is None else [buffered]
        for fd, _mask in self._look():
            if fd == self._link_fd:
                return self._link_emptied
            conn = self.read_conns.by_fd(fd)
            if conn is not None and not conn.busy:
                waiting.append(conn)
        if not waiting:
            return None
        return min(max(conn.free_since, self._link_emptied) for conn in waiting)

    def _readable_now(self) -> bool:
        if self.link.pending() or self.read_conns.with_frames() is not None:
            return True
        return bool(self._look())

    def _next_frame(self) -> tuple[Frame, ReadConnection | None] | None:
        # Called with the read token held: the next frame to act on, from the link first,
        # and the connection it came from when a client sent it here directly.
        if self.link.pending():
            return self._recv_frame(), None
        conn = self.read_conns.with_frames()
        if conn is not None:
            return conn.frames.popleft(), conn
        events = self._look()
        if any(fd == self._link_fd for fd, _mask in events):
            return self._recv_frame(), None
        readable = [c for fd, _mask in events if (c := self.read_conns.by_fd(fd)) is not None]
        # The client whose request ended first goes first: a thread whose call ended often
        # finds its own client's next frame here already, next to one that waited all along.
        readable.sort(key=lambda c: c.free_since)
        for conn in readable:
            if not conn.fill():
                self._give_back(conn, ended=True)
            if conn.frames and conn.busy:
                self.read_conns.pause(conn)  # read early: the rest waits in the kernel
            elif conn.frames:
                return conn.frames.popleft(), conn
        return None

    def _take_pending(self, *, overdue: bool = False) -> Task | None:
        # Called with the read token held: acts on the frames that have arrived, in order, up
        # to the first call that starts now, and returns what starts it. ``overdue``: they
        # waited their linger time on the link already. Notes when it leaves the link empty
        # (else the next frames' linger would count from a time long past).
        for _ in range(FRAMES_PER_TAKE):
            if self._closed.is_set():
                return None
            item = self._next_frame()
            if item is None:
                self._link_emptied = time.monotonic()
                return None
            frame, conn = item
            start = self._take(frame, overdue) if conn is None else self._take_read(conn, frame)
            self._frames_taken += 1
            if start is not None:
                if not self._readable_now():
                    self._link_emptied = time.monotonic()
                return start
        return None

    def _recv_frame(self) -> Frame:
        try:
            return self.link.recv_frame()
        except PyroError:
            os._exit(0)  # the parent is gone: share its fate at once

    def _take(self, frame: Frame, overdue: bool = False) -> Task | None:
        # Called with the read token held: acts on one frame; returns what starts the call it
        # admitted when that call starts now.
        if frame.msg_type == spec.MSG_CLOSE:
            self._closed.set()
            self._wake_reader()
            return None
        try:
            if frame.object_id == "":
                self._control(frame)
                return None
            return self._admit(frame, overdue)
        except Exception as exc:
            # A failure of this one frame (an initTLS function that raises, say) fails its
            # call, never the thread that read it.
            log.exception("worker %d: cannot take frame %r", self.index, frame)
            if frame.object_id != "":
                self._reply_exception(frame.seq, exc)
            return None

    def _submit_calls(self, start: Task) -> None:
        self.pool.submit(functools.partial(self._run_calls, start))

    def _run_calls(self, start: Task) -> None:
        # Runs a call (and whatever its mailbox runs after it on this thread), then the calls
        # that arrived meanwhile while the reader holds off (see the module docstring).
        next_start: Task | None = start
        while next_start is not None:
            try:
                next_start()
            except Exception:
                log.exception("worker %d: error running a call", self.index)
            next_start = self._after_call()

    @staticmethod
    def _holds_off() -> bool:
        return CAN_LINGER and pyroact.config.PYRO_WORKER_LINGER > 0

    def _after_call(self) -> Task | None:
        # On the thread whose call just ended: while the reader holds off, take what arrived
        # and return what starts the next call, to run here. Wakes the reader when it should
        # look again: nothing computes any more, or the frames taken changed its timers.
        if not self._reader_holds:
            return None
        start, took, lingered = None, False, False
        # (Calls read earlier that wait for a thread go first: this thread takes them next.)
        if not self.pool.has_queued() and self._read_token.acquire(blocking=False):
            try:
                self._reading.active = True
                lingering = len(self._lingering)
                taken = self._frames_taken
                start = self._take_pending()
                took = self._frames_taken != taken
                # (A call left lingering has a deadline the reader must watch.)
                lingered = len(self._lingering) > lingering
            finally:
                self._reading.active = False
                self._read_token.release()
        if start is not None:
            with self._lock:
                self.taken_after_call += 1
            if lingered or (self.link.pending() and not self._reader_holds):
                # Decoded frames the reader's wait on the link would not see: it has just
                # stopped holding off (a reader that holds off looks at them in time).
                self._wake_reader()
            return start
        if took or self._computing(time.monotonic()) == IDLE:
            self._wake_reader()
        return None

    def _wake_reader(self) -> None:
        self._woken = True
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes it as well
            os.write(self._wake_w, b"w")

    def _call_blocks(self) -> None:
        # A thread starts waiting for a nested remote call or a confirmation: the frame
        # it waits for may come on the link, so the reader must not hold off now.
        if self._reader_holds:
            self._wake_reader()

    def _admit(self, frame: Frame, overdue: bool = False) -> Task | None:
        # Puts a call from the link in its object's mailbox (see _admit_call).
        conn_id, client_seq, method = frame.method.split(":", 2)
        # "s<seq>": answer on the client's socket and mark the board, with no notice.
        silent = client_seq.startswith("s") and self.board is not None
        client_seq = client_seq.lstrip("s")
        handed_over = None
        if client_seq.startswith("r"):  # "r<slot>,<seq>": and read the connection from now on
            slot, _, client_seq = client_seq[1:].partition(",")
            handed_over = self._start_reading(conn_id, int(slot))
        frame.method = method
        try:
            return self._admit_call(
                frame, conn_id, int(client_seq), silent, overdue, None, handed_over
            )
        except Exception:
            if handed_over is not None:
                self._request_ended(handed_over)  # (_take fails the call)
            raise

    def _take_read(self, conn: ReadConnection, frame: Frame) -> Task | None:
        # Called with the read token held: acts on a frame the client sent to this worker.
        # A call of one of its objects is admitted here; anything else gives it back.
        if conn.busy:  # (read with the frame before): it waits for the running request
            conn.frames.appendleft(frame)
            self.read_conns.pause(conn)
            return None
        entry = self.objects.get(frame.object_id)
        call = frame.msg_type in (spec.MSG_REQUEST, spec.MSG_ONEWAY) and not frame.mac
        if conn.returning is not None or entry is None or not call or self._elsewhere(frame):
            self._give_back(conn, frame)
            return None
        oneway = frame.msg_type == spec.MSG_ONEWAY
        holds = None
        if not oneway or not pyroact.config.PYRO_ONEWAY_THREADED:
            holds = conn
            self._hold(conn)
        assert self.board is not None  # (connections are handed over with a board only)
        with self._lock:
            conn.running += 1
            self.read_calls += 1
            self.board.call_began(
                conn.slot, None if oneway else frame.seq, frame.object_id, frame.method
            )
            if self.loads is not None:
                self.loads.add(self.index, 1)
        try:
            return self._admit_call(frame, conn.key, frame.seq, False, False, conn, holds)
        except Exception as exc:
            # As in _take: a failure of this one frame (an initTLS function that raises)
            # fails its call, never the thread that read it.
            log.exception("worker %d: cannot take frame %r", self.index, frame)
            self._refuse(frame, conn, exc)
            if holds is not None:
                self._request_ended(holds)
            return None

    def _admit_call(
        self,
        frame: Frame,
        conn_id: str,
        client_seq: int,
        silent: bool,
        overdue: bool,
        read: ReadConnection | None,
        holds: ReadConnection | None = None,
    ) -> Task | None:
        # Puts the call in its object's mailbox (in arrival order) and returns what runs it
        # now, if anything: the reader decides which thread that is. ``read``: the
        # connection it came from, when the client sent it here directly (the reply goes
        # back the same way, and nothing goes to the parent). ``holds``: a connection read
        # here whose next frames wait until this call has ended.
        entry = self.objects.get(frame.object_id)
        oneway = frame.msg_type == spec.MSG_ONEWAY
        refusal = None if entry is None else core._refusal(entry.obj, frame.method)
        if entry is None or refusal is not None:
            unknown = ProtocolError(f"unknown object ID {frame.object_id!r}")
            self._refuse(frame, read, unknown if entry is None else AttributeError(refusal))
            if holds is not None:
                self._request_ended(holds)
            return None
        tls = self._tls.get(conn_id) or self._open_tls(conn_id, None, {})

        lingering = entry.mailbox.linger > 0

        def run() -> None:
            try:
                if not self._holds_off():
                    reply(None)
                    return
                ident = threading.get_ident()
                running = self._calls[ident] = RunningCall()
                try:
                    reply(running)
                finally:
                    if self._calls.get(ident) is running:
                        del self._calls[ident]
            finally:
                if holds is not None:
                    self._request_ended(holds)

        def reply(running: RunningCall | None) -> None:
            outcome = core.execute_call(entry, frame, tls, pyroact.config)
            computed = lingering and running is not None and running.state(time.monotonic()) == BUSY
            _mailbox.work_done()  # (after the look above: from now on the call counts as idle)
            if read is not None:
                try:
                    if not oneway:
                        msg_type, payload, buffers, flags = outcome.encode(
                            pyroact.config.PYRO_OOB_THRESHOLD
                        )
                        self._write_to(
                            read,
                            encode_frame(
                                msg_type,
                                seq=client_seq,
                                payload=payload,
                                buffers=buffers,
                                flags=flags,
                            ),
                        )
                finally:
                    self._read_call_ended(read, oneway)
                return
            if oneway:
                if frame.seq:  # the parent waits for the end of this oneway call
                    self.send(encode_frame(spec.MSG_REPLY, seq=frame.seq))
                return
            msg_type, payload, buffers, flags = outcome.encode(pyroact.config.PYRO_OOB_THRESHOLD)
            if conn_id in self._direct:
                reply = encode_frame(
                    msg_type, seq=client_seq, payload=payload, buffers=buffers, flags=flags
                )
                if silent:
                    self._reply_silently(frame.seq, conn_id, reply)
                    return
                if self._reply_directly(conn_id, reply):
                    done = DELIVERED_COMPUTED if computed else DELIVERED
                    self.send(encode_frame(spec.MSG_REPLY, seq=frame.seq, method=done))
                    return
            self._answered_on_link(frame.seq)
            self.send(
                encode_frame(
                    msg_type,
                    seq=frame.seq,
                    method=COMPUTED if computed else "",
                    payload=payload,
                    buffers=buffers,
                    flags=flags,
                )
            )

        mailbox = entry.mailbox
        try:
            start = mailbox.admit(run, linger=not overdue)
        except BusyError as exc:
            self._refuse(frame, read, exc)
            if holds is not None:
                self._request_ended(holds)
            return None
        if start is None and mailbox.waiting:
            self._lingering.add(mailbox)
        return start

    def _refuse(self, frame: Frame, read: ReadConnection | None, exc: BaseException) -> None:
        # Fails a call before it runs: on the link, or to the client that sent it here.
        if read is None:
            self._reply_exception(frame.seq, exc)
            return
        oneway = frame.msg_type == spec.MSG_ONEWAY
        try:
            if oneway:
                log.warning("oneway call refused in worker %d: %s", self.index, exc)
            else:
                payload = serializer.dumps_exception(exc, [])
                self._write_to(
                    read, encode_frame(spec.MSG_EXCEPTION, seq=frame.seq, payload=payload)
                )
        finally:
            self._read_call_ended(read, oneway)

    def _write_to(self, conn: ReadConnection, segments: list[Any]) -> None:
        # The whole frame on the client's socket (a reply the worker read the call of). One
        # writer at a time: a client that sends before its reply is out (oneway calls, or
        # not waiting) gets the next reply only after the whole of this one.
        with self._lock:
            self.direct_replies += 1
        step = nonblocking_step(conn.sock)
        with conn.write_lock:
            try:
                pending = send_available(step, list(segments))
                if pending:
                    send_waiting(step, conn.sock.fileno(), pending, None)
            except OSError:
                pass  # the client is gone: the connection's end comes with its next read

    def _start_reading(self, conn_id: str, slot: int) -> ReadConnection | None:
        # The parent hands the connection over with this call: watch its socket from now on
        # (the client sends its next frame only after the reply, so none is missed).
        sock = self._direct.get(conn_id)
        if sock is None or self.board is None:
            self._send_give_back(conn_id, slot, [], "the worker has no socket for it")
            return None
        conn = ReadConnection(conn_id, slot, sock, pyroact.config.PYRO_MAX_MESSAGE_SIZE)
        self.read_conns.add(conn)
        self._hold(conn)  # until the call it came with has ended
        return conn

    @staticmethod
    def _hold(conn: ReadConnection) -> None:
        # A request of the connection runs: its next frames wait, as in the other modes.
        # (The socket stays watched: a client sends its next request only after the reply,
        # and one that sends earlier is read once, then left alone: see _next_frame.)
        conn.busy = True

    def _request_ended(self, conn: ReadConnection) -> None:
        conn.free_since = time.monotonic()
        conn.busy = False
        if self.read_conns.resume(conn) or conn.frames:
            self._wake_reader()  # (frames wait, or its waits must watch the socket again)

    def _give_back(
        self, conn: ReadConnection, frame: Frame | None = None, *, ended: bool = False
    ) -> None:
        # Stops serving a connection: the frames not acted on go back to the parent once its
        # calls here have ended and no frame is half-received (see _readconns).
        with self._lock:
            if conn.returning is None:
                conn.returning = []
            if frame is not None:
                conn.returning.append(frame)
            conn.returning.extend(conn.frames)
            conn.frames.clear()
        if ended or not conn.half_received:
            self.read_conns.remove(conn)
        self._finish_return(conn)

    def _read_call_ended(self, conn: ReadConnection, oneway: bool) -> None:
        assert self.board is not None
        with self._lock:
            conn.running -= 1
            self.board.call_ended(conn.slot, not oneway)
            if self.loads is not None:
                self.loads.add(self.index, -1)
        self._finish_return(conn)

    def _elsewhere(self, frame: Frame) -> bool:
        # A call of a replicated object goes to the worker with the fewest outstanding
        # calls: when another one has fewer than this one, the daemon routes it (and that
        # worker reads the connection from then on).
        if self.loads is None or frame.object_id not in self._replicated:
            return False
        least = self.loads.least_elsewhere(self.index)
        return least is not None and least < self._board_reading()

    def _board_reading(self) -> int:
        # Calls of the connections this worker reads that are queued or running here.
        return self.board.reading if self.board is not None else 0

    def _finish_return(self, conn: ReadConnection) -> None:
        with self._lock:
            if conn.returning is None or conn.running or conn.watched or conn.given_back:
                return
            conn.given_back = True
            frames, conn.returning = conn.returning, []
        self._send_give_back(conn.key, conn.slot, frames, conn.note)

    def _send_give_back(self, key: str, slot: int, frames: list[Frame], note: str | None) -> None:
        args = (key, slot, encode_frames(frames), note)
        self._send_later(
            encode_frame(spec.MSG_ONEWAY, method="give_back", payload=pickle.dumps(args, 5))
        )

    def _open_tls(
        self, conn_id: str, addr: Any, attrs: dict[str, Any], direct: bool = False
    ) -> LocalStorage:
        if direct:
            self._take_socket(conn_id)
        tls = LocalStorage()
        tls.caller = WorkerCaller(addr, attrs)  # type: ignore[assignment]
        if self._init_tls is not None:
            self._init_tls(tls)
        self._tls[conn_id] = tls
        return tls

    def _take_socket(self, conn_id: str) -> None:
        # The parent sent the descriptor just before this connection's introduction, so it is
        # waiting on the fd channel; without it (no descriptor left here, say) the replies of
        # this connection simply go through the parent.
        if self.fd_channel is None:
            return
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.fd_channel, 256, 1)
        except OSError as exc:
            log.warning("worker %d: no socket for connection %s: %s", self.index, conn_id, exc)
            return
        if data.decode(errors="replace") != conn_id or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            log.warning("worker %d: unexpected socket message for %s", self.index, conn_id)
            return
        self._direct[conn_id] = socket.socket(fileno=fds[0])

    def _reply_silently(self, call_id: int, conn_id: str, segments: list[Any]) -> None:
        # A small reply is marked before it is written, so the parent sees the mark by the
        # time the client's next frame reaches it; a notice only if the parent asked for one.
        # A large one is marked once it is out: while the kernel copies it, a frame the
        # client sent without waiting must not find the call answered.
        board = self.board
        assert board is not None
        sock = self._direct.get(conn_id)
        early = sock is None or _size(segments) <= EARLY_MARK_LIMIT
        notify = False
        if early:
            with self._lock:
                board.mark(call_id)
                notify = self._notify_wanted(call_id)
        self.direct_replies += 1
        if sock is not None:
            step = nonblocking_step(sock)
            try:
                with self._writing(conn_id):
                    pending = send_available(step, list(segments)) if early else list(segments)
                    if pending:
                        # Not in one write (a large reply, or a client that does not read):
                        # until the rest is out the call counts as unanswered, so that no
                        # frame the client sent without waiting goes on beside the rest.
                        if early:
                            with self._lock:
                                board.unmark(call_id)
                        try:
                            send_waiting(step, sock.fileno(), pending, None)
                        finally:
                            with self._lock:
                                board.mark(call_id)
                                notify = self._notify_wanted(call_id) or notify
            except OSError:
                pass  # the client is gone: the parent sees the connection close
        if notify:
            self.send(encode_frame(spec.MSG_REPLY, seq=call_id, method=DELIVERED))

    def _writing(self, conn_id: str) -> contextlib.AbstractContextManager[Any]:
        # One reply at a time on a connection this worker also reads (see _write_to).
        read = self.read_conns.get(conn_id)
        return read.write_lock if read is not None else contextlib.nullcontext()

    def _notify_wanted(self, call_id: int) -> bool:
        # Called with the lock held: whether the parent asked for a notice of this answer.
        if call_id in self._notify:
            self._notify.discard(call_id)
            return True
        return False

    def _answered_on_link(self, call_id: int) -> None:
        # An answer on the link is the notice: forget a request for one (if it was silent).
        if self._notify:
            with self._lock:
                self._notify.discard(call_id)

    def _notify_when_answered(self, call_id: int) -> None:
        # The parent has a frame of the connection to act on while the call seems unanswered.
        with self._lock:
            answered = self.board is not None and self.board.is_marked(call_id)
            if not answered:
                self._notify.add(call_id)
        if answered:
            self._send_later(encode_frame(spec.MSG_REPLY, seq=call_id, method=DELIVERED))

    def _reply_directly(self, conn_id: str, segments: list[Any]) -> bool:
        # The whole reply on the client's socket, or (when it takes nothing now) False: the
        # parent then writes it. Once part is written the rest must follow here.
        sock = self._direct.get(conn_id)
        if sock is None:
            return False
        step = nonblocking_step(sock)
        size = _size(segments)
        # Counted before the write: a client that has its reply may ask for the stats at once.
        self.direct_replies += 1
        try:
            pending = send_available(step, list(segments))
            if pending and _size(pending) == size:
                self.direct_replies -= 1
                return False
            if pending:
                send_waiting(step, sock.fileno(), pending, None)
        except OSError:
            pass  # the client is gone: the parent sees the connection close
        return True

    def _control(self, frame: Frame) -> None:
        args = serializer.loads(frame.payload, frame.buffers)
        name = frame.method
        if frame.msg_type == spec.MSG_ONEWAY:
            if name == "conn_open":
                self._open_tls(*args)
            elif name == "ack":
                with self._lock:
                    done = self._acks.pop(args[0], None)
                if done is not None:
                    done.set()
            elif name == "notify":
                self._notify_when_answered(args[0])
            elif name == "conn_close":
                read = self.read_conns.get(args[0])
                if read is not None:
                    read.given_back = True  # the parent ended it: nothing goes back
                    self.read_conns.remove(read)
                self._tls.pop(args[0], None)
                sock = self._direct.pop(args[0], None)
                if sock is not None:
                    sock.close()  # this process's descriptor only: the parent ends the connection
            return
        try:
            result = getattr(self, f"_control_{name}")(*args)
        except Exception as exc:
            self._reply_exception(frame.seq, exc)
            return
        payload, buffers, flags = serializer.dumps(result)
        self._send_later(
            encode_frame(
                spec.MSG_REPLY, seq=frame.seq, payload=payload, buffers=buffers, flags=flags
            )
        )

    def _control_configure(self, config: Any) -> None:
        pyroact.__dict__["config"] = config
        # The pool was made before the daemon's configuration arrived.
        self.pool.max_threads = max(1, int(config.PYRO_THREADPOOL_SIZE))

    def _control_connect(
        self,
        guid: str,
        name: str | None,
        blob: bytes,
        is_factory: bool,
        persistent: bool,
        replicated: bool = False,
    ) -> tuple[str, bool]:
        if replicated:
            self._replicated.add(guid)
        made = serializer.loads(blob)
        obj = made() if is_factory else made
        if not isinstance(obj, core.ObjBase):
            raise TypeError(f"the factory made a {type(obj).__name__}, not an ObjBase")
        obj.setGUID(guid)
        self._host(obj, name, persistent=persistent)
        return type(obj).__name__, isinstance(obj, core.SynchronizedObjBase)

    def _control_disconnect(self, guid: str) -> None:
        self._replicated.discard(guid)
        with self._lock:
            entry = self.objects.pop(guid, None)
        if entry is not None:
            entry.obj.setPyroDaemon(None)

    def _control_init_tls(self, func: Any) -> None:
        self._init_tls = func

    def _control_reap_age(self, secs: float | None) -> None:
        self.setTransientsCleanupAge(secs)

    def _control_stats(self) -> dict[str, Any]:
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """Counters of this worker and of each object it hosts."""
        with self._lock:
            objects = core.objects_stats(self.objects)
        return {
            "index": self.index,
            "pid": os.getpid(),
            "threads": self.pool.threads,
            "direct_replies": self.direct_replies,
            "taken_after_call": self.taken_after_call,
            "overdue_reads": self.overdue_reads,
            "read_calls": self.read_calls,
            "reading": len(self.read_conns),  # (paused ones too)
            "objects": objects,
        }


def _poller(*watched: tuple[int, int]) -> select.poll:
    poller = select.poll()
    for fd, events in watched:
        poller.register(fd, events)
    return poller


def _ms(seconds: float) -> int:
    # A poll() timeout: whole milliseconds, rounded up (a wait never ends early).
    return max(0, math.ceil(seconds * 1000))


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.read(fd, 4096)


def _size(segments: Sequence[Any]) -> int:
    return sum(memoryview(s).nbytes for s in segments)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of a worker process (started by the daemon, not by hand).

    Args:
        argv: command-line arguments.

    Raises:
        DaemonError: the link descriptor is unusable.
    """
    parser = argparse.ArgumentParser(prog="python -m pyroact._worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--fd-channel", type=int)
    parser.add_argument("--board-fd", type=int)
    parser.add_argument("--loads-fd", type=int)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    opts = parser.parse_args(argv)
    try:
        import setproctitle

        setproctitle.setproctitle(f"pyroact worker {opts.index + 1}/{opts.count} {opts.name}")
    except ImportError:  # pragma: no cover - a declared dependency
        pass
    try:
        sock = socket.socket(fileno=opts.fd)
    except OSError as exc:
        raise DaemonError(f"worker link descriptor {opts.fd} is unusable: {exc}") from exc
    fd_channel = None
    if opts.fd_channel is not None:
        fd_channel = socket.socket(fileno=opts.fd_channel)
        fd_channel.settimeout(5.0)  # the descriptor is sent before the introduction
    board = None
    if opts.board_fd is not None:
        board = CompletionBoard(opts.board_fd)
        os.close(opts.board_fd)  # the board keeps a descriptor of its own
    loads = None
    if opts.loads_fd is not None:
        loads = LoadTable(opts.loads_fd, opts.count)
        os.close(opts.loads_fd)
    daemon = WorkerDaemon(
        Channel(sock),
        fd_channel=fd_channel,
        board=board,
        loads=loads,
        host=opts.host,
        port=opts.port,
        index=opts.index,
        count=opts.count,
        name=opts.name,
    )
    daemon.serve()
    sys.exit(0)


if __name__ == "__main__":
    main()
