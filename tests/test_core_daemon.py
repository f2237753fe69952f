"""The Daemon: addresses, registry, request loops, foreign loops, limits (issue 3)."""

from __future__ import annotations

import select
import socket
import threading
from typing import Any

import pytest
from helpers import config_values, serving, wait_until
from remote_objects import Echo

from pyroact import constants
from pyroact.core import Daemon, DynamicProxy, PyroURI
from pyroact.errors import (
    ConnectionDeniedError,
    DaemonError,
    NamingError,
    ProtocolError,
)
from pyroact.protocol import DefaultConnValidator


def test_default_host_is_loopback_and_port_zero_picks_a_free_port(server_mode: str) -> None:
    with Daemon(mode=server_mode) as d:
        assert d.hostname == "127.0.0.1"
        assert d.sock.getsockname()[0] == "127.0.0.1"
        assert d.port == d.sock.getsockname()[1] != 0
        assert d.mode == server_mode


def test_publishhost_appears_in_uris() -> None:
    with Daemon(mode="single", publishhost="127.0.0.9") as d:
        uri = d.connect(Echo())
        assert uri.address == "127.0.0.9"
        assert uri.port == d.port
        assert d.sock.getsockname()[0] == "127.0.0.1"


def test_pyro_host_and_publishhost_from_config() -> None:
    with config_values(PYRO_HOST="localhost", PYRO_PUBLISHHOST="127.0.0.7"):
        with Daemon(mode="single") as d:
            assert d.sock.getsockname()[0] == "127.0.0.1"
            assert d.connect(Echo()).address == "127.0.0.7"
    with config_values(PYRO_HOST="localhost"), serving("threaded") as d:
        uri = d.connect(Echo())
        assert DynamicProxy(uri).echo(1) == 1


def test_refuses_to_bind_a_public_address_without_protection() -> None:
    with pytest.raises(DaemonError, match="not a loopback"):
        Daemon(host="0.0.0.0", mode="single")


def test_bind_failure_is_a_daemonerror() -> None:
    with Daemon(mode="single") as d:
        with pytest.raises(DaemonError, match="Couldn't start Pyro daemon"):
            Daemon(port=d.port, norange=1, mode="single")


def test_connect_disconnect_and_getregistered(daemon: Daemon) -> None:
    a, b = Echo(), Echo()
    uri_a = daemon.connect(a, "named-a")
    uri_b = daemon.connectPersistent(b)
    registered = daemon.getRegistered()
    assert registered[a.GUID()] == "named-a"
    assert registered[b.GUID()] is None
    assert registered[constants.INTERNAL_DAEMON_GUID] == "__PYRO_Internal_Daemon"
    assert uri_a.objectID == a.GUID() and uri_b.objectID == b.GUID()
    with pytest.raises(DaemonError):
        daemon.connect(a)
    with pytest.raises(TypeError):
        daemon.connect(object())  # type: ignore[arg-type]
    proxy = DynamicProxy(uri_a)
    assert proxy.echo(1) == 1
    daemon.disconnect(a)
    daemon.disconnect(b.GUID())
    assert set(daemon.getRegistered()) == {constants.INTERNAL_DAEMON_GUID}
    with pytest.raises(KeyError):
        daemon.disconnect(a)
    with pytest.raises(KeyError):
        daemon.disconnect("no-such-id")
    daemon.disconnect(constants.INTERNAL_DAEMON_GUID)  # never removed
    assert constants.INTERNAL_DAEMON_GUID in daemon.getRegistered()
    with pytest.raises(ProtocolError, match="unknown object ID"):
        proxy.echo(2)


def test_internal_daemon_object_remotely(daemon: Daemon) -> None:
    obj = Echo()
    daemon.connect(obj, "findme")
    remote = PyroURI("127.0.0.1", constants.INTERNAL_DAEMON_GUID, daemon.port).getProxy()
    registered = remote.getRegistered()
    assert registered == {
        constants.INTERNAL_DAEMON_GUID: "__PYRO_Internal_Daemon",
        obj.GUID(): "findme",
    }
    assert remote.ResolvePYROLOC("findme") == obj.GUID()
    with pytest.raises(NamingError):
        remote.ResolvePYROLOC("nothing-by-this-name")


def test_requestloop_others_fire_the_callback(server_mode: str) -> None:
    a, b = socket.socketpair()
    ready: list[Any] = []
    stop = threading.Event()

    def callback(sockets: list[Any]) -> None:
        for s in sockets:
            ready.append(s.recv(100))
        stop.set()

    with Daemon(mode=server_mode) as d:
        proxy = d.connect(Echo()).getProxy()
        t = threading.Thread(
            target=d.requestLoop,
            kwargs={
                "condition": lambda: not stop.is_set(),
                "timeout": 0.1,
                "others": [a],
                "callback": callback,
            },
        )
        t.start()
        try:
            assert proxy.echo("served") == "served"
            b.send(b"ping")
            t.join(5)
            assert not t.is_alive(), "condition() false did not end requestLoop"
            assert ready == [b"ping"]
        finally:
            d.shutdown()
            t.join(5)
            proxy._release()
    a.close()
    b.close()


def test_others_without_callback_is_an_error(server_mode: str) -> None:
    a, b = socket.socketpair()
    with Daemon(mode=server_mode) as d:
        with pytest.raises(ProtocolError, match="callback required"):
            d.handleRequests(0, others=[a])
    a.close()
    b.close()


