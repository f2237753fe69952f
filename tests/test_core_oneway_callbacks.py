"""Oneway calls, callbacks and call chains (issue 3)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import RawClient, config_values, serving, wait_until
from remote_objects import Bouncer, Callback, CallbackServer, Echo

import pyroact
from pyroact import _wirespec as spec
from pyroact import serializer, util
from pyroact.core import Daemon
from pyroact.errors import TimeoutError


def test_oneway_sends_no_reply_frame(daemon: Daemon) -> None:
    obj = Echo()
    guid = daemon.connect(obj).objectID
    raw = RawClient(daemon.port)
    try:
        _s, oneway = raw.request_segments(guid, "echo", ("oneway",), oneway=True)
        raw.channel.send(oneway)
        wait_until(lambda: obj.log == ["echo 'oneway'"], what="the oneway call ran")
        seq, request = raw.request_segments(guid, "echo", ("sync",))
        raw.channel.send(request)
        frame = raw.sm.check(raw.channel.recv_frame())
        assert frame.seq == seq and frame.msg_type == spec.MSG_REPLY
        assert serializer.loads(frame.payload, frame.buffers) == "sync"
        raw.channel.timeout = 0.2
        with pytest.raises(TimeoutError):
            raw.channel.recv_frame()  # nothing else ever arrives
    finally:
        raw.close()


def test_oneway_returns_at_once_while_the_method_blocks(daemon: Daemon) -> None:
    obj = Echo()
    proxy = daemon.connect(obj).getProxy()
    proxy._setOneway("wait_gate")
    start = time.monotonic()
    assert proxy.wait_gate(10) is None
    assert time.monotonic() - start < 1.0
    wait_until(obj.started.is_set, what="oneway started")
    assert not obj.finished.is_set()
    obj.gate.set()
    wait_until(obj.finished.is_set, what="oneway finished")
    assert proxy.echo(1) == 1
    proxy._release()


def test_oneway_threaded_lets_a_later_call_overtake() -> None:
    with config_values(PYRO_ONEWAY_THREADED=True), serving("threaded") as d:
        obj = Echo()
        proxy = d.connect(obj).getProxy()
        proxy._setOneway("wait_gate")
        proxy.wait_gate(10)
        wait_until(obj.started.is_set)
        assert proxy.echo("overtakes") == "overtakes"
        assert not obj.finished.is_set()
        obj.gate.set()
        wait_until(obj.finished.is_set)
        assert obj.log == ["wait_gate start", "echo 'overtakes'", "wait_gate end"]
        proxy._release()


@pytest.mark.parametrize("mode", ["single", "threaded"])
def test_oneway_unthreaded_keeps_the_order(mode: str) -> None:
    with config_values(PYRO_ONEWAY_THREADED=False), serving(mode) as d:
        obj = Echo()
        proxy = d.connect(obj).getProxy()
        proxy._setOneway("wait_gate")
        proxy.wait_gate(10)
        wait_until(obj.started.is_set)
        done = threading.Event()
        result: list[Any] = []

        def later() -> None:
            result.append(proxy.echo("after"))
            done.set()

        t = threading.Thread(target=later)
        t.start()
        assert not done.wait(0.3), "the later call ran while the oneway call was running"
        obj.gate.set()
        assert done.wait(5)
        t.join(5)
        assert result == ["after"]
        assert obj.log == ["wait_gate start", "wait_gate end", "echo 'after'"]
        proxy._release()


@pytest.fixture
def no_log_files() -> Iterator[None]:
    """Detach pyroact's log files (they default to the current directory) during a test."""
    cfg = pyroact.config
    levels = (cfg.PYRO_TRACELEVEL, cfg.PYRO_USER_TRACELEVEL)
    util.configure_logging(levels[0], None, levels[1], None)
    yield
    util.configure_logging(
        levels[0],
        cfg.PYRO_LOGFILE,
        levels[1],
        cfg.PYRO_USER_LOGFILE,
        storage=cfg.PYRO_STORAGE,
    )


def test_oneway_exception_is_logged_not_raised(
    daemon: Daemon, caplog: pytest.LogCaptureFixture, no_log_files: None
) -> None:
    caplog.set_level(logging.WARNING, logger="pyroact.user")
    proxy = daemon.connect(Echo()).getProxy()
    proxy._setOneway("fail")
    assert proxy.fail("oneway-boom") is None
    wait_until(lambda: "oneway-boom" in caplog.text, what="the oneway error in the log")
    assert any(r.name == "pyroact.user" and "fail" in r.getMessage() for r in caplog.records)
    assert proxy.echo(1) == 1
    proxy._release()


def test_oneway_calls_see_the_caller(daemon: Daemon) -> None:
    obj = Echo()
    proxy = daemon.connect(obj).getProxy()
    proxy._setOneway("record_caller")
    proxy.record_caller()
    wait_until(lambda: obj.callers, what="the oneway call ran")
    caller = obj.callers[0]
    assert caller is not None
    assert tuple(caller.addr) == proxy.adapter.channel.sock.getsockname()
    proxy._release()


def test_a_client_that_is_also_a_server(server_mode: str) -> None:
    with serving(server_mode) as server, serving("threaded") as client_daemon:
        service = server.connect(CallbackServer()).getProxy()
        cb = Callback()
        client_daemon.connect(cb)
        service.register(cb.getProxy())
        assert service.fire("event-1") == ["got event-1"]
        assert cb.received == ["event-1"]
        service._release()


def test_a_dead_callback_client_gives_the_server_an_error_it_can_catch(server_mode: str) -> None:
    with serving(server_mode) as server:
        service = server.connect(CallbackServer()).getProxy()
        with serving("threaded") as client_daemon:
            cb = Callback()
            client_daemon.connect(cb)
            service.register(cb.getProxy())
            assert service.fire(1) == ["got 1"]
        # The callback daemon is gone now.
        results = service.fire(2)
        assert len(results) == 1
        assert results[0].startswith(("dead: ConnectionClosedError", "dead: ProtocolError")), (
            results
        )
        assert service.fire(3)[0].startswith("dead: ProtocolError: connection failed")
        service._release()


def test_conversation_fifty_calls_deep_in_threaded_mode() -> None:
    with serving("threaded") as a, serving("threaded") as b:
        bouncer_a, bouncer_b = Bouncer(), Bouncer()
        a.connect(bouncer_a)
        b.connect(bouncer_b)
        proxy_b = bouncer_b.getProxy()
        assert proxy_b.bounce(50, bouncer_a.getProxy()) == 50
        assert bouncer_b.max_depth == 50 and bouncer_a.max_depth == 49
        proxy_b._release()


@pytest.mark.parametrize("pool_size", [64, 2])
def test_nested_calls_deeper_than_the_pool_do_not_deadlock(pool_size: int) -> None:
    # Both objects on one daemon: every level of the conversation holds one of its threads.
    with config_values(PYRO_THREADPOOL_SIZE=pool_size), serving("threaded") as d:
        x, y = Bouncer(), Bouncer()
        d.connect(x)
        d.connect(y)
        result: list[int] = []
        proxy = y.getProxy()
        t = threading.Thread(target=lambda: result.append(proxy.bounce(50, x.getProxy())))
        t.start()
        t.join(15)
        alive = t.is_alive()
        if alive:
            d.closedown()  # unblocks the stuck chain so the thread can end
            t.join(5)
        assert not alive, f"50-deep conversation deadlocked with PYRO_THREADPOOL_SIZE={pool_size}"
        assert result == [50]
        proxy._release()
