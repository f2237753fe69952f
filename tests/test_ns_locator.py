"""Finding the name server (direct, UDP discovery on loopback), PYRONAME, daemons using it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import config_values, serving
from remote_objects import Echo
from servers.ns_helpers import ROOT, running_ns

import pyroact
import pyroact.naming
from pyroact import constants, core
from pyroact.errors import ConnectionDeniedError, NamingError
from pyroact.nameserver import BCReqValidator, NameServerStarter
from pyroact.naming import NameServerLocator, NameServerProxy, shutdown_request

pytestmark = pytest.mark.network

FAST_BC = {"PYRO_BC_RETRIES": 0, "PYRO_BC_TIMEOUT": 0.3}


@pytest.fixture
def starter() -> Iterator[NameServerStarter]:
    with running_ns("threaded") as started:
        yield started


def ports(starter: NameServerStarter) -> tuple[int, int]:
    assert starter.daemon is not None and starter.bcserver is not None
    return starter.daemon.port, starter.bcserver.port


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_get_ns_direct(starter: NameServerStarter) -> None:
    port, _ = ports(starter)
    ns = NameServerLocator().getNS("127.0.0.1", port)
    assert isinstance(ns, NameServerProxy)
    assert ns.URI == starter.uri
    ns._release()


def test_get_ns_direct_from_config(starter: NameServerStarter) -> None:
    port, _ = ports(starter)
    with config_values(PYRO_NS_HOSTNAME="127.0.0.1", PYRO_NS_PORT=port):
        ns = NameServerLocator().getNS()
    assert ns.URI == starter.uri
    ns._release()


def test_get_ns_direct_fails_clearly() -> None:
    port = free_tcp_port()
    with pytest.raises(NamingError, match="could not find NameServer on host 127.0.0.1"):
        NameServerLocator().getNS("127.0.0.1", port)


def test_udp_discovery_on_loopback(starter: NameServerStarter) -> None:
    _, bcport = ports(starter)
    with config_values(**FAST_BC):
        locator = NameServerLocator()
        assert locator.detectNS(None, bcport, bcaddr="127.0.0.1") == starter.uri
        ns = locator.getNS(port=bcport, bcaddr="127.0.0.1")
    assert ns.URI == starter.uri and ns.resolve(constants.NAMESERVER_NAME) == starter.uri
    ns._release()


def test_udp_discovery_from_config(starter: NameServerStarter) -> None:
    _, bcport = ports(starter)
    with config_values(PYRO_NS_BC_ADDR="127.0.0.1", PYRO_NS_BC_PORT=bcport, **FAST_BC):
        ns = NameServerLocator().getNS(port=bcport)
    assert ns.URI == starter.uri
    ns._release()


def test_discovery_without_an_answer_fails_within_the_deadline() -> None:
    silent = free_udp_port()
    with config_values(PYRO_BC_RETRIES=1, PYRO_BC_TIMEOUT=0.2):
        began = time.monotonic()
        with pytest.raises(NamingError, match="could not find NameServer"):
            NameServerLocator().getNS(port=silent, bcaddr="127.0.0.1")
        assert time.monotonic() - began < 3


def test_fallback_finds_localhost_without_changing_the_config(starter: NameServerStarter) -> None:
    port, _ = ports(starter)
    silent = free_udp_port()
    with config_values(
        PYRO_NS_BC_ADDR="127.0.0.1",
        PYRO_NS_BC_PORT=silent,
        PYRO_NS2_BC_PORT=silent,
        PYRO_NS_PORT=port,
        **FAST_BC,
    ):
        before = pyroact.config.as_dict()
        locator = NameServerLocator()
        ns = locator.getNS()  # no reply to the datagram: the direct localhost fallback
        assert pyroact.config.as_dict() == before  # D-8: the locator remembers, config stays
        assert locator.found is not None and locator.found[1] == port
        assert ns.URI == starter.uri
        again = locator.getNS()  # uses what it remembered
        assert again.URI == starter.uri
    ns._release()
    again._release()


def test_garbage_datagrams_are_ignored(starter: NameServerStarter) -> None:
    _, bcport = ports(starter)
    with config_values(PYRO_BC_RETRIES=0, PYRO_BC_TIMEOUT=0.3):
        with pytest.raises(NamingError):
            NameServerLocator().sendSysCommand(b"hello", "127.0.0.1", bcport)
        # ...and the responder still answers afterwards.
        assert NameServerLocator().detectNS("127.0.0.1", bcport) == starter.uri


def test_udp_shutdown_is_denied_by_default(starter: NameServerStarter) -> None:
    _, bcport = ports(starter)
    with config_values(**FAST_BC):
        reply = NameServerLocator().sendSysCommand(b"shutdown", "127.0.0.1", bcport)
    assert reply == "Shutdown request denied"
    assert starter.daemon is not None and not starter.daemon.mustShutdown


def test_authenticated_udp_shutdown_when_enabled() -> None:
    with running_ns(identification="s3cret", allow_udp_shutdown=True) as started:
        assert started.daemon is not None and started.bcserver is not None
        bcport = started.bcserver.port
        locator = NameServerLocator()
        with config_values(**FAST_BC):
            assert locator.sendSysCommand(b"shutdown", "127.0.0.1", bcport) == (
                "Shutdown request denied"
            )
            wrong = shutdown_request("wrong")
            assert locator.sendSysCommand(wrong, "127.0.0.1", bcport) == "Shutdown request denied"
            good = shutdown_request("s3cret")
            assert locator.sendSysCommand(good, "127.0.0.1", bcport) == "Will shut down shortly"
            assert started.daemon.mustShutdown and started.bcserver.shutdown_requested
        # The loop is stopping now; a replay of the same request is refused.
        assert started.bcserver.process(good, ("127.0.0.1", 9)) == b"Shutdown request denied"
        stale = b" ".join([b"shutdown", b"1.000", *good.split()[2:]])
        assert started.bcserver.process(stale, ("127.0.0.1", 9)) == b"Shutdown request denied"


def test_udp_shutdown_needs_an_identification() -> None:
    with pytest.raises(ValueError, match="identification"):
        NameServerStarter().initialize("127.0.0.1", 0, 0, urifile="", allow_udp_shutdown=True)


class RefuseAll(BCReqValidator):
    def acceptLocationCmd(self) -> bool:
        return False


def test_a_refusing_validator_makes_the_responder_silent() -> None:
    with running_ns(bcguard=RefuseAll()) as started:
        _, bcport = ports(started)
        with config_values(**FAST_BC), pytest.raises(NamingError):
            NameServerLocator().detectNS("127.0.0.1", bcport)


def test_identification_is_required_when_configured() -> None:
    with running_ns(identification="letmein", nobroadcast=True) as started:
        assert started.daemon is not None and started.bcserver is None
        port = started.daemon.port
        with pytest.raises(ConnectionDeniedError):
            NameServerLocator().getNS("127.0.0.1", port)
        ns = NameServerLocator(identification="letmein").getNS("127.0.0.1", port)
        ns.ping()
        ns._release()


# -- PYRONAME ------------------------------------------------------------------------------------


def test_pyroname_proxies_resolve_and_call(starter: NameServerStarter, server_mode: str) -> None:
    port, _ = ports(starter)
    ns = NameServerLocator().getNS("127.0.0.1", port)
    with serving(server_mode) as daemon:
        daemon.useNameServer(ns)
        uri = daemon.connect(Echo(), "echo")
        proxy = core.getProxyForURI(f"PYRONAME://127.0.0.1:{port}/echo")
        assert proxy.URI == uri and proxy.echo(42) == 42
        proxy._release()
        absolute = core.getProxyForURI(f"PYRONAME://127.0.0.1:{port}/:Default.echo")
        assert absolute.echo("x") == "x"
        absolute._release()
        with config_values(PYRO_NS_HOSTNAME="127.0.0.1", PYRO_NS_PORT=port):
            hostless = core.getAttrProxyForURI("PYRONAME://echo")
            assert hostless.echo(1) == 1
            hostless._release()
        with pytest.raises(NamingError, match="name not found"):
            core.getProxyForURI(f"PYRONAME://127.0.0.1:{port}/nothing")
    ns._release()


def test_importing_naming_installs_the_pyroname_resolver() -> None:
    assert core.pyroname_resolver is pyroact.naming.resolvePYRONAME


# -- daemons using the name server -------------------------------------------------------------


def test_daemon_connect_registers_and_disconnect_unregisters(
    starter: NameServerStarter, server_mode: str
) -> None:
    port, _ = ports(starter)
    ns = NameServerLocator().getNS("127.0.0.1", port)
    with serving(server_mode) as daemon:
        daemon.useNameServer(ns)
        uri = daemon.connect(Echo(), "registered")
        assert ns.resolve("registered") == uri
        with pytest.raises(NamingError, match="name already exists"):
            daemon.connect(Echo(), "registered")
        daemon.disconnect(uri.objectID)
        with pytest.raises(NamingError, match="name not found"):
            ns.resolve("registered")
    ns._release()


def test_connect_persistent_reuses_the_id_after_a_server_restart(
    starter: NameServerStarter, server_mode: str
) -> None:
    nsport, _ = ports(starter)
    ns = NameServerLocator().getNS("127.0.0.1", nsport)
    with serving(server_mode) as daemon:
        daemon.useNameServer(ns)
        first = daemon.connectPersistent(Echo(), "stable")
        port = daemon.port
        client = core.getProxyForURI(first)
        assert client.echo(1) == 1
    with serving(server_mode, port=port, norange=1) as daemon:
        daemon.useNameServer(ns)
        second = daemon.connectPersistent(Echo(), "stable")
        assert second == first and ns.resolve("stable") == first
        client.adapter.rebindURI(tries=3, wait=0.1)
        assert client.echo(2) == 2
        client._release()
    ns._release()


def test_lazy_aliases_and_import_direction() -> None:
    from pyroact.nameserver import server

    assert pyroact.naming.NameServer is server.NameServer
    assert pyroact.naming.PersistentNameServer is server.PersistentNameServer
    assert pyroact.naming.NameServerStarter is server.NameServerStarter
    with pytest.raises(AttributeError):
        pyroact.naming.NoSuchThing  # noqa: B018
    code = (
        "import sys, pyroact.naming\n"
        "assert 'pyroact.nameserver' not in sys.modules, 'naming imported the server'\n"
        "pyroact.naming.NameServer\n"
        "assert 'pyroact.nameserver.server' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
