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
band. A wrapped ``bytes`` value is rebuilt by :func:`_bytes_from_buffer`: when the Cython wire
engine received the buffer straight into a ``bytes`` object, that object is the value, so a
large ``bytes`` argument or result is never copied on arrival.

cloudpickle is the fallback for what plain pickle cannot do (lambdas, local functions,
instances of classes defined in ``__main__``); it is not used on the common path.

Mobile code
-----------
A pickle names the module of every class it uses, and unpickling imports it. When that
module is missing, :func:`loads` raises :class:`~pyroact.errors.NoModuleError` whose ``name``
is the full dotted module name the pickle refers to (found by ``Unpickler.find_class``;
``ModuleNotFoundError.name`` would only give the first missing package). Mobile code
(:mod:`pyroact.mobile`) ships that module's *source* (:func:`module_source`) and installs it
on the other side (:func:`install_module`); both live here, below the protocol and the
daemon, which use them. Installed sources are served by a finder at the end of
``sys.meta_path``, so the import system itself gives the guarantees mobile code needs: a
module the process already has is never replaced, each module runs once, threads that import
it meanwhile wait until it is complete, and a failed module is removed from ``sys.modules``.
"""

from __future__ import annotations

import copyreg
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import pickle
import sys
import threading
import types
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import _wirespec as spec
from .errors import MessageTooLargeError, NoModuleError, PyroError, RemoteError, SerializeError

__all__ = [
    "DEFAULT_OOB_THRESHOLD",
    "compress",
    "decompress",
    "dumps",
    "dumps_call",
    "dumps_exception",
    "install_module",
    "loads",
    "loads_call",
    "loads_exception",
    "module_source",
]

DEFAULT_OOB_THRESHOLD = 64 * 1024
PROTOCOL = 5
TRACEBACK_ATTRIBUTE = "remote_stacktrace"

log = logging.getLogger("pyroact.system")

Encoded = tuple[bytes, list[pickle.PickleBuffer], int]


class _OutOfBand:
    """Carries a large bytes-like value out of band; it is rebuilt as ``rebuild(buffer)``."""

    __slots__ = ("data", "rebuild")

    def __init__(self, data: Any, rebuild: Callable[[Any], Any]) -> None:
        self.data = data
        self.rebuild = rebuild

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (self.rebuild, (pickle.PickleBuffer(self.data),))


def _bytes_from_buffer(buf: Any) -> bytes:
    """Rebuild an out-of-band ``bytes`` value from its received buffer (pickle calls this).

    The Cython wire engine receives a large frame's buffers into fresh ``bytes`` objects, each
    exported by an object whose ``received_bytes`` is that ``bytes`` once the frame is complete.
    When ``buf`` is (a view of) all of such an object, the received ``bytes`` is the value:
    no copy. Anything else (the pure engine's ``bytearray`` parts, a small frame's ``bytes``,
    a part of a buffer) is copied, as ``bytes(buf)`` always did.
    """
    if type(buf) is memoryview:
        # pickle passes the buffer as given, or wrapped in a read-only memoryview
        # (READONLY_BUFFER); either way .obj is the exporter.
        received = getattr(buf.obj, "received_bytes", None)
        if type(received) is bytes and buf.nbytes == len(received) and buf.c_contiguous:
            return received
    return bytes(buf)


# What each top-level bytes-like type is rebuilt as (memoryviews are not picklable: bytes).
# pickle refers to the rebuild callables by name: _bytes_from_buffer must stay importable as
# pyroact.serializer._bytes_from_buffer.
_OUT_OF_BAND_TYPES: dict[type, Callable[[Any], Any]] = {
    bytes: _bytes_from_buffer,
    bytearray: bytearray,
    memoryview: _bytes_from_buffer,
}


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


# Values pickled as they are, with nothing to send out of band and never by value: most
# arguments and results are these, and they skip the checks below.
_PLAIN_TYPES = frozenset({int, float, bool, str, type(None)})


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
    if type(obj) in _PLAIN_TYPES:
        return pickle.dumps(obj, PROTOCOL), [], 0
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
        NoModuleError: a module the value needs is not importable here; its ``name`` is the
            dotted name of the module the pickle refers to.
        SerializeError: the payload is not a valid pickle.
    """
    try:
        return pickle.loads(payload, buffers=buffers)
    except ModuleNotFoundError:
        pass
    except Exception as exc:
        raise SerializeError(f"cannot deserialise payload: {exc}") from exc
    # The fast path above only learns the first missing package ('agent' for agent.shop);
    # a second pass, through find_class, names the module the pickle refers to. Rare, so the
    # common path keeps C pickle's speed.
    try:
        return _ModuleNamingUnpickler(io.BytesIO(payload), buffers=buffers).load()
    except NoModuleError:
        raise
    except ModuleNotFoundError as exc:
        # Not a class reference: an import inside some __reduce__ callable.
        raise NoModuleError(f"No module named {exc.name!r}", name=exc.name) from None
    except Exception as exc:
        raise SerializeError(f"cannot deserialise payload: {exc}") from exc


class _ModuleNamingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError as exc:
            missing = exc.name or module
            if module == missing or module.startswith(missing + "."):
                missing = module
            # Otherwise the module exists here but one of its own imports does not.
            raise NoModuleError(f"No module named {missing!r}", name=missing) from None


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
    args = tuple(args)
    if not kwargs and all(type(a) in _PLAIN_TYPES for a in args):
        return pickle.dumps((args, {}), PROTOCOL), [], 0
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


