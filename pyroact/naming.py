"""Finding and using the name server: locator, name server proxy, PYRONAME (layer 8).

Pyro 3's client side of naming (``Pyro.naming`` → ``pyroact.naming``):

* :class:`NameServerLocator` finds a name server, directly (host given, or ``PYRO_NS_HOSTNAME``)
  or by UDP discovery (``location`` datagrams to ``PYRO_NS_BC_ADDR``/``PYRO_NS_BC_PORT``,
  ``PYRO_BC_RETRIES`` retries of ``PYRO_BC_TIMEOUT`` seconds). Unlike Pyro 3 it never changes
  the global configuration (D-8): what it found is remembered by the locator instance.
* :class:`NameServerProxy` is the proxy for the name server object. It expands relative names
  with ``PYRO_NS_DEFAULTGROUP`` before they travel, lists the default group for
  ``list(None)`` (Pyro 3's proxy behaviour), and reconnects once when the connection to the
  name server failed before or while a call was made.
* Importing this module installs the resolver for ``PYRONAME://[host[:port]/]name`` URIs in
  :data:`pyroact.core.pyroname_resolver`.
* ``NameServer``, ``PersistentNameServer``, ``NameServerStarter``, ``BroadcastServer`` and
  ``BCReqValidator`` are importable from here as in Pyro 3; they live in
  :mod:`pyroact.nameserver` (layer 9) and are loaded on first access (PEP 562).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import importlib
import logging
import secrets
import select
import socket
import time
from typing import TYPE_CHECKING, Any, Final

import pyroact

from . import constants, core
from .core import DynamicProxy, PyroURI
from .errors import (
    ConnectionClosedError,
    ConnectionDeniedError,
    NamingError,
    ProtocolError,
    PyroError,
    TimeoutError,
)

if TYPE_CHECKING:  # the real imports are lazy (PEP 562, see __getattr__)
    from .nameserver.broadcast import BCReqValidator, BroadcastServer
    from .nameserver.server import NameServer, NameServerStarter, PersistentNameServer

__all__ = [
    "BCReqValidator",
    "BroadcastServer",
    "NameServer",
    "NameServerLocator",
    "NameServerProxy",
    "NameServerStarter",
    "PersistentNameServer",
    "resolvePYRONAME",
    "shutdown_request",
]

log = logging.getLogger("pyroact.system")

_ROOT: Final = ":"
_SEPARATOR: Final = "."
_MAX_REPLY: Final = 1024
_LAZY: Final = {
    "NameServer": "pyroact.nameserver.server",
    "PersistentNameServer": "pyroact.nameserver.server",
    "NameServerStarter": "pyroact.nameserver.server",
    "BroadcastServer": "pyroact.nameserver.broadcast",
    "BCReqValidator": "pyroact.nameserver.broadcast",
}


def __getattr__(name: str) -> Any:
    # Pyro 3 had the server classes in Pyro.naming; here they load on first use (PEP 562).
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pyroact.naming' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


# -- UDP shutdown authentication (W-17) ----------------------------------------------------------


def shutdown_key(identification: str | bytes) -> bytes:
    """The key that authenticates UDP ``shutdown`` requests, derived from an identification.

    Args:
        identification: the passphrase given to the name server.

    Returns:
        32 key bytes.

    Raises:
        Nothing.
    """
    ident = identification.encode() if isinstance(identification, str) else bytes(identification)
    return hashlib.sha256(b"pyroact-ns-shutdown\0" + ident).digest()


def shutdown_mac(key: bytes, stamp: bytes, nonce: bytes) -> str:
    """The HMAC-SHA256 (hex) of one shutdown request.

    Args:
        key: from :func:`shutdown_key`.
        stamp: the request time as ASCII digits.
        nonce: the request's random nonce (ASCII hex).

    Returns:
        64 hex characters.

    Raises:
        Nothing.
    """
    message = constants.NS_SYSCMD_SHUTDOWN + b" " + stamp + b" " + nonce
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def shutdown_request(identification: str | bytes) -> bytes:
    """An authenticated UDP ``shutdown`` datagram (``shutdown <time> <nonce> <mac>``).

    Args:
        identification: the name server's passphrase.

    Returns:
        The datagram.

    Raises:
        Nothing.
    """
    stamp = f"{time.time():.3f}".encode("ascii")
    nonce = secrets.token_hex(16).encode("ascii")
    mac = shutdown_mac(shutdown_key(identification), stamp, nonce).encode("ascii")
    return b" ".join([constants.NS_SYSCMD_SHUTDOWN, stamp, nonce, mac])


# -- the proxy -----------------------------------------------------------------------------------


def _expand(name: str | None, default_group: str) -> str:
    if not default_group.startswith(_ROOT):
        raise NamingError("default group name is not absolute", default_group)
    if name is None or name == "":
        return default_group
    if not isinstance(name, str):
        raise NamingError("invalid name", repr(name))
    if name.startswith(_ROOT):
        return name
    return default_group + _SEPARATOR + name


def _rebindable(exc: BaseException) -> bool:
    # The call did not run (connect failed, stale object id after a restart) or the connection
    # broke; a timeout is not retried (the call may still be running).
    if isinstance(exc, TimeoutError | ConnectionDeniedError):
        return False
    if isinstance(exc, ConnectionClosedError):
        return True
    text = str(exc)
    return isinstance(exc, ProtocolError) and (
        text.startswith("connection failed") or "unknown object ID" in text
    )


class NameServerProxy:
    """The proxy for a name server (Pyro 3's ``Pyro.naming.NameServerProxy``).

    Relative names are expanded with ``PYRO_NS_DEFAULTGROUP`` (read at call time) before they
    are sent. When the connection fails, the proxy reconnects once to the same host and port
    (through ``PYROLOC``, so a restarted name server is found even if its object id changed) and
    repeats the call; a timeout is never repeated.

    Args:
        URI: the name server's URI (PYRO or PYROLOC), or its string.
        noconnect: do not connect now (by default the proxy pings the name server).
        identification: the passphrase to present, if the name server requires one.

    Raises:
        URIError: the URI is malformed.
        ProtocolError: the name server cannot be reached (unless ``noconnect``).
        ConnectionDeniedError: the name server refused the connection.
    """

    def __init__(
        self,
        URI: PyroURI | str,
        noconnect: int = 0,
        identification: str | bytes | None = None,
    ) -> None:
        uri = URI.clone() if isinstance(URI, PyroURI) else PyroURI(URI)
        self._location = (uri.address, uri.port)
        self._timeout: float | None = pyroact.config.PYRO_NS_TIMEOUT
        self._ident: bytes | None = None
        self._proxy = self._make_proxy(uri)
        if identification:
            self._setIdentification(identification)
        if not noconnect:
            self.ping()

    def _make_proxy(self, uri: PyroURI) -> DynamicProxy:
        proxy = DynamicProxy(uri)
        proxy.adapter.setTimeout(self._timeout)
        proxy.adapter.ident = self._ident
        return proxy

    @property
    def URI(self) -> PyroURI:
        """The name server's URI (a PYRO URI once a PYROLOC one was resolved).

        Raises:
            Nothing.
        """
        return self._proxy.URI

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return self._proxy._invokePYRO(method, args, {})
        except PyroError as exc:
            if not _rebindable(exc):
                raise
            log.info("name server connection failed (%s); reconnecting once", exc)
        self._rebind()
        return self._proxy._invokePYRO(method, args, {})

    def _rebind(self) -> None:
        self._proxy._release()
        host, port = self._location
        self._proxy = self._make_proxy(PyroURI(host, constants.NAMESERVER_NAME, port, "PYROLOC"))

    # -- Pyro 3's name server methods ----------------------------------------------------------

    def fullName(self, name: str | None) -> str:
        """Expand a relative name with ``PYRO_NS_DEFAULTGROUP`` (no remote call).

        Args:
            name: absolute or relative; None/``""`` = the default group.

        Returns:
            The absolute name.

        Raises:
            NamingError: ``'default group name is not absolute'``.
        """
        return _expand(name, pyroact.config.PYRO_NS_DEFAULTGROUP)

    def ping(self) -> None:
        """Check that the name server answers.

        Raises:
            ProtocolError: it cannot be reached.
        """
        self._call("ping")

    def register(self, name: str, URI: PyroURI | str) -> None:
        """Register ``URI`` under ``name``.

        Raises:
            NamingError: ``'name already exists'``, ``'(parent)group not found'``,
                ``'parent is no group'``, ``'invalid URI'`` or an invalid name.
        """
        self._call("register", self.fullName(name), URI)

    def resolve(self, name: str) -> PyroURI:
        """The URI registered under ``name``.

        Raises:
            NamingError: ``'name not found'``, ``'group not found'``,
                ``'attempt to resolve groupname'`` or an invalid name.
        """
        result: PyroURI = self._call("resolve", self.fullName(name))
        return result

    def unregister(self, name: str) -> None:
        """Remove the registration of ``name``.

        Raises:
            NamingError: ``'name not found'``, ``'is a group, not an object'``.
        """
        self._call("unregister", self.fullName(name))

    def list(self, group: str | None) -> list[tuple[str, int]]:
        """The members of ``group`` as ``(name, 0 = group / 1 = object)``.

        Args:
            group: a group; None lists the default group (Pyro 3's proxy behaviour) and
                ``":"`` the root.

        Raises:
            NamingError: ``'group not found'``, ``'is no group'``.
        """
        result: list[tuple[str, int]] = self._call("list", self.fullName(group))
        return result

    def flatlist(self) -> builtins.list[tuple[str, PyroURI]]:
        """Every registered object as ``(absolute name, URI)``.

        Raises:
            ProtocolError: the name server cannot be reached.
        """
        result: builtins.list[tuple[str, PyroURI]] = self._call("flatlist")
        return result

    def createGroup(self, name: str) -> None:
        """Create a group.

        Raises:
            NamingError: ``'group already exists'``, ``'invalid groupname'``,
                ``'parent is no group'``, ``'(parent)group not found'``.
        """
        self._call("createGroup", self.fullName(name))

    def deleteGroup(self, name: str) -> None:
        """Delete a group and everything in it.

        Raises:
            NamingError: ``'not allowed to delete root group'``, ``'group not found'``,
                ``'is no group'``.
        """
        self._call("deleteGroup", self.fullName(name))

    def setMeta(self, name: str, meta: Any) -> None:
        """Set the user metadata (a JSON-serialisable value) of a group or name.

        Raises:
            NamingError: ``'name not found'``, ``'metadata must be JSON-serialisable'``.
        """
        self._call("setMeta", self.fullName(name), meta)

    def getMeta(self, name: str) -> Any:
        """The user metadata of a group or name (None when none was set).

        Raises:
            NamingError: ``'name not found'``.
        """
        return self._call("getMeta", self.fullName(name))

    def getSystemMeta(self, name: str) -> dict[str, Any]:
        """The system metadata (``type`` 0/1, ``timestamp``, ``owner``) of a group or name.

        Raises:
            NamingError: ``'name not found'``.
        """
        result: dict[str, Any] = self._call("getSystemMeta", self.fullName(name))
        return result

    def resync(self) -> None:
        """Re-copy the twin's database (paired mode, which pyroact does not implement).

        Raises:
            NamingError: always, for a single name server.
        """
        self._call("resync")

    # -- proxy management ----------------------------------------------------------------------

    def _setIdentification(self, ident: str | bytes | None) -> None:
        """Present this passphrase to the name server.

        Raises:
            Nothing.
        """
        self._proxy._setIdentification(ident)
        self._ident = self._proxy.adapter.ident

    def _setTimeout(self, timeout: float | None) -> None:
        """Set the call timeout in seconds (default ``PYRO_NS_TIMEOUT``).

        Raises:
            Nothing.
        """
        self._timeout = timeout
        self._proxy._setTimeout(timeout)

    def _release(self) -> None:
        """Close the connection; the next call reconnects.

        Raises:
            Nothing.
        """
        self._proxy._release()

    def __enter__(self) -> NameServerProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

    def __repr__(self) -> str:
        return f"<NameServerProxy for {self.URI}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NameServerProxy):
            return self._proxy == other._proxy
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._proxy)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "URI": str(self.URI),
            "location": self._location,
            "timeout": self._timeout,
            "ident": self._ident,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._location = (str(state["location"][0]), int(state["location"][1]))
        self._timeout = state["timeout"]
        self._ident = state["ident"]
        self._proxy = self._make_proxy(PyroURI(state["URI"]))

    def __copy__(self) -> NameServerProxy:
        copied = NameServerProxy.__new__(NameServerProxy)
        copied.__setstate__(self.__getstate__())
        return copied

    def __deepcopy__(self, memo: dict[int, Any]) -> NameServerProxy:
        raise PyroError("cannot deepcopy a proxy")


# -- the locator ---------------------------------------------------------------------------------


class NameServerLocator:
    """Finds a name server (Pyro 3's ``Pyro.naming.NameServerLocator``).

    Args:
        identification: the passphrase the proxies it returns present.
    """

    def __init__(self, identification: str | bytes | None = None) -> None:
        self.identification = identification
        # D-8: what a fallback found is remembered here, never written into the config.
        self.found: tuple[str, int] | None = None

    def getNS(
        self,
        host: str | None = None,
        port: int | None = None,
        trace: int = 0,
        bcaddr: str | None = None,
    ) -> NameServerProxy:
        """A proxy for the name server.

        With a host (or ``PYRO_NS_HOSTNAME``) the name server is contacted directly at
        ``PYROLOC://host:port/:Pyro.NameServer`` (``port`` defaults to ``PYRO_NS_PORT``).
        Otherwise a ``location`` datagram goes to ``bcaddr`` (or ``PYRO_NS_BC_ADDR``, or the
        broadcast address) at ``port`` (or ``PYRO_NS_BC_PORT``); without an explicit port the
        locator finally tries ``socket.gethostname()`` and ``localhost`` directly.

        Args:
            host: the name server's host.
            port: the name server's port with a host, the broadcast port without.
            trace: print what is tried.
            bcaddr: the address the discovery datagram goes to.

        Returns:
            A connected :class:`NameServerProxy`.

        Raises:
            NamingError: ``'could not find NameServer'`` (or ``... on host <h>``).
            ConnectionDeniedError: the name server refused the connection.
        """
        cfg = pyroact.config
        host = host or cfg.PYRO_NS_HOSTNAME
        if host:
            return self._direct(host, port or cfg.PYRO_NS_PORT, trace)
        if self.found is not None:
            try:
                return self._direct(*self.found, trace)
            except NamingError:
                self.found = None
        try:
            uri = self.detectNS(None, port, trace, bcaddr)
        except NamingError:
            uri = None
        if uri is not None:
            proxy = NameServerProxy(uri, noconnect=1, identification=self.identification)
            try:
                proxy.ping()
                return proxy
            except ConnectionDeniedError:
                raise
            except PyroError as exc:
                log.info("the name server that answered discovery is unreachable: %s", exc)
        if port is None:
            for candidate in (socket.gethostname(), "localhost"):
                try:
                    proxy = self._direct(candidate, cfg.PYRO_NS_PORT, trace)
                except NamingError:
                    continue
                self.found = (candidate, cfg.PYRO_NS_PORT)
                return proxy
        raise NamingError("could not find NameServer")

    def _direct(self, host: str, port: int, trace: int) -> NameServerProxy:
        if trace:
            print(f"Locator: contacting Pyro Name Server directly at {host}:{port}")
        try:
            uri = PyroURI(host, constants.NAMESERVER_NAME, port, "PYROLOC")
            proxy = NameServerProxy(uri, noconnect=1, identification=self.identification)
            proxy.ping()
        except ConnectionDeniedError:
            raise
        except (PyroError, OSError) as exc:
            raise NamingError(f"could not find NameServer on host {host}", str(exc)) from exc
        return proxy

    def detectNS(
        self,
        host: str | None = None,
        port: int | None = None,
        trace: int = 0,
        bcaddr: str | None = None,
    ) -> PyroURI:
        """The URI of a name server found by a ``location`` request.

        Args:
            host: send the request to this host instead of broadcasting.
            port: the UDP port (default ``PYRO_NS_BC_PORT``).
            trace: print what is tried.
            bcaddr: the broadcast address.

        Returns:
            The URI the name server answered with.

        Raises:
            NamingError: no (valid) answer.
        """
        reply = self.sendSysCommand(
            constants.NS_SYSCMD_LOCATION, host, port, trace, logerrors=0, bcaddr=bcaddr
        )
        try:
            return PyroURI(reply)
        except PyroError as exc:
            raise NamingError("invalid name server location reply", reply) from exc

    def sendSysCommand(
        self,
        request: bytes | str,
        host: str | None = None,
        port: int | None = None,
        trace: int = 0,
        logerrors: int = 1,
        bcaddr: str | None = None,
    ) -> str:
        """Send a UDP system command (``location`` or ``shutdown``) and return the reply.

        Without ``host`` (and without an explicit ``port``) the request also goes to the
        second name server's address (``PYRO_NS2_BC_ADDR``/``PYRO_NS2_BC_PORT``); the first
        reply wins. Each of ``1 + PYRO_BC_RETRIES`` attempts waits ``PYRO_BC_TIMEOUT`` s.

        Args:
            request: the datagram.
            host: where to send it (default: broadcast).
            port: the UDP port (default ``PYRO_NS_BC_PORT``).
            trace: print what is tried.
            logerrors: log when nothing answered.
            bcaddr: the broadcast address (default ``PYRO_NS_BC_ADDR`` or ``<broadcast>``).

        Returns:
            The reply text.

        Raises:
            NamingError: ``'could not find NameServer'``: nothing answered.
        """
        cfg = pyroact.config
        data = request.encode("ascii") if isinstance(request, str) else bytes(request)
        first = host or bcaddr or cfg.PYRO_NS_BC_ADDR or "<broadcast>"
        destinations = [(first, port or cfg.PYRO_NS_BC_PORT)]
        if host is None and port is None:
            second = (cfg.PYRO_NS2_BC_ADDR or first, cfg.PYRO_NS2_BC_PORT)
            if second != destinations[0]:
                destinations.append(second)
        reply = self._exchange(data, destinations, cfg.PYRO_BC_RETRIES, cfg.PYRO_BC_TIMEOUT, trace)
        if reply is None:
            if logerrors:
                log.error("no reply to %r from %s", data, destinations)
            raise NamingError(
                "could not find NameServer", ", ".join(f"{h}:{p}" for h, p in destinations)
            )
        return reply

    @staticmethod
    def _exchange(
        data: bytes,
        destinations: list[tuple[str, int]],
        retries: int,
        timeout: float,
        trace: int,
    ) -> str | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            attempt = 0
            while retries < 0 or attempt <= retries:
                attempt += 1
                sent = False
                for dest in destinations:
                    if trace:
                        print(f"Locator: searching Pyro Name Server at {dest[0]}:{dest[1]}")
                    try:
                        sock.sendto(data, dest)
                        sent = True
                    except OSError as exc:
                        log.debug("cannot send %r to %s: %s", data, dest, exc)
                if not sent:
                    continue
                deadline = None if timeout < 0 else time.monotonic() + timeout
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    readable, _, _ = select.select([sock], [], [], left)
                    if not readable:
                        break
                    try:
                        reply, _addr = sock.recvfrom(_MAX_REPLY)
                    except OSError:
                        # e.g. ICMP port unreachable from a loopback destination: no answer.
                        continue
                    return reply.decode("ascii", "replace")
        return None


# -- PYRONAME ------------------------------------------------------------------------------------


def resolvePYRONAME(uri: PyroURI) -> PyroURI:
    """Resolve ``PYRONAME://[host[:port]/]name`` to the object's PYRO URI.

    The name server is found with ``NameServerLocator().getNS(host, port)``.

    Args:
        uri: a PYRONAME (or PYRONAMESSL) URI.

    Returns:
        The registered URI.

    Raises:
        NamingError: the name server or the name was not found.
    """
    locator = NameServerLocator()
    ns = locator.getNS(uri.address or None, uri.port or None)
    try:
        resolved = ns.resolve(uri.objectID)
    finally:
        ns._release()
    if uri.protocol == "PYRONAMESSL" and resolved.protocol == "PYRO":
        resolved = resolved.clone()
        resolved.protocol = "PYROSSL"
    return resolved


core.pyroname_resolver = resolvePYRONAME
