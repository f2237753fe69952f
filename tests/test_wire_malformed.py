"""Garbage in: the decoder raises only the ProtocolError family, early, and then stays failed."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wire_helpers import Blob, binary, join

from pyroact import _wirespec as spec
from pyroact.errors import MessageTooLargeError, ProtocolError

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MIB = 1 << 20
LIMIT = MIB  # keeps what a mutated length field can make the decoder allocate small


def header(
    *,
    magic: bytes = spec.MAGIC,
    version: int = spec.PROTOCOL_VERSION,
    msg_type: int = spec.MSG_REQUEST,
    oid_len: int = 0,
    flags: int = 0,
    meth_len: int = 0,
    seq: int = 0,
    plen: int = 0,
    nbuf: int = 0,
    mac_len: int = 0,
) -> bytes:
    return spec.HEADER_STRUCT.pack(
        magic, version, msg_type, oid_len, flags, meth_len, seq, plen, nbuf, mac_len
    )


def feed_all(decoder: Any, data: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``data`` in pieces; return the frames, letting any exception propagate."""
    frames: list[Any] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        frames.extend(decoder.feed(data[lo:hi]))
    return frames


def check_only_protocol_errors(wire: ModuleType, data: bytes, cuts: list[int]) -> None:
    decoder = wire.FrameDecoder(max_message_size=LIMIT)
    try:
        frames = feed_all(decoder, data, cuts)
    except ProtocolError:
        # A decoder that raised refuses everything after, even well-formed input.
        good = join(wire.encode_frame(spec.MSG_CLOSE))
        with pytest.raises(ProtocolError, match="refuses"):
            decoder.feed(good)
        with pytest.raises(ProtocolError, match="refuses"):
            decoder.get_buffer()
        with pytest.raises(ProtocolError, match="refuses"):
            decoder.buffer_updated(0)
        return
    for frame in frames:
        assert frame.msg_type in spec.MSG_TYPES
        assert not frame.flags & ~spec.FLAGS_KNOWN
        assert len(frame.mac) in (0, spec.MAC_SIZE)
        assert len(frame.payload) + sum(len(b) for b in frame.buffers) <= LIMIT
    assert decoder.buffered <= len(data)


def _valid_frames() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(
        st.sampled_from(sorted(spec.MSG_TYPES)),
        st.sampled_from([0, spec.FLAG_COMPRESSED, spec.FLAGS_KNOWN]),
        st.integers(0, spec.MAX_SEQ),
        st.text(st.characters(max_codepoint=127), max_size=10),
        st.text(max_size=10),
        st.one_of(binary(max_size=100), st.just(Blob(b"P" * 70_000))),
        st.lists(binary(max_size=30), max_size=3),
        st.sampled_from([b"", bytes(range(32))]),
    )


def encode(wire: ModuleType, fields: tuple[Any, ...]) -> bytes:
    msg_type, flags, seq, oid, meth, payload, buffers, mac = fields
    segments = wire.encode_frame(
        msg_type,
        flags=flags,
        seq=seq,
        object_id=oid,
        method=meth,
        payload=bytes(payload),  # plain bytes, not the Blob subclass
        buffers=buffers,
        mac_size=len(mac),
    )
    return join([*segments, mac])


# --------------------------------------------------------------------------- hypothesis


