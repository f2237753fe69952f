"""Streaming decoding: the same frames whatever way the bytes of a stream are split."""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_helpers import Blob, binary, fields, join

from pyroact import _wirespec as spec

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LARGE = spec.LARGE_FRAME_THRESHOLD


def _filler(size: int, seed: int) -> Blob:
    block = bytes((seed + i * 13) & 0xFF for i in range(256))
    return Blob((block * (size // 256 + 1))[:size])


# A big blob is cheap to generate as (size, seed) rather than as hypothesis-drawn bytes.
small_blob = binary(max_size=200)
big_blob = st.builds(
    _filler, st.sampled_from([LARGE - 40, LARGE, LARGE + 1, 200_000]), st.integers(0, 255)
)

frame_fields = st.fixed_dictionaries(
    {
        "msg_type": st.sampled_from(sorted(spec.MSG_TYPES)),
        "flags": st.sets(
            st.sampled_from([1 << b for b in range(16) if spec.FLAGS_KNOWN >> b & 1])
        ).map(sum),
        "seq": st.integers(0, spec.MAX_SEQ),
        "object_id": st.text(st.characters(max_codepoint=127), max_size=40),
        "method": st.text(max_size=30),
        "mac": st.one_of(st.just(b""), binary(min_size=32, max_size=32)),
    }
)


def _small_frames() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda base, payload, buffers: {**base, "payload": payload, "buffers": buffers},
        frame_fields,
        small_blob,
        st.lists(binary(max_size=50), max_size=4),
    )


def _any_frames() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda base, payload, buffers: {**base, "payload": payload, "buffers": buffers},
        frame_fields,
        st.one_of(small_blob, small_blob, big_blob),
        st.lists(st.one_of(binary(max_size=50), big_blob), max_size=3),
    )


def _medium_blob() -> st.SearchStrategy[Blob]:
    return st.builds(_filler, st.integers(1, 40_000), st.integers(0, 255))


def _insert_big(buffers: list[bytes], where: int) -> list[bytes]:
    # One big buffer somewhere makes the frame large whatever else was drawn.
    at = where % (len(buffers) + 1)
    return [*buffers[:at], _filler(LARGE, where), *buffers[at:]]


def _large_multi_buffer_frames() -> st.SearchStrategy[dict[str, Any]]:
    """Large frames of several parts: buffers big and small, empty ones among them."""
    part = st.one_of(st.just(b""), binary(max_size=20), _medium_blob(), big_blob)
    return st.builds(
        lambda base, payload, buffers, where: {
            **base,
            "payload": payload,
            "buffers": _insert_big(buffers, where),
        },
        frame_fields,
        st.one_of(st.just(b""), small_blob, _medium_blob()),
        st.lists(part, min_size=1, max_size=5),
        st.integers(0, 255),
    )


def head_length(item: dict[str, Any]) -> int:
    return (
        spec.HEADER_SIZE
        + spec.BUFLEN_SIZE * len(item["buffers"])
        + len(item["object_id"])
        + len(item["method"].encode())
    )


def is_large(item: dict[str, Any]) -> bool:
    body = head_length(item) - spec.HEADER_SIZE + len(item["payload"]) + len(item["mac"])
    return body + sum(len(b) for b in item["buffers"]) >= LARGE


def encode_stream(wire: ModuleType, items: list[dict[str, Any]]) -> tuple[bytes, list[Any]]:
    """Encode frames back to back; return the stream and the expected field tuples."""
    data = b""
    expected = []
    for item in items:
        mac = item["mac"]
        segments = wire.encode_frame(
            item["msg_type"],
            flags=item["flags"],
            seq=item["seq"],
            object_id=item["object_id"],
            method=item["method"],
            payload=bytes(item["payload"]),  # plain bytes, not the Blob subclass
            buffers=[bytes(b) for b in item["buffers"]],
            mac_size=len(mac),
        )
        encoded = join([*segments, mac])
        head_len = head_length(item)
        expected.append(
            (
                item["msg_type"],
                item["flags"],
                item["seq"],
                item["object_id"],
                item["method"],
                bytes(item["payload"]),
                [bytes(b) for b in item["buffers"]],
                mac,
                encoded[:head_len] if mac else b"",
            )
        )
        data += encoded
    return data, expected


def feed_in_pieces(decoder: Any, data: bytes, cuts: list[int]) -> list[Any]:
    frames: list[Any] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        frames.extend(decoder.feed(data[lo:hi]))
    return frames


def receive_in_pieces(decoder: Any, data: bytes, sizes: list[int]) -> list[Any]:
    """What a socket does: ``recv_into`` at most ``size`` bytes of each ``get_buffer`` view."""
    frames: list[Any] = []
    pos = 0
    index = 0
    while pos < len(data):
        # At least 1/300 of the stream per piece, so a 200 kB stream is not received 1 B at a time.
        want = max(sizes[index % len(sizes)], len(data) // 300) if sizes else len(data)
        index += 1
        view = decoder.get_buffer(want)
        n = min(len(view), want, len(data) - pos)
        assert n > 0
        view[:n] = data[pos : pos + n]
        pos += n
        frames.extend(decoder.buffer_updated(n))
    return frames


# --------------------------------------------------------------------------- hypothesis


@SETTINGS
@given(items=st.lists(_small_frames(), min_size=1, max_size=4))
def test_small_frames_fed_whole_or_byte_by_byte(wire: ModuleType, items: list[Any]) -> None:
    data, expected = encode_stream(wire, items)

    whole = wire.FrameDecoder()
    assert [fields(f) for f in whole.feed(data)] == expected
    assert whole.buffered == 0

    by_byte = wire.FrameDecoder()
    frames: list[Any] = []
    for i in range(len(data)):
        frames.extend(by_byte.feed(data[i : i + 1]))
    assert [fields(f) for f in frames] == expected
    assert by_byte.buffered == 0

    by_byte_buffer = wire.FrameDecoder()
    assert [fields(f) for f in receive_in_pieces(by_byte_buffer, data, [1])] == expected


@SETTINGS
@given(items=st.lists(_any_frames(), min_size=1, max_size=4), data=st.data())
def test_any_frames_split_at_random_points(wire: ModuleType, items: list[Any], data: Any) -> None:
    stream, expected = encode_stream(wire, items)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")

    fed = wire.FrameDecoder()
    assert [fields(f) for f in feed_in_pieces(fed, stream, cuts)] == expected
    assert fed.buffered == 0

    sizes = data.draw(st.lists(st.integers(1, 70_000), min_size=1, max_size=6), label="sizes")
    received = wire.FrameDecoder()
    assert [fields(f) for f in receive_in_pieces(received, stream, sizes)] == expected
    assert received.buffered == 0


@SETTINGS
@given(items=st.lists(_any_frames(), min_size=1, max_size=3), data=st.data())
def test_buffered_is_zero_exactly_at_frame_boundaries(
    wire: ModuleType, items: list[Any], data: Any
) -> None:
    stream, expected = encode_stream(wire, items)
    ends = list(itertools.accumulate(len(encode_stream(wire, [item])[0]) for item in items))
    # Right after the head of a large frame is the spot where a decoder that forgets the head
    # would report 0; make sure it is always among the cuts.
    head_ends = [
        start + head_length(item)
        for start, item in zip([0, *ends], items, strict=False)
        if is_large(item)
    ]
    drawn = data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts")
    cuts = sorted(set(drawn) | set(head_ends))
    decoder = wire.FrameDecoder()
    done = 0
    pos = 0
    for cut in [*cuts, len(stream)]:
        done += len(decoder.feed(stream[pos:cut]))
        pos = cut
        # Every complete frame was returned, and nothing is pending only at a frame boundary.
        assert done == sum(1 for end in ends if end <= pos)
        at_boundary = pos == 0 or pos in ends
        assert (decoder.buffered == 0) == at_boundary, (pos, ends, decoder.buffered)
    assert done == len(expected)


@SETTINGS
@given(items=st.lists(_any_frames(), min_size=1, max_size=4), data=st.data())
def test_buffered_is_the_pending_byte_count(wire: ModuleType, items: list[Any], data: Any) -> None:
    stream, _ = encode_stream(wire, items)
    ends = [0, *itertools.accumulate(len(encode_stream(wire, [item])[0]) for item in items)]
    pairs = zip(ends[:-1], items, strict=True)
    head_ends = [start + head_length(item) for start, item in pairs if is_large(item)]
    drawn = data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts")
    cuts = sorted(set(drawn) | set(head_ends))
    decoder = wire.FrameDecoder()
    pos = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[pos:cut])
        pos = cut
        consumed = max(end for end in ends if end <= pos)
        assert decoder.buffered == pos - consumed


@SETTINGS
@given(
    items=st.lists(
        st.one_of(_large_multi_buffer_frames(), _small_frames()), min_size=1, max_size=3
    ).filter(lambda items: any(is_large(item) for item in items)),
    data=st.data(),
)
def test_multi_buffer_large_frames_split_at_random_points(
    wire: ModuleType, items: list[Any], data: Any
) -> None:
    stream, expected = encode_stream(wire, items)
    ends = [0, *itertools.accumulate(len(encode_stream(wire, [item])[0]) for item in items)]
    # Cuts at random, and around the boundaries between the parts of each large frame.
    boundaries = []
    for start, item in zip(ends, items, strict=False):
        if is_large(item):
            pos = start + head_length(item)
            for size in [len(item["payload"]), *map(len, item["buffers"])]:
                pos += size
                boundaries.append(pos)
    near = data.draw(st.lists(st.sampled_from(boundaries), max_size=6), label="near")
    shifts = data.draw(st.lists(st.integers(-2, 2), min_size=6, max_size=6), label="shifts")
    drawn = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    cuts = drawn + [b + d for b, d in zip(near, shifts, strict=False)]
    cuts = [c for c in cuts if 0 <= c <= len(stream)]

    fed = wire.FrameDecoder()
    frames: list[Any] = []
    pos = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        frames.extend(fed.feed(stream[pos:cut]))
        pos = cut
        consumed = max(end for end in ends if end <= pos)
        assert fed.buffered == pos - consumed
    assert [fields(f) for f in frames] == expected
    for frame, item in zip(frames, items, strict=True):
        if is_large(item):
            assert type(frame.payload) is memoryview
            assert [type(b) for b in frame.buffers] == [memoryview] * len(item["buffers"])

    sizes = data.draw(st.lists(st.integers(1, 70_000), min_size=1, max_size=6), label="sizes")
    received = wire.FrameDecoder()
    assert [fields(f) for f in receive_in_pieces(received, stream, sizes)] == expected
    assert received.buffered == 0


# --------------------------------------------------------------------------- examples


def _several_part_frame(wire: ModuleType) -> tuple[bytes, list[Any]]:
    # Exactly at the threshold: payload, buffers (empty ones first, in between and last), MAC.
    item = {
        "msg_type": spec.MSG_REPLY,
        "flags": 0,
        "seq": 7,
        "object_id": "obj",
        "method": "m",
        "mac": bytes(range(32)),
        "payload": _filler(100, 1),
        "buffers": [b"", _filler(3, 2), b"", _filler(1, 3), _filler(30_000, 4), b""],
    }
    body = head_length(item) - spec.HEADER_SIZE + 100 + 30_004 + 32
    item["buffers"].insert(5, _filler(LARGE - body, 5))
    assert is_large(item) and not is_large({**item, "mac": b""})
    return encode_stream(wire, [item])


def test_several_part_large_frame_byte_by_byte(wire: ModuleType) -> None:
    data, expected = _several_part_frame(wire)
    data += data  # twice: the decoder must be clean for the next frame
    by_byte = wire.FrameDecoder()
    frames: list[Any] = []
    for i in range(len(data)):
        frames.extend(by_byte.feed(data[i : i + 1]))
        if not frames and i < len(data) // 2:
            assert by_byte.buffered == i + 1
    assert [fields(f) for f in frames] == expected * 2
    assert by_byte.buffered == 0

    through_buffer = wire.FrameDecoder()
    frames = []
    for i in range(len(data)):
        view = through_buffer.get_buffer(1)
        view[:1] = data[i : i + 1]
        frames.extend(through_buffer.buffer_updated(1))
    assert [fields(f) for f in frames] == expected * 2
    assert through_buffer.buffered == 0


def test_several_part_large_frame_in_one_feed_with_the_next_frame(wire: ModuleType) -> None:
    data, expected = _several_part_frame(wire)
    small = join(wire.encode_frame(spec.MSG_REPLY, seq=99, payload=b"s"))
    decoder = wire.FrameDecoder()
    frames = decoder.feed(data + small + data[:100])
    assert [fields(f) for f in frames[:1]] == expected and frames[1].seq == 99
    assert decoder.buffered == 100
    assert [fields(f) for f in decoder.feed(data[100:])] == expected


def test_incomplete_frame_returns_nothing(wire: ModuleType) -> None:
    data = join(wire.encode_frame(spec.MSG_REQUEST, object_id="o", method="m", payload=b"x" * 50))
    for cut in range(len(data)):
        decoder = wire.FrameDecoder()
        assert decoder.feed(data[:cut]) == []
        assert decoder.buffered == cut
        (frame,) = decoder.feed(data[cut:])
        assert bytes(frame.payload) == b"x" * 50
        assert decoder.buffered == 0


def test_empty_feed_returns_nothing(wire: ModuleType) -> None:
    decoder = wire.FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.buffer_updated(0) == []
    assert decoder.buffered == 0


def test_buffered_counts_the_body_of_a_large_frame_in_progress(wire: ModuleType) -> None:
    data = join(wire.encode_frame(spec.MSG_REPLY, payload=b"p", buffers=[b"z" * 300_000]))
    head_len = spec.HEADER_SIZE + spec.BUFLEN_SIZE
    decoder = wire.FrameDecoder()
    assert decoder.feed(data[:head_len]) == []
    fed = head_len
    assert decoder.buffered == head_len
    for cut in (head_len + 1, 1000, 200_000, len(data) - 1):
        assert decoder.feed(data[fed:cut]) == []
        fed = cut
        # Everything fed so far is pending: the head and the body bytes received.
        assert decoder.buffered == cut
    (frame,) = decoder.feed(data[-1:])
    assert decoder.buffered == 0
    assert bytes(frame.buffers[0]) == b"z" * 300_000


@pytest.mark.parametrize("extra", [0, 1, 1000])
def test_buffered_counts_the_head_of_a_large_frame(wire: ModuleType, extra: int) -> None:
    data = join(wire.encode_frame(spec.MSG_REPLY, object_id="obj", buffers=[b"z" * 100_000]))
    head_len = spec.HEADER_SIZE + spec.BUFLEN_SIZE + 3
    decoder = wire.FrameDecoder()
    assert decoder.feed(data[: head_len + extra]) == []
    assert decoder.buffered == head_len + extra


def test_frame_and_a_half(wire: ModuleType) -> None:
    one = join(wire.encode_frame(spec.MSG_REQUEST, seq=1, payload=b"a" * 100))
    two = join(wire.encode_frame(spec.MSG_REQUEST, seq=2, payload=b"b" * 100_000))
    decoder = wire.FrameDecoder()
    (first,) = decoder.feed(one + two[:20])
    assert first.seq == 1
    assert decoder.buffered == 20
    assert decoder.feed(two[20:500]) == []
    assert decoder.buffered == 500
    (second,) = decoder.feed(two[500:])
    assert (second.seq, bytes(second.payload)) == (2, b"b" * 100_000)


def test_large_frame_followed_by_small_frames_in_one_feed(wire: ModuleType) -> None:
    big = join(wire.encode_frame(spec.MSG_REPLY, seq=1, payload=b"L" * 100_000))
    small = [join(wire.encode_frame(spec.MSG_REPLY, seq=s, payload=b"s")) for s in (2, 3)]
    decoder = wire.FrameDecoder()
    # Half the large frame, then the rest of it plus two small frames plus half a third.
    assert decoder.feed(big[:50_000]) == []
    frames = decoder.feed(big[50_000:] + small[0] + small[1] + small[0][:10])
    assert [f.seq for f in frames] == [1, 2, 3]
    assert decoder.buffered == 10


@pytest.mark.parametrize("sizehint", [-1, 0, 1, 10, 1 << 20])
def test_get_buffer_gives_at_least_the_hint(wire: ModuleType, sizehint: int) -> None:
    decoder = wire.FrameDecoder()
    view = decoder.get_buffer(sizehint)
    assert not view.readonly
    assert len(view) >= max(sizehint, 1)
