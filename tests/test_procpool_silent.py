"""Process mode: a worker answers on the client's socket and marks the call on its board.

Without ``PYRO_WORKER_NOTICES`` no message per call goes back to the daemon: the daemon sees
the mark when the client's next frame arrives (or within a quarter of a second), and asks the
worker for a notice only when a frame arrives while the call still runs.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from typing import Any

import pytest
from helpers import LoopThread, RawClient, config_values, serving, wait_until
from proc_objects import SyncRecorder, Worker

from pyroact import serializer
from pyroact._board import SLOTS, boards_supported
from pyroact.core import Daemon, DynamicProxy

pytestmark = [
    pytest.mark.procpool,
    pytest.mark.skipif(not boards_supported(), reason="no shared memory boards here"),
]


def outstanding(d: Daemon) -> list[int]:
    return [int(w["outstanding"]) for w in d.getStats()["workers"]]


def marked(d: Daemon) -> int:
    assert d._router is not None
    return sum(h.board.marked for h in d._router.pool.workers if h.board is not None)


@pytest.mark.parametrize(
    ("notices", "reads"),
    [(False, False), (True, False), (False, True)],
    ids=["board", "notices", "reads"],
)
def test_answered_calls_leave_nothing_outstanding(notices: bool, reads: bool) -> None:
    with (
        config_values(PYRO_WORKER_NOTICES=notices, PYRO_WORKER_READS=reads),
        serving("process", workers=2) as d,
    ):
        uri = d.connect(Worker, "w", placement="replicated")
        proxies = [DynamicProxy(uri) for _ in range(3)]
        try:

            def loop(proxy: Any, base: int) -> None:
                for i in range(20):
                    assert proxy.echo(base + i) == base + i

            threads = [threading.Thread(target=loop, args=(p, 100 * n))
                       for n, p in enumerate(proxies)]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            # The last call of each client is settled by the daemon's periodic check.
            wait_until(lambda: outstanding(d) == [0, 0], what="no outstanding calls")
            if reads:  # the calls the workers read themselves are not marked
                read = sum(int(w["read_calls"]) for w in d.getStats()["workers"])
                assert read > 0 and marked(d) + read == 60
            else:
                assert (marked(d) == 60) is not notices
        finally:
            for p in proxies:
                p._release()


def test_a_client_that_does_not_wait_for_its_reply_gets_both_answers_in_order() -> None:
    # The second request arrives while the first still runs: the daemon asks the worker for
    # a notice of the first answer before it lets the second go on.
    with serving("process", workers=2) as d:
        guid = d.connect(Worker, "w", placement="replicated").objectID
        raw = RawClient(d.port)
        try:
            first, slow = raw.request_segments(guid, "sleep", (0.3,))
            second, fast = raw.request_segments(guid, "echo", ("second",))
            raw.channel.send([*slow, *fast])
            replies = [raw.sm.check(raw.channel.recv_frame()) for _ in range(2)]
            assert [f.seq for f in replies] == [first, second]
            assert serializer.loads(replies[1].payload, replies[1].buffers) == "second"
            wait_until(lambda: outstanding(d) == [0, 0], what="no outstanding calls")
        finally:
            raw.channel.close()


def test_a_call_longer_than_the_idle_timeout_keeps_its_connection() -> None:
    with serving("process", workers=1) as d:
        d.setTimeout(0.3)
        proxy = DynamicProxy(d.connect(Worker, "w"))
        try:
            assert proxy.sleep(0.8) > 0  # would have been closed for idleness meanwhile
            channel = proxy.adapter.channel
            assert proxy.echo(1) == 1 and proxy.adapter.channel is channel  # same connection
            # Once the call is answered, an idle connection is closed as in the other modes.
            wait_until(lambda: not d.connections, what="idle connection closed by the server")
        finally:
            proxy._release()


def test_a_worker_killed_after_answering_sends_no_late_error() -> None:
    with serving("process", workers=1) as d:
        proxy = DynamicProxy(d.connect(Worker, "w", placement="replicated"))
        try:
            pid = proxy.pid()  # answered; the daemon has not settled it (the client is quiet)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: d.getStats()["workers"][0]["restarts"] == 1, timeout=10,
                       what="worker restarted")  # fmt: skip
            # The marked call counts as answered: no error for it reaches the client.
            channel = proxy.adapter.channel
            assert not select.select([channel.fileno()], [], [], 0.3)[0]
            assert proxy.pid() != pid
        finally:
            proxy._release()


def test_a_late_long_call_never_hides_the_mark_of_a_later_one(tmp_path: Any) -> None:
    # A silent call that runs while 65536 later ones are answered must not share its board
    # slot with one of them (its mark would overwrite theirs, and that client would hang).
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    with serving("process", workers=1) as d:
        uri = d.connect(Worker, "w")
        long_runner, other = DynamicProxy(uri), DynamicProxy(uri)
        try:
            assert other.echo(0) == 0
            result: list[Any] = []
            thread = threading.Thread(
                target=lambda: result.append(long_runner.hang(started, release))
            )
            thread.start()
            wait_until(lambda: os.path.exists(started), what="the long call running")
            assert d._router is not None
            handle = d._router.pool.workers[0]
            with handle.lock:
                long_id = max(i for i, c in handle.pending.items() if c.silent)
                handle.next_id = long_id + SLOTS  # as if 65536 calls had gone meanwhile
            assert other.echo("later") == "later"
            open(release, "w").close()
            thread.join(10)
            assert result == [True]
            other._setTimeout(5.0)
            assert other.echo("next") == "next"
            wait_until(lambda: outstanding(d) == [0], what="no outstanding calls")
        finally:
            long_runner._release()
            other._release()


def test_a_reply_still_being_written_holds_back_the_clients_next_frame() -> None:
    big = bytes(8 << 20)  # more than the sockets buffer: the worker waits for the client
    with serving("process", workers=2) as d:
        guid = d.connect(Worker, "w", placement="replicated").objectID
        raw = RawClient(d.port, timeout=20)
        try:
            first, segments = raw.request_segments(guid, "echo", (big,))
            raw.channel.send(segments)
            wait_until(
                lambda: sum(w.get("direct_replies", 0) for w in d.getStats()["workers"]) == 1,
                timeout=10,
                what="the worker writing the large reply",
            )
            second, segments = raw.request_segments(guid, "echo", ("second",))
            raw.channel.send(segments)
            replies = [raw.sm.check(raw.channel.recv_frame()) for _ in range(2)]
            assert [f.seq for f in replies] == [first, second]
            assert serializer.loads(replies[0].payload, replies[0].buffers) == big
            assert serializer.loads(replies[1].payload, replies[1].buffers) == "second"
        finally:
            raw.channel.close()


def test_a_call_never_overtakes_calls_held_for_their_turn() -> None:
    # Tracked oneway calls to a SynchronizedObjBase wait in the parent for their turn; a
    # later request of another client goes behind them, not past them into the mailbox.
    # (Turns are the parent's: with workers reading connections nothing waits there.)
    with (
        config_values(PYRO_ONEWAY_THREADED=False, PYRO_WORKER_READS=False),
        serving("process", workers=1) as d,
    ):
        uri = d.connect(SyncRecorder, "s")
        guid = uri.objectID
        first, second = RawClient(d.port), RawClient(d.port)
        caller = DynamicProxy(uri)
        try:
            assert caller.get_log() == []
            first.channel.send(first.request_segments(guid, "record", ("B0", 0.5), oneway=True)[1])
            wait_until(lambda: worker_depth(d, guid) == 1, what="B0 running")
            second.channel.send(second.request_segments(guid, "record", ("B1",), oneway=True)[1])
            assert d._router is not None
            wait_until(lambda: d._router.held_calls(guid, 0) == 1, what="B1 held")  # type: ignore[union-attr]
            caller.record("A")
            assert caller.get_log() == ["B0", "B1", "A"]
        finally:
            caller._release()
            first.channel.close()
            second.channel.close()


def worker_depth(d: Daemon, guid: str) -> int:
    return int(d.getStats()["workers"][0]["objects"][guid]["queue_depth"])


def test_a_frame_that_arrives_while_closedown_drains_waits_for_the_running_call() -> None:
    d = Daemon(mode="process", workers=1)
    loop = LoopThread(d)
    loop.start()
    closer = None
    try:
        guid = d.connect(Worker, "w").objectID
        raw = RawClient(d.port)
        first, segments = raw.request_segments(guid, "sleep", (0.6,))
        raw.channel.send(segments)
        wait_until(lambda: outstanding(d) == [1], what="the call running")
        closer = threading.Thread(target=lambda: (loop.stop(), d.closedown()))
        closer.start()
        wait_until(lambda: d._draining is not None, what="closedown draining")
        raw.channel.send(raw.request_segments(guid, "echo", ("late",))[1])
        reply = raw.sm.check(raw.channel.recv_frame())
        assert reply.seq == first and serializer.loads(reply.payload, reply.buffers) > 0
        raw.channel.close()
    finally:
        if closer is None:
            loop.stop()
            d.closedown()
        else:
            closer.join(15)
