"""The two wire engines keep one contract: names, signatures, errors, bytes and frames."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_helpers import Blob, binary, fields, join

from pyroact import _purewire as pure
from pyroact import _wirespec as spec
from pyroact.errors import MessageTooLargeError

try:
    from pyroact import _fastwire as fast
except ImportError:  # pragma: no cover - the extension is not built
    pytest.skip("pyroact._fastwire is not built", allow_module_level=True)

ENGINES = [pytest.param(fast, id="fast"), pytest.param(pure, id="pure")]
DECODER_METHODS = ["feed", "get_buffer", "buffer_updated"]
DECODER_PROPERTIES = ["max_message_size", "buffered"]
FRAME_FIELDS = [
    "msg_type",
    "flags",
    "seq",
    "object_id",
    "method",
    "payload",
    "buffers",
    "mac",
    "head",
]
SETTINGS = settings(max_examples=150, deadline=None)


def public_names(module: ModuleType) -> set[str]:
    namespace: dict[str, Any] = {}
    exec(f"from {module.__name__} import *", namespace)  # what `import *` gives users
    return {name for name in namespace if not name.startswith("__")}


def shape(sig: inspect.Signature) -> list[tuple[str, Any, Any]]:
    """A signature without annotations: names, kinds and defaults."""
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def field_types(frame: Any) -> tuple[type, ...]:
    return tuple(type(getattr(frame, name)) for name in FRAME_FIELDS)


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:  # the class is what is compared
        return "raised", type(exc)


def first_doc_line(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").strip().splitlines()[0]


# --------------------------------------------------------------------------- names


def test_same_public_names() -> None:
    assert fast.__all__ == pure.__all__
    assert public_names(fast) == public_names(pure) == {"Frame", "FrameDecoder", "encode_frame"}
    for module in (fast, pure):
        assert callable(module._constants)


def test_same_decoder_and_frame_members() -> None:
    for cls_name in ("Frame", "FrameDecoder"):
        members = [
            {name for name in dir(getattr(m, cls_name)) if not name.startswith("_")}
            for m in (fast, pure)
        ]
        assert members[0] == members[1], cls_name
    assert {n for n in dir(pure.FrameDecoder) if not n.startswith("_")} == set(
        DECODER_METHODS + DECODER_PROPERTIES
    )


# --------------------------------------------------------------------------- signatures


def test_encode_frame_signature() -> None:
    fast_sig = shape(inspect.signature(fast.encode_frame))
    pure_sig = shape(inspect.signature(pure.encode_frame))
    assert fast_sig == pure_sig
    assert [name for name, _, _ in pure_sig] == [
        "msg_type",
        "flags",
        "seq",
        "object_id",
        "method",
        "payload",
        "buffers",
        "mac_size",
    ]
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in pure_sig[1:])


@pytest.mark.parametrize("name", DECODER_METHODS)
def test_decoder_method_signatures(name: str) -> None:
    fast_sig = shape(inspect.signature(getattr(fast.FrameDecoder, name)))
    pure_sig = shape(inspect.signature(getattr(pure.FrameDecoder, name)))
    assert fast_sig == pure_sig


@pytest.mark.parametrize("name", DECODER_PROPERTIES)
def test_decoder_properties_are_ints_and_only_the_limit_can_be_set(name: str) -> None:
    for module in (fast, pure):
        assert inspect.isdatadescriptor(getattr(module.FrameDecoder, name))
        decoder = module.FrameDecoder(max_message_size=777)
        value = getattr(decoder, name)
        assert type(value) is int
        if name == "max_message_size":
            decoder.max_message_size = 5000  # a handshake's limit, raised once granted
            assert decoder.max_message_size == 5000
            with pytest.raises(ValueError, match="must be positive, not 0"):
                decoder.max_message_size = 0
        else:
            with pytest.raises(AttributeError):
                setattr(decoder, name, 5)
    assert fast.FrameDecoder(max_message_size=777).max_message_size == 777
    assert pure.FrameDecoder(max_message_size=777).max_message_size == 777


def test_a_raised_limit_keeps_buffered_bytes_and_applies_to_the_next_frame() -> None:
    small = join(fast.encode_frame(spec.MSG_REQUEST, seq=1, payload=b"p" * 100))
    large = join(fast.encode_frame(spec.MSG_REQUEST, seq=2, payload=b"q" * 10_000))
    for module in (fast, pure):
        decoder = module.FrameDecoder(max_message_size=1000)
        assert decoder.feed(small[:50]) == []
        decoder.max_message_size = 100_000
        frames = decoder.feed(small[50:] + large)
        assert [f.seq for f in frames] == [1, 2]
        with pytest.raises(MessageTooLargeError):
            module.FrameDecoder(max_message_size=1000).feed(large)


# --------------------------------------------------------------------------- constructors


def test_decoder_constructor_behaviour() -> None:
    for module in (fast, pure):
        assert module.FrameDecoder().max_message_size == spec.DEFAULT_MAX_MESSAGE_SIZE
        assert module.FrameDecoder(max_message_size=10).max_message_size == 10
        with pytest.raises(TypeError):
            module.FrameDecoder(1024)  # keyword-only
        with pytest.raises(TypeError):
            module.FrameDecoder(max_size=1024)  # unknown keyword
        with pytest.raises(ValueError, match="positive"):
            module.FrameDecoder(max_message_size=0)


def test_frame_constructor_behaviour() -> None:
    kwargs = {
        "flags": spec.FLAG_BATCH,
        "seq": 12,
        "object_id": "obj",
        "method": "m",
        "payload": b"p",
        "buffers": (b"b1", b"b2"),
        "mac": b"m" * 32,
        "head": b"h",
    }
    frames = [m.Frame(spec.MSG_REQUEST, **kwargs) for m in (fast, pure)]
    expected = (spec.MSG_REQUEST, spec.FLAG_BATCH, 12, "obj", "m", b"p", [b"b1", b"b2"], b"m" * 32)
    for frame in frames:
        assert fields(frame)[:8] == expected
        assert frame.head == b"h"
        assert type(frame.buffers) is list  # the tuple was copied into a list
    defaults = [fields(m.Frame(spec.MSG_CLOSE)) for m in (fast, pure)]
    assert defaults[0] == defaults[1] == (spec.MSG_CLOSE, 0, 0, "", "", b"", [], b"", b"")
    for module in (fast, pure):
        with pytest.raises(TypeError):
            module.Frame(spec.MSG_REQUEST, spec.FLAG_BATCH)  # keyword-only after msg_type
        with pytest.raises(TypeError):
            module.Frame(spec.MSG_REQUEST, payload_size=3)
        with pytest.raises(TypeError):
            module.Frame()
        frame = module.Frame(spec.MSG_REQUEST)
        assert frame == module.Frame(spec.MSG_REQUEST)
        assert frame != module.Frame(spec.MSG_REPLY)
        with pytest.raises(TypeError):
            hash(frame)


# --------------------------------------------------------------------------- docstrings


def _documented() -> list[Any]:
    items = [
        pytest.param(lambda m: m.encode_frame, id="encode_frame"),
        pytest.param(lambda m: m.Frame, id="Frame"),
        pytest.param(lambda m: m.FrameDecoder, id="FrameDecoder"),
        pytest.param(lambda m: m._constants, id="_constants"),
    ]
    for name in DECODER_METHODS + DECODER_PROPERTIES:
        items.append(pytest.param(lambda m, n=name: getattr(m.FrameDecoder, n), id=name))
    return items


@pytest.mark.parametrize("get", _documented())
def test_same_first_docstring_line(get: Any) -> None:
    assert first_doc_line(get(fast)) == first_doc_line(get(pure))
    assert first_doc_line(get(pure))


@pytest.mark.parametrize("get", _documented())
def test_same_whole_docstring(get: Any) -> None:
    # No signature line from Cython's embedsignature, no drift between the twins.
    assert inspect.getdoc(get(fast)) == inspect.getdoc(get(pure))


# --------------------------------------------------------------------------- errors

BAD_ENCODER_INPUTS = [
    pytest.param((0,), {}, id="msg-type-0"),
    pytest.param((99,), {}, id="msg-type-99"),
    pytest.param((5,), {"flags": 0x100}, id="flags"),
    pytest.param((5,), {"flags": -1}, id="flags-negative"),
    pytest.param((5,), {"flags": 1.0}, id="flags-float"),
    pytest.param((5,), {"seq": -1}, id="seq-negative"),
    pytest.param((5,), {"seq": 2**32}, id="seq-2**32"),
    pytest.param((5,), {"seq": "1"}, id="seq-str"),
    pytest.param((5,), {"object_id": "x" * 256}, id="oid-long"),
    pytest.param((5,), {"object_id": "ü"}, id="oid-non-ascii"),
    pytest.param((5,), {"object_id": 1}, id="oid-int"),
    pytest.param((5,), {"method": "x" * 1025}, id="method-long"),
    pytest.param((5,), {"method": None}, id="method-none"),
    pytest.param((5,), {"mac_size": 31}, id="mac-31"),
    pytest.param((5,), {"payload": "str"}, id="payload-str"),
    pytest.param((5,), {"payload": None}, id="payload-none"),
    pytest.param((5,), {"buffers": [None]}, id="buffer-none"),
    pytest.param((5,), {"buffers": 3}, id="buffers-int"),
    pytest.param((5,), {"buffers": [b""] * 4097}, id="too-many-buffers"),
    pytest.param((5,), {"payload": memoryview(bytearray(16)).cast("B", (4, 4))[::2]}, id="2d"),
    pytest.param((5,), {"payload": memoryview(b"abcdefgh")[::2]}, id="strided-payload"),
    pytest.param((5,), {"buffers": [memoryview(b"abcdefgh")[::2]]}, id="strided-buffer"),
    pytest.param((5,), {"unknown": 1}, id="unknown-keyword"),
    pytest.param((5, 0), {}, id="positional-flags"),
    pytest.param((), {}, id="no-msg-type"),
]


@pytest.mark.parametrize(("args", "kwargs"), BAD_ENCODER_INPUTS)
def test_encoder_raises_the_same_class(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    fast_result = outcome(lambda: fast.encode_frame(*args, **kwargs))
    pure_result = outcome(lambda: pure.encode_frame(*args, **kwargs))
    assert fast_result[0] == pure_result[0] == "raised"
    assert fast_result[1] is pure_result[1]
    assert issubclass(fast_result[1], (ValueError, TypeError))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"msg_type": 5.0}, id="msg-type-5.0"),
        pytest.param({"msg_type": 5, "seq": 1.5}, id="seq-1.5"),
        pytest.param({"msg_type": 5, "mac_size": 32.0}, id="mac-32.0"),
    ],
)
def test_encoder_rejects_non_integer_fields(kwargs: dict[str, Any]) -> None:
    # A float that passes the range checks must not be truncated into the header.
    for module in (fast, pure):
        with pytest.raises(TypeError):
            module.encode_frame(**kwargs)


def _failing_feeds() -> list[Any]:
    def hdr(**kw: int) -> bytes:
        values = {
            "magic": spec.MAGIC,
            "version": spec.PROTOCOL_VERSION,
            "msg_type": spec.MSG_REQUEST,
            "oid_len": 0,
            "flags": 0,
            "meth_len": 0,
            "seq": 0,
            "plen": 0,
            "nbuf": 0,
            "mac_len": 0,
        }
        values.update(kw)
        return spec.HEADER_STRUCT.pack(*values.values())

    return [
        pytest.param(b"PYRO" + bytes(20), id="magic"),
        pytest.param(hdr(version=2), id="version"),
        pytest.param(hdr(msg_type=0), id="msg-type"),
        pytest.param(hdr(flags=0x40), id="flags"),
        pytest.param(hdr(mac_len=3), id="mac-len"),
        pytest.param(hdr(nbuf=5000), id="nbuf"),
        pytest.param(hdr(meth_len=2000), id="meth-len"),
        pytest.param(hdr(plen=2**31), id="plen"),
        pytest.param(hdr(nbuf=1) + spec.BUFLEN_STRUCT.pack(2**63), id="buflen"),
        pytest.param(hdr(oid_len=1) + b"\x80", id="oid-bytes"),
        pytest.param(hdr(meth_len=1) + b"\x80", id="method-bytes"),
    ]


@pytest.mark.parametrize("data", _failing_feeds())
def test_decoder_raises_the_same_class_and_message(data: bytes) -> None:
    raised = []
    for module in (fast, pure):
        decoder = module.FrameDecoder(max_message_size=1 << 20)
        with pytest.raises(Exception) as info:  # the class is compared below
            decoder.feed(data)
        raised.append(info.value)
    assert type(raised[0]) is type(raised[1])
    assert str(raised[0]) == str(raised[1])


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda d: d.buffer_updated(-1), id="buffer-updated-negative"),
        pytest.param(lambda d: d.buffer_updated(1 << 30), id="buffer-updated-too-many"),
        pytest.param(lambda d: d.feed("text"), id="feed-str"),
        pytest.param(lambda d: d.feed(None), id="feed-none"),
        pytest.param(lambda d: d.get_buffer("x"), id="get-buffer-str"),
        pytest.param(lambda d: d.feed(), id="feed-no-args"),
        pytest.param(lambda d: d.feed(memoryview(b"abcdefgh")[::2]), id="feed-strided"),
    ],
)
def test_decoder_misuse_raises_the_same_class(call: Any) -> None:
    fast_result = outcome(lambda: call(fast.FrameDecoder()))
    pure_result = outcome(lambda: call(pure.FrameDecoder()))
    assert fast_result[0] == pure_result[0] == "raised"
    assert fast_result[1] is pure_result[1]


# --------------------------------------------------------------------------- bytes and frames


frame_inputs = st.fixed_dictionaries(
    {
        "msg_type": st.sampled_from(sorted(spec.MSG_TYPES)),
        "flags": st.integers(0, spec.FLAGS_KNOWN).map(lambda f: f & spec.FLAGS_KNOWN),
        "seq": st.integers(0, spec.MAX_SEQ),
        "object_id": st.text(st.characters(max_codepoint=127), max_size=spec.MAX_OBJID_LEN),
        "method": st.text(max_size=60),
        "payload": st.one_of(
            binary(max_size=300),
            binary(max_size=300).map(bytearray),
            binary(max_size=300).map(memoryview),
            st.integers(0, 3).map(
                lambda i: Blob(bytes([i]) * (spec.JOIN_PAYLOAD_THRESHOLD + i * 30000))
            ),
        ),
        "buffers": st.lists(
            st.one_of(binary(max_size=100), binary(max_size=40).map(bytearray)),
            max_size=5,
        ),
        "mac_size": st.sampled_from([0, spec.MAC_SIZE]),
    }
)


@SETTINGS
@given(kwargs=frame_inputs)
def test_identical_bytes_and_frames(kwargs: dict[str, Any]) -> None:
    if isinstance(kwargs["payload"], Blob):
        kwargs = {**kwargs, "payload": bytes(kwargs["payload"])}  # plain bytes again
    fast_segments = fast.encode_frame(**kwargs)
    pure_segments = pure.encode_frame(**kwargs)
    assert [bytes(memoryview(s)) for s in fast_segments] == [
        bytes(memoryview(s)) for s in pure_segments
    ]
    mac = bytes(range(kwargs["mac_size"]))
    data = join([*fast_segments, mac])
    fast_frames = fast.FrameDecoder().feed(data)
    pure_frames = pure.FrameDecoder().feed(data)
    assert len(fast_frames) == len(pure_frames) == 1
    assert fields(fast_frames[0]) == fields(pure_frames[0])
    assert field_types(fast_frames[0]) == field_types(pure_frames[0])
    assert fields(fast_frames[0])[:5] == tuple(
        kwargs[k] for k in ("msg_type", "flags", "seq", "object_id", "method")
    )


@pytest.mark.parametrize("size", [0, 100, spec.LARGE_FRAME_THRESHOLD, 1 << 20])
def test_decoded_frames_equal_field_by_field(size: int) -> None:
    data = join(
        [
            *pure.encode_frame(
                spec.MSG_REPLY,
                flags=spec.FLAG_STATELOST,
                seq=5,
                object_id="o",
                method="m",
                payload=b"x" * size,
                buffers=[b"y" * size, b""],
                mac_size=spec.MAC_SIZE,
            ),
            b"M" * 32,
        ]
    )
    frames = [m.FrameDecoder().feed(data * 2) for m in (fast, pure)]
    assert [fields(f) for f in frames[0]] == [fields(f) for f in frames[1]]
    assert [field_types(f) for f in frames[0]] == [field_types(f) for f in frames[1]]
    assert [len(f) for f in frames] == [2, 2]


def test_frames_of_different_engines_are_not_equal() -> None:
    # Frame.__eq__ compares within one engine only: this is why the tests compare fields.
    assert fast.Frame(spec.MSG_CLOSE) != pure.Frame(spec.MSG_CLOSE)
    assert fields(fast.Frame(spec.MSG_CLOSE)) == fields(pure.Frame(spec.MSG_CLOSE))


@pytest.mark.parametrize("engine", ENGINES)
def test_repr_names_the_message(engine: ModuleType) -> None:
    text = repr(engine.Frame(spec.MSG_REPLY, seq=3, object_id="o", payload=b"abc", buffers=[b"12"]))
    assert text == "<Frame REPLY seq=3 flags=0x0 object_id='o' method='' payload=3B buffers=[2]>"


multi_part_frames = st.fixed_dictionaries(
    {
        "payload": st.sampled_from([0, 1, 100, 40_000]),
        "buffers": st.lists(st.sampled_from([0, 0, 1, 5, 1000, 70_000]), min_size=1, max_size=6),
        "mac_size": st.sampled_from([0, spec.MAC_SIZE]),
    }
).filter(lambda d: d["payload"] + sum(d["buffers"]) >= spec.LARGE_FRAME_THRESHOLD)


@settings(max_examples=60, deadline=None)
@given(sizes=multi_part_frames, data=st.data())
def test_multi_part_large_frames_decode_alike(sizes: dict[str, Any], data: Any) -> None:
    payload = bytes([1]) * sizes["payload"]
    buffers = [bytes([i + 2]) * n for i, n in enumerate(sizes["buffers"])]
    mac = bytes(range(sizes["mac_size"]))
    segments = pure.encode_frame(
        spec.MSG_REQUEST, payload=payload, buffers=buffers, mac_size=len(mac)
    )
    stream = join([*segments, mac]) * 2
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=10))))
    seen = []
    for module in (fast, pure):
        decoder = module.FrameDecoder()
        frames: list[Any] = []
        buffered = []
        pos = 0
        for cut in [*cuts, len(stream)]:
            frames.extend(decoder.feed(stream[pos:cut]))
            buffered.append(decoder.buffered)
            pos = cut
        seen.append(([fields(f) for f in frames], [field_types(f) for f in frames], buffered))
    assert seen[0] == seen[1]
    assert seen[0][0][0][5:8] == (payload, buffers, mac)
    assert seen[0][1][0][5:7] == (memoryview, list)


@pytest.mark.parametrize(
    "tail", [b"GARBAGE!" * 3, spec.MAGIC + b"\x00\x09" + bytes(spec.HEADER_SIZE - 6)]
)
def test_garbage_after_a_large_frame_raises_alike(tail: bytes) -> None:
    data = join(pure.encode_frame(spec.MSG_REPLY, buffers=[b"x" * 70_000, b""])) + tail
    raised = []
    for module in (fast, pure):
        decoder = module.FrameDecoder()
        with pytest.raises(Exception) as info:  # the class is compared below
            decoder.feed(data)
        with pytest.raises(Exception) as again:
            decoder.get_buffer()
        raised.append((type(info.value), str(info.value), type(again.value), str(again.value)))
    assert raised[0] == raised[1]