@SETTINGS
@given(data=binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
@example(data=b"PRAC" + bytes(20), cuts=[])
@example(data=b"PYRO" + bytes(40), cuts=[])
def test_random_bytes(wire: ModuleType, data: bytes, cuts: list[int]) -> None:
    check_only_protocol_errors(wire, data, cuts)


@SETTINGS
@given(
    prefix=st.sampled_from([b"", spec.MAGIC, spec.MAGIC + b"\x00\x01"]),
    rest=binary(min_size=18, max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=5),
)
def test_random_bytes_behind_a_plausible_prefix(
    wire: ModuleType, prefix: bytes, rest: bytes, cuts: list[int]
) -> None:
    check_only_protocol_errors(wire, prefix + rest, cuts)


@SETTINGS
@given(
    frames=st.lists(_valid_frames(), min_size=1, max_size=3),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete"]),
            # Mostly in the first head, where the interesting fields are; anywhere otherwise.
            st.one_of(st.integers(0, 63), st.integers(0, 10**6)),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
    cuts=st.lists(st.integers(0, 80_000), max_size=5),
)
def test_mutated_valid_frames(
    wire: ModuleType, frames: list[Any], edits: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    data = bytearray(b"".join(encode(wire, f) for f in frames))
    for op, where, value in edits:
        pos = where % (len(data) + 1)
        if op != "insert" and pos == len(data):
            pos -= 1
        if op == "flip" and data:
            data[pos] ^= 1 << (value % 8)
        elif op == "set" and data:
            data[pos] = value
        elif op == "insert":
            data[pos:pos] = bytes([value])
        elif op == "delete" and data:
            del data[pos]
    check_only_protocol_errors(wire, bytes(data), cuts)


# --------------------------------------------------------------------------- refusal after error


def test_decoder_refuses_input_after_an_error(wire: ModuleType) -> None:
    decoder = wire.FrameDecoder()
    with pytest.raises(ProtocolError, match="invalid header"):
        decoder.feed(b"GARBAGE!" * 3)
    good = join(wire.encode_frame(spec.MSG_REPLY, payload=b"fine"))
    for _ in range(2):
        with pytest.raises(ProtocolError, match="refuses input after an earlier error"):
            decoder.feed(good)
    with pytest.raises(ProtocolError, match="refuses"):
        decoder.get_buffer(100)
    with pytest.raises(ProtocolError, match="refuses"):
        decoder.buffer_updated(0)


def test_error_in_a_later_frame_keeps_the_earlier_ones_refused_after(wire: ModuleType) -> None:
    good = join(wire.encode_frame(spec.MSG_REPLY, seq=1, payload=b"ok"))
    decoder = wire.FrameDecoder()
    assert [f.seq for f in decoder.feed(good)] == [1]
    with pytest.raises(ProtocolError):
        decoder.feed(header(magic=b"XXXX"))
    with pytest.raises(ProtocolError):
        decoder.feed(good)


def test_failed_decoder_refuses_even_empty_input(wire: ModuleType) -> None:
    decoder = wire.FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(header(magic=b"XXXX"))
    with pytest.raises(ProtocolError, match="refuses"):
        decoder.feed(b"")


# --------------------------------------------------------------------------- header checks


@pytest.mark.parametrize("magic", [b"PYRO", b"prac", b"\x00\x00\x00\x00", b"PRAD"])
def test_wrong_magic_is_an_invalid_header(wire: ModuleType, magic: bytes) -> None:
    with pytest.raises(ProtocolError, match="invalid header") as info:
        wire.FrameDecoder().feed(header(magic=magic))
    assert type(info.value) is ProtocolError
    assert repr(magic) in str(info.value)


@pytest.mark.parametrize("version", [0, spec.PROTOCOL_VERSION + 1, 0xFFFF])
def test_wrong_version_is_incompatible(wire: ModuleType, version: int) -> None:
    with pytest.raises(ProtocolError, match="incompatible protocol version") as info:
        wire.FrameDecoder().feed(header(version=version))
    assert str(version) in str(info.value)


def test_bad_magic_detected_with_a_whole_header_only(wire: ModuleType) -> None:
    # The decoder waits for the fixed header before judging it.
    decoder = wire.FrameDecoder()
    bad = header(magic=b"PYRO")
    assert decoder.feed(bad[:-1]) == []
    with pytest.raises(ProtocolError, match="invalid header"):
        decoder.feed(bad[-1:])


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"msg_type": 0}, "unknown message type 0"),
        ({"msg_type": 10}, "unknown message type 10"),
        ({"msg_type": 255}, "unknown message type 255"),
        ({"flags": 0x0010}, "unknown flag bits 0x10"),
        ({"flags": 0x8000 | spec.FLAG_BATCH}, "unknown flag bits 0x8002"),
        ({"meth_len": spec.MAX_METHOD_LEN + 1}, f"{spec.MAX_METHOD_LEN + 1} bytes"),
        ({"nbuf": spec.MAX_BUFFERS + 1}, f"{spec.MAX_BUFFERS + 1} out-of-band"),
        ({"mac_len": 1}, "MAC length 1"),
        ({"mac_len": spec.MAC_SIZE + 1}, f"MAC length {spec.MAC_SIZE + 1}"),
    ],
)
def test_bad_header_fields(wire: ModuleType, fields: dict[str, int], fragment: str) -> None:
    with pytest.raises(ProtocolError, match="invalid header") as info:
        wire.FrameDecoder().feed(header(**fields))
    assert fragment in str(info.value)
    assert not isinstance(info.value, MessageTooLargeError)


