"""Every code snippet of the seed chapter "Features and Guidelines", run for real.

Each snippet is translated to Python 3 with ``Pyro`` -> ``pyroact`` and run against a daemon on
127.0.0.1, port 0, whose request loop runs in a thread. Waits use events with deadlines.
"""

from __future__ import annotations

import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pyroact
import pyroact.constants
import pyroact.core
import pyroact.util
from pyroact.errors import (
    ConnectionClosedError,
    DaemonError,
    NamingError,
    NoModuleError,
    ProtocolError,
    SerializeError,
    TimeoutError,
)

pytestmark = pytest.mark.network

Serve = Callable[..., pyroact.core.Daemon]


@pytest.fixture(scope="module", autouse=True)
def _seed_name_server() -> Iterator[None]:
    """A name server for the snippets that call ``NameServerLocator().getNS()`` as if one ran
    on the network: in memory on 127.0.0.1 (port 0, no discovery responder), found through
    ``PYRO_NS_HOSTNAME``/``PYRO_NS_PORT``, with the group ``:Default.persistent`` that the
    connectPersistent snippet registers in (Pyro 3 requires the parent group to exist).
    """
    from helpers import config_values
    from servers.ns_helpers import running_ns

    with running_ns("threaded", nobroadcast=True) as starter:
        assert starter.daemon is not None and starter.nameserver is not None
        starter.nameserver.createGroup(":Default.persistent")
        with config_values(PYRO_NS_HOSTNAME="127.0.0.1", PYRO_NS_PORT=starter.daemon.port):
            yield


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(mode=..., port=..., norange=...)``: a started daemon, shut down afterwards."""
    running: list[tuple[pyroact.core.Daemon, threading.Thread]] = []

    def start(**kwargs: Any) -> pyroact.core.Daemon:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        daemon = pyroact.core.Daemon(**kwargs)
        loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
        loop.start()
        running.append((daemon, loop))
        return daemon

    yield start
    for daemon, loop in running:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()


@pytest.fixture
def config_restore() -> Iterator[Any]:
    """Set items on the global pyroact.config; they are reset afterwards."""
    changed: list[str] = []

    def set_item(name: str, value: Any) -> None:
        changed.append(name)
        setattr(pyroact.config, name, value)

    yield set_item
    for name in changed:
        pyroact.config.reset(name)


class Sub2:
    def __init__(self) -> None:
        self.value = "server"


class Sub1:
    def __init__(self) -> None:
        self.sub2 = Sub2()


class Thing(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.name = "thing"
        self.sub1 = Sub1()
        self.somedict = {"somekey": 42}
        self.value = 0
        self.calls = 0

    def getSub2(self) -> str:
        return self.sub1.sub2.value

    def setSub2(self, value: str) -> None:
        self.sub1.sub2.value = value

    def method(self, x: int = 0) -> float:
        self.calls += 1
        return 1 / x

    def echo(self, x: Any) -> Any:
        return x

    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    def __iadd__(self, value: int) -> pyroact.core.DynamicProxyWithAttrs:
        self.value += value
        return self.getAttrProxy()


def proxy_for(daemon: pyroact.core.Daemon, obj: pyroact.core.ObjBase, **kw: Any) -> Any:
    uri = daemon.connect(obj, **kw)
    return pyroact.core.getProxyForURI(uri)


# -- Nested attribute access ---------------------------------------------------------------


def test_nested_attribute_write_changes_only_a_local_copy(serve: Serve) -> None:
    daemon = serve()
    thing = Thing()
    obj = pyroact.core.getAttrProxyForURI(daemon.connect(thing))
    assert obj.sub1.sub2.value == "server"  # reading works
    obj.sub1.sub2.value = "client"  # object.sub1.sub2 = newvalue: lost
    assert thing.sub1.sub2.value == "server"
    obj.setSub2("client")  # object.setSub2(newvalue): the advice
    assert obj.getSub2() == "client" == thing.sub1.sub2.value
    obj.name = "renamed"  # attributes of the object itself are remote
    assert thing.name == "renamed"
    assert obj.somedict["somekey"] == 42  # value=remoteObject.somedict['somekey']


def test_regular_proxy_has_no_direct_attribute_access(serve: Serve) -> None:
    daemon = serve()
    plain = proxy_for(daemon, Thing())
    assert not isinstance(plain.name, str)  # a remote-method stub, not the value
    with pytest.raises(AttributeError):
        plain.name = "x"


# -- Automatic rebinding ---------------------------------------------------------------------


def test_rebindURI_after_the_daemon_restarts_on_the_same_port(serve: Serve) -> None:
    first = serve()
    port = first.port
    thing = Thing()
    thing.setGUID("feedfacefeedfacefeedfacefeedface")
    yourpyroobject = proxy_for(first, thing)
    assert yourpyroobject.echo(1) == 1
    first.shutdown()
    first.closedown()
    with pytest.raises((ConnectionClosedError, ProtocolError)):
        yourpyroobject.echo(2)
    with pytest.raises(ProtocolError):  # no daemon: ProtocolError('connection failed')
        yourpyroobject.adapter.rebindURI(tries=2, wait=0.01)
    second = serve(port=port, norange=1)
    again = Thing()
    again.setGUID(thing.GUID())
    second.connect(again)
    yourpyroobject.adapter.rebindURI(tries=20, wait=0.05)
    assert yourpyroobject.echo(3) == 3


def test_connection_failed_is_a_protocol_error_not_connection_closed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = pyroact.core.getProxyForURI(f"PYRO://127.0.0.1:{port}/{'0' * 32}")
    with pytest.raises(ProtocolError, match="connection failed") as info:
        proxy.anything()
    assert not isinstance(info.value, ConnectionClosedError)


def test_connectPersistent_reuses_the_uri_known_in_the_name_server(serve: Serve) -> None:
    import pyroact.naming  # noqa: F401

    daemon = serve()
    ns = pyroact.naming.NameServerLocator().getNS()
    daemon.useNameServer(ns)
    uri = daemon.connectPersistent(Thing(), "persistent.thing")
    assert ns.resolve("persistent.thing") == uri


# -- Mobile code (only the part that works without it) ----------------------------------------


def test_missing_module_on_the_server_without_mobile_code(tmp_path: Any) -> None:
    """An argument whose module the server cannot import is refused, not executed."""
    (tmp_path / "agentmod.py").write_text("class Agent:\n    pass\n")
    server = (
        "import pyroact.core\n"
        "class T(pyroact.core.ObjBase):\n"
        "    def take(self, agent):\n"
        "        return type(agent).__name__\n"
        "d = pyroact.core.Daemon(host='127.0.0.1', port=0)\n"
        "print(d.connect(T()), flush=True)\n"
        "d.requestLoop(timeout=0.1)\n"
    )
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-c", server], stdout=subprocess.PIPE, text=True, cwd=tmp_path.parent
    )
    try:
        assert child.stdout is not None
        uri = child.stdout.readline().strip()
        sys.path.insert(0, str(tmp_path))
        try:
            import agentmod

            proxy = pyroact.core.getProxyForURI(uri)
            with pytest.raises(NoModuleError):  # also an ImportError
                proxy.take(agentmod.Agent())
            proxy._release()
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("agentmod", None)
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


# -- Multithreading, SynchronizedObjBase ------------------------------------------------------


class Peak(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.lock = threading.Lock()
        self.now = self.peak = 0

    def work(self) -> int:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.15)
        with self.lock:
            self.now -= 1
        return self.peak


class SyncPeak(pyroact.core.SynchronizedObjBase, Peak):
    def __init__(self) -> None:
        Peak.__init__(self)


def _parallel_peak(daemon: pyroact.core.Daemon, obj: Peak) -> int:
    uri = daemon.connect(obj)
    proxies = [pyroact.core.getProxyForURI(uri) for _ in range(3)]
    threads = [threading.Thread(target=p.work) for p in proxies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return obj.peak


def test_threaded_daemon_runs_calls_in_parallel(serve: Serve) -> None:
    assert pyroact.util.supports_multithreading()
    assert _parallel_peak(serve(), Peak()) > 1


def test_single_threaded_daemon_via_PYRO_MULTITHREADED(serve: Serve, config_restore: Any) -> None:
    config_restore("PYRO_MULTITHREADED", 0)
    daemon = serve()
    assert not daemon.threaded
    assert _parallel_peak(daemon, Peak()) == 1


def test_SynchronizedObjBase_serialises_calls(serve: Serve) -> None:
    assert _parallel_peak(serve(), SyncPeak()) == 1


# -- Transferring proxies over remote calls ---------------------------------------------------


class Caller(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)

    def call_back(self, proxy: Any, value: Any) -> Any:
        return proxy.echo(value)  # the unpickled proxy is usable in this thread


def test_proxies_as_parameters(serve: Serve) -> None:
    daemon = serve()
    caller = proxy_for(daemon, Caller())
    target = proxy_for(daemon, Thing())
    assert caller.call_back(target, "via proxy") == "via proxy"


def test_proxies_can_be_pickled() -> None:
    proxy = pyroact.core.getProxyForURI(f"PYRO://127.0.0.1:7766/{'a' * 32}")
    proxy._setOneway("x")
    proxy._setTimeout(3)
    copy = pickle.loads(pickle.dumps(proxy))
    assert copy == proxy
    assert copy.adapter.timeout == 3
    assert copy._pyroact_oneway == {"x"}


# -- Thread Local Storage ---------------------------------------------------------------------


class TLSUser(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.oneway_caller: Any = "unset"
        self.oneway_done = threading.Event()

    def store(self, value: Any) -> None:
        self.getLocalStorage().something = value

    def load(self) -> Any:
        return getattr(self.getLocalStorage(), "something", None)

    def counter(self) -> int:
        tls = self.getLocalStorage()
        tls.count += 1
        return tls.count

    def caller_addr(self) -> Any:
        return self.getLocalStorage().caller.addr

    def note(self) -> None:
        self.oneway_caller = self.getLocalStorage().caller
        self.oneway_done.set()


def initTLS(tls: Any) -> None:
    tls.count = 0


def test_getLocalStorage_is_per_connection_in_threaded_mode(serve: Serve) -> None:
    daemon = serve()
    daemon.setInitTLS(initTLS)
    uri = daemon.connect(TLSUser())
    one, two = pyroact.core.getProxyForURI(uri), pyroact.core.getProxyForURI(uri)
    one.store("mine")
    assert one.load() == "mine"
    assert two.load() is None
    assert [one.counter(), one.counter(), two.counter()] == [1, 2, 1]
    assert one.caller_addr() != two.caller_addr()


def test_tls_is_shared_in_single_threaded_mode(serve: Serve) -> None:
    daemon = serve(mode="single")
    daemon.setInitTLS(initTLS)
    uri = daemon.connect(TLSUser())
    one, two = pyroact.core.getProxyForURI(uri), pyroact.core.getProxyForURI(uri)
    one.store("shared")
    assert two.load() == "shared"
    assert [one.counter(), two.counter()] == [1, 2]


def test_getLocalStorage_outside_a_daemon_fails() -> None:
    with pytest.raises(DaemonError):
        TLSUser().getLocalStorage()


def test_tls_caller_is_set_for_oneway_calls(serve: Serve) -> None:
    daemon = serve()
    user = TLSUser()
    proxy = proxy_for(daemon, user)
    proxy._setOneway("note")
    assert proxy.note() is None
    assert user.oneway_done.wait(5)
    assert user.oneway_caller is not None  # pyroact sets it (Pyro 3 had None)


# -- DNS, IP addresses and firewalls ----------------------------------------------------------


def test_publishhost_goes_into_uris_and_PYRO_DNS_URI(serve: Serve, config_restore: Any) -> None:
    daemon = serve(publishhost="localhost")
    thing = Thing()
    uri = daemon.connect(thing)
    assert daemon.hostname == "localhost"
    assert uri.address == pyroact.core.PyroURI("localhost", "x").address  # resolved to an IP
    config_restore("PYRO_DNS_URI", 1)
    assert thing.getProxy().URI.address == "localhost"


def test_PYRO_PUBLISHHOST(serve: Serve, config_restore: Any) -> None:
    config_restore("PYRO_PUBLISHHOST", "127.0.0.1")
    assert serve().hostname == "127.0.0.1"


# -- Callbacks and oneway calls ---------------------------------------------------------------


class Listener(pyroact.core.CallbackObjBase):
    def __init__(self) -> None:
        pyroact.core.CallbackObjBase.__init__(self)

    def notify(self, value: Any) -> Any:
        if value == "fail":
            raise ValueError("callback failed")
        return value


class Notifier(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.done = threading.Event()
        self.order: list[str] = []

    def fire(self, listener: Any, value: Any) -> Any:
        return listener.notify(value)

    def slow_oneway(self, seconds: float) -> None:
        time.sleep(seconds)
        self.order.append("oneway")
        self.done.set()

    def quick(self) -> None:
        self.order.append("quick")


def test_callback_object_error_reaches_server_and_client(serve: Serve) -> None:
    server = serve()
    notifier = proxy_for(server, Notifier())
    client = pyroact.core.Daemon(host="127.0.0.1", port=0, mode="single")
    try:
        listener = Listener()
        client.connect(listener)
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                result["value"] = notifier.fire(listener.getProxy(), "fail")
            except Exception as exc:
                result["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 5
        with pytest.raises(ValueError, match="callback failed"):
            while time.monotonic() < deadline:  # the client's loop raises it again here
                client.handleRequests(0.1)
        caller.join(5)
        assert isinstance(result.get("error"), ValueError)  # and the server got it too
    finally:
        client.closedown()


@pytest.mark.parametrize("methods", ["slow_oneway", ["slow_oneway"], ("slow_oneway",)])
def test_setOneway_returns_at_once(serve: Serve, methods: Any) -> None:
    daemon = serve()
    notifier = Notifier()
    obj = proxy_for(daemon, notifier)
    obj._setOneway(methods)
    start = time.monotonic()
    assert obj.slow_oneway(0.5) is None
    assert time.monotonic() - start < 0.4
    obj.quick()  # PYRO_ONEWAY_THREADED: not held up by the oneway call
    assert notifier.done.wait(5)
    assert notifier.order == ["quick", "oneway"]


def test_PYRO_ONEWAY_THREADED_off_keeps_order(serve: Serve, config_restore: Any) -> None:
    config_restore("PYRO_ONEWAY_THREADED", 0)
    daemon = serve()
    notifier = Notifier()
    obj = proxy_for(daemon, notifier)
    obj._setOneway("slow_oneway")
    obj.slow_oneway(0.2)
    obj.quick()  # waits until the oneway call finished
    assert notifier.order == ["oneway", "quick"]


# -- Dealing with exceptions ------------------------------------------------------------------


def test_getPyroTraceback_snippet(serve: Serve) -> None:
    thing = proxy_for(serve(), Thing())
    caught: list[BaseException] = []
    try:
        print(thing.method())  # thing is a Pyro proxy
    except Exception as x:
        text = "".join(pyroact.util.getPyroTraceback(x))
        caught.append(x)
    [x] = caught
    assert isinstance(x, ZeroDivisionError)
    assert " +--- This exception occured remotely (Pyro) - Remote traceback:" in text
    assert "\n | " in text and " +--- End of remote traceback" in text
    assert getattr(x, pyroact.constants.TRACEBACK_ATTRIBUTE)[-1].startswith("ZeroDivisionError")


def test_getPyroTraceback_is_safe_on_local_exceptions() -> None:
    try:
        raise KeyError("local")
    except KeyError as x:
        lines = pyroact.util.getPyroTraceback(x)
    assert "Remote traceback" not in "".join(lines)
    assert lines[-1].startswith("KeyError")


def test_excepthook_prints_the_remote_traceback(
    serve: Serve, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", pyroact.util.excepthook)
    thing = proxy_for(serve(), Thing())
    try:
        thing.method(0)
    except ZeroDivisionError as x:
        sys.excepthook(type(x), x, x.__traceback__)
    assert "Remote traceback" in capsys.readouterr().err


def test_PYRO_DETAILED_TRACEBACK_adds_local_values(serve: Serve, config_restore: Any) -> None:
    config_restore("PYRO_DETAILED_TRACEBACK", 1)
    thing = proxy_for(serve(), Thing())
    with pytest.raises(ZeroDivisionError) as info:
        thing.method(0)
    assert "Local values" in "".join(info.value.remote_stacktrace)


# -- Remotely accessing the daemon ------------------------------------------------------------


def test_getRegistered_on_the_internal_daemon_guid(serve: Serve) -> None:
    daemon = serve()
    thing = Thing()
    daemon.connect(thing, ":test.thing")
    pyroact.core.initClient()
    d = pyroact.core.PyroURI(
        host="127.0.0.1", port=daemon.port, objectID=pyroact.constants.INTERNAL_DAEMON_GUID
    ).getProxy()
    registered = d.getRegistered()
    assert registered == {
        thing.GUID(): ":test.thing",
        pyroact.constants.INTERNAL_DAEMON_GUID: "__PYRO_Internal_Daemon",
    }
    assert d.ResolvePYROLOC(":test.thing") == thing.GUID()
    with pytest.raises(NamingError):
        d.ResolvePYROLOC("unknown")
    with pytest.raises(AttributeError):  # ObjBase management methods are not remote
        d.setGUID("x")


def test_pyroloc_uses_ResolvePYROLOC(serve: Serve) -> None:
    daemon = serve()
    thing = Thing()
    daemon.connect(thing, "thing")
    proxy = pyroact.core.getProxyForURI(f"PYROLOC://127.0.0.1:{daemon.port}/thing")
    assert proxy.echo("x") == "x"
    assert proxy.URI.protocol == "PYRO" and proxy.objectID == thing.GUID()
    assert proxy == thing.getProxy()


def test_pyrossl_proxy_without_certificates_fails_loudly() -> None:
    # No certificates are configured here: a PYROSSL proxy refuses at once, naming the file,
    # and never falls back to plain TCP.
    with pytest.raises(ProtocolError, match="TLS misconfigured: PYROSSL_CA_CERT"):
        pyroact.core.PyroURI(
            host="127.0.0.1", objectID=pyroact.constants.INTERNAL_DAEMON_GUID, prtcol="PYROSSL"
        ).getProxy()


# -- Timeouts and cleaning up -----------------------------------------------------------------


def test_proxy_setTimeout_raises_TimeoutError(serve: Serve) -> None:
    daemon = serve()
    daemon.setTimeout(20)  # set 20-sec. timeout on daemon (server)
    proxy = proxy_for(daemon, Thing())
    proxy._setTimeout(20)  # set 20-sec. timeout on proxy object (client)
    proxy._setTimeout(0.2)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        proxy.slow(1)
    assert time.monotonic() - start < 0.9
    assert issubclass(TimeoutError, ConnectionClosedError)
    proxy._setTimeout(None)  # clear it again by passing None
    daemon.setTimeout(None)
    assert proxy.slow(0) == "done"


def test_daemon_drops_a_client_that_never_finishes_the_handshake(
    serve: Serve, config_restore: Any
) -> None:
    config_restore("PYRO_HANDSHAKE_TIMEOUT", 0.2)
    daemon = serve()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as evil:
        evil.settimeout(5)
        data = evil.recv(4096)  # the challenge
        assert data
        deadline = time.monotonic() + 5
        while data and time.monotonic() < deadline:
            data = evil.recv(4096)
        assert data == b""  # the daemon closed it


def test_release_and_reconnect_and_pickle(serve: Serve) -> None:
    proxy = proxy_for(serve(), Thing())
    assert proxy.echo(1) == 1
    proxy._release()
    assert not proxy.adapter.connected
    assert pickle.loads(pickle.dumps(proxy)).echo(2) == 2
    assert proxy.echo(3) == 3


class Transient(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.reaped = threading.Event()

    def ping(self) -> str:
        return "pong"

    def _gotReaped(self) -> None:
        self.reaped.set()


@pytest.mark.parametrize("mode", ["threaded", "single"])
def test_setTransientsCleanupAge_reaps_idle_transients(serve: Serve, mode: str) -> None:
    daemon = serve(mode=mode)
    daemon.setTransientsCleanupAge(0.3)
    transient, named = Transient(), Transient()
    proxy = proxy_for(daemon, transient)
    daemon.connect(named, "named")
    assert proxy.ping() == "pong"
    assert transient.reaped.wait(5)
    with pytest.raises(ProtocolError, match="unknown object ID"):
        proxy.ping()
    assert not named.reaped.is_set()
    assert named.GUID() in daemon.getRegistered()


# -- Usage rules and guidelines ---------------------------------------------------------------


def test_rule1_no_remote_init(serve: Serve) -> None:
    proxy = proxy_for(serve(), Thing())
    with pytest.raises(AttributeError):
        proxy._private()  # nothing private, dunder __init__ included, is forwarded
    assert callable(proxy.__init__)  # the proxy's own __init__, not the remote one


def test_rule2_unpicklable_results_fail(serve: Serve) -> None:
    proxy = proxy_for(serve(), Thing())
    with pytest.raises(SerializeError):
        proxy.echo(threading.Lock())  # unpicklable argument: fails client-side


def test_rule2_file_objects_cannot_be_returned(serve: Serve) -> None:
    opened: list[Any] = []

    class Opener(pyroact.core.ObjBase):
        def openFile(self, filename: str) -> Any:
            opened.append(open(filename))
            return opened[-1]

    proxy = proxy_for(serve(), Opener())
    try:
        with pytest.raises(SerializeError):
            proxy.openFile(__file__)
    finally:
        for f in opened:
            f.close()


def test_rule3_proxies_compare_not_remote_objects(serve: Serve) -> None:
    daemon = serve()
    thing = Thing()
    uri = daemon.connect(thing)
    one, two = pyroact.core.getProxyForURI(uri), pyroact.core.getProxyForURI(uri)
    assert one == two and hash(one) == hash(two)
    assert one != pyroact.core.getProxyForURI(daemon.connect(Thing()))


def test_rule8_objects_must_inherit_ObjBase(serve: Serve) -> None:
    with pytest.raises(TypeError):
        serve().connect(object())  # type: ignore[arg-type]


def test_rule9_delegation(serve: Serve) -> None:
    class MyRemoteClass:
        def add(self, a: int, b: int) -> int:
            return a + b

    impl = MyRemoteClass()
    obj = pyroact.core.ObjBase()
    obj.delegateTo(impl)
    proxy = proxy_for(serve(), obj)
    assert proxy.add(2, 3) == 5


def test_rule11_base_init_is_required(serve: Serve) -> None:
    class Forgot(pyroact.core.ObjBase):
        def __init__(self) -> None:
            self.x = 1

    with pytest.raises(DaemonError):
        serve().connect(Forgot())


def test_rule13_truth_test_on_a_proxy(serve: Serve) -> None:
    proxy = proxy_for(serve(), Thing())
    assert bool(proxy) is True  # never a remote call


def test_rule15_augmented_assignment(serve: Serve) -> None:
    thing = Thing()
    obj = pyroact.core.getAttrProxyForURI(serve().connect(thing))
    obj += 50
    assert thing.value == 50
    assert isinstance(obj, pyroact.core.DynamicProxyWithAttrs)
    assert obj.value == 50


def test_rule15_undefined_dunders_are_refused(serve: Serve) -> None:
    proxy = proxy_for(serve(), Thing())
    with pytest.raises(AttributeError):
        proxy * 2  # Thing does not define __mul__


def test_rule19_disconnect_by_object_or_uid(serve: Serve) -> None:
    daemon = serve()
    one, two = Thing(), Thing()
    p1, p2 = proxy_for(daemon, one), proxy_for(daemon, two)
    daemon.disconnect(one)
    daemon.disconnect(two.GUID())
    for proxy in (p1, p2):
        with pytest.raises(ProtocolError, match="unknown object ID"):
            proxy.echo(1)
    with pytest.raises(KeyError):
        daemon.disconnect(one)
