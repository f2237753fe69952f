"""Tests of pyroact.transport over loopback sockets: channels, partial writes, failures."""

from __future__ import annotations

import builtins
import contextlib
import select
import socket
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_helpers import binary

from pyroact import _wirespec as spec
from pyroact import errors, transport
from pyroact.transport import Channel, connect, format_address, is_loopback, listen, send_segments
from pyroact.wire import encode_frame

pytestmark = pytest.mark.network

HOST = "127.0.0.1"
MIB = 1 << 20
JOIN_TIMEOUT = 30.0
IO_TIMEOUT = 20.0


class Peer:
    """Run ``target`` in a thread; ``join`` re-raises what it raised."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = target()
            except BaseException as exc:  # re-raised in join
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(JOIN_TIMEOUT)
        assert not self.thread.is_alive(), "peer thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@contextlib.contextmanager
def connected_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client socket (from ``connect``) and the server side accepted from ``listen``."""
    server = listen(HOST, 0)
    try:
        port = server.getsockname()[1]
        client = connect(HOST, port, timeout=IO_TIMEOUT)
        try:
            accepted, _ = server.accept()
            try:
                yield client, accepted
            finally:
                accepted.close()
        finally:
            client.close()
    finally:
        server.close()


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((seed + i * 31) & 0xFF for i in range(256))
    return (block * (size // 256 + 1))[:size]


def wait_readable(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    assert remaining > 0, "deadline passed"
    select.select([sock], [], [], remaining)


# --------------------------------------------------------------------------- channels


def test_small_and_16mib_frames_both_directions() -> None:
    big_request = pattern(16 * MIB, 1)
    big_reply = pattern(16 * MIB, 2)
    with connected_pair() as (client_sock, server_sock):
        client = Channel(client_sock, timeout=IO_TIMEOUT)
        server = Channel(server_sock, timeout=IO_TIMEOUT)

        def serve() -> list[Any]:
            got = [server.recv_frame(), server.recv_frame()]
            server.send(encode_frame(spec.MSG_REPLY, seq=1, payload=b"small reply"))
            server.send(encode_frame(spec.MSG_REPLY, seq=2, payload=b"r", buffers=[big_reply]))
            return [
                (f.seq, f.object_id, f.method, bytes(f.payload), [bytes(b) for b in f.buffers])
                for f in got
            ]

        peer = Peer(serve)
        client.send(encode_frame(spec.MSG_REQUEST, seq=1, object_id="o", method="m", payload=b"hi"))
        client.send(
            encode_frame(
                spec.MSG_REQUEST, seq=2, object_id="o", method="big", buffers=[big_request]
            )
        )
        small = client.recv_frame()
        large = client.recv_frame()
        received = peer.join()
        assert received[0] == (1, "o", "m", b"hi", [])
        assert received[1][:4] == (2, "o", "big", b"")
        assert received[1][4] == [big_request]
        assert (small.seq, bytes(small.payload)) == (1, b"small reply")
        assert large.seq == 2 and len(large.buffers) == 1
        assert large.buffers[0] == big_reply
        assert not client.pending() and not server.pending()
        client.close()
        server.close()


def test_many_frames_in_one_read_are_queued() -> None:
    with connected_pair() as (client_sock, server_sock):
        client = Channel(client_sock, timeout=IO_TIMEOUT)
        server = Channel(server_sock, timeout=IO_TIMEOUT)
        segments: list[Any] = []
        for seq in range(20):
            segments.extend(encode_frame(spec.MSG_ONEWAY, seq=seq, payload=b"x" * seq))
        client.send(segments)
        seqs = []
        deadline = time.monotonic() + IO_TIMEOUT
        while len(seqs) < 20:
            frames = server.receive_available()
            seqs.extend(f.seq for f in frames)
            assert time.monotonic() < deadline
        assert seqs == list(range(20))
        assert not server.pending()
        client.close()
        server.close()


def test_recv_frame_then_receive_available_returns_the_queue() -> None:
    with connected_pair() as (client_sock, server_sock):
        client = Channel(client_sock, timeout=IO_TIMEOUT)
        server = Channel(server_sock, timeout=IO_TIMEOUT)
        both = [*encode_frame(spec.MSG_ONEWAY, seq=1), *encode_frame(spec.MSG_ONEWAY, seq=2)]
        client.send([b"".join(bytes(s) for s in both)])  # one write: one read gets both
        first = server.recv_frame()
        assert first.seq == 1
        if server.pending():  # the usual case on loopback: one read brought both frames
            assert [f.seq for f in server.receive_available()] == [2]
        else:
            assert server.recv_frame().seq == 2
        client.close()
        server.close()


def test_channel_attributes() -> None:
    with connected_pair() as (client_sock, server_sock):
        channel = Channel(client_sock, timeout=3.5, max_message_size=5000)
        assert channel.peer == server_sock.getsockname()
        assert channel.fileno() == client_sock.fileno()
        assert channel.timeout == 3.5 and client_sock.gettimeout() == 3.5
        assert channel.decoder.max_message_size == 5000
        channel.timeout = None
        assert channel.timeout is None and client_sock.gettimeout() is None
        assert not channel.closed
        channel.close()
        channel.close()  # idempotent
        assert channel.closed
        channel.timeout = 1.0  # allowed on a closed channel, and does not touch the socket
        assert channel.timeout == 1.0


def test_channel_enforces_its_size_limit() -> None:
    with connected_pair() as (client_sock, server_sock):
        server = Channel(server_sock, timeout=IO_TIMEOUT, max_message_size=1000)
        client_sock.sendall(b"".join(encode_frame(spec.MSG_REQUEST, payload=b"x" * 1001)))
        with pytest.raises(errors.MessageTooLargeError):
            server.recv_frame()
        server.close()


def test_garbage_from_the_peer_is_a_protocol_error() -> None:
    with connected_pair() as (client_sock, server_sock):
        server = Channel(server_sock, timeout=IO_TIMEOUT)
        client_sock.sendall(b"PYRO" + bytes(40))
        with pytest.raises(errors.ProtocolError, match="invalid header") as info:
            server.recv_frame()
        assert not isinstance(info.value, errors.ConnectionClosedError)
        server.close()


# --------------------------------------------------------------------------- partial writes


class RecordingSocket:
    """Delegates ``sendmsg`` to a real socket and records what each call wrote."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls: list[tuple[int, int, int]] = []  # (segments, bytes offered, bytes written)

    def sendmsg(self, buffers: list[Any]) -> int:
        offered = sum(memoryview(b).nbytes for b in buffers)
        sent = self.sock.sendmsg(buffers)
        self.calls.append((len(buffers), offered, sent))
        return sent


def test_send_segments_resumes_after_partial_writes() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # A timeout puts the socket in non-blocking mode internally, so sendmsg returns after
        # writing what fits in the tiny buffer instead of blocking until all is written.
        sender.settimeout(IO_TIMEOUT)
        receiver.settimeout(IO_TIMEOUT)
        segments: list[Any] = [
            pattern(10, 1),
            b"",
            bytearray(pattern(3000, 2)),
            memoryview(pattern(50_000, 3))[7:40_007],
            array("d", [float(i) for i in range(4000)]),
            pattern(MIB, 4),
            memoryview(array("i", range(1000))),
            b"tail",
        ]
        expected = b"".join(bytes(memoryview(s)) for s in segments)

        def read_all() -> bytes:
            data = bytearray()
            while len(data) < len(expected):
                chunk = receiver.recv(8192)
                if not chunk:
                    break
                data += chunk
            return bytes(data)

        reader = Peer(read_all)
        recorder = RecordingSocket(sender)
        send_segments(recorder, segments)  # type: ignore[arg-type]
        assert reader.join() == expected
    partial = [call for call in recorder.calls if call[2] < call[1]]
    assert partial, "the tiny send buffer never produced a partial write"
    assert sum(sent for _, _, sent in recorder.calls) == len(expected)


class TrickleSocket:
    """A fake socket that accepts at most a given number of bytes per ``sendmsg``."""

    def __init__(self, limits: list[int]) -> None:
        self.limits = limits
        self.out = bytearray()
        self.batches: list[int] = []

    def sendmsg(self, buffers: list[Any]) -> int:
        self.batches.append(len(buffers))
        limit = self.limits[(len(self.batches) - 1) % len(self.limits)]
        data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
        taken = data[:limit]
        self.out += taken
        return len(taken)

    def sendall(self, data: Any) -> None:
        # What socket.sendall does in C: write until everything went, however little per call.
        view = memoryview(data).cast("B")
        while view:
            view = view[self.sendmsg([view]) :]


@settings(max_examples=150, deadline=None)
@given(
    segments=st.lists(
        st.one_of(
            binary(max_size=40),
            binary(max_size=40).map(bytearray),
            binary(max_size=40).map(memoryview),
            st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5).map(lambda v: array("i", v)),
        ),
        max_size=12,
    ),
    limits=st.lists(st.integers(1, 60), min_size=1, max_size=6),
)
def test_send_segments_with_arbitrary_partial_writes(
    segments: list[Any], limits: list[int]
) -> None:
    fake = TrickleSocket(limits)
    send_segments(fake, segments)  # type: ignore[arg-type]
    assert bytes(fake.out) == b"".join(bytes(memoryview(s)) for s in segments)


def test_send_segments_batches_at_iov_max() -> None:
    segments = [bytes([i % 256]) * 3 for i in range(2500)]
    fake = TrickleSocket([10**9])
    send_segments(fake, segments)  # type: ignore[arg-type]
    assert bytes(fake.out) == b"".join(segments)
    assert fake.batches == [1024, 1024, 452]
    assert transport._MAX_SEGMENTS == 1024


def test_send_segments_of_nothing() -> None:
    fake = TrickleSocket([5])
    send_segments(fake, [])  # type: ignore[arg-type]
    assert fake.batches == [] and fake.out == b""


# --------------------------------------------------------------------------- failures


def test_recv_timeout() -> None:
    with connected_pair() as (_client_sock, server_sock):
        server = Channel(server_sock, timeout=0.05)
        with pytest.raises(errors.TimeoutError) as info:
            server.recv_frame()
        exc = info.value
        assert isinstance(exc, errors.ConnectionClosedError)
        assert isinstance(exc, builtins.TimeoutError)
        assert isinstance(exc, errors.ProtocolError)
        assert "timeout" in str(exc)
        # The stream position is unknown now: the channel closed itself.
        assert server.closed
        assert server_sock.fileno() == -1
        with pytest.raises(errors.ConnectionClosedError, match="connection lost"):
            server.recv_frame()
        with pytest.raises(errors.ConnectionClosedError, match="connection lost"):
            server.send(encode_frame(spec.MSG_CLOSE))


def test_recv_timeout_mid_frame() -> None:
    with connected_pair() as (client_sock, server_sock):
        server = Channel(server_sock, timeout=0.05)
        client_sock.sendall(bytes(encode_frame(spec.MSG_REQUEST, payload=b"abc")[0])[:10])
        with pytest.raises(errors.TimeoutError):
            server.recv_frame()
        assert server.closed


def test_eof_is_connection_lost() -> None:
    with connected_pair() as (client_sock, server_sock):
        server = Channel(server_sock, timeout=IO_TIMEOUT)
        client = Channel(client_sock, timeout=IO_TIMEOUT)
        client.send(encode_frame(spec.MSG_ONEWAY, seq=4))
        client.close()
        assert server.recv_frame().seq == 4  # what was sent before the close still arrives
        with pytest.raises(errors.ConnectionClosedError) as info:
            server.recv_frame()
        assert str(info.value) == "connection lost"
        assert not isinstance(info.value, errors.TimeoutError)
        assert isinstance(info.value, ConnectionError)
        assert server.closed


def test_eof_mid_frame_is_connection_lost() -> None:
    with connected_pair() as (client_sock, server_sock):
        server = Channel(server_sock, timeout=IO_TIMEOUT)
        data = b"".join(encode_frame(spec.MSG_REQUEST, payload=b"x" * 100))
        client_sock.sendall(data[:50])
        client_sock.shutdown(socket.SHUT_WR)
        with pytest.raises(errors.ConnectionClosedError, match="^connection lost$"):
            server.recv_frame()


def test_send_to_a_closed_peer_is_connection_lost() -> None:
    with connected_pair() as (client_sock, server_sock):
        client = Channel(client_sock, timeout=IO_TIMEOUT)
        server_sock.close()
        frame = encode_frame(spec.MSG_REQUEST, buffers=[bytes(MIB)])
        with pytest.raises(errors.ConnectionClosedError, match="connection lost"):
            for _ in range(100):  # the first writes may still fit in the kernel's buffers
                client.send(frame)
        assert client.closed


def _closed_port() -> int:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()  # bound but never listening, and now closed: connections are refused
    return port


def test_connect_to_a_closed_port() -> None:
    port = _closed_port()
    with pytest.raises(errors.ProtocolError, match="connection failed") as info:
        connect(HOST, port, timeout=IO_TIMEOUT)
    assert not isinstance(info.value, errors.ConnectionClosedError)
    assert not isinstance(info.value, errors.TimeoutError)
    assert f"{HOST}:{port}" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_connect_options() -> None:
    server = listen(HOST, 0)
    with server:
        port = server.getsockname()[1]
        with connect(HOST, port, timeout=5.0) as sock:
            assert sock.gettimeout() is None  # blocking after the connect
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            server.accept()[0].close()
        with connect(HOST, port, keepalive=False) as sock:
            assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            server.accept()[0].close()


def test_listen_options() -> None:
    with listen(HOST, 0, backlog=5) as server:
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert not server.get_inheritable()
        assert server.family == socket.AF_INET
        assert server.getsockname()[1] != 0


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_loopback_channel(host: str) -> None:
    with listen(host, 0) as server:
        assert server.family == socket.AF_INET6
        port = server.getsockname()[1]
        with connect(host, port, timeout=IO_TIMEOUT) as client_sock:
            accepted, _ = server.accept()
            client = Channel(client_sock, timeout=IO_TIMEOUT)
            peer = Channel(accepted, timeout=IO_TIMEOUT)
            client.send(encode_frame(spec.MSG_REQUEST, seq=6, payload=b"v6"))
            frame = peer.recv_frame()
            assert (frame.seq, bytes(frame.payload)) == (6, b"v6")
            assert peer.peer[0] == "::1"
            peer.close()
            client.close()


# --------------------------------------------------------------------------- peer_closed


def test_peer_closed() -> None:
    with connected_pair() as (client_sock, server_sock):
        client = Channel(client_sock, timeout=2.5)
        assert client.peer_closed() is False  # live and idle
        assert client_sock.gettimeout() == 2.5  # the timeout is restored
        server_sock.close()
        deadline = time.monotonic() + IO_TIMEOUT
        while not client.peer_closed():
            wait_readable(client_sock, deadline)
        assert client.peer_closed() is True
        assert client_sock.gettimeout() == 2.5
        client.close()
        assert client.peer_closed() is True


def test_peer_closed_is_false_while_data_is_waiting() -> None:
    with connected_pair() as (client_sock, server_sock):
        client = Channel(client_sock, timeout=IO_TIMEOUT)
        server_sock.sendall(b"".join(encode_frame(spec.MSG_CLOSE, seq=3)))
        wait_readable(client_sock, time.monotonic() + IO_TIMEOUT)
        assert client.peer_closed() is False
        assert client.recv_frame().seq == 3  # the peeked byte was not consumed
        client.close()


def test_peer_closed_without_timeout_keeps_the_socket_blocking() -> None:
    with connected_pair() as (client_sock, _server_sock):
        client = Channel(client_sock)
        assert client.peer_closed() is False
        assert client_sock.gettimeout() is None
        assert client_sock.getblocking()
        client.close()


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("127.255.255.254", True),
        ("localhost", True),
        ("localhost.localdomain", True),
        ("ip6-localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("192.168.1.127", False),
        ("128.0.0.1", False),
        ("1.127.0.0", False),
        ("::", False),
        ("::2", False),
        ("[::]", False),
        ("fe80::1", False),
        ("example.com", False),
        ("notlocalhost", False),
        ("", False),
        pytest.param(
            "127.example.com",
            False,
        ),
        pytest.param(
            "0:0:0:0:0:0:0:1",
            True,
        ),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 80, "127.0.0.1:80"),
        ("localhost", 0, "localhost:0"),
        ("example.com", 65535, "example.com:65535"),
        ("::1", 9090, "[::1]:9090"),
        ("2001:db8::1", 7766, "[2001:db8::1]:7766"),
        ("fe80::1%eth0", 1, "[fe80::1%eth0]:1"),
        ("::", 5, "[::]:5"),
        pytest.param(
            "[::1]",
            80,
            "[::1]:80",
        ),
    ],
)
def test_format_address(host: str, port: int, expected: str) -> None:
    assert format_address(host, port) == expected
