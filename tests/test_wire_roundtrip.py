"""Encode -> decode round trips through both wire engines, segment layout and zero copy."""

from __future__ import annotations

import ctypes
import gc
import re
import weakref
from array import array
from types import ModuleType
from typing import Any

import pytest
from wire_helpers import fields, join

from pyroact import _wirespec as spec
from pyroact.errors import MessageTooLargeError, ProtocolError

JOIN = spec.JOIN_PAYLOAD_THRESHOLD
LARGE = spec.LARGE_FRAME_THRESHOLD
MIB = 1 << 20
FLAG_VALUES = sorted(
    {0, spec.FLAGS_KNOWN} | {1 << bit for bit in range(16) if spec.FLAGS_KNOWN & (1 << bit)}
)
PAYLOAD_SIZES = [0, 1, 4096, JOIN - 1, JOIN, JOIN + 1, LARGE - 1, LARGE, LARGE + 1, MIB]


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, position-dependent content (a shifted or truncated copy would differ)."""
    block = bytes((i * 7 + seed) & 0xFF for i in range(251))
    return (block * (size // 251 + 1))[:size]


def decode_one(wire: ModuleType, data: bytes, **kwargs: Any) -> Any:
    decoder = wire.FrameDecoder(**kwargs)
    frames = decoder.feed(data)
    assert len(frames) == 1, frames
    assert decoder.buffered == 0
    return frames[0]


def head_len(object_id: str, method: str, nbuf: int) -> int:
    return spec.HEADER_SIZE + nbuf * spec.BUFLEN_SIZE + len(object_id) + len(method.encode())


def address(view: Any) -> int:
    """The address of the first byte of a writable buffer."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


# --------------------------------------------------------------------------- message types, flags


@pytest.mark.parametrize("msg_type", sorted(spec.MSG_TYPES), ids=spec.MSG_NAMES.get)
def test_every_message_type_and_flag_round_trips(wire: ModuleType, msg_type: int) -> None:
    for flags in FLAG_VALUES:
        payload = pattern(37, seed=flags)
        segments = wire.encode_frame(
            msg_type, flags=flags, seq=1000 + flags, object_id="obj", method="meth", payload=payload
        )
        frame = decode_one(wire, join(segments))
        assert fields(frame) == (
            msg_type,
            flags,
            1000 + flags,
            "obj",
            "meth",
            payload,
            [],
            b"",
            b"",
        )
        assert frame == wire.Frame(
            msg_type, flags=flags, seq=1000 + flags, object_id="obj", method="meth", payload=payload
        )


def test_header_bytes_follow_the_spec(wire: ModuleType) -> None:
    segments = wire.encode_frame(
        spec.MSG_REPLY,
        flags=spec.FLAG_STATELOST,
        seq=0x01020304,
        object_id="ab",
        method="c",
        payload=b"xyz",
        buffers=[b"12345"],
        mac_size=spec.MAC_SIZE,
    )
    data = join(segments)
    assert spec.HEADER_STRUCT.unpack_from(data) == (
        spec.MAGIC,
        spec.PROTOCOL_VERSION,
        spec.MSG_REPLY,
        2,
        spec.FLAG_STATELOST,
        1,
        0x01020304,
        3,
        1,
        spec.MAC_SIZE,
    )
    assert spec.BUFLEN_STRUCT.unpack_from(data, spec.HEADER_SIZE) == (5,)
    assert data[spec.HEADER_SIZE + 8 :] == b"abcxyz12345"


# --------------------------------------------------------------------------- payload sizes


