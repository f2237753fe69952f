"""Pyro 3's core API: objects, URIs, proxies and the Daemon (layer 7).

The names are Pyro 3's (``Pyro.core`` → ``pyroact.core``): ``ObjBase``, ``SynchronizedObjBase``,
``CallbackObjBase``, ``PyroURI``, ``DynamicProxy``, ``DynamicProxyWithAttrs``, ``Daemon``,
``getProxyForURI``, ``getAttrProxyForURI``, ``initClient`` and ``initServer``.

Unlike Pyro 3, only public names are remotely reachable: names starting with ``_`` and
``ObjBase``'s own management methods are refused before anything is unpickled, except the
attribute-access internals (``_r_ha``, ``_r_ga``, ``_r_sa``), the mobile-code entry points
(``remote_supply_code``, ``remote_retrieve_code``, which check ``PYRO_MOBILE_CODE`` and the
object's code validator themselves) and the numeric and container dunders the object's class
itself defines (so ``remote += 1`` works).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import pickle
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import pyroact

from . import _wirespec as spec
from . import constants, serializer, util
from ._mailbox import Mailbox
from ._procroutes import PINNED, PLACEMENTS, REPLICATED, ProcessRouter
from .errors import (
    BusyError,
    DaemonError,
    NamingError,
    NoModuleError,
    ProtocolError,
    PyroError,
    SerializeError,
    URIError,
    _InternalNoModuleError,
)
from .protocol import (
    CONNECTION_FIELDS,
    LocalStorage,
    PYROAdapter,
    TCPConnection,
    TCPServer,
    current_call,
)
from .transport import client_tls_context
from .wire import Frame

__all__ = [
    "PINNED",
    "REPLICATED",
    "CallbackObjBase",
    "Daemon",
    "DaemonServant",
    "DynamicProxy",
    "DynamicProxyWithAttrs",
    "ObjBase",
    "PyroURI",
    "SynchronizedObjBase",
    "getAttrProxyForURI",
    "getProxyForURI",
    "initClient",
    "initServer",
    "processStringURI",
]

log = logging.getLogger("pyroact.system")
user_log = logging.getLogger("pyroact.user")

# -- URIs ------------------------------------------------------------------------------------

_URI_RE = re.compile(
    r"^(?P<protocol>[A-Za-z]+)://"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.%]+)\]|(?P<host>[^\s:/\[\]]+))?"
    r"(?::(?P<port>\d+))?"
    r"(?:/(?P<id>\S*))?$"
)
_LOCATION_RE = re.compile(
    r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.%]+)\]|(?P<host>[^\s:/\[\]]+))?(?::(?P<port>\d+))?$"
)
_PROTOCOLS = ("PYRO", "PYROLOC", "PYROSSL", "PYROLOCSSL", "PYRONAME", "PYRONAMESSL")

# Set by pyroact.naming when it is imported: resolves a PYRONAME URI to a PYRO URI.
pyroname_resolver: Callable[[PyroURI], PyroURI] | None = None


def _resolve_host(host: str) -> str:
    if pyroact.config.PYRO_DNS_URI:
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    # IPv4 first: a name like "localhost" may list ::1 first while daemons bind IPv4.
    for family in (socket.AF_INET, socket.AF_UNSPEC):
        try:
            infos = socket.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos:
            return str(infos[0][4][0])
    raise URIError(f"unknown host {host!r}")


class PyroURI:
    """The address of a remote object: ``PROTOCOL://host:port/objectID``.

    Args:
        host: a host name or IP, another PyroURI (copied), or a whole URI string.
        objectID: the object id (or, for PYROLOC/PYRONAME, the object name).
        port: the port; 0 means ``PYRO_PORT``.
        prtcol: ``"PYRO"``, ``"PYROLOC"``, ``"PYRONAME"`` or their SSL variants.

    Raises:
        URIError: the URI is malformed or its host unknown.
        TypeError: the port is not an integer.
    """

    protocol: str
    address: str
    port: int
    objectID: str

    def __init__(self, host: Any, objectID: Any = 0, port: Any = 0, prtcol: str = "PYRO") -> None:
        if isinstance(host, PyroURI):
            other: PyroURI = host
            self.protocol = other.protocol
            self.address = other.address
            self.port = other.port
            self.objectID = other.objectID
            return
        if isinstance(host, str) and "://" in host:
            self._parse(host)
            return
        if not objectID:
            raise URIError(f"invalid URI format: no object id for host {host!r}")
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"port must be an integer, not {port!r}")
        if "/" in str(host):
            raise URIError(f"malformed hostname {host!r}")
        self.protocol = prtcol.upper()
        self.address = _resolve_host(str(host).strip("[]"))
        self.port = port or pyroact.config.PYRO_PORT
        self.objectID = str(objectID)

    def _parse(self, text: str) -> None:
        text = text.strip()
        scheme, _sep, rest = text.partition("://")
        if scheme.upper() in ("PYRONAME", "PYRONAMESSL"):
            self._parse_pyroname(scheme.upper(), rest, text)
            return
        match = _URI_RE.match(text)
        if match is None:
            raise URIError(f"invalid URI format: {text!r}")
        protocol = match["protocol"].upper()
        if protocol not in _PROTOCOLS:
            raise URIError(f"invalid URI format: unknown protocol {match['protocol']!r}")
        host = match["ipv6"] or match["host"] or ""
        ident = match["id"]
        port = int(match["port"]) if match["port"] else 0
        if not ident or not host:
            raise URIError(f"invalid URI format: {text!r} needs a host and an object id")
        if port > 65535:
            raise URIError(f"invalid URI format: port {port} out of range")
        self.protocol = protocol
        self.address = _resolve_host(host)
        self.port = port or pyroact.config.PYRO_PORT
        self.objectID = ident

    def _parse_pyroname(self, protocol: str, rest: str, text: str) -> None:
        # PYRONAME://[nshost[:nsport]/]name; the name itself may contain ':' (":test.simple").
        location, slash, name = rest.partition("/")
        if not slash:
            location, name = "", rest
        match = _LOCATION_RE.match(location)
        if match is None or not name or any(c.isspace() for c in name):
            raise URIError(f"invalid URI format: {text!r}")
        port = int(match["port"]) if match["port"] else 0
        if port > 65535:
            raise URIError(f"invalid URI format: port {port} out of range")
        self.protocol = protocol
        self.address = match["ipv6"] or match["host"] or ""
        self.port = port
        self.objectID = name

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        if self.protocol.startswith("PYRONAME"):
            location = f"{host}:{self.port}/" if self.port else (f"{host}/" if host else "")
            return f"{self.protocol}://{location}{self.objectID}"
        return f"{self.protocol}://{host}:{self.port}/{self.objectID}"

    def __repr__(self) -> str:
        return f"<PyroURI '{self}'>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PyroURI):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_uri_from_parts, (self.protocol, self.address, self.port, self.objectID))

    def clone(self) -> PyroURI:
        """A copy of this URI."""
        return PyroURI(self)

    def getProxy(self) -> DynamicProxy:
        """A proxy for the object this URI names."""
        return DynamicProxy(self)

    def getAttrProxy(self) -> DynamicProxyWithAttrs:
        """An attribute-capable proxy for the object this URI names."""
        return DynamicProxyWithAttrs(self)


def _uri_from_parts(protocol: str, address: str, port: int, object_id: str) -> PyroURI:
    uri = PyroURI.__new__(PyroURI)
    uri.protocol, uri.address, uri.port, uri.objectID = protocol, address, port, object_id
    return uri


def processStringURI(text: str) -> PyroURI:
    """Parse a URI string (Pyro 3's module-level parser).

    Args:
        text: the URI.

    Returns:
        The PyroURI.

    Raises:
        URIError: the URI is malformed.
    """
    return PyroURI(text)


def _bindable(uri: PyroURI) -> PyroURI:
    if uri.protocol.startswith("PYRONAME"):
        if pyroname_resolver is None:
            raise NamingError(
                "PYRONAME URIs are resolved through the name server: import pyroact.naming",
                str(uri),
            )
        return pyroname_resolver(uri)
    if uri.protocol in ("PYROSSL", "PYROLOCSSL"):
        # Fail loudly and early: a TLS proxy without a usable TLS configuration is refused
        # when it is made, naming the file at fault (there is never a plain TCP fallback).
        try:
            client_tls_context(pyroact.config)
        except ProtocolError as exc:
            raise ProtocolError(f"unsupported protocol {uri.protocol} here: {exc}") from exc
    return uri


# -- server-side objects ---------------------------------------------------------------------


class ObjBase:
    """Base class of every object served by a Daemon (call ``ObjBase.__init__(self)``).

    Attributes:
        objectGUID: the object id.
        delegate: the object remote calls go to (see :meth:`delegateTo`), or None for self.
        lastUsed: ``time.time()`` of the last remote call (for transient reaping).
    """

    def __init__(self) -> None:
        self.objectGUID = util.getGUID()
        self.delegate: Any = None
        self.lastUsed = time.time()
        self.daemon: Any = None
        self.codeValidator: Callable[..., bool] | None = None

    def GUID(self) -> str:
        """The object id."""
        return self.objectGUID

    def setGUID(self, guid: str) -> None:
        """Replace the object id (for fixed URIs); do it before connecting.

        Args:
            guid: the new id.
        """
        self.objectGUID = guid

    def delegateTo(self, delegate: Any) -> None:
        """Send remote calls and attribute access to ``delegate`` instead of self.

        Args:
            delegate: any object.
        """
        self.delegate = delegate

    def setPyroDaemon(self, daemon: Any) -> None:
        """Internal: remember the daemon this object is connected to (a weak reference)."""
        self.daemon = weakref.ref(daemon) if daemon is not None else None

    def getDaemon(self) -> Any:
        """The daemon this object is connected to, or None."""
        return self.daemon() if self.daemon is not None else None

    def getLocalStorage(self) -> Any:
        """The thread-local storage of the call being served (``.caller`` is the connection).

        Raises:
            DaemonError: the object is not connected to a daemon.
        """
        daemon = self.getDaemon()
        if daemon is None:
            raise DaemonError("object is not connected to a daemon")
        return daemon.getLocalStorage()

    def getProxy(self) -> DynamicProxy:
        """A proxy for this connected object.

        Raises:
            DaemonError: the object is not connected to a daemon.
        """
        return DynamicProxy(self._uri())

    def getAttrProxy(self) -> DynamicProxyWithAttrs:
        """An attribute-capable proxy for this connected object.

        Raises:
            DaemonError: the object is not connected to a daemon.
        """
        return DynamicProxyWithAttrs(self._uri())

    def _uri(self) -> PyroURI:
        daemon = self.getDaemon()
        if daemon is None:
            raise DaemonError("object is not connected to a daemon: connect it first")
        uri: PyroURI = daemon.uri_for(self.objectGUID)
        return uri

    def setCodeValidator(self, validator: Callable[..., bool]) -> None:
        """Set the mobile-code validator ``validator(name, module, address) -> bool``.

        It is asked before a client's module is installed here, as ``(name, source,
        address)``, and before this process's source of a module is sent to a client, as
        ``(name, None, None)``; only a true result allows it. Without a validator, both are
        denied (see :mod:`pyroact.mobile` for ready-made validators).

        Args:
            validator: the callable.

        Raises:
            TypeError: ``validator`` is not callable.
        """
        if not callable(validator):
            raise TypeError("codevalidator must be a callable object")
        self.codeValidator = validator

    def remote_supply_code(self, name: str, source: str, address: Any) -> None:
        """Install module ``name`` from the Python ``source`` a client supplies (mobile code).

        A client's proxy calls this when the arguments of its call need a module this
        process lacks, then sends the call again. It needs ``PYRO_MOBILE_CODE`` on here and
        the object's code validator to accept ``(name, source, address)``. A module this
        process already has is not replaced.

        Args:
            name: the dotted module name.
            source: the module's Python source text (bytecode is refused).
            address: where the code comes from. In a remote call the validator gets the
                client address this server sees for the connection instead, which the
                client cannot forge.

        Raises:
            PyroError: ``'attempt to supply code denied'`` (mobile code off, no validator,
                the validator said no, or the source is not text), or the module cannot be
                installed under that name.
            Exception: what the module's code raised while it ran. When it imports another
                module this process lacks, the client is asked for that one and then calls
                this again.
        """
        if not isinstance(name, str) or not isinstance(source, str):
            raise PyroError(
                "attempt to supply code denied: mobile code is a module name and its Python "
                f"source text, not {type(name).__name__} and {type(source).__name__}"
            )
        caller = current_call.connection
        if caller is not None:
            address = caller.addr
        self._pyroact_check_mobile_code("supply", name, source, address)
        try:
            serializer.install_module(name, source, origin=f"client {address}")
        except NoModuleError as exc:
            raise _InternalNoModuleError(exc.name) from None

    def remote_retrieve_code(self, name: str) -> str:
        """The Python source of module ``name``, for a client that lacks it (mobile code).

        A client's proxy with ``PYRO_MOBILE_CODE`` on calls this when a result needs a module
        the client does not have. It needs ``PYRO_MOBILE_CODE`` on here and the object's code
        validator to accept ``(name, None, None)``.

        Args:
            name: the dotted module name.

        Returns:
            The module's source text.

        Raises:
            PyroError: ``'attempt to retrieve code denied'``, ``'Client wanted a non-existing
                module'`` or ``'cannot read module source code'``.
        """
        if not isinstance(name, str):
            raise PyroError(f"attempt to retrieve code denied: {name!r} is not a module name")
        self._pyroact_check_mobile_code("retrieve", name, None, None)
        try:
            source = serializer.module_source(name)
        except NoModuleError:
            log.warning("a client wanted the code of a module this process lacks: %s", name)
            raise PyroError(f"Client wanted a non-existing module: {name!r}") from None
        log.info("sending the source of module %s to a client", name)
        return source

    def _pyroact_check_mobile_code(
        self, action: str, name: str, source: str | None, address: Any
    ) -> None:
        if not pyroact.config.PYRO_MOBILE_CODE:
            raise PyroError(
                f"attempt to {action} code denied: module {name!r}: PYRO_MOBILE_CODE is off "
                "in the server"
            )
        validator = getattr(self, "codeValidator", None)
        if validator is None:
            raise PyroError(
                f"attempt to {action} code denied: module {name!r}: the object has no code "
                "validator, and mobile code is denied without one; the server allows it with "
                f"{type(self).__name__}.setCodeValidator(validator), for example "
                "pyroact.mobile.allow_modules('agent.*') or pyroact.mobile.accept_all"
            )
        if not validator(name, source, address):
            log.warning("code validator denied: %s code of module %s (%s)", action, name, address)
            raise PyroError(
                f"attempt to {action} code denied by the code validator: module {name!r}"
            )

    def _gotReaped(self) -> None:
        """Called once after the daemon reaped (disconnected) this idle transient object."""

    # Remote attribute access (DynamicProxyWithAttrs).

    def _pyroact_target(self) -> Any:
        return self.delegate if self.delegate is not None else self

    def _r_ha(self, attr: str) -> int:
        _check_attribute_name(attr)
        value = getattr(self._pyroact_target(), attr, None)
        return 1 if callable(value) and not isinstance(value, type) else 2

    def _r_ga(self, attr: str) -> Any:
        _check_attribute_name(attr)
        return getattr(self._pyroact_target(), attr)

    def _r_sa(self, attr: str, value: Any) -> None:
        _check_attribute_name(attr)
        target = self._pyroact_target()
        current = getattr(target, attr, None)
        if callable(current) and not isinstance(current, type):
            # Pyro 3's 'not an attribute': a method cannot be replaced through a proxy.
            raise AttributeError(f"{attr!r} is a method, not an attribute; it cannot be set")
        setattr(target, attr, value)


class SynchronizedObjBase(ObjBase):
    """An ObjBase whose remote calls run one at a time, in arrival order (its mailbox is serial)."""


class CallbackObjBase(ObjBase):
    """An ObjBase for callbacks: an exception in a call goes back to the caller and is also
    raised here (single-threaded daemon: out of ``handleRequests``) or reported through
    :meth:`Daemon.callbackError` (threaded), without closing the connection."""


_MANAGEMENT_NAMES = frozenset(n for n in dir(ObjBase) if not n.startswith("_")) | {
    "objectGUID",
    "delegate",
    "daemon",
    "lastUsed",
    "codeValidator",
    "remote_supply_code",
    "remote_retrieve_code",
}
_ATTRIBUTE_CALLS = frozenset({"_r_ha", "_r_ga", "_r_sa"})
_MOBILE_CODE_CALLS = frozenset({"remote_supply_code", "remote_retrieve_code"})
# Internal calls that go to the ObjBase itself, never to its delegate.
_OWN_CALLS = _ATTRIBUTE_CALLS | _MOBILE_CODE_CALLS
_FORWARDED_DUNDERS = (
    "__len__ __getitem__ __setitem__ __delitem__ __contains__ "
    "__add__ __sub__ __mul__ __truediv__ __floordiv__ __mod__ __pow__ __matmul__ "
    "__and__ __or__ __xor__ __lshift__ __rshift__ __neg__ __pos__ __abs__ __invert__ "
    "__radd__ __rsub__ __rmul__ __rtruediv__ __rfloordiv__ __rmod__ __rpow__ "
    "__iadd__ __isub__ __imul__ __itruediv__ __ifloordiv__ __imod__ __ipow__ "
    "__iand__ __ior__ __ixor__ __ilshift__ __irshift__"
).split()
_DUNDER_SET = frozenset(_FORWARDED_DUNDERS)


def _check_attribute_name(attr: Any) -> None:
    if not isinstance(attr, str) or attr.startswith("_") or attr in _MANAGEMENT_NAMES:
        raise AttributeError(f"attribute {attr!r} is not remotely accessible")


def _refusal(obj: ObjBase, method: str) -> str | None:
    """Why ``method`` may not be called remotely on ``obj`` (None when it may)."""
    if method in _OWN_CALLS:
        return None
    if method in _DUNDER_SET:
        target = type(obj._pyroact_target())
        if getattr(target, method, None) is getattr(object, method, None):
            return f"{target.__name__!r} object does not define {method}"
        return None
    if method.startswith("_"):
        return f"method {method!r} is private and not remotely accessible"
    if method in _MANAGEMENT_NAMES:
        return f"method {method!r} is an ObjBase management method, not remotely accessible"
    return None


class DaemonServant(ObjBase):
    """The daemon's internal object at ``INTERNAL_DAEMON_GUID``."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__()
        self.setGUID(constants.INTERNAL_DAEMON_GUID)
        self._daemon_ref = weakref.ref(daemon)

    def _the_daemon(self) -> Daemon:
        daemon = self._daemon_ref()
        if daemon is None:
            raise DaemonError("the daemon is gone")
        return daemon

    def getRegistered(self) -> dict[str, str | None]:
        """``{guid: name or None}`` of every connected object."""
        return self._the_daemon().getRegistered()

    def getStats(self) -> dict[str, Any]:
        """The daemon's counters (see :meth:`Daemon.getStats`)."""
        return self._the_daemon().getStats()

    def ResolvePYROLOC(self, name: str) -> str:
        """The id of the object connected under ``name``.

        Raises:
            NamingError: no object by that name.
        """
        return self._the_daemon().ResolvePYROLOC(name)


