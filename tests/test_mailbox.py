"""The executors under every server mode: the thread pool's bounds and wake-ups, and mailboxes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pyroact import _mailbox
from pyroact._mailbox import Mailbox, ThreadPool, blocking, in_pool_thread

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0


def wait_for(condition: Callable[[], object], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    made = ThreadPool(3, name="test-pool")
    yield made
    made.shutdown(5.0)


def test_tasks_run_concurrently_up_to_the_bound(pool: ThreadPool) -> None:
    # Three tasks that each wait for the other two: only possible if all three run at once,
    # so pacing the wake-ups must not serialise them.
    barrier = threading.Barrier(3, timeout=DEADLINE)
    done: list[int] = []
    for i in range(3):
        pool.submit(lambda i=i: (barrier.wait(), done.append(i)))
    wait_for(lambda: len(done) == 3, "three concurrent tasks")
    assert pool.threads <= 3


def test_a_burst_runs_every_task_once_within_the_bound(pool: ThreadPool) -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> None:
        with lock:
            ran.append(i)

    for i in range(500):
        pool.submit(lambda i=i: task(i))
    wait_for(lambda: len(ran) == 500, "a burst of 500 tasks")
    assert sorted(ran) == list(range(500))
    assert pool.threads <= 3


def test_tasks_beyond_the_bound_queue_until_a_thread_is_free(pool: ThreadPool) -> None:
    release = threading.Event()
    started: list[int] = []
    for i in range(3):
        pool.submit(lambda i=i: (started.append(i), release.wait(DEADLINE)))
    wait_for(lambda: len(started) == 3, "three blocked tasks")
    later = threading.Event()
    pool.submit(later.set)
    assert not later.wait(0.2), "a fourth task ran while three threads were busy"
    release.set()
    assert later.wait(DEADLINE)


def test_hand_off_uses_an_idle_thread_and_refuses_when_all_are_busy() -> None:
    pool = ThreadPool(1, name="test-handoff")
    try:
        first = threading.Event()
        assert pool.hand_off(first.set)  # starts the pool's only thread
        assert first.wait(DEADLINE)
        wait_for(lambda: pool._idle, "the thread to park")
        second = threading.Event()
        assert pool.hand_off(second.set)  # the parked thread takes it
        assert second.wait(DEADLINE)

        release = threading.Event()
        pool.submit(lambda: release.wait(DEADLINE))
        wait_for(lambda: not pool._idle, "the thread to be busy")
        refused = threading.Event()
        assert not pool.hand_off(refused.set)
        release.set()
        assert not refused.wait(0.1), "a refused task was queued and ran"
    finally:
        pool.shutdown(5.0)


def test_a_task_blocked_in_a_nested_call_frees_its_place_for_queued_work() -> None:
    pool = ThreadPool(1, name="test-blocking")
    try:
        inner = threading.Event()

        def outer() -> None:
            assert in_pool_thread()
            pool.submit(inner.set)
            with blocking():  # like a call waiting for its callback's reply
                assert inner.wait(DEADLINE)

        finished = threading.Event()
        pool.submit(lambda: (outer(), finished.set()))
        assert finished.wait(DEADLINE)
    finally:
        pool.shutdown(5.0)


def test_submit_after_shutdown_is_refused(pool: ThreadPool) -> None:
    pool.shutdown(5.0)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    assert not pool.hand_off(lambda: None)


def test_serial_mailbox_admits_the_first_call_and_queues_the_rest_in_order() -> None:
    mailbox = Mailbox(lambda task: None, serial=True, maxsize=10, name="Sync x")
    order: list[int] = []
    start = mailbox.admit(lambda: order.append(1))
    assert start is not None
    assert mailbox.admit(lambda: order.append(2)) is None
    assert mailbox.admit(lambda: order.append(3)) is None
    start()  # drains the queue in arrival order
    assert order == [1, 2, 3]
    assert mailbox.depth == 0


def test_concurrent_mailbox_starts_every_call() -> None:
    mailbox = Mailbox(lambda task: None, serial=False, maxsize=10, name="Obj x")
    ran: list[int] = []
    starts = [mailbox.admit(lambda i=i: ran.append(i)) for i in range(3)]
    assert all(s is not None for s in starts)
    assert mailbox.depth == 3
    for s in starts:
        s()  # type: ignore[misc]
    assert ran == [0, 1, 2] and mailbox.depth == 0


class FailingStart:
    """Makes ``threading.Thread.start`` raise ``error`` inside the block."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __enter__(self) -> None:
        self.real = threading.Thread.start
        error = self.error

        def start(thread: threading.Thread) -> None:
            raise error

        threading.Thread.start = start  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        threading.Thread.start = self.real  # type: ignore[method-assign]


