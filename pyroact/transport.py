"""The socket edge: the only module that does socket I/O for calls (layer 4).

How it works
------------
A :class:`Channel` owns one connected socket and one :class:`~pyroact.wire.FrameDecoder`.
Sending hands the engine's segment list to ``socket.sendmsg`` (scatter/gather, so a large
buffer is written from where it lies); a partial write resumes from a view of what is left.
Receiving lets the socket write straight into the decoder's memory through ``recv_into``;
a large frame is received directly into the buffer its payload will be read from.

Socket failures become pyroact errors here, so the layers above never see ``OSError``:
a connect that fails is ``ProtocolError('connection failed')``, a connection that breaks is
``ConnectionClosedError('connection lost')``, and an expired timeout is ``TimeoutError``
(a ``ConnectionClosedError``), after which the channel is closed because the stream position
is no longer known.
"""

from __future__ import annotations

import builtins
import collections
import functools
import ipaddress
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _wirespec as spec
from .errors import ConnectionClosedError, ProtocolError, TimeoutError
from .wire import Frame, FrameDecoder

__all__ = [
    "Channel",
    "ServerChannel",
    "TLSChannel",
    "TLSServerChannel",
    "client_tls_context",
    "connect",
    "format_address",
    "is_loopback",
    "listen",
    "nonblocking_step",
    "send_available",
    "send_segments",
    "send_waiting",
    "server_tls_context",
]

