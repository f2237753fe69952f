"""Process mode with PYRO_WORKER_READS: workers read the connections they serve themselves."""

from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import RawClient, config_values, serving, start_in_thread, wait_until
from proc_objects import Worker

from pyroact import serializer
from pyroact.core import DynamicProxy
from pyroact.errors import ConnectionClosedError, WorkerDiedError

pytestmark = pytest.mark.timeout(60)


def reads(d: Any) -> list[int]:
    """Calls each worker read from its clients itself."""
    return [int(w.get("read_calls", 0)) for w in d.getStats()["workers"]]


def test_a_workers_calls_skip_the_daemon_after_the_first() -> None:
    with config_values(PYRO_WORKER_READS=True), serving("process", workers=2) as d:
        uri = d.connect(Worker)
        proxy = DynamicProxy(uri)
        try:
            results = [proxy.echo(i) for i in range(50)]
            with pytest.raises(ValueError, match="boom"):
                proxy.fail("boom")
        finally:
            proxy._release()
        assert results == list(range(50))
        # The first call goes through the daemon and hands the connection over.
        assert sum(reads(d)) == 50
        # (Short calls: the reader never held off, so no frame waited its linger time.)
        assert [w["overdue_reads"] for w in d.getStats()["workers"]] == [0, 0]


def test_a_frame_for_another_worker_goes_back_to_the_daemon() -> None:
    with config_values(PYRO_WORKER_READS=True), serving("process", workers=2) as d:
        a, b = d.connect(Worker), d.connect(Worker)
        raw = RawClient(d.port)
        try:
            for guid, value in ((a.objectID, 1), (a.objectID, 2), (b.objectID, 3), (a.objectID, 4)):
                seq, segments = raw.request_segments(guid, "echo", (value,))
                raw.channel.send(segments)
                reply = raw.sm.check(raw.channel.recv_frame())
                assert reply.seq == seq
                assert serializer.loads(reply.payload, reply.buffers) == value
        finally:
            raw.channel.close()
        assert sum(reads(d)) >= 1


def test_oneway_calls_keep_their_order() -> None:
    with (
        config_values(PYRO_WORKER_READS=True, PYRO_ONEWAY_THREADED=False),
        serving("process", workers=1) as d,
    ):
        uri = d.connect(Worker)
        proxy = DynamicProxy(uri)
        try:
            proxy._setOneway(["record"])
            for i in range(30):
                proxy.record(i)
            assert wait_until(lambda: len(proxy.get_log()) == 30, what="30 oneway calls")
            assert proxy.get_log() == list(range(30))
        finally:
            proxy._release()


def test_a_malformed_frame_closes_only_its_connection() -> None:
    with config_values(PYRO_WORKER_READS=True), serving("process", workers=1) as d:
        uri = d.connect(Worker)
        good, bad = DynamicProxy(uri), RawClient(d.port)
        try:
            assert good.echo(1) == 1
            _seq, segments = bad.request_segments(uri.objectID, "echo", (1,))
            bad.channel.send(segments)
            bad.sm.check(bad.channel.recv_frame())  # handed over to the worker now
            bad.channel.sock.sendall(b"XXXX" + bytes(60))
            with pytest.raises(ConnectionClosedError):  # the daemon closed it
                bad.channel.recv_frame()
            assert [good.echo(i) for i in range(5)] == list(range(5))
        finally:
            good._release()
            bad.channel.close()


def test_a_worker_killed_during_a_call_it_read_fails_that_call_by_name(tmp_path: Path) -> None:
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    with config_values(PYRO_WORKER_READS=True), serving("process", workers=2) as d:
        uri = d.connect(Worker)
        proxy = DynamicProxy(uri)
        try:
            pid = proxy.pid()  # hands the connection over
            assert sum(reads(d)) == 0

            def call() -> Any:
                try:
                    return proxy.hang(started, release)
                except Exception as exc:
                    return exc

            thread, out = start_in_thread(call)
            wait_until(lambda: Path(started).exists(), what="the call to start")
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            thread.join(10)
            assert time.monotonic() - killed < 1.0
            (error,) = out
            assert isinstance(error, WorkerDiedError), error
            assert "Worker.hang" in str(error)
            assert "signal 9" in str(error) or "SIGKILL" in str(error)
        finally:
            proxy._release()


def test_replicated_calls_spread_over_the_workers_again() -> None:
    with config_values(PYRO_WORKER_READS=True), serving("process", workers=2) as d:
        uri = d.connect(Worker, placement="replicated")
        proxies = [DynamicProxy(uri) for _ in range(2)]
        try:
            for p in proxies:
                p.echo(0)  # both connections go to the same idle worker
            pids: set[int] = set()
            for _ in range(3):
                threads = [start_in_thread(functools.partial(p.burn, 0.3)) for p in proxies]
                for thread, out in threads:
                    thread.join(20)
                    pids.update(out)
                if len(pids) == 2:
                    break
            assert len(pids) == 2, pids
        finally:
            for p in proxies:
                p._release()
