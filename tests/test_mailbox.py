"""The executors under every server mode: the thread pool's bounds and wake-ups, and mailboxes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

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
