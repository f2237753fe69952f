"""Every remote method of the name server, through a real daemon, in both server modes."""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Iterator

import pytest
from helpers import config_values
from servers.ns_helpers import running_ns

from pyroact import constants, core
from pyroact.errors import NamingError, PyroError
from pyroact.nameserver import MemoryStorage, NameServerStarter
from pyroact.naming import NameServerLocator, NameServerProxy

pytestmark = pytest.mark.network

URI = "PYRO://127.0.0.1:7766/0123456789abcdef0123456789abcdef"


@pytest.fixture
def starter(server_mode: str) -> Iterator[NameServerStarter]:
    with running_ns(server_mode) as started:
        yield started


@pytest.fixture
def ns(starter: NameServerStarter) -> Iterator[NameServerProxy]:
    assert starter.daemon is not None
    proxy = NameServerLocator().getNS("127.0.0.1", starter.daemon.port)
    yield proxy
    proxy._release()


@pytest.fixture
def raw(starter: NameServerStarter) -> Iterator[core.DynamicProxy]:
    """A plain DynamicProxy to the name server object: no client-side name expansion."""
    assert starter.uri is not None
    proxy = core.getProxyForURI(starter.uri)
    yield proxy
    proxy._release()


def error_of(call: object, *args: object) -> tuple[object, ...]:
    with pytest.raises(NamingError) as excinfo:
        call(*args)  # type: ignore[operator]
    return tuple(excinfo.value.args[:2])


def test_ping_and_own_registration(ns: NameServerProxy, starter: NameServerStarter) -> None:
    assert ns.ping() is None
    assert ns.resolve(constants.NAMESERVER_NAME) == starter.uri
    assert ns.URI == starter.uri  # the PYROLOC lookup was resolved to the PYRO URI
    assert (constants.NAMESERVER_NAME, starter.uri) in ns.flatlist()


def test_register_resolve_unregister(ns: NameServerProxy) -> None:
    ns.register("obj", URI)
    ns.register(":Default.obj2", core.PyroURI(URI))
    found = ns.resolve("obj")
    assert isinstance(found, core.PyroURI) and found == core.PyroURI(URI)
    assert ns.resolve(":Default.obj2") == found
    ns.unregister("obj")
    assert error_of(ns.resolve, "obj") == ("name not found", ":Default.obj")
    assert error_of(ns.unregister, "obj") == ("name not found", ":Default.obj")


def test_register_error_tuples(ns: NameServerProxy) -> None:
    ns.register("dup", URI)
    assert error_of(ns.register, "dup", URI) == ("name already exists", ":Default.dup")
    assert error_of(ns.register, ":nogroup.x", URI) == ("(parent)group not found", ":nogroup.x")
    assert error_of(ns.register, "dup.x", URI) == ("parent is no group", ":Default.dup.x")
    assert error_of(ns.register, "a..b", URI) == ("invalid name", ":Default.a..b")
    assert error_of(ns.register, "a b", URI) == ("invalid character(s) in name", ":Default.a b")
    assert error_of(ns.register, ":x:y", URI) == ("invalid character(s) in name", ":x:y")
    assert error_of(ns.register, "bad", "not a uri") == ("invalid URI", ":Default.bad")


def test_resolve_and_unregister_error_tuples(ns: NameServerProxy) -> None:
    assert error_of(ns.resolve, ":Default") == ("attempt to resolve groupname", ":Default")
    assert error_of(ns.resolve, ":nogroup.x") == ("group not found", ":nogroup.x")
    assert error_of(ns.unregister, ":Pyro") == ("is a group, not an object", ":Pyro")


def test_list_through_the_proxy_and_raw(ns: NameServerProxy, raw: core.DynamicProxy) -> None:
    ns.register("a", URI)
    ns.createGroup("g")
    assert sorted(ns.list(None)) == [("a", 1), ("g", 0)]  # proxy: None = the default group
    assert sorted(raw.list(None)) == [("Default", 0), ("Pyro", 0)]  # server: None = root
    assert sorted(ns.list(":")) == [("Default", 0), ("Pyro", 0)]
    assert ns.list(":Pyro") == [("NameServer", 1)]
    assert error_of(ns.list, ":nothing") == ("group not found", ":nothing")
    assert error_of(ns.list, "a") == ("is no group", ":Default.a")


def test_flatlist_has_every_object_with_uris(ns: NameServerProxy) -> None:
    ns.createGroup(":app")
    ns.register(":app.one", URI)
    ns.register("two", URI)
    flat = dict(ns.flatlist())
    assert set(flat) == {constants.NAMESERVER_NAME, ":app.one", ":Default.two"}
    assert all(isinstance(uri, core.PyroURI) for uri in flat.values())