# -- proxies ---------------------------------------------------------------------------------

_PROXY_FIELDS = frozenset({"URI", "objectID", "adapter"})


class _RemoteMethod:
    """A bound remote method: calling it makes the remote call."""

    __slots__ = ("_name", "_proxy")

    def __init__(self, proxy: DynamicProxy, name: str) -> None:
        self._proxy = proxy
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._proxy._invokePYRO(self._name, args, kwargs)

    def __repr__(self) -> str:
        return (
            f"<remote method {self._name!r} of {self._proxy.URI}; for remote attributes use "
            "getAttrProxyForURI / DynamicProxyWithAttrs>"
        )


class DynamicProxy:
    """A proxy for a remote object: ``proxy.method(args)`` makes the remote call.

    The connection is made lazily, on the first call. Threads may share a proxy: their calls
    are serialised on its one connection.

    Args:
        URI: a PyroURI or URI string (``PYRONAME`` URIs are resolved now).

    Raises:
        URIError: the URI is malformed.
    """

    def __init__(self, URI: PyroURI | str) -> None:
        uri = _bindable(URI if isinstance(URI, PyroURI) else PyroURI(URI)).clone()
        object.__setattr__(self, "URI", uri)
        object.__setattr__(self, "objectID", uri.objectID)
        adapter = PYROAdapter()
        adapter.URI = uri
        adapter.max_message_size = pyroact.config.PYRO_MAX_MESSAGE_SIZE
        adapter.oob_threshold = pyroact.config.PYRO_OOB_THRESHOLD
        object.__setattr__(self, "adapter", adapter)
        object.__setattr__(self, "_pyroact_oneway", set())

    URI: PyroURI
    objectID: str
    adapter: PYROAdapter
    _pyroact_oneway: set[str]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} does not forward {name!r}")
        return _RemoteMethod(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in _PROXY_FIELDS:
            object.__setattr__(self, name, value)
            return
        raise AttributeError(
            f"cannot set remote attribute {name!r} through a DynamicProxy; "
            "use getAttrProxyForURI / DynamicProxyWithAttrs"
        )

    def _invokePYRO(self, name: str, args: Any, kwargs: dict[str, Any]) -> Any:
        return self.adapter.invoke(
            self._pyroact_bound_id(), name, args, kwargs, oneway=name in self._pyroact_oneway
        )

    def _pyroact_bound_id(self) -> str:
        # The object id to call; a PYROLOC name is resolved (once) by connecting.
        if self.URI.protocol in ("PYROLOC", "PYROLOCSSL"):
            adapter = self.adapter
            with adapter.lock:
                if self.URI.protocol in ("PYROLOC", "PYROLOCSSL"):
                    adapter.bindToURI(self.URI)
                    object.__setattr__(self, "objectID", self.URI.objectID)
        return self.objectID

    # Pyro 3's proxy methods.

    def _setOneway(self, methods: str | Iterable[str]) -> None:
        """Make calls to these methods oneway (no reply is waited for or sent).

        Args:
            methods: a method name or a list of names; adds to earlier ones.
        """
        names = [methods] if isinstance(methods, str) else list(methods)
        self._pyroact_oneway.update(names)

    def _setTimeout(self, timeout: float | None) -> None:
        """Set the connect and call timeout in seconds (None: none).

        Args:
            timeout: seconds or None.
        """
        self.adapter.setTimeout(timeout)

    def _setIdentification(self, ident: str | bytes | None) -> None:
        """Present this passphrase when connecting.

        Args:
            ident: the passphrase, or None.
        """
        self.adapter.setIdentification(ident)

    def _setNewConnectionValidator(self, validator: Any) -> None:
        """Use a custom client-side validator (it makes the authentication token).

        Args:
            validator: a DefaultConnValidator instance.
        """
        self.adapter.setNewConnectionValidator(validator)

    def _release(self) -> None:
        """Close the connection now; the next call reconnects."""
        self.adapter.release()

    def __enter__(self) -> DynamicProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

    def __bool__(self) -> bool:
        return True

    def _pyroact_identity(self) -> tuple[str, int, str]:
        return (self.URI.address, self.URI.port, self.objectID)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DynamicProxy):
            return self._pyroact_identity() == other._pyroact_identity()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self._pyroact_identity())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} for {self.URI}>"

    def __copy__(self) -> DynamicProxy:
        copied: DynamicProxy = _proxy_from_state(type(self), self.__getstate__())
        # A copy made here keeps the client-side validator; a pickled proxy cannot.
        copied.adapter.validator = self.adapter.validator
        return copied

    def __getstate__(self) -> dict[str, Any]:
        return {
            "URI": self.URI,
            "oneway": sorted(self._pyroact_oneway),
            "timeout": self.adapter.timeout,
            "ident": self.adapter.ident,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_proxy_from_state, (type(self), self.__getstate__()))


