"""A keyless connection's first request goes out before GRANTED: one round trip less per connect.

The client side is checked against a hand-driven fake server that watches what arrives before
it grants; the server side (a request that is still half on its way when the server grants)
against a real daemon.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import serving
from remote_objects import Echo

from pyroact import _connection as connection_sm
from pyroact import _wirespec as spec
from pyroact import constants, serializer
from pyroact.core import Daemon, DynamicProxy, PyroURI
from pyroact.errors import (
    ConnectionClosedError,
    ConnectionDeniedError,
    ProtocolError,
    WorkerDiedError,
)
from pyroact.errors import TimeoutError as PyroTimeoutError
from pyroact.protocol import DefaultConnValidator
from pyroact.transport import Channel
from pyroact.wire import encode_frame

pytestmark = pytest.mark.timeout(30)

QUIET = 0.3  # how long "nothing arrives" is watched for


class FakeServer:
    """Accepts one connection and runs ``script(channel, sm)`` on it in a thread."""

    def __init__(self, script: Callable[[Channel, connection_sm.Connection], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.notes: dict[str, Any] = {}
        self._script = script
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        channel = Channel(sock, max_message_size=connection_sm.MAX_HANDSHAKE_SIZE, timeout=5)
        try:
            self._script(channel, connection_sm.Connection(connection_sm.SERVER))
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            channel.close()

    def join(self) -> None:
        self._thread.join(10)
        self.listener.close()
        assert not self._thread.is_alive()
        if self.errors:
            raise self.errors[0]

    def uri(self) -> PyroURI:
        return PyroURI("127.0.0.1", "fake-object", self.port)


def challenge(channel: Channel, sm: connection_sm.Connection, *, ident: bool = False) -> None:
    channel.send(
        sm.build_challenge(secrets.token_bytes(connection_sm.NONCE_SIZE), ident_required=ident)
    )
    sm.handle_connect(channel.recv_frame())


def answer_then_again(server: FakeServer) -> None:
    """Call ``answer()`` (42) then ``again()`` (43) through ``server`` and wait for its end."""
    proxy = DynamicProxy(server.uri())
    try:
        assert proxy.answer() == 42
        assert proxy.again() == 43
    finally:
        proxy._release()
        server.join()


def nothing_arrives(channel: Channel) -> bool:
    channel.sock.settimeout(QUIET)
    try:
        channel.sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    finally:
        channel.sock.settimeout(5)
    return False


def reply(channel: Channel, sm: connection_sm.Connection, frame: Any, value: Any) -> None:
    payload, buffers, flags = serializer.dumps(value)
    channel.send(
        sm.build(spec.MSG_REPLY, seq=frame.seq, payload=payload, buffers=buffers, flags=flags)
    )


def flat(segments: Any) -> bytes:
    return b"".join(bytes(memoryview(s)) for s in segments)


@contextmanager
def challenged(port: int) -> Iterator[tuple[socket.socket, Channel, connection_sm.Connection]]:
    """A hand-driven client that has read the server's CHALLENGE (and not answered yet)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    channel = Channel(sock, max_message_size=connection_sm.MAX_HANDSHAKE_SIZE, timeout=5)
    sm = connection_sm.Connection(connection_sm.CLIENT)
    try:
        sm.start()
        sm.handle_challenge(channel.recv_frame())
        yield sock, channel, sm
    finally:
        channel.close()


def test_the_first_request_arrives_before_the_grant() -> None:
    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        challenge(channel, sm)
        early = channel.recv_frame()  # not granted yet
        server.notes["early"] = (early.msg_type, early.method)
        channel.send(sm.build_granted(None))
        reply(channel, sm, sm.check(early), 42)
        later = sm.check(channel.recv_frame())
        server.notes["later"] = later.method
        reply(channel, sm, later, 43)

    server = FakeServer(script)
    answer_then_again(server)
    assert server.notes == {"early": (spec.MSG_REQUEST, "answer"), "later": "again"}


def test_without_the_identification_a_server_requires_nothing_is_sent_early() -> None:
    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        challenge(channel, sm, ident=True)
        server.notes["quiet"] = nothing_arrives(channel)
        channel.send(sm.build_denied(constants.DENIED_SECURITY, "security reasons"))

    server = FakeServer(script)
    proxy = DynamicProxy(server.uri())
    try:
        with pytest.raises(ConnectionDeniedError, match="security reasons"):
            proxy.answer()
    finally:
        proxy._release()
        server.join()
    assert server.notes == {"quiet": True}


def test_an_identified_client_sends_its_first_request_early_with_its_mac() -> None:
    key = connection_sm.munge_ident("secret")

    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        channel.send(
            sm.build_challenge(secrets.token_bytes(connection_sm.NONCE_SIZE), ident_required=True)
        )
        token = sm.handle_connect(channel.recv_frame())
        assert token == connection_sm.client_token(key, sm.transcript)
        early = channel.recv_frame()  # before the grant, already signed
        channel.send(sm.build_granted(key))
        reply(channel, sm, sm.check(early), early.method)  # check() verifies the MAC

    server = FakeServer(script)
    proxy = DynamicProxy(server.uri())
    proxy._setIdentification("secret")
    try:
        assert proxy.answer() == "answer"
    finally:
        proxy._release()
        server.join()


