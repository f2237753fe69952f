"""Tests of pyroact.serializer: pickle 5 with out-of-band buffers, calls, exceptions, zlib."""

from __future__ import annotations

import ctypes
import pickle
import sys
import threading
import types
import zlib
from array import array
from typing import Any

import pytest

from pyroact import _wirespec as spec
from pyroact import serializer
from pyroact.errors import (
    MessageTooLargeError,
    NoModuleError,
    PyroError,
    RemoteError,
    SerializeError,
)
from pyroact.serializer import (
    DEFAULT_OOB_THRESHOLD,
    compress,
    decompress,
    dumps,
    dumps_call,
    dumps_exception,
    loads,
    loads_call,
    loads_exception,
)

BIG = DEFAULT_OOB_THRESHOLD
MIB = 1 << 20


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class PairError(Exception):
    """An exception whose __init__ takes other arguments than it passes on."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")
        self.a = a
        self.b = b


class KeywordOnlyError(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code


def round_trip(value: Any, **kwargs: Any) -> Any:
    payload, buffers, flags = dumps(value, **kwargs)
    assert type(payload) is bytes
    assert flags & ~spec.FLAGS_KNOWN == 0
    return loads(payload, buffers)


def through_the_wire(buffers: list[Any]) -> list[memoryview]:
    """What the receiver gets for out-of-band buffers: views of the bytes that arrived."""
    return [memoryview(bytearray(memoryview(b).cast("B"))) for b in buffers]


# --------------------------------------------------------------------------- dumps / loads


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**100),
        3.25,
        complex(1, -2),
        "",
        "ünïcødé \U0001f600",
        b"",
        b"\x00\xff",
        bytearray(b"ba"),
        (),
        (1, (2, (3,))),
        [1, "a", None],
        {"k": [1, 2], 3: {4}},
        frozenset({1, 2}),
        range(3, 30, 3),
        Point(1, 2),
        [Point(3, 4), {"p": Point(5, 6)}],
        ValueError("in a value"),
    ],
    ids=repr,
)
def test_round_trip(value: Any) -> None:
    result = round_trip(value)
    if isinstance(value, BaseException):
        assert type(result) is type(value) and result.args == value.args
    else:
        assert result == value
        assert type(result) is type(value)


def test_plain_values_use_plain_pickle() -> None:
    payload, buffers, flags = dumps({"a": [1, 2, 3]})
    assert flags == 0
    assert buffers == []
    assert pickle.loads(payload) == {"a": [1, 2, 3]}
    assert payload[:2] == b"\x80\x05"  # protocol 5


@pytest.mark.parametrize(
    ("make", "result_type"),
    [
        pytest.param(lambda n: b"b" * n, bytes, id="bytes"),
        pytest.param(lambda n: memoryview(b"m" * n), bytes, id="memoryview"),
        pytest.param(
            lambda n: memoryview(array("d", [1.5]) * (n // 8 + 1)), bytes, id="memoryview-d"
        ),
    ],
)
def test_large_buffer_goes_out_of_band(make: Any, result_type: type) -> None:
    value = make(BIG)
    payload, buffers, flags = dumps(value)
    assert len(buffers) == 1
    assert len(payload) < 200  # the data is not in the pickle
    assert memoryview(buffers[0]).nbytes == memoryview(value).nbytes
    result = loads(payload, through_the_wire(buffers))
    assert type(result) is result_type
    assert result == bytes(memoryview(value).cast("B"))


def test_large_bytearray_goes_out_of_band() -> None:
    value = bytearray(b"a" * BIG)
    payload, buffers, _ = dumps(value)
    assert len(buffers) == 1
    assert len(payload) < 200
    result = loads(payload, through_the_wire(buffers))
    assert type(result) is bytearray and result == value


def test_large_bytearray_round_trips_as_bytearray() -> None:
    value = bytearray(b"a" * BIG)
    payload, buffers, _ = dumps(value)
    result = loads(payload, through_the_wire(buffers))
    assert type(result) is bytearray and result == value


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n: b"b" * n, id="bytes"),
        pytest.param(lambda n: bytearray(b"a" * n), id="bytearray"),
        pytest.param(lambda n: memoryview(b"m" * n), id="memoryview"),
    ],
)
def test_small_buffer_stays_in_band(make: Any) -> None:
    value = make(BIG - 1)
    payload, buffers, _ = dumps(value)
    assert buffers == []
    assert len(payload) >= BIG - 1
    result = loads(payload)
    assert bytes(result) == bytes(value)
    assert type(result) is (bytearray if type(value) is bytearray else bytes)


def test_threshold_is_configurable() -> None:
    payload, buffers, _ = dumps(b"x" * 100, oob_threshold=100)
    assert len(buffers) == 1 and len(payload) < 100
    assert loads(payload, buffers) == b"x" * 100
    _, buffers, _ = dumps(b"x" * 99, oob_threshold=100)
    assert buffers == []


def test_nested_large_bytes_travel_in_band() -> None:
    value = {"data": b"n" * BIG}
    payload, buffers, _ = dumps(value)
    assert buffers == []
    assert len(payload) > BIG
    assert loads(payload) == value


def test_out_of_band_buffers_work_through_both_wire_engines(wire: Any) -> None:
    data = bytes(range(256)) * (MIB // 256)
    payload, buffers, flags = dumps_call((data,), {"n": 1})
    segments = wire.encode_frame(spec.MSG_REQUEST, flags=flags, payload=payload, buffers=buffers)
    (frame,) = wire.FrameDecoder().feed(b"".join(bytes(memoryview(s)) for s in segments))
    args, kwargs = loads_call(frame.payload, frame.buffers)
    assert args == (data,) and kwargs == {"n": 1}


# --------------------------------------------------------------------------- received in place


def writable_address(view: Any) -> int:
    """The address of the first byte of a writable buffer."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def bytes_address(value: bytes) -> int:
    """The address of the first byte of a ``bytes`` object (ctypes does not copy it)."""
    address = ctypes.cast(ctypes.c_char_p(value), ctypes.c_void_p).value
    assert address is not None
    return address


