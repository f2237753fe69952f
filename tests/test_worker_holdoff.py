"""Process mode: a worker's link reader holds off while a call computes.

A frame that arrives while a call of the worker is busy on the CPU stays on the link; the
thread whose call ends takes it and runs the call it starts. The reader still reads it after
``PYRO_WORKER_LINGER`` at the latest, and at once when the computing call starts waiting
for something that comes over the link (a nested remote call, a confirmation).
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import config_values, serving, start_in_thread, wait_until
from proc_objects import SyncWorker, Worker

from pyroact import _worker
from pyroact._readconns import ReadConnection
from pyroact._wirespec import MSG_REQUEST
from pyroact.core import Daemon, DynamicProxy
from pyroact.transport import Channel
from pyroact.wire import encode_frame

pytestmark = pytest.mark.procpool


@contextmanager
def one_worker(linger: float, *classes: type) -> Iterator[tuple[Daemon, list[Any]]]:
    """A one-worker daemon hosting one pinned object per class given, and their URIs."""
    with config_values(PYRO_WORKER_LINGER=linger), serving("process", workers=1) as d:
        yield d, [d.connect(cls) for cls in classes]


def taken_after_call(d: Daemon) -> int:
    return int(d.getStats()["workers"][0]["taken_after_call"])


def calls_in_parallel(*calls: Any) -> list[Any]:
    """Run each call in a thread of its own; their results, in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Any) -> None:
        try:
            results[i] = call()
        except BaseException as exc:  # reported by the assertion on the results
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a call did not return"
    return results


def proxies_to(uri: Any, count: int) -> list[DynamicProxy]:
    return [DynamicProxy(uri) for _ in range(count)]


@contextmanager
def linked_worker() -> Iterator[tuple[_worker.WorkerDaemon, socket.socket]]:
    """A WorkerDaemon in this process on one end of a socket pair, and the other end.

    On the way out the worker is closed (a reader started on it returns) and both ends too.
    """
    ours, parent = socket.socketpair()
    worker = _worker.WorkerDaemon(
        Channel(ours), host="127.0.0.1", port=1, index=0, count=1, name="t"
    )
    try:
        yield worker, parent
    finally:
        worker._closed.set()
        worker._wake_reader()
        worker.pool.shutdown(1.0)
        parent.close()
        worker.link.close()


def start_reader(worker: _worker.WorkerDaemon) -> threading.Event:
    """Start reading the worker's link on a thread of its own; set when the reader returns."""
    done = threading.Event()
    threading.Thread(target=lambda: (worker._read_link(), done.set()), daemon=True).start()
    return done


@pytest.mark.parametrize("cls", [SyncWorker, Worker], ids=["SynchronizedObjBase", "ObjBase"])
def test_the_thread_whose_call_ends_runs_the_call_that_waited_for_it(cls: type) -> None:
    with one_worker(2.0, cls) as (d, [uri]):
        proxies = proxies_to(uri, 2)

        def loop(proxy: DynamicProxy) -> list[tuple[float, float]]:
            return [proxy.timed_burn(0.05) for _ in range(5)]

        try:
            spans = calls_in_parallel(*[functools.partial(loop, p) for p in proxies])
        finally:
            for p in proxies:
                p._release()
        ordered = sorted(span for client in spans for span in client)
        overlaps = sum(b[0] < a[1] - 0.005 for a, b in itertools.pairwise(ordered))
        # One call at a time, each client's calls after the other's, not beside them (two
        # ObjBase calls admitted together, before either started, may run side by side).
        assert overlaps <= (0 if cls is SyncWorker else 1), ordered
        # Most of the 9 calls that arrived behind a computing call were taken by its thread
        # (the first calls of the two clients can meet the reader awake).
        assert taken_after_call(d) >= 3


def test_a_call_behind_a_long_computation_waits_no_longer_than_the_linger(
    tmp_path: Path,
) -> None:
    started = str(tmp_path / "started")
    with one_worker(0.2, Worker, Worker) as (d, [busy_uri, other_uri]):
        busy, other = DynamicProxy(busy_uri), DynamicProxy(other_uri)
        try:
            result: list[Any] = []
            computing = threading.Thread(
                target=lambda: result.append(busy.burn_marked(started, 3.0))
            )
            computing.start()
            wait_until(lambda: Path(started).exists(), timeout=10, what="the burn to start")
            before = time.monotonic()
            assert other.echo("hi") == "hi"
            waited = time.monotonic() - before
            computing.join(30)
            burn_end = result[0][1]
        finally:
            busy._release()
            other._release()
        # It was answered during the 3 s computation, after about the linger time.
        assert waited < 1.5, waited
        assert before + waited < burn_end