def _proxy_from_state(cls: type[DynamicProxy], state: dict[str, Any]) -> Any:
    proxy = cls(state["URI"])
    proxy._setOneway(state["oneway"])
    proxy.adapter.timeout = state["timeout"]
    proxy.adapter.ident = state["ident"]
    return proxy


def _make_dunder(name: str) -> Callable[..., Any]:
    def forward(self: DynamicProxy, *args: Any) -> Any:
        return self._invokePYRO(name, args, {})

    forward.__name__ = name
    forward.__doc__ = f"Forward ``{name}`` to the remote object (if its class defines it)."
    return forward


for _dunder in _FORWARDED_DUNDERS:
    setattr(DynamicProxy, _dunder, _make_dunder(_dunder))


class DynamicProxyWithAttrs(DynamicProxy):
    """A proxy that also reads and writes remote attributes (``proxy.name = 3``).

    Attribute values travel by value: ``proxy.sub.x = 1`` changes a local copy of ``sub``
    (see docs/attributes.md); use methods to change nested state on the server.
    """

    def __init__(self, URI: PyroURI | str) -> None:
        super().__init__(URI)
        object.__setattr__(self, "_pyroact_kinds", {})

    _pyroact_kinds: dict[str, int]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} does not forward {name!r}")
        kind = self._pyroact_kinds.get(name)
        if kind is None:
            kind = self._invokePYRO("_r_ha", (name,), {})
            if kind == 1:
                self._pyroact_kinds[name] = kind
        if kind == 1:
            return _RemoteMethod(self, name)
        return self._invokePYRO("_r_ga", (name,), {})

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in _PROXY_FIELDS:
            object.__setattr__(self, name, value)
            return
        self._invokePYRO("_r_sa", (name, value), {})


