"""Wire engine micro-benchmarks: the Cython engine against the pure-Python one.

Groups: ``encode-small`` and ``decode-small`` (a typical call frame), and ``roundtrip-1MiB``
(encode a request carrying a 1 MiB out-of-band buffer and receive it the way a socket does,
through ``get_buffer``/``buffer_updated``). ``extra_info`` records the engine and the bytes
per round, so a report can compute throughput.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

from pyroact import _wirespec as spec

OBJECT_ID = "0123456789abcdef0123456789abcdef"  # a 32-character GUID, as daemons assign
METHOD = "meth"
SMALL_PAYLOAD = b"\x80\x05\x95" + b"(args, kwargs) of a small call....." + bytes(22)  # ~60 B
MIB = 1 << 20


@pytest.fixture(params=["fast", "pure"])
def engine(request: pytest.FixtureRequest) -> ModuleType:
    """Each wire engine, imported directly (the fast one is skipped if it is not built)."""
    if request.param == "pure":
        return importlib.import_module("pyroact._purewire")
    try:
        return importlib.import_module("pyroact._fastwire")
    except ImportError:
        pytest.skip("pyroact._fastwire is not built")


def engine_name(engine: ModuleType) -> str:
    return "fast" if engine.__name__.endswith("_fastwire") else "pure"


def encode_small(engine: ModuleType) -> list[Any]:
    segments: list[Any] = engine.encode_frame(
        spec.MSG_REQUEST, seq=12345, object_id=OBJECT_ID, method=METHOD, payload=SMALL_PAYLOAD
    )
    return segments


@pytest.mark.benchmark(group="encode-small")
def test_encode_small(benchmark: Any, engine: ModuleType) -> None:
    segments = benchmark(encode_small, engine)
    size = len(segments[0])
    benchmark.extra_info.update(engine=engine_name(engine), bytes=size)
    assert len(segments) == 1
    assert size == spec.HEADER_SIZE + len(OBJECT_ID) + len(METHOD) + len(SMALL_PAYLOAD)


@pytest.mark.benchmark(group="decode-small")
def test_decode_small(benchmark: Any, engine: ModuleType) -> None:
    data = bytes(encode_small(engine)[0])
    decoder = engine.FrameDecoder()  # long-lived, as on a connection
    frames = benchmark(decoder.feed, data)
    benchmark.extra_info.update(engine=engine_name(engine), bytes=len(data))
    assert len(frames) == 1
    (frame,) = frames
    assert (frame.object_id, frame.method, frame.seq) == (OBJECT_ID, METHOD, 12345)
    assert bytes(frame.payload) == SMALL_PAYLOAD
    assert decoder.buffered == 0


def receive(decoder: Any, segments: list[Any]) -> list[Any]:
    """Copy the segments into the decoder's own memory, as ``recv_into`` would."""
    frames: list[Any] = []
    for segment in segments:
        view = memoryview(segment).cast("B")
        pos = 0
        while pos < len(view):
            target = decoder.get_buffer(len(view) - pos)
            n = min(len(target), len(view) - pos)
            target[:n] = view[pos : pos + n]
            pos += n
            frames.extend(decoder.buffer_updated(n))
    return frames


@pytest.mark.benchmark(group="roundtrip-1MiB")
def test_roundtrip_1mib(benchmark: Any, engine: ModuleType) -> None:
    buffer = bytes(range(256)) * (MIB // 256)
    decoder = engine.FrameDecoder()

    def roundtrip() -> list[Any]:
        segments = engine.encode_frame(
            spec.MSG_REQUEST,
            seq=1,
            object_id=OBJECT_ID,
            method=METHOD,
            payload=SMALL_PAYLOAD,
            buffers=[buffer],
        )
        return receive(decoder, segments)

    frames = benchmark(roundtrip)
    benchmark.extra_info.update(engine=engine_name(engine), bytes=len(buffer))
    assert len(frames) == 1
    assert len(frames[0].buffers) == 1
    assert frames[0].buffers[0] == buffer
    assert decoder.buffered == 0