def test_a_hand_off_that_cannot_start_a_thread_hands_nothing_over() -> None:
    pool = ThreadPool(2, name="test-handoff-fail")
    release = threading.Event()
    try:
        pool.submit(lambda: release.wait(DEADLINE))
        wait_for(lambda: pool.threads == 1 and not pool._idle, "one busy thread")
        ran = threading.Event()
        with FailingStart(RuntimeError("can't start new thread")):
            assert not pool.hand_off(ran.set)
        release.set()
        assert not ran.wait(0.3), "a refused hand-off ran anyway (two readers on one link)"
    finally:
        release.set()
        pool.shutdown(5.0)


def test_a_task_no_thread_can_ever_run_is_refused_to_the_submitter() -> None:
    pool = ThreadPool(2, name="test-no-thread")
    try:
        with FailingStart(RuntimeError("can't start new thread")):
            with pytest.raises(RuntimeError, match="cannot start a thread"):
                pool.submit(lambda: None)
        ran = threading.Event()
        pool.submit(ran.set)  # threads start again: the pool is not stuck
        assert ran.wait(DEADLINE)
    finally:
        pool.shutdown(5.0)


def test_an_unexpected_error_starting_a_thread_leaves_the_pool_usable() -> None:
    pool = ThreadPool(2, name="test-start-error")
    try:
        with FailingStart(MemoryError()):
            with pytest.raises(MemoryError):
                pool.submit(lambda: None)
        assert pool._waking == 0 and pool.threads == 0 and not pool._tasks
        ran = threading.Event()
        pool.submit(ran.set)
        assert ran.wait(DEADLINE)
    finally:
        pool.shutdown(5.0)


# -- lingering: a concurrent mailbox whose calls wait for a call busy on the CPU -------------------


class Spinner:
    """A call that keeps the CPU busy (in Python) until released, in a thread of its own."""

    def __init__(self, mailbox: Mailbox, order: list[str]) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.threads: dict[str, int] = {}
        self.order = order
        start = mailbox.admit(self.task("A", spin=True))
        assert start is not None, "the first call starts at once"
        self.thread = threading.Thread(target=start)
        self.thread.start()
        assert self.started.wait(DEADLINE)

    def task(self, name: str, *, spin: bool = False) -> Callable[[], None]:
        def run() -> None:
            self.threads[name] = threading.get_ident()
            self.order.append(name)
            self.started.set()
            end = time.monotonic() + DEADLINE
            while spin and not self.release.is_set() and time.monotonic() < end:
                pass  # busy on the CPU, as a pure-Python computation is

        return run

    def finish(self) -> None:
        self.release.set()
        self.thread.join(DEADLINE)


def busy_mailbox(submit: Callable[[Callable[[], None]], None], linger: float,
                 queued: Callable[[], bool] | None = None) -> tuple[Mailbox, Spinner]:  # fmt: skip
    """A lingering mailbox whose first call (``A``) has been computing for a while."""
    mailbox = Mailbox(submit, serial=False, maxsize=10, name="Obj x", linger=linger,
                      queued=queued)  # fmt: skip
    spinner = Spinner(mailbox, [])
    time.sleep(0.02)  # let it spin a while: then it is measurably busy
    return mailbox, spinner


@pytest.fixture
def low_busy_share(monkeypatch: pytest.MonkeyPatch) -> None:
    # A spinning thread shares the CPU with the test's own threads (and a loaded CI machine):
    # counting 10 % of a CPU as busy keeps the tests about the policy, not the machine.
    monkeypatch.setattr(_mailbox, "BUSY_CPU_SHARE", 0.1)


needs_cpu_clocks = pytest.mark.skipif(not _mailbox.CAN_LINGER, reason="no thread CPU clocks")