@pytest.mark.parametrize("size", PAYLOAD_SIZES)
def test_payload_sizes_round_trip(wire: ModuleType, size: int) -> None:
    payload = pattern(size, seed=size)
    segments = wire.encode_frame(spec.MSG_REQUEST, seq=size, payload=payload)
    data = join(segments)
    assert len(data) == spec.HEADER_SIZE + size
    frame = decode_one(wire, data)
    assert fields(frame) == (spec.MSG_REQUEST, 0, size, "", "", payload, [], b"", b"")
    # A body (everything after the fixed header) at the threshold gets a buffer of its own and
    # the payload comes out as a view of it; a smaller one is copied out as bytes.
    if size >= LARGE:
        assert isinstance(frame.payload, memoryview)
    else:
        assert type(frame.payload) is bytes


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_large_frame_threshold_counts_the_whole_body(wire: ModuleType, delta: int) -> None:
    # object id + method + buffer table + payload + buffers + MAC make up the body.
    oid, meth, buffers = "o" * 10, "m" * 6, [b"b" * 100, b""]
    body_fixed = len(oid) + len(meth) + 2 * spec.BUFLEN_SIZE + 100 + spec.MAC_SIZE
    payload = pattern(LARGE - body_fixed + delta)
    mac = bytes(range(32))
    segments = wire.encode_frame(
        spec.MSG_REQUEST,
        object_id=oid,
        method=meth,
        payload=payload,
        buffers=buffers,
        mac_size=spec.MAC_SIZE,
    )
    frame = decode_one(wire, join([*segments, mac]))
    assert bytes(frame.payload) == payload
    assert [bytes(b) for b in frame.buffers] == buffers
    assert frame.mac == mac
    assert isinstance(frame.payload, memoryview) == (delta >= 0)


def test_payload_of_any_buffer_type(wire: ModuleType) -> None:
    doubles = array("d", [1.5, -2.25, 1e300])
    for payload, expected in [
        (b"abc", b"abc"),
        (bytearray(b"abc"), b"abc"),
        (memoryview(b"xabcx")[1:4], b"abc"),
        (doubles, doubles.tobytes()),
        (memoryview(doubles), doubles.tobytes()),
        (array("d", [0.5]) * 3000, (array("d", [0.5]) * 3000).tobytes()),
    ]:
        frame = decode_one(wire, join(wire.encode_frame(spec.MSG_REPLY, payload=payload)))
        assert bytes(frame.payload) == expected


# --------------------------------------------------------------------------- out-of-band buffers


def _buffer_sets() -> list[Any]:
    doubles = array("d", [float(i) / 3 for i in range(1000)])
    return [
        pytest.param([], id="none"),
        pytest.param([pattern(100)], id="one-bytes"),
        pytest.param([bytearray(pattern(5000))], id="one-bytearray"),
        pytest.param([memoryview(pattern(300))[10:200]], id="one-memoryview"),
        pytest.param([memoryview(doubles)], id="one-array-d"),
        pytest.param(
            [
                pattern(10, 1),
                b"",
                bytearray(pattern(2000, 2)),
                memoryview(pattern(70000, 3)),
                doubles,
                memoryview(array("i", range(500))),
            ],
            id="several",
        ),
        pytest.param([pattern(MIB, 4)], id="one-1MiB"),
    ]


