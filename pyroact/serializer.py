"""Payload serialisation: pickle protocol 5 with out-of-band buffers (layer 2).

How it works
------------
A call travels as the pickle of ``(args, kwargs)``, a result as the pickle of the value, and an
exception as a small record that survives even when the client cannot rebuild the class. All
three use pickle protocol 5: a buffer at least ``oob_threshold`` bytes long is not copied into
the pickle stream but handed back as an out-of-band buffer, which the wire engine sends as its
own segment and the receiver gets back as a view of its receive buffer.

``bytes`` objects do not take part in protocol 5's out-of-band mechanism by themselves, so the
top-level arguments and results that are large bytes-like values are wrapped (which also makes
``memoryview`` arguments picklable; they arrive as ``bytes``). Values nested deeper travel in
band.

cloudpickle is the fallback for what plain pickle cannot do (lambdas, local functions,
instances of classes defined in ``__main__``); it is not used on the common path.
"""

from __future__ import annotations

import copyreg
import functools
import io
import pickle
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import _wirespec as spec
from .errors import MessageTooLargeError, NoModuleError, RemoteError, SerializeError

__all__ = [
    "DEFAULT_OOB_THRESHOLD",
    "compress",
    "decompress",
    "dumps",
    "dumps_call",
    "dumps_exception",
    "loads",
    "loads_call",
    "loads_exception",
]

DEFAULT_OOB_THRESHOLD = 64 * 1024
PROTOCOL = 5
TRACEBACK_ATTRIBUTE = "remote_stacktrace"

Encoded = tuple[bytes, list[pickle.PickleBuffer], int]


class _OutOfBand:
    """Carries a large bytes-like value out of band; it is rebuilt as ``rebuild(buffer)``."""

    __slots__ = ("data", "rebuild")

    def __init__(self, data: Any, rebuild: type) -> None:
        self.data = data
        self.rebuild = rebuild

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (self.rebuild, (pickle.PickleBuffer(self.data),))


# What each top-level bytes-like type is rebuilt as (memoryviews are not picklable: bytes).
_OUT_OF_BAND_TYPES: dict[type, type] = {bytes: bytes, bytearray: bytearray, memoryview: bytes}


def _wrap_large(value: Any, threshold: int) -> Any:
    rebuild = _OUT_OF_BAND_TYPES.get(type(value))
    if rebuild is None:
        return value
    view = memoryview(value)
    if view.nbytes >= threshold and view.c_contiguous:
        return _OutOfBand(value, rebuild)
    return bytes(view) if type(value) is memoryview else value


def _needs_cloudpickle(values: Iterable[Any]) -> bool:
    # Plain pickle refers to __main__ names by reference, which the receiving process (whose
    # __main__ is another program) cannot resolve: such classes, functions and their
    # instances travel by value.
    return any(
        type(v).__module__ == "__main__" or getattr(v, "__module__", None) == "__main__"
        for v in values
    )


def dumps(obj: Any, *, oob_threshold: int = DEFAULT_OOB_THRESHOLD) -> Encoded:
    """Pickle ``obj``, sending large buffers out of band.

    Args:
        obj: the value.
        oob_threshold: buffers at least this many bytes long go out of band.

    Returns:
        ``(payload, buffers, flags)``: the pickle bytes, the out-of-band buffers and the
        ``FLAG_*`` bits describing the payload.

    Raises:
        SerializeError: neither pickle nor cloudpickle can serialise the value.
    """
    return _dumps(_wrap_large(obj, oob_threshold), oob_threshold, (obj,))