@needs_cpu_clocks
def test_a_call_waits_for_one_busy_on_the_cpu_and_then_runs_on_its_thread(
    low_busy_share: None,
) -> None:
    submitted: list[Callable[[], None]] = []
    mailbox, spinner = busy_mailbox(submitted.append, 30.0)
    order = spinner.order
    assert mailbox.admit(spinner.task("B")) is None
    assert mailbox.admit(spinner.task("C")) is None  # behind B, in arrival order
    assert mailbox.waiting and mailbox.lingered == 2 and mailbox.depth == 3
    spinner.finish()
    assert order == ["A", "B", "C"]
    assert spinner.threads["B"] == spinner.threads["A"] == spinner.threads["C"]
    assert not mailbox.waiting and mailbox.depth == 0 and not submitted


@needs_cpu_clocks
def test_a_call_starts_at_once_beside_one_that_waits(low_busy_share: None) -> None:
    mailbox = Mailbox(lambda task: None, serial=False, maxsize=10, name="Obj x", linger=30.0)
    waiting = threading.Event()
    started = threading.Event()

    def blocked() -> None:
        started.set()
        waiting.wait(DEADLINE)  # off the CPU, as a call waiting for I/O or a lock is

    start = mailbox.admit(blocked)
    assert start is not None
    thread = threading.Thread(target=start)
    thread.start()
    assert started.wait(DEADLINE)
    time.sleep(0.02)
    ran: list[str] = []
    second = mailbox.admit(lambda: ran.append("B"))
    assert second is not None and mailbox.lingered == 0
    second()
    assert ran == ["B"]
    waiting.set()
    thread.join(DEADLINE)
    assert mailbox.depth == 0


@needs_cpu_clocks
def test_a_waiting_call_starts_beside_the_busy_one_when_its_time_is_up(
    low_busy_share: None,
) -> None:
    submitted: list[Callable[[], None]] = []
    mailbox, spinner = busy_mailbox(submitted.append, 0.2)
    order = spinner.order
    admitted = time.monotonic()
    assert mailbox.admit(spinner.task("B")) is None
    deadline = mailbox.expire(admitted)
    assert deadline is not None and admitted < deadline <= admitted + 0.2 + 0.01
    assert not submitted  # not yet
    assert mailbox.expire(deadline) is None  # its time is up: handed to the executor
    assert len(submitted) == 1 and not mailbox.waiting
    submitted[0]()  # runs now, while A still spins
    assert order == ["A", "B"]
    spinner.finish()
    assert mailbox.depth == 0


def test_serial_and_non_lingering_mailboxes_ignore_linger() -> None:
    serial = Mailbox(lambda task: None, serial=True, maxsize=10, name="Sync x", linger=1.0)
    assert serial.linger == 0.0
    plain = Mailbox(lambda task: None, serial=False, maxsize=10, name="Obj x")
    assert plain.linger == 0.0 and plain.expire(time.monotonic()) is None


@needs_cpu_clocks
def test_a_call_that_arrived_too_early_to_tell_starts_once_the_running_one_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Calls that arrive together: the first has only just started, so the second waits and
    # is looked at again shortly; the first then waits (off the CPU), so the second starts
    # long before its linger time is up.
    monkeypatch.setattr(_mailbox, "BUSY_MIN_SAMPLE", 0.05)
    submitted: list[Callable[[], None]] = []
    mailbox = Mailbox(submitted.append, serial=False, maxsize=10, name="Obj x", linger=30.0)
    release = threading.Event()
    started = threading.Event()
    start = mailbox.admit(lambda: (started.set(), release.wait(DEADLINE)))
    assert start is not None
    thread = threading.Thread(target=start)
    thread.start()
    assert started.wait(DEADLINE)
    assert mailbox.admit(lambda: None) is None  # too early to tell
    check = mailbox.expire(time.monotonic())
    assert check is not None and check < time.monotonic() + 1.0  # a look soon, not in 30 s
    wait_for(lambda: mailbox.expire(time.monotonic()) is None and submitted, "the second call")
    assert len(submitted) == 1
    release.set()
    thread.join(DEADLINE)
    submitted[0]()
    assert mailbox.depth == 0


