"""The pure-Python wire engine (layer 1): frames to bytes and bytes to frames.

How it works
------------
This module and its Cython twin :mod:`pyroact._fastwire` share one contract: the same names,
keyword-only signatures, defaults, docstrings, exception classes and values. Neither does I/O;
the layout they implement is documented once, in :mod:`pyroact._wirespec`.

*Encoding* returns a frame as a list of segments for ``socket.sendmsg``: the header (with a
small payload joined to it) first, then a large payload and every out-of-band buffer as they
were given, so a large buffer is never copied into one ``bytes``.

*Decoding* is streaming. Bytes arrive through :meth:`FrameDecoder.feed`, or are received
straight into the decoder's memory through :meth:`FrameDecoder.get_buffer` and
:meth:`FrameDecoder.buffer_updated` (the ``asyncio.BufferedProtocol`` pattern). Small frames are
parsed out of one growing receive buffer, read from a start offset and compacted only when a
whole frame has gone, so that work stays linear in the bytes read. A frame whose body reaches
``LARGE_FRAME_THRESHOLD`` is received into parts of exactly their sizes, in order: the payload,
each out-of-band buffer, the MAC. The socket fills each part directly (one ``get_buffer`` view
never spans two parts) and the payload and buffers are handed out as views of their parts, with
no copy; here the parts are ``bytearray`` objects, in the Cython engine fresh ``bytes`` objects
that a large ``bytes`` value is then rebuilt as without a copy. An incomplete frame yields
nothing; garbage raises the :class:`~pyroact.errors.ProtocolError` family, and a decoder that
raised refuses further input, since it can no longer know where the next frame starts.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from . import _wirespec as spec
from .errors import MessageTooLargeError, ProtocolError

__all__ = ["Frame", "FrameDecoder", "encode_frame"]

Buffer = bytes | bytearray | memoryview

_HEADER = spec.HEADER_STRUCT
_HEADER_SIZE = spec.HEADER_SIZE
_BUFLEN = spec.BUFLEN_STRUCT
_BUFLEN_SIZE = spec.BUFLEN_SIZE
_MAGIC = spec.MAGIC
_VERSION = spec.PROTOCOL_VERSION


class Frame:
    """One decoded (or to-be-encoded) message.

    Args:
        msg_type: one of the ``MSG_*`` numbers of :mod:`pyroact._wirespec`.
        flags: ``FLAG_*`` bits.
        seq: the sequence id.
        object_id: the target object's id (ASCII).
        method: the method name.
        payload: the pickle (or, in handshake messages, raw) payload.
        buffers: the out-of-band buffers.
        mac: the MAC trailer, empty when the connection has no key.
        head: the frame's bytes before the payload (kept only when a MAC must be checked).
    """

    __slots__ = (
        "buffers",
        "flags",
        "head",
        "mac",
        "method",
        "msg_type",
        "object_id",
        "payload",
        "seq",
    )

    def __init__(
        self,
        msg_type: int,
        *,
        flags: int = 0,
        seq: int = 0,
        object_id: str = "",
        method: str = "",
        payload: Buffer = b"",
        buffers: Sequence[Buffer] = (),
        mac: bytes = b"",
        head: bytes = b"",
    ) -> None:
        self.msg_type = msg_type
        self.flags = flags
        self.seq = seq
        self.object_id = object_id
        self.method = method
        self.payload = payload
        self.buffers = list(buffers)
        self.mac = mac
        self.head = head

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.msg_type == other.msg_type
            and self.flags == other.flags
            and self.seq == other.seq
            and self.object_id == other.object_id
            and self.method == other.method
            and bytes(self.payload) == bytes(other.payload)
            and [bytes(b) for b in self.buffers] == [bytes(b) for b in other.buffers]
            and self.mac == other.mac
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        name = spec.MSG_NAMES.get(self.msg_type, str(self.msg_type))
        sizes = [len(memoryview(b)) for b in self.buffers]
        return (
            f"<Frame {name} seq={self.seq} flags={self.flags:#x} object_id={self.object_id!r} "
            f"method={self.method!r} payload={len(memoryview(self.payload))}B buffers={sizes}>"
        )


def _as_bytes_view(data: Any) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError(f"buffer of shape {view.shape} is not C-contiguous")
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


def encode_frame(
    msg_type: int,
    *,
    flags: int = 0,
    seq: int = 0,
    object_id: str = "",
    method: str = "",
    payload: Any = b"",
    buffers: Sequence[Any] = (),
    mac_size: int = 0,
) -> list[Any]:
    """Encode one frame as a list of segments ready for ``socket.sendmsg``.

    Args:
        msg_type: one of the ``MSG_*`` numbers of :mod:`pyroact._wirespec`.
        flags: ``FLAG_*`` bits.
        seq: the sequence id, 0 to 2**32-1.
        object_id: the target object's id (ASCII, at most 255 bytes).
        method: the method name (UTF-8, at most ``MAX_METHOD_LEN`` bytes).
        payload: the payload, any C-contiguous buffer.
        buffers: out-of-band buffers, sent as they are (not copied).
        mac_size: the length of the MAC the caller appends as a last segment (0 or ``MAC_SIZE``).

    Returns:
        The segments: the header (joined with a small payload), then the large payload and the
        buffers. The caller appends the MAC segment when ``mac_size`` is not 0.

    Raises:
        ValueError: a field is out of range; the message names the value and the limit.
        TypeError: a field has the wrong type, or a buffer lacks the buffer protocol.
    """
    msg_type = operator.index(msg_type)
    flags = operator.index(flags)
    seq = operator.index(seq)
    mac_size = operator.index(mac_size)
    if msg_type not in spec.MSG_TYPES:
        raise ValueError(f"unknown message type {msg_type}")
    if flags & ~spec.FLAGS_KNOWN or flags < 0:
        raise ValueError(f"unknown flag bits {flags:#x} (known: {spec.FLAGS_KNOWN:#x})")
    if not 0 <= seq <= spec.MAX_SEQ:
        raise ValueError(f"sequence id {seq} outside 0..{spec.MAX_SEQ}")
    if mac_size != 0 and mac_size != spec.MAC_SIZE:
        raise ValueError(f"mac_size {mac_size} must be 0 or {spec.MAC_SIZE}")
    if not isinstance(object_id, str):
        raise TypeError(f"object_id must be str, not {type(object_id).__name__}")
    if not isinstance(method, str):
        raise TypeError(f"method must be str, not {type(method).__name__}")
    oid = object_id.encode("ascii")
    if len(oid) > spec.MAX_OBJID_LEN:
        raise ValueError(f"object id of {len(oid)} bytes exceeds {spec.MAX_OBJID_LEN}")
    meth = method.encode("utf-8")
    if len(meth) > spec.MAX_METHOD_LEN:
        raise ValueError(f"method name of {len(meth)} bytes exceeds {spec.MAX_METHOD_LEN}")
    if len(buffers) > spec.MAX_BUFFERS:
        raise ValueError(f"{len(buffers)} out-of-band buffers exceed {spec.MAX_BUFFERS}")
    body = _as_bytes_view(payload)
    plen = body.nbytes
    if plen > spec.MAX_PAYLOAD_LEN:
        raise ValueError(f"payload of {plen} bytes exceeds {spec.MAX_PAYLOAD_LEN}")
    views = [_as_bytes_view(b) for b in buffers]
    parts: list[Any] = [
        _HEADER.pack(
            _MAGIC, _VERSION, msg_type, len(oid), flags, len(meth), seq, plen, len(views), mac_size
        )
    ]
    parts.extend(_BUFLEN.pack(v.nbytes) for v in views)
    parts.append(oid)
    parts.append(meth)
    if plen < spec.JOIN_PAYLOAD_THRESHOLD:
        parts.append(body)
        segments: list[Any] = [b"".join(parts)]
    else:
        segments = [b"".join(parts), body]
    segments.extend(views)
    return segments


class FrameDecoder:
    """Streaming frame decoder: bytes in, complete frames out.

    Args:
        max_message_size: the largest payload plus buffers a frame may announce, in bytes.

    Raises:
        ValueError: ``max_message_size`` is not positive.
    """

    def __init__(self, *, max_message_size: int = spec.DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_message_size <= 0:
            raise ValueError(f"max_message_size must be positive, not {max_message_size}")
        self._max = max_message_size
        self._buf = bytearray(spec.RECV_BUFFER_SIZE)
        self._start = 0
        self._end = 0
        self._error: ProtocolError | None = None
        # A large frame in progress is received into its parts, in order: the payload, each
        # out-of-band buffer, the MAC (zero-length parts are left out of _views). _part is the
        # index of the part being filled, _part_filled how much of it is; _large_len and
        # _large_filled count the whole body. _large_info holds the head, _large_fields the views
        # of the payload, the buffers and the MAC.
        self._in_large = False
        self._views: list[memoryview] = []
        self._part = 0
        self._part_filled = 0
        self._large_len = 0
        self._large_filled = 0
        self._large_info: tuple[Any, ...] = ()
        self._large_fields: tuple[Any, ...] = ()

    @property
    def max_message_size(self) -> int:
        """The size limit this decoder enforces.

        Setting it changes the limit for every frame whose head is checked from then on;
        bytes already buffered stay (a handshake's limit is raised this way once granted).

        Raises:
            ValueError: a new limit that is not positive.
        """
        return self._max

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"max_message_size must be positive, not {value}")
        self._max = value

    @property
    def buffered(self) -> int:
        """How many bytes of incomplete frames the decoder holds."""
        pending = self._end - self._start
        if self._in_large:
            pending += self._large_filled + self._large_info[-1]
        return pending

    def feed(self, data: Any) -> list[Frame]:
        """Add received bytes and return the frames they complete.

        Args:
            data: any bytes-like object.

        Returns:
            The frames completed by ``data``, possibly none.

        Raises:
            ProtocolError: the stream is malformed (or was, earlier).
            MessageTooLargeError: a frame announced a size above the limit.
        """
        self._check_usable()
        view = _as_bytes_view(data)
        total = view.nbytes
        offset = 0
        frames: list[Frame] = []
        while offset < total:
            target = self.get_buffer(total - offset)
            n = min(len(target), total - offset)
            target[:n] = view[offset : offset + n]
            offset += n
            frames.extend(self.buffer_updated(n))
        return frames

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Return writable memory for the next received bytes (``recv_into`` target).

        Args:
            sizehint: how many bytes the caller expects to write; -1 for no hint.

        Returns:
            A writable view; while a large frame is in progress it is the missing bytes of the
            frame's current part (the payload, an out-of-band buffer or the MAC, in that
            order), so the socket writes them to their final place.

        Raises:
            ProtocolError: the decoder failed earlier.
        """
        self._check_usable()
        if self._in_large:
            return self._views[self._part][self._part_filled :]
        free = len(self._buf) - self._end
        want = max(sizehint, 1)
        if free < want or free == 0:
            self._make_room(want)
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> list[Frame]:
        """Account for ``nbytes`` written into the last :meth:`get_buffer` view.

        Args:
            nbytes: how many bytes were written.

        Returns:
            The frames completed, possibly none.

        Raises:
            ProtocolError: the stream is malformed (or was, earlier).
            MessageTooLargeError: a frame announced a size above the limit.
            ValueError: ``nbytes`` is negative or more than the view could hold.
        """
        self._check_usable()
        if self._in_large:
            if nbytes < 0 or self._part_filled + nbytes > len(self._views[self._part]):
                raise ValueError(f"buffer_updated({nbytes}) beyond the buffer handed out")
            self._advance(nbytes)
            if self._large_filled < self._large_len:
                return []
            frames = [self._finish_large()]
        else:
            if nbytes < 0 or self._end + nbytes > len(self._buf):
                raise ValueError(f"buffer_updated({nbytes}) beyond the buffer handed out")
            self._end += nbytes
            frames = []
        try:
            self._parse(frames)
        except ProtocolError as exc:
            self._error = exc
            raise
        return frames

    def _check_usable(self) -> None:
        if self._error is not None:
            raise ProtocolError(f"decoder refuses input after an earlier error: {self._error}")

    def _make_room(self, want: int) -> None:
        used = self._end - self._start
        if self._start and used + want <= len(self._buf):
            self._buf[0:used] = self._buf[self._start : self._end]
        else:
            # A new buffer rather than a resize: views handed out earlier may still be alive.
            size = len(self._buf)
            while size < used + want:
                size *= 2
            grown = bytearray(size)
            grown[0:used] = self._buf[self._start : self._end]
            self._buf = grown
        self._start = 0
        self._end = used

    def _parse(self, frames: list[Frame]) -> None:
        buf = self._buf
        while not self._in_large:
            start = self._start
            avail = self._end - start
            if avail < _HEADER_SIZE:
                break
            (magic, version, msg_type, oid_len, flags, meth_len, seq, plen, nbuf, mac_len) = (
                _HEADER.unpack_from(buf, start)
            )
            if magic != _MAGIC:
                raise ProtocolError(f"invalid header: magic {bytes(magic)!r} is not {_MAGIC!r}")
            if version != _VERSION:
                raise ProtocolError(
                    f"incompatible protocol version {version} (this side speaks {_VERSION})"
                )
            if msg_type not in spec.MSG_TYPES:
                raise ProtocolError(f"invalid header: unknown message type {msg_type}")
            if flags & ~spec.FLAGS_KNOWN:
                raise ProtocolError(f"invalid header: unknown flag bits {flags:#x}")
            if meth_len > spec.MAX_METHOD_LEN:
                raise ProtocolError(
                    f"invalid header: method name of {meth_len} bytes exceeds {spec.MAX_METHOD_LEN}"
                )
            if nbuf > spec.MAX_BUFFERS:
                raise ProtocolError(
                    f"invalid header: {nbuf} out-of-band buffers exceed {spec.MAX_BUFFERS}"
                )
            if mac_len != 0 and mac_len != spec.MAC_SIZE:
                raise ProtocolError(f"invalid header: MAC length {mac_len}")
            if plen > self._max:
                raise MessageTooLargeError(plen, self._max)
            table_end = _HEADER_SIZE + nbuf * _BUFLEN_SIZE
            if avail < table_end:
                break
            buflens = []
            data_len = plen
            for i in range(nbuf):
                blen = _BUFLEN.unpack_from(buf, start + _HEADER_SIZE + i * _BUFLEN_SIZE)[0]
                # Checked per buffer as the C engine does, where the sum could overflow.
                if blen > self._max:
                    raise MessageTooLargeError(blen, self._max)
                data_len += blen
                buflens.append(blen)
            if data_len > self._max:
                raise MessageTooLargeError(data_len, self._max)
            head_len = table_end + oid_len + meth_len
            if avail < head_len:
                break
            try:
                oid = buf[start + table_end : start + table_end + oid_len].decode("ascii")
                meth = buf[start + table_end + oid_len : start + head_len].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"invalid header: undecodable name ({exc})") from None
            body_len = data_len + mac_len
            head = bytes(buf[start : start + head_len]) if mac_len else b""
            info = (msg_type, flags, seq, oid, meth, plen, buflens, mac_len, head, head_len)
            if head_len - _HEADER_SIZE + body_len >= spec.LARGE_FRAME_THRESHOLD:
                self._begin_large(start + head_len, body_len, info)
                if self._large_filled == self._large_len:
                    frames.append(self._finish_large())
                continue
            if avail < head_len + body_len:
                break
            pos = start + head_len
            payload = bytes(buf[pos : pos + plen])
            pos += plen
            buffers: list[Buffer] = []
            for blen in buflens:
                buffers.append(bytes(buf[pos : pos + blen]))
                pos += blen
            mac = bytes(buf[pos : pos + mac_len])
            pos += mac_len
            frame = Frame(msg_type, flags=flags, seq=seq, object_id=oid, method=meth)
            frame.payload = payload
            frame.buffers = buffers
            frame.mac = mac
            frame.head = head
            frames.append(frame)
            if pos == self._end:
                self._start = self._end = 0
            else:
                self._start = pos

    def _begin_large(self, body_start: int, body_len: int, info: tuple[Any, ...]) -> None:
        plen, buflens, mac_len = info[5], info[6], info[7]
        payload = memoryview(bytearray(plen))
        buffers = [memoryview(bytearray(blen)) for blen in buflens]
        mac = memoryview(bytearray(mac_len))
        self._views = [v for v in (payload, *buffers, mac) if v.nbytes]
        self._part = 0
        self._part_filled = 0
        self._large_len = body_len
        self._large_filled = 0
        self._large_info = info
        self._large_fields = (payload, buffers, mac)
        self._in_large = True
        # The body bytes that came with the head are spread over the parts.
        have = min(self._end - body_start, body_len)
        source = memoryview(self._buf)
        pos = body_start
        while pos < body_start + have:
            target = self._views[self._part]
            n = min(len(target) - self._part_filled, body_start + have - pos)
            target[self._part_filled : self._part_filled + n] = source[pos : pos + n]
            pos += n
            self._advance(n)
        source.release()
        consumed = body_start + have
        if consumed == self._end:
            self._start = self._end = 0
        else:
            self._start = consumed

    def _advance(self, nbytes: int) -> None:
        self._part_filled += nbytes
        self._large_filled += nbytes
        if self._part < len(self._views) and self._part_filled == len(self._views[self._part]):
            self._part += 1
            self._part_filled = 0

    def _finish_large(self) -> Frame:
        msg_type, flags, seq, oid, meth, _, _, _, head, _ = self._large_info
        payload, buffers, mac = self._large_fields
        frame = Frame(msg_type, flags=flags, seq=seq, object_id=oid, method=meth)
        frame.payload = payload
        frame.buffers = buffers
        frame.mac = bytes(mac)
        frame.head = head
        # The frame owns the parts now; the decoder keeps no reference to them.
        self._in_large = False
        self._views = []
        self._part = 0
        self._part_filled = 0
        self._large_len = 0
        self._large_filled = 0
        self._large_info = ()
        self._large_fields = ()
        return frame


def _constants() -> dict[str, Any]:
    """Return the layout constants this engine uses (compared with ``_wirespec`` by tests)."""
    return {
        "MAGIC": _MAGIC,
        "PROTOCOL_VERSION": _VERSION,
        "HEADER_SIZE": _HEADER_SIZE,
        "BUFLEN_SIZE": _BUFLEN_SIZE,
        "MAX_OBJID_LEN": spec.MAX_OBJID_LEN,
        "MAX_METHOD_LEN": spec.MAX_METHOD_LEN,
        "MAX_BUFFERS": spec.MAX_BUFFERS,
        "MAC_SIZE": spec.MAC_SIZE,
        "FLAGS_KNOWN": spec.FLAGS_KNOWN,
        "MSG_TYPES": spec.MSG_TYPES,
        "LARGE_FRAME_THRESHOLD": spec.LARGE_FRAME_THRESHOLD,
        "JOIN_PAYLOAD_THRESHOLD": spec.JOIN_PAYLOAD_THRESHOLD,
        "RECV_BUFFER_SIZE": spec.RECV_BUFFER_SIZE,
        "DEFAULT_MAX_MESSAGE_SIZE": spec.DEFAULT_MAX_MESSAGE_SIZE,
    }
