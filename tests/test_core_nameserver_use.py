"""The daemon's side of naming: connect/connectPersistent/disconnect/shutdown with a name server.

The name server here is a small remote object with the NameServer methods the daemon calls
(register, resolve, unregister), reached through a real proxy, so these tests check the daemon's
protocol with any name server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from helpers import serving
from remote_objects import Echo

from pyroact import core
from pyroact.errors import NamingError


class DictNameServer(core.ObjBase):
    """register/resolve/unregister over a dict, raising NamingError as Pyro 3's NS does."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, str] = {}
        self.lock = threading.Lock()

    def register(self, name: str, uri: object) -> None:
        with self.lock:
            if name in self.names:
                raise NamingError("name already exists", name)
            self.names[name] = str(uri)

    def resolve(self, name: str) -> str:
        with self.lock:
            if name not in self.names:
                raise NamingError("name not found", name)
            return self.names[name]

    def unregister(self, name: str) -> None:
        with self.lock:
            if self.names.pop(name, None) is None:
                raise NamingError("name not found", name)


@pytest.fixture
def nameserver() -> Iterator[tuple[DictNameServer, core.DynamicProxy]]:
    ns = DictNameServer()
    with serving("threaded") as daemon:
        uri = daemon.connect(ns, ":Pyro.NameServer")
        proxy = core.getProxyForURI(uri)
        yield ns, proxy
        proxy._release()


def test_connect_with_a_name_registers_it(
    nameserver: tuple[DictNameServer, core.DynamicProxy], server_mode: str
) -> None:
    ns, proxy = nameserver
    with serving(server_mode) as daemon:
        daemon.useNameServer(proxy)
        assert daemon.getNameServer() is proxy
        uri = daemon.connect(Echo(), "echo")
        assert ns.names["echo"] == str(uri)
        found = core.getProxyForURI(proxy.resolve("echo"))
        assert found.echo(7) == 7
        found._release()
        daemon.disconnect(uri.objectID)
        assert "echo" not in ns.names


def test_a_name_taken_aborts_the_connect(
    nameserver: tuple[DictNameServer, core.DynamicProxy], server_mode: str
) -> None:
    ns, proxy = nameserver
    ns.names["dup"] = "PYRO://127.0.0.1:1/x"
    with serving(server_mode) as daemon:
        daemon.useNameServer(proxy)
        obj = Echo()
        with pytest.raises(NamingError, match="name already exists"):
            daemon.connect(obj, "dup")
        assert obj.GUID() not in daemon.getRegistered()


def test_connect_persistent_reuses_the_known_object_id(
    nameserver: tuple[DictNameServer, core.DynamicProxy],
) -> None:
    ns, proxy = nameserver
    with serving("threaded") as daemon:
        daemon.useNameServer(proxy)
        first = daemon.connectPersistent(Echo(), "stable")
        port = daemon.port
    # A restart on the same port finds the name at its own address and keeps the id.
    with serving("threaded", port=port, norange=1) as daemon:
        daemon.useNameServer(proxy)
        second = daemon.connectPersistent(Echo(), "stable")
        assert second == first
        assert ns.names["stable"] == str(first)
    # Another address: the stale entry is replaced by the new URI.
    with serving("threaded") as daemon:
        daemon.useNameServer(proxy)
        third = daemon.connectPersistent(Echo(), "stable")
        assert third.port != port and ns.names["stable"] == str(third)


def test_shutdown_with_disconnect_unregisters_only_transient_names(
    nameserver: tuple[DictNameServer, core.DynamicProxy],
) -> None:
    ns, proxy = nameserver
    with serving("threaded") as daemon:
        daemon.useNameServer(proxy)
        daemon.connect(Echo(), "plain")
        daemon.connectPersistent(Echo(), "kept")
        daemon.shutdown(disconnect=True)
        assert "plain" not in ns.names
        assert "kept" in ns.names