# sendmsg takes at most IOV_MAX (1024 on Linux) segments per call.
_MAX_SEGMENTS = 1024
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` names a loopback address (127.0.0.0/8, ::1 or localhost).

    Args:
        host: a host name or IP literal.

    Returns:
        True for loopback addresses.
    """
    host = host.strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_address(host: str, port: int) -> str:
    """Format ``host:port``, bracketing IPv6 literals.

    Args:
        host: host name or IP literal.
        port: TCP port.

    Returns:
        ``host:port`` or ``[v6]:port``.
    """
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tune(sock: socket.socket, keepalive: bool) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def connect(
    host: str, port: int, *, timeout: float | None = None, keepalive: bool = True
) -> socket.socket:
    """Open a TCP connection.

    Args:
        host: host name or IP literal (IPv6 literals may be bracketed).
        port: TCP port.
        timeout: connect timeout in seconds, None for none.
        keepalive: set ``SO_KEEPALIVE``.

    Returns:
        The connected socket, in blocking mode.

    Raises:
        TimeoutError: the connect timed out.
        ProtocolError: the connection failed (``'connection failed'``).
    """
    try:
        sock = socket.create_connection((host.strip("[]"), port), timeout=timeout)
    except builtins.TimeoutError as exc:
        raise TimeoutError(
            f"connection timeout connecting to {format_address(host, port)}"
        ) from exc
    except OSError as exc:
        raise ProtocolError(f"connection failed: {format_address(host, port)}: {exc}") from exc
    sock.settimeout(None)
    _tune(sock, keepalive)
    return sock


def listen(host: str, port: int, *, backlog: int = 200) -> socket.socket:
    """Open a listening TCP socket (``SO_REUSEADDR``, close-on-exec).

    Args:
        host: the address to bind; an IPv6 literal selects IPv6.
        port: the port; 0 lets the OS pick a free one.
        backlog: the ``listen()`` backlog.

    Returns:
        The listening socket.

    Raises:
        OSError: the address cannot be bound.
    """
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bare, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def send_segments(sock: socket.socket, segments: Sequence[Any]) -> None:
    """Write every segment to the socket, resuming after partial writes.

    Args:
        sock: a connected socket.
        segments: bytes-like segments, as returned by ``encode_frame``.

    Raises:
        OSError: the socket failed (the :class:`Channel` turns this into a pyroact error).
    """
    if len(segments) == 1:
        sock.sendall(segments[0])  # the common small frame: partial writes handled in C
        return
    pending = list(segments)
    while pending:
        pending = _advance(pending, sock.sendmsg(pending[:_MAX_SEGMENTS]))


Step = Callable[[list[Any]], list[Any]]


def send_available(step: Step, pending: list[Any]) -> list[Any]:
    """Write what the socket takes now: ``step`` (one non-blocking write) until it would block.

    Args:
        step: writes once without blocking and returns what is left, or raises
            BlockingIOError when the socket takes nothing.
        pending: the segments to write.

    Returns:
        What is left (empty when everything went out).

    Raises:
        OSError: the socket failed.
    """
    try:
        while pending:
            pending = step(pending)
    except (BlockingIOError, InterruptedError):
        pass
    return pending


def send_waiting(step: Step, fileno: int, pending: list[Any], timeout: float | None) -> None:
    """Write ``pending`` whole with ``step``, waiting for writability up to ``timeout`` in all.

    Works whatever the socket's blocking mode, and never changes it (a descriptor shared with
    another process keeps its flags).

    Args:
        step: as for :func:`send_available`.
        fileno: the socket's descriptor (polled for writability).
        pending: the segments to write.
        timeout: seconds, or None to wait as long as it takes.

    Raises:
        TimeoutError: the builtin one: the peer did not take the data in time.
        OSError: the socket failed.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pending = send_available(step, pending)
        if not pending:
            return
        poller = select.poll()
        poller.register(fileno, select.POLLOUT)
        wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        if not poller.poll(wait_ms) and deadline is not None:
            raise builtins.TimeoutError


def nonblocking_step(sock: socket.socket) -> Step:
    """The :data:`Step` of a plain socket: one ``sendmsg`` with ``MSG_DONTWAIT``."""
    return functools.partial(_sendmsg_now, sock)


def _sendmsg_now(sock: socket.socket, pending: list[Any]) -> list[Any]:
    # One non-blocking write; what is left. BlockingIOError when the socket takes nothing.
    return _advance(pending, sock.sendmsg(pending[:_MAX_SEGMENTS], [], socket.MSG_DONTWAIT))


def _advance(pending: list[Any], sent: int) -> list[Any]:
    # Drop the segments written whole, then trim the first one that was written in part.
    index = 0
    while index < len(pending):
        size = memoryview(pending[index]).nbytes
        if sent < size:
            break
        sent -= size
        index += 1
    del pending[:index]
    if pending and sent:
        pending[0] = memoryview(pending[0]).cast("B")[sent:]
    return pending


class Channel:
    """A connected socket and its frame decoder.

    Args:
        sock: a connected socket (blocking); the channel owns it.
        max_message_size: the decoder's size limit.
        timeout: I/O timeout in seconds for every send and receive; None for none.

    Attributes:
        peer: the remote address as returned by ``getpeername()``.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_message_size: int = spec.DEFAULT_MAX_MESSAGE_SIZE,
        timeout: float | None = None,
    ) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(max_message_size=max_message_size)
        self._frames: collections.deque[Frame] = collections.deque()
        self._timeout = timeout
        self.closed = False
        try:
            self.peer: Any = sock.getpeername()
        except OSError:
            self.peer = None
        self._apply_timeout()

    @property
    def timeout(self) -> float | None:
        """The I/O timeout in seconds, or None."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = value
        if not self.closed:
            self._apply_timeout()

    def _apply_timeout(self) -> None:
        self.sock.settimeout(self._timeout)

    def _receive_into(self, target: memoryview) -> int:
        return self.sock.recv_into(target)

    def fileno(self) -> int:
        """Return the socket's file descriptor (for selectors)."""
        return self.sock.fileno()

    def set_max_message_size(self, size: int) -> None:
        """Raise (or lower) the decoder's size limit, e.g. once the handshake is done.

        Args:
            size: the new limit in bytes.

        Raises:
            ProtocolError: the peer already sent bytes the old limit applied to.
        """
        if self.decoder.buffered or self._frames:
            raise ProtocolError("invalid header: data arrived before the handshake completed")
        self.decoder = FrameDecoder(max_message_size=size)

    def raise_max_message_size(self, size: int) -> None:
        """Raise the size limit for every frame whose head is read from now on.

        Unlike :meth:`set_max_message_size` it keeps what is buffered: a connection that is
        granted while the peer's first request is still arriving takes that request, and the
        larger frames after it, under the granted limit.

        Args:
            size: the new limit in bytes (at least the current one).
        """
        if size > self.decoder.max_message_size:
            self.decoder.max_message_size = size

    def recv_frame_exactly(self) -> Frame:
        """Receive one frame without reading any byte past it.

        The client reads the server's verdict this way when its first request went out
        early: the reply may already follow the verdict, and must not be parsed under the
        handshake's size limit, which stays until the verdict has been checked.

        Returns:
            The frame.

        Raises:
            ConnectionClosedError: the peer closed the connection or it broke.
            TimeoutError: nothing arrived within the timeout; the channel is closed.
            ProtocolError: the peer sent a malformed stream.
        """
        if self._frames or self.decoder.buffered:
            return self.recv_frame()
        head = self._read_exactly(spec.HEADER_SIZE)
        self._frames.extend(self.decoder.feed(head))
        fields = spec.HEADER_STRUCT.unpack_from(head)
        _magic, _version, _type, oid_len, _flags, meth_len, _seq, plen, nbuf, mac_len = fields
        table = self._read_exactly(nbuf * spec.BUFLEN_SIZE)
        self._frames.extend(self.decoder.feed(table))
        buffers = sum(
            spec.BUFLEN_STRUCT.unpack_from(table, i * spec.BUFLEN_SIZE)[0] for i in range(nbuf)
        )
        rest = oid_len + meth_len + plen + buffers + mac_len
        while not self._frames and rest:
            # The decoder checked the head against the limit before anything of the body.
            chunk = self._read_exactly(min(rest, spec.RECV_BUFFER_SIZE))
            rest -= len(chunk)
            self._frames.extend(self.decoder.feed(chunk))
        return self._frames.popleft() if self._frames else self.recv_frame()

    def _read_exactly(self, count: int) -> bytes:
        data = bytearray(count)
        view = memoryview(data)
        got = 0
        while got < count:
            got += self._receive(view[got:])
        return bytes(data)

    def _receive(self, target: memoryview) -> int:
        # One read into ``target``: how many bytes (0 only when nothing was there yet), with
        # socket failures and EOF turned into pyroact errors (the channel is then closed).
        if self.closed:
            raise ConnectionClosedError("connection lost: channel is closed")
        try:
            count = self._receive_into(target)
        except (BlockingIOError, InterruptedError):
            return 0
        except builtins.TimeoutError:
            self.close()
            raise TimeoutError("connection timeout receiving") from None
        except OSError as exc:
            self.close()
            raise ConnectionClosedError(f"connection lost: {exc}") from None
        if count == 0:
            self.close()
            raise ConnectionClosedError("connection lost")
        return count

    def send(self, segments: Sequence[Any]) -> None:
        """Send one encoded frame.

        Args:
            segments: the segments from ``encode_frame`` (plus a MAC segment).

        Raises:
            ConnectionClosedError: the channel is closed or the connection broke.
            TimeoutError: the send timed out; the channel is closed.
        """
        if self.closed:
            raise ConnectionClosedError("connection lost: channel is closed")
        try:
            send_segments(self.sock, segments)
        except builtins.TimeoutError:
            self.close()
            raise TimeoutError("connection timeout sending") from None
        except OSError as exc:
            self.close()
            raise ConnectionClosedError(f"connection lost: {exc}") from None

    def pending(self) -> bool:
        """Tell whether decoded frames are waiting to be taken with :meth:`recv_frame`."""
        return bool(self._frames)

    def receive_available(self) -> list[Frame]:
        """Do one ``recv_into`` and return the frames completed (for selector loops).

        Returns:
            The frames completed by this read, possibly none.

        Raises:
            ConnectionClosedError: the peer closed the connection or it broke.
            TimeoutError: the read timed out; the channel is closed.
            ProtocolError: the peer sent a malformed stream.
        """
        if self._frames:
            frames = list(self._frames)
            self._frames.clear()
            return frames
        return self._read_once()

    def recv_frame(self) -> Frame:
        """Block until one whole frame has arrived and return it.

        Returns:
            The next frame.

        Raises:
            ConnectionClosedError: the peer closed the connection or it broke.
            TimeoutError: no frame arrived within the timeout; the channel is closed.
            ProtocolError: the peer sent a malformed stream.
        """
        while not self._frames:
            self._frames.extend(self._read_once())
        return self._frames.popleft()

    def _read_once(self) -> list[Frame]:
        count = self._receive(self.decoder.get_buffer())
        return self.decoder.buffer_updated(count) if count else []

    def peer_closed(self) -> bool:
        """Tell, without blocking, whether the peer has closed its end (EOF waiting).

        Used before reusing an idle connection: a request sent on it would be lost.

        Returns:
            True when the connection is closed or at EOF.
        """
        if self.closed:
            return True
        try:
            self.sock.setblocking(False)
            try:
                data = self.sock.recv(1, socket.MSG_PEEK)
            finally:
                self.sock.settimeout(self._timeout)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        return data == b""

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class ServerChannel(Channel):
    """A server's connection: reads never block, sends block at most ``timeout`` seconds.

    The server's I/O thread reads a connection only when the selector said it is readable,
    but a descriptor can be closed and reused between the two; a read that would block then
    returns nothing instead of hanging the thread that serves every connection. The socket
    itself stays blocking with no timeout, so that other threads' sends are unaffected, and
    sends wait for writability themselves.
    """

    def _apply_timeout(self) -> None:
        # The timeout bounds sends only (see send); the socket itself never times out.
        self.sock.settimeout(None)

    def _receive_into(self, target: memoryview) -> int:
        return self.sock.recv_into(target, 0, socket.MSG_DONTWAIT)

    def send(self, segments: Sequence[Any]) -> None:
        """Send one frame, waiting for writability up to the timeout.

        Raises:
            ConnectionClosedError: the channel is closed or the connection broke.
            TimeoutError: the peer did not take the data in time; the channel is closed.
        """
        if self.closed:
            raise ConnectionClosedError("connection lost: channel is closed")
        try:
            send_waiting(
                self._send_step, self.sock.fileno(), self._prepare(segments), self._timeout
            )
        except builtins.TimeoutError:
            self.close()
            raise TimeoutError("connection timeout sending") from None
        except OSError as exc:
            self.close()
            raise ConnectionClosedError(f"connection lost: {exc}") from None

    def send_partial(self, segments: Sequence[Any]) -> list[Any]:
        """Send what the socket takes now, without waiting.

        Args:
            segments: the encoded frame.

        Returns:
            What is left to send (empty when the frame went out whole).

        Raises:
            ConnectionClosedError: the channel is closed or the connection broke.
        """
        if self.closed:
            raise ConnectionClosedError("connection lost: channel is closed")
        try:
            return send_available(self._send_step, self._prepare(segments))
        except OSError as exc:
            self.close()
            raise ConnectionClosedError(f"connection lost: {exc}") from None

    def _prepare(self, segments: Sequence[Any]) -> list[Any]:
        return list(segments)

    def _send_step(self, pending: list[Any]) -> list[Any]:
        return _sendmsg_now(self.sock, pending)


# -- TLS (PYROSSL) ---------------------------------------------------------------------------


def _tls_file(config: Any, item: str) -> str:
    # A configured certificate file that is missing or unreadable is an error naming the file.
    name = getattr(config, item)
    path = os.path.join(os.path.expanduser(str(config.PYROSSL_CERTDIR)), str(name))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ProtocolError(
            f"TLS misconfigured: {item} file {path!r} is missing or unreadable "
            "(see PYROSSL_CERTDIR, PYROSSL_CA_CERT, PYROSSL_CERT, PYROSSL_KEY)"
        )
    return path


def _load_own_cert(context: ssl.SSLContext, config: Any) -> None:
    cert = _tls_file(config, "PYROSSL_CERT")
    key = _tls_file(config, "PYROSSL_KEY") if config.PYROSSL_KEY else None
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ProtocolError(
            f"TLS misconfigured: cannot load certificate {cert!r}"
            + (f" with key {key!r}" if key else "")
            + f": {exc}"
        ) from exc


def _load_ca(context: ssl.SSLContext, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ProtocolError(
            f"TLS misconfigured: cannot load CA certificate {path!r}: {exc}"
        ) from exc


def server_tls_context(config: Any) -> ssl.SSLContext:
    """Build the server's TLS context from the ``PYROSSL_*`` configuration items.

    The server certificate (``PYROSSL_CERT``, with ``PYROSSL_KEY`` if the key is separate) is
    required. With ``PYROSSL_REQUIRE_CLIENT_CERT`` clients must present a certificate signed by
    ``PYROSSL_CA_CERT``; without it a certificate is verified if one is presented and the CA
    file exists.

    Args:
        config: the configuration in force.

    Returns:
        A TLS 1.2+ server context.

    Raises:
        ProtocolError: a certificate file is missing, unreadable or invalid (named).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_own_cert(context, config)
    if config.PYROSSL_REQUIRE_CLIENT_CERT:
        _load_ca(context, _tls_file(config, "PYROSSL_CA_CERT"))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        try:
            ca = _tls_file(config, "PYROSSL_CA_CERT")
        except ProtocolError:
            context.verify_mode = ssl.CERT_NONE
        else:
            _load_ca(context, ca)
            context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_tls_context(config: Any) -> ssl.SSLContext:
    """Build a client's TLS context from the ``PYROSSL_*`` configuration items.

    The server is always verified against ``PYROSSL_CA_CERT``; its host name (or IP address)
    is checked when ``PYROSSL_POSTCONNCHECK`` is on. The client presents ``PYROSSL_CERT``
    unless that item is set empty.

    Args:
        config: the configuration in force.

    Returns:
        A TLS 1.2+ client context.

    Raises:
        ProtocolError: a certificate file is missing, unreadable or invalid (named).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = bool(config.PYROSSL_POSTCONNCHECK)
    context.verify_mode = ssl.CERT_REQUIRED
    _load_ca(context, _tls_file(config, "PYROSSL_CA_CERT"))
    if config.PYROSSL_CERT:
        _load_own_cert(context, config)
    return context


def _join(segments: Sequence[Any]) -> Any:
    if len(segments) == 1:
        return segments[0]
    return b"".join(segments)


class _TLSReads:
    # Decrypted bytes can wait inside the SSL object, where no selector sees them: every read
    # goes on while the SSL object holds more.
    sock: Any
    closed: bool

    def _read_once(self) -> list[Frame]:
        frames: list[Frame] = super()._read_once()  # type: ignore[misc]
        while not self.closed and self.sock.pending():
            frames.extend(super()._read_once())  # type: ignore[misc]
        return frames


class TLSChannel(_TLSReads, Channel):
    """A client's TLS connection: a blocking ``SSLSocket`` (no scatter/gather, no flags)."""

    sock: ssl.SSLSocket

    def send(self, segments: Sequence[Any]) -> None:
        """Send one encoded frame (joined into one TLS write).

        Raises:
            ConnectionClosedError: the channel is closed or the connection broke.
            TimeoutError: the send timed out; the channel is closed.
        """
        if self.closed:
            raise ConnectionClosedError("connection lost: channel is closed")
        try:
            self.sock.sendall(_join(segments))
        except builtins.TimeoutError:
            self.close()
            raise TimeoutError("connection timeout sending") from None
        except OSError as exc:
            self.close()
            raise ConnectionClosedError(f"connection lost: {exc}") from None

    def peer_closed(self) -> bool:
        """Tell, without blocking, whether the peer has closed its end.

        Returns:
            True when the connection is closed or at EOF.
        """
        if self.closed:
            return True
        if self.sock.pending():
            return False
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        if not poller.poll(0):
            return False
        try:
            self.sock.setblocking(False)
            try:
                count = self.sock.recv_into(self.decoder.get_buffer())
            finally:
                self.sock.settimeout(self._timeout)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return False  # a TLS record without data (a session ticket)
        except OSError:
            return True
        if count == 0:
            return True
        self._frames.extend(self.decoder.buffer_updated(count))
        return False


class TLSServerChannel(_TLSReads, ServerChannel):
    """A server's TLS connection: a non-blocking ``SSLSocket``.

    The SSL object is used by the I/O thread (reads) and by call threads (sends); a lock
    serialises those calls, which never block (a send waits for writability outside it).
    The TLS handshake is driven by :meth:`handshake` when the connection becomes readable.
    """

    sock: ssl.SSLSocket

    def __init__(self, sock: ssl.SSLSocket, **kwargs: Any) -> None:
        self._ssl_lock = threading.Lock()
        super().__init__(sock, **kwargs)

    def _apply_timeout(self) -> None:
        self.sock.setblocking(False)

    def _receive_into(self, target: memoryview) -> int:
        with self._ssl_lock:
            try:
                return self.sock.recv_into(target)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise BlockingIOError from None

    def handshake(self) -> bool:
        """Advance the TLS handshake without blocking.

        Returns:
            True once the handshake is complete.

        Raises:
            ProtocolError: the handshake failed (the channel is closed).
        """
        try:
            with self._ssl_lock:
                self.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.close()
            raise ProtocolError(f"TLS handshake failed: {exc}") from None
        return True

    def peercert(self) -> dict[str, Any] | None:
        """The client's verified certificate (``getpeercert()``), or None."""
        try:
            return self.sock.getpeercert()
        except (ValueError, OSError):
            return None

    def _prepare(self, segments: Sequence[Any]) -> list[Any]:
        # SSLSocket has no sendmsg: a frame goes out as one buffer.
        return [memoryview(_join(segments)).cast("B")]

    def _send_step(self, pending: list[Any]) -> list[Any]:
        data = pending[0]
        with self._ssl_lock:
            try:
                sent = self.sock.send(data)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise BlockingIOError from None
        rest = data[sent:]
        return [rest] if rest else []
