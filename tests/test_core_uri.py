"""PyroURI parsing and PYROLOC resolution (issue 3)."""

from __future__ import annotations

import pickle

import pytest
from remote_objects import Echo

import pyroact
from pyroact.core import Daemon, DynamicProxy, PyroURI, processStringURI
from pyroact.errors import NamingError, URIError


def test_pyro_uri_parts_and_round_trip() -> None:
    uri = PyroURI("PYRO://127.0.0.1:9000/abc123")
    assert (uri.protocol, uri.address, uri.port, uri.objectID) == (
        "PYRO",
        "127.0.0.1",
        9000,
        "abc123",
    )
    assert str(uri) == "PYRO://127.0.0.1:9000/abc123"
    assert repr(uri) == "<PyroURI 'PYRO://127.0.0.1:9000/abc123'>"
    assert PyroURI(str(uri)) == uri
    assert hash(PyroURI(str(uri))) == hash(uri)
    assert pickle.loads(pickle.dumps(uri)) == uri
    assert uri.clone() == uri and uri.clone() is not uri
    assert processStringURI(str(uri)) == uri


def test_uri_from_parts() -> None:
    uri = PyroURI("127.0.0.1", "objid", 4567)
    assert str(uri) == "PYRO://127.0.0.1:4567/objid"
    assert PyroURI("127.0.0.1", "objid").port == pyroact.config.PYRO_PORT
    loc = PyroURI("127.0.0.1", "name", 4567, prtcol="PYROLOC")
    assert str(loc) == "PYROLOC://127.0.0.1:4567/name"


def test_ipv6_literal() -> None:
    uri = PyroURI("PYRO://[::1]:9000/x")
    assert uri.address == "::1"
    assert uri.port == 9000
    assert uri.objectID == "x"
    assert str(uri) == "PYRO://[::1]:9000/x"
    assert PyroURI(str(uri)) == uri
    assert str(PyroURI("::1", "y", 9001)) == "PYRO://[::1]:9001/y"


@pytest.mark.parametrize(
    ("text", "address", "port", "name"),
    [
        ("PYRONAME://:test.simple", "", 0, ":test.simple"),
        ("PYRONAME://jokegen", "", 0, "jokegen"),
        ("PYRONAME://127.0.0.1:9090/dup", "127.0.0.1", 9090, "dup"),
        ("PYRONAME://127.0.0.1:9090/:test.simple", "127.0.0.1", 9090, ":test.simple"),
        ("PYRONAME://nshost/:Default.x", "nshost", 0, ":Default.x"),
    ],
)
def test_pyroname_forms_parse(text: str, address: str, port: int, name: str) -> None:
    uri = PyroURI(text)
    assert (uri.protocol, uri.address, uri.port, uri.objectID) == ("PYRONAME", address, port, name)
    assert str(uri) == text


def test_pyroloc_forms_parse() -> None:
    uri = PyroURI("PYROLOC://localhost/:test.autoreconnect")
    assert uri.protocol == "PYROLOC"
    assert uri.objectID == ":test.autoreconnect"
    assert uri.port == pyroact.config.PYRO_PORT
    assert PyroURI("PYROLOC://localhost:7766/jokegen").port == 7766


@pytest.mark.parametrize(
    "text",
    [
        "PYRO://",
        "PYRO://127.0.0.1:9000",
        "PYRO://127.0.0.1:9000/",
        "PYRO:///objid",
        "FOO://127.0.0.1:9000/x",
        "PYRO://127.0.0.1:99999/x",
        "PYRO://127.0.0.1:port/x",
        "PYRO://127.0.0.1:9000/has space",
        "PYRO://[::1/x",
        "not a uri",
        "PYRONAME://",
        "PYRONAME://127.0.0.1:9090/",
        "",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(URIError):
        PyroURI(text)


def test_malformed_parts() -> None:
    with pytest.raises(URIError, match="malformed hostname"):
        PyroURI("host/with/slash", "x", 9000)
    with pytest.raises(URIError):
        PyroURI("127.0.0.1")  # no object id
    with pytest.raises(TypeError):
        PyroURI("127.0.0.1", "x", "9000")


def test_unknown_host() -> None:
    with pytest.raises(URIError, match="unknown host"):
        PyroURI("PYRO://no-such-host.invalid:9000/x")
    with pytest.raises(URIError, match="unknown host"):
        PyroURI("no-such-host.invalid", "x", 9000)


def test_pyroloc_is_resolved_through_the_daemon(daemon: Daemon) -> None:
    obj = Echo()
    daemon.connect(obj, "echo-by-name")
    proxy = DynamicProxy(f"PYROLOC://127.0.0.1:{daemon.port}/echo-by-name")
    assert proxy.objectID == "echo-by-name"
    assert proxy.echo(1) == 1
    assert proxy.objectID == obj.GUID()
    assert proxy.URI.protocol == "PYRO"
    assert proxy.URI == PyroURI("127.0.0.1", obj.GUID(), daemon.port)
    assert proxy == obj.getProxy()
    assert proxy.echo(2) == 2
    proxy._release()


def test_pyroloc_unknown_name(daemon: Daemon) -> None:
    proxy = DynamicProxy(f"PYROLOC://127.0.0.1:{daemon.port}/nobody")
    with pytest.raises(NamingError):
        proxy.echo(1)