def getProxyForURI(URI: PyroURI | str) -> DynamicProxy:
    """A proxy for the object at ``URI``.

    Args:
        URI: a PyroURI or URI string.

    Returns:
        The proxy (not yet connected).
    """
    return DynamicProxy(URI)


def getAttrProxyForURI(URI: PyroURI | str) -> DynamicProxyWithAttrs:
    """An attribute-capable proxy for the object at ``URI``.

    Args:
        URI: a PyroURI or URI string.

    Returns:
        The proxy (not yet connected).
    """
    return DynamicProxyWithAttrs(URI)


_init_lock = threading.Lock()
_initialized = {"client": False, "server": False}


def initClient(banner: int = 0) -> None:
    """Initialise the client side (idempotent; proxies do it implicitly).

    Args:
        banner: print a one-line banner.
    """
    with _init_lock:
        if _initialized["client"]:
            return
        _initialized["client"] = True
    cfg = pyroact.config
    util.configure_logging(
        cfg.PYRO_TRACELEVEL, cfg.PYRO_LOGFILE, cfg.PYRO_USER_TRACELEVEL, cfg.PYRO_USER_LOGFILE
    )
    if banner:
        print(f"pyroact {constants.VERSION} client initialized")


def initServer(banner: int = 0, storageCheck: int = 1) -> None:
    """Initialise the server side (idempotent); creates and checks ``PYRO_STORAGE``.

    Args:
        banner: print a one-line banner.
        storageCheck: check that ``PYRO_STORAGE`` is writable.

    Raises:
        OSError: ``PYRO_STORAGE`` cannot be created or written.
    """
    initClient()
    with _init_lock:
        if _initialized["server"]:
            return
        _initialized["server"] = True
    storage = pyroact.config.PYRO_STORAGE
    if storageCheck:
        os.makedirs(storage, exist_ok=True)
        if not os.access(storage, os.W_OK):
            raise OSError(f"PYRO_STORAGE {storage!r} is not writable")
    if banner:
        print(f"pyroact {constants.VERSION} server initialized")