@pytest.mark.parametrize("where", ["object_id", "method"])
def test_undecodable_names(wire: ModuleType, where: str) -> None:
    if where == "object_id":
        data = header(oid_len=2) + b"\xc3\xa9"  # UTF-8, but object ids are ASCII
    else:
        data = header(meth_len=2) + b"\xff\xfe"
    with pytest.raises(ProtocolError, match="invalid header: undecodable name"):
        wire.FrameDecoder().feed(data)


# --------------------------------------------------------------------------- size limit, early


def _feed_bytewise_until_error(decoder: Any, data: bytes) -> tuple[int, int]:
    """Feed one byte at a time; return (bytes fed when it raised, largest ``buffered`` seen)."""
    most = 0
    for i in range(len(data)):
        try:
            decoder.feed(data[i : i + 1])
        except MessageTooLargeError:
            return i + 1, max(most, decoder.buffered)
        most = max(most, decoder.buffered)
    raise AssertionError("no MessageTooLargeError")


def test_huge_payload_rejected_on_the_fixed_header(wire: ModuleType) -> None:
    decoder = wire.FrameDecoder(max_message_size=MIB)
    data = header(plen=2**31) + b"\x00" * 1000  # the "payload" follows
    fed, most = _feed_bytewise_until_error(decoder, data)
    assert fed == spec.HEADER_SIZE  # not one byte of payload was needed
    assert most <= spec.HEADER_SIZE  # and none was ever buffered
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00" * 100)
    assert decoder.buffered <= spec.HEADER_SIZE


def test_huge_payload_error_names_size_and_limit(wire: ModuleType) -> None:
    with pytest.raises(MessageTooLargeError) as info:
        wire.FrameDecoder(max_message_size=MIB).feed(header(plen=2**31))
    err = info.value
    assert (err.size, err.limit) == (2**31, MIB)
    assert "2147483648" in str(err)
    assert "PYRO_MAX_MESSAGE_SIZE=1048576" in str(err)
    assert isinstance(err, ProtocolError)


def test_max_u32_payload_with_default_limit(wire: ModuleType) -> None:
    with pytest.raises(MessageTooLargeError) as info:
        wire.FrameDecoder().feed(header(plen=spec.MAX_PAYLOAD_LEN))
    assert (info.value.size, info.value.limit) == (
        spec.MAX_PAYLOAD_LEN,
        spec.DEFAULT_MAX_MESSAGE_SIZE,
    )


@pytest.mark.parametrize("blen", [MIB + 1, 2**40, 2**64 - 1])
def test_huge_buffer_table_entry_rejected_on_the_table(wire: ModuleType, blen: int) -> None:
    table = spec.BUFLEN_STRUCT.pack(5) + spec.BUFLEN_STRUCT.pack(blen)
    data = header(plen=10, nbuf=2) + table + b"\x00" * 1000
    decoder = wire.FrameDecoder(max_message_size=MIB)
    fed, most = _feed_bytewise_until_error(decoder, data)
    assert fed == spec.HEADER_SIZE + len(table)
    assert most <= spec.HEADER_SIZE + len(table)


def test_huge_buffer_entry_error_names_size_and_limit(wire: ModuleType) -> None:
    data = header(nbuf=1) + spec.BUFLEN_STRUCT.pack(2**40)
    with pytest.raises(MessageTooLargeError) as info:
        wire.FrameDecoder(max_message_size=MIB).feed(data)
    assert (info.value.size, info.value.limit) == (2**40, MIB)
    assert f"{2**40}" in str(info.value) and "PYRO_MAX_MESSAGE_SIZE=1048576" in str(info.value)


def test_sum_of_payload_and_buffers_over_the_limit(wire: ModuleType) -> None:
    # Each part fits; together they do not.
    table = spec.BUFLEN_STRUCT.pack(400_000) + spec.BUFLEN_STRUCT.pack(400_000)
    data = header(plen=300_000, nbuf=2) + table
    decoder = wire.FrameDecoder(max_message_size=MIB)
    fed, _ = _feed_bytewise_until_error(decoder, data + b"\x00" * 100)
    assert fed == len(data)
    with pytest.raises(MessageTooLargeError) as info:
        wire.FrameDecoder(max_message_size=MIB).feed(data)
    assert (info.value.size, info.value.limit) == (1_100_000, MIB)
    assert "1100000" in str(info.value) and "1048576" in str(info.value)


