"""Executors for calls: a thread pool that holds threads only for running work, and mailboxes.

An object's :class:`Mailbox` is its actor queue: calls enter in arrival order; a *serial*
mailbox (``SynchronizedObjBase``) runs one at a time and the queued calls hold no thread while
they wait, a concurrent one (``ObjBase``) starts each call as soon as the executor can. The
same mailbox code runs in every server mode; only the executor differs (inline in the
single-threaded mode, a :class:`ThreadPool` in the threaded mode and in each process-mode
worker).

A concurrent mailbox may *linger* (process-mode workers): a call that arrives while another
call of the object is busy on the CPU waits, up to ``linger`` seconds, for it to end, and then
starts on the thread that ran it. Under the GIL two CPU-bound calls in one process only take
turns, so starting the second at once makes both finish late together and leaves the worker
idle until its clients call again; waiting makes them finish one after the other. A running
call that waits (I/O, a lock, a nested call) uses little CPU, so a call arriving then starts at
once, and the bound keeps a call that computes and then blocks from holding the next one long.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator

from .errors import BusyError

__all__ = [
    "BUSY",
    "IDLE",
    "UNKNOWN",
    "InlineExecutor",
    "Mailbox",
    "RunningCall",
    "Submit",
    "Task",
    "ThreadPool",
    "blocking",
    "in_pool_thread",
    "work_done",
]

log = logging.getLogger("pyroact.system")

Task = Callable[[], None]
Submit = Callable[[Task], None]

# The pool that runs the current thread's task (unset outside pool threads).
_worker = threading.local()
# Pool threads inside blocking() now, by thread id: their calls wait, they do not compute.
_waiting_threads: set[int] = set()
# Threads whose running call has done its work (see work_done()): it only sends its reply.
_done_threads: set[int] = set()

# Lingering needs each running call's thread CPU time (POSIX thread CPU clocks).
CAN_LINGER = hasattr(time, "pthread_getcpuclockid")
# A running call that used at least this share of a CPU since it started is busy on the CPU
# (a quarter, not more: on an oversubscribed machine a computing thread gets less than a
# whole CPU, while a waiting one uses next to none).
# One that started less than BUSY_MIN_SAMPLE seconds ago cannot be told yet: a call arriving
# then waits and is looked at again BUSY_RECHECK seconds later (calls that arrive together
# would otherwise start together and, if they compute, finish together every time).
BUSY_CPU_SHARE = 0.25
BUSY_MIN_SAMPLE = 0.0005
BUSY_RECHECK = 0.002
# What a look at a running call finds (RunningCall.state).
IDLE, UNKNOWN, BUSY = 0, 1, 2


def in_pool_thread() -> bool:
    """Tell whether the current thread is a :class:`ThreadPool` thread (cheap)."""
    return getattr(_worker, "pool", None) is not None


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Mark the current pool thread as waiting on another call while the block runs.

    A call that makes a nested remote call (a callback, A→B→A…) holds its pool thread while
    it waits for the reply. Inside this block that thread does not count against the pool's
    bound, so the pool starts another thread for queued work instead of deadlocking when
    every thread waits on a call that sits in the queue. Outside a pool thread it does
    nothing.

    Yields:
        Nothing.
    """
    pool: ThreadPool | None = getattr(_worker, "pool", None)
    ident = threading.get_ident()
    if pool is None or ident in _waiting_threads:  # (not a pool thread, or already inside)
        yield
        return
    pool._enter_blocking()
    try:
        _waiting_threads.add(ident)
        if pool.on_blocking is not None:
            pool.on_blocking()
        yield
    finally:
        _waiting_threads.discard(ident)
        pool._exit_blocking()


def work_done() -> None:
    """Say that the current thread's call has done its work and only sends its reply now.

    From then on the call counts as idle (see :class:`RunningCall`): the next call of the
    object may arrive before this one's task has returned (its client has the reply), and
    must not wait for it.
    """
    _done_threads.add(threading.get_ident())


def _run_logged(task: Task) -> None:
    try:
        task()
    except Exception:
        # Tasks report their own errors to their callers; this is the last line of defence so
        # that a bug never kills a pool thread.
        log.exception("unhandled error in a pyroact task")


