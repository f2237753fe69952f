"""Auto-rebind after a server restart, and transient reaping (issue 3)."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import ServerProcess, serving, wait_until
from remote_objects import Echo

from pyroact.core import DynamicProxy
from pyroact.errors import ConnectionClosedError, ProtocolError, TimeoutError

GUID = "rebind-object-0001"


def test_rebind_after_the_server_restarts() -> None:
    server = ServerProcess("echo_server.py", "0", GUID, "threaded")
    try:
        port = urlsplit(server.uri.replace("PYRO://", "http://")).port
        assert port
        proxy = DynamicProxy(server.uri)
        assert proxy.echo(1) == 1
        server.kill()
        # Let the proxy's connection sit idle long enough to be checked before reuse.
        killed = time.monotonic()
        wait_until(lambda: time.monotonic() - killed > 0.2, interval=0.05)
        with pytest.raises(ConnectionClosedError):
            proxy.echo(2)
        with pytest.raises(ProtocolError, match="connection failed") as info:
            proxy.echo(3)
        assert not isinstance(info.value, ConnectionClosedError)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="connection lost"):
            proxy.adapter.rebindURI(tries=2, wait=0.1)
        assert time.monotonic() - start >= 0.1
        server = ServerProcess("echo_server.py", str(port), GUID, "threaded")
        assert server.uri == str(proxy.URI)
        proxy.adapter.rebindURI(tries=3, wait=0.1)
        assert proxy.echo(4) == 4
        proxy._release()
    finally:
        server.kill()


class Reapable(Echo):
    pass


def test_idle_transients_are_reaped(server_mode: str) -> None:
    with serving(server_mode) as d:
        idle, named = Reapable(), Reapable()
        idle_proxy = d.connect(idle).getProxy()
        named_proxy = d.connect(named, "named-object").getProxy()
        assert idle_proxy.echo(1) == 1 and named_proxy.echo(1) == 1
        d.setTransientsCleanupAge(0.3)
        wait_until(lambda: idle.GUID() not in d.getRegistered(), what="idle transient reaped")
        assert idle.reaped == 1
        # A second transient reaped later proves more reaper passes ran.
        later = Reapable()
        d.connect(later)
        wait_until(lambda: later.GUID() not in d.getRegistered(), what="second transient reaped")
        assert idle.reaped == 1
        assert named.GUID() in d.getRegistered()
        assert named.reaped == 0
        with pytest.raises(ProtocolError, match="unknown object"):
            idle_proxy.echo(2)
        assert named_proxy.echo(2) == 2
        named_proxy._release()


def test_busy_transients_are_not_reaped() -> None:
    with serving("threaded") as d:
        busy, idle = Reapable(), Reapable()
        busy_proxy = d.connect(busy).getProxy()
        d.connect(idle)
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(busy_proxy.wait_gate(10)))
        t.start()
        wait_until(busy.started.is_set)
        d.setTransientsCleanupAge(0.3)
        wait_until(lambda: idle.GUID() not in d.getRegistered(), what="idle transient reaped")
        # Another idle transient reaped later: the reaper ran again with the busy one past age.
        idle2 = Reapable()
        d.connect(idle2)
        wait_until(lambda: idle2.GUID() not in d.getRegistered(), what="second idle reaped")
        assert busy.GUID() in d.getRegistered()
        assert busy.reaped == 0
        busy.gate.set()
        t.join(5)
        assert result == [True]
        busy_proxy._release()
