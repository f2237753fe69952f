"""Pyro 3's protocol API: validators, connections, the client adapter and TCPServer (layer 6).

How it works
------------
*Client side.* A proxy owns a :class:`PYROAdapter`. On first use the adapter connects, runs
the handshake of :mod:`pyroact._connection` (the validator makes the token), resolves a
``PYROLOC`` name through the daemon's internal object, and then sends one request at a time
and waits for its reply; a lock serialises threads that share the proxy. An idle connection
is checked for EOF before it is reused, so a connection the server closed for idleness is
reopened transparently (the request was never sent, so this is safe).

*Mobile code, client side.* When the server answers a call with the internal "no module"
signal, the adapter reads that module's source here and calls the object's
``remote_supply_code`` (a module whose own imports are missing there too is answered the same
way, recursively), then sends the call again; at most ``MOBILE_CODE_MAX_MODULES`` modules per
call. With ``PYRO_MOBILE_CODE`` on here, a result that needs a module this process lacks is
completed the other way round, through ``remote_retrieve_code``. Oneway calls get no reply,
so they never take part.

*Server side.* :class:`TCPServer` (the base of ``core.Daemon``) owns the listening socket, the
connection validator and the table of :class:`TCPConnection`\\ s. A server mode from
``svr_single`` / ``svr_threads`` runs the I/O loop and calls back into the TCPServer: accept,
readable, closed. The TCPServer runs the handshake on the loop thread, never unpickling
anything, and hands each call frame to :meth:`TCPServer.dispatch_frame`, which ``Daemon``
implements. While a connection's call runs, the connection is paused (its next frames wait),
so calls on one connection run in order, as in Pyro 3.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import hmac
import logging
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pyroact

from . import _connection as connection_sm
from . import _mailbox, constants, serializer
from . import _wirespec as spec
from .errors import (
    ConnectionClosedError,
    ConnectionDeniedError,
    DaemonError,
    NoModuleError,
    ProtocolError,
    PyroError,
    TimeoutError,
    _InternalNoModuleError,
)
from .transport import (
    Channel,
    ServerChannel,
    TLSChannel,
    TLSServerChannel,
    client_tls_context,
    connect,
    format_address,
    is_loopback,
    listen,
    server_tls_context,
)
from .wire import Frame

__all__ = [
    "CONNECTION_FIELDS",
    "DefaultConnValidator",
    "LocalStorage",
    "PYROAdapter",
    "TCPConnection",
    "TCPServer",
    "current_call",
    "getHostname",
    "getIPAddress",
]

log = logging.getLogger("pyroact.system")

# At most this many late errors for earlier requests are dropped while a reply is awaited.
STALE_REPLIES_DROPPED = 2

# How long a client connection may sit idle before it is checked for EOF before reuse.
_IDLE_CHECK_AFTER = 0.05


class LocalStorage:
    """Pyro 3's thread-local storage object: ``caller`` is the current connection.

    Attributes:
        caller: the :class:`TCPConnection` of the current call (also for oneway calls).
    """

    def __init__(self) -> None:
        self.caller: TCPConnection | None = None


class _CallContext(threading.local):
    tls: LocalStorage | None = None
    connection: TCPConnection | None = None


current_call = _CallContext()
"""The storage and connection of the call running in this thread (None outside calls)."""


def getHostname(ip: str | None = None) -> str | None:
    """Return the host name for ``ip`` (or this host), None on failure.

    Args:
        ip: an IP address, or None for this host.

    Returns:
        The host name, or None.
    """
    try:
        return socket.gethostbyaddr(ip)[0] if ip else socket.gethostname()
    except OSError:
        return None


def getIPAddress(host: str | None = None) -> str | None:
    """Return the IP address of ``host`` (or this host), None on failure.

    Args:
        host: a host name, or None for this host.

    Returns:
        The address, or None.
    """
    try:
        return socket.getaddrinfo(host or socket.gethostname(), None)[0][4][0]  # type: ignore[return-value]
    except OSError:
        return None


def _size_of(segments: Sequence[Any]) -> int:
    return sum(memoryview(s).nbytes for s in segments)


def _nothing() -> None:
    pass


class TCPConnection:
    """The server's view of one client connection; it is what ``tls.caller`` is.

    Attributes:
        addr: the client's address ``(host, port)``.
        channel: the socket and its decoder.
        tls: this connection's LocalStorage (threaded mode) or the daemon's shared one.
        peercert: on a PYROSSL daemon, the client's verified certificate as returned by
            ``ssl.SSLSocket.getpeercert()`` (None when the client presented none, and on
            plain connections).
    """

    def __init__(self, channel: Channel, addr: Any) -> None:
        self.addr = addr
        self.channel = channel
        self.fd = channel.fileno()
        self.sm = connection_sm.Connection(connection_sm.SERVER)
        self.tls: LocalStorage | None = None
        self.authenticated_key: bytes | None = None
        self.last_activity = time.monotonic()
        self.handshake_deadline = 0.0
        self.paused = False
        self.backlog: collections.deque[Frame] = collections.deque()
        self.processing = threading.Lock()
        # Process mode: the workers this connection's calls went to.
        self.forwarded_to: set[int] = set()
        # Process mode: the worker its last replicated call went to (it wins ties next time).
        self.last_worker: int | None = None
        self._send_lock = threading.Lock()
        # PYROSSL: True until the TLS handshake is complete (see TCPServer.connection_readable).
        self.tls_handshaking = False
        self.peercert: dict[str, Any] | None = None
        self.socket_shared = False  # a process-mode worker answers on this socket too
        # The ticket of a process-mode call answered on this socket without a notice, until
        # the daemon has seen it answered (see ProcessRouter.settle).
        self.silent_call: Any = None

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return not self.channel.closed

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self.channel.fileno()

    def send(self, segments: Sequence[Any]) -> None:
        """Send one frame; frames from different threads never interleave.

        Args:
            segments: the encoded frame.

        Raises:
            ConnectionClosedError: the connection is gone.
        """
        with self._send_lock:
            self.channel.send(segments)

    def close(self) -> None:
        """Close the socket."""
        self.sm.close()
        if self.socket_shared:
            # A process-mode worker holds a descriptor of this socket: end the connection
            # itself, not just this process's descriptor.
            with contextlib.suppress(OSError):
                self.channel.sock.shutdown(socket.SHUT_RDWR)
        self.channel.close()

    def __repr__(self) -> str:
        return f"<TCPConnection with {self.addr} connected={int(self.connected)}>"


# The attributes pyroact itself keeps on a TCPConnection; anything else a validator stored there
# (``connection.username = ...``) is caller data, forwarded to process-mode workers.
CONNECTION_FIELDS = frozenset(
    {
        "addr",
        "channel",
        "fd",
        "sm",
        "tls",
        "authenticated_key",
        "last_activity",
        "handshake_deadline",
        "paused",
        "backlog",
        "forwarded_to",
        "last_worker",
        "worker_key",
        "silent_call",
        "processing",
        "tls_handshaking",
        "socket_shared",
    }
)


class DefaultConnValidator:
    """Pyro 3's connection validator: connection limit and identification check.

    Override ``acceptHost`` or ``acceptIdentification`` (and call the base method) to add
    rules; store attributes on ``connection`` to make them visible as ``tls.caller.<name>``.
    """

    def __init__(self) -> None:
        self._allowed: list[bytes] | None = None

    def acceptHost(self, daemon: TCPServer, connection: TCPConnection) -> tuple[int, int]:
        """Decide on a new connection before the handshake.

        Args:
            daemon: the daemon.
            connection: the new connection.

        Returns:
            ``(1, 0)`` to go on, or ``(0, DENIED_*)``.
        """
        if len(daemon.connections) > daemon.max_connections:
            return 0, constants.DENIED_SERVERTOOBUSY
        return 1, 0

    def acceptIdentification(
        self, daemon: TCPServer, connection: TCPConnection, token: bytes, challenge: bytes
    ) -> tuple[int, int]:
        """Check the client's token against the allowed identifications.

        Args:
            daemon: the daemon.
            connection: the connection.
            token: the client's token (empty when it has no identification).
            challenge: the handshake transcript the token was computed over.

        Returns:
            ``(1, 0)`` to grant, or ``(0, DENIED_SECURITY)``.
        """
        if self._allowed is None:
            return 1, 0
        for key in self._allowed:
            if token and hmac.compare_digest(token, connection_sm.client_token(key, challenge)):
                connection.authenticated_key = key
                return 1, 0
        return 0, constants.DENIED_SECURITY

    def createAuthToken(
        self, authid: bytes | None, challenge: bytes, peeraddr: Any, URI: Any, daemon: Any
    ) -> bytes:
        """Client side: the token proving knowledge of ``authid`` (b"" without one).

        Args:
            authid: the munged identification, or None.
            challenge: the handshake transcript.
            peeraddr: the server's address.
            URI: the URI being connected to.
            daemon: None on the client.

        Returns:
            The 32-byte token, or b"".
        """
        return connection_sm.client_token(authid, challenge) if authid else b""

    def createAuthChallenge(self, tcpserver: TCPServer, conn: TCPConnection) -> bytes:
        """A fresh random challenge (``secrets``).

        Args:
            tcpserver: the daemon.
            conn: the connection.

        Returns:
            ``NONCE_SIZE`` random bytes.
        """
        return secrets.token_bytes(connection_sm.NONCE_SIZE)

    def mungeIdent(self, ident: str | bytes) -> bytes:
        """Turn a passphrase into the key that is stored (SHA-256; never the passphrase).

        Args:
            ident: the passphrase.

        Returns:
            The key.
        """
        return connection_sm.munge_ident(ident)

    def setAllowedIdentifications(self, ids: Sequence[str | bytes] | None) -> None:
        """Set the passphrases clients must present; None opens the server.

        Args:
            ids: passphrases, or None.
        """
        self._allowed = None if ids is None else [self.mungeIdent(i) for i in ids]

    def getAllowedIdentifications(self) -> list[bytes] | None:
        """The munged allowed identifications, or None when the server is open."""
        return None if self._allowed is None else list(self._allowed)


class _URILike(Protocol):
    protocol: str
    address: str
    port: int
    objectID: str


class PYROAdapter:
    """The client side of one connection, owned by a proxy.

    Attributes:
        URI: the URI the adapter is bound to (rewritten to ``PYRO://`` after a ``PYROLOC``
            lookup).
    """

    def __init__(self) -> None:
        self.URI: _URILike | None = None
        self.channel: Channel | None = None
        self.sm: connection_sm.Connection | None = None
        self.timeout: float | None = None
        self.ident: bytes | None = None
        self.validator: DefaultConnValidator = DefaultConnValidator()
        self.max_message_size = spec.DEFAULT_MAX_MESSAGE_SIZE
        self.oob_threshold = serializer.DEFAULT_OOB_THRESHOLD
        self.lock = threading.RLock()
        self._last_used = 0.0
        self._grant_pending = False  # the first request went out before GRANTED arrived

    # -- settings ------------------------------------------------------------------------------

    def setTimeout(self, timeout: float | None) -> None:
        """Set the connect and I/O timeout in seconds (None: none).

        Args:
            timeout: seconds or None.
        """
        self.timeout = timeout
        if self.channel is not None:
            self.channel.timeout = timeout

    def setIdentification(self, ident: str | bytes | None, munge: bool = True) -> None:
        """Set the passphrase this client presents.

        Args:
            ident: the passphrase (falsy: none).
            munge: False when ``ident`` is already munged.
        """
        if not ident:
            self.ident = None
        else:
            self.ident = self.validator.mungeIdent(ident) if munge else bytes(ident)  # type: ignore[arg-type]

    def setNewConnectionValidator(self, validator: DefaultConnValidator) -> None:
        """Use a custom validator (its ``createAuthToken`` makes the token).

        Args:
            validator: a DefaultConnValidator instance.

        Raises:
            TypeError: ``validator`` is not a DefaultConnValidator.
        """
        if not isinstance(validator, DefaultConnValidator):
            raise TypeError("validator must be a DefaultConnValidator instance")
        self.validator = validator

    # -- connecting ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self.channel is not None and not self.channel.closed

    def bindToURI(self, URI: _URILike) -> None:
        """Connect to ``URI`` and run the handshake (and a PYROLOC lookup).

        Args:
            URI: a PyroURI.

        Raises:
            ProtocolError: ``'connection failed'``, or the handshake failed.
            ConnectionDeniedError: the server refused the connection.
            TimeoutError: the connect or handshake timed out.
            NamingError: a PYROLOC name is not known to the daemon.
        """
        with self.lock:
            self.release()
            self.URI = URI
            if URI.protocol not in ("PYRO", "PYROLOC", "PYROSSL", "PYROLOCSSL"):
                raise ProtocolError(f"unsupported protocol {URI.protocol!r} in URI")
            sock = connect(URI.address, URI.port, timeout=self.timeout)
            channel: Channel
            if URI.protocol in ("PYROSSL", "PYROLOCSSL"):
                channel = TLSChannel(
                    self._tls_handshake(sock, URI),
                    max_message_size=connection_sm.MAX_HANDSHAKE_SIZE,
                    timeout=self.timeout,
                )
            else:
                channel = Channel(
                    sock, max_message_size=connection_sm.MAX_HANDSHAKE_SIZE, timeout=self.timeout
                )
            sm = connection_sm.Connection(connection_sm.CLIENT)
            try:
                sm.start()
                sm.handle_challenge(channel.recv_frame())
                token = self.validator.createAuthToken(
                    self.ident, sm.transcript, channel.peer, URI, None
                )
                channel.send(sm.build_connect(token, self.ident if token else None))
                # The first request goes out now and the grant (with the server's proof) is
                # read before its reply (see _connection). The server sends nothing more before
                # it reads CONNECT, so the decoder is empty.
                self._grant_pending = sm.may_send_early
                if not self._grant_pending:
                    sm.handle_grant(channel.recv_frame())
                    channel.set_max_message_size(self.max_message_size)
            except ConnectionClosedError as exc:
                channel.close()
                if isinstance(exc, TimeoutError):
                    raise
                raise ProtocolError(
                    f"connection failed: handshake with {URI.address}: {exc}"
                ) from exc
            except BaseException:
                channel.close()
                raise
            self.channel, self.sm = channel, sm
            self._last_used = time.monotonic()
            if URI.protocol in ("PYROLOC", "PYROLOCSSL"):
                guid = self.invoke(
                    constants.INTERNAL_DAEMON_GUID, "ResolvePYROLOC", (URI.objectID,), {}
                )
                URI.protocol = "PYRO" if URI.protocol == "PYROLOC" else "PYROSSL"
                URI.objectID = guid

    def _tls_handshake(self, sock: socket.socket, URI: _URILike) -> ssl.SSLSocket:
        # The client side of PYROSSL: verify the server, never fall back to plain TCP.
        config = pyroact.config
        where = format_address(URI.address, URI.port)
        try:
            context = client_tls_context(config)
        except ProtocolError:
            sock.close()
            raise
        sock.settimeout(self.timeout if self.timeout is not None else config.PYRO_HANDSHAKE_TIMEOUT)
        try:
            tls_sock = context.wrap_socket(
                sock, server_hostname=URI.address if context.check_hostname else None
            )
        except builtins.TimeoutError as exc:
            sock.close()
            raise TimeoutError(f"connection timeout: TLS handshake with {where}") from exc
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise ProtocolError(
                f"connection failed: TLS certificate of {where} rejected: {exc.verify_message}"
                + (
                    " (PYROSSL_POSTCONNCHECK=0 skips the host name check)"
                    if "hostname" in str(exc.verify_message).lower() or "IP address" in str(exc)
                    else ""
                )
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise ProtocolError(
                f"connection failed: TLS handshake with {where} failed ({exc}); "
                "is it a PYROSSL daemon, and does it accept this client's certificate?"
            ) from exc
        tls_sock.settimeout(None)
        return tls_sock

    def rebindURI(self, tries: int = sys.maxsize, wait: float = 1) -> None:
        """Reconnect to the same URI after a failure (Pyro 3's auto-rebind).

        Args:
            tries: how many connection attempts.
            wait: seconds between attempts.

        Raises:
            TimeoutError: every attempt failed (``'connection lost'``).
        """
        if self.URI is None:
            raise ProtocolError("cannot rebind: the adapter was never bound")
        last: Exception | None = None
        for attempt in range(max(tries, 0)):
            try:
                self.bindToURI(self.URI)
                return
            except ProtocolError as exc:
                last = exc
                if attempt + 1 < tries:
                    time.sleep(wait)
        raise TimeoutError(f"connection lost: rebind failed after {tries} tries ({last})")

    def release(self) -> None:
        """Close the connection; the next call reconnects (Pyro 3's passivation)."""
        with self.lock:
            if self.channel is not None:
                if self.sm is not None and self.sm.state == connection_sm.READY:
                    with contextlib.suppress(PyroError, RuntimeError):
                        self.channel.send(self.sm.build(spec.MSG_CLOSE))
                self.channel.close()
            self.channel = None
            self.sm = None
            self._grant_pending = False

    # -- calling -------------------------------------------------------------------------------

    def _ensure_connected(self) -> tuple[Channel, connection_sm.Connection]:
        channel, sm = self.channel, self.sm
        lost = False
        if channel is not None and sm is not None and not channel.closed:
            if time.monotonic() - self._last_used < _IDLE_CHECK_AFTER:
                return channel, sm
            if not channel.peer_closed():
                return channel, sm
            lost = True
        if self.URI is None:
            raise ProtocolError("proxy is not bound to a URI")
        try:
            self.bindToURI(self.URI)
        except ProtocolError as exc:
            if lost and not isinstance(exc, ConnectionClosedError | ConnectionDeniedError):
                # The connection existed and the server went away: Pyro 3 reports that as
                # ConnectionClosedError; the next call then gets 'connection failed'.
                raise ConnectionClosedError(
                    f"connection lost: the server closed the connection ({exc})"
                ) from exc
            raise
        assert self.channel is not None and self.sm is not None
        return self.channel, self.sm

    def invoke(
        self,
        object_id: str,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        oneway: bool = False,
    ) -> Any:
        """Call ``method`` on the remote object and return its result.

        Args:
            object_id: the target object's id.
            method: the method name.
            args: positional arguments.
            kwargs: keyword arguments.
            oneway: send without waiting for (or getting) a reply.

        Returns:
            The result (None for oneway calls).

        Raises:
            ConnectionClosedError: the connection broke (the call may or may not have run).
            TimeoutError: no reply within the timeout.
            ProtocolError: the connection failed or the server broke the protocol.
            NoModuleError: the arguments need a module the server lacks (and mobile code
                could not supply it), or the result needs one this process lacks.
            PyroError: mobile code was denied, or needed more than
                ``MOBILE_CODE_MAX_MODULES`` modules.
            BaseException: whatever the remote method raised, with ``remote_stacktrace``.
        """
        payload, buffers, flags = serializer.dumps_call(
            args, kwargs, oob_threshold=self.oob_threshold
        )
        supplied = 0
        while True:
            try:
                return self._call(object_id, method, payload, buffers, flags, oneway)
            except _InternalNoModuleError as exc:
                # Mobile code: the server lacks a module the arguments need. The call did not
                # run there, so sending it again once the module is there is safe.
                supplied = self._supply(object_id, str(exc.args[0]), supplied)

    def supply_module(self, object_id: str, name: str) -> int:
        """Upload module ``name`` (and what its module-level imports need) to an object's server.

        Calls do this by themselves when the server asks; doing it beforehand lets a oneway
        call, which gets no reply to ask with, use the module.

        Args:
            object_id: the object whose ``remote_supply_code`` (and code validator) is used.
            name: the dotted module name.

        Returns:
            How many modules were sent.

        Raises:
            NoModuleError: the module (or one it needs) has no source here.
            PyroError: the server denied the code, or more than ``MOBILE_CODE_MAX_MODULES``
                modules were needed.
        """
        return self._supply(object_id, name, 0)

    def _supply(self, object_id: str, name: str, supplied: int) -> int:
        limit = constants.MOBILE_CODE_MAX_MODULES
        if supplied >= limit:
            raise PyroError(
                f"mobile code: the server still lacks module {name!r} after {supplied} "
                f"modules were supplied for one call, the limit (MOBILE_CODE_MAX_MODULES={limit})"
            )
        try:
            source = serializer.module_source(name)
        except PyroError as exc:
            raise NoModuleError(
                f"No module named {name!r} on the server, and it cannot be supplied from "
                f"here: {exc}",
                name=name,
            ) from None
        local = getattr(self.channel, "sock", None)
        address = local.getsockname() if local is not None else None
        payload, buffers, flags = serializer.dumps_call((name, source, address), {})
        supplied += 1
        while True:
            try:
                self._call(object_id, "remote_supply_code", payload, buffers, flags, False)
                return supplied
            except _InternalNoModuleError as exc:
                # The module's own imports need another module the server lacks.
                supplied = self._supply(object_id, str(exc.args[0]), supplied)

    def _call(
        self,
        object_id: str,
        method: str,
        payload: Any,
        buffers: Sequence[Any],
        flags: int,
        oneway: bool,
    ) -> Any:
        with self.lock:
            channel, sm = self._ensure_connected()
            seq = sm.next_seq()
            msg_type = spec.MSG_ONEWAY if oneway else spec.MSG_REQUEST
            try:
                segments = sm.build(
                    msg_type,
                    seq=seq,
                    object_id=object_id,
                    method=method,
                    payload=payload,
                    buffers=buffers,
                    flags=flags,
                )
                if self._grant_pending and _size_of(segments) > connection_sm.MAX_HANDSHAKE_SIZE:
                    self._take_grant(channel, sm)  # the server takes no larger frame before it
                channel.send(segments)
                if self._grant_pending:
                    self._take_grant(channel, sm)
                if oneway:
                    self._last_used = time.monotonic()
                    return None
                frame = self._receive_reply(channel, sm, seq)
            except BaseException:
                # Interrupted mid-call (an error, a timeout, KeyboardInterrupt): the stream
                # position is unknown, so the next call must start on a fresh connection.
                channel.close()
                raise
            self._last_used = time.monotonic()
        if frame.seq != seq:
            self.release()
            raise ProtocolError(f"reply for sequence id {frame.seq}, expected {seq}")
        return self._result_of(frame, object_id)

    @staticmethod
    def _receive_reply(channel: Channel, sm: connection_sm.Connection, seq: int) -> Frame:
        # The reply to request ``seq``. A late error for an earlier request of this connection
        # is dropped: a process-mode worker that dies right after answering a call directly
        # can leave the daemon failing that call once more. Anything else out of sequence is
        # returned, for the caller to refuse.
        for _ in range(STALE_REPLIES_DROPPED + 1):
            if _mailbox.in_pool_thread():
                # Inside a server call this is a nested call: let the pool replace this
                # thread while it waits.
                with _mailbox.blocking():
                    frame = sm.check(channel.recv_frame())
            else:
                frame = sm.check(channel.recv_frame())
            if frame.seq == seq or frame.msg_type != spec.MSG_EXCEPTION:
                return frame
            log.info("dropped a late error for request %d (waiting for %d)", frame.seq, seq)
        return frame

    def _take_grant(self, channel: Channel, sm: connection_sm.Connection) -> None:
        # The verdict on a connection whose first request went out before it (a denial
        # raises ConnectionDeniedError here, and the caller closes the channel).
        self._grant_pending = False
        # Read alone, under the handshake's size limit: the reply may follow it at once, and
        # nothing larger is taken from a server before it proved it knows the key.
        sm.handle_grant(channel.recv_frame_exactly())
        channel.raise_max_message_size(self.max_message_size)

    def _result_of(self, frame: Frame, object_id: str) -> Any:
        payload = frame.payload
        if frame.flags & spec.FLAG_COMPRESSED:
            payload = serializer.decompress(payload, max_size=self.max_message_size)
        if frame.msg_type == spec.MSG_REPLY:
            return self._load_result(object_id, payload, frame.buffers)
        if frame.msg_type == spec.MSG_EXCEPTION:
            exc = serializer.loads_exception(payload)
            if isinstance(exc, ProtocolError) and str(exc).startswith("unknown object ID"):
                # The server closes the connection after this error, as Pyro 3 does.
                self.release()
            raise exc
        if frame.msg_type == spec.MSG_CLOSE:
            self.release()
            raise ConnectionClosedError("connection lost: the server closed the connection")
        raise ProtocolError(f"unexpected {spec.MSG_NAMES[frame.msg_type]} frame as reply")

    def _load_result(self, object_id: str, payload: Any, buffers: Sequence[Any]) -> Any:
        retrieved: int | None = None
        while True:
            try:
                return serializer.loads(payload, buffers)
            except NoModuleError as exc:
                if not exc.name or not pyroact.config.PYRO_MOBILE_CODE:
                    raise
                if retrieved is None:
                    # The calls that fetch the code reuse this connection, whose receive
                    # buffer the reply may still point into.
                    payload = bytes(payload)
                    buffers = [bytearray(memoryview(b)) for b in buffers]
                    retrieved = 0
                retrieved = self._retrieve(object_id, exc.name, retrieved)

    def _retrieve(self, object_id: str, name: str, retrieved: int) -> int:
        limit = constants.MOBILE_CODE_MAX_MODULES
        if retrieved >= limit:
            raise PyroError(
                f"mobile code: module {name!r} is still missing after {retrieved} modules were "
                f"retrieved for one result, the limit (MOBILE_CODE_MAX_MODULES={limit})"
            )
        source = self.invoke(object_id, "remote_retrieve_code", (name,), {})
        if not isinstance(source, str):
            raise PyroError(
                f"mobile code: the server sent {type(source).__name__} for module {name!r}, "
                "not Python source text"
            )
        retrieved += 1
        uri = self.URI
        origin = f"server {uri.address}:{uri.port}" if uri is not None else "a server"
        while True:
            try:
                serializer.install_module(name, source, origin=origin)
                return retrieved
            except NoModuleError as exc:
                # The module's own imports need another module this process lacks.
                retrieved = self._retrieve(object_id, str(exc.name), retrieved)

    def __del__(self) -> None:
        # Pyro 3's proxies release their connection when they are collected; without this a
        # dropped proxy leaks its socket (and a ResourceWarning). No lock and no CLOSE frame
        # here: a finalizer may run in any thread, at any moment.
        channel = getattr(self, "channel", None)
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "ident": self.ident, "URI": self.URI}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.timeout = state["timeout"]
        self.ident = state["ident"]
        self.URI = state["URI"]


class ServerMode(Protocol):
    """What a server mode (``svr_single``, ``svr_threads``) gives the TCPServer."""

    shared_tls: bool

    def submit(self, task: Callable[[], None]) -> None:
        """Run a call's task (inline, or on the mode's pool)."""

    def register(self, conn: TCPConnection) -> None:
        """Start watching a newly accepted connection."""

    def forget(self, conn: TCPConnection) -> None:
        """Stop watching a connection before its socket is closed."""

    def resume(self, conn: TCPConnection) -> None:
        """A call ended: go on with the connection's frames and watch it again."""

    def handle_requests(
        self, timeout: float | None, others: Sequence[Any], callback: Callable[..., Any] | None
    ) -> None:
        """One round of the request loop (Pyro 3's ``handleRequests``)."""

    def server_sockets(self) -> list[Any]:
        """The sockets a foreign event loop should watch."""

    def close(self) -> None:
        """Release the mode's threads and selectors."""


class TCPServer:
    """The listening side of a daemon: socket, validator, connections, server mode.

    Args:
        host: the address to bind.
        port: the port (0: any free port).
        mode: ``"single"`` or ``"threaded"``.
        config: the configuration in force (``pyroact.config`` by default).

    Raises:
        DaemonError: the socket cannot be bound, or a non-loopback bind lacks protection.
    """

    def __init__(self, host: str, port: int, *, mode: str, config: Any, tls: bool = False) -> None:
        self.config = config
        self.tls_context: ssl.SSLContext | None = None
        if tls:
            try:
                self.tls_context = server_tls_context(config)
            except ProtocolError as exc:
                raise DaemonError(f"Couldn't start PYROSSL daemon: {exc}") from exc
        if not is_loopback(host) and not config.PYRO_ALLOW_PUBLIC_BIND and not tls:
            raise DaemonError(
                f"refusing to bind {host!r}, which is not a loopback address, without "
                "protection: use TLS (Daemon(prtcol='PYROSSL')), or set identifications "
                "(daemon.setAllowedIdentifications) and PYRO_ALLOW_PUBLIC_BIND=1 to allow it"
            )
        try:
            self.sock = listen(host, port, backlog=config.PYRO_TCP_LISTEN_BACKLOG)
        except OSError as exc:
            raise DaemonError(
                f"Couldn't start Pyro daemon: cannot bind {format_address(host, port)}: {exc}"
            ) from exc
        self.port: int = self.sock.getsockname()[1]
        self.connections: dict[int, TCPConnection] = {}
        self.max_connections: int = config.PYRO_MAXCONNECTIONS
        self.newConnValidator: DefaultConnValidator = DefaultConnValidator()
        self.timeout: float | None = None
        self.mustShutdown = False
        self.shared_tls = LocalStorage()
        # Exceptions raised in CallbackObjBase calls, re-raised by handleRequests (single mode).
        self.callback_errors: list[BaseException] = []
        self._init_tls: Callable[[LocalStorage], None] | None = None
        self._lock = threading.RLock()
        self.mode = mode
        self.server = self._make_server(mode)

    def _make_server(self, mode: str) -> ServerMode:
        if mode == "single":
            from .svr_single import SingleServer

            return SingleServer(self)
        if mode in ("threaded", "process"):
            # The process mode's parent does its I/O as the threaded mode does.
            from .svr_threads import ThreadedServer

            return ThreadedServer(self, max_threads=self.config.PYRO_THREADPOOL_SIZE)
        raise DaemonError(
            f"unknown server mode {mode!r} (choose 'single', 'threaded' or 'process')"
        )

    @property
    def threaded(self) -> bool:
        """True in the threaded mode."""
        return self.mode != "single"

    # -- Pyro 3 API ----------------------------------------------------------------------------

    def setTimeout(self, timeout: float | None) -> None:
        """Set the server-side I/O timeout; connections idle longer are closed.

        Args:
            timeout: seconds, or None for none.
        """
        self.timeout = timeout

    def setAllowedIdentifications(self, ids: Sequence[str | bytes] | None) -> None:
        """Require one of these passphrases from clients (None: open).

        Args:
            ids: passphrases, or None.
        """
        self.newConnValidator.setAllowedIdentifications(ids)

    def setNewConnectionValidator(self, validator: DefaultConnValidator) -> None:
        """Replace the connection validator (identifications set before are kept).

        Args:
            validator: a DefaultConnValidator (subclass) instance.

        Raises:
            TypeError: ``validator`` is not a DefaultConnValidator.
        """
        if not isinstance(validator, DefaultConnValidator):
            raise TypeError("validator must be a DefaultConnValidator instance")
        # Identifications set earlier stay in force: replacing the validator must not silently
        # open a protected daemon.
        if validator._allowed is None:
            validator._allowed = self.newConnValidator.getAllowedIdentifications()
        self.newConnValidator = validator

    def getNewConnectionValidator(self) -> DefaultConnValidator:
        """The connection validator in use."""
        return self.newConnValidator

    def setInitTLS(self, func: Callable[[LocalStorage], None] | None) -> None:
        """Set the function that initialises each new thread-local storage, once per storage.

        In the single-threaded mode there is one shared storage, initialised now.

        Args:
            func: called as ``func(tls)``.
        """
        self._init_tls = func
        if func is not None and self.server.shared_tls:
            func(self.shared_tls)

    def getLocalStorage(self) -> LocalStorage:
        """The storage of the current call (or the shared one outside calls)."""
        return current_call.tls or self.shared_tls

    def getServerSockets(self) -> list[Any]:
        """Sockets a foreign event loop should watch before calling :meth:`handleRequests`."""
        return self.server.server_sockets()

    def handleRequests(
        self,
        timeout: float | None = None,
        others: Sequence[Any] = (),
        callback: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        """Run one round of the event loop.

        Args:
            timeout: seconds to wait for activity (None: block).
            others: extra sockets or file objects to watch.
            callback: called as ``callback(ready)`` with those of ``others`` that are ready.

        Raises:
            ProtocolError: ``others`` given without ``callback`` ('callback required').
            Exception: in the single-threaded mode, what a ``CallbackObjBase`` call raised (after
                it was also sent back to the caller).
        """
        if others and callback is None:
            raise ProtocolError("callback required")
        self.server.handle_requests(timeout, others, callback)
        if self.callback_errors:
            raise self.callback_errors.pop(0)

    def requestLoop(
        self,
        condition: Callable[[], Any] = lambda: True,
        timeout: float | None = 3,
        others: Sequence[Any] = (),
        callback: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        """Serve until ``condition()`` is false or :meth:`shutdown` was called.

        Args:
            condition: checked before every round.
            timeout: the longest a round waits, so ``condition`` and shutdown are noticed.
            others: extra sockets to watch.
            callback: called with those of ``others`` that are ready.
        """
        while not self.mustShutdown and condition():
            self.handleRequests(timeout, others, callback)

    def shutdown(self, disconnect: bool = False) -> None:
        """Ask the request loop to stop after the current round.

        Args:
            disconnect: also unregister named objects from the name server now.
        """
        self.mustShutdown = True

    def closedown(self) -> None:
        """Close every connection and the listening socket."""
        self.mustShutdown = True
        self.server.close()
        with self._lock:
            conns = list(self.connections.values())
            self.connections.clear()
        for conn in conns:
            conn.close()
        self.sock.close()

    # -- called by the server mode -------------------------------------------------------------

    def accept_connection(self) -> TCPConnection | None:
        """Accept one connection and send the challenge (or refuse it)."""
        try:
            sock, addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        channel: ServerChannel
        if self.tls_context is not None:
            # The TLS handshake runs later, without blocking, as the client's bytes arrive
            # (connection_readable): a client that sends nothing stalls nobody, and is dropped
            # at the handshake deadline.
            sock.setblocking(False)
            try:
                tls_sock = self.tls_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except OSError:
                sock.close()
                return None
            channel = TLSServerChannel(
                tls_sock, max_message_size=connection_sm.MAX_HANDSHAKE_SIZE, timeout=self.timeout
            )
        else:
            channel = ServerChannel(
                sock, max_message_size=connection_sm.MAX_HANDSHAKE_SIZE, timeout=self.timeout
            )
        conn = TCPConnection(channel, addr)
        conn.tls_handshaking = self.tls_context is not None
        # Set before the connection is visible to the I/O thread's expiry check.
        conn.handshake_deadline = time.monotonic() + self.config.PYRO_HANDSHAKE_TIMEOUT
        with self._lock:
            self.connections[id(conn)] = conn
        if conn.tls_handshaking:
            return conn
        return conn if self._greet(conn) else None

    def _greet(self, conn: TCPConnection) -> bool:
        # The validator's host check, then the challenge (or the refusal).
        addr = conn.addr
        try:
            ok, code = self.newConnValidator.acceptHost(self, conn)
            if not ok:
                reason = constants.deniedReasons.get(code, "unspecified reason")
                conn.send(conn.sm.build_denied(code, reason))
                self.drop_connection(conn)
                return False
            nonce = self.newConnValidator.createAuthChallenge(self, conn)
            required = self.newConnValidator.getAllowedIdentifications() is not None
            conn.send(conn.sm.build_challenge(nonce, ident_required=required))
        except Exception as exc:
            # A validator's own bug must cost this connection only, never the server.
            log.warning("connection from %s failed during the handshake: %r", addr, exc)
            self.drop_connection(conn)
            return False
        return True

    def _continue_tls_handshake(self, conn: TCPConnection) -> None:
        channel = conn.channel
        assert isinstance(channel, TLSServerChannel)
        try:
            done = channel.handshake()
        except ProtocolError as exc:
            log.warning("closing connection from %s: %s", conn.addr, exc)
            self.drop_connection(conn)
            return
        if not done:
            return
        conn.tls_handshaking = False
        conn.peercert = channel.peercert()
        conn.last_activity = time.monotonic()
        if self._greet(conn) and channel.sock.pending():
            self.connection_readable(conn)

    def drop_connection(self, conn: TCPConnection) -> None:
        """Forget and close a connection."""
        with self._lock:
            known = self.connections.pop(id(conn), None) is not None
        if known:
            self.server.forget(conn)
        conn.close()

    def connection_readable(self, conn: TCPConnection) -> None:
        """Read from a connection and act on every frame that completes.

        Raises:
        """
        if conn.tls_handshaking:
            self._continue_tls_handshake(conn)
            return
        try:
            frames = conn.channel.receive_available()
        except PyroError as exc:
            if not isinstance(exc, ConnectionClosedError):
                log.warning("closing connection from %s: %s", conn.addr, exc)
            self.drop_connection(conn)
            return
        conn.last_activity = time.monotonic()
        conn.backlog.extend(frames)
        self.process_backlog(conn)

    def process_backlog(self, conn: TCPConnection) -> None:
        """Act on queued frames until the connection pauses for a running call.

        Safe to call from any thread: one thread at a time works on a connection, and a thread
        that finds another at work leaves the frames to it (which re-checks before it stops).
        """
        while conn.backlog and not conn.paused and conn.connected:
            if not conn.processing.acquire(blocking=False):
                return
            try:
                self._process_backlog(conn)
            finally:
                conn.processing.release()
                self.frames_done()

    def frames_done(self) -> None:
        """Called after each batch of a connection's frames (the process mode sends held frames)."""

    def settle(self, conn: TCPConnection) -> bool:
        """Tell whether the connection's next frame may go on (the process mode overrides).

        Called before each frame of a connection with a ``silent_call``; when it returns False
        the connection is paused and resumed once that call is answered.
        """
        conn.silent_call = None
        return True

    def _process_backlog(self, conn: TCPConnection) -> None:
        while conn.backlog and not conn.paused and conn.connected:
            if conn.silent_call is not None and not self.settle(conn):
                return
            frame = conn.backlog.popleft()
            try:
                if conn.sm.state == connection_sm.WAIT_CONNECT:
                    self._finish_handshake(conn, frame)
                    continue
                conn.sm.check(frame)
                if frame.msg_type == spec.MSG_CLOSE:
                    self.drop_connection(conn)
                    return
                if frame.msg_type not in (spec.MSG_REQUEST, spec.MSG_ONEWAY):
                    raise ProtocolError(
                        f"invalid header: a client may not send {spec.MSG_NAMES[frame.msg_type]}"
                    )
                self.dispatch_frame(conn, frame)
            except Exception as exc:
                # Bad frames, and errors in user validators or setInitTLS functions, close this
                # connection and nothing else.
                log.warning("closing connection from %s: %r", conn.addr, exc)
                self.drop_connection(conn)
                return

    def _finish_handshake(self, conn: TCPConnection, frame: Frame) -> None:
        token = conn.sm.handle_connect(frame)
        ok, code = self.newConnValidator.acceptIdentification(self, conn, token, conn.sm.transcript)
        if not ok:
            reason = constants.deniedReasons.get(code, "unspecified reason")
            conn.send(conn.sm.build_denied(code, reason))
            self.drop_connection(conn)
            return
        conn.send(conn.sm.build_granted(conn.authenticated_key))
        # In place: the client's early first request may still be arriving.
        conn.channel.raise_max_message_size(self.config.PYRO_MAX_MESSAGE_SIZE)
        if self.server.shared_tls:
            conn.tls = self.shared_tls
        else:
            conn.tls = LocalStorage()
            if self._init_tls is not None:
                self._init_tls(conn.tls)
        conn.tls.caller = conn

    def pause(self, conn: TCPConnection) -> None:
        """Hold a connection's next frames until :meth:`resume` (a call is running)."""
        conn.paused = True

    def resume(self, conn: TCPConnection) -> None:
        """Let a paused connection go on with its queued frames."""
        conn.paused = False
        conn.last_activity = time.monotonic()
        self.server.resume(conn)

    def expire_connections(self, now: float) -> None:
        """Close connections past the handshake deadline or idle beyond the daemon timeout."""
        with self._lock:
            conns = list(self.connections.values())
        for conn in conns:
            handshaking = conn.tls_handshaking or conn.sm.state == connection_sm.WAIT_CONNECT
            if handshaking and now > conn.handshake_deadline:
                log.info("handshake timeout for %s", conn.addr)
                self.drop_connection(conn)
            elif self.timeout is not None:
                since = self.idle_since(conn)
                if since is not None and now - since > self.timeout:
                    self.drop_connection(conn)

    def idle_since(self, conn: TCPConnection) -> float | None:
        """When the connection's last frame arrived; None while it waits for an answer.

        The idle timeout counts from then (the process mode asks the worker that reads a
        connection itself).
        """
        if conn.paused or conn.silent_call is not None:
            return None
        return conn.last_activity

    def dispatch_frame(self, conn: TCPConnection, frame: Frame) -> None:
        """Handle one call frame (implemented by ``core.Daemon``).

        Raises:
            DaemonError: always, in the base class.
        """
        raise DaemonError("TCPServer.dispatch_frame must be implemented by the daemon")

    def reply(
        self,
        conn: TCPConnection,
        msg_type: int,
        seq: int,
        payload: Any,
        buffers: Sequence[Any],
        flags: int,
    ) -> None:
        """Send a REPLY or EXCEPTION frame; a connection that has gone is dropped quietly."""
        self.reply_then(conn, msg_type, seq, payload, buffers, flags, _nothing)

    def reply_then(
        self,
        conn: TCPConnection,
        msg_type: int,
        seq: int,
        payload: Any,
        buffers: Sequence[Any],
        flags: int,
        then: Callable[[], None],
    ) -> None:
        """Send a reply without ever blocking the calling thread, then run ``then``.

        What the client's socket takes at once is written here; if the client reads slowly,
        the rest is written by a call thread (the connection's send lock is held until the
        frame is complete, so nothing interleaves) and ``then`` runs after it. Process mode
        uses this from the threads that read the worker links, which must never block.

        Args:
            conn: the connection.
            msg_type: ``MSG_REPLY`` or ``MSG_EXCEPTION``.
            seq: the request's sequence id.
            payload: the reply payload.
            buffers: out-of-band buffers.
            flags: ``FLAG_*`` bits.
            then: runs once the frame is sent (or the connection is gone).
        """
        lock = conn._send_lock
        lock.acquire()
        try:
            segments = conn.sm.build(
                msg_type, seq=seq, payload=payload, buffers=buffers, flags=flags
            )
            remaining = conn.channel.send_partial(segments)  # type: ignore[attr-defined]
        except (ConnectionClosedError, RuntimeError):
            lock.release()
            self.drop_connection(conn)
            then()
            return
        if not remaining:
            lock.release()
            then()
            return

        def finish() -> None:
            failed = False
            try:
                conn.channel.send(remaining)
            except ConnectionClosedError:
                failed = True
            finally:
                lock.release()
            if failed:
                self.drop_connection(conn)
            then()

        self.server.submit(finish)

    def reply_error(
        self, conn: TCPConnection, seq: int, exc: BaseException, lines: Sequence[str] = ()
    ) -> None:
        """Send an exception (with its traceback lines) as the reply to request ``seq``."""
        payload = serializer.dumps_exception(exc, lines)
        self.reply(conn, spec.MSG_EXCEPTION, seq, payload, (), 0)

    def refuse(self, conn: TCPConnection, seq: int, exc: BaseException, *, close: bool) -> None:
        """Answer a frame with an error, from a call thread.

        The I/O thread never sends a reply itself: a client that does not read its replies
        would block it, and with it every other connection. The connection waits meanwhile,
        so the error keeps its place among the connection's replies.

        Args:
            conn: the connection.
            seq: the frame's sequence id.
            exc: the error to send.
            close: drop the connection after sending (Pyro 3 does for an unknown object id).
        """
        self.pause(conn)

        def send() -> None:
            try:
                self.reply_error(conn, seq, exc)
            finally:
                if close:
                    self.drop_connection(conn)
                else:
                    self.resume(conn)

        self.server.submit(send)
