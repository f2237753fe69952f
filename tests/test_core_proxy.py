"""DynamicProxy behaviour: lazy connect, sharing, pickling, copying, identity, dunders (issue 3)."""

from __future__ import annotations

import copy
import pickle
import socket
import threading

import pytest
from helpers import serving, wait_until
from remote_objects import Container, Counter, Echo

from pyroact.core import Daemon, DynamicProxy, DynamicProxyWithAttrs, PyroURI, getProxyForURI


def test_lazy_connect(daemon: Daemon) -> None:
    uri = daemon.connect(Echo())
    proxy = getProxyForURI(str(uri))
    assert proxy.adapter.channel is None
    assert not daemon.connections
    assert proxy.echo(1) == 1
    assert proxy.adapter.connected
    wait_until(lambda: len(daemon.connections) == 1)
    proxy._release()


def test_release_closes_and_the_next_call_reconnects(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    assert proxy.echo(1) == 1
    first = proxy.adapter.channel
    proxy._release()
    assert proxy.adapter.channel is None
    wait_until(lambda: not daemon.connections, what="server noticed the release")
    assert proxy.echo(2) == 2
    assert proxy.adapter.channel is not first
    proxy._release()


def test_rebinduri_on_a_live_daemon(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    assert proxy.echo(1) == 1
    proxy.adapter.rebindURI(tries=1, wait=0)
    assert proxy.echo(2) == 2
    proxy._release()


def test_proxy_shared_by_threads(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(40):
            result = proxy.add(n * 1000, i)
            if result != n * 1000 + i:
                errors.append(f"thread {n} call {i}: got {result}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(daemon.connections) == 1
    proxy._release()


def test_pickled_proxy_is_unconnected_and_works(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    proxy._setOneway("wait_gate")
    proxy._setTimeout(7)
    assert proxy.echo(1) == 1
    clone = pickle.loads(pickle.dumps(proxy))
    assert type(clone) is DynamicProxy
    assert clone.adapter.channel is None
    assert clone == proxy
    assert clone.adapter.timeout == 7
    assert "wait_gate" in clone._pyroact_oneway
    assert clone.echo(2) == 2
    assert clone.adapter.channel is not proxy.adapter.channel
    attr = pickle.loads(pickle.dumps(proxy.URI.getAttrProxy()))
    assert type(attr) is DynamicProxyWithAttrs and attr.value == 0
    for p in (proxy, clone, attr):
        p._release()


def test_proxies_as_arguments_and_results(daemon: Daemon) -> None:
    target = Echo()
    proxy = daemon.connect(Echo()).getProxy()
    target_proxy = daemon.connect(target).getProxy()
    returned = proxy.identity(target_proxy)
    assert isinstance(returned, DynamicProxy)
    assert returned == target_proxy
    assert returned.echo("via returned") == "via returned"
    for p in (proxy, target_proxy, returned):
        p._release()


def test_server_calls_a_proxy_it_received() -> None:
    with serving("threaded") as server, serving("threaded") as other:
        proxy = server.connect(Echo()).getProxy()
        target = Echo()
        assert proxy.call_through(other.connect(target).getProxy(), 42) == 42
        assert target.log == ["echo 42"]
        proxy._release()


def test_copy_gives_an_independent_connection(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    proxy._setOneway(["wait_gate"])
    proxy._setTimeout(3)
    assert proxy.echo(1) == 1
    twin = copy.copy(proxy)
    assert twin is not proxy and twin == proxy
    assert twin.adapter is not proxy.adapter
    assert twin.adapter.channel is None
    assert twin.adapter.timeout == 3 and "wait_gate" in twin._pyroact_oneway
    assert twin.echo(2) == 2
    wait_until(lambda: len(daemon.connections) == 2)
    proxy._release()
    twin._release()


def test_equality_and_hash_by_object(daemon: Daemon) -> None:
    a, b = Echo(), Echo()
    uri_a = daemon.connect(a)
    daemon.connect(b)
    p1, p2 = DynamicProxy(uri_a), DynamicProxy(str(uri_a))
    assert p1 == p2 and not (p1 != p2)
    assert hash(p1) == hash(p2)
    assert {p1: "x"}[p2] == "x"
    assert p1 != b.getProxy()
    assert p1 != "not a proxy"
    assert p1 == DynamicProxyWithAttrs(uri_a)


def test_truth_is_true_without_a_remote_call() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = DynamicProxy(PyroURI("127.0.0.1", "x", port))
    assert bool(proxy) is True
    assert proxy.adapter.channel is None
    assert repr(proxy) == f"<DynamicProxy for PYRO://127.0.0.1:{port}/x>"


def test_no_underscore_or_unknown_dunder_forwarding(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    with pytest.raises(AttributeError):
        proxy._private()  # noqa: B018
    with pytest.raises(AttributeError):
        proxy.__fspath__()  # noqa: B018
    assert proxy.adapter.channel is None  # none of that went to the server
    with pytest.raises(AttributeError, match="does not define __len__"):
        len(proxy)
    with pytest.raises(AttributeError, match="does not define __getitem__"):
        proxy[0]  # noqa: B018
    assert proxy.echo(1) == 1  # the connection is still fine
    proxy._release()


def test_iadd_returns_a_proxy(daemon: Daemon) -> None:
    counter = Counter()
    obj = daemon.connect(counter).getAttrProxy()
    original = obj
    obj += 50
    assert isinstance(obj, DynamicProxyWithAttrs)
    assert obj == original
    assert counter.value == 50
    obj += 25
    assert obj.value == 75
    assert obj + 1 == 76
    plain = counter.getProxy()
    plain += 5
    assert counter.value == 80
    for p in (obj, original, plain):
        p._release()


def test_container_dunders_the_class_defines(daemon: Daemon) -> None:
    box = Container()
    proxy = daemon.connect(box).getProxy()
    assert len(proxy) == 3
    assert proxy[1] == 20
    proxy[1] = 99
    assert box.data == [10, 99, 30]
    assert 99 in proxy
    assert 5 not in proxy
    with pytest.raises(IndexError):
        proxy[10]  # noqa: B018
    proxy._release()
