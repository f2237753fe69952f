"""Thread-local storage and timeouts (issue 3)."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from helpers import RawClient, config_values, serving, wait_until
from remote_objects import Echo

from pyroact.core import Daemon, DynamicProxy, PyroURI
from pyroact.errors import ConnectionClosedError, TimeoutError
from pyroact.protocol import DefaultConnValidator


def test_tls_is_per_connection_in_threaded_mode() -> None:
    with serving("threaded") as d:
        uri = d.connect(Echo())
        p1, p2 = DynamicProxy(uri), DynamicProxy(uri)
        m1 = p1.tls_marker()
        assert p1.tls_marker() == m1
        assert p2.tls_marker() != m1
        assert p2.tls_marker() == p2.tls_marker()
        p1._release()
        p2._release()


def test_tls_is_shared_in_single_mode() -> None:
    with serving("single") as d:
        uri = d.connect(Echo())
        p1, p2 = DynamicProxy(uri), DynamicProxy(uri)
        assert p1.tls_marker() == p2.tls_marker()
        p1._release()
        p2._release()


def test_caller_is_the_clients_connection(daemon: Daemon) -> None:
    uri = daemon.connect(Echo())
    p1, p2 = DynamicProxy(uri), DynamicProxy(uri)
    assert tuple(p1.record_caller()) == p1.adapter.channel.sock.getsockname()
    assert tuple(p2.record_caller()) == p2.adapter.channel.sock.getsockname()
    p1._release()
    p2._release()


class NamingValidator(DefaultConnValidator):
    def acceptHost(self, daemon: Any, connection: Any) -> tuple[int, int]:
        connection.username = f"user-{connection.addr[1]}"
        return super().acceptHost(daemon, connection)


def test_validator_attributes_are_visible_on_the_caller(daemon: Daemon) -> None:
    daemon.setNewConnectionValidator(NamingValidator())
    proxy = daemon.connect(Echo()).getProxy()
    port = proxy.adapter  # connect first
    assert proxy.echo(0) == 0
    port = proxy.adapter.channel.sock.getsockname()[1]
    assert proxy.caller_attr("username") == f"user-{port}"
    proxy._release()


def test_proxy_timeout_on_a_blocking_method(daemon: Daemon) -> None:
    obj = Echo()
    proxy = daemon.connect(obj).getProxy()
    proxy._setTimeout(0.3)
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        proxy.wait_gate(10)
    elapsed = time.monotonic() - start
    assert isinstance(info.value, ConnectionClosedError)
    assert 0.25 <= elapsed < 2.0
    obj.gate.set()
    wait_until(obj.finished.is_set)
    assert proxy.echo("again") == "again"  # the next call reconnects
    proxy._release()


def test_connect_timeout_against_a_silent_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        proxy = DynamicProxy(PyroURI("127.0.0.1", "x", listener.getsockname()[1]))
        proxy._setTimeout(0.3)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="timeout"):
            proxy.echo(1)
        assert 0.25 <= time.monotonic() - start < 2.0
        assert proxy.adapter.channel is None


def test_handshake_deadline_drops_silent_clients(server_mode: str) -> None:
    with config_values(PYRO_HANDSHAKE_TIMEOUT=0.3), serving(server_mode) as d:
        proxy = d.connect(Echo()).getProxy()
        silent = RawClient(d.port, handshake=False)
        try:
            wait_until(lambda: len(d.connections) == 1, what="silent client accepted")
            start = time.monotonic()
            assert proxy.echo("served meanwhile") == "served meanwhile"
            assert silent.closed_by_server(timeout=5)
            assert time.monotonic() - start < 3
            wait_until(lambda: len(d.connections) == 1, what="only the proxy left")
            assert proxy.echo(2) == 2
        finally:
            silent.close()
            proxy._release()