@pytest.mark.parametrize("buffers", _buffer_sets())
@pytest.mark.parametrize("payload_size", [0, 50, JOIN])
def test_out_of_band_buffers_round_trip(
    wire: ModuleType, buffers: list[Any], payload_size: int
) -> None:
    payload = pattern(payload_size)
    segments = wire.encode_frame(
        spec.MSG_REQUEST, object_id="x", method="y", payload=payload, buffers=buffers
    )
    expected = [bytes(memoryview(b)) for b in buffers]
    # Buffers are separate segments, sent as they are.
    if buffers:
        assert [bytes(memoryview(s)) for s in segments[-len(buffers) :]] == expected
    frame = decode_one(wire, join(segments))
    assert bytes(frame.payload) == payload
    assert [bytes(b) for b in frame.buffers] == expected
    assert len(frame.buffers) == len(buffers)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("object_id", "method"),
    [
        ("", ""),
        ("Pyro.NameServer", "resolve"),
        ("a" * spec.MAX_OBJID_LEN, "m"),
        ("0123abcdef" * 3 + "ff", "méthode"),
        ("obj", "日本語のメソッド"),
        ("obj", "\U0001f600" * (spec.MAX_METHOD_LEN // 4)),  # exactly 1024 UTF-8 bytes
        ("obj", "é" * (spec.MAX_METHOD_LEN // 2)),  # 512 characters, 1024 bytes
        ("x\x00y\x7f", "a\x00b"),
    ],
)
def test_object_ids_and_method_names_round_trip(
    wire: ModuleType, object_id: str, method: str
) -> None:
    segments = wire.encode_frame(spec.MSG_ONEWAY, object_id=object_id, method=method, payload=b"p")
    data = join(segments)
    assert len(data) == head_len(object_id, method, 0) + 1
    frame = decode_one(wire, data)
    assert (frame.object_id, frame.method, bytes(frame.payload)) == (object_id, method, b"p")


def test_method_name_limit_is_in_utf8_bytes(wire: ModuleType) -> None:
    wire.encode_frame(spec.MSG_REQUEST, method="é" * 512)  # 1024 bytes: fine
    with pytest.raises(ValueError, match=r"\b1026\b.*\b1024\b"):
        wire.encode_frame(spec.MSG_REQUEST, method="é" * 513)  # 513 characters, 1026 bytes


# --------------------------------------------------------------------------- MAC trailer


@pytest.mark.parametrize("payload_size", [0, 40, JOIN, MIB])
@pytest.mark.parametrize("nbuf", [0, 2])
def test_mac_trailer_and_head(wire: ModuleType, payload_size: int, nbuf: int) -> None:
    mac = bytes(range(100, 132))
    payload = pattern(payload_size)
    buffers = [pattern(1000 * (i + 1), i) for i in range(nbuf)]
    segments = wire.encode_frame(
        spec.MSG_REQUEST,
        seq=7,
        object_id="objid",
        method="méth",
        payload=payload,
        buffers=buffers,
        mac_size=spec.MAC_SIZE,
    )
    data = join([*segments, mac])
    hlen = head_len("objid", "méth", nbuf)
    frame = decode_one(wire, data)
    assert frame.mac == mac
    assert type(frame.mac) is bytes
    assert frame.head == data[:hlen]
    assert data[hlen : hlen + payload_size] == payload
    assert bytes(frame.payload) == payload
    assert [bytes(b) for b in frame.buffers] == buffers


def test_frame_without_mac_has_empty_mac_and_head(wire: ModuleType) -> None:
    for payload in (b"small", pattern(MIB)):
        frame = decode_one(wire, join(wire.encode_frame(spec.MSG_REPLY, payload=payload)))
        assert frame.mac == b""
        assert frame.head == b""


# --------------------------------------------------------------------------- seq


@pytest.mark.parametrize("seq", [0, 1, 0x7FFFFFFF, 0x80000000, spec.MAX_SEQ])
def test_seq_round_trips(wire: ModuleType, seq: int) -> None:
    frame = decode_one(wire, join(wire.encode_frame(spec.MSG_REPLY, seq=seq)))
    assert frame.seq == seq
    assert spec.MAX_SEQ == 2**32 - 1


# --------------------------------------------------------------------------- size limit


@pytest.mark.parametrize("limit", [1000, LARGE + 100])
def test_message_exactly_at_the_limit_passes_one_byte_over_fails(
    wire: ModuleType, limit: int
) -> None:
    at_limit = join(wire.encode_frame(spec.MSG_REQUEST, payload=pattern(limit)))
    frame = decode_one(wire, at_limit, max_message_size=limit)
    assert bytes(frame.payload) == pattern(limit)

    over = join(wire.encode_frame(spec.MSG_REQUEST, payload=pattern(limit + 1)))
    decoder = wire.FrameDecoder(max_message_size=limit)
    with pytest.raises(MessageTooLargeError) as info:
        decoder.feed(over)
    assert (info.value.size, info.value.limit) == (limit + 1, limit)


def test_limit_counts_payload_plus_buffers_but_not_the_mac(wire: ModuleType) -> None:
    limit = 3000
    mac = bytes(32)
    ok = wire.encode_frame(
        spec.MSG_REQUEST, payload=pattern(1000), buffers=[pattern(1500), pattern(500)], mac_size=32
    )
    frame = decode_one(wire, join([*ok, mac]), max_message_size=limit)
    assert [len(b) for b in frame.buffers] == [1500, 500]

    over = wire.encode_frame(
        spec.MSG_REQUEST, payload=pattern(1000), buffers=[pattern(1500), pattern(501)]
    )
    with pytest.raises(MessageTooLargeError) as info:
        wire.FrameDecoder(max_message_size=limit).feed(join(over))
    assert (info.value.size, info.value.limit) == (3001, limit)
    assert issubclass(MessageTooLargeError, ProtocolError)


def test_decoder_rejects_non_positive_limit(wire: ModuleType) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"{bad}"):
            wire.FrameDecoder(max_message_size=bad)
    assert wire.FrameDecoder().max_message_size == spec.DEFAULT_MAX_MESSAGE_SIZE
    assert wire.FrameDecoder(max_message_size=12345).max_message_size == 12345


# --------------------------------------------------------------------------- encoder errors

ENCODER_ERRORS = [
    pytest.param(0, {}, ValueError, r"\b0\b", id="msg-type-0"),
    pytest.param(10, {}, ValueError, r"\b10\b", id="msg-type-10"),
    pytest.param(255, {}, ValueError, r"\b255\b", id="msg-type-255"),
    pytest.param(-5, {}, ValueError, r"-5\b", id="msg-type-negative"),
    pytest.param(5, {"flags": 0x0010}, ValueError, r"0x10\b", id="flag-0x10"),
    pytest.param(5, {"flags": 0x8001}, ValueError, r"0x8001\b", id="flag-0x8001"),
    pytest.param(5, {"flags": 1 << 20}, ValueError, r"0x100000\b", id="flag-bit-20"),
    pytest.param(5, {"flags": -1}, ValueError, r"-0x1\b", id="flag-negative"),
    pytest.param(5, {"seq": -1}, ValueError, r"-1\b", id="seq-negative"),
    pytest.param(5, {"seq": 2**32}, ValueError, r"\b4294967296\b", id="seq-2**32"),
    pytest.param(5, {"seq": 2**70}, ValueError, str(2**70), id="seq-huge"),
    pytest.param(5, {"object_id": "a" * 256}, ValueError, r"\b256\b.*\b255\b", id="oid-256"),
    pytest.param(5, {"object_id": "é"}, ValueError, "ascii", id="oid-non-ascii"),
    pytest.param(5, {"object_id": b"abc"}, TypeError, r"\bbytes\b", id="oid-bytes"),
    pytest.param(5, {"object_id": None}, TypeError, "NoneType", id="oid-none"),
    pytest.param(5, {"object_id": 17}, TypeError, r"\bint\b", id="oid-int"),
    pytest.param(5, {"method": "m" * 1025}, ValueError, r"\b1025\b.*\b1024\b", id="method-1025"),
    pytest.param(5, {"method": b"m"}, TypeError, r"\bbytes\b", id="method-bytes"),
    pytest.param(5, {"mac_size": 16}, ValueError, r"\b16\b.*\b32\b", id="mac-16"),
    pytest.param(5, {"mac_size": 33}, ValueError, r"\b33\b", id="mac-33"),
    pytest.param(5, {"mac_size": -32}, ValueError, r"-32\b", id="mac-negative"),
    pytest.param(5, {"buffers": [b""] * 4097}, ValueError, r"\b4097\b.*\b4096\b", id="4097-bufs"),
    pytest.param(5, {"payload": "text"}, TypeError, "str", id="payload-str"),
    pytest.param(5, {"payload": 12}, TypeError, "int", id="payload-int"),
    pytest.param(5, {"buffers": [b"ok", 3]}, TypeError, "int", id="buffer-int"),
    pytest.param(5, {"buffers": ["s"]}, TypeError, "str", id="buffer-str"),
]


@pytest.mark.parametrize(("msg_type", "kwargs", "exc", "pattern_"), ENCODER_ERRORS)
def test_encoder_rejects_bad_fields(
    wire: ModuleType, msg_type: int, kwargs: dict[str, Any], exc: type, pattern_: str
) -> None:
    with pytest.raises(exc) as info:
        wire.encode_frame(msg_type, **kwargs)
    assert re.search(pattern_, str(info.value)), str(info.value)


def test_encoder_accepts_the_limits(wire: ModuleType) -> None:
    segments = wire.encode_frame(
        max(spec.MSG_TYPES),
        flags=spec.FLAGS_KNOWN,
        seq=spec.MAX_SEQ,
        object_id="a" * spec.MAX_OBJID_LEN,
        method="m" * spec.MAX_METHOD_LEN,
        buffers=[b"x"] * spec.MAX_BUFFERS,
        mac_size=spec.MAC_SIZE,
    )
    frame = decode_one(wire, join([*segments, bytes(32)]))
    assert len(frame.buffers) == spec.MAX_BUFFERS
    assert frame.seq == spec.MAX_SEQ
    assert len(frame.method) == spec.MAX_METHOD_LEN


def test_encoder_keyword_only(wire: ModuleType) -> None:
    with pytest.raises(TypeError):
        wire.encode_frame(spec.MSG_REQUEST, 0)


@pytest.mark.parametrize("where", ["payload", "buffer"])
def test_encoder_rejects_non_contiguous_1d_views(wire: ModuleType, where: str) -> None:
    strided = memoryview(b"abcdefgh")[::2]
    kwargs: dict[str, Any] = {"payload": strided} if where == "payload" else {"buffers": [strided]}
    with pytest.raises(ValueError, match="C-contiguous"):
        wire.encode_frame(spec.MSG_REQUEST, **kwargs)


def test_encoder_rejects_non_contiguous_2d_views(wire: ModuleType) -> None:
    grid = memoryview(bytearray(16)).cast("B", (4, 4))[::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        wire.encode_frame(spec.MSG_REQUEST, payload=grid)


# --------------------------------------------------------------------------- several frames


def _mixed_stream(wire: ModuleType) -> tuple[bytes, list[tuple[Any, ...]]]:
    specs = [
        dict(msg_type=spec.MSG_REQUEST, seq=1, object_id="a", method="f", payload=b"one"),
        dict(msg_type=spec.MSG_REPLY, seq=1, payload=pattern(MIB), buffers=[b"xy"]),
        dict(msg_type=spec.MSG_ONEWAY, seq=2, method="g", payload=b"", buffers=[pattern(LARGE)]),
        dict(msg_type=spec.MSG_CLOSE, seq=3),
        dict(msg_type=spec.MSG_EXCEPTION, seq=4, payload=pattern(JOIN + 5), mac=bytes(range(32))),
        dict(msg_type=spec.MSG_REQUEST, seq=5, payload=pattern(200), buffers=[b"", b"q"]),
    ]
    data = b""
    expected = []
    for item in specs:
        item = dict(item)
        mac = item.pop("mac", b"")
        segments = wire.encode_frame(**item, mac_size=len(mac))
        encoded = join([*segments, mac])
        hlen = head_len(
            item.get("object_id", ""), item.get("method", ""), len(item.get("buffers", []))
        )
        expected.append(
            (
                item["msg_type"],
                0,
                item["seq"],
                item.get("object_id", ""),
                item.get("method", ""),
                bytes(item.get("payload", b"")),
                [bytes(b) for b in item.get("buffers", [])],
                mac,
                encoded[:hlen] if mac else b"",
            )
        )
        data += encoded
    return data, expected


def test_concatenated_frames_in_one_feed_come_out_in_order(wire: ModuleType) -> None:
    data, expected = _mixed_stream(wire)
    decoder = wire.FrameDecoder()
    frames = decoder.feed(data)
    assert [fields(f) for f in frames] == expected
    assert decoder.buffered == 0
    # The same decoder keeps going.
    assert [fields(f) for f in decoder.feed(data)] == expected


def test_concatenated_frames_through_get_buffer(wire: ModuleType) -> None:
    data, expected = _mixed_stream(wire)
    decoder = wire.FrameDecoder()
    frames: list[Any] = []
    pos = 0
    while pos < len(data):
        view = decoder.get_buffer(len(data) - pos)
        n = min(len(view), len(data) - pos)
        assert n > 0
        view[:n] = data[pos : pos + n]
        pos += n
        frames.extend(decoder.buffer_updated(n))
    assert [fields(f) for f in frames] == expected
    assert decoder.buffered == 0


# --------------------------------------------------------------------------- segment structure


@pytest.mark.parametrize("size", [0, 1, 100, 4096, JOIN - 1])
def test_small_payload_is_one_segment(wire: ModuleType, size: int) -> None:
    segments = wire.encode_frame(spec.MSG_REQUEST, object_id="o", method="m", payload=pattern(size))
    assert len(segments) == 1
    assert len(memoryview(segments[0])) == head_len("o", "m", 0) + size


@pytest.mark.parametrize("size", [JOIN, JOIN + 1, LARGE, MIB])
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_large_payload_is_head_payload_then_buffers(
    wire: ModuleType, size: int, kind: type
) -> None:
    payload = kind(pattern(size))
    buffers = [bytearray(b"first"), b"second", memoryview(array("d", [1.0, 2.0]))]
    segments = wire.encode_frame(
        spec.MSG_REQUEST, object_id="o", method="m", payload=payload, buffers=buffers
    )
    assert len(segments) == 2 + len(buffers)
    assert len(memoryview(segments[0])) == head_len("o", "m", len(buffers))
    # The payload and each buffer are sent from where they lie, not copied.
    assert memoryview(segments[1]).obj is payload
    assert memoryview(segments[1]).nbytes == size
    for segment, buffer in zip(segments[2:], buffers, strict=True):
        view = memoryview(segment)
        assert view.obj is (buffer.obj if isinstance(buffer, memoryview) else buffer)
        assert bytes(view) == bytes(memoryview(buffer))


def test_small_payload_with_buffers_is_head_then_buffers(wire: ModuleType) -> None:
    buffers = [b"a" * 10, bytearray(b"b" * 20)]
    segments = wire.encode_frame(spec.MSG_REPLY, payload=b"pay", buffers=buffers)
    assert len(segments) == 3
    assert len(memoryview(segments[0])) == head_len("", "", 2) + 3
    assert [bytes(memoryview(s)) for s in segments[1:]] == [bytes(b) for b in buffers]


# --------------------------------------------------------------------------- zero copy


def test_encode_does_not_copy_a_large_buffer(wire: ModuleType) -> None:
    buffer = bytearray(pattern(MIB))
    payload = bytearray(pattern(MIB, 9))
    segments = wire.encode_frame(spec.MSG_REQUEST, payload=payload, buffers=[buffer])
    assert len(segments) == 3
    assert address(segments[1]) == address(payload)
    assert address(segments[2]) == address(buffer)
    # Proof by mutation: a change to the original shows in the segment.
    buffer[-1] ^= 0xFF
    assert memoryview(segments[2])[-1] == buffer[-1]


def test_encode_does_not_copy_a_multibyte_format_buffer(wire: ModuleType) -> None:
    doubles = array("d", range(MIB // 8))
    segments = wire.encode_frame(spec.MSG_REQUEST, buffers=[doubles])
    view = memoryview(segments[-1])
    assert view.format == "B" and view.nbytes == MIB
    assert address(segments[-1]) == address(doubles)


def bytes_address(value: bytes) -> int:
    """The address of the first byte of a ``bytes`` object (ctypes does not copy it)."""
    address = ctypes.cast(ctypes.c_char_p(value), ctypes.c_void_p).value
    assert address is not None
    return address


def receive_like_a_socket(
    decoder: Any, data: bytes, chunks: list[int]
) -> tuple[list[Any], list[tuple[int, int]]]:
    """``recv_into`` each view ``get_buffer`` hands out, at most the next chunk size at a time.

    Returns the frames and, per view, (address of the view, bytes written into it).
    """
    frames: list[Any] = []
    written: list[tuple[int, int]] = []
    pos = 0
    index = 0
    while pos < len(data):
        chunk = chunks[index % len(chunks)]
        index += 1
        view = decoder.get_buffer(chunk)
        assert not view.readonly
        n = min(len(view), chunk, len(data) - pos)
        view[:n] = data[pos : pos + n]
        written.append((address(view), n))
        pos += n
        frames.extend(decoder.buffer_updated(n))
    return frames, written


def test_large_buffer_is_received_in_place(wire: ModuleType) -> None:
    """Simulate a socket: ``recv_into`` each view ``get_buffer`` hands out, in chunks."""
    original = pattern(MIB, 5)
    data = join(wire.encode_frame(spec.MSG_REQUEST, seq=9, payload=b"pickle", buffers=[original]))
    decoder = wire.FrameDecoder()
    chunk = 100_003  # not a divisor of anything: the chunks straddle the head and the body
    frames, written = receive_like_a_socket(decoder, data, [chunk])
    assert len(frames) == 1 and decoder.buffered == 0
    frame = frames[0]
    assert bytes(frame.payload) == b"pickle"
    (buffer,) = frame.buffers
    assert isinstance(buffer, memoryview) and bytes(buffer) == original

    start = address(buffer)
    end = start + buffer.nbytes
    # Only the first chunk went to the small receive buffer (it holds the head); every later
    # view lay inside the decoded buffer, the last one ending where the buffer ends: those
    # bytes were written to their final place and never copied.
    first, *rest = written
    assert rest and all(start <= addr and addr + n <= end for addr, n in rest)
    in_first = first[1] - (len(data) - MIB)  # the buffer's bytes that came with the head
    assert [addr for addr, _ in rest] == [
        start + in_first + sum(n for _, n in rest[:i]) for i in range(len(rest))
    ]
    assert rest[-1][0] + rest[-1][1] == end


def test_every_part_of_a_large_frame_is_received_in_place(wire: ModuleType) -> None:
    """The payload, each buffer and the MAC are received into their own final memory, in order."""
    payload = pattern(LARGE + 3, 1)
    buffers = [pattern(MIB, 2), b"", pattern(70_001, 3), pattern(5, 4), b""]
    mac = bytes(range(32))
    data = join(
        [
            *wire.encode_frame(
                spec.MSG_REPLY,
                object_id="o",
                payload=payload,
                buffers=buffers,
                mac_size=spec.MAC_SIZE,
            ),
            mac,
        ]
    )
    hlen = head_len("o", "", len(buffers))
    decoder = wire.FrameDecoder()
    # The first piece holds the head and a few payload bytes; then odd sizes.
    frames, written = receive_like_a_socket(decoder, data, [hlen + 10, 65_537, 3, 200_001])
    (frame,) = frames
    assert decoder.buffered == 0
    assert fields(frame)[5:8] == (payload, buffers, mac)
    assert type(frame.payload) is memoryview
    assert all(type(b) is memoryview and not b.readonly for b in frame.buffers)
    # Where each field's bytes are now, in wire order (zero-length parts take no bytes).
    parts = [(address(frame.payload), len(payload))]
    parts += [(address(b), b.nbytes) for b in frame.buffers if b.nbytes]
    if wire.__name__.endswith("_fastwire"):
        parts.append((bytes_address(frame.mac), len(mac)))  # the MAC too, as bytes
    # After the first piece, every view handed out lay inside one part, and together they
    # filled each part from where the first piece left off to its end: the socket wrote every
    # byte into its final place, part by part.
    filled = {start: 0 for start, _ in parts}
    filled[parts[0][0]] = 10
    for addr, n in written[1:]:
        (start, size) = next((p for p in parts if p[0] <= addr < p[0] + p[1]), (None, 0))
        if start is None:
            assert not wire.__name__.endswith("_fastwire"), "the Cython engine copied a part"
            continue  # the pure engine's MAC is a copy of its part
        assert addr == start + filled[start], "a view is not where the part's missing bytes start"
        assert addr + n <= start + size, "a view spans two parts"
        filled[start] += n
    assert filled == {start: size for start, size in parts}


def test_the_decoder_keeps_no_reference_to_a_finished_frame(wire: ModuleType) -> None:
    data = join(
        wire.encode_frame(spec.MSG_REPLY, payload=pattern(100), buffers=[pattern(MIB), b"x"])
    )
    decoder = wire.FrameDecoder()
    frames, _ = receive_like_a_socket(decoder, data, [30_000])
    (frame,) = frames
    refs = [weakref.ref(frame.payload), *(weakref.ref(b) for b in frame.buffers)]
    del frame, frames
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    assert decoder.buffered == 0


@pytest.mark.parametrize("mac", [b"", bytes(range(32))])
def test_large_frame_with_empty_first_and_last_parts(wire: ModuleType, mac: bytes) -> None:
    # Zero-length parts take no bytes: the frame completes on the last byte of the last
    # non-empty part, whether the payload, the first or the last buffers are empty.
    buffers = [b"", pattern(LARGE, 6), b"", b""]
    data = join([*wire.encode_frame(spec.MSG_REPLY, buffers=buffers, mac_size=len(mac)), mac])
    hlen = head_len("", "", len(buffers))
    for frames in (
        wire.FrameDecoder().feed(data),
        receive_like_a_socket(wire.FrameDecoder(), data, [hlen, 7, 50_000])[0],
        receive_like_a_socket(wire.FrameDecoder(), data, [len(data) - 1, 1])[0],
    ):
        (frame,) = frames
        assert fields(frame)[5:8] == (b"", buffers, mac)
        assert type(frame.payload) is memoryview
        assert [type(b) for b in frame.buffers] == [memoryview] * 4


def test_cython_engine_receives_buffers_into_fresh_bytes() -> None:
    fast = pytest.importorskip("pyroact._fastwire")
    data = pattern(MIB, 8)
    segments = fast.encode_frame(spec.MSG_REPLY, payload=b"p", buffers=[data, b"", b"z"])
    decoder = fast.FrameDecoder()
    frames, _ = receive_like_a_socket(decoder, join(segments), [50_000])
    (frame,) = frames
    exporters = [b.obj for b in frame.buffers]
    received = [e.received_bytes for e in exporters]
    assert [type(r) for r in received] == [bytes] * 3
    assert received == [data, b"", b"z"]
    # The frame's buffers are writable views over exactly those bytes objects...
    assert not frame.buffers[0].readonly
    assert address(frame.buffers[0]) == bytes_address(received[0])
    # ...and the exporter refuses new writable exports once the frame is complete.
    assert memoryview(exporters[0]).readonly
    with pytest.raises(TypeError):
        ctypes.c_char.from_buffer(exporters[0])
    # The exporter is the decoder's own: it cannot be made, or used empty, from Python.
    cls = type(exporters[0])
    with pytest.raises(TypeError):
        cls()
    with pytest.raises(BufferError):
        memoryview(cls.__new__(cls))
    assert cls.__new__(cls).received_bytes is None
