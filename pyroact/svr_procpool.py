"""The process-pool server mode's parent side: worker processes and their links (layer 5).

How it works
------------
In the process mode the daemon's parent process accepts connections, runs the handshakes and
frames calls exactly as in the threaded mode, but the objects live in worker processes. This
module starts the workers (fresh interpreters: ``python -m pyroact._worker``, never a fork of
the threaded parent) and owns one *link* per worker, a Unix socket pair that carries the same
frames as the network:

* parent → worker: ``REQUEST``/``ONEWAY`` with ``seq`` = a call id of the link (0: answer
  nothing; the parent sends oneway calls it does not wait for that way), the target
  object id, ``method`` = ``"<connection id>:<method name>"``, and the client's payload and
  buffers untouched (the parent never unpickles them); control requests (object id ``""``)
  with a pickled argument tuple from the parent itself.
* worker → parent: ``REPLY``/``EXCEPTION`` with the call id, and ``ONEWAY`` notifications
  (object id ``""``) such as an object the worker connected by itself.

The parent reads every link on the daemon's I/O thread (the one that reads the clients'
sockets), so handling a reply never waits for the GIL held by another thread of the parent and
a worker's answer and a client's next call are often read in one wake-up. Nothing that runs
there blocks; a worker's death is dealt with on a thread of its own.

A worker shares its parent's fate: it exits when its link reaches EOF, which also happens when
the parent is killed with ``kill -9``. When a worker dies, every call it had (running or queued
in a mailbox) fails at once with :class:`~pyroact.errors.WorkerDiedError` naming the call and
the exit status; the worker is restarted unless it crashed too often (``MAX_RESTARTS`` within
``RESTART_WINDOW`` seconds; then an error is logged and the worker stays down). A restarted
worker gets the daemon's settings and objects back before calls are routed to it; until then
calls to its pinned objects fail with "not running". Calls are never retried.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import _wirespec as spec
from ._board import CONNECTION_SLOTS, SLOTS, CompletionBoard, LoadTable, boards_supported
from .errors import DaemonError, PyroError, WorkerDiedError
from .transport import ServerChannel
from .wire import Frame, encode_frame

__all__ = [
    "COMPUTED",
    "DELIVERED",
    "DELIVERED_COMPUTED",
    "PendingCall",
    "WorkerHandle",
    "WorkerPool",
    "describe_status",
]

log = logging.getLogger("pyroact.system")

# At most this many restarts of one worker within RESTART_WINDOW seconds.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STARTUP_TIMEOUT = 60.0
CONTROL_TIMEOUT = 60.0

ReplyHandler = Callable[[Frame | None, BaseException | None], None]


class LinkWatcher(Protocol):
    """What reads the links: the daemon's I/O thread (``svr_threads.ThreadedServer``)."""

    def add_reader(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable()`` on the I/O thread whenever ``fd`` is readable; owns ``fd``."""

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` and close it; idempotent."""

    def on_io_thread(self) -> bool:
        """Tell whether the calling thread is the one that runs the ``on_readable`` calls."""


# The method of a worker's REPLY frame that says "answered on the client's socket itself".
DELIVERED = "delivered"
# The same, or on a reply the parent relays, for a call that was busy on the CPU throughout
# (the parent holds the object's later calls while such calls run; see ProcessRouter).
DELIVERED_COMPUTED = "delivered computed"
COMPUTED = "computed"


class PendingCall:
    """A call sent to a worker and not answered yet.

    Args:
        label: what to name in an error (``"Class.method of object <id>"``).
        on_done: called once as ``on_done(frame, None)`` with the reply, or
            ``on_done(None, error)`` when the worker died, or (a ``silent`` call that the
            worker answered on the client's socket and marked on its board)
            ``on_done(None, None)``.
        silent: the worker answers it on the client's socket without a notice on the link
            (unless the parent asks for one), marking it on its board instead.
    """

    __slots__ = ("label", "on_done", "silent")

    def __init__(self, label: str, on_done: ReplyHandler, *, silent: bool = False) -> None:
        self.label = label
        self.on_done = on_done
        self.silent = silent


class WorkerHandle:
    """One worker process and its link."""

    def __init__(
        self,
        index: int,
        process: subprocess.Popen[bytes],
        channel: ServerChannel,
        fd_channel: socket.socket,
        board: CompletionBoard | None = None,
    ) -> None:
        self.index = index
        self.process = process
        self.channel = channel
        # Passes client sockets to the worker (SCM_RIGHTS), one message per socket.
        self.fd_channel = fd_channel
        self.pid = process.pid
        # The duplicate of the link's descriptor that the I/O thread watches (None once it
        # stopped): closed only when unwatched, so its number is never reused while watched.
        self.watch_fd: int | None = None
        self.pending: dict[int, PendingCall] = {}
        self.lock = threading.Lock()  # pending calls, call ids, alive, settled
        # Where the worker marks the silent calls it answered (None: it sends notices).
        self.board = board
        self.settled = 0  # silent calls marked on the board and no longer pending here
        self._silent_slots: dict[int, int] = {}  # board slot -> pending silent call id
        self.send_lock = threading.Lock()  # writes to the link, and the held frames
        self.next_id = 1
        self.alive = True
        self.death: str | None = None  # how it died ("worker 0 (pid …) died with …")
        self.calls = 0
        # Calls routed to this worker that the parent holds until the worker's serial object
        # has answered the one before (ProcessRouter's turns); they count as outstanding.
        self.held_calls = 0
        self.ready = threading.Event()
        # Keys of the client connections this worker holds a thread-local storage for.
        self.sessions: set[str] = set()
        # Frames encoded but not sent yet (send_call(..., later=True)), sent with the next
        # frame or by flush(): a burst of a client's frames costs one write to the link.
        self._held: list[Any] = []
        # Client connections the worker reads itself (PYRO_WORKER_READS), by their record on
        # the board, and the records free to hand out (oldest first: a record is reused as
        # late as possible, after the worker has surely forgotten its connection).
        self.read_conns: dict[int, Any] = {}
        self._free_records = collections.deque(range(CONNECTION_SLOTS) if board else ())

    @property
    def load(self) -> int:
        """Calls routed here and not answered (sent, or held in the parent for their turn)."""
        load = len(self.pending) + self.held_calls
        if self.board is not None:
            load -= self.board.marked - self.settled  # answered, not settled here yet
            load += self.board.reading  # calls of the connections it reads itself
        return max(0, load)  # (read without the lock: a moment's count may be off by one)

    def _next_call_id(self, silent: bool) -> int:
        # Called with the lock held. A silent call gets an id whose board slot no other
        # pending silent call uses, so that no late mark can overwrite an unread one.
        while True:
            call_id = self.next_id
            self.next_id = (call_id + 1) & spec.MAX_SEQ or 1
            if not silent:
                return call_id
            slot = call_id % SLOTS
            if slot not in self._silent_slots:
                self._silent_slots[slot] = call_id
                return call_id

    def take_record(self, conn: Any) -> int | None:
        """A board record for a connection the worker is to read, or None if none is free."""
        with self.lock:
            if self.board is None or not self.alive or not self._free_records:
                return None
            slot = self._free_records.popleft()
            self.read_conns[slot] = conn
        self.board.clear_record(slot)
        return slot

    def release_record(self, slot: int) -> Any:
        """The connection a record was handed out for (None if released already); frees it."""
        with self.lock:
            conn = self.read_conns.pop(slot, None)
            if conn is not None:
                self._free_records.append(slot)
        return conn

    @property
    def takes_silent_calls(self) -> bool:
        """Whether a new call may be silent (a board, with free slots to spare)."""
        return self.board is not None and len(self._silent_slots) < SLOTS // 2

    def _forget(self, call_id: int, call: PendingCall) -> None:
        # Called with the lock held, for a call taken off the pending ones.
        if call.silent:
            self._silent_slots.pop(call_id % SLOTS, None)

    def settle(self, call_id: int) -> PendingCall | None:
        """Take a silent call off the pending ones if the worker marked it as answered.

        Returns:
            The call, or None when it is not marked (or no longer pending).
        """
        board = self.board
        with self.lock:
            call = self.pending.get(call_id)
            if call is None or board is None or not board.is_marked(call_id):
                return None
            del self.pending[call_id]
            self._forget(call_id, call)
            self.settled += 1
        return call

    def settle_marked(self) -> list[PendingCall]:
        """Take every silent call the worker marked as answered off the pending ones."""
        board = self.board
        if board is None or board.marked == self.settled:
            return []
        with self.lock:
            done = [cid for cid, c in self.pending.items() if c.silent and board.is_marked(cid)]
            self.settled += len(done)
            calls = [self.pending.pop(cid) for cid in done]
            for cid, call in zip(done, calls, strict=True):
                self._forget(cid, call)
            return calls

    def pop_pending(self, call_id: int) -> PendingCall | None:
        """Take a call off the pending ones (its answer arrived, or it can never arrive)."""
        with self.lock:
            call = self.pending.pop(call_id, None)
            if call is not None and call.silent:
                self._forget(call_id, call)
                if self.board is not None and self.board.is_marked(call_id):
                    self.settled += 1  # a notice the parent asked for
        return call

    def send_call(
        self,
        msg_type: int,
        *,
        object_id: str,
        method: str,
        payload: Any,
        buffers: Sequence[Any],
        flags: int,
        pending: PendingCall | None,
        later: bool = False,
    ) -> int:
        """Send one frame to the worker, recording ``pending`` under a fresh call id.

        Without ``pending`` the frame goes with call id 0: the worker sends no answer to it.
        With ``later`` the frame is held until the next frame sent without it, or
        :meth:`flush`; whoever passes ``later`` must make sure one of those follows.

        Returns:
            The call id.

        Raises:
            WorkerDiedError: the worker is gone.
        """
        with self.lock:
            if not self.alive:
                raise WorkerDiedError(f"worker {self.index} is not running")
            call_id = 0
            if pending is not None:
                call_id = self._next_call_id(pending.silent)
                self.pending[call_id] = pending
            self.calls += 1
        segments = encode_frame(
            msg_type,
            seq=call_id,
            object_id=object_id,
            method=method,
            payload=payload,
            buffers=buffers,
            flags=flags,
        )
        # Writing takes the send lock only: the link reader, which takes ``lock`` to find a
        # reply's call, never waits for a write (a fast worker answers before sendmsg returns).
        with self.send_lock:
            if later:
                self._held.extend(segments)
                return call_id
            if self._held:
                segments = [*self._held, *segments]
                self._held.clear()
            try:
                self.channel.send(segments)
            except PyroError as exc:
                failed = WorkerDiedError(f"worker {self.index} link failed: {exc}")
            else:
                return call_id
        if pending is not None and self.pop_pending(call_id) is None:
            return call_id  # the worker's death has failed this call already
        raise failed from None

    def notify(self, name: str, *args: Any) -> None:
        """Send the worker a control notification (``name(*args)``, answered by nothing).

        Raises:
            WorkerDiedError: the worker is gone.
        """
        self.send_call(
            spec.MSG_ONEWAY,
            object_id="",
            method=name,
            payload=pickle.dumps(args, 5),
            buffers=(),
            flags=0,
            pending=None,
        )

    def send_socket(self, key: str, fd: int) -> None:
        """Give the worker a descriptor of a client's socket, for connection ``key``.

        Sent before the connection's introduction on the link, so the worker finds it there.

        Raises:
            OSError: the worker is gone, or the descriptor cannot be passed.
        """
        with self.send_lock:
            socket.send_fds(self.fd_channel, [key.encode()], [fd])

    def close_link(self) -> None:
        """Send what is held, then CLOSE: the worker drains its calls and exits."""
        with self.send_lock:
            segments = [*self._held, *encode_frame(spec.MSG_CLOSE)]
            self._held.clear()
            try:
                self.channel.send(segments)
            except PyroError:
                pass  # gone already: its link reader reports it

    def flush(self) -> None:
        """Send the frames held by ``send_call(..., later=True)``, if any.

        Raises:
            WorkerDiedError: the worker is gone (its pending calls fail with its death).
        """
        with self.send_lock:
            if not self._held:
                return
            segments = list(self._held)
            self._held.clear()
            if not self.alive:
                raise WorkerDiedError(f"worker {self.index} is not running")
            try:
                self.channel.send(segments)
            except PyroError as exc:
                raise WorkerDiedError(f"worker {self.index} link failed: {exc}") from None


class WorkerPool:
    """Starts, watches and restarts the worker processes of one daemon.

    Args:
        count: how many workers.
        name: the daemon's name (for process titles).
        worker_args: extra ``--key value`` arguments for every worker.
        on_notify: called as ``on_notify(worker_index, name, args)`` for a worker's
            notification (on the I/O thread: it must not block).
        on_restart: called as ``on_restart(worker_index, handle)`` when a restarted worker is
            ready, before calls are routed to it: it gets the worker's configuration and
            objects back (with ``control(..., handle=handle)``).
        watcher: reads the links (the daemon's I/O thread).
        on_death: called as ``on_death(handle, reason)`` when a worker has died, after its
            pending calls failed and while its board can still be read (on a thread of its
            own).

    Raises:
        ValueError: ``count`` is below 1.
    """

    def __init__(
        self,
        count: int,
        *,
        name: str,
        worker_args: dict[str, str],
        on_notify: Callable[[int, str, Any], None],
        on_restart: Callable[[int, WorkerHandle], None],
        watcher: LinkWatcher,
        on_death: Callable[[WorkerHandle, str], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"a process pool needs at least 1 worker, not {count}")
        self.count = count
        self.name = name
        self._worker_args = worker_args
        self._on_notify = on_notify
        self._on_restart = on_restart
        self._on_death = on_death
        self._watcher = watcher
        self.workers: list[WorkerHandle] = []
        self._restarts: list[collections.deque[float]] = [collections.deque() for _ in range(count)]
        self.restart_counts = [0] * count
        self._closing = False
        self._death_threads: list[threading.Thread] = []  # handling a worker's death
        self._rr = 0
        self._lock = threading.Lock()
        # The workers' counts of calls they read from clients themselves (see LoadTable).
        self.loads = LoadTable.create(count) if boards_supported() else None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker and wait until each is ready.

        Raises:
            DaemonError: a worker did not start.
        """
        self.workers = [self._spawn(i) for i in range(self.count)]
        for handle in self.workers:
            self._wait_ready(handle)

    def _spawn(self, index: int) -> WorkerHandle:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent_fds, child_fds = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        board = CompletionBoard.create() if boards_supported() else None
        args = [
            sys.executable,
            "-m",
            "pyroact._worker",
            "--fd",
            str(child_sock.fileno()),
            "--fd-channel",
            str(child_fds.fileno()),
            "--index",
            str(index),
            "--count",
            str(self.count),
            "--name",
            self.name,
        ]
        passed = [child_sock.fileno(), child_fds.fileno()]
        if board is not None:
            args += ["--board-fd", str(board.fd)]
            passed.append(board.fd)
        if self.loads is not None:
            self.loads.reset(index)
            args += ["--loads-fd", str(self.loads.fd)]
            passed.append(self.loads.fd)
        for key, value in self._worker_args.items():
            args += [f"--{key}", value]
        # Like multiprocessing's spawn: the worker sees the parent's import path, so classes
        # from the server's own modules can be unpickled there.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        try:
            process = subprocess.Popen(
                args,
                pass_fds=passed,
                close_fds=True,
                env=env,
            )
        except BaseException:
            if board is not None:
                board.close()
            raise
        finally:
            child_sock.close()
            child_fds.close()
        handle = WorkerHandle(index, process, ServerChannel(parent_sock), parent_fds, board)
        handle.watch_fd = os.dup(parent_sock.fileno())
        try:
            self._watcher.add_reader(
                handle.watch_fd, functools.partial(self._link_readable, handle)
            )
        except (OSError, ValueError) as exc:  # the daemon's I/O loop is closed already
            os.close(handle.watch_fd)
            handle.watch_fd = None
            process.kill()
            self._finish(handle, time.monotonic())
            raise DaemonError(f"cannot watch the link of worker {index}: {exc}") from None
        return handle

    def _wait_ready(self, handle: WorkerHandle) -> None:
        if not handle.ready.wait(STARTUP_TIMEOUT) or not handle.alive:
            raise DaemonError(
                f"worker {handle.index} (pid {handle.pid}) did not start "
                f"(exit status {handle.process.poll()})"
            )

    def shutdown(self, deadline: float) -> None:
        """Let in-flight calls finish until ``deadline`` (monotonic), then stop every worker.

        Args:
            deadline: ``time.monotonic()`` value after which workers are stopped regardless.
        """
        self.drain(deadline)
        self.stop(deadline)

    def drain(self, deadline: float) -> None:
        """Stop restarting workers and wait until ``deadline`` for the in-flight calls.

        Args:
            deadline: a ``time.monotonic()`` value.
        """
        self._closing = True
        for handle in self.workers:
            while handle.load and handle.alive and time.monotonic() < deadline:
                time.sleep(0.01)

    def stop(self, deadline: float) -> None:
        """Tell every worker to exit, wait for it (killing it past ``deadline`` + 2 s).

        Args:
            deadline: a ``time.monotonic()`` value.
        """
        with self._lock:
            self._closing = True
            # A worker that died before now may be restarting: its replacement is not routed
            # yet, and the restart stops it itself once it sees the pool closing.
            restarts, self._death_threads = self._death_threads, []
        for handle in self.workers:
            if handle.alive:
                handle.close_link()
        for thread in restarts:
            thread.join(max(0.1, deadline - time.monotonic()) + 2.0)
            if thread.is_alive():
                log.warning("%s did not end before the shutdown deadline", thread.name)
        for handle in self.workers:
            self._finish(handle, deadline)
        if self.loads is not None:
            self.loads.close()

    def _finish(self, handle: WorkerHandle, deadline: float) -> None:
        # Wait for a worker told to exit (killing it past deadline + 2 s), and release its
        # link, descriptor channel and board; idempotent.
        try:
            handle.process.wait(max(0.1, deadline - time.monotonic()) + 2.0)
        except subprocess.TimeoutExpired:
            handle.process.kill()
            handle.process.wait(5.0)
        self._unwatch(handle)
        handle.channel.close()
        handle.fd_channel.close()
        if handle.board is not None:
            handle.board.close()

    # -- routing -------------------------------------------------------------------------------

    def worker(self, index: int) -> WorkerHandle:
        """The current handle of worker ``index``."""
        return self.workers[index]

    def least_loaded(self, indices: Sequence[int] | None = None, prefer: int | None = None) -> int:
        """The live worker (among ``indices``) with the fewest outstanding calls.

        Args:
            indices: the workers to choose from (None: all).
            prefer: the worker to choose among those tied for the fewest (the one a
                connection's last call went to: a client that gets its reply and calls again
                finds its worker tied with one whose client is between calls too, and keeping
                each client on its worker keeps the calls spread out).

        Raises:
            DaemonError: no worker is running.
        """
        best: WorkerHandle | None = None
        best_load = 0
        for handle in self.workers if indices is None else [self.workers[i] for i in indices]:
            if not handle.alive:
                continue
            load = handle.load
            if best is None or load < best_load or (load == best_load and handle.index == prefer):
                best, best_load = handle, load
        if best is None:
            raise DaemonError("no worker process is running")
        return best.index

    def round_robin(self) -> int:
        """The next live worker in turn.

        Raises:
            DaemonError: no worker is running.
        """
        with self._lock:
            for _ in range(self.count):
                index = self._rr % self.count
                self._rr += 1
                if self.workers[index].alive:
                    return index
        raise DaemonError("no worker process is running")

    def control(
        self,
        index: int,
        name: str,
        *args: Any,
        handle: WorkerHandle | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run a control request on a worker and wait for its result.

        Args:
            index: the worker.
            name: the control name (see ``pyroact._worker``).
            *args: its arguments (pickled here: they come from the parent itself).
            handle: the worker's handle, when it is not the routed one yet (a restart).
            timeout: seconds to wait for the answer (default ``CONTROL_TIMEOUT``).

        Returns:
            The worker's result.

        Raises:
            WorkerDiedError: the worker died before answering.
            BaseException: what the control request raised in the worker.
        """
        from . import serializer

        if self._watcher.on_io_thread():
            # The answer is read on this very thread: waiting for it here would hang.
            raise DaemonError(f"control {name!r} cannot wait on the thread that reads the links")
        done = threading.Event()
        outcome: list[Any] = []

        def on_done(frame: Frame | None, error: BaseException | None) -> None:
            outcome.append((frame, error))
            done.set()

        payload, buffers, flags = serializer.dumps(args)
        target = handle if handle is not None else self.workers[index]
        target.send_call(
            spec.MSG_REQUEST,
            object_id="",
            method=name,
            payload=payload,
            buffers=buffers,
            flags=flags,
            pending=PendingCall(f"control {name!r} on worker {index}", on_done),
        )
        if not done.wait(CONTROL_TIMEOUT if timeout is None else timeout):
            raise WorkerDiedError(f"worker {index} did not answer control {name!r}")
        frame, error = outcome[0]
        if error is not None:
            raise error
        if frame.msg_type == spec.MSG_EXCEPTION:
            raise serializer.loads_exception(frame.payload)
        return serializer.loads(frame.payload, frame.buffers)

    # -- the link reader -----------------------------------------------------------------------

    def _link_readable(self, handle: WorkerHandle) -> None:
        # On the I/O thread: act on the frames that arrived; at EOF (or a broken stream) the
        # worker is gone, and its death is handled on a thread of its own (it waits for the
        # process and may start a new one).
        try:
            frames = handle.channel.receive_available()
        except PyroError:
            self._unwatch(handle)
            thread = threading.Thread(
                target=self._worker_died,
                args=(handle,),
                name=f"pyroact-worker-{handle.index}-ended",
                daemon=True,
            )
            with self._lock:
                # Registered and started under the lock stop() takes to set _closing: a
                # thread it does not join sees the pool closing, and starts no worker.
                self._death_threads = [t for t in self._death_threads if t.is_alive()]
                self._death_threads.append(thread)
                thread.start()
            return
        for frame in frames:
            if frame.object_id == "" and frame.msg_type == spec.MSG_ONEWAY:
                try:
                    self._notification(handle, frame)
                except Exception:  # the I/O thread serves every connection: never let it die
                    log.exception("bad notification from worker %d", handle.index)
                continue
            pending = handle.pop_pending(frame.seq)
            if pending is not None:
                try:
                    pending.on_done(frame, None)
                except Exception:
                    log.exception("error forwarding a reply from worker %d", handle.index)

    def _unwatch(self, handle: WorkerHandle) -> None:
        with handle.lock:
            fd, handle.watch_fd = handle.watch_fd, None
        if fd is not None:
            self._watcher.remove_reader(fd)

    def _notification(self, handle: WorkerHandle, frame: Frame) -> None:
        args = pickle.loads(frame.payload)
        if frame.method == "ready":
            handle.ready.set()
            return
        try:
            self._on_notify(handle.index, frame.method, args)
        except Exception:
            log.exception("error handling notification %r of worker %d", frame.method, handle.index)
        if frame.seq:  # the worker waits until this notification has been acted on
            try:
                handle.notify("ack", frame.seq)
            except WorkerDiedError:
                pass

    def _worker_died(self, handle: WorkerHandle) -> None:
        with handle.lock:
            handle.alive = False
            pending, handle.pending = handle.pending, {}
        try:
            status: int | None = handle.process.wait(2.0)
        except subprocess.TimeoutExpired:
            handle.process.kill()
            status = handle.process.wait(5.0)
        handle.ready.set()
        handle.channel.close()
        handle.fd_channel.close()
        described = describe_status(status)
        if self._closing:
            reason = f"the daemon shut down before worker {handle.index} answered"
        else:
            log.error("worker %d (pid %d) died with %s", handle.index, handle.pid, described)
            reason = f"worker {handle.index} (pid {handle.pid}) died with {described}"
        handle.death = reason
        board = handle.board
        for call_id, call in pending.items():
            # A silent call marked on the board was answered before the worker died (the
            # mark comes just before the reply is written: a kill in between is not told).
            answered = call.silent and board is not None and board.is_marked(call_id)
            error = None if answered else WorkerDiedError(f"{reason} during {call.label}")
            try:
                call.on_done(None, error)
            except Exception:
                log.exception("error failing a call of dead worker %d", handle.index)
        if self._on_death is not None:
            try:
                self._on_death(handle, reason)  # (while its board is still mapped)
            except Exception:
                log.exception("error taking back the connections of dead worker %d", handle.index)
        if board is not None:
            board.close()
        if not self._closing:
            self._restart(handle.index)

    def _restart(self, index: int) -> None:
        now = time.monotonic()
        times = self._restarts[index]
        while times and now - times[0] > RESTART_WINDOW:
            times.popleft()
        if len(times) >= MAX_RESTARTS:
            log.error(
                "worker %d crashed %d times within %.0f s: not restarting it "
                "(its pinned objects stay unavailable)",
                index,
                len(times) + 1,
                RESTART_WINDOW,
            )
            return
        times.append(now)
        try:
            handle = self._spawn(index)
        except (OSError, DaemonError) as exc:
            log.error("cannot restart worker %d: %s", index, exc)
            return
        try:
            self._wait_ready(handle)
        except DaemonError as exc:
            log.error("cannot restart worker %d: %s", index, exc)
            handle.process.kill()
            self._finish(handle, time.monotonic())
            return
        # The dead handle stays routed (calls fail with "not running") until the new worker
        # has its configuration and objects back.
        try:
            self._on_restart(index, handle)
        except Exception:
            log.exception("error restoring restarted worker %d", index)
        with self._lock:
            closing = self._closing
            if handle.alive and not closing:
                self.restart_counts[index] += 1
                self.workers[index] = handle
        if closing:  # never routed: stop() does not know it
            handle.close_link()
            self._finish(handle, time.monotonic())
        elif handle.alive:
            log.warning("worker %d restarted (pid %d)", index, handle.pid)
        # (else it died again meanwhile: its own link reader deals with that)

    def stats(self) -> list[dict[str, Any]]:
        """Per-worker counters: pid, alive, calls, outstanding calls, restarts."""
        return [
            {
                "index": h.index,
                "pid": h.pid,
                "alive": h.alive,
                "calls": h.calls,
                "outstanding": h.load,
                "restarts": self.restart_counts[h.index],
            }
            for h in self.workers
        ]

    @staticmethod
    def default_count() -> int:
        """One worker per CPU."""
        return os.cpu_count() or 1


def describe_status(status: int | None) -> str:
    """``"exit status -9 (SIGKILL)"``, ``"exit status 1"``: how a worker process ended."""
    if status is None:
        return "an unknown exit status"
    if status < 0:
        try:
            return f"exit status {status} ({signal.Signals(-status).name})"
        except ValueError:
            pass
    return f"exit status {status}"