def receive(wire: Any, segments: list[Any], chunks: list[int]) -> tuple[Any, list[int]]:
    """Decode one frame as a socket would: ``recv_into`` each ``get_buffer`` view, in chunks.

    Returns the frame and the address of every view that was written into.
    """
    data = b"".join(bytes(memoryview(s)) for s in segments)
    decoder = wire.FrameDecoder()
    frames: list[Any] = []
    addresses: list[int] = []
    pos = index = 0
    while pos < len(data):
        chunk = chunks[index % len(chunks)]
        index += 1
        view = decoder.get_buffer(chunk)
        n = min(len(view), chunk, len(data) - pos)
        view[:n] = data[pos : pos + n]
        addresses.append(writable_address(view))
        pos += n
        frames.extend(decoder.buffer_updated(n))
    assert len(frames) == 1 and decoder.buffered == 0
    return frames[0], addresses


def is_fast(wire: Any) -> bool:
    return bool(wire.__name__.endswith("_fastwire"))


ODD_CHUNKS = [4097, 65_539, 1, 333_333, 7]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda data: data, id="bytes"),
        pytest.param(memoryview, id="memoryview"),
    ],
)
def test_large_bytes_argument_is_the_received_bytes(wire: Any, make: Any) -> None:
    data = bytes(range(256)) * (MIB // 256)
    payload, buffers, flags = dumps_call((make(data), b"s" * BIG), {"k": b"k" * (2 * BIG)})
    segments = wire.encode_frame(spec.MSG_REQUEST, flags=flags, payload=payload, buffers=buffers)
    frame, addresses = receive(wire, segments, ODD_CHUNKS)
    args, kwargs = loads_call(frame.payload, frame.buffers)
    assert args == (data, b"s" * BIG) and kwargs == {"k": b"k" * (2 * BIG)}
    values = [*args, kwargs["k"]]
    assert [type(v) for v in values] == [bytes, bytes, bytes]
    if is_fast(wire):
        # No copy: each value is the bytes object the socket wrote into, at the address of the
        # frame's buffer, where the socket's views lay.
        for value, buffer in zip(values, frame.buffers, strict=True):
            start = writable_address(buffer)
            assert bytes_address(value) == start
            assert value is buffer.obj.received_bytes
            assert any(start <= a < start + len(value) for a in addresses)
    else:
        # The pure engine receives into bytearrays: the value is a copy, equal and immutable.
        for value, buffer in zip(values, frame.buffers, strict=True):
            assert bytes_address(value) != writable_address(buffer)


def test_large_bytes_result_is_the_received_bytes(wire: Any) -> None:
    data = bytes(range(251)) * 4000
    payload, buffers, flags = dumps(data)
    segments = wire.encode_frame(spec.MSG_REPLY, flags=flags, payload=payload, buffers=buffers)
    frame, _ = receive(wire, segments, [1000, 99_999])
    result = loads(frame.payload, frame.buffers)
    assert type(result) is bytes and result == data
    same = bytes_address(result) == writable_address(frame.buffers[0])
    assert same == is_fast(wire)


def test_large_bytearray_is_received_as_a_copy(wire: Any) -> None:
    # A bytearray is mutable: it never shares memory with the received buffer.
    data = bytearray(b"a" * MIB)
    payload, buffers, flags = dumps(data)
    segments = wire.encode_frame(spec.MSG_REPLY, flags=flags, payload=payload, buffers=buffers)
    frame, _ = receive(wire, segments, [70_000])
    result = loads(frame.payload, frame.buffers)
    assert type(result) is bytearray and result == data
    assert writable_address(result) != writable_address(frame.buffers[0])
    result[0] = 0
    assert bytes(frame.buffers[0][:1]) == b"a"


def test_bytes_from_buffer_copies_what_it_cannot_take() -> None:
    rebuild = serializer._bytes_from_buffer
    raw = b"r" * 100
    assert rebuild(raw) is raw  # bytes(bytes) is the object itself
    backing = bytearray(b"xyz")
    for buf in (backing, memoryview(backing), memoryview(backing).toreadonly()):
        result = rebuild(buf)
        assert type(result) is bytes and result == b"xyz"
    assert rebuild(memoryview(array("d", [1.5]))) == array("d", [1.5]).tobytes()
    # pickle finds it by name.
    assert pickle.loads(pickle.dumps(rebuild)) is rebuild
    assert serializer._OUT_OF_BAND_TYPES[bytes] is rebuild
    assert serializer._OUT_OF_BAND_TYPES[memoryview] is rebuild


def test_bytes_from_buffer_takes_only_a_whole_complete_received_buffer() -> None:
    fast = pytest.importorskip("pyroact._fastwire")
    data = bytes(range(256)) * 1024
    segments = fast.encode_frame(spec.MSG_REPLY, payload=b"p", buffers=[data])
    wire_bytes = b"".join(bytes(memoryview(s)) for s in segments)
    decoder = fast.FrameDecoder()
    head = len(wire_bytes) - len(data) - 1
    assert decoder.feed(wire_bytes[: head + 1 + 10]) == []  # head, payload, 10 buffer bytes
    view = decoder.get_buffer()
    exporter = view.obj
    # While the frame is incomplete the bytes object is nobody's: not even the serializer's.
    assert exporter.received_bytes is None
    rebuild = serializer._bytes_from_buffer
    early = rebuild(memoryview(exporter))
    assert type(early) is bytes and len(early) == len(data)
    (frame,) = decoder.feed(wire_bytes[head + 11 :])
    (buffer,) = frame.buffers
    assert buffer.obj is exporter and type(exporter.received_bytes) is bytes
    assert early is not exporter.received_bytes
    # The whole buffer, as given or read-only (as pickle's READONLY_BUFFER passes it): taken.
    assert rebuild(buffer) is exporter.received_bytes
    assert rebuild(memoryview(buffer).toreadonly()) is exporter.received_bytes
    assert rebuild(buffer.cast("B")) is exporter.received_bytes
    # A part of it, or a strided view of it: copied.
    for part in (buffer[1:], buffer[:-1], buffer[::2]):
        result = rebuild(part)
        assert result is not exporter.received_bytes and result == bytes(part)


def test_loads_rejects_garbage() -> None:
    for bad in (b"", b"garbage", b"\x80\x05K", pickle.dumps([1, 2])[:-3]):
        with pytest.raises(SerializeError, match="cannot deserialise"):
            loads(bad)


def test_loads_with_missing_buffers() -> None:
    payload, buffers, _ = dumps(b"x" * BIG)
    assert buffers
    with pytest.raises(SerializeError):
        loads(payload)


# --------------------------------------------------------------------------- calls


def test_call_round_trip_with_kwargs() -> None:
    args = (1, "two", [3], Point(4, 5), b"b" * BIG, bytearray(10))
    kwargs = {"alpha": None, "beta": memoryview(b"m" * BIG), "gamma": {"x": 1.5}}
    payload, buffers, flags = dumps_call(args, kwargs)
    assert flags == 0
    assert len(buffers) == 2  # the two large top-level buffers
    got_args, got_kwargs = loads_call(payload, through_the_wire(buffers))
    assert got_args == args
    assert got_kwargs == {**kwargs, "beta": b"m" * BIG}
    assert type(got_args) is tuple and type(got_kwargs) is dict


class Tag(str):
    """A str subclass: not a plain value (its class must travel with it)."""


def test_plain_arguments_given_as_a_list_arrive_as_a_tuple() -> None:
    payload, buffers, flags = dumps_call([1, 2.5, "three", None, True], {})
    assert (buffers, flags) == ([], 0)
    assert loads_call(payload, buffers) == ((1, 2.5, "three", None, True), {})


def test_arguments_given_as_an_iterator_all_arrive() -> None:
    for values in ([1, 2, 3], [1, b"b", 3]):
        payload, buffers, _ = dumps_call(iter(values), {})  # type: ignore[arg-type]
        assert loads_call(payload, buffers) == (tuple(values), {})


def test_subclasses_of_plain_types_keep_their_class() -> None:
    assert type(round_trip(Tag("x"))) is Tag
    (arg,), _ = loads_call(*dumps_call((Tag("y"),), {})[:2])
    assert type(arg) is Tag


def test_call_without_arguments() -> None:
    payload, buffers, _ = dumps_call((), {})
    assert loads_call(payload, buffers) == ((), {})
    payload, buffers, _ = dumps_call([1, 2], {})  # any sequence of arguments
    assert loads_call(payload, buffers) == ((1, 2), {})


@pytest.mark.parametrize(
    "value",
    [
        [(), {}],
        ((), {}, None),
        ((1,),),
        ([1], {}),
        ((1,), [("k", 1)]),
        "args",
        None,
        42,
    ],
    ids=repr,
)
def test_loads_call_rejects_other_shapes(value: Any) -> None:
    with pytest.raises(SerializeError, match="invalid request data format"):
        loads_call(pickle.dumps(value, 5))


# --------------------------------------------------------------------------- cloudpickle


def test_lambda_goes_through_cloudpickle() -> None:
    payload, buffers, flags = dumps(lambda x: x * 3)
    assert flags & spec.FLAG_CLOUDPICKLE
    assert loads(payload, buffers)(5) == 15


def test_local_function_argument_goes_through_cloudpickle() -> None:
    offset = 100

    def local(x: int) -> int:
        return x + offset

    payload, buffers, flags = dumps_call((local,), {"f": lambda: "kw"})
    assert flags == spec.FLAG_CLOUDPICKLE
    (func,), kwargs = loads_call(payload, buffers)
    assert func(1) == 101
    assert kwargs["f"]() == "kw"


def test_local_class_instance_goes_through_cloudpickle() -> None:
    class Local:
        def __init__(self) -> None:
            self.value = 7

    payload, buffers, flags = dumps(Local())
    assert flags == spec.FLAG_CLOUDPICKLE
    assert loads(payload, buffers).value == 7


def test_cloudpickle_keeps_out_of_band_buffers() -> None:
    payload, buffers, flags = dumps_call((lambda: 1, b"z" * BIG), {})
    assert flags == spec.FLAG_CLOUDPICKLE
    assert len(buffers) == 1 and len(payload) < BIG
    (func, data), _ = loads_call(payload, through_the_wire(buffers))
    assert func() == 1 and data == b"z" * BIG


def test_unpicklable_value_names_its_type() -> None:
    lock = threading.Lock()
    with pytest.raises(SerializeError, match="lock") as info:
        dumps(lock)
    assert "cannot serialise" in str(info.value)
    with pytest.raises(SerializeError, match=r"call arguments of types \[.*'lock'.*\]"):
        dumps_call((1, lock), {})
    with pytest.raises(SerializeError, match="lock"):
        dumps_call((), {"k": lock})


# --------------------------------------------------------------------------- missing modules


def test_missing_module_on_load_is_no_module_error() -> None:
    # Protocol 0 GLOBAL opcode: "c<module>\n<name>\n", then STOP.
    payload = b"cpyroact_no_such_module_42\nThing\n."
    with pytest.raises(NoModuleError) as info:
        loads(payload)
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, PyroError)
    assert info.value.name == "pyroact_no_such_module_42"
    assert "pyroact_no_such_module_42" in str(info.value)