def test_a_server_that_cannot_prove_the_key_gets_no_answer_accepted() -> None:
    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        challenge(channel, sm, ident=True)
        early = channel.recv_frame()
        server.notes["early"] = early.method
        # An impostor: it does not know the key, so its proof is made up.
        channel.send(encode_frame(spec.MSG_GRANTED, payload=secrets.token_bytes(32)))
        channel.send(
            encode_frame(spec.MSG_REPLY, seq=early.seq, payload=serializer.dumps("forged")[0])
        )

    server = FakeServer(script)
    proxy = DynamicProxy(server.uri())
    proxy._setIdentification("secret")
    try:
        with pytest.raises(ConnectionDeniedError, match="did not prove"):
            proxy.answer()
    finally:
        proxy._release()
        server.join()
    assert server.notes == {"early": "answer"}


def test_an_early_request_with_a_wrong_identification_never_runs(mode_daemon: Daemon) -> None:
    obj = Counting()
    uri = mode_daemon.connect(obj)
    mode_daemon.setAllowedIdentifications(["right"])
    wrong = DynamicProxy(uri)
    wrong._setIdentification("wrong")
    right = DynamicProxy(uri)
    right._setIdentification("right")
    try:
        with pytest.raises(ConnectionDeniedError, match="security reasons"):
            wrong.bump()
        assert obj.calls == 0
        assert right.bump() == 1
    finally:
        wrong._release()
        right._release()


def test_a_first_request_too_large_for_the_handshake_limit_waits_for_the_grant() -> None:
    big = b"x" * (2 * connection_sm.MAX_HANDSHAKE_SIZE)

    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        challenge(channel, sm)
        server.notes["quiet"] = nothing_arrives(channel)
        channel.send(sm.build_granted(None))
        channel.set_max_message_size(spec.DEFAULT_MAX_MESSAGE_SIZE)
        frame = sm.check(channel.recv_frame())
        args, _ = serializer.loads_call(frame.payload, frame.buffers)
        reply(channel, sm, frame, len(args[0]))

    server = FakeServer(script)
    proxy = DynamicProxy(server.uri())
    try:
        assert proxy.size(big) == len(big)
    finally:
        proxy._release()
        server.join()
    assert server.notes == {"quiet": True}


class Counting(Echo):
    def __init__(self) -> None:
        Echo.__init__(self)
        self.calls = 0

    def bump(self) -> int:
        self.calls += 1
        return self.calls


class DenyEveryone(DefaultConnValidator):
    def acceptIdentification(
        self, daemon: Any, connection: Any, token: Any, challenge: Any
    ) -> tuple[int, int]:
        return 0, constants.DENIED_SECURITY


@pytest.fixture(params=("single", "threaded"))
def mode_daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    with serving(request.param) as d:
        yield d


def test_an_early_request_of_a_denied_connection_never_runs(mode_daemon: Daemon) -> None:
    obj = Counting()
    uri = mode_daemon.connect(obj)
    mode_daemon.setNewConnectionValidator(DenyEveryone())
    proxy = DynamicProxy(uri)
    try:
        with pytest.raises(ConnectionDeniedError, match="security reasons"):
            proxy.bump()
    finally:
        proxy._release()
    mode_daemon.setNewConnectionValidator(DefaultConnValidator())
    assert obj.calls == 0
    proxy = DynamicProxy(uri)
    try:
        assert proxy.bump() == 1
    finally:
        proxy._release()


def test_the_server_takes_a_first_request_that_is_half_here_when_it_grants(
    mode_daemon: Daemon,
) -> None:
    guid = mode_daemon.connect(Counting()).objectID
    with challenged(mode_daemon.port) as (sock, channel, sm):
        connect = flat(sm.build_connect(b"", None))
        payload, buffers, flags = serializer.dumps_call((), {})
        request = b"".join(
            bytes(memoryview(s))
            for s in sm.build(
                spec.MSG_REQUEST,
                seq=sm.next_seq(),
                object_id=guid,
                method="bump",
                payload=payload,
                flags=flags,
            )
        )
        sock.sendall(connect + request[:10])  # the server grants with 10 bytes buffered
        sm.handle_grant(channel.recv_frame())
        channel.set_max_message_size(spec.DEFAULT_MAX_MESSAGE_SIZE)
        sock.sendall(request[10:])
        frame = sm.check(channel.recv_frame())
        assert serializer.loads(frame.payload, frame.buffers) == 1
        # The granted size limit applies from then on: a 1 MiB request is taken.
        big = bytes(1 << 20)
        payload, buffers, flags = serializer.dumps_call((big,), {})
        channel.send(
            sm.build(
                spec.MSG_REQUEST,
                seq=sm.next_seq(),
                object_id=guid,
                method="echo",
                payload=payload,
                buffers=buffers,
                flags=flags,
            )
        )
        frame = sm.check(channel.recv_frame())
        assert serializer.loads(frame.payload, frame.buffers) == big


