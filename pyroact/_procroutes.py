"""Process mode inside the daemon: where each object lives, and forwarding calls there (layer 6).

The daemon's parent process keeps a :class:`Route` per object hosted in workers: its
placement (*pinned*: one instance on one worker; *replicated*: one instance per worker), the
pickled instance or factory it was made from, and which workers lost it in a crash. A call
frame is forwarded to the chosen worker as it came (the parent never unpickles a client's
payload); the worker's reply goes back to the client under the client's sequence id. The
connection's next frame waits until its call is answered, exactly as in the threaded mode, so
calls on one connection stay in order.

On a plain connection whose socket the worker has, a call is *silent*: the worker writes the
reply to the client itself and marks the call on its completion board (``_board``) instead of
sending a notice. The connection is not paused; before the parent acts on its next frame it
*settles* the call (the mark is there by then, since the client waited for the reply), and
only a frame that arrives while the call is still unmarked pauses the connection until the
worker, asked for it, sends a notice. The daemon's periodic check settles the last calls of
quiet clients. Silent calls skip the turns below, which need a notice per call; they apply
with ``PYRO_WORKER_NOTICES`` and to connections whose replies go through the parent.

Replicated calls go to the worker with the fewest outstanding calls; pinned objects are
placed round-robin (or on the least-loaded worker) when they are connected.

A ``SynchronizedObjBase`` runs one call at a time, so a call that reaches its worker while
another runs there could only wait in the worker's mailbox; but the worker would still have to
read it at once, taking the GIL from the running call (two thread switches and a forced GIL
hand-over per call, on a CPU that is computing). So the parent keeps one call per serial
object and worker *in turn* at the worker and holds the later ones (in arrival order, bounded
by ``PYRO_MAILBOX_SIZE``) until the one before is answered; then it sends the next. An
``ObjBase`` gets the same turns while its calls compute: a worker marks the answer of a call
that was busy on the CPU throughout, and while such a call of the object is at the worker the
parent holds the later ones, each for at most ``PYRO_WORKER_LINGER`` seconds (then it goes to
the worker anyway, where it starts beside the running one); an answer without the mark ends
the holding. Calls that wait on I/O therefore still overlap.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import math
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _wirespec as spec
from . import serializer
from .errors import BusyError, DaemonError, SerializeError, WorkerDiedError
from .svr_procpool import (
    COMPUTED,
    DELIVERED,
    DELIVERED_COMPUTED,
    PendingCall,
    WorkerHandle,
    WorkerPool,
)
from .transport import ServerChannel
from .wire import Frame, FrameDecoder

__all__ = ["PINNED", "PLACEMENTS", "REPLICATED", "ProcessRouter", "Route"]

log = logging.getLogger("pyroact.system")

PINNED = "pinned"
REPLICATED = "replicated"
PLACEMENTS = (PINNED, REPLICATED)
STRATEGIES = ("round-robin", "least-loaded")
# The counters of a worker's own stats that the daemon's stats show per worker.
WORKER_COUNTERS = ("direct_replies", "taken_after_call", "overdue_reads", "read_calls", "reading")

_connection_keys = itertools.count(1)


class Route:
    """Where one object lives.

    Attributes:
        guid: the object id.
        name: its name, or None.
        placement: ``"pinned"`` or ``"replicated"``.
        strategy: how a pinned object's worker was chosen.
        workers: the worker indices hosting it.
        blob: the pickled instance or factory (None for objects a worker connected itself).
        is_factory: ``blob`` is a class or factory to call.
        type_name: the object's class name.
        lost: workers whose instance was re-created after a crash and has not said so yet.
        held_total: how many of its calls the parent held for their turn (see the module
            docstring).
    """

    __slots__ = (
        "blob",
        "guid",
        "held_total",
        "is_factory",
        "lost",
        "name",
        "persistent",
        "placement",
        "serial",
        "strategy",
        "type_name",
        "workers",
    )

    def __init__(
        self,
        guid: str,
        name: str | None,
        *,
        placement: str,
        strategy: str,
        workers: list[int],
        blob: bytes | None,
        is_factory: bool,
        persistent: bool,
        type_name: str,
        serial: bool = False,
    ) -> None:
        self.guid = guid
        self.name = name
        self.placement = placement
        self.strategy = strategy
        self.workers = workers
        self.blob = blob
        self.is_factory = is_factory
        self.persistent = persistent
        self.type_name = type_name
        self.serial = serial
        self.held_total = 0  # calls the parent held for their turn
        self.lost: set[int] = set()


def _caller_attributes(conn: Any, internal: frozenset[str]) -> dict[str, Any]:
    # What a validator stored on the connection travels to the worker, if it can be pickled.
    attrs: dict[str, Any] = {}
    for key, value in vars(conn).items():
        if key in internal or key.startswith("_"):
            continue
        try:
            pickle.dumps(value, 5)
        except Exception:
            continue
        attrs[key] = value
    return attrs


class _Holding(threading.local):
    """Per thread: the workers it holds frames for until its batch of client frames ends."""

    held: set[WorkerHandle]

    def __init__(self) -> None:
        self.held = set()


class _Silent:
    """A connection's call that its worker answers without a notice (until it is settled).

    Its :meth:`on_done` is the call's reply handler (see :meth:`ProcessRouter.settle`).
    """

    __slots__ = (
        "asked",
        "call_id",
        "conn",
        "done",
        "handle",
        "label",
        "relayed",
        "relaying",
        "router",
        "seq",
    )

    def __init__(
        self, router: ProcessRouter, conn: Any, frame: Frame, handle: WorkerHandle, label: str
    ) -> None:
        self.router = router
        self.conn = conn
        self.seq = frame.seq
        self.handle = handle
        self.label = label
        self.call_id: int | None = None
        self.done = False
        self.asked = False  # a notice of its answer was asked for
        self.relaying = False  # its answer came on the link: the parent writes or resumes
        self.relayed = False  # ... and that is through

    @property
    def over(self) -> bool:
        """Answered, and no part of the answer is still being written by the parent."""
        return self.done and (not self.relaying or self.relayed)

    def on_done(self, reply: Frame | None, error: BaseException | None) -> None:
        """The call is answered: settled (both None), or its error or reply came on the link."""
        conn, daemon = self.conn, self.router.daemon
        if reply is not None or error is not None:
            # Its error, the notice settle() asked for, or a reply the worker could not write
            # itself: the connection waits until that is through (paused first, so that no
            # next frame goes on while a reply is half written).
            daemon.pause(conn)
            self.relaying = True
        self.done = True
        if conn.silent_call is self:
            conn.silent_call = None
        if self.relaying:
            # (it resumes the connection when it is through)
            relay = self.router._reply_handler(
                conn, self.seq, False, self.label, before_resume=self._relayed
            )
            relay(reply, error)
            return
        conn.last_activity = time.monotonic()
        if conn.paused:
            daemon.resume(conn)

    def _relayed(self) -> None:
        self.relayed = True


class _Held:
    """A call held back for its turn: how to send it, and until when it may wait."""

    __slots__ = ("deadline", "go", "handle", "tracked")

    def __init__(
        self, go: Callable[[bool], bool], tracked: bool, deadline: float, handle: WorkerHandle
    ) -> None:
        self.go = go
        self.tracked = tracked  # the worker will answer it
        self.deadline = deadline
        self.handle = handle  # the worker it waits for (not a restarted one's handle)


class _Turns:
    """Calls to one object on one worker: how many are there, and those held back."""

    __slots__ = ("at_worker", "computing", "held", "serial")

    def __init__(self, serial: bool) -> None:
        self.serial = serial
        self.at_worker = 0  # sent, to be answered
        self.computing = False  # (ObjBase) the object's last answered call was busy on the CPU
        self.held: collections.deque[_Held] = collections.deque()

    def must_wait(self) -> bool:
        """Whether a new call waits (behind held ones, or for a running call to be answered)."""
        return bool(self.held) or (self.at_worker > 0 and (self.serial or self.computing))


class _TurnTimer:
    """Sends held ``ObjBase`` calls whose linger time is up (one thread, started on demand)."""

    def __init__(self, expire: Callable[[float], float | None]) -> None:
        self._expire = expire
        self._cond = threading.Condition()
        self._next = math.inf
        self._thread: threading.Thread | None = None
        self._stopped = False

    def stop(self) -> None:
        """End the thread (held calls are answered or failed by the workers' shutdown)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def schedule(self, deadline: float) -> None:
        with self._cond:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pyroact-turns", daemon=True)
                self._thread.start()
            if deadline < self._next:
                self._next = deadline
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (wait := self._next - time.monotonic()) > 0:
                    self._cond.wait(None if math.isinf(wait) else wait)
                if self._stopped:
                    return
                self._next = math.inf
            try:
                following = self._expire(time.monotonic())
            except Exception:
                log.exception("error sending held calls")
                following = None
            if following is not None:
                self.schedule(following)


class ProcessRouter:
    """The process-mode part of a daemon.

    Args:
        daemon: the daemon (it provides ``hostname``, ``port``, ``config``, ``pause``,
            ``resume``, ``reply`` and ``reply_error``).
        count: how many workers.
        internal_fields: the TCPConnection attributes that are not validator data.
    """

    def __init__(self, daemon: Any, count: int, *, internal_fields: frozenset[str]) -> None:
        self.daemon = daemon
        self.routes: dict[str, Route] = {}
        self._internal = internal_fields
        # The last arguments of each setting broadcast to the workers ("configure",
        # "init_tls", "reap_age"), replayed on a restarted worker.
        self._settings: dict[str, tuple[Any, ...]] = {}
        # Per thread: the workers it holds frames for (see forward and flush_held).
        self._holding = _Holding()
        # (object id, worker index) -> the turns of a serial object's calls on that worker.
        self._turns: dict[tuple[str, int], _Turns] = {}
        self._turns_lock = threading.Lock()
        self._timer = _TurnTimer(self._expire_turns)
        self.pool = WorkerPool(
            count,
            name=f"{daemon.hostname}:{daemon.port}",
            worker_args={"host": str(daemon.hostname), "port": str(daemon.port)},
            on_notify=self._on_notify,
            on_restart=self._on_restart,
            watcher=daemon.server,
            on_death=self._on_death,
        )

    def start(self) -> None:
        """Start the workers and hand them the configuration.

        Raises:
            DaemonError: a worker did not start.
        """
        self.pool.start()
        self.broadcast("configure", self.daemon.config)

    def broadcast(self, control: str, *args: Any) -> None:
        """Run a control request on every live worker (and on restarted ones later)."""
        self._settings[control] = args
        for handle in self.pool.workers:
            if handle.alive:
                self.pool.control(handle.index, control, *args)

    # -- objects -------------------------------------------------------------------------------

    def connect(
        self,
        obj: Any,
        guid: str,
        name: str | None,
        *,
        placement: str,
        strategy: str,
        persistent: bool,
    ) -> None:
        """Create the object in its worker(s).

        Args:
            obj: an ObjBase instance (pickled), or a class/factory (called in the worker).
            guid: the object id.
            name: its name, or None.
            placement: ``"pinned"`` or ``"replicated"``.
            strategy: ``"round-robin"`` or ``"least-loaded"`` for pinned objects.
            persistent: survives ``shutdown(disconnect=True)``.

        Raises:
            ValueError: unknown placement or strategy.
            DaemonError: the object cannot be sent to a worker (with the way out).
        """
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        if guid in self.routes:
            raise DaemonError(f"an object with id {guid} is already connected")
        is_factory = isinstance(obj, type) or not hasattr(obj, "objectGUID")
        try:
            blob, _, _ = serializer.dumps(obj, oob_threshold=1 << 62)
        except SerializeError as exc:
            kind = type(obj).__name__
            raise DaemonError(
                f"cannot send the {kind} instance to a worker process ({exc}); connect the "
                f"class or a factory instead, e.g. daemon.connect({kind}, name), so that it is "
                "created inside the worker"
            ) from exc
        if placement == REPLICATED:
            workers = [h.index for h in self.pool.workers if h.alive]
        elif strategy == "least-loaded":
            workers = [self.pool.least_loaded()]
        else:
            workers = [self.pool.round_robin()]
        type_name, serial = "", False
        for index in workers:
            type_name, serial = self.pool.control(
                index, "connect", guid, name, blob, is_factory, persistent, placement == REPLICATED
            )
        self.routes[guid] = Route(
            guid,
            name,
            placement=placement,
            strategy=strategy,
            workers=workers,
            blob=blob,
            is_factory=is_factory,
            persistent=persistent,
            type_name=type_name,
            serial=serial,
        )

    def disconnect(self, guid: str) -> bool:
        """Remove an object from its workers; False when it is not routed here."""
        route = self.routes.pop(guid, None)
        if route is None:
            return False
        for index in route.workers:
            if self.pool.worker(index).alive:
                self.pool.control(index, "disconnect", guid)
        return True

    def _on_notify(self, index: int, name: str, args: Any) -> None:
        if name == "registered":
            guid, obj_name, type_name = args
            self.routes[guid] = Route(
                guid,
                obj_name,
                placement=PINNED,
                strategy="created in worker",
                workers=[index],
                blob=None,
                is_factory=False,
                persistent=False,
                type_name=type_name,
            )
        elif name == "unregistered":
            self.routes.pop(args[0], None)
        elif name == "give_back":
            self._given_back(index, *args)

    def _on_restart(self, index: int, handle: WorkerHandle) -> None:
        # Called before the restarted worker is routed: settings first, then its objects.
        for control, args in list(self._settings.items()):
            try:
                self.pool.control(index, control, *args, handle=handle)
            except Exception:
                log.exception("cannot send %r to restarted worker %d", control, index)
        for guid, route in list(self.routes.items()):
            if route.placement == REPLICATED and route.blob is not None:
                if index not in route.workers:
                    route.workers.append(index)  # connected while this worker was down
            elif index not in route.workers:
                continue
            if route.blob is None:
                # Made inside the dead worker: nothing to re-create it from.
                self.routes.pop(guid, None)
                continue
            if route.placement == PINNED:
                # Before it is re-created, so no call can reach the fresh instance unwarned.
                route.lost.add(index)
            try:
                self.pool.control(
                    index,
                    "connect",
                    guid,
                    route.name,
                    route.blob,
                    route.is_factory,
                    route.persistent,
                    route.placement == REPLICATED,
                    handle=handle,
                )
            except Exception:
                log.exception("cannot re-create %s %s on worker %d", route.type_name, guid, index)

    # -- calls ---------------------------------------------------------------------------------

    def forward(self, conn: Any, frame: Frame, route: Route) -> None:
        """Send a call frame to the worker hosting its object; its reply goes to ``conn``."""
        daemon = self.daemon
        oneway = frame.msg_type == spec.MSG_ONEWAY
        label = f"{route.type_name}.{frame.method} of object {route.guid}"
        try:
            if route.placement == REPLICATED:
                index = self.pool.least_loaded(route.workers, prefer=conn.last_worker)
                conn.last_worker = index
            else:
                index = route.workers[0]
            handle = self.pool.worker(index)
            if not handle.alive:
                raise WorkerDiedError(
                    f"cannot call {label}: its worker {index} (pid {handle.pid}) is not running"
                )
            if index in route.lost:
                route.lost.discard(index)
                raise WorkerDiedError(
                    f"{route.type_name} object {route.guid} lost its state: its worker {index} "
                    "died and was restarted, and the object was re-created from scratch"
                )
            key = self._connection_key(conn, handle)
        except (DaemonError, WorkerDiedError) as exc:
            if not oneway:
                daemon.refuse(conn, frame.seq, exc, close=False)
            return
        silent = (
            frame.msg_type == spec.MSG_REQUEST
            and handle.takes_silent_calls
            and conn.socket_shared
            and not daemon.config.PYRO_WORKER_NOTICES
            and self._may_answer_directly(conn)
            and not self._holds_calls_for(route.guid, handle.index)
        )
        # "s": a silent call; "r<record>,": and the worker reads the connection from now on.
        marks = ""
        if silent:
            record = self._hand_over(conn, handle)
            marks = "s" if record is None else f"sr{record},"
        send = functools.partial(
            handle.send_call,
            frame.msg_type,
            object_id=frame.object_id,
            method=f"{key}:{marks}{frame.seq}:{frame.method}",
            payload=frame.payload,
            buffers=frame.buffers,
            flags=frame.flags,
        )
        if silent:
            self._send_silently(_Silent(self, conn, frame, handle, label), send)
            return
        untracked = oneway and daemon.config.PYRO_ONEWAY_THREADED
        # (Not when workers read connections, which they do without notices: calls that
        # reach a worker directly would pass the ones held here, so every call goes to the
        # worker's mailbox at once.)
        reads = daemon.config.PYRO_WORKER_READS and not daemon.config.PYRO_WORKER_NOTICES
        takes_turns = (route.serial or daemon.config.PYRO_WORKER_LINGER > 0) and not reads
        if takes_turns and self._wait_for_turn(conn, frame, route, handle, send, label, untracked):
            return
        if untracked:
            # Nobody waits for it: the worker answers nothing, so a burst of oneway calls
            # costs one frame each, not two; the worker logs its failures and drains it at
            # shutdown. While more of the client's frames wait, it is held and goes to the
            # worker with them (flush_held() sends what is left when the batch ends).
            later = bool(conn.backlog)
            try:
                send(pending=None, later=later)
            except WorkerDiedError as exc:
                log.warning("oneway call %s failed: %s", label, exc)
            if later:
                self._holding.held.add(handle)
            return
        daemon.pause(conn)
        on_done = self._reply_handler(conn, frame.seq, oneway, label)
        try:
            send(pending=PendingCall(label, on_done))
        except WorkerDiedError as exc:
            on_done(None, WorkerDiedError(f"{exc} (calling {label})"))

    # -- connections a worker reads itself (PYRO_WORKER_READS; see pyroact._readconns) ----------

    def _hand_over(self, conn: Any, handle: WorkerHandle) -> int | None:
        # With the silent call being forwarded, the worker takes over reading the connection
        # (the board record it gets for it), unless this process has some of its frames.
        if (
            not self.daemon.config.PYRO_WORKER_READS
            or getattr(conn, "read_record", None) is not None
            or conn.backlog
            or conn.channel.decoder.buffered
        ):
            return None
        record = handle.take_record(conn)
        if record is None:
            return None
        conn.read_record = record
        conn.read_by = handle
        self.daemon.server.forget(conn)  # (its socket stays open: the worker reads it now)
        return record

    def _take_back(self, conn: Any, handle: WorkerHandle, record: int) -> None:
        conn.read_record = None
        conn.read_by = None
        board = handle.board
        if board is not None:
            conn.last_activity = max(conn.last_activity, board.last_frame(record))

    def _given_back(self, index: int, key: str, record: int, data: bytes, note: str | None) -> None:
        # On the I/O thread: the worker stopped reading a connection; what it had not acted
        # on is handled here as if this process had read it, and the socket is watched again.
        handle = self.pool.worker(index)
        conn = handle.release_record(record)
        if conn is None or getattr(conn, "worker_key", None) != key:
            return  # closed meanwhile
        self._take_back(conn, handle, record)
        if note is not None:
            log.warning("closing connection from %s: %s", conn.addr, note)
            self.daemon.drop_connection(conn)
            return
        if data:
            decoder = FrameDecoder(max_message_size=self.daemon.config.PYRO_MAX_MESSAGE_SIZE)
            conn.backlog.extend(decoder.feed(data))
        self._watch_again(conn)

    def _watch_again(self, conn: Any) -> None:
        self.daemon.process_backlog(conn)
        if conn.connected and getattr(conn, "read_record", None) is None:
            self.daemon.server.register(conn)

    def _on_death(self, handle: WorkerHandle, reason: str) -> None:
        # The connections a dead worker read come back here; a request it had read and not
        # answered fails now, by name, as its other calls did.
        board = handle.board
        for record in list(handle.read_conns):
            conn = handle.release_record(record)
            if conn is None:
                continue
            request = board.request_in_flight(record) if board is not None else None
            self._take_back(conn, handle, record)
            if request is not None and conn.connected:
                seq, guid, method = request
                route = self.routes.get(guid)
                type_name = route.type_name if route is not None else "object"
                label = f"{type_name}.{method} of object {guid}"
                self.daemon.refuse(
                    conn, seq, WorkerDiedError(f"{reason} during {label}"), close=False
                )
            if conn.connected:
                self._watch_again(conn)

    def read_idle_since(self, conn: Any) -> float | None:
        """When a connection a worker reads last sent a call; None while one is in flight."""
        handle: WorkerHandle | None = getattr(conn, "read_by", None)
        record = getattr(conn, "read_record", None)
        board = handle.board if handle is not None else None
        if record is None or board is None or board.in_flight(record):
            return None  # (given back meanwhile: the next look sees it as any other)
        ticket: _Silent | None = conn.silent_call
        if ticket is not None and not ticket.done:
            return None  # the call it was handed over with still runs
        return max(float(conn.last_activity), board.last_frame(record))

    def _send_silently(self, ticket: _Silent, send: Callable[..., int]) -> None:
        # The worker answers on the client's socket and marks the call on its board; the
        # connection is not paused, and its next frame settles the call first (settle()).
        ticket.conn.silent_call = ticket
        try:
            ticket.call_id = send(pending=PendingCall(ticket.label, ticket.on_done, silent=True))
        except WorkerDiedError as exc:
            ticket.on_done(None, WorkerDiedError(f"{exc} (calling {ticket.label})"))

    def settle(self, conn: Any) -> bool:
        """Whether the connection's silent call is answered, so that its next frame may go on.

        When it is not, the connection is paused and the worker asked for a notice of the
        answer (a client sends its next call only after the reply, so this happens only
        with clients that do not wait for their replies, or a reply still on its way).
        """
        ticket: _Silent | None = conn.silent_call
        if ticket is None:
            return True
        if ticket.over:
            conn.silent_call = None
            return True
        handle = ticket.handle
        if ticket.call_id is not None:
            call = handle.settle(ticket.call_id)
            if call is not None:
                call.on_done(None, None)
                return True
        self.daemon.pause(conn)
        if ticket.done:  # answered meanwhile, on another thread
            if not ticket.over:
                return False  # the relayed answer resumes the connection when it is out
            conn.paused = False
            conn.silent_call = None
            return True
        if ticket.call_id is not None and not ticket.asked and handle.alive:
            ticket.asked = True
            try:
                handle.notify("notify", ticket.call_id)
            except WorkerDiedError:
                pass  # its death fails or settles the call, which resumes the connection
        return False

    def _holds_calls_for(self, guid: str, index: int) -> bool:
        # Calls of the object held for their turn: a new call goes behind them, not past.
        with self._turns_lock:
            turns = self._turns.get((guid, index))
            return turns is not None and bool(turns.held)

    def settle_answered(self) -> None:
        """Settle every silent call the workers marked as answered (called periodically)."""
        for handle in self.pool.workers:
            for call in handle.settle_marked():
                try:
                    call.on_done(None, None)
                except Exception:
                    log.exception("error settling a call of worker %d", handle.index)

    def _wait_for_turn(
        self,
        conn: Any,
        frame: Frame,
        route: Route,
        handle: WorkerHandle,
        send: Callable[..., int],
        label: str,
        untracked: bool,
    ) -> bool:
        # See the module docstring. True when this method took the call (sent it in its
        # turn, held it, or refused it); False when it goes the usual way (a oneway nobody
        # waits for, when nothing is held).
        key = (route.guid, handle.index)
        on_done = self._reply_handler(conn, frame.seq, frame.msg_type == spec.MSG_ONEWAY, label)

        def answered(reply: Frame | None, error: BaseException | None) -> None:
            try:
                on_done(reply, error)
            finally:
                computed = reply is not None and reply.method in (COMPUTED, DELIVERED_COMPUTED)
                self._next_turn(key, handle, answered=True, computed=computed)

        def go(later: bool = False) -> bool:
            # Sends the call; False when it could not be sent (its caller has been told). A
            # oneway nobody waits for may be held for the next write (``later``).
            try:
                if untracked:
                    send(pending=None, later=later)
                else:
                    send(pending=PendingCall(label, answered))
            except WorkerDiedError as exc:
                reason = f"{handle.death} before {label} reached it" if handle.death else None
                error = WorkerDiedError(reason or f"{exc} (calling {label})")
                if untracked:
                    log.warning("oneway call %s failed: %s", label, error)
                else:
                    on_done(None, error)
                return False
            return True

        limit = self.daemon.config.PYRO_MAILBOX_SIZE
        refusal: BusyError | None = None
        deadline = math.inf
        with self._turns_lock:
            turns = self._turns.get(key)
            if turns is None or not turns.must_wait():
                if untracked:
                    return False
                if turns is None:
                    turns = self._turns[key] = _Turns(route.serial)
                turns.at_worker += 1
                held = False
            elif len(turns.held) + 1 >= limit:
                refusal = BusyError(
                    f"mailbox of {route.type_name} {route.guid} is full: "
                    f"{len(turns.held) + turns.at_worker} calls queued or running "
                    f"(PYRO_MAILBOX_SIZE={limit})"
                )
            else:
                # Paused before it can be sent by another thread: its answer resumes the
                # connection, which must not come first.
                if not untracked:
                    self.daemon.pause(conn)
                if not route.serial:
                    deadline = time.monotonic() + self.daemon.config.PYRO_WORKER_LINGER
                turns.held.append(_Held(go, not untracked, deadline, handle))
                handle.held_calls += 1
                route.held_total += 1
                held = True
        if refusal is not None:
            if untracked or frame.msg_type == spec.MSG_ONEWAY:  # no reply to carry the error
                log.warning("oneway call %s refused: %s", label, refusal)
            else:
                self.daemon.refuse(conn, frame.seq, refusal, close=False)
            return True
        if held:
            if not math.isinf(deadline):
                self._timer.schedule(deadline)
            return True
        self.daemon.pause(conn)
        if not go():
            self._next_turn(key, handle, answered=True, computed=None)
        return True

    def _next_turn(self, key: tuple[str, int], handle: WorkerHandle, *, answered: bool,
                   computed: bool | None) -> None:  # fmt: skip
        # A call of the object at the worker was answered (or could not be sent): send the
        # held calls in order while it is their turn.
        try:
            while True:
                with self._turns_lock:
                    turns = self._turns.get(key)
                    if turns is None:
                        return
                    if answered:  # (computed None: it was never sent, nothing learnt)
                        turns.at_worker -= 1
                        if computed is not None:
                            turns.computing = computed
                        answered, computed = False, None
                    if not turns.held:
                        if turns.at_worker <= 0:
                            del self._turns[key]
                        return
                    if turns.at_worker > 0 and (turns.serial or turns.computing):
                        return  # still not their turn
                    item = turns.held.popleft()
                    handle.held_calls -= 1
                    if item.tracked:
                        turns.at_worker += 1
                if not item.go(True) and item.tracked:  # oneways ahead go in one write
                    answered, computed = True, None  # never to be answered: count it out
        finally:
            self._flush_quietly(handle)

    def _expire_turns(self, now: float) -> float | None:
        # The timer: send the held ObjBase calls whose linger time is up (beside the running
        # ones); the next deadline, if any.
        due: list[tuple[tuple[str, int], _Held]] = []
        following: float | None = None
        with self._turns_lock:
            for key, turns in self._turns.items():
                while turns.held and turns.held[0].deadline <= now:
                    item = turns.held.popleft()
                    item.handle.held_calls -= 1
                    if item.tracked:
                        turns.at_worker += 1
                    due.append((key, item))
                if turns.held and not math.isinf(turns.held[0].deadline):
                    following = min(following or math.inf, turns.held[0].deadline)
        for key, item in due:
            if not item.go(True) and item.tracked:
                self._next_turn(key, item.handle, answered=True, computed=None)
        for handle in {item.handle for _, item in due}:
            self._flush_quietly(handle)
        return following

    @staticmethod
    def _flush_quietly(handle: WorkerHandle) -> None:
        try:
            handle.flush()  # the oneways released without a call after them
        except WorkerDiedError as exc:
            log.warning("oneway calls to worker %d were lost: %s", handle.index, exc)

    def held_calls(self, guid: str, index: int) -> int:
        """Calls to a serial object that the parent holds for their turn at worker ``index``."""
        with self._turns_lock:
            turns = self._turns.get((guid, index))
            return len(turns.held) if turns is not None else 0

    def flush_held(self) -> None:
        """Send the frames this thread held for the workers (the end of a client's batch)."""
        held = self._holding.held
        while held:
            handle = held.pop()
            try:
                handle.flush()
            except WorkerDiedError as exc:
                log.warning("oneway calls to worker %d were lost: %s", handle.index, exc)

    def _reply_handler(
        self,
        conn: Any,
        seq: int,
        oneway: bool,
        label: str,
        before_resume: Callable[[], None] | None = None,
    ) -> Callable[[Frame | None, BaseException | None], None]:
        daemon = self.daemon

        def resume() -> None:
            if before_resume is not None:
                before_resume()
            daemon.resume(conn)

        def on_done(reply: Frame | None, error: BaseException | None) -> None:
            # Runs on the thread reading the worker's link, which must never block: the reply
            # is written without waiting (a slow client gets the rest from a call thread).
            if oneway:
                if reply is not None and reply.msg_type == spec.MSG_EXCEPTION:
                    # Not unpickled here: the parent never unpickles what user code made.
                    log.warning("oneway call %s failed in its worker (see its log)", label)
                elif error is not None:
                    log.warning("oneway call %s failed: %s", label, error)
                resume()
                return
            if error is not None or reply is None:
                payload = serializer.dumps_exception(error or WorkerDiedError("no reply"), [])
                daemon.reply_then(conn, spec.MSG_EXCEPTION, seq, payload, (), 0, resume)
            elif reply.method in (DELIVERED, DELIVERED_COMPUTED):
                resume()  # the worker wrote the reply to the client's socket itself
            else:
                daemon.reply_then(
                    conn, reply.msg_type, seq, reply.payload, reply.buffers, reply.flags, resume
                )

        return on_done

    def _connection_key(self, conn: Any, handle: WorkerHandle) -> str:
        # Called on the I/O thread only. A worker learns a connection (its caller address and
        # validator attributes) before its first call; a restarted worker learns it again.
        key: str | None = getattr(conn, "worker_key", None)
        if key is None:
            key = str(next(_connection_keys))
            conn.worker_key = key
        if key not in handle.sessions:
            direct = self._may_answer_directly(conn)
            if direct:
                try:
                    handle.send_socket(key, conn.fd)
                    conn.socket_shared = True
                except OSError as exc:
                    log.warning("cannot pass %s's socket to worker %d: %s", conn.addr,
                                handle.index, exc)  # fmt: skip
                    direct = False
            payload, buffers, flags = serializer.dumps(
                (key, conn.addr, _caller_attributes(conn, self._internal), direct)
            )
            # Held: it goes to the worker in one write with the call that needs it.
            handle.send_call(
                spec.MSG_ONEWAY,
                object_id="",
                method="conn_open",
                payload=payload,
                buffers=buffers,
                flags=flags,
                pending=None,
                later=True,
            )
            self._holding.held.add(handle)
            handle.sessions.add(key)
            conn.forwarded_to.add(handle.index)
        return key

    @staticmethod
    def _may_answer_directly(conn: Any) -> bool:
        # A worker writes replies to the client's socket itself (one hop less per call) only
        # where a reply frame is nothing but its bytes: no TLS session and no frame MACs,
        # whose state lives in this process.
        return type(conn.channel) is ServerChannel and not conn.sm.authenticated

    def connection_closed(self, conn: Any) -> None:
        """Tell the workers a connection went away (they drop its thread-local storage)."""
        reader: WorkerHandle | None = getattr(conn, "read_by", None)
        if reader is not None:
            reader.release_record(conn.read_record)
            conn.read_record = conn.read_by = None
        key = getattr(conn, "worker_key", None)
        if key is None:
            return
        for index in conn.forwarded_to:
            handle = self.pool.worker(index)
            if handle.alive and key in handle.sessions:
                handle.sessions.discard(key)
                try:
                    handle.notify("conn_close", key)
                except WorkerDiedError:
                    pass

    # -- observability and shutdown ------------------------------------------------------------

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """Counters per worker (from the parent) and per object (from each worker).

        Args:
            timeout: seconds to wait for each worker's answer (None: the control default).
        """
        per_worker = self.pool.stats()
        for entry in per_worker:
            if entry["alive"]:
                try:
                    worker = self.pool.control(entry["index"], "stats", timeout=timeout)
                except Exception as exc:
                    entry["objects"] = f"unavailable: {exc}"
                else:
                    for guid, counters in worker["objects"].items():
                        counters["queue_depth"] += self.held_calls(guid, entry["index"])
                    entry["objects"] = worker["objects"]
                    for key in WORKER_COUNTERS:
                        entry[key] = worker[key]
        return {
            "workers": per_worker,
            "routes": {
                guid: {
                    "type": r.type_name,
                    "name": r.name,
                    "placement": r.placement,
                    "strategy": r.strategy,
                    "workers": list(r.workers),
                    "held": r.held_total,
                }
                for guid, r in self.routes.items()
            },
        }

    def shutdown(self, deadline: float) -> None:
        """Drain in-flight calls until ``deadline`` (monotonic), log the counters, stop workers."""
        try:
            self.pool.drain(deadline)
            try:
                stats = self.stats(timeout=2.0)
            except Exception as exc:
                stats = {"workers": self.pool.stats(), "objects": f"unavailable: {exc}"}
            log.info("process pool stats at shutdown: %s", stats)
        finally:
            self._timer.stop()
            self.pool.stop(deadline)
