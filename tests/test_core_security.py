"""Identification, validators, frame MACs, hostile input and exposure rules (issue 3)."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest
from helpers import RawClient, segments_bytes, serving, wait_until
from remote_objects import UNPICKLED, Bomb, Echo

from pyroact import _wirespec as spec
from pyroact import constants, serializer
from pyroact.core import Daemon, DynamicProxy, PyroURI
from pyroact.errors import ConnectionClosedError, ConnectionDeniedError, ProtocolError
from pyroact.protocol import DefaultConnValidator
from pyroact.wire import encode_frame


def test_identification_required(daemon: Daemon) -> None:
    daemon.setAllowedIdentifications(["s3cret", "other"])
    uri = daemon.connect(Echo())
    good = DynamicProxy(uri)
    good._setIdentification("s3cret")
    assert good.echo(1) == 1
    assert good.adapter.sm is not None and good.adapter.sm.authenticated
    wrong = DynamicProxy(uri)
    wrong._setIdentification("guess")
    with pytest.raises(ConnectionDeniedError, match="security reasons"):
        wrong.echo(1)
    anonymous = DynamicProxy(uri)
    with pytest.raises(ConnectionDeniedError, match="security reasons"):
        anonymous.echo(1)
    assert good.echo(2) == 2
    good._release()


class DenyAll(DefaultConnValidator):
    def acceptHost(self, daemon: Any, connection: Any) -> tuple[int, int]:
        return 0, constants.DENIED_HOSTBLOCKED


def test_custom_validator_denies_hosts(daemon: Daemon) -> None:
    daemon.setNewConnectionValidator(DenyAll())
    proxy = daemon.connect(Echo()).getProxy()
    with pytest.raises(ConnectionDeniedError, match="host blocked"):
        proxy.echo(1)


def test_frames_carry_a_mac_and_replay_or_tampering_closes_the_connection(
    daemon: Daemon,
) -> None:
    daemon.setAllowedIdentifications(["s3cret"])
    guid = daemon.connect(Echo()).objectID
    bystander = DynamicProxy(PyroURI("127.0.0.1", guid, daemon.port))
    bystander._setIdentification("s3cret")
    assert bystander.echo("before") == "before"

    raw = RawClient(daemon.port, ident="s3cret")
    try:
        _seq, segments = raw.request_segments(guid, "echo", ("first",))
        recorded = segments_bytes(segments)
        raw.channel.send(segments)
        reply = raw.sm.check(raw.channel.recv_frame())
        assert len(reply.mac) == spec.MAC_SIZE
        assert serializer.loads(reply.payload, reply.buffers) == "first"
        raw.send_raw(recorded)  # replay the exact same frame
        assert raw.closed_by_server(timeout=5)
    finally:
        raw.close()

    raw = RawClient(daemon.port, ident="s3cret")
    try:
        _seq, segments = raw.request_segments(guid, "echo", ("tampered",))
        data = bytearray(segments_bytes(segments))
        position = data.find(b"tampered")
        assert position > 0
        data[position] ^= 0x20  # 'tampered' -> 'Tampered'
        raw.send_raw(bytes(data))
        assert raw.closed_by_server(timeout=5)
    finally:
        raw.close()
    assert bystander.echo("after") == "after"
    bystander._release()


def test_a_frame_without_a_mac_on_an_authenticated_connection_is_refused(
    daemon: Daemon,
) -> None:
    daemon.setAllowedIdentifications(["s3cret"])
    guid = daemon.connect(Echo()).objectID
    raw = RawClient(daemon.port, ident="s3cret")
    try:
        payload, buffers, flags = serializer.dumps_call(("no mac",), {})
        frame = encode_frame(
            spec.MSG_REQUEST, seq=0, object_id=guid, method="echo", payload=payload
        )
        raw.send_raw(segments_bytes(frame))
        assert raw.closed_by_server(timeout=5)
    finally:
        raw.close()


def _bomb_payload() -> bytes:
    return pickle.dumps(((Bomb(),), {}), 5)


def test_nothing_is_unpickled_before_the_handshake(daemon: Daemon) -> None:
    daemon.setAllowedIdentifications(["s3cret"])
    guid = daemon.connect(Echo()).objectID
    UNPICKLED.clear()
    bystander = DynamicProxy(PyroURI("127.0.0.1", guid, daemon.port))
    bystander._setIdentification("s3cret")

    # 1. A request instead of CONNECT.
    raw = RawClient(daemon.port, handshake=False)
    try:
        raw.channel.recv_frame()  # the CHALLENGE
        frame = encode_frame(
            spec.MSG_REQUEST, seq=0, object_id=guid, method="echo", payload=_bomb_payload()
        )
        raw.send_raw(segments_bytes(frame))
        assert raw.closed_by_server(timeout=5)
    finally:
        raw.close()

    # 2. A CONNECT whose payload is a pickle.
    raw = RawClient(daemon.port, handshake=False)
    try:
        raw.channel.recv_frame()
        raw.send_raw(segments_bytes(encode_frame(spec.MSG_CONNECT, payload=_bomb_payload())))
        assert raw.closed_by_server(timeout=5)
    finally:
        raw.close()

    # 3. A valid-looking CONNECT without identification, with a request pipelined behind it.
    raw = RawClient(daemon.port, handshake=False)
    try:
        raw.sm.start()
        raw.sm.handle_challenge(raw.channel.recv_frame())
        connect = segments_bytes(raw.sm.build_connect(b"", None))
        request = segments_bytes(
            encode_frame(
                spec.MSG_REQUEST, seq=0, object_id=guid, method="echo", payload=_bomb_payload()
            )
        )
        raw.send_raw(connect + request)
        with pytest.raises(ConnectionDeniedError):
            raw.sm.handle_grant(raw.channel.recv_frame())
        assert raw.closed_by_server(timeout=5)
    finally:
        raw.close()

    assert bystander.echo("still serving") == "still serving"
    assert not UNPICKLED.is_set()
    bystander._release()


def test_a_malformed_frame_only_affects_its_own_connection(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    assert proxy.echo(1) == 1
    raw = RawClient(daemon.port)
    try:
        raw.send_raw(b"GARBAGE!" * 16)
        assert raw.closed_by_server(timeout=5)
    finally:
        raw.close()
    assert proxy.echo(2) == 2
    wait_until(lambda: len(daemon.connections) == 1)
    proxy._release()


def test_a_client_dying_mid_call_does_not_affect_others(daemon: Daemon) -> None:
    obj = Echo()
    guid = daemon.connect(obj).objectID
    raw = RawClient(daemon.port)
    _seq, segments = raw.request_segments(guid, "wait_gate", (10,))
    raw.channel.send(segments)
    wait_until(obj.started.is_set, what="the doomed call started")
    raw.close()
    obj.gate.set()
    wait_until(obj.finished.is_set)
    proxy = DynamicProxy(PyroURI("127.0.0.1", guid, daemon.port))
    assert proxy.echo("alive") == "alive"
    wait_until(lambda: len(daemon.connections) == 1, what="the dead connection dropped")
    proxy._release()


# -- exposure ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    ["_private", "__init__", "__class__", "__reduce__", "_pyroact_target", "__len__"],
)
def test_private_and_undefined_dunder_names_are_refused(daemon: Daemon, method: str) -> None:
    obj = Echo()
    proxy = daemon.connect(obj).getProxy()
    with pytest.raises(AttributeError, match="not remotely accessible|does not define"):
        proxy.adapter.invoke(proxy.objectID, method, (), {})
    assert proxy.echo(1) == 1
    proxy._release()


@pytest.mark.parametrize(
    "method",
    [
        "setGUID",
        "delegateTo",
        "getDaemon",
        "getLocalStorage",
        "getProxy",
        "getAttrProxy",
        "setPyroDaemon",
        "setCodeValidator",
        "GUID",
    ],
)
def test_objbase_management_methods_are_refused(daemon: Daemon, method: str) -> None:
    obj = Echo()
    guid = obj.GUID()
    proxy = daemon.connect(obj).getProxy()
    with pytest.raises(AttributeError, match="management method"):
        getattr(proxy, method)("x") if method.startswith("set") or method == "delegateTo" else (
            getattr(proxy, method)()
        )
    assert obj.GUID() == guid and obj.delegate is None
    assert proxy.echo(1) == 1
    proxy._release()


def test_the_daemon_servant_exposes_only_its_two_methods(daemon: Daemon) -> None:
    remote = PyroURI("127.0.0.1", constants.INTERNAL_DAEMON_GUID, daemon.port).getProxy()
    assert constants.INTERNAL_DAEMON_GUID in remote.getRegistered()
    with pytest.raises(AttributeError):
        remote.setGUID("hijacked")
    with pytest.raises(AttributeError):
        remote.adapter.invoke(constants.INTERNAL_DAEMON_GUID, "_the_daemon", (), {})
    assert daemon._servant.GUID() == constants.INTERNAL_DAEMON_GUID
    remote._release()


@pytest.mark.parametrize("name", ["_x", "_private_state", "objectGUID", "delegate", "__class__"])
def test_attribute_calls_cannot_reach_private_or_management_names(
    daemon: Daemon, name: str
) -> None:
    obj = Echo()
    guid = obj.GUID()
    proxy = daemon.connect(obj).getAttrProxy()
    invoke = proxy.adapter.invoke
    with pytest.raises(AttributeError, match="not remotely accessible"):
        invoke(proxy.objectID, "_r_sa", (name, "hijacked"), {})
    with pytest.raises(AttributeError, match="not remotely accessible"):
        invoke(proxy.objectID, "_r_ga", (name,), {})
    assert obj.GUID() == guid and obj._private_state == "hidden"
    assert not hasattr(obj, "_x")
    proxy._x = 1  # a proxy-local attribute, never sent
    assert not hasattr(obj, "_x")
    assert proxy.value == 0
    proxy._release()


def test_oneway_calls_to_refused_names_are_dropped_quietly(daemon: Daemon) -> None:
    obj = Echo()
    proxy = daemon.connect(obj).getProxy()
    proxy.adapter.invoke(proxy.objectID, "setGUID", ("hijacked",), {}, oneway=True)
    assert proxy.echo(1) == 1
    assert obj.GUID() != "hijacked"
    proxy._release()


def test_concurrent_hostile_clients_do_not_stop_service(server_mode: str) -> None:
    with serving(server_mode) as d:
        proxy = d.connect(Echo()).getProxy()
        errors: list[BaseException] = []

        def hostile() -> None:
            for _ in range(10):
                raw = RawClient(d.port)
                try:
                    raw.send_raw(b"\xff" * 64)
                    raw.closed_by_server(timeout=5)
                except (ConnectionClosedError, ProtocolError, OSError):
                    pass
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    raw.close()

        threads = [threading.Thread(target=hostile) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(30):
            assert proxy.echo(i) == i
        for t in threads:
            t.join(20)
        assert errors == []
        proxy._release()


class FixedTokenValidator(DefaultConnValidator):
    """A client-side validator that proves a passphrase of its own choosing."""

    def createAuthToken(
        self, authid: bytes | None, challenge: bytes, peeraddr: Any, URI: Any, daemon: Any
    ) -> bytes:
        return super().createAuthToken(self.mungeIdent("s3cret"), challenge, peeraddr, URI, daemon)


def test_proxy_side_connection_validator_makes_the_token(daemon: Daemon) -> None:
    daemon.setAllowedIdentifications(["s3cret"])
    proxy = daemon.connect(Echo()).getProxy()
    with pytest.raises(TypeError):
        proxy._setNewConnectionValidator(object())
    proxy._setNewConnectionValidator(FixedTokenValidator())
    with pytest.raises(ConnectionDeniedError, match="no identification key"):
        proxy.echo(1)  # the token alone is not enough: the client must also know the key
    proxy._setIdentification("s3cret")
    assert proxy.echo(2) == 2
    proxy._release()


def test_replacing_the_validator_keeps_the_identifications_set_before() -> None:
    from pyroact.core import getProxyForURI
    from pyroact.errors import ConnectionDeniedError
    from pyroact.protocol import DefaultConnValidator

    # The order that used to open the daemon again: identifications, then a new validator.
    with serving("threaded") as daemon:
        daemon.setAllowedIdentifications(["secret"])
        daemon.setNewConnectionValidator(DefaultConnValidator())
        uri = daemon.connect(Echo())
        anonymous = getProxyForURI(uri)
        with pytest.raises(ConnectionDeniedError):
            anonymous.echo(1)
        known = getProxyForURI(uri)
        known._setIdentification("secret")
        assert known.echo(2) == 2
        known._release()