# -- the daemon ------------------------------------------------------------------------------


class CallOutcome:
    """What one call produced: a result, or an exception and its formatted traceback."""

    __slots__ = ("error", "lines", "result")

    def __init__(self, result: Any, error: BaseException | None, lines: list[str]) -> None:
        self.result = result
        self.error = error
        self.lines = lines

    def encode(self, oob_threshold: int) -> tuple[int, Any, list[Any], int]:
        """The reply frame's ``(msg_type, payload, buffers, flags)``.

        A result that cannot be pickled becomes a SerializeError reply.
        """
        if self.error is None:
            try:
                payload, buffers, flags = serializer.dumps(self.result, oob_threshold=oob_threshold)
                return spec.MSG_REPLY, payload, list(buffers), flags
            except SerializeError as exc:
                return spec.MSG_EXCEPTION, serializer.dumps_exception(exc, [f"{exc}\n"]), [], 0
        try:
            return spec.MSG_EXCEPTION, serializer.dumps_exception(self.error, self.lines), [], 0
        except Exception as exc:
            # Pyro 3's fallback: an exception that cannot travel becomes a PyroError with its text.
            fallback = PyroError(f"{type(self.error).__name__}: {self.error} ({exc})")
            return spec.MSG_EXCEPTION, serializer.dumps_exception(fallback, self.lines), [], 0


def execute_call(entry: _Entry, frame: Frame, tls: Any, config: Any) -> CallOutcome:
    """Unpickle a call frame's arguments, run the method on the entry's object, capture all.

    The same code runs calls in the single and threaded modes and in process-mode workers.

    Args:
        entry: the connected object.
        frame: the REQUEST or ONEWAY frame (its ``method`` is the bare method name).
        tls: the thread-local storage the call sees through ``getLocalStorage()``.
        config: the configuration (size limit, detailed tracebacks).

    Returns:
        The outcome; exceptions are captured in it, never raised.
    """
    current_call.tls, current_call.connection = tls, getattr(tls, "caller", None)
    method = frame.method
    try:
        args, kwargs = _call_arguments(frame, config)
        obj = entry.obj
        target = obj if method in _OWN_CALLS else obj._pyroact_target()
        outcome = CallOutcome(getattr(target, method)(*args, **kwargs), None, [])
    except BaseException as exc:
        # SystemExit and friends from a remote method go back to the caller too, rather than
        # killing the thread that serves the connection.
        entry.mailbox.errors += 1
        lines = util.formatTraceback(
            type(exc), exc, exc.__traceback__, detailed=bool(config.PYRO_DETAILED_TRACEBACK)
        )
        outcome = CallOutcome(None, exc, lines)
        if frame.msg_type == spec.MSG_ONEWAY:
            user_log.warning(
                "oneway call %s.%s raised: %s", type(entry.obj).__name__, method, "".join(lines)
            )
    finally:
        current_call.tls = current_call.connection = None
        entry.obj.lastUsed = time.time()
    return outcome