def test_size_error_through_get_buffer(wire: ModuleType) -> None:
    decoder = wire.FrameDecoder(max_message_size=MIB)
    view = decoder.get_buffer()
    data = header(plen=MIB + 1)
    view[: len(data)] = data
    with pytest.raises(MessageTooLargeError):
        decoder.buffer_updated(len(data))
    with pytest.raises(ProtocolError, match="refuses"):
        decoder.get_buffer()


def test_buffer_updated_beyond_the_view(wire: ModuleType) -> None:
    decoder = wire.FrameDecoder()
    view = decoder.get_buffer()
    with pytest.raises(ValueError, match="beyond"):
        decoder.buffer_updated(len(view) + 1)
    with pytest.raises(ValueError, match="beyond"):
        decoder.buffer_updated(-1)
    # A misuse of the API is not a protocol error: the decoder still works.
    good = join(wire.encode_frame(spec.MSG_REPLY, payload=b"ok"))
    (frame,) = decoder.feed(good)
    assert bytes(frame.payload) == b"ok"


# --------------------------------------------------------------------------- large frames


def _large_frame(wire: ModuleType) -> bytes:
    buffers = [b"a" * 70_000, b"", b"b" * 3, b""]
    segments = wire.encode_frame(spec.MSG_REPLY, payload=b"p" * 10, buffers=buffers, mac_size=32)
    return join([*segments, b"M" * 32])


@pytest.mark.parametrize("garbage", [b"GARBAGE!" * 3, header(magic=b"XXXX"), header(version=9)])
def test_garbage_after_a_large_frame_in_one_feed(wire: ModuleType, garbage: bytes) -> None:
    decoder = wire.FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed(_large_frame(wire) + garbage)
    assert not isinstance(info.value, MessageTooLargeError)
    with pytest.raises(ProtocolError, match="refuses input after an earlier error"):
        decoder.feed(_large_frame(wire))
    with pytest.raises(ProtocolError, match="refuses"):
        decoder.get_buffer()
    with pytest.raises(ProtocolError, match="refuses"):
        decoder.buffer_updated(0)


def test_garbage_after_a_large_frame_through_get_buffer(wire: ModuleType) -> None:
    data = _large_frame(wire) + b"GARBAGE!" * 3
    decoder = wire.FrameDecoder()
    frames: list[Any] = []
    pos = 0
    with pytest.raises(ProtocolError, match="invalid header"):
        while pos < len(data):
            view = decoder.get_buffer(1000)
            n = min(len(view), 1000, len(data) - pos)
            view[:n] = data[pos : pos + n]
            pos += n
            frames.extend(decoder.buffer_updated(n))
    # The large frame came out whole before the garbage that followed it was seen.
    assert [bytes(b) for b in frames[0].buffers] == [b"a" * 70_000, b"", b"b" * 3, b""]
    assert frames[0].mac == b"M" * 32
    with pytest.raises(ProtocolError, match="refuses"):
        decoder.get_buffer()


def test_garbage_in_the_middle_of_a_large_frame_is_data(wire: ModuleType) -> None:
    # The body of a frame is not checked: bytes that look like a header are buffer bytes.
    segments = wire.encode_frame(spec.MSG_REPLY, buffers=[header(magic=b"XXXX") * 4000])
    (frame,) = wire.FrameDecoder().feed(join(segments))
    assert bytes(frame.buffers[0]) == header(magic=b"XXXX") * 4000


def test_buffer_updated_beyond_the_current_part_of_a_large_frame(wire: ModuleType) -> None:
    data = _large_frame(wire)
    decoder = wire.FrameDecoder()
    head = len(data) - 32 - 70_003 - 10
    assert decoder.feed(data[: head + 4]) == []  # the head and 4 payload bytes
    view = decoder.get_buffer(1 << 20)
    assert len(view) == 6  # the rest of the payload: one view never spans two parts
    for bad in (7, -1, 1 << 30):
        with pytest.raises(ValueError, match="beyond"):
            decoder.buffer_updated(bad)
    assert decoder.buffered == head + 4
    # A misuse of the API is not a protocol error: the frame still completes.
    view[:6] = data[head + 4 : head + 10]
    assert decoder.buffer_updated(6) == []
    view = decoder.get_buffer()
    assert len(view) == 70_000
    with pytest.raises(ValueError, match="beyond"):
        decoder.buffer_updated(70_001)
    (frame,) = decoder.feed(data[head + 10 :])
    assert bytes(frame.payload) == b"p" * 10 and frame.mac == b"M" * 32
    assert decoder.buffered == 0