def test_groups(ns: NameServerProxy) -> None:
    ns.createGroup(":app")
    ns.createGroup(":app.sub")
    ns.register(":app.sub.obj", URI)
    assert error_of(ns.createGroup, ":app") == ("group already exists", ":app")
    assert error_of(ns.createGroup, ":") == ("invalid groupname", ":")
    assert error_of(ns.createGroup, ":no.sub") == ("(parent)group not found", ":no.sub")
    assert error_of(ns.createGroup, ":app.sub.obj.x") == (
        "parent is no group",
        ":app.sub.obj.x",
    )
    ns.deleteGroup(":app")
    assert error_of(ns.resolve, ":app.sub.obj") == ("group not found", ":app.sub.obj")
    assert error_of(ns.deleteGroup, ":") == ("not allowed to delete root group", ":")
    assert error_of(ns.deleteGroup, ":app") == ("group not found", ":app")
    assert error_of(ns.deleteGroup, constants.NAMESERVER_NAME) == (
        "is no group",
        constants.NAMESERVER_NAME,
    )


def test_metadata(ns: NameServerProxy) -> None:
    ns.register("obj", URI)
    assert ns.getMeta("obj") is None
    ns.setMeta("obj", {"version": 2, "tags": ["a"]})
    ns.setMeta(":Default", "the default group")
    assert ns.getMeta("obj") == {"version": 2, "tags": ["a"]}
    assert ns.getMeta(":Default") == "the default group"
    system = ns.getSystemMeta("obj")
    assert system["type"] == 1 and system["owner"] is None and system["timestamp"] > 0
    assert ns.getSystemMeta(":Default")["type"] == 0
    assert error_of(ns.getMeta, "missing") == ("name not found", ":Default.missing")
    assert error_of(ns.setMeta, "obj", {1, 2}) == (
        "metadata must be JSON-serialisable",
        ":Default.obj",
    )


def test_full_name_on_proxy_and_server(ns: NameServerProxy, raw: core.DynamicProxy) -> None:
    assert ns.fullName("x.y") == ":Default.x.y"
    assert ns.fullName(None) == ":Default"
    assert raw.fullName("x") == ":Default.x"
    with config_values(PYRO_NS_DEFAULTGROUP=":Other"):
        assert ns.fullName("x") == ":Other.x"
        ns.createGroup(":Other")
        ns.register("x", URI)
        assert ns.list(None) == [("x", 1)]
    assert ns.resolve(":Other.x") == core.PyroURI(URI)


def test_resync_is_refused_by_a_single_name_server(ns: NameServerProxy) -> None:
    with pytest.raises(NamingError, match="not paired"):
        ns.resync()


def test_private_methods_are_not_remote(raw: core.DynamicProxy) -> None:
    with pytest.raises(AttributeError):
        raw._commit_put([])


def test_concurrent_registrations(ns: NameServerProxy, server_mode: str) -> None:
    proxies = [copy.copy(ns) for _ in range(4)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for i in range(10):
                proxies[index].register(f"t{index}_{i}", URI)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert len(ns.list(None)) == 40
    for proxy in proxies:
        proxy._release()


def test_proxy_pickles_copies_and_refuses_deepcopy(ns: NameServerProxy) -> None:
    ns._setTimeout(7.5)
    clone = pickle.loads(pickle.dumps(ns))
    assert clone == ns and clone.URI == ns.URI
    assert clone._proxy.adapter.timeout == 7.5
    clone.register("via_clone", URI)
    assert ns.resolve("via_clone") == core.PyroURI(URI)
    clone._release()
    assert copy.copy(ns).resolve("via_clone") == core.PyroURI(URI)
    with pytest.raises(PyroError):
        copy.deepcopy(ns)


def test_proxy_uses_the_ns_timeout_by_default(ns: NameServerProxy) -> None:
    with config_values(PYRO_NS_TIMEOUT=3.5):
        fresh = NameServerProxy(ns.URI)
    assert fresh._proxy.adapter.timeout == 3.5
    fresh._release()


def test_proxy_rebinds_once_after_a_restart_on_the_same_port(server_mode: str) -> None:
    storage = MemoryStorage()
    with running_ns(server_mode, storage=storage) as first:
        assert first.daemon is not None
        port = first.daemon.port
        ns = NameServerLocator().getNS("127.0.0.1", port)
        ns.createGroup(":kept")
        old = ns.URI
    # A name server with the same data but a new object id (fresh guid setting).
    storage.set_setting("nameserver_guid", "f" * 32)
    with running_ns(server_mode, nsport=port, storage=storage):
        assert ns.list(":kept") == []  # reconnects through PYROLOC and repeats the call
        assert ns.URI != old and ns.URI.objectID == "f" * 32
    ns._release()
    with pytest.raises(PyroError):
        ns.ping()  # nothing runs there any more: the one retry fails too