def _dumps(obj: Any, threshold: int, top: Sequence[Any]) -> Encoded:
    buffers: list[pickle.PickleBuffer] = []

    def keep_in_band(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= threshold:
            buffers.append(buf)
            return False
        return True

    if not _needs_cloudpickle(top):
        try:
            return pickle.dumps(obj, PROTOCOL, buffer_callback=keep_in_band), buffers, 0
        except RecursionError as exc:
            raise SerializeError(f"cannot serialise {_describe(obj)}: {exc}") from exc
        except Exception:
            # Whatever plain pickle refused (lambdas, local classes, odd __reduce__ methods),
            # cloudpickle gets a try; its failure is reported below.
            buffers.clear()
    try:
        stream = io.BytesIO()
        _cloud_pickler()(stream, PROTOCOL, buffer_callback=keep_in_band).dump(obj)
        payload = stream.getvalue()
    except Exception as exc:
        raise SerializeError(f"cannot serialise {_describe(obj)}: {exc}") from exc
    return payload, buffers, spec.FLAG_CLOUDPICKLE


@functools.cache
def _cloud_pickler() -> type[pickle.Pickler]:
    import cloudpickle  # imported lazily: most processes never need it

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        # cloudpickle would ship an open file's *contents*: a silent copy that leaks data.
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, io.IOBase):
                raise pickle.PicklingError(f"cannot pickle an open file ({obj!r})")
            return super().reducer_override(obj)

    return Pickler


def _describe(obj: Any) -> str:
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], dict):
        types = [type(a).__name__ for a in obj[0]] + [type(v).__name__ for v in obj[1].values()]
        return f"call arguments of types {types}"
    return f"a value of type {type(obj).__qualname__}"


def loads(payload: Any, buffers: Sequence[Any] = ()) -> Any:
    """Unpickle a payload produced by :func:`dumps`.

    Args:
        payload: the pickle bytes (any bytes-like object).
        buffers: the out-of-band buffers, in order.

    Returns:
        The value.

    Raises:
        NoModuleError: a module the value needs is not importable here.
        SerializeError: the payload is not a valid pickle.
    """
    try:
        return pickle.loads(payload, buffers=buffers)
    except ModuleNotFoundError as exc:
        raise NoModuleError(f"No module named {exc.name!r}", name=exc.name) from None
    except Exception as exc:
        raise SerializeError(f"cannot deserialise payload: {exc}") from exc


def dumps_call(
    args: Sequence[Any], kwargs: dict[str, Any], *, oob_threshold: int = DEFAULT_OOB_THRESHOLD
) -> Encoded:
    """Pickle the arguments of a call.

    Args:
        args: positional arguments.
        kwargs: keyword arguments.
        oob_threshold: buffers at least this many bytes long go out of band.

    Returns:
        ``(payload, buffers, flags)`` as for :func:`dumps`.

    Raises:
        SerializeError: an argument cannot be serialised.
    """
    wrapped_args = tuple(_wrap_large(a, oob_threshold) for a in args)
    wrapped_kwargs = (
        {k: _wrap_large(v, oob_threshold) for k, v in kwargs.items()} if kwargs else kwargs
    )
    top = (*args, *kwargs.values()) if kwargs else args
    return _dumps((wrapped_args, wrapped_kwargs), oob_threshold, top)


