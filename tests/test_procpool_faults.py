"""Process mode: workers that die, restarts and their limit, and no orphan processes (issue 4)."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ServerProcess, config_values, serving, wait_until
from proc_objects import Worker, init_tls

from pyroact import constants, svr_procpool
from pyroact.core import Daemon, DynamicProxy, PyroURI
from pyroact.errors import DaemonError, WorkerDiedError

pytestmark = pytest.mark.procpool


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def worker_stats(d: Daemon, index: int) -> dict[str, Any]:
    stats: dict[str, Any] = d.getStats()["workers"][index]
    return stats


def restarted(d: Daemon, index: int, count: int) -> bool:
    w = worker_stats(d, index)
    return bool(w["restarts"] == count and w["alive"])


class Caller(threading.Thread):
    """Makes one call in a thread and records the outcome and when it came."""

    def __init__(self, fn: Any) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done_at = 0.0

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc
        self.done_at = time.monotonic()


def test_worker_killed_mid_call(tmp_path: Path) -> None:
    with serving("process", workers=2) as d:
        d.setInitTLS(init_tls)
        victim_uri = d.connect(Worker, "victim")
        other_uri = d.connect(Worker, "bystander")
        replicated_uri = d.connect(Worker, "replicated", placement="replicated")
        victim, other = victim_uri.getProxy(), other_uri.getProxy()
        replicated = replicated_uri.getProxy()
        victim_pid, other_pid = victim.pid(), other.pid()
        assert victim_pid != other_pid
        assert victim.bump() == 1
        child = victim.make_child()  # made inside the victim's worker
        assert child.pid() == victim_pid
        index = d.getStats()["routes"][victim_uri.objectID]["workers"][0]
        assert worker_stats(d, index)["pid"] == victim_pid

        started, release = tmp_path / "started", tmp_path / "release"
        hanging = Caller(lambda: victim.hang(str(started), str(release)))
        bystander_proxy = DynamicProxy(other_uri)
        bystander = Caller(lambda: bystander_proxy.sleep(0.5))
        hanging.start()
        wait_until(started.exists, what="the doomed call runs in the worker")
        bystander.start()
        wait_until(lambda: worker_stats(d, 1 - index)["outstanding"] == 1, what="bystander runs")
        killed_at = time.monotonic()
        os.kill(victim_pid, signal.SIGKILL)
        hanging.join(5)
        assert not hanging.is_alive()
        assert isinstance(hanging.error, WorkerDiedError), hanging.error
        assert hanging.done_at - killed_at < 1.0
        message = str(hanging.error)
        assert "Worker.hang" in message and victim_uri.objectID in message
        assert "exit status -9" in message or "SIGKILL" in message, message
        # The call on the other worker was untouched.
        bystander.join(5)
        assert bystander.error is None and bystander.result == other_pid
        assert other.echo("other") == "other"

        # The pool serves again: the worker was restarted once.
        wait_until(lambda: restarted(d, index, 1), what="worker restarted")
        assert worker_stats(d, 1 - index)["restarts"] == 0
        new_pid = worker_stats(d, index)["pid"]
        assert new_pid != victim_pid and process_gone(victim_pid)
        # The pinned object says it lost its state, once; then it works from scratch.
        with pytest.raises(WorkerDiedError, match="lost its state"):
            victim.bump()
        assert victim.bump() == 1
        assert victim.pid() == new_pid
        # The restarted worker got the configuration, the TLS initialiser and the caller.
        count, _marker, init_pid = victim.tls_info()
        assert (count, init_pid) == (1, new_pid)
        assert victim.caller_addr() == tuple(victim.adapter.channel.sock.getsockname())
        # The replicated object was re-created silently on the new worker.
        pids = {replicated.pid() for _ in range(4)}
        assert new_pid in pids
        # What the dead worker made itself is gone.
        with pytest.raises(Exception, match="unknown object"):
            child.echo(1)
        for p in (victim, other, replicated, child, bystander_proxy):
            p._release()


def test_queued_calls_fail_at_once_and_calls_are_not_retried(tmp_path: Path) -> None:
    with serving("process", workers=1) as d:
        from proc_objects import SyncRecorder

        uri = d.connect(SyncRecorder)
        proxies = [DynamicProxy(uri) for _ in range(3)]
        release = tmp_path / "release"
        callers = [Caller(functools.partial(p.block, str(release))) for p in proxies]
        for c in callers:
            c.start()
        guid = uri.objectID
        wait_until(
            lambda: worker_stats(d, 0)["objects"][guid]["queue_depth"] == 3,
            what="one call running, two queued",
        )
        pid = worker_stats(d, 0)["pid"]
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for c in callers:
            c.join(5)
            assert isinstance(c.error, WorkerDiedError), c.error
            assert c.done_at - killed_at < 1.0
            assert "SyncRecorder.block" in str(c.error)
        wait_until(lambda: restarted(d, 0, 1), what="worker restarted")
        with pytest.raises(WorkerDiedError, match="lost its state"):
            proxies[0].get_log()
        release.touch()
        assert proxies[0].get_log() == []
        # Nothing was retried: the new instance has run no block() call.
        assert worker_stats(d, 0)["objects"][guid]["calls"] == 1
        for p in proxies:
            p._release()


def test_repeated_crashes_stop_the_restarts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(svr_procpool, "MAX_RESTARTS", 1)
    caplog.set_level(logging.ERROR, logger="pyroact.system")
    with serving("process", workers=2) as d:
        pinned_uri = d.connect(Worker, "pinned")
        replicated = d.connect(Worker, "rep", placement="replicated").getProxy()
        pinned = pinned_uri.getProxy()
        index = d.getStats()["routes"][pinned_uri.objectID]["workers"][0]
        os.kill(worker_stats(d, index)["pid"], signal.SIGKILL)
        wait_until(lambda: restarted(d, index, 1), what="first restart")
        second_pid = worker_stats(d, index)["pid"]
        os.kill(second_pid, signal.SIGKILL)
        wait_until(lambda: not worker_stats(d, index)["alive"], what="worker stays dead")
        wait_until(
            lambda: any("not restarting" in r.getMessage() for r in caplog.records),
            what="the log says restarts stopped",
        )
        assert worker_stats(d, index)["restarts"] == 1
        assert process_gone(second_pid)
        with pytest.raises(WorkerDiedError, match="not running"):
            pinned.pid()
        # The other worker still serves, and the replicated object lives on there.
        other_pid = worker_stats(d, 1 - index)["pid"]
        assert {replicated.pid() for _ in range(3)} == {other_pid}
        # New objects go to the live worker only.
        for _ in range(2):
            p = d.connect(Worker).getProxy()
            assert p.pid() == other_pid
            p._release()
        pinned._release()
        replicated._release()


def test_no_live_worker_means_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svr_procpool, "MAX_RESTARTS", 0)
    with serving("process", workers=1) as d:
        replicated = d.connect(Worker, placement="replicated").getProxy()
        assert replicated.echo(1) == 1
        os.kill(worker_stats(d, 0)["pid"], signal.SIGKILL)
        wait_until(lambda: not worker_stats(d, 0)["alive"], what="worker dead")
        with pytest.raises(DaemonError, match="no worker process is running"):
            replicated.echo(2)
        with pytest.raises(DaemonError, match="no worker process is running"):
            d.connect(Worker)
        replicated._release()


def test_no_orphan_workers_after_the_parent_is_killed() -> None:
    with ServerProcess("procpool_server.py") as server:
        uri = PyroURI(server.uri)
        daemon_proxy = PyroURI(uri.address, constants.INTERNAL_DAEMON_GUID, uri.port).getProxy()
        stats = daemon_proxy.getStats()
        daemon_proxy._release()
        pids = [w["pid"] for w in stats["workers"]]
        assert len(pids) == 2 and all(not process_gone(p) for p in pids)
        for i, pid in enumerate(pids):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode()
            assert f"pyroact worker {i + 1}/2" in title, title
        proxy = DynamicProxy(uri)
        assert proxy.pid() in pids
        proxy._release()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        wait_until(lambda: all(process_gone(p) for p in pids), timeout=5, what="workers exit")


def test_default_worker_count_and_closedown_leaves_no_worker_behind() -> None:
    cores = os.cpu_count() or 1
    if cores > 8:
        pytest.skip("one worker per core is too many processes for this test")
    with config_values(PYRO_WORKERS=0):
        d = Daemon(mode="process")
    try:
        pids = [w["pid"] for w in d.getStats()["workers"]]
        assert len(pids) == cores  # PYRO_WORKERS=0: one worker per core
    finally:
        d.shutdown()
        d.closedown()
    wait_until(lambda: all(process_gone(p) for p in pids), timeout=5, what="workers stopped")


def test_a_shutdown_during_a_restart_stops_the_new_worker_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    restarting = threading.Event()
    started: list[svr_procpool.WorkerHandle] = []
    wait_ready = svr_procpool.WorkerPool._wait_ready

    def noting_restarts(pool: svr_procpool.WorkerPool, handle: svr_procpool.WorkerHandle) -> None:
        if handle is not pool.workers[handle.index]:  # a restart, not the pool's start
            started.append(handle)
            restarting.set()
        wait_ready(pool, handle)
        if handle in started:  # the shutdown comes before the restart ends
            wait_until(lambda: pool._closing, what="the shutdown to start")

    monkeypatch.setattr(svr_procpool.WorkerPool, "_wait_ready", noting_restarts)
    with config_values(PYRO_WORKERS=1):
        d = Daemon(mode="process")
    try:
        os.kill(worker_stats(d, 0)["pid"], signal.SIGKILL)
        assert restarting.wait(10), "the killed worker was not restarted"
    finally:
        d.shutdown()
        d.closedown()
    (handle,) = started
    # Stopped and reaped before closedown returned, its link and descriptor channel closed.
    assert handle.process.returncode is not None
    assert handle.channel.closed and handle.fd_channel.fileno() == -1