class InlineExecutor:
    """Runs each task at once in the calling thread (the single-threaded server mode)."""

    def submit(self, task: Task) -> None:
        """Run ``task`` now.

        Args:
            task: the work.
        """
        _run_logged(task)

    def shutdown(self, timeout: float = 0.0) -> None:
        """Nothing to stop."""


class ThreadPool:
    """A bounded pool whose threads exist only while there is work.

    A thread is started when a task arrives and no idle thread is waiting, up to
    ``max_threads``; beyond that tasks queue. Idle threads exit after ``idle_timeout``. So idle
    connections never hold a thread. A thread waiting inside :func:`blocking` (a nested
    remote call waiting for its reply) does not count against ``max_threads``, so nested
    calls deeper than the pool (A→B→A→B…) do not deadlock: at most ``max_threads`` threads
    run while any number wait on the calls they made.

    Wake-ups are paced: while one thread is on its way (woken or just started, not running
    yet), new tasks queue behind it, and each thread that arrives wakes the next one if work
    is still queued. A burst of tasks (a client's oneway calls) therefore costs one wake-up
    at a time instead of one per task all at once, which under the GIL would only make the
    woken threads queue for it; the threads that are running take queued tasks before they
    park.

    Args:
        max_threads: the most threads running tasks at once.
        name: thread name prefix.
        idle_timeout: seconds an idle thread waits for work before it exits.

    Raises:
        ValueError: ``max_threads`` is below 1.
    """

    def __init__(self, max_threads: int, *, name: str = "pyroact", idle_timeout: float = 30.0):
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}")
        self.max_threads = max_threads
        self._name = name
        self._idle_timeout = idle_timeout
        self._tasks: collections.deque[Task] = collections.deque()
        # Each idle thread parks on a lock of its own; a wake-up hands a task straight to one
        # and releases that lock: one futex wake, none of Condition's Python-level bookkeeping.
        self._idle: list[_Slot] = []
        self._lock = threading.Lock()
        self._exited = threading.Condition(self._lock)
        self._threads = 0
        self._blocked = 0
        self._waking = 0  # threads woken or started that have not arrived yet
        self._started = 0
        self._closed = False
        # Called when a task of the pool starts waiting inside blocking(): a process-mode
        # worker's link reader may hold the frame it waits for.
        self.on_blocking: Callable[[], None] | None = None

    @property
    def threads(self) -> int:
        """How many pool threads exist now."""
        return self._threads

    def has_queued(self) -> bool:
        """Tell whether tasks wait for a thread (every thread is busy); cheap, unlocked."""
        return bool(self._tasks)

    def submit(self, task: Task) -> None:
        """Run ``task`` on a pool thread as soon as one is free.

        Args:
            task: the work.

        Raises:
            RuntimeError: the pool was shut down.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("thread pool is shut down")
            self._tasks.append(task)
            if self._waking:
                return
            try:
                self._dispatch_queued()
            except BaseException:
                self._tasks.remove(task)  # the caller learns it failed: it must not run later
                raise
            if not self._threads:
                # No thread could be started and none runs: nobody would ever take it.
                self._tasks.remove(task)
                raise RuntimeError("cannot start a thread for the task (see the log)")

    def hand_off(self, task: Task) -> bool:
        """Give ``task`` to an idle thread or a new one now; False when it would only queue.

        The process-mode worker uses this to pass the reading of its link to another thread
        before it runs the call it just read (leader/follower): the call then starts without
        waking a thread, and the link is never left unread.

        Args:
            task: the work.

        Returns:
            True when a thread has the task; False (nothing done) when every thread is busy.
        """
        with self._lock:
            if self._closed:
                return False
            if self._idle:
                self._wake(self._idle.pop(), task)
                return True
            if self._threads - self._blocked >= self.max_threads:
                return False
            self._tasks.appendleft(task)
            if self._start_thread():
                return True
            self._tasks.popleft()  # not started: nothing was handed over
            return False

    def _dispatch_queued(self) -> None:
        # Called with the lock held: start the head of the queue on an idle thread, or on a
        # new thread while the bound allows (threads blocked in nested calls do not count).
        if not self._tasks or self._closed:
            return
        if self._idle:
            self._wake(self._idle.pop(), self._tasks.popleft())
        elif self._threads - self._blocked < self.max_threads:
            self._start_thread()

    def _wake(self, slot: _Slot, task: Task) -> None:
        slot.task = task
        self._waking += 1
        slot.parked.release()

    def _start_thread(self) -> bool:
        # Called with the lock held; the new thread takes the head of the queue. False (and
        # the counts as they were) when no thread could be started.
        self._started += 1
        try:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{self._started}", daemon=True
            )
            self._threads += 1
            self._waking += 1
            try:
                thread.start()
            except BaseException:
                self._threads -= 1
                self._waking -= 1
                raise
        except RuntimeError:
            # The interpreter cannot start a thread now (resource limits): the queued work
            # waits for a running thread instead (submit refuses it when there is none).
            log.exception("cannot start a pool thread (%d running)", self._threads)
            return False
        return True

    def _arrived(self) -> None:
        # Called with the lock held by a thread that was woken or started: it has its task,
        # so the next queued task (if any) gets a thread of its own.
        self._waking -= 1
        if not self._waking:
            self._dispatch_queued()

    def _enter_blocking(self) -> None:
        with self._lock:
            self._blocked += 1
            if not self._waking:
                self._dispatch_queued()

    def _exit_blocking(self) -> None:
        with self._lock:
            self._blocked -= 1

    def _next_task(self, slot: _Slot) -> Task | None:
        with self._lock:
            if self._tasks:
                return self._tasks.popleft()
            if self._closed:
                return None
            slot.task = None
            self._idle.append(slot)
        if not slot.parked.acquire(timeout=self._idle_timeout):
            with self._lock:
                if slot in self._idle:
                    self._idle.remove(slot)
                    return None
            # A task was handed over just as the wait timed out: take it.
            slot.parked.acquire()
        task = slot.task
        if task is not None:  # None: the pool is shutting down
            with self._lock:
                self._arrived()
        return task

    def _work(self) -> None:
        _worker.pool = self
        slot = _Slot()
        try:
            with self._lock:
                task = self._tasks.popleft() if self._tasks else None
                self._arrived()
            while True:
                if task is not None:
                    _run_logged(task)
                task = self._next_task(slot)
                if task is None:
                    return
        finally:
            with self._lock:
                self._threads -= 1
                self._exited.notify_all()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting tasks, let queued ones finish, and wait up to ``timeout`` seconds.

        Args:
            timeout: how long to wait for running tasks.
        """
        with self._lock:
            self._closed = True
            for slot in self._idle:
                slot.task = None
                slot.parked.release()
            self._idle.clear()
            self._exited.wait_for(lambda: self._threads == 0, timeout)