def loads_call(payload: Any, buffers: Sequence[Any] = ()) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpickle the arguments of a call produced by :func:`dumps_call`.

    Args:
        payload: the pickle bytes.
        buffers: the out-of-band buffers.

    Returns:
        ``(args, kwargs)``.

    Raises:
        NoModuleError: a module an argument needs is not importable here.
        SerializeError: the payload is not a valid call.
    """
    value = loads(payload, buffers)
    if (
        type(value) is not tuple
        or len(value) != 2
        or type(value[0]) is not tuple
        or type(value[1]) is not dict
    ):
        raise SerializeError("invalid request data format: expected (args tuple, kwargs dict)")
    return value[0], value[1]


# Exceptions travel as (pickled exception or None, dotted class name, message, traceback lines).
# The pickled form rebuilds the instance without calling __init__, so classes whose __init__
# takes other arguments than it passes to BaseException survive the trip.


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: Any) -> Any:
    exc = cls.__new__(cls, *args)
    exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc


class _ExceptionPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException) and type(obj) not in copyreg.dispatch_table:
            state = dict(getattr(obj, "__dict__", {}))
            state.pop(TRACEBACK_ATTRIBUTE, None)
            return (_rebuild_exception, (type(obj), obj.args, state))
        return NotImplemented


def _pickle_exception(exc: BaseException) -> bytes | None:
    # Plain pickling keeps the state builtin exceptions set in C (OSError.filename, ...); it
    # is used whenever it round-trips here, the __new__-based rebuild otherwise.
    try:
        plain = pickle.dumps(exc, PROTOCOL)
        if type(pickle.loads(plain)) is type(exc):
            return plain
    except Exception:
        pass
    stream = io.BytesIO()
    try:
        _ExceptionPickler(stream, PROTOCOL).dump(exc)
    except Exception:
        try:
            import cloudpickle

            return bytes(cloudpickle.dumps(exc, PROTOCOL))
        except Exception:
            return None
    return stream.getvalue()


def dumps_exception(exc: BaseException, traceback_lines: Sequence[str]) -> bytes:
    """Serialise an exception raised by a remote method, with its traceback.

    Args:
        exc: the exception.
        traceback_lines: the remote traceback, as formatted lines.

    Returns:
        The payload for an ``MSG_EXCEPTION`` frame.
    """
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<{cls.__qualname__} whose str() failed>"
    record = (
        _pickle_exception(exc),
        f"{cls.__module__}.{cls.__qualname__}",
        message,
        [str(line) for line in traceback_lines],
    )
    return pickle.dumps(record, PROTOCOL)


def loads_exception(
    payload: Any, *, fallback: Callable[[str, str], BaseException] | None = None
) -> BaseException:
    """Rebuild an exception serialised by :func:`dumps_exception`.

    The exception gets the remote traceback lines as its ``remote_stacktrace`` attribute.
    When its class cannot be imported or rebuilt here, a :class:`RemoteError` (or what
    ``fallback(type_name, message)`` returns) carries the type name and message instead.

    Args:
        payload: the payload of an ``MSG_EXCEPTION`` frame.
        fallback: builds the stand-in exception; defaults to :class:`RemoteError`.

    Returns:
        The exception, ready to raise.

    Raises:
        SerializeError: the payload is not an exception record.
    """
    try:
        pickled, type_name, message, lines = pickle.loads(payload)
    except Exception as exc:
        raise SerializeError(f"invalid exception reply: {exc}") from exc
    exc_obj: BaseException | None = None
    if pickled is not None:
        try:
            exc_obj = pickle.loads(pickled)
        except Exception:
            exc_obj = None
    if not isinstance(exc_obj, BaseException):
        exc_obj = (fallback or RemoteError)(type_name, message)
    setattr(exc_obj, TRACEBACK_ATTRIBUTE, lines)
    return exc_obj


def compress(payload: Any, *, level: int = 6) -> bytes | None:
    """Compress a payload with zlib.

    Args:
        payload: the bytes to compress.
        level: zlib level 1-9.

    Returns:
        The compressed bytes, or None when compressing would not make the payload smaller.
    """
    packed = zlib.compress(payload, level)
    return packed if len(packed) < len(memoryview(payload)) else None


def decompress(payload: Any, *, max_size: int) -> bytes:
    """Decompress a zlib payload, never producing more than ``max_size`` bytes.

    Args:
        payload: the compressed bytes.
        max_size: the limit (the connection's ``PYRO_MAX_MESSAGE_SIZE``).

    Returns:
        The decompressed bytes.

    Raises:
        MessageTooLargeError: the payload inflates beyond ``max_size``.
        SerializeError: the payload is not valid zlib data.
    """
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, max_size + 1)
    except zlib.error as exc:
        raise SerializeError(f"invalid compressed payload: {exc}") from None
    if len(data) > max_size or inflater.unconsumed_tail:
        raise MessageTooLargeError(max(len(data), max_size + 1), max_size)
    if not inflater.eof or inflater.unused_data:
        raise SerializeError("invalid compressed payload: truncated stream or trailing bytes")
    return data