def test_a_nested_call_of_a_computing_call_is_read_at_once() -> None:
    # The linger is long: a nested call that waited for the reader would take seconds.
    with one_worker(30.0, Worker, Worker) as (d, [caller_uri, callee_uri]):
        caller = DynamicProxy(caller_uri)
        try:
            value, took = caller.burn_then_call(0.3, callee_uri, 7)
        finally:
            caller._release()
        assert value == 7
        assert took < 0.5, took


def test_a_computing_call_that_hosts_an_object_is_confirmed_at_once() -> None:
    # connect() in a worker waits for the daemon's confirmation, which comes over the link.
    with one_worker(30.0, Worker) as (d, [uri]):
        proxy = DynamicProxy(uri)
        try:
            took = proxy.burn_then_connect(0.3)
        finally:
            proxy._release()
        assert took < 0.5, took


def test_without_linger_the_reader_never_holds_off() -> None:
    with one_worker(0.0, SyncWorker) as (d, [uri]):
        proxies = proxies_to(uri, 2)
        try:
            calls_in_parallel(
                *[functools.partial(p.timed_burn, 0.05) for p in proxies for _ in range(3)]
            )
        finally:
            for p in proxies:
                p._release()
        assert taken_after_call(d) == 0


@pytest.mark.parametrize("what", ["nested call", "connect"])
def test_a_call_that_waits_for_the_link_is_served_while_another_call_computes(
    tmp_path: Path, what: str
) -> None:
    # B waits (idle) for a gate, A then computes for 3 s, and B, released, makes a nested
    # call into the same worker (or connects an object there, which waits for the daemon's
    # confirmation). What B waits for comes over the link: the reader must read it now.
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
    with one_worker(30.0, Worker, Worker, Worker) as (d, [a_uri, b_uri, c_uri]):
        a, b = DynamicProxy(a_uri), DynamicProxy(b_uri)
        try:
            if what == "nested call":
                waiter, out = start_in_thread(lambda: b.wait_then_call(gate, c_uri, 7, 20.0)[1])
            else:
                waiter, out = start_in_thread(lambda: b.wait_then_connect(gate, 20.0))
            computing, _ = start_in_thread(lambda: a.burn_marked(started, 3.0))
            wait_until(lambda: Path(started).exists(), timeout=10, what="the burn to start")
            Path(gate).touch()
            waiter.join(30)
            computing.join(30)
        finally:
            a._release()
            b._release()
        assert isinstance(out[0], float), out
        assert out[0] < 0.5, out


def test_calls_queued_for_a_thread_go_before_later_frames(tmp_path: Path) -> None:
    # One call thread: A computes; B arrives, is read and queued for the busy thread; C
    # arrives just before A ends. B runs first, not C, which the ending thread could take.
    gate = str(tmp_path / "gate")
    with (
        config_values(PYRO_THREADPOOL_SIZE=1),
        one_worker(5.0, Worker, Worker, Worker) as (d, [a_uri, b_uri, c_uri]),
    ):
        assert d._router is not None
        pool = d._router.pool

        def forwarded(count: int) -> bool:  # calls the daemon has sent to the worker
            return int(pool.stats()[0]["outstanding"]) >= count

        a, b, c = DynamicProxy(a_uri), DynamicProxy(b_uri), DynamicProxy(c_uri)
        try:
            first, a_out = start_in_thread(lambda: a.burn_until(gate, 20.0))
            wait_until(lambda: forwarded(1), what="A sent")
            second, b_out = start_in_thread(lambda: b.timed_echo(1))
            wait_until(lambda: forwarded(2), what="B sent")
            d.getStats()  # asks the worker over the link, behind B: B has been read then
            third, c_out = start_in_thread(lambda: c.timed_echo(2))
            wait_until(lambda: forwarded(3), what="C sent")
            Path(gate).touch()
            for t in (first, second, third):
                t.join(30)
        finally:
            for p in (a, b, c):
                p._release()
        assert a_out[0][1] < b_out[0][1] < c_out[0][1], (a_out, b_out, c_out)


def test_the_reader_sees_a_wake_up_that_comes_while_it_looks() -> None:
    # A thread whose call ended takes CLOSE and wakes the reader just as the reader starts
    # looking at its conditions: the reader must not sleep through it.
    with linked_worker() as (worker, _parent):
        real_drain = _worker._drain
        fired: list[bool] = []

        def drain(fd: int) -> None:
            if not fired:
                fired.append(True)
                worker._closed.set()
                worker._wake_reader()
            real_drain(fd)

        worker._wake_reader()  # a wake-up is pending: the reader starts by draining the pipe
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_worker, "_drain", drain)
            done = start_reader(worker)
            assert done.wait(5.0), "the reader slept on with the worker closed"