def _call_arguments(frame: Frame, config: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    payload = frame.payload
    if frame.flags & spec.FLAG_COMPRESSED:
        payload = serializer.decompress(payload, max_size=config.PYRO_MAX_MESSAGE_SIZE)
    try:
        return serializer.loads_call(payload, frame.buffers)
    except NoModuleError as exc:
        # Mobile code: this reply asks the client for the module; it supplies it and sends
        # the call again. A oneway call has no reply to ask with, so it just fails.
        if config.PYRO_MOBILE_CODE and frame.msg_type == spec.MSG_REQUEST and exc.name:
            raise _InternalNoModuleError(exc.name) from None
        raise


class _Entry:
    """A connected object: the object, its name, its mailbox."""

    __slots__ = ("mailbox", "name", "obj", "persistent")

    def __init__(self, obj: ObjBase, name: str | None, mailbox: Mailbox, persistent: bool):
        self.obj = obj
        self.name = name
        self.mailbox = mailbox
        self.persistent = persistent


def objects_stats(objects: dict[str, _Entry]) -> dict[str, dict[str, Any]]:
    """Per-object counters (type, name, calls, errors, queue depth, lingered) of a registry.

    ``lingered`` counts the calls that waited for a call of the object busy on the CPU (a
    process-mode worker's ``ObjBase``; see :class:`pyroact._mailbox.Mailbox`).

    Args:
        objects: the registry (``guid -> entry``); the caller holds its lock.

    Returns:
        ``{guid: counters}``.
    """
    return {
        guid: {
            "type": type(e.obj).__name__,
            "name": e.name,
            "calls": e.mailbox.calls,
            "errors": e.mailbox.errors,
            "queue_depth": e.mailbox.depth,
            "lingered": e.mailbox.lingered,
        }
        for guid, e in objects.items()
    }


def reap_transients(objects: dict[str, _Entry], lock: Any, age: float) -> list[_Entry]:
    """Disconnect the idle transients of ``objects`` and call their ``_gotReaped``.

    Named, persistent and busy objects are never reaped. The same rule serves the daemon and
    process-mode workers.

    Args:
        objects: the registry (``guid -> entry``), changed in place under ``lock``.
        lock: guards ``objects``.
        age: seconds without a call after which a transient goes.

    Returns:
        The entries that were reaped.
    """
    cutoff = time.time() - age
    with lock:
        victims = [
            e
            for e in objects.values()
            if e.name is None
            and not e.persistent
            and e.mailbox.inflight == 0
            and e.obj.lastUsed < cutoff
        ]
        for entry in victims:
            del objects[entry.obj.GUID()]
    for entry in victims:
        entry.obj.setPyroDaemon(None)
        try:
            entry.obj._gotReaped()
        except Exception:
            log.exception("error in _gotReaped of %r", entry.obj)
    return victims


class Daemon(TCPServer, ObjBase):
    """Serves ObjBase objects on one TCP port.

    Args:
        prtcol: ``"PYRO"``, or ``"PYROSSL"`` for TLS (certificates from the ``PYROSSL_*``
            configuration items; a missing or bad file is a DaemonError naming it).
        host: the address to bind (default ``PYRO_HOST``, 127.0.0.1).
        port: the port; 0 picks any free port. With ``norange=0`` a busy port makes the daemon
            try the next ``PYRO_PORT_RANGE`` ports.
        norange: use exactly ``port``.
        publishhost: the host name put in URIs (``PYRO_PUBLISHHOST``), for NAT.
        mode: ``"single"``, ``"threaded"`` or ``"process"`` (default from
            ``PYRO_SERVERTYPE`` / ``PYRO_MULTITHREADED``).
        workers: process mode: how many worker processes (default ``PYRO_WORKERS``, 0 = one
            per CPU).

    Raises:
        DaemonError: the daemon cannot start.
    """

    def __init__(
        self,
        prtcol: str = "PYRO",
        host: str | None = None,
        port: int = 0,
        norange: int = 0,
        publishhost: str | None = None,
        *,
        mode: str | None = None,
        workers: int | None = None,
    ) -> None:
        initServer()
        cfg = pyroact.config
        ObjBase.__init__(self)
        prtcol = prtcol.upper()
        if prtcol not in ("PYRO", "PYROSSL"):
            raise DaemonError(f"unsupported protocol {prtcol!r}: a daemon serves PYRO or PYROSSL")
        host = host or cfg.PYRO_HOST
        mode = mode or cfg.effective_servertype()
        ports = [port] if norange or port == 0 else range(port, port + cfg.PYRO_PORT_RANGE)
        error: DaemonError | None = None
        for candidate in ports:
            try:
                TCPServer.__init__(
                    self, host, candidate, mode=mode, config=cfg, tls=prtcol == "PYROSSL"
                )
                break
            except DaemonError as exc:
                error = exc
        else:
            assert error is not None
            raise error
        self.protocol = prtcol
        self.hostname = publishhost or cfg.PYRO_PUBLISHHOST or host
        self.implementations: dict[str, _Entry] = {}
        self.NameServer: Any = None
        self._reap_age: float | None = None
        self._next_reap = 0.0
        self._servant = DaemonServant(self)
        self._register(self._servant, "__PYRO_Internal_Daemon", persistent=True)
        self._router: ProcessRouter | None = None
        self._draining: ProcessRouter | None = None  # the router while closedown drains it
        if self.mode == "process":
            router = ProcessRouter(
                self, workers or cfg.effective_workers(), internal_fields=CONNECTION_FIELDS
            )
            self._router = router
            try:
                router.start()
            except BaseException:
                self.closedown()
                raise

    def __getstate__(self) -> Any:
        raise pickle.PicklingError("no access to the daemon")

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.closedown()

    def __repr__(self) -> str:
        return f"<Daemon {self.mode} {self.hostname}:{self.port}>"

    def uri_for(self, guid: str) -> PyroURI:
        """The PYRO (or PYROSSL) URI of the object with id ``guid`` on this daemon."""
        return _uri_from_parts(self.protocol, _resolve_host(self.hostname), self.port, guid)

    # -- registry ------------------------------------------------------------------------------

    def _register(self, obj: ObjBase, name: str | None, *, persistent: bool) -> PyroURI:
        if not isinstance(obj, ObjBase):
            raise TypeError(f"a Pyro object must inherit from ObjBase, not {type(obj).__name__}")
        if not hasattr(obj, "objectGUID"):
            raise DaemonError(f"{type(obj).__name__} did not call ObjBase.__init__(self)")
        guid = obj.GUID()
        with self._lock:
            if guid in self.implementations:
                raise DaemonError(f"an object with id {guid} is already connected")
            mailbox = Mailbox(
                self.server.submit,
                serial=isinstance(obj, SynchronizedObjBase),
                maxsize=self.config.PYRO_MAILBOX_SIZE,
                name=f"{type(obj).__name__} {guid}",
            )
            self.implementations[guid] = _Entry(obj, name, mailbox, persistent)
        obj.setPyroDaemon(self)
        obj.lastUsed = time.time()
        return self.uri_for(guid)

    def connect(
        self,
        obj: Any,
        name: str | None = None,
        *,
        placement: str = PINNED,
        strategy: str = "round-robin",
    ) -> PyroURI:
        """Serve ``obj``; with a name it is registered in the name server (if one is set).

        ``obj`` may also be an ObjBase class or a factory: the instance is then created where
        it will live (inside a worker in the process mode), which is how objects holding
        unpicklable resources are served there. In the process mode ``placement="replicated"``
        puts one instance on every worker (each call goes to the least-loaded one); a pinned
        object lives on one worker, chosen by ``strategy``. The other modes have one instance.

        Args:
            obj: an ObjBase instance, or a class/factory returning one.
            name: its name (for the name server and PYROLOC), or None for a transient object.
            placement: ``"pinned"`` or ``"replicated"``.
            strategy: ``"round-robin"`` or ``"least-loaded"`` (pinned objects, process mode).

        Returns:
            The object's PYRO URI.

        Raises:
            TypeError: ``obj`` is neither an ObjBase nor a factory of one.
            ValueError: unknown placement or strategy.
            DaemonError: an object with the same id is connected, or the instance cannot be
                sent to a worker process (the message says to connect a factory instead).
            NamingError: the name server refused the name.
        """
        guid = self._guid_for(obj)
        if name and self.NameServer is not None:
            self.NameServer.register(name, self.uri_for(guid))
        elif name:
            log.debug("connecting %r without a name server: only PYROLOC can find it", name)
        return self._place(obj, guid, name, placement, strategy, persistent=False)

    def connectPersistent(
        self,
        obj: Any,
        name: str | None = None,
        *,
        placement: str = PINNED,
        strategy: str = "round-robin",
    ) -> PyroURI:
        """Serve ``obj`` under a URI that survives restarts (the name server keeps it).

        If the name server knows ``name`` at this daemon's address, that id is reused.

        Args:
            obj: an ObjBase instance, or a class/factory (see :meth:`connect`).
            name: its name.
            placement: as for :meth:`connect`.
            strategy: as for :meth:`connect`.

        Returns:
            The object's PYRO URI.

        Raises:
            TypeError: ``obj`` is neither an ObjBase nor a factory of one.
            NamingError: the name server refused the name.
        """
        guid = self._guid_for(obj)
        ns = self.NameServer
        if name and ns is not None:
            try:
                known: PyroURI | None = PyroURI(ns.resolve(name))
            except NamingError:
                known = None
            if known is not None and (known.address, known.port) == (
                _resolve_host(self.hostname),
                self.port,
            ):
                guid = known.objectID
            else:
                if known is not None:
                    ns.unregister(name)
                ns.register(name, self.uri_for(guid))
        return self._place(obj, guid, name, placement, strategy, persistent=True)

    @staticmethod
    def _guid_for(obj: Any) -> str:
        if isinstance(obj, ObjBase):
            if not hasattr(obj, "objectGUID"):
                raise DaemonError(f"{type(obj).__name__} did not call ObjBase.__init__(self)")
            return obj.GUID()
        if not callable(obj):
            raise TypeError(
                f"a Pyro object must inherit from ObjBase (or be a factory of one), "
                f"not {type(obj).__name__}"
            )
        return util.getGUID()

    def _place(
        self,
        obj: Any,
        guid: str,
        name: str | None,
        placement: str,
        strategy: str,
        *,
        persistent: bool,
    ) -> PyroURI:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        if self._router is not None:
            self._router.connect(
                obj, guid, name, placement=placement, strategy=strategy, persistent=persistent
            )
            if isinstance(obj, ObjBase):
                obj.setGUID(guid)
                obj.setPyroDaemon(self)
            return self.uri_for(guid)
        if not isinstance(obj, ObjBase):
            obj = obj()
            if not isinstance(obj, ObjBase):
                raise TypeError(f"the factory made a {type(obj).__name__}, not an ObjBase")
        obj.setGUID(guid)
        return self._register(obj, name, persistent=persistent)

    def disconnect(self, obj_or_id: ObjBase | str) -> None:
        """Stop serving an object (given as the object or its id).

        Args:
            obj_or_id: the object or its GUID.

        Raises:
            KeyError: no such object is connected.
        """
        guid = obj_or_id.GUID() if isinstance(obj_or_id, ObjBase) else str(obj_or_id)
        if guid == constants.INTERNAL_DAEMON_GUID:
            return
        route = self._router.routes.get(guid) if self._router is not None else None
        if route is not None and self._router is not None:
            self._router.disconnect(guid)
            if route.name and self.NameServer is not None:
                with contextlib.suppress(PyroError):
                    self.NameServer.unregister(route.name)
            if isinstance(obj_or_id, ObjBase):
                obj_or_id.setPyroDaemon(None)
            return
        with self._lock:
            entry = self.implementations.pop(guid)
        if entry.name and self.NameServer is not None:
            with contextlib.suppress(PyroError):
                self.NameServer.unregister(entry.name)
        entry.obj.setPyroDaemon(None)

    def getRegistered(self) -> dict[str, str | None]:
        """``{guid: name or None}`` for every connected object, the internal one included."""
        with self._lock:
            registered = {guid: entry.name for guid, entry in self.implementations.items()}
        if self._router is not None:
            registered.update({g: r.name for g, r in list(self._router.routes.items())})
        return registered

    def getLocalObject(self, guid: str) -> ObjBase:
        """The connected object with id ``guid``.

        Raises:
            KeyError: no such object.
        """
        return self.implementations[guid].obj

    def getLocalObjectForProxy(self, proxy: DynamicProxy) -> ObjBase:
        """The local object a proxy of this daemon points to.

        Raises:
            KeyError: no such object.
        """
        return self.getLocalObject(proxy.objectID)

    def getProxyForObj(self, obj: ObjBase) -> DynamicProxy:
        """A proxy for a connected local object."""
        return DynamicProxy(self.uri_for(obj.GUID()))

    def getAttrProxyForObj(self, obj: ObjBase) -> DynamicProxyWithAttrs:
        """An attribute-capable proxy for a connected local object."""
        return DynamicProxyWithAttrs(self.uri_for(obj.GUID()))

    def ResolvePYROLOC(self, name: str) -> str:
        """The id of the object connected with exactly this name.

        Args:
            name: the name passed to connect.

        Returns:
            Its GUID.

        Raises:
            NamingError: no object by that name.
        """
        for guid, found in self.getRegistered().items():
            if found == name:
                return guid
        raise NamingError("no object found by this name", name)

    def useNameServer(self, ns: Any) -> None:
        """Register named objects in this name server (a proxy)."""
        self.NameServer = ns

    def getNameServer(self) -> Any:
        """The name server in use, or None."""
        return self.NameServer

    def shutdown(self, disconnect: bool = False) -> None:
        """Stop the request loop after its current round.

        Args:
            disconnect: also unregister the named, non-persistent objects from the name server.
        """
        if disconnect and self.NameServer is not None:
            with self._lock:
                named = [
                    e.name for e in self.implementations.values() if e.name and not e.persistent
                ]
            for name in named:
                with contextlib.suppress(PyroError):
                    self.NameServer.unregister(name)
        TCPServer.shutdown(self, disconnect)

    # -- transient reaping ---------------------------------------------------------------------

    def setTransientsCleanupAge(self, secs: float | None) -> None:
        """Disconnect transient (unnamed) objects idle for longer than ``secs``.

        Args:
            secs: the idle age in seconds; None or 0 turns reaping off.
        """
        self._reap_age = secs or None
        self._next_reap = time.monotonic()
        if self._router is not None:
            self._router.broadcast("reap_age", self._reap_age)

    def setInitTLS(self, func: Callable[[LocalStorage], None] | None) -> None:
        """Set the function that initialises each new thread-local storage, once per storage.

        In the process mode it must be picklable (a module-level function): every worker
        gets it.

        Args:
            func: called as ``func(tls)``.
        """
        TCPServer.setInitTLS(self, func)
        if self._router is not None:
            self._router.broadcast("init_tls", func)

    def drop_connection(self, conn: TCPConnection) -> None:
        """Forget and close a connection (and tell the workers it served)."""
        if self._router is not None and conn.forwarded_to:
            self._router.connection_closed(conn)
            conn.forwarded_to = set()
        TCPServer.drop_connection(self, conn)

    def closedown(self) -> None:
        """Stop the workers (after in-flight calls, up to 5 s), close connections and socket."""
        router, self._router = getattr(self, "_router", None), None
        if router is not None:
            # No new calls are routed; the connections of those that drain still settle.
            self._draining = router
            try:
                router.shutdown(time.monotonic() + 5.0)
            finally:
                self._draining = None
        TCPServer.closedown(self)

    def getStats(self) -> dict[str, Any]:
        """Counters: calls, errors and queue depth per object; per worker in process mode."""
        with self._lock:
            local = objects_stats(self.implementations)
        stats: dict[str, Any] = {"mode": self.mode, "objects": local}
        if self._router is not None:
            stats.update(self._router.stats())
        return stats

    def reapUnusedTransients(self) -> None:
        """Disconnect idle transients now and call their ``_gotReaped``."""
        age = self._reap_age
        if age is None:
            return
        reap_transients(self.implementations, self._lock, age)

    def expire_connections(self, now: float) -> None:
        """Also settles answered silent worker calls and runs the transient reaper."""
        router = self._settling_router
        if router is not None:
            router.settle_answered()
        TCPServer.expire_connections(self, now)
        if self._reap_age is not None and now >= self._next_reap:
            self._next_reap = now + max(self._reap_age / 5, 0.05)
            self.reapUnusedTransients()

    # -- calls ---------------------------------------------------------------------------------

    def callbackError(self, exc: BaseException) -> None:
        """Report an exception raised in a ``CallbackObjBase`` call (threaded mode).

        The single-threaded mode re-raises it from ``handleRequests`` instead. Override to
        handle it differently; the default logs it.

        Args:
            exc: the exception (already sent back to the caller).
        """
        user_log.warning("exception in callback: %r", exc)

    def idle_since(self, conn: TCPConnection) -> float | None:
        """As in TCPServer; a connection a worker reads counts from that worker's last call."""
        router = self._router
        if router is not None and getattr(conn, "read_record", None) is not None:
            return router.read_idle_since(conn)
        return TCPServer.idle_since(self, conn)

    def settle(self, conn: TCPConnection) -> bool:
        """Let a connection's next frame go on once its silent worker call is answered."""
        router = self._settling_router
        if router is None:
            return TCPServer.settle(self, conn)
        return router.settle(conn)

    @property
    def _settling_router(self) -> ProcessRouter | None:
        # The router whose silent calls still settle: also while closedown drains it.
        # (getattr: the I/O thread may look before __init__ has made them.)
        router: ProcessRouter | None = getattr(self, "_router", None)
        return router or getattr(self, "_draining", None)

    def frames_done(self) -> None:
        """After a batch of a connection's frames: send the frames held for workers."""
        if self._router is not None:
            self._router.flush_held()

    def dispatch_frame(self, conn: TCPConnection, frame: Frame) -> None:
        """Route one call frame to its object's mailbox (nothing is unpickled here)."""
        if self._router is not None:
            route = self._router.routes.get(frame.object_id)
            if route is not None:
                self._router.forward(conn, frame, route)
                return
        entry = self.implementations.get(frame.object_id)
        oneway = frame.msg_type == spec.MSG_ONEWAY
        if entry is None:
            error = ProtocolError(f"unknown object ID {frame.object_id!r}")
            if oneway:
                self.drop_connection(conn)
            else:
                self.refuse(conn, frame.seq, error, close=True)
            return
        refusal = _refusal(entry.obj, frame.method)
        if refusal is not None:
            if not oneway:
                self.refuse(conn, frame.seq, AttributeError(refusal), close=False)
            return
        background = oneway and self.threaded and self.config.PYRO_ONEWAY_THREADED
        if not background:
            self.pause(conn)
        try:
            entry.mailbox.post(functools.partial(self._run_call, conn, frame, entry, background))
        except BusyError as exc:
            if not background:
                self.resume(conn)
            if not oneway:
                self.refuse(conn, frame.seq, exc, close=False)

    def _run_call(self, conn: TCPConnection, frame: Frame, entry: _Entry, background: bool) -> None:
        tls = conn.tls or self.shared_tls
        tls.caller = conn
        try:
            outcome = execute_call(entry, frame, tls, self.config)
            if frame.msg_type == spec.MSG_REQUEST:
                msg_type, payload, buffers, flags = outcome.encode(self.config.PYRO_OOB_THRESHOLD)
                self.reply(conn, msg_type, frame.seq, payload, buffers, flags)
        finally:
            if not background:
                self.resume(conn)
        error = outcome.error
        # A mobile-code request for a module is no failure of the callback: the call follows.
        if (
            error is not None
            and isinstance(entry.obj, CallbackObjBase)
            and not isinstance(error, _InternalNoModuleError)
        ):
            if self.threaded:
                self.callbackError(error)
            else:
                self.callback_errors.append(error)