# -- mobile code: module sources --------------------------------------------------------------

_MOBILE_ORIGIN = "mobile:"


def module_source(name: str) -> str:
    """The Python source of module ``name``, as its loader gives it (never bytecode).

    A module that itself arrived as mobile code gives the source it was installed from, so
    code can be passed on (client -> server 1 -> server 2). A module that is not imported yet
    is located without running it.

    Args:
        name: the dotted module name.

    Returns:
        The source text.

    Raises:
        NoModuleError: there is no such module here.
        PyroError: ``name`` is not a dotted module name, or the module has no readable
            source (``'cannot read module source code'``), for example a C extension, a
            built-in or a ``.pyc``-only module.
    """
    _check_module_name(name)
    module = sys.modules.get(name)
    try:
        spec_ = getattr(module, "__spec__", None) if module is not None else None
        if spec_ is None:
            spec_ = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec_ = None
    if spec_ is None and module is None:
        raise NoModuleError(f"No module named {name!r}", name=name)
    loader = getattr(spec_, "loader", None) or getattr(module, "__loader__", None)
    get_source = getattr(loader, "get_source", None)
    source: str | None = None
    if get_source is not None:
        try:
            source = get_source(name)
        except ImportError:
            source = None
    if source is None:
        raise PyroError(
            f"cannot read module source code of {name!r}: its loader "
            f"({type(loader).__name__}) has no source (only Python source files travel as "
            "mobile code, never bytecode or extension modules)"
        )
    return source


def install_module(name: str, source: str, *, origin: str) -> types.ModuleType:
    """Make module ``name`` importable from ``source`` and import it (mobile code).

    A module this process already has (imported, or importable from its own files) is never
    replaced: the source is then ignored. Missing parent packages are created empty; existing
    ones are reused. The source is kept, so a module whose own imports failed runs again on
    its next import, once the missing module was supplied.

    Args:
        name: the dotted module name.
        source: its Python source text.
        origin: where the source came from, for the log.

    Returns:
        The module.

    Raises:
        TypeError: ``source`` is not text (bytecode is never accepted).
        NoModuleError: the module's code imports a module this process lacks (``name``
            attribute: that module), so it must be supplied first.
        PyroError: ``name`` is not a dotted module name, or cannot be a module here (a
            parent is not a package).
        Exception: whatever the module's code raised while it ran.
    """
    _check_module_name(name)
    if not isinstance(source, str):
        raise TypeError(f"mobile code is Python source text (str), not {type(source).__name__}")
    if name not in sys.modules:
        _MOBILE_IMPORTER.add(name, source)
        log.info("mobile module %s: %d characters of source from %s", name, len(source), origin)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or not exc.name:
            raise PyroError(f"cannot install mobile module {name!r}: {exc}") from None
        raise NoModuleError(
            f"No module named {exc.name!r} (imported by mobile module {name!r})", name=exc.name
        ) from None


def _check_module_name(name: Any) -> None:
    # Absolute dotted names only: nothing relative, empty or made for path tricks.
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
        raise PyroError(f"{name!r} is not a module name")


class _MobileImporter(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds and loads the modules :func:`install_module` was given (last on the meta path)."""

    def __init__(self) -> None:
        self._sources: dict[str, str] = {}
        self._lock = threading.Lock()
        self._installed = False

    def add(self, name: str, source: str) -> None:
        with self._lock:
            self._sources[name] = source
            if not self._installed:
                # Last, so every real module of this process wins over a supplied one.
                sys.meta_path.append(self)
                self._installed = True
        # A mobile module that was imported as a plain module becomes a package once a
        # submodule of it arrives (its code has run already; only the import path changes).
        parent = name.rpartition(".")[0]
        while parent:
            module = sys.modules.get(parent)
            if module is not None and module.__loader__ is self and not hasattr(module, "__path__"):
                module.__path__ = []
                if module.__spec__ is not None:
                    module.__spec__.submodule_search_locations = []
            parent = parent.rpartition(".")[0]

    def _has_children(self, name: str) -> bool:
        prefix = name + "."
        return any(known.startswith(prefix) for known in self._sources)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        with self._lock:
            package = self._has_children(fullname)
            if fullname not in self._sources and not package:
                return None
        spec_ = importlib.util.spec_from_loader(
            fullname, self, origin=_MOBILE_ORIGIN + fullname, is_package=package
        )
        if spec_ is not None:
            # __file__ = the origin: inspect and linecache then find the source through
            # get_source, so remote tracebacks show the mobile code's lines.
            spec_.has_location = True
        return spec_

    def get_source(self, fullname: str) -> str:
        with self._lock:
            if fullname in self._sources:
                return self._sources[fullname]
            if self._has_children(fullname):
                return ""  # a parent package that only exists for its mobile submodules
        raise ImportError(f"no mobile code for {fullname!r}", name=fullname)

    def is_package(self, fullname: str) -> bool:
        with self._lock:
            return self._has_children(fullname)

    def get_code(self, fullname: str) -> types.CodeType:
        return compile(
            self.get_source(fullname), _MOBILE_ORIGIN + fullname, "exec", dont_inherit=True
        )


_MOBILE_IMPORTER = _MobileImporter()