@needs_cpu_clocks
def test_a_waiting_call_no_thread_can_start_waits_on_and_runs_after_the_busy_one(
    low_busy_share: None,
) -> None:
    def refuse(task: Callable[[], None]) -> None:
        raise RuntimeError("thread pool is shut down")

    mailbox, spinner = busy_mailbox(refuse, 0.05)
    order = spinner.order
    assert mailbox.admit(spinner.task("B")) is None
    assert mailbox.expire(time.monotonic() + 1.0) is not None  # due, refused: still waiting
    assert mailbox.waiting
    spinner.finish()
    assert order == ["A", "B"] and mailbox.depth == 0


@needs_cpu_clocks
def test_a_due_call_waiting_for_a_thread_still_starts_before_later_calls(
    low_busy_share: None,
) -> None:
    # B's time is up while A computes: B is handed to the executor, which has no thread free.
    # C arrives, A ends: A's thread must start B (the oldest), not C; the executor's task
    # then finds nothing left to start.
    submitted: list[Callable[[], None]] = []
    mailbox, spinner = busy_mailbox(submitted.append, 0.05)
    order = spinner.order
    assert mailbox.admit(spinner.task("B")) is None
    mailbox.expire(time.monotonic() + 0.06)
    assert len(submitted) == 1 and not mailbox.waiting
    assert mailbox.admit(spinner.task("C")) is None
    spinner.finish()
    for task in submitted:
        task()
    assert order == ["A", "B", "C"] and mailbox.depth == 0


@needs_cpu_clocks
def test_calls_keep_their_order_in_a_pool_of_one_thread(low_busy_share: None) -> None:
    pool = ThreadPool(1, name="one")
    try:
        mailbox = Mailbox(pool.submit, serial=False, maxsize=10, name="Obj x", linger=0.05,
                          queued=pool.has_queued)  # fmt: skip
        order: list[str] = []
        release, started = threading.Event(), threading.Event()

        def spin() -> None:
            order.append("A")
            started.set()
            end = time.monotonic() + DEADLINE
            while not release.is_set() and time.monotonic() < end:
                pass

        mailbox.post(spin)
        assert started.wait(DEADLINE)
        time.sleep(0.02)
        mailbox.post(lambda: order.append("B"))
        mailbox.expire(time.monotonic() + 0.06)  # B due: queued in the pool behind A
        mailbox.post(lambda: order.append("C"))
        release.set()
        wait_for(lambda: len(order) == 3, "three calls")
        assert order == ["A", "B", "C"]
        wait_for(lambda: mailbox.depth == 0, "an empty mailbox")
    finally:
        pool.shutdown(5.0)


@needs_cpu_clocks
def test_a_finished_call_hands_the_next_to_the_executor_when_it_has_work_waiting(
    low_busy_share: None,
) -> None:
    # Other objects' calls wait for a thread: the thread of a finished call must not run
    # this object's next call before them, so the next one goes to the executor's queue.
    submitted: list[Callable[[], None]] = []
    busy_executor = threading.Event()
    mailbox, spinner = busy_mailbox(submitted.append, 30.0, queued=busy_executor.is_set)
    order = spinner.order
    assert mailbox.admit(spinner.task("B")) is None
    busy_executor.set()
    spinner.finish()
    assert order == ["A"] and len(submitted) == 1  # B is the executor's now
    submitted[0]()
    assert order == ["A", "B"] and mailbox.depth == 0


@needs_cpu_clocks
def test_a_call_that_raises_a_base_exception_hands_the_next_one_on(
    low_busy_share: None,
) -> None:
    submitted: list[Callable[[], None]] = []
    mailbox = Mailbox(submitted.append, serial=False, maxsize=10, name="Obj x", linger=30.0)
    order: list[str] = []
    release, started = threading.Event(), threading.Event()

    def spin_then_exit() -> None:
        order.append("A")
        started.set()
        end = time.monotonic() + DEADLINE
        while not release.is_set() and time.monotonic() < end:
            pass
        raise SystemExit("the call ends its thread")

    start = mailbox.admit(spin_then_exit)
    assert start is not None
    raised: list[BaseException] = []

    def run() -> None:
        try:
            start()
        except BaseException as exc:  # what a pool thread would see
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(DEADLINE)
    time.sleep(0.02)
    assert mailbox.admit(lambda: order.append("B")) is None
    release.set()
    thread.join(DEADLINE)
    assert raised and isinstance(raised[0], SystemExit)
    assert order == ["A"] and len(submitted) == 1  # B was handed on, not lost
    submitted[0]()
    assert order == ["A", "B"] and mailbox.depth == 0
