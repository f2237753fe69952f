"""Process mode: a worker's link reader holds off while a call computes.

A frame that arrives while a call of the worker is busy on the CPU stays on the link; the
thread whose call ends takes it and runs the call it starts. The reader still reads it after
``PYRO_WORKER_LINGER`` at the latest, and at once when the computing call starts waiting
for something that comes over the link (a nested remote call, a confirmation).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import config_values, serving, wait_until
from proc_objects import SyncWorker, Worker

from pyroact.core import Daemon, DynamicProxy

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