class _Slot:
    """An idle pool thread's parking place: a held lock and the task handed to it."""

    __slots__ = ("parked", "task")

    def __init__(self) -> None:
        self.parked = threading.Lock()
        self.parked.acquire()
        self.task: Task | None = None


class RunningCall:
    """The thread CPU clock and start times of a running call, to tell whether it computes.

    Made on the thread that runs the call. Lingering mailboxes keep one per running call, and
    so does a process-mode worker, whose link reader leaves frames to the end of a computing
    call (see :mod:`pyroact._worker`).

    A call whose thread waits inside :func:`blocking` (a nested remote call, a worker's wait
    for the daemon's confirmation) counts as idle while it waits, and so does one that has
    said :func:`work_done`.
    """

    __slots__ = ("clock", "cpu0", "ident", "wall0")

    def __init__(self) -> None:
        self.wall0 = time.monotonic()
        self.ident = threading.get_ident()
        _done_threads.discard(self.ident)  # a new call on this thread: not done yet
        try:
            self.clock: int | None = time.pthread_getcpuclockid(self.ident)
            self.cpu0 = time.clock_gettime(self.clock)
        except (OSError, AttributeError):
            # No CPU clock for this thread (or none on this platform): never holds calls back.
            self.clock, self.cpu0 = None, 0.0

    @property
    def waiting(self) -> bool:
        """Whether the call waits inside :func:`blocking` now."""
        return self.ident in _waiting_threads

    @property
    def done(self) -> bool:
        """Whether the call has said :func:`work_done` (it only sends its reply now)."""
        return self.ident in _done_threads

    def state(self, now: float) -> int:
        """``BUSY`` (on the CPU), ``IDLE`` (mostly waiting) or ``UNKNOWN`` (just started).

        Args:
            now: ``time.monotonic()``.

        Returns:
            One of ``BUSY``, ``IDLE`` and ``UNKNOWN``.
        """
        if self.clock is None or self.ident in _waiting_threads or self.ident in _done_threads:
            return IDLE
        wall = now - self.wall0
        if wall < BUSY_MIN_SAMPLE:
            return UNKNOWN
        try:
            cpu = time.clock_gettime(self.clock) - self.cpu0
        except OSError:  # the thread has just ended
            return IDLE
        return BUSY if cpu >= BUSY_CPU_SHARE * wall else IDLE