def test_missing_module_in_a_protocol_5_pickle() -> None:
    module = types.ModuleType("pyroact_vanishing_module")

    class Gone:
        pass

    Gone.__module__ = module.__name__
    Gone.__qualname__ = "Gone"
    module.Gone = Gone  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, module.__name__, module)
        payload, buffers, flags = dumps_call((Gone(),), {})
    assert flags == 0
    assert module.__name__ not in sys.modules
    with pytest.raises(NoModuleError, match="pyroact_vanishing_module"):
        loads_call(payload, buffers)


def test_missing_attribute_is_a_serialize_error() -> None:
    with pytest.raises(SerializeError):
        loads(b"cpyroact.errors\nNoSuchClass\n.")


# --------------------------------------------------------------------------- exceptions

TRACEBACK = ["Traceback (most recent call last):\n", '  File "x", line 1\n', "ValueError: v\n"]


def exception_round_trip(exc: BaseException, **kwargs: Any) -> BaseException:
    payload = dumps_exception(exc, TRACEBACK)
    assert type(payload) is bytes
    return loads_exception(payload, **kwargs)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        KeyError("key"),
        ZeroDivisionError(),
        OSError("plain message"),
        RemoteError("some.Type", "text"),
        SerializeError("nested"),
        MessageTooLargeError(10, 5),
    ],
    ids=lambda e: type(e).__name__,
)
def test_exception_round_trip_keeps_class_and_args(exc: BaseException) -> None:
    result = exception_round_trip(exc)
    assert type(result) is type(exc)
    assert result.args == exc.args
    assert str(result) == str(exc)
    assert result.remote_stacktrace == TRACEBACK  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("exc", "attributes"),
    [
        pytest.param(
            OSError(2, "No such file", "/nope"), ("errno", "strerror", "filename"), id="OSError"
        ),
        pytest.param(
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            ("encoding", "object", "start", "end", "reason"),
            id="UnicodeDecodeError",
        ),
        pytest.param(
            SyntaxError("bad", ("f.py", 3, 4, "x = (", 3, 5)),
            ("msg", "filename", "lineno", "offset", "text"),
            id="SyntaxError",
        ),
        pytest.param(StopIteration(5), ("value",), id="StopIteration"),
        pytest.param(SystemExit(3), ("code",), id="SystemExit"),
    ],
)
def test_builtin_exception_state_survives(exc: BaseException, attributes: tuple[str, ...]) -> None:
    result = exception_round_trip(exc)
    assert type(result) is type(exc)
    assert result.args == exc.args
    assert str(result) == str(exc)
    for name in attributes:
        assert getattr(result, name) == getattr(exc, name), name