def test_getserversockets_and_a_foreign_select_loop(server_mode: str) -> None:
    with Daemon(mode=server_mode) as d:
        assert d.getServerSockets() == [d.sock]
        proxy = d.connect(Echo()).getProxy()
        stop = threading.Event()
        seen_sizes: list[int] = []

        def foreign_loop() -> None:
            for _ in range(500):
                if stop.is_set():
                    return
                sockets = d.getServerSockets()
                seen_sizes.append(len(sockets))
                readable, _, _ = select.select(sockets, [], [], 0.05)
                if readable:
                    d.handleRequests(0)

        t = threading.Thread(target=foreign_loop)
        t.start()
        try:
            assert proxy.echo(1) == 1
            assert proxy.echo(2) == 2
            sockets = d.getServerSockets()
        finally:
            stop.set()
            t.join(5)
        if server_mode == "single":
            assert len(sockets) == 2 and d.sock in sockets
            assert proxy.adapter.channel.sock.getsockname() in [
                s.getpeername() for s in sockets if s is not d.sock
            ]
        else:
            assert sockets == [d.sock]
        proxy._release()


def test_shutdown_stops_the_requestloop(server_mode: str) -> None:
    d = Daemon(mode=server_mode)
    t = threading.Thread(target=d.requestLoop, kwargs={"timeout": 0.1})
    t.start()
    try:
        assert d.connect(Echo()).getProxy().echo(1) == 1
        d.shutdown()
        t.join(5)
        assert not t.is_alive()
    finally:
        d.shutdown()
        t.join(5)
        d.closedown()


def test_with_daemon_closes_it(server_mode: str) -> None:
    with Daemon(mode=server_mode) as d:
        port = d.port
    assert d.sock.fileno() == -1
    with pytest.raises(ProtocolError, match="connection failed"):
        PyroURI("127.0.0.1", "x", port).getProxy().echo(1)


def test_settimeout_closes_idle_connections_and_the_client_reconnects(server_mode: str) -> None:
    with serving(server_mode) as d:
        d.setTimeout(0.3)
        proxy = d.connect(Echo()).getProxy()
        assert proxy.echo(1) == 1
        first = proxy.adapter.channel
        wait_until(lambda: not d.connections, what="idle connection closed by the server")
        # ... and closed on the wire: the client's socket shows the end of file (a request
        # sent while the server is still closing it can be lost, as with Pyro 3).
        wait_until(lambda: select.select([first.fileno()], [], [], 0)[0],
                   what="the end of file at the client")  # fmt: skip
        assert proxy.echo(2) == 2  # transparently reconnected
        assert proxy.adapter.channel is not first
        proxy._release()


def test_setinittls_runs_once_per_storage(server_mode: str) -> None:
    calls: list[Any] = []

    def init(tls: Any) -> None:
        calls.append(tls)
        tls.initialised = len(calls)

    with serving(server_mode) as d:
        d.setInitTLS(init)
        uri = d.connect(Echo())
        p1, p2 = DynamicProxy(uri), DynamicProxy(uri)
        values = [p1.tls_attr("initialised") for _ in range(3)]
        values += [p2.tls_attr("initialised") for _ in range(3)]
        if server_mode == "single":
            assert len(calls) == 1
            assert values == [1] * 6
        else:
            assert len(calls) == 2
            assert values == [1, 1, 1, 2, 2, 2]
        p1._release()
        p2._release()


def test_setnewconnectionvalidator_type_checks(server_mode: str) -> None:
    with Daemon(mode=server_mode) as d:
        with pytest.raises(TypeError):
            d.setNewConnectionValidator(object())  # type: ignore[arg-type]
        validator = DefaultConnValidator()
        d.setNewConnectionValidator(validator)
        assert d.getNewConnectionValidator() is validator


def test_maxconnections_is_exactly_n(server_mode: str) -> None:
    with config_values(PYRO_MAXCONNECTIONS=3), serving(server_mode) as d:
        uri = d.connect(Echo())
        proxies = [DynamicProxy(uri) for _ in range(3)]
        assert [p.echo(i) for i, p in enumerate(proxies)] == [0, 1, 2]
        extra = DynamicProxy(uri)
        with pytest.raises(ConnectionDeniedError, match="server too busy"):
            extra.echo(3)
        proxies[0]._release()
        wait_until(lambda: len(d.connections) == 2, what="released connection dropped")
        assert extra.echo(4) == 4
        for p in [*proxies, extra]:
            p._release()


def test_threaded_idle_clients_hold_no_threads() -> None:
    count = 220
    with config_values(PYRO_MAXCONNECTIONS=count + 10), serving("threaded") as d:
        uri = d.connect(Echo())
        threads_before = threading.active_count()
        idle = [DynamicProxy(uri) for _ in range(count)]
        for i, p in enumerate(idle):
            assert p.echo(i) == i
        wait_until(lambda: len(d.connections) == count, what="all idle clients connected")
        late = DynamicProxy(uri)
        assert late.echo("late") == "late"
        assert d.server.pool.threads <= 4
        assert threading.active_count() - threads_before <= 4
        for p in [*idle, late]:
            p._release()


@pytest.mark.parametrize(("multithreaded", "expected"), [(False, "single"), (True, "threaded")])
def test_pyro_multithreaded_chooses_the_mode(multithreaded: bool, expected: str) -> None:
    with config_values(PYRO_MULTITHREADED=multithreaded, PYRO_SERVERTYPE=""):
        with Daemon() as d:
            assert d.mode == expected
            assert d.threaded is (expected == "threaded")


def test_pyro_dns_uri_keeps_host_names() -> None:
    with Daemon(mode="single", host="localhost") as d:
        assert d.connect(Echo()).address == "127.0.0.1"
        with config_values(PYRO_DNS_URI=True):
            assert d.connect(Echo()).address == "localhost"
            assert PyroURI("PYRO://localhost:9000/x").address == "localhost"


def test_initclient_and_initserver_are_idempotent() -> None:
    from pyroact.core import initClient, initServer

    initClient()
    initClient()
    initServer()
    initServer()