def test_a_worker_exits_at_once_when_its_parent_dies_during_a_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import ServerProcess
    from test_procpool_faults import process_gone

    from pyroact.core import PyroURI

    started = str(tmp_path / "started")
    monkeypatch.setenv("PYRO_WORKER_LINGER", "30")
    with ServerProcess("procpool_server.py") as server:
        proxy = DynamicProxy(PyroURI(server.uri))
        try:
            pid = proxy.pid()
            computing, _ = start_in_thread(lambda: proxy.burn_marked(started, 6.0))
            wait_until(lambda: Path(started).exists(), timeout=10, what="the burn to start")
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            killed = time.monotonic()
            wait_until(lambda: process_gone(pid), timeout=15, what="the worker to exit")
            took = time.monotonic() - killed
            computing.join(15)
        finally:
            proxy._release()
    assert took < 1.0, took


def test_back_to_back_calls_do_not_wait_for_the_previous_calls_tail() -> None:
    # The client has its reply (and sends the next call) while the worker's thread still
    # finishes the call's task; that tail neither computes nor holds the next call back.
    with one_worker(2.0, Worker) as (d, [uri]):
        proxy = DynamicProxy(uri)
        try:
            for i in range(200):
                assert proxy.echo(i) == i
        finally:
            proxy._release()
        assert d.getStats()["workers"][0]["objects"][uri.objectID]["lingered"] == 0


def test_threads_may_look_at_the_link_at_the_same_time() -> None:
    # The reader and threads whose calls end look at the link without the read token.
    with linked_worker() as (worker, _parent):

        def look() -> int:  # how often the (empty) link looked readable
            return sum(worker._readable_now() for _ in range(20_000))

        looks = calls_in_parallel(look, look, look)
    assert looks == [0, 0, 0], looks  # (an error in a look is in the list instead)


def test_a_wake_up_written_just_after_the_reader_drained_is_drained_later() -> None:
    # _wake_reader sets _woken, then writes; the reader may clear _woken and drain between
    # the two. The byte must not leave an idle reader spinning on a readable pipe.
    with linked_worker() as (worker, _parent):
        real_drain, looks = _worker._drain, [0]
        real_wait = worker._wait_for_frames

        def drain(fd: int) -> None:
            real_drain(fd)
            if looks[0] == 1:
                os.write(worker._wake_w, b"w")  # the waker's write, just after the first drain

        def counted_wait() -> bool:
            looks[0] += 1
            return real_wait()

        worker._woken = True  # the waker's first step, just before the reader looks
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_worker, "_drain", drain)
            mp.setattr(worker, "_wait_for_frames", counted_wait)
            start_reader(worker)
            wait_until(lambda: looks[0] >= 2, what="the reader to look again")
            settled = time.monotonic() + 0.3
            wait_until(lambda: time.monotonic() >= settled, what="0.3 s of an idle worker")
            assert looks[0] < 10, f"the idle reader looked {looks[0]} times"


def test_a_call_arriving_late_in_a_computation_is_held_off_too(tmp_path: Path) -> None:
    # The link stays quiet for longer than the linger before the call arrives: it is still
    # held off (about the linger), not read at once as if it had waited that long.
    started = str(tmp_path / "started")
    with one_worker(0.3, Worker, Worker) as (d, [busy_uri, other_uri]):
        busy, other = DynamicProxy(busy_uri), DynamicProxy(other_uri)
        try:
            other.echo(0)  # (connected)
            computing, _ = start_in_thread(lambda: busy.burn_marked(started, 3.0))
            wait_until(lambda: Path(started).exists(), timeout=10, what="the burn to start")
            quiet_until = time.monotonic() + 1.0
            wait_until(lambda: time.monotonic() >= quiet_until, what="a quiet second")
            sent = time.monotonic()
            _value, ran = other.timed_echo(1)
            computing.join(30)
        finally:
            busy._release()
            other._release()
        assert ran - sent > 0.15, ran - sent


def test_calls_that_waited_their_linger_together_start_together(tmp_path: Path) -> None:
    # Two more calls of a computing ObjBase arrive together and wait the linger on the link;
    # both start then (side by side), the second not a linger later in the mailbox.
    started = str(tmp_path / "started")
    with one_worker(0.3, Worker) as (d, [uri]):
        a, b, c = proxies_to(uri, 3)
        try:
            b.echo(0), c.echo(0)  # (connected)
            first, _ = start_in_thread(lambda: a.burn_marked(started, 3.0))
            wait_until(lambda: Path(started).exists(), timeout=10, what="the burn to start")
            second, b_out = start_in_thread(lambda: b.timed_burn(0.6))
            third, c_out = start_in_thread(lambda: c.timed_burn(0.6))
            for t in (first, second, third):
                t.join(30)
        finally:
            for p in (a, b, c):
                p._release()
        starts = sorted([b_out[0][0], c_out[0][0]])
        assert starts[1] - starts[0] < 0.2, starts


