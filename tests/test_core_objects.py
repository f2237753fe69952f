"""ObjBase, SynchronizedObjBase and CallbackObjBase (issue 3)."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from helpers import LoopThread, serving, wait_until
from remote_objects import Callback, Echo, Plain, ProbeObj, SyncProbeObj

from pyroact.core import Daemon, DynamicProxy, DynamicProxyWithAttrs, ObjBase
from pyroact.errors import DaemonError


def test_guid_is_32_hex_and_unique() -> None:
    guids = {ObjBase().GUID() for _ in range(50)}
    assert len(guids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{32}", g) for g in guids)


def test_setguid_gives_a_fixed_uri(daemon: Daemon) -> None:
    obj = Echo()
    obj.setGUID("fixed-object-id-1")
    uri = daemon.connect(obj)
    assert uri.objectID == "fixed-object-id-1"
    assert str(uri) == f"PYRO://127.0.0.1:{daemon.port}/fixed-object-id-1"
    assert DynamicProxy(uri).echo(5) == 5


def test_delegate_receives_calls_and_attributes(daemon: Daemon) -> None:
    impl = Plain()
    obj = ObjBase()
    obj.delegateTo(impl)
    uri = daemon.connect(obj)
    assert DynamicProxy(uri).shout("hi") == "HI!"
    attrs = DynamicProxyWithAttrs(uri)
    assert attrs.colour == "blue"
    attrs.colour = "red"
    assert impl.colour == "red"
    assert not hasattr(obj, "colour")


def test_getdaemon_and_proxies(daemon: Daemon) -> None:
    obj = Echo()
    assert obj.getDaemon() is None
    with pytest.raises(DaemonError):
        obj.getProxy()
    with pytest.raises(DaemonError):
        obj.getLocalStorage()
    uri = daemon.connect(obj)
    assert obj.getDaemon() is daemon
    proxy = obj.getProxy()
    attr_proxy = obj.getAttrProxy()
    assert type(proxy) is DynamicProxy
    assert type(attr_proxy) is DynamicProxyWithAttrs
    assert proxy.URI == uri == attr_proxy.URI
    assert proxy.echo("x") == "x"
    assert attr_proxy.value == 0
    daemon.disconnect(obj)
    assert obj.getDaemon() is None


def test_getlocalstorage_inside_a_call(daemon: Daemon) -> None:
    obj = Echo()
    proxy = daemon.connect(obj).getProxy()
    addr = proxy.record_caller()
    assert tuple(addr) == proxy.adapter.channel.sock.getsockname()
    assert obj.callers[0].addr == tuple(addr)


def test_object_created_on_the_server_is_returned_as_a_proxy(daemon: Daemon) -> None:
    factory = Echo()
    proxy = daemon.connect(factory).getProxy()
    child = proxy.make_child()
    assert isinstance(child, DynamicProxy)
    assert child.objectID != factory.GUID()
    assert child.objectID in daemon.getRegistered()
    assert child.echo(3) == 3


def _run_concurrently(proxies: list[Any], hold: float) -> list[Any]:
    results: list[Any] = [None] * len(proxies)

    def run(i: int) -> None:
        results[i] = proxies[i].enter(hold)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(proxies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    return results


def test_synchronized_objbase_runs_one_call_at_a_time() -> None:
    with serving("threaded") as d:
        obj = SyncProbeObj(parties=4)
        uri = d.connect(obj)
        _run_concurrently([DynamicProxy(uri) for _ in range(4)], hold=0.15)
        assert obj.probe.max_active == 1


def test_objbase_calls_overlap_on_a_threaded_daemon() -> None:
    with serving("threaded") as d:
        obj = ProbeObj(parties=4)
        uri = d.connect(obj)
        _run_concurrently([DynamicProxy(uri) for _ in range(4)], hold=10)
        assert obj.probe.all_in.is_set()
        assert obj.probe.max_active == 4


def test_callback_objbase_single_mode_raises_from_handlerequests() -> None:
    d = Daemon(mode="single")
    try:
        cb = Callback()
        proxy = d.connect(cb).getProxy()
        outcome: list[BaseException] = []

        def client() -> None:
            try:
                proxy.explode("callback-boom")
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=client)
        t.start()
        raised: list[BaseException] = []
        for _ in range(100):
            try:
                d.handleRequests(0.1)
            except ValueError as exc:
                raised.append(exc)
            if raised and outcome:
                break
        t.join(5)
        assert len(outcome) == 1 and isinstance(outcome[0], ValueError)
        assert str(outcome[0]) == "callback-boom"
        assert len(raised) == 1 and str(raised[0]) == "callback-boom"
        # The connection survived: the same socket serves the next call.
        channel = proxy.adapter.channel
        loop = LoopThread(d)
        loop.start()
        try:
            assert proxy.notify(1) == "got 1"
            assert proxy.adapter.channel is channel
        finally:
            loop.stop()
        assert not loop.errors
    finally:
        d.closedown()


class RecordingDaemon(Daemon):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.reported: list[BaseException] = []
        super().__init__(*args, **kwargs)

    def callbackError(self, exc: BaseException) -> None:
        self.reported.append(exc)


def test_callback_objbase_threaded_mode_reports_to_callbackerror() -> None:
    with serving("threaded", daemon_class=RecordingDaemon) as d:
        assert isinstance(d, RecordingDaemon)
        proxy = d.connect(Callback()).getProxy()
        with pytest.raises(ValueError, match="callback-boom"):
            proxy.explode("callback-boom")
        wait_until(lambda: d.reported, what="callbackError")
        assert [str(e) for e in d.reported] == ["callback-boom"]
        channel = proxy.adapter.channel
        assert proxy.notify(2) == "got 2"
        assert proxy.adapter.channel is channel


def test_plain_objbase_exception_is_not_reraised_by_the_loop() -> None:
    d = Daemon(mode="single")
    try:
        proxy = d.connect(Echo()).getProxy()
        outcome: list[BaseException] = []
        t = threading.Thread(target=lambda: _catch(outcome, proxy.fail, "plain"))
        t.start()
        for _ in range(100):
            d.handleRequests(0.1)  # must not raise
            if outcome:
                break
        t.join(5)
        assert isinstance(outcome[0], ValueError)
    finally:
        d.closedown()


def _catch(into: list[BaseException], func: Any, *args: Any) -> None:
    try:
        func(*args)
    except BaseException as exc:
        into.append(exc)