def test_exception_attributes_survive() -> None:
    exc = ValueError("with attributes")
    exc.code = 42  # type: ignore[attr-defined]
    exc.details = {"k": [1, 2]}  # type: ignore[attr-defined]
    exc.remote_stacktrace = ["stale"]  # type: ignore[attr-defined]
    result = exception_round_trip(exc)
    assert result.code == 42  # type: ignore[attr-defined]
    assert result.details == {"k": [1, 2]}  # type: ignore[attr-defined]
    assert result.remote_stacktrace == TRACEBACK  # type: ignore[attr-defined]


def test_exception_with_custom_init_survives() -> None:
    result = exception_round_trip(PairError(3, 4))
    assert type(result) is PairError
    assert result.args == ("3/4",)
    assert str(result) == "3/4"
    assert (result.a, result.b) == (3, 4)  # type: ignore[attr-defined]
    with pytest.raises(PairError, match="3/4"):
        raise result


def test_exception_with_keyword_only_init_survives() -> None:
    result = exception_round_trip(KeywordOnlyError(code=7))
    assert type(result) is KeywordOnlyError
    assert result.code == 7  # type: ignore[attr-defined]
    assert str(result) == "code 7"


def test_exception_whose_class_is_missing_on_load_becomes_remote_error() -> None:
    module = types.ModuleType("pyroact_remote_only_module")

    class ServerOnlyError(Exception):
        pass

    ServerOnlyError.__module__ = module.__name__
    ServerOnlyError.__qualname__ = "ServerOnlyError"
    module.ServerOnlyError = ServerOnlyError  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, module.__name__, module)
        payload = dumps_exception(ServerOnlyError("it broke", 17), TRACEBACK)
    assert module.__name__ not in sys.modules

    result = loads_exception(payload)
    assert type(result) is RemoteError
    assert result.remote_type == "pyroact_remote_only_module.ServerOnlyError"
    assert result.message == "('it broke', 17)"
    assert str(result) == "pyroact_remote_only_module.ServerOnlyError: ('it broke', 17)"
    assert result.remote_stacktrace == TRACEBACK  # type: ignore[attr-defined]

    made = []

    def fallback(type_name: str, message: str) -> BaseException:
        made.append((type_name, message))
        return LookupError(type_name)

    custom = loads_exception(payload, fallback=fallback)
    assert type(custom) is LookupError
    assert made == [("pyroact_remote_only_module.ServerOnlyError", "('it broke', 17)")]
    assert custom.remote_stacktrace == TRACEBACK  # type: ignore[attr-defined]