def test_a_lingering_call_taken_by_an_ending_thread_still_starts_after_the_linger() -> None:
    # An ending thread that saw the reader hold off (just before it went to watch the link)
    # takes a call that lingers and one that starts: the reader must learn of the lingering
    # call's deadline.
    from pyroact import _mailbox, serializer
    from pyroact import _wirespec as spec
    from pyroact.wire import encode_frame

    def call_frame(seq: int, guid: str) -> bytes:
        payload, buffers, flags = serializer.dumps_call((seq,), {})
        segments = encode_frame(
            spec.MSG_REQUEST, seq=seq, object_id=guid, method=f"c1:{seq}:echo",
            payload=payload, buffers=buffers, flags=flags,
        )  # fmt: skip
        return b"".join(bytes(s) for s in segments)

    go = threading.Event()
    with config_values(PYRO_WORKER_LINGER=0.2), linked_worker() as (worker, parent):
        x, y = Worker(), Worker()
        worker._host(x, None, persistent=True)
        worker._host(y, None, persistent=True)
        xbox = worker.objects[x.GUID()].mailbox
        xbox._running_state = lambda now: _mailbox.BUSY  # type: ignore[method-assign]
        in_window, looked = threading.Event(), []

        def computing(now: float) -> int:
            if not looked:  # the reader's first look at the calls, holding off
                looked.append(True)
                in_window.set()
                go.wait(5)
            return _mailbox.IDLE  # then nothing computes: the reader watches the link

        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(worker, "_computing", computing)
                start_reader(worker)
                assert in_window.wait(5)
                parent.sendall(call_frame(1, x.GUID()) + call_frame(2, y.GUID()))
                wait_until(worker._readable_now, what="the two frames")
                assert worker._after_call() is not None  # Y's call, for this thread
                assert xbox.waiting
                go.set()
                wait_until(lambda: not xbox.waiting, timeout=2.0, what="X's call to start")
        finally:
            go.set()


@contextmanager
def read_connections(
    worker: _worker.WorkerDaemon, count: int
) -> Iterator[list[tuple[ReadConnection, socket.socket]]]:
    """``count`` client connections the worker reads, each with the client's end."""
    pairs = [socket.socketpair() for _ in range(count)]
    conns = [
        (ReadConnection(f"c{i}", i, ours, 1 << 20), client)
        for i, (ours, client) in enumerate(pairs)
    ]
    for conn, _client in conns:
        worker.read_conns.add(conn)
    try:
        yield conns
    finally:
        for ours, client in pairs:
            ours.close()
            client.close()


def send_call(client: socket.socket, seq: int) -> None:
    client.sendmsg(encode_frame(MSG_REQUEST, seq=seq, object_id="obj", method="burn"))


def test_the_client_that_waited_longest_is_read_first() -> None:
    # The thread whose call ended finds its own client's next call next to one that waited
    # through the whole call: that one goes first, whatever order the poll reports them in.
    with linked_worker() as (worker, _parent), read_connections(worker, 3) as conns:
        now = time.monotonic()
        for (conn, client), freed in zip(conns, (0.001, 0.030, 0.010), strict=True):
            conn.free_since = now - freed
            send_call(client, conn.slot + 1)
        wait_until(lambda: len(worker._look()) == 3, what="the three calls to arrive")
        order = []
        for _ in range(3):
            item = worker._next_frame()
            assert item is not None
            frame, conn = item
            conn.busy = True  # (its request runs)
            order.append(frame.seq)
        assert order == [2, 3, 1]


def test_a_client_waits_the_linger_from_the_end_of_its_last_request() -> None:
    # Under a steady load the link is rarely seen empty: a call that arrived just after its
    # client's last reply has not waited since then, and is not read beside a computing call.
    with linked_worker() as (worker, _parent), read_connections(worker, 2) as conns:
        (recent, recent_client), (running, running_client) = conns
        now = time.monotonic()
        worker._link_emptied = now - 10.0
        recent.free_since, running.free_since = now - 0.005, now - 20.0
        running.busy = True  # (its own next frame waits for its request, not the reader)
        send_call(recent_client, 1)
        send_call(running_client, 2)
        wait_until(lambda: len(worker._look()) == 2, what="the two calls to arrive")
        assert worker._waiting_since() == recent.free_since
        worker._link_emptied = now  # (seen empty after that)
        assert worker._waiting_since() == now
        recent.busy = True
        assert worker._waiting_since() is None
