"""The connection state machine: handshake, sequence ids, MACs and close (layer 3, sans-IO).

How it works
------------
Both ends of a connection own a :class:`Connection`. It never sees a socket: it turns frames
into state changes and produces segment lists to send. Every state change lives in this file,
in the ``_TRANSITIONS`` table (h11's rule): an event not in the table for the current state is
a :class:`~pyroact.errors.ProtocolError` when the peer caused it and a ``RuntimeError`` when the
local code did.

Handshake (plain bytes, never pickle)::

    server                                        client
      CHALLENGE  nonce_s(32) | flags(1)   ->
                                          <-   CONNECT  nonce_c(32) | token(0 or 32)
      GRANTED    proof(0 or 32)           ->             (or DENIED code(1) | reason)

``transcript = nonce_s | nonce_c``. With an identification, ``key = SHA-256(passphrase)``
(the validator's ``mungeIdent``), ``token = HMAC(key, "pyroact-client" | transcript)`` and
``proof = HMAC(key, "pyroact-server" | transcript)``: each side proves it knows the key and a
recorded handshake cannot be replayed, because the other side's nonce is fresh. The session
key ``HMAC(key, "pyroact-session" | transcript)`` then signs every frame: the MAC trailer is
``HMAC(session, direction | counter | frame bytes)`` with a per-direction counter that both
sides keep, so a replayed, reordered, dropped or altered frame fails the check.

The client may send its first requests right after CONNECT, before GRANTED arrives
(:attr:`Connection.may_send_early`): a new connection costs one round trip less. With a key
they already carry their MAC, since both nonces are known once CONNECT is sent. The server
acts on them only once it has granted the connection (if it denies, they go with the
connection, unrun), and before that it takes frames of at most ``MAX_HANDSHAKE_SIZE`` bytes, so
the client sends a larger first request only after the grant. The client still reads GRANTED,
and checks the server's proof, before it accepts any reply: a server that does not know the key
gets to see the early request (as anyone on the path could: without TLS frames are not
encrypted), but cannot answer it, and cannot use it elsewhere, because its MAC covers this
connection's nonces and counter.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any, Final

from . import _wirespec as spec
from .errors import ConnectionDeniedError, ProtocolError
from .wire import Frame, encode_frame

__all__ = [
    "CLIENT",
    "MAX_HANDSHAKE_SIZE",
    "NONCE_SIZE",
    "SERVER",
    "Connection",
    "client_token",
    "munge_ident",
    "server_proof",
]

CLIENT: Final = "client"
SERVER: Final = "server"
NONCE_SIZE: Final = 32
# The size limit for frames before a connection is granted: handshake messages are tiny, and an
# unauthenticated peer must not make the other side allocate a large buffer.
MAX_HANDSHAKE_SIZE: Final = 4096
FLAG_IDENT_REQUIRED: Final = 0x01

# States.
IDLE: Final = "IDLE"
WAIT_CHALLENGE: Final = "WAIT_CHALLENGE"
WAIT_CONNECT: Final = "WAIT_CONNECT"
WAIT_GRANT: Final = "WAIT_GRANT"
READY: Final = "READY"
CLOSED: Final = "CLOSED"

# (role, state, event) -> next state. Events are message types received or sent.
_TRANSITIONS: Final[dict[tuple[str, str, str], str]] = {
    (CLIENT, IDLE, "start"): WAIT_CHALLENGE,
    (CLIENT, WAIT_CHALLENGE, "recv CHALLENGE"): WAIT_GRANT,
    (CLIENT, WAIT_GRANT, "recv GRANTED"): READY,
    (CLIENT, WAIT_GRANT, "recv DENIED"): CLOSED,
    (SERVER, IDLE, "send CHALLENGE"): WAIT_CONNECT,
    (SERVER, IDLE, "send DENIED"): CLOSED,
    (SERVER, WAIT_CONNECT, "send GRANTED"): READY,
    (SERVER, WAIT_CONNECT, "send DENIED"): CLOSED,
}


def munge_ident(ident: str | bytes) -> bytes:
    """Derive the 32-byte key for a passphrase (Pyro 3's ``mungeIdent``, with SHA-256).

    Args:
        ident: the passphrase.

    Returns:
        The key; the passphrase itself is never stored or sent.
    """
    raw = ident.encode("utf-8") if isinstance(ident, str) else bytes(ident)
    return hashlib.sha256(b"pyroact-ident\x00" + raw).digest()


def _mac(key: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.new(key, label + transcript, hashlib.sha256).digest()


def client_token(key: bytes, transcript: bytes) -> bytes:
    """The client's proof of the key: ``HMAC(key, "pyroact-client" | transcript)``."""
    return _mac(key, b"pyroact-client", transcript)


def server_proof(key: bytes, transcript: bytes) -> bytes:
    """The server's proof of the key: ``HMAC(key, "pyroact-server" | transcript)``."""
    return _mac(key, b"pyroact-server", transcript)


class Connection:
    """One end of a connection: handshake state, sequence ids and frame MACs.

    Args:
        role: :data:`CLIENT` or :data:`SERVER`.
    """

    def __init__(self, role: str) -> None:
        if role not in (CLIENT, SERVER):
            raise ValueError(f"role must be {CLIENT!r} or {SERVER!r}, not {role!r}")
        self.role = role
        self.state = IDLE
        self.server_nonce = b""
        self.client_nonce = b""
        self.ident_required = False
        self._key: bytes | None = None
        self._session: bytes | None = None
        self._send_counter = 0
        self._recv_counter = 0
        self._next_seq = 0
        self.deny_code = 0
        self.deny_reason = ""

    # -- state ---------------------------------------------------------------------------------

    def _advance(self, event: str, *, remote: bool) -> None:
        try:
            self.state = _TRANSITIONS[(self.role, self.state, event)]
        except KeyError:
            message = f"{self.role} cannot {event!r} in state {self.state}"
            if remote:
                self.state = CLOSED
                raise ProtocolError(f"invalid header: {message}") from None
            raise RuntimeError(message) from None

    @property
    def transcript(self) -> bytes:
        """The handshake transcript both proofs are computed over."""
        return self.server_nonce + self.client_nonce

    @property
    def may_send_early(self) -> bool:
        """Client: requests may go out before GRANTED (see above).

        Not when the server requires an identification this end does not have: it will deny.
        """
        return (
            self.role == CLIENT
            and self.state == WAIT_GRANT
            and (self._key is not None or not self.ident_required)
        )

    @property
    def authenticated(self) -> bool:
        """True when a key was proven and frames carry MACs."""
        return self._session is not None

    def _set_key(self, key: bytes | None) -> None:
        self._key = key
        self._session = _mac(key, b"pyroact-session", self.transcript) if key else None

    # -- server side ---------------------------------------------------------------------------

    def build_challenge(self, nonce: bytes, *, ident_required: bool) -> list[Any]:
        """Server: start the handshake.

        Args:
            nonce: a fresh random challenge of ``NONCE_SIZE`` bytes.
            ident_required: tell the client that it must present an identification.

        Returns:
            The segments of the CHALLENGE frame.

        Raises:
            ValueError: the nonce has the wrong size.
        """
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"challenge must be {NONCE_SIZE} bytes, not {len(nonce)}")
        self._advance("send CHALLENGE", remote=False)
        self.server_nonce = nonce
        self.ident_required = ident_required
        flags = bytes([FLAG_IDENT_REQUIRED if ident_required else 0])
        return encode_frame(spec.MSG_CHALLENGE, payload=self.server_nonce + flags)

    def handle_connect(self, frame: Frame) -> bytes:
        """Server: take the client's CONNECT frame.

        Args:
            frame: the received frame.

        Returns:
            The client's authentication token (empty when it has no identification).

        Raises:
            ProtocolError: the frame is not a well-formed CONNECT.
        """
        if frame.msg_type != spec.MSG_CONNECT or self.state != WAIT_CONNECT:
            self.state = CLOSED
            raise ProtocolError(f"invalid header: expected CONNECT, got message {frame.msg_type}")
        body = bytes(frame.payload)
        if len(body) not in (NONCE_SIZE, NONCE_SIZE + 32):
            self.state = CLOSED
            raise ProtocolError(f"invalid header: CONNECT of {len(body)} bytes")
        self.client_nonce = body[:NONCE_SIZE]
        return body[NONCE_SIZE:]

    def build_granted(self, key: bytes | None) -> list[Any]:
        """Server: accept the connection.

        Args:
            key: the key the client proved, or None for an open server.

        Returns:
            The segments of the GRANTED frame, carrying the server's proof.
        """
        self._advance("send GRANTED", remote=False)
        self._set_key(key)
        proof = server_proof(key, self.transcript) if key else b""
        return encode_frame(spec.MSG_GRANTED, payload=proof)

    def build_denied(self, code: int, reason: str) -> list[Any]:
        """Server: refuse the connection (the caller closes it after sending).

        Args:
            code: a ``DENIED_*`` code from :mod:`pyroact.constants`.
            reason: the reason text.

        Returns:
            The segments of the DENIED frame.
        """
        self._advance("send DENIED", remote=False)
        return encode_frame(spec.MSG_DENIED, payload=bytes([code & 0xFF]) + reason.encode())

    # -- client side ---------------------------------------------------------------------------

    def start(self) -> None:
        """Client: the socket is connected; wait for the server's challenge."""
        self._advance("start", remote=False)

    def handle_challenge(self, frame: Frame) -> None:
        """Client: take the server's challenge (then answer it with :meth:`build_connect`).

        Args:
            frame: the received frame (CHALLENGE, or DENIED when the host was refused).

        Raises:
            ConnectionDeniedError: the server refused the connection.
            ProtocolError: the frame is not a well-formed CHALLENGE.
        """
        if frame.msg_type == spec.MSG_DENIED:
            self.state = WAIT_GRANT
            self.handle_grant(frame)
        if frame.msg_type != spec.MSG_CHALLENGE:
            self.state = CLOSED
            raise ProtocolError(f"invalid header: expected CHALLENGE, got {frame.msg_type}")
        self._advance("recv CHALLENGE", remote=True)
        body = bytes(frame.payload)
        if len(body) != NONCE_SIZE + 1:
            self.state = CLOSED
            raise ProtocolError(f"invalid header: CHALLENGE of {len(body)} bytes")
        self.server_nonce = body[:NONCE_SIZE]
        self.ident_required = bool(body[NONCE_SIZE] & FLAG_IDENT_REQUIRED)
        self.client_nonce = secrets.token_bytes(NONCE_SIZE)

    def build_connect(self, token: bytes, key: bytes | None) -> list[Any]:
        """Client: answer the challenge.

        Args:
            token: the authentication token (from the validator's ``createAuthToken``), or b"".
            key: the munged identification the token was made with, or None.

        Returns:
            The segments of the CONNECT frame.

        Raises:
            ValueError: the token is neither empty nor 32 bytes.
        """
        if len(token) not in (0, 32):
            raise ValueError(f"authentication token must be 0 or 32 bytes, not {len(token)}")
        # Both nonces are known now: early requests can carry their MACs.
        self._set_key(key)
        return encode_frame(spec.MSG_CONNECT, payload=self.client_nonce + token)

    def handle_grant(self, frame: Frame) -> None:
        """Client: take the server's verdict.

        Args:
            frame: the received GRANTED or DENIED frame.

        Raises:
            ConnectionDeniedError: the server refused, or failed to prove the key.
            ProtocolError: the frame is neither GRANTED nor DENIED.
        """
        if frame.msg_type == spec.MSG_DENIED:
            self._advance("recv DENIED", remote=True)
            body = bytes(frame.payload)
            self.deny_code = body[0] if body else 0
            self.deny_reason = body[1:].decode("utf-8", "replace") or "unspecified reason"
            raise ConnectionDeniedError(self.deny_reason)
        if frame.msg_type != spec.MSG_GRANTED:
            self.state = CLOSED
            raise ProtocolError(f"invalid header: expected GRANTED, got {frame.msg_type}")
        proof = bytes(frame.payload)
        if self._key is None and proof:
            # The server granted a keyed session (a validator made a token from a key this
            # end was not given): frames would fail their MAC check, so refuse clearly now.
            self.state = CLOSED
            raise ConnectionDeniedError(
                "security reasons: the server granted an authenticated session but this client "
                "has no identification key (set one with _setIdentification)"
            )
        if self._key is not None:
            expected = server_proof(self._key, self.transcript)
            if not hmac.compare_digest(proof, expected):
                self.state = CLOSED
                raise ConnectionDeniedError(
                    "security reasons: the server did not prove it knows the identification"
                )
        self._advance("recv GRANTED", remote=True)
        self._set_key(self._key)

    # -- calls ---------------------------------------------------------------------------------

    def next_seq(self) -> int:
        """Client: the sequence id for the next request (wraps at 2**32)."""
        seq = self._next_seq
        self._next_seq = (seq + 1) & spec.MAX_SEQ
        return seq

    def build(
        self,
        msg_type: int,
        *,
        seq: int = 0,
        object_id: str = "",
        method: str = "",
        payload: Any = b"",
        buffers: Sequence[Any] = (),
        flags: int = 0,
    ) -> list[Any]:
        """Encode a call, reply or close frame, with its MAC when the connection has a key.

        Args:
            msg_type: ``MSG_REQUEST``, ``MSG_ONEWAY``, ``MSG_REPLY``, ``MSG_EXCEPTION`` or
                ``MSG_CLOSE``.
            seq: the sequence id.
            object_id: the target object id.
            method: the method name.
            payload: the pickle payload.
            buffers: the out-of-band buffers.
            flags: ``FLAG_*`` bits.

        Returns:
            The segments to send.

        Raises:
            RuntimeError: the handshake has not completed (and requests may not go early).
        """
        if self.state != READY and not (self.may_send_early and msg_type != spec.MSG_CLOSE):
            raise RuntimeError(f"cannot send {spec.MSG_NAMES[msg_type]} in state {self.state}")
        session = self._session
        segments = encode_frame(
            msg_type,
            flags=flags,
            seq=seq,
            object_id=object_id,
            method=method,
            payload=payload,
            buffers=buffers,
            mac_size=0 if session is None else spec.MAC_SIZE,
        )
        if session is not None:
            segments.append(self._frame_mac(session, self.role, self._send_counter, segments))
            self._send_counter += 1
        return segments

    def check(self, frame: Frame) -> Frame:
        """Verify a received call/reply frame: state, and the MAC when there is a key.

        Args:
            frame: the received frame.

        Returns:
            The same frame.

        Raises:
            ProtocolError: a handshake message after the handshake, or a bad or missing MAC.
        """
        if self.state != READY or frame.msg_type < spec.MSG_REQUEST:
            message = (
                f"invalid header: unexpected {spec.MSG_NAMES.get(frame.msg_type)} "
                f"in state {self.state}"
            )
            self.state = CLOSED
            raise ProtocolError(message)
        session = self._session
        if session is None:
            if frame.mac:
                raise ProtocolError("invalid header: MAC on a connection without a key")
            return frame
        peer = SERVER if self.role == CLIENT else CLIENT
        parts = [frame.head, frame.payload, *frame.buffers]
        expected = self._frame_mac(session, peer, self._recv_counter, parts)
        if not frame.mac or not hmac.compare_digest(frame.mac, expected):
            self.state = CLOSED
            raise ProtocolError("frame MAC mismatch: the frame was altered or replayed")
        self._recv_counter += 1
        return frame

    @staticmethod
    def _frame_mac(session: bytes, sender: str, counter: int, parts: Sequence[Any]) -> bytes:
        mac = hmac.new(session, sender.encode() + counter.to_bytes(8, "big"), hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.digest()

    def close(self) -> None:
        """Mark the connection closed (either side)."""
        self.state = CLOSED