def test_unpicklable_exception_still_arrives_as_remote_error() -> None:
    exc = RuntimeError("holds a lock")
    exc.lock = threading.Lock()  # type: ignore[attr-defined]
    result = exception_round_trip(exc)
    assert type(result) is RemoteError
    assert result.remote_type == "builtins.RuntimeError"
    assert result.message == "holds a lock"


def test_local_exception_class_travels_by_value() -> None:
    class LocalError(Exception):
        pass

    result = exception_round_trip(LocalError("local"))
    assert type(result).__name__ == "LocalError"
    assert result.args == ("local",)


@pytest.mark.parametrize("bad", [b"", b"garbage", pickle.dumps(5), pickle.dumps((1, 2))])
def test_loads_exception_rejects_non_records(bad: bytes) -> None:
    with pytest.raises(SerializeError, match="invalid exception reply"):
        loads_exception(bad)


# --------------------------------------------------------------------------- compression


@pytest.mark.parametrize("size", [1, 1000, MIB])
def test_compress_round_trip(size: int) -> None:
    data = (b"pyroact compresses repetitive payloads " * (size // 38 + 1))[:size]
    packed = compress(data)
    if packed is None:
        assert size < 20  # only tiny inputs fail to shrink
        return
    assert len(packed) < size
    assert decompress(packed, max_size=size) == data
    assert decompress(memoryview(packed), max_size=size + 1) == data


def test_compress_levels_and_buffer_types() -> None:
    data = bytearray(b"abc" * 10_000)
    for level in (1, 6, 9):
        packed = compress(data, level=level)
        assert packed is not None
        assert decompress(packed, max_size=len(data)) == data


def test_compress_returns_none_when_it_does_not_help() -> None:
    incompressible = bytes(range(256))
    assert compress(incompressible) is None
    assert compress(b"") is None


def test_decompress_exactly_at_the_limit() -> None:
    data = b"\x00" * MIB
    assert decompress(zlib.compress(data), max_size=MIB) == data
    with pytest.raises(MessageTooLargeError):
        decompress(zlib.compress(data), max_size=MIB - 1)


def test_decompress_zip_bomb_is_stopped() -> None:
    bomb = zlib.compress(b"\x00" * (10 * MIB), 9)
    assert len(bomb) < 20_000
    with pytest.raises(MessageTooLargeError) as info:
        decompress(bomb, max_size=MIB)
    assert info.value.limit == MIB
    assert info.value.size > MIB
    assert "PYRO_MAX_MESSAGE_SIZE=1048576" in str(info.value)


@pytest.mark.parametrize("bad", [b"not zlib at all", b"\x78\x9c\xff\xff\xff", b"\x00" * 10])
def test_decompress_invalid_data(bad: bytes) -> None:
    with pytest.raises(SerializeError, match="invalid compressed payload"):
        decompress(bad, max_size=MIB)


@pytest.mark.parametrize("damage", ["truncated", "trailing-garbage"])
def test_decompress_rejects_incomplete_or_padded_streams(damage: str) -> None:
    packed = zlib.compress(b"hello world " * 100)
    bad = packed[:-8] if damage == "truncated" else packed + b"garbage"
    with pytest.raises(SerializeError):
        decompress(bad, max_size=MIB)


def test_module_constants() -> None:
    assert serializer.PROTOCOL == 5
    assert serializer.DEFAULT_OOB_THRESHOLD == 64 * 1024
    assert serializer.TRACEBACK_ATTRIBUTE == "remote_stacktrace"