def test_a_request_larger_than_the_handshake_limit_before_the_grant_is_refused(
    mode_daemon: Daemon,
) -> None:
    # The limit before the grant still holds for what a client sends early.
    guid = mode_daemon.connect(Counting()).objectID
    with challenged(mode_daemon.port) as (sock, channel, sm):
        payload, buffers, flags = serializer.dumps_call((b"y" * 10_000,), {})
        early = [
            *sm.build_connect(b"", None),
            *sm.build(
                spec.MSG_REQUEST,
                seq=sm.next_seq(),
                object_id=guid,
                method="echo",
                payload=payload,
                flags=flags,
            ),
        ]
        sock.sendall(flat(early))
        received = []
        with pytest.raises(ConnectionClosedError) as closed:
            for _ in range(10):  # GRANTED may come first; then the connection is closed
                received.append(channel.recv_frame().msg_type)
        assert not isinstance(closed.value, PyroTimeoutError), "the server kept the connection"
        assert spec.MSG_REPLY not in received


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_the_granted_limit_applies_even_if_the_early_request_was_half_here(
    mode_daemon: Daemon, split: bool
) -> None:
    # The early oneway request is cut by a segment boundary when the server grants; its rest
    # arrives together with a larger request, which the granted limit must let through.
    guid = mode_daemon.connect(Counting()).objectID
    with challenged(mode_daemon.port) as (sock, channel, sm):
        connect = flat(sm.build_connect(b"", None))
        payload, buffers, flags = serializer.dumps_call((b"y" * 3000,), {})
        early = flat(
            sm.build(spec.MSG_ONEWAY, seq=sm.next_seq(), object_id=guid, method="echo",
                     payload=payload, buffers=buffers, flags=flags)
        )  # fmt: skip
        assert len(early) < connection_sm.MAX_HANDSHAKE_SIZE
        cut = len(early) // 2 if split else len(early)
        sock.sendall(connect + early[:cut])
        sm.handle_grant(channel.recv_frame())  # the server has granted
        channel.set_max_message_size(spec.DEFAULT_MAX_MESSAGE_SIZE)
        big = b"z" * 200_000
        payload, buffers, flags = serializer.dumps_call((big,), {})
        seq = sm.next_seq()
        request = flat(
            sm.build(spec.MSG_REQUEST, seq=seq, object_id=guid, method="echo",
                     payload=payload, buffers=buffers, flags=flags)
        )  # fmt: skip
        sock.sendall(early[cut:] + request)
        frame = sm.check(channel.recv_frame())
        assert frame.seq == seq and serializer.loads(frame.payload, frame.buffers) == big


def test_the_client_takes_nothing_large_from_a_server_before_its_proof() -> None:
    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        challenge(channel, sm, ident=True)
        channel.recv_frame()  # the early request
        # Not a grant a client should read: a frame far over the handshake's limit.
        channel.send(encode_frame(spec.MSG_GRANTED, payload=b"A" * 300_000))

    server = FakeServer(script)
    proxy = DynamicProxy(server.uri())
    proxy._setIdentification("secret")
    try:
        with pytest.raises(ProtocolError, match="exceeds"):
            proxy.answer()
    finally:
        proxy._release()
        server.join()


def test_a_reply_right_behind_the_grant_is_read_under_the_granted_limit() -> None:
    # GRANTED and a large reply in one write: the verdict is read alone, so the reply is not
    # parsed under the handshake's limit.
    big = b"r" * 100_000

    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        challenge(channel, sm)
        early = channel.recv_frame()
        payload, buffers, flags = serializer.dumps(big)
        granted = [*sm.build_granted(None)]
        reply_segments = sm.build(spec.MSG_REPLY, seq=early.seq, payload=payload,
                                  buffers=buffers, flags=flags)  # fmt: skip
        channel.sock.sendall(flat([*granted, *reply_segments]))

    server = FakeServer(script)
    proxy = DynamicProxy(server.uri())
    try:
        assert proxy.fetch() == big
    finally:
        proxy._release()
        server.join()


def test_a_late_error_for_an_answered_request_is_dropped() -> None:
    # A process-mode worker that dies right after answering a call directly can leave the
    # daemon failing that call once more: the client drops that error and gets its reply.
    def script(channel: Channel, sm: connection_sm.Connection) -> None:
        challenge(channel, sm)
        first = channel.recv_frame()
        channel.send(sm.build_granted(None))
        reply(channel, sm, sm.check(first), 42)
        later = sm.check(channel.recv_frame())
        stale = serializer.dumps_exception(WorkerDiedError("worker 0 died"), [])
        channel.send(encode_frame(spec.MSG_EXCEPTION, seq=first.seq, payload=stale))
        reply(channel, sm, later, 43)

    answer_then_again(FakeServer(script))
