# cython: language_level=3
"""The Cython wire engine (layer 1): frames to bytes and bytes to frames.

How it works
------------
This is the compiled twin of :mod:`pyroact._purewire`: the same names, keyword-only
signatures, defaults, docstrings, exception classes and values, tested by the same suite. The
layout constants are copied from :mod:`pyroact._wirespec` into C globals at import time, so
there is one source of truth and C-speed access; :func:`_constants` returns the copies so a
test can compare them with the spec.

Small frames are parsed straight out of the receive ``bytearray`` through a C pointer and the
header of an outgoing frame is written byte by byte into a fresh ``bytes``; large payloads and
out-of-band buffers are never copied (see the pure engine's module docstring for the whole
story).

Where the engines differ is the memory a large frame is received into: here every part (the
payload, each out-of-band buffer, the MAC) is a ``bytes`` object allocated uninitialised and
written by the socket through :class:`_ReceivedBytes`. A large ``bytes`` argument or result then
reaches the user as that very object (``serializer._bytes_from_buffer``): received once, never
copied, and with one large allocation per buffer instead of two (a second one per call made
glibc trim and re-fault the heap on every call).
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyObject_GetBuffer, PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.number cimport PyNumber_Index
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from libc.string cimport memcpy, memcmp

from pyroact import _wirespec as spec
from pyroact.errors import MessageTooLargeError, ProtocolError

__all__ = ["Frame", "FrameDecoder", "encode_frame"]

cdef bytes MAGIC = spec.MAGIC
cdef Py_ssize_t MAGIC_LEN = len(spec.MAGIC)
cdef unsigned int PROTOCOL_VERSION = spec.PROTOCOL_VERSION
cdef Py_ssize_t HEADER_SIZE = spec.HEADER_SIZE
cdef Py_ssize_t BUFLEN_SIZE = spec.BUFLEN_SIZE
cdef unsigned int MAX_OBJID_LEN = spec.MAX_OBJID_LEN
cdef unsigned int MAX_METHOD_LEN = spec.MAX_METHOD_LEN
cdef unsigned int MAX_BUFFERS = spec.MAX_BUFFERS
cdef unsigned int MAC_SIZE = spec.MAC_SIZE
cdef unsigned int FLAGS_KNOWN = spec.FLAGS_KNOWN
cdef unsigned long long MAX_SEQ = spec.MAX_SEQ
cdef unsigned long long MAX_PAYLOAD_LEN = spec.MAX_PAYLOAD_LEN
cdef frozenset MSG_TYPES = spec.MSG_TYPES
cdef int MSG_MIN = min(spec.MSG_TYPES)
cdef int MSG_MAX = max(spec.MSG_TYPES)
cdef Py_ssize_t LARGE_FRAME_THRESHOLD = spec.LARGE_FRAME_THRESHOLD
cdef Py_ssize_t JOIN_PAYLOAD_THRESHOLD = spec.JOIN_PAYLOAD_THRESHOLD
cdef Py_ssize_t RECV_BUFFER_SIZE = spec.RECV_BUFFER_SIZE
cdef object DEFAULT_MAX_MESSAGE_SIZE = spec.DEFAULT_MAX_MESSAGE_SIZE

# The fixed header's field offsets, from the table in _wirespec's docstring.
cdef enum:
    OFF_VERSION = 4
    OFF_TYPE = 6
    OFF_OIDLEN = 7
    OFF_FLAGS = 8
    OFF_METHLEN = 10
    OFF_SEQ = 12
    OFF_PLEN = 16
    OFF_NBUF = 20
    OFF_MACLEN = 22


cdef inline void _put_u16(unsigned char* p, unsigned int v) noexcept:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void _put_u32(unsigned char* p, unsigned long long v) noexcept:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void _put_u64(unsigned char* p, unsigned long long v) noexcept:
    _put_u32(p, v >> 32)
    _put_u32(p + 4, v & 0xFFFFFFFF)


cdef inline unsigned int _get_u16(const unsigned char* p) noexcept:
    return (<unsigned int>p[0] << 8) | p[1]


cdef inline unsigned long long _get_u32(const unsigned char* p) noexcept:
    return ((<unsigned long long>p[0] << 24) | (<unsigned long long>p[1] << 16)
            | (<unsigned long long>p[2] << 8) | p[3])


cdef inline unsigned long long _get_u64(const unsigned char* p) noexcept:
    return (_get_u32(p) << 32) | _get_u32(p + 4)


@cython.final
cdef class Frame:
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

    cdef public object msg_type  # MSG_* number
    cdef public object flags  # FLAG_* bits
    cdef public object seq  # sequence id
    cdef public str object_id  # target object id
    cdef public str method  # method name
    cdef public object payload  # bytes, or a memoryview for a large frame
    cdef public list buffers  # out-of-band buffers
    cdef public bytes mac  # MAC trailer or b""
    cdef public bytes head  # bytes before the payload, kept for MAC checks

    def __init__(self, msg_type, *, flags=0, seq=0, object_id="", method="", payload=b"",
                 buffers=(), mac=b"", head=b""):
        self.msg_type = msg_type
        self.flags = flags
        self.seq = seq
        self.object_id = object_id
        self.method = method
        self.payload = payload
        self.buffers = list(buffers)
        self.mac = mac
        self.head = head

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        cdef Frame o = <Frame>other
        return (
            self.msg_type == o.msg_type
            and self.flags == o.flags
            and self.seq == o.seq
            and self.object_id == o.object_id
            and self.method == o.method
            and bytes(self.payload) == bytes(o.payload)
            and [bytes(b) for b in self.buffers] == [bytes(b) for b in o.buffers]
            and self.mac == o.mac
        )

    __hash__ = None

    def __repr__(self):
        name = spec.MSG_NAMES.get(self.msg_type, str(self.msg_type))
        sizes = [len(memoryview(b)) for b in self.buffers]
        return (
            f"<Frame {name} seq={self.seq} flags={self.flags:#x} object_id={self.object_id!r} "
            f"method={self.method!r} payload={len(memoryview(self.payload))}B buffers={sizes}>"
        )


@cython.final
@cython.auto_pickle(False)
cdef class _ReceivedBytes:
    """A ``bytes`` object that a large frame is received into (private to the decoder).

    The decoder allocates the object uninitialised and hands out writable views of it (this
    class is their exporter, the views' ``.obj``) so the socket writes each byte into its final
    place. Once the frame is complete, :attr:`received_bytes` gives the object itself, so the
    serializer can return it as the received value without a copy; before that it gives None,
    so nobody can hold the object as ``bytes`` while it is still being written.

    Writing into a ``bytes`` object is sound here only because this one is fresh and unshared:
    it was just created by ``PyBytes_FromStringAndSize(NULL, n)`` (a new object for every n > 0;
    only the empty object is a shared singleton, and zero bytes are never written into it), the
    only reference is ours until the frame is complete, so nobody has hashed it (its cached hash
    is still "not computed"), compared it, interned it or used it as a key. Exports made after
    completion are read-only.
    """

    cdef bytes _value  # the bytes object being received into
    cdef bint _complete  # every byte has been received

    def __init__(self):
        raise TypeError("_ReceivedBytes objects are created by the decoder only")

    def __getbuffer__(self, Py_buffer* view, int flags):
        if self._value is None:
            raise BufferError("an unused _ReceivedBytes has no memory")
        PyBuffer_FillInfo(view, self, PyBytes_AS_STRING(self._value),
                          PyBytes_GET_SIZE(self._value), self._complete, flags)

    @property
    def received_bytes(self):
        """The received ``bytes`` object once the frame is complete, else None."""
        return self._value if self._complete else None


cdef _ReceivedBytes _new_received(Py_ssize_t size):
    cdef _ReceivedBytes part = _ReceivedBytes.__new__(_ReceivedBytes)
    part._value = PyBytes_FromStringAndSize(NULL, size)
    part._complete = False
    return part


cdef object _as_bytes_view(object data):
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError(f"buffer of shape {view.shape} is not C-contiguous")
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


def encode_frame(msg_type, *, flags=0, seq=0, object_id="", method="", payload=b"",
                 buffers=(), mac_size=0):
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
    msg_type = PyNumber_Index(msg_type)
    flags = PyNumber_Index(flags)
    seq = PyNumber_Index(seq)
    mac_size = PyNumber_Index(mac_size)
    if msg_type not in MSG_TYPES:
        raise ValueError(f"unknown message type {msg_type}")
    if flags < 0 or flags & ~(<long long>FLAGS_KNOWN):
        raise ValueError(f"unknown flag bits {flags:#x} (known: {FLAGS_KNOWN:#x})")
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence id {seq} outside 0..{MAX_SEQ}")
    if mac_size != 0 and mac_size != MAC_SIZE:
        raise ValueError(f"mac_size {mac_size} must be 0 or {MAC_SIZE}")
    if not isinstance(object_id, str):
        raise TypeError(f"object_id must be str, not {type(object_id).__name__}")
    if not isinstance(method, str):
        raise TypeError(f"method must be str, not {type(method).__name__}")
    cdef bytes oid = (<str>object_id).encode("ascii")
    cdef Py_ssize_t oid_len = len(oid)
    if oid_len > MAX_OBJID_LEN:
        raise ValueError(f"object id of {oid_len} bytes exceeds {MAX_OBJID_LEN}")
    cdef bytes meth = (<str>method).encode("utf-8")
    cdef Py_ssize_t meth_len = len(meth)
    if meth_len > MAX_METHOD_LEN:
        raise ValueError(f"method name of {meth_len} bytes exceeds {MAX_METHOD_LEN}")
    cdef Py_ssize_t nbuf = len(buffers)
    if nbuf > MAX_BUFFERS:
        raise ValueError(f"{nbuf} out-of-band buffers exceed {MAX_BUFFERS}")

    cdef Py_buffer pbuf
    cdef const char* pdata = NULL
    cdef Py_ssize_t plen
    cdef bint have_pbuf = False
    body = None
    if type(payload) is bytes:
        pdata = PyBytes_AS_STRING(payload)
        plen = len(<bytes>payload)
    else:
        body = _as_bytes_view(payload)
        plen = body.nbytes
    if <unsigned long long>plen > MAX_PAYLOAD_LEN:
        raise ValueError(f"payload of {plen} bytes exceeds {MAX_PAYLOAD_LEN}")
    cdef bint join = plen < JOIN_PAYLOAD_THRESHOLD
    views = [_as_bytes_view(b) for b in buffers] if nbuf else []

    cdef Py_ssize_t head_len = HEADER_SIZE + nbuf * BUFLEN_SIZE + oid_len + meth_len
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head_len + (plen if join else 0))
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(MAGIC), MAGIC_LEN)
    _put_u16(p + OFF_VERSION, PROTOCOL_VERSION)
    p[OFF_TYPE] = <unsigned char>msg_type
    p[OFF_OIDLEN] = <unsigned char>oid_len
    _put_u16(p + OFF_FLAGS, flags)
    _put_u16(p + OFF_METHLEN, meth_len)
    _put_u32(p + OFF_SEQ, seq)
    _put_u32(p + OFF_PLEN, plen)
    _put_u16(p + OFF_NBUF, nbuf)
    _put_u16(p + OFF_MACLEN, mac_size)
    cdef unsigned char* q = p + HEADER_SIZE
    cdef Py_ssize_t i
    for i in range(nbuf):
        _put_u64(q, views[i].nbytes)
        q += BUFLEN_SIZE
    memcpy(q, PyBytes_AS_STRING(oid), oid_len)
    q += oid_len
    memcpy(q, PyBytes_AS_STRING(meth), meth_len)
    q += meth_len
    if join:
        if pdata != NULL:
            memcpy(q, pdata, plen)
        elif plen:
            PyObject_GetBuffer(body, &pbuf, PyBUF_SIMPLE)
            try:
                memcpy(q, pbuf.buf, plen)
            finally:
                PyBuffer_Release(&pbuf)
        segments = [out]
    else:
        segments = [out, payload if body is None else body]
    if nbuf:
        segments.extend(views)
    return segments


@cython.final
cdef class FrameDecoder:
    """Streaming frame decoder: bytes in, complete frames out.

    Args:
        max_message_size: the largest payload plus buffers a frame may announce, in bytes.

    Raises:
        ValueError: ``max_message_size`` is not positive.
    """

    cdef unsigned long long _max  # size limit for payload plus buffers
    cdef bytearray _buf  # receive buffer for small frames
    cdef Py_ssize_t _start  # read offset into _buf
    cdef Py_ssize_t _end  # write offset into _buf
    cdef object _error  # the ProtocolError that stopped the decoder, or None
    # A large frame in progress is received into its parts, in order: the payload, each
    # out-of-band buffer, the MAC (zero-length parts are left out of _parts).
    cdef bint _in_large  # a large frame is in progress
    cdef list _parts  # the _ReceivedBytes still to fill and those filled, in order
    cdef list _views  # a writable memoryview of each entry of _parts
    cdef Py_ssize_t _part  # index of the part being received into
    cdef char* _part_ptr  # its memory
    cdef Py_ssize_t _part_len  # its length
    cdef Py_ssize_t _part_filled  # bytes of it received so far
    cdef Py_ssize_t _large_len  # the body length: payload + buffers + MAC
    cdef Py_ssize_t _large_filled  # bytes of the body received so far
    cdef object _l_payload  # the frame's payload view
    cdef list _l_buffers  # the frame's buffer views
    cdef _ReceivedBytes _l_mac  # the MAC part, or None
    # The head of the large frame in progress.
    cdef int _l_type
    cdef unsigned int _l_flags
    cdef unsigned long long _l_seq
    cdef str _l_oid
    cdef str _l_meth
    cdef Py_ssize_t _l_plen
    cdef list _l_buflens
    cdef Py_ssize_t _l_maclen
    cdef bytes _l_head
    cdef Py_ssize_t _l_headlen

    def __init__(self, *, max_message_size=DEFAULT_MAX_MESSAGE_SIZE):
        if max_message_size <= 0:
            raise ValueError(f"max_message_size must be positive, not {max_message_size}")
        self._max = max_message_size
        self._buf = bytearray(RECV_BUFFER_SIZE)
        self._start = 0
        self._end = 0
        self._error = None
        self._in_large = False
        self._part_ptr = NULL

    @property
    def max_message_size(self):
        """The size limit this decoder enforces.

        Setting it changes the limit for every frame whose head is checked from then on;
        bytes already buffered stay (a handshake's limit is raised this way once granted).

        Raises:
            ValueError: a new limit that is not positive.
        """
        return self._max

    @max_message_size.setter
    def max_message_size(self, value):
        if value <= 0:
            raise ValueError(f"max_message_size must be positive, not {value}")
        self._max = value

    @property
    def buffered(self):
        """How many bytes of incomplete frames the decoder holds."""
        cdef Py_ssize_t pending = self._end - self._start
        if self._in_large:
            pending += self._large_filled + self._l_headlen
        return pending

    def feed(self, data):
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
        if type(data) is not bytes and type(data) is not bytearray:
            data = _as_bytes_view(data)  # the same ValueError as the pure engine
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        cdef const char* src = <const char*>view.buf
        cdef Py_ssize_t total = view.len
        cdef Py_ssize_t offset = 0
        cdef Py_ssize_t n
        frames = []
        try:
            while offset < total:
                if self._in_large:
                    offset += self._fill_large(src + offset, total - offset)
                    if self._large_filled < self._large_len:
                        continue  # all of data went into the frame's parts
                    frames.append(self._finish_large())
                else:
                    if len(self._buf) - self._end < total - offset:
                        self._make_room(total - offset)
                    n = total - offset
                    memcpy(PyByteArray_AS_STRING(self._buf) + self._end, src + offset, n)
                    offset += n
                    self._end += n
                self._parse_checked(frames)
        finally:
            PyBuffer_Release(&view)
        return frames

    def get_buffer(self, sizehint=-1):
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
            return self._views[self._part][self._part_filled:]
        cdef Py_ssize_t free = len(self._buf) - self._end
        cdef Py_ssize_t want = max(sizehint, 1)
        if free < want or free == 0:
            self._make_room(want)
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, nbytes):
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
        frames = []
        if self._in_large:
            if nbytes < 0 or self._part_filled + nbytes > self._part_len:
                raise ValueError(f"buffer_updated({nbytes}) beyond the buffer handed out")
            self._advance(nbytes)
            if self._large_filled < self._large_len:
                return frames
            frames.append(self._finish_large())
        else:
            if nbytes < 0 or self._end + nbytes > len(self._buf):
                raise ValueError(f"buffer_updated({nbytes}) beyond the buffer handed out")
            self._end += <Py_ssize_t>nbytes
        self._parse_checked(frames)
        return frames

    cdef int _parse_checked(self, list frames) except -1:
        try:
            self._parse(frames)
        except ProtocolError as exc:
            self._error = exc
            raise
        return 0

    cdef int _check_usable(self) except -1:
        if self._error is not None:
            raise ProtocolError(f"decoder refuses input after an earlier error: {self._error}")
        return 0

    cdef int _make_room(self, Py_ssize_t want) except -1:
        cdef Py_ssize_t used = self._end - self._start
        cdef Py_ssize_t size
        cdef bytearray grown
        if self._start and used + want <= len(self._buf):
            memcpy(PyByteArray_AS_STRING(self._buf),
                   PyByteArray_AS_STRING(self._buf) + self._start, used)
        else:
            # A new buffer rather than a resize: views handed out earlier may still be alive.
            size = len(self._buf)
            while size < used + want:
                size *= 2
            grown = bytearray(size)
            memcpy(PyByteArray_AS_STRING(grown),
                   PyByteArray_AS_STRING(self._buf) + self._start, used)
            self._buf = grown
        self._start = 0
        self._end = used
        return 0

    cdef int _parse(self, list frames) except -1:
        cdef const unsigned char* base
        cdef const unsigned char* h
        cdef Py_ssize_t start, avail, table_end, head_len, body_len, pos, i
        cdef unsigned int version, msg_type, oid_len, flags, meth_len, nbuf, mac_len
        cdef unsigned long long seq, plen, blen, data_len
        cdef list buflens
        cdef Frame frame
        while not self._in_large:
            start = self._start
            avail = self._end - start
            if avail < HEADER_SIZE:
                break
            base = <const unsigned char*>PyByteArray_AS_STRING(self._buf)
            h = base + start
            if memcmp(h, PyBytes_AS_STRING(MAGIC), MAGIC_LEN) != 0:
                raise ProtocolError(
                    f"invalid header: magic {bytes(h[:MAGIC_LEN])!r} is not {MAGIC!r}"
                )
            version = _get_u16(h + OFF_VERSION)
            msg_type = h[OFF_TYPE]
            oid_len = h[OFF_OIDLEN]
            flags = _get_u16(h + OFF_FLAGS)
            meth_len = _get_u16(h + OFF_METHLEN)
            seq = _get_u32(h + OFF_SEQ)
            plen = _get_u32(h + OFF_PLEN)
            nbuf = _get_u16(h + OFF_NBUF)
            mac_len = _get_u16(h + OFF_MACLEN)
            if version != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"incompatible protocol version {version} "
                    f"(this side speaks {PROTOCOL_VERSION})"
                )
            if msg_type < MSG_MIN or msg_type > MSG_MAX:
                raise ProtocolError(f"invalid header: unknown message type {msg_type}")
            if flags & ~FLAGS_KNOWN:
                raise ProtocolError(f"invalid header: unknown flag bits {flags:#x}")
            if meth_len > MAX_METHOD_LEN:
                raise ProtocolError(
                    f"invalid header: method name of {meth_len} bytes exceeds "
                    f"{MAX_METHOD_LEN}"
                )
            if nbuf > MAX_BUFFERS:
                raise ProtocolError(
                    f"invalid header: {nbuf} out-of-band buffers exceed {MAX_BUFFERS}"
                )
            if mac_len != 0 and mac_len != MAC_SIZE:
                raise ProtocolError(f"invalid header: MAC length {mac_len}")
            if plen > self._max:
                raise MessageTooLargeError(plen, self._max)
            table_end = HEADER_SIZE + nbuf * BUFLEN_SIZE
            if avail < table_end:
                break
            data_len = plen
            buflens = []
            for i in range(nbuf):
                blen = _get_u64(h + HEADER_SIZE + i * BUFLEN_SIZE)
                # Checked per buffer so that the sum cannot overflow.
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
                oid = PyUnicode_DecodeASCII(<const char*>h + table_end, oid_len, NULL)
                meth = PyUnicode_DecodeUTF8(<const char*>h + table_end + oid_len, meth_len, NULL)
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"invalid header: undecodable name ({exc})") from None
            body_len = data_len + mac_len
            head = PyBytes_FromStringAndSize(<const char*>h, head_len) if mac_len else b""
            if head_len - HEADER_SIZE + body_len >= LARGE_FRAME_THRESHOLD:
                self._l_type = msg_type
                self._l_flags = flags
                self._l_seq = seq
                self._l_oid = oid
                self._l_meth = meth
                self._l_plen = plen
                self._l_buflens = buflens
                self._l_maclen = mac_len
                self._l_head = head
                self._l_headlen = head_len
                self._begin_large(start + head_len, body_len)
                if self._large_filled == self._large_len:
                    frames.append(self._finish_large())
                continue
            if avail < head_len + body_len:
                break
            pos = start + head_len
            frame = Frame.__new__(Frame)
            frame.msg_type = msg_type
            frame.flags = flags
            frame.seq = seq
            frame.object_id = oid
            frame.method = meth
            frame.payload = PyBytes_FromStringAndSize(<const char*>base + pos, plen)
            pos += plen
            buffers = []
            for blen in buflens:
                buffers.append(PyBytes_FromStringAndSize(<const char*>base + pos, blen))
                pos += blen
            frame.buffers = buffers
            frame.mac = PyBytes_FromStringAndSize(<const char*>base + pos, mac_len)
            frame.head = head
            pos += mac_len
            frames.append(frame)
            if pos == self._end:
                self._start = self._end = 0
            else:
                self._start = pos
        return 0

    cdef int _begin_large(self, Py_ssize_t body_start, Py_ssize_t body_len) except -1:
        # One part per field, allocated uninitialised: every byte of it is received.
        cdef _ReceivedBytes part
        cdef list parts = []
        cdef list views = []
        buffers = []
        part = _new_received(self._l_plen)
        payload = memoryview(part)
        if self._l_plen:
            parts.append(part)
            views.append(payload)
        for blen in self._l_buflens:
            part = _new_received(blen)
            view = memoryview(part)
            buffers.append(view)
            if blen:
                parts.append(part)
                views.append(view)
        self._l_mac = None
        if self._l_maclen:
            self._l_mac = _new_received(self._l_maclen)
            parts.append(self._l_mac)
            views.append(memoryview(self._l_mac))
        self._l_payload = payload
        self._l_buffers = buffers
        self._parts = parts
        self._views = views
        self._large_len = body_len
        self._large_filled = 0
        self._in_large = True
        self._select_part(0)
        # The body bytes that came with the head are spread over the parts.
        cdef Py_ssize_t have = min(self._end - body_start, body_len)
        self._fill_large(PyByteArray_AS_STRING(self._buf) + body_start, have)
        cdef Py_ssize_t consumed = body_start + have
        if consumed == self._end:
            self._start = self._end = 0
        else:
            self._start = consumed
        return 0

    cdef int _select_part(self, Py_ssize_t index) except -1:
        cdef _ReceivedBytes part
        self._part = index
        self._part_filled = 0
        if index < len(self._parts):
            part = <_ReceivedBytes>self._parts[index]
            self._part_ptr = PyBytes_AS_STRING(part._value)
            self._part_len = PyBytes_GET_SIZE(part._value)
        else:
            self._part_ptr = NULL
            self._part_len = 0
        return 0

    cdef int _advance(self, Py_ssize_t nbytes) except -1:
        self._part_filled += nbytes
        self._large_filled += nbytes
        if self._part_filled == self._part_len and self._part_len:
            self._select_part(self._part + 1)
        return 0

    cdef Py_ssize_t _fill_large(self, const char* src, Py_ssize_t size) except -1:
        """Copy up to ``size`` bytes into the parts, in order; return how many were taken."""
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t n
        while done < size and self._part_len:
            n = min(self._part_len - self._part_filled, size - done)
            memcpy(self._part_ptr + self._part_filled, src + done, n)
            done += n
            self._advance(n)
        return done

    cdef Frame _finish_large(self):
        cdef Frame frame = Frame.__new__(Frame)
        frame.msg_type = self._l_type
        frame.flags = self._l_flags
        frame.seq = self._l_seq
        frame.object_id = self._l_oid
        frame.method = self._l_meth
        frame.payload = self._l_payload
        frame.buffers = self._l_buffers
        for view in self._l_buffers:
            (<_ReceivedBytes>view.obj)._complete = True
        (<_ReceivedBytes>self._l_payload.obj)._complete = True
        if self._l_mac is not None:
            self._l_mac._complete = True
            frame.mac = self._l_mac._value
        else:
            frame.mac = b""
        frame.head = self._l_head
        # The frame owns the parts now; the decoder keeps no reference to them.
        self._in_large = False
        self._parts = None
        self._views = None
        self._part_ptr = NULL
        self._part_len = 0
        self._part_filled = 0
        self._large_len = 0
        self._large_filled = 0
        self._l_payload = None
        self._l_buffers = None
        self._l_mac = None
        self._l_buflens = None
        self._l_head = None
        return frame


def _constants():
    """Return the layout constants this engine uses (compared with ``_wirespec`` by tests)."""
    return {
        "MAGIC": MAGIC,
        "PROTOCOL_VERSION": PROTOCOL_VERSION,
        "HEADER_SIZE": HEADER_SIZE,
        "BUFLEN_SIZE": BUFLEN_SIZE,
        "MAX_OBJID_LEN": MAX_OBJID_LEN,
        "MAX_METHOD_LEN": MAX_METHOD_LEN,
        "MAX_BUFFERS": MAX_BUFFERS,
        "MAC_SIZE": MAC_SIZE,
        "FLAGS_KNOWN": FLAGS_KNOWN,
        "MSG_TYPES": MSG_TYPES,
        "LARGE_FRAME_THRESHOLD": LARGE_FRAME_THRESHOLD,
        "JOIN_PAYLOAD_THRESHOLD": JOIN_PAYLOAD_THRESHOLD,
        "RECV_BUFFER_SIZE": RECV_BUFFER_SIZE,
        "DEFAULT_MAX_MESSAGE_SIZE": DEFAULT_MAX_MESSAGE_SIZE,
    }