class _Waiting:
    """A call of a lingering mailbox waiting for a busy one."""

    __slots__ = ("check_at", "deadline", "task")

    def __init__(self, task: Task, deadline: float, check_at: float) -> None:
        self.task = task
        self.deadline = deadline  # it starts then at the latest
        self.check_at = check_at  # when to look at the running calls again


class Mailbox:
    """One object's FIFO of calls.

    Args:
        submit: the executor that runs tasks.
        serial: run one call at a time (``SynchronizedObjBase``).
        maxsize: the most calls queued or running; beyond that :meth:`post` raises.
        name: what to call the object in errors.
        linger: for a concurrent mailbox, how long a call waits for a running call that is
            busy on the CPU before it starts beside it (0: never waits; see the module
            docstring). Ignored for serial mailboxes and where thread CPU clocks are missing.
            Whoever admits calls to a lingering mailbox must call :meth:`expire` when it says.
        queued: tells whether the executor has tasks waiting for a thread; a lingering
            mailbox then hands its next call to the executor instead of running it on the
            thread that just finished one, so other objects' calls get their turn.
    """

    def __init__(
        self,
        submit: Submit,
        *,
        serial: bool,
        maxsize: int,
        name: str,
        linger: float = 0.0,
        queued: Callable[[], bool] | None = None,
    ) -> None:
        self._submit = submit
        self._queued = queued or (lambda: False)
        self.serial = serial
        self.maxsize = maxsize
        self.name = name
        self.linger = linger if linger > 0 and not serial and CAN_LINGER else 0.0
        self._queue: collections.deque[Task] = collections.deque()
        # Lingering: calls waiting for a busy one, oldest first. The first ``_released`` of
        # them are due: a task that starts the oldest waiting call is with the executor for
        # each (whoever gets there first, that task or the end of a running call, takes it).
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._released = 0
        self._running_calls: dict[int, RunningCall] = {}
        self._lock = threading.Lock()
        self._running = False
        self.inflight = 0
        self.calls = 0
        self.errors = 0
        self.lingered = 0  # calls that did not start at once because a running call was busy

    @property
    def depth(self) -> int:
        """Calls queued or running now."""
        return self.inflight

    @property
    def waiting(self) -> bool:
        """Whether calls wait for a busy one and are not due yet (see :meth:`expire`)."""
        return len(self._waiting) > self._released

    def post(self, task: Task) -> None:
        """Add a call; the executor starts it when its turn comes.

        Args:
            task: runs the call and reports its outcome itself.

        Raises:
            BusyError: the mailbox already holds ``maxsize`` calls.
        """
        start = self.admit(task)
        if start is not None:
            self._submit(start)

    def admit(self, task: Task, *, linger: bool = True) -> Task | None:
        """Add a call in order, returning what must run now instead of submitting it.

        Args:
            task: runs the call and reports its outcome itself.
            linger: False for a call that already waited its linger time elsewhere (on a
                worker's link): it starts at once beside a busy call.

        Returns:
            The task that starts the call (or drains a serial mailbox), for the caller to run
            or submit; None when the call waits behind a running one (a serial mailbox, or a
            lingering one whose running call is busy on the CPU: :meth:`expire` then says
            when to look again).

        Raises:
            BusyError: the mailbox already holds ``maxsize`` calls.
        """
        with self._lock:
            if self.inflight >= self.maxsize:
                raise BusyError(
                    f"mailbox of {self.name} is full: {self.inflight} calls queued or running "
                    f"(PYRO_MAILBOX_SIZE={self.maxsize})"
                )
            self.inflight += 1
            self.calls += 1
            if self.serial:
                self._queue.append(task)
                start = None if self._running else self._drain
                self._running = True
                return start
            if not self.linger:
                return lambda: self._run_one(task)
            if not linger and not self._waiting:
                return functools.partial(self._run_lingering, task)
            now = time.monotonic()
            deadline = now + self.linger
            if self._waiting:  # behind the calls already waiting, in arrival order
                self._waiting.append(_Waiting(task, deadline, deadline))
                self.lingered += 1
                return None
            state = self._running_state(now)
            if state != IDLE:
                check_at = deadline if state == BUSY else now + BUSY_RECHECK
                self._waiting.append(_Waiting(task, deadline, check_at))
                self.lingered += 1
                return None
        return functools.partial(self._run_lingering, task)

    def _running_state(self, now: float) -> int:
        # Called with the lock held: BUSY if a running call is busy on the CPU, else
        # UNKNOWN if one just started, else IDLE (each look at a call reads its clock).
        state = IDLE
        for running in self._running_calls.values():
            found = running.state(now)
            if found == BUSY:
                return BUSY
            state = max(state, found)
        return state

    def expire(self, now: float) -> float | None:
        """Start the oldest waiting call beside the running ones if it is due.

        A waiting call is due when its ``linger`` time is up, or when a look at the running
        calls (at the time :meth:`admit` or the previous look set) finds none busy on the
        CPU. At most one call becomes due per call of this method; it starts on the executor
        (or on the thread of a running call that ends first), in arrival order.

        Args:
            now: ``time.monotonic()``.

        Returns:
            When to call again (the next waiting call's look or deadline), or None when no
            call waits that is not due already.
        """
        due = False
        with self._lock:
            if len(self._waiting) <= self._released:
                return None
            head = self._waiting[self._released]
            if head.deadline <= now:
                due = True
            elif head.check_at <= now:
                state = self._running_state(now)
                if state == IDLE:
                    due = True
                else:
                    head.check_at = head.deadline if state == BUSY else now + BUSY_RECHECK
            if due:
                self._released += 1
                if len(self._waiting) > self._released:
                    # The call about to start cannot be told yet: look again shortly.
                    following = self._waiting[self._released]
                    following.check_at = min(following.check_at, now + BUSY_RECHECK)
            after = self._next_look()
        if due and not self._hand_over():
            after = now + BUSY_RECHECK if after is None else min(after, now + BUSY_RECHECK)
        return after

    def _next_look(self) -> float | None:
        # Called with the lock held.
        if len(self._waiting) <= self._released:
            return None
        head = self._waiting[self._released]
        return min(head.check_at, head.deadline)

    def _hand_over(self) -> bool:
        # Gives the executor a task that starts the oldest waiting call (one ``_released``
        # slot); False (the slot taken back, the call still waiting) if it refuses.
        try:
            self._submit(self._start_released)
        except RuntimeError:
            with self._lock:
                self._released = max(0, self._released - 1)
            log.warning("a call to %s waits on: no thread can start it now", self.name)
            return False
        return True

    def _start_released(self) -> None:
        with self._lock:
            if not self._released or not self._waiting:
                return  # a call that ended took it on its own thread
            self._released -= 1
            task = self._waiting.popleft().task
            running = self._register()
        self._run_chain(task, running)

    def _register(self) -> RunningCall:
        # Called with the lock held, on the thread about to run the call.
        running = RunningCall()
        self._running_calls[id(running)] = running
        return running

    def _finish(self) -> None:
        with self._lock:
            self.inflight -= 1

    def _run_one(self, task: Task) -> None:
        try:
            _run_logged(task)
        finally:
            self._finish()

    def _run_lingering(self, task: Task) -> None:
        with self._lock:
            running = self._register()
        self._run_chain(task, running)

    def _run_chain(self, task: Task, running: RunningCall) -> None:
        # Runs the call, then, on the same thread, the oldest call that waited for it, unless
        # the executor has other work waiting for a thread: then it gets the next call.
        current: Task | None = task
        while current is not None:
            finished = False
            try:
                _run_logged(current)
                finished = True
            finally:
                hand_over = False
                with self._lock:
                    del self._running_calls[id(running)]
                    self.inflight -= 1
                    current = None
                    if self._waiting and finished and not self._queued():
                        current = self._waiting.popleft().task
                        self._released = max(0, self._released - 1)
                        running = self._register()
                    elif len(self._waiting) > self._released:
                        self._released += 1
                        hand_over = True
                if hand_over:
                    self._hand_over()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                task = self._queue.popleft()
            self._run_one(task)
