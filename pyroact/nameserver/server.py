"""The name server object and the helper that starts one (layer 9).

:class:`NameServer` is the remote object with Pyro 3's methods (``register``, ``resolve``,
``unregister``, ``list``, ``flatlist``, ``createGroup``, ``deleteGroup``, ``ping``,
``fullName``, ``setMeta``, ``getMeta``, ``getSystemMeta``, ``resync``). Each change is first
checked against the namespace, then committed to the storage, and only then applied and
acknowledged. :class:`PersistentNameServer` is a NameServer on a
:class:`~pyroact.nameserver.storage.SqliteStorage` file.

:class:`NameServerStarter` creates the daemon, connects the name server as
``:Pyro.NameServer`` with an object id kept in its storage (so a persistent name server has the
same URI after a restart on the same port), starts the UDP discovery responder and runs the
request loop. ``python -m pyroact.nameserver`` is a command line around it.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import pyroact
from pyroact import constants, util
from pyroact.core import Daemon, ObjBase, PyroURI
from pyroact.errors import NamingError, PyroError
from pyroact.transport import is_loopback

from .broadcast import BCReqValidator, BroadcastServer
from .namespace import ROOT, Entry, NameSpace
from .storage import MemoryStorage, SqliteStorage, Storage

__all__ = ["NameServer", "NameServerStarter", "PersistentNameServer"]

log = logging.getLogger("pyroact.system")
_GUID_SETTING: Final = "nameserver_guid"


class NameServer(ObjBase):
    """Pyro 3's name server object.

    Args:
        storage: where the namespace is kept (default: in memory).
        default_group: the group relative names are expanded against on the server (default
            ``PYRO_NS_DEFAULTGROUP``); clients normally send absolute names.

    Raises:
        NamingError: the storage cannot be read, or ``default_group`` is not absolute.
    """

    def __init__(self, storage: Storage | None = None, default_group: str | None = None) -> None:
        ObjBase.__init__(self)
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self._lock = threading.RLock()
        self.namespace = NameSpace(default_group or pyroact.config.PYRO_NS_DEFAULTGROUP)
        self.namespace.apply(self.storage.load())
        missing = self.namespace.initial_groups()
        if missing:
            self._commit_put(missing)

    # -- storage then namespace ------------------------------------------------------------

    def _commit_put(self, entries: builtins.list[Entry]) -> None:
        self.storage.put(entries)
        self.namespace.apply(entries)

    def _commit_delete(self, names: builtins.list[str]) -> None:
        self.storage.delete(names)
        self.namespace.remove(names)

    @staticmethod
    def _uri_text(name: str, uri: Any) -> str:
        try:
            return str(uri if isinstance(uri, PyroURI) else PyroURI(str(uri)))
        except PyroError as exc:
            raise NamingError("invalid URI", name, str(uri)) from exc

    # -- Pyro 3's remote methods ---------------------------------------------------------------

    def ping(self) -> None:
        """Do nothing (a liveness check).

        Raises:
            Nothing.
        """

    def fullName(self, name: str | None) -> str:
        """The absolute form of ``name`` (expanded with this server's default group).

        Raises:
            NamingError: an invalid name.
        """
        return self.namespace.full_name(name)

    def register(self, name: str, URI: PyroURI | str) -> None:
        """Register ``URI`` under ``name``; returns after the change is durable.

        Args:
            name: absolute (or relative to the server's default group).
            URI: a PyroURI or URI string.

        Raises:
            NamingError: ``'name already exists'``, ``'(parent)group not found'``,
                ``'parent is no group'``, ``'invalid URI'``, or an invalid name; args[1] is
                always the full absolute name.
        """
        with self._lock:
            full = self.namespace.full_name(name)
            entry = self.namespace.plan_register(full, self._uri_text(full, URI), time.time())
            self._commit_put([entry])

    def resolve(self, name: str) -> PyroURI:
        """The URI registered under ``name``.

        Raises:
            NamingError: ``'name not found'``, ``'group not found'``,
                ``'attempt to resolve groupname'``, or an invalid name.
        """
        with self._lock:
            text = self.namespace.resolve(name)
        return PyroURI(text)

    def unregister(self, name: str) -> None:
        """Remove the registration of ``name``.

        Raises:
            NamingError: ``'name not found'``, ``'is a group, not an object'``, or an
                invalid name.
        """
        with self._lock:
            self._commit_delete([self.namespace.plan_unregister(name)])

    def list(self, group: str | None) -> builtins.list[tuple[str, int]]:
        """The members of ``group`` as ``(name, 0 = group / 1 = object)``.

        Args:
            group: a group; None or ``""`` mean the root (server-side Pyro 3 semantics).

        Raises:
            NamingError: ``'group not found'``, ``'is no group'``.
        """
        with self._lock:
            return self.namespace.members(group)

    def flatlist(self) -> builtins.list[tuple[str, PyroURI]]:
        """Every registered object as ``(absolute name, URI)``.

        Raises:
            Nothing.
        """
        with self._lock:
            pairs = self.namespace.flatlist()
        return [(name, PyroURI(uri)) for name, uri in pairs]

    def createGroup(self, name: str) -> None:
        """Create a group.

        Raises:
            NamingError: ``'group already exists'``, ``'invalid groupname'``,
                ``'parent is no group'``, ``'(parent)group not found'``.
        """
        with self._lock:
            self._commit_put([self.namespace.plan_create_group(name, time.time())])

    def deleteGroup(self, name: str) -> None:
        """Delete a group and everything below it.

        Raises:
            NamingError: ``'not allowed to delete root group'``, ``'group not found'``,
                ``'is no group'``.
        """
        with self._lock:
            self._commit_delete(self.namespace.plan_delete_group(name))

    def setMeta(self, name: str, meta: Any) -> None:
        """Set the user metadata of a group or name (JSON-serialisable values only).

        Raises:
            NamingError: ``'name not found'``, ``'metadata must be JSON-serialisable'``.
        """
        with self._lock:
            full = self.namespace.full_name(name)
            if full == ROOT:
                raise NamingError("cannot set metadata of the root group", full)
            self._commit_put([self.namespace.plan_set_meta(full, meta)])

    def getMeta(self, name: str) -> Any:
        """The user metadata of a group or name (None when none was set).

        Raises:
            NamingError: ``'name not found'``.
        """
        with self._lock:
            return self.namespace.get_meta(name)

    def getSystemMeta(self, name: str) -> dict[str, Any]:
        """Pyro 3's system metadata of a group or name: ``type`` (0 group, 1 object),
        ``timestamp`` and ``owner``.

        Raises:
            NamingError: ``'name not found'``.
        """
        with self._lock:
            entry = self.namespace.entry(name)
        return {"type": entry.kind, "timestamp": entry.created, "owner": entry.owner}

    def resync(self) -> None:
        """Pyro 3's paired-mode resynchronisation; a single name server has no twin.

        Raises:
            NamingError: always (pyroact does not implement paired mode).
        """
        raise NamingError("resync not possible: this name server is not paired", ROOT)

    # -- local helpers ---------------------------------------------------------------------

    def register_self(self, uri: PyroURI) -> None:
        """(Re)register this name server as ``:Pyro.NameServer`` with ``uri``.

        Raises:
            NamingError: the storage failed.
        """
        with self._lock:
            entry = self.namespace.get(constants.NAMESERVER_NAME)
            if entry is not None and entry.uri == str(uri):
                return
            fresh = Entry(constants.NAMESERVER_NAME, str(uri), created=time.time())
            if entry is not None:
                fresh.meta = entry.meta
            self._commit_put([fresh])


class PersistentNameServer(NameServer):
    """A name server whose namespace lives in an SQLite file.

    Args:
        dbfile: the database file (default ``PYRO_NS_DBFILE``).
        default_group: as for :class:`NameServer`.

    Raises:
        NamingError: the database cannot be opened or read.
    """

    def __init__(
        self, dbfile: str | os.PathLike[str] | None = None, default_group: str | None = None
    ) -> None:
        path = os.fspath(dbfile) if dbfile is not None else pyroact.config.PYRO_NS_DBFILE
        storage = SqliteStorage(path)
        try:
            super().__init__(storage, default_group)
        except BaseException:
            storage.close()
            raise


class NameServerStarter:
    """Starts a name server in this process (Pyro 3's ``NameServerStarter``).

    Use :meth:`start` to run it in the calling thread, or :meth:`initialize` and then
    :meth:`requestLoop` / :meth:`handleRequests` (for example in a thread, as the tests do).

    Args:
        identification: a passphrase clients must present (also the key of UDP shutdown).

    Attributes:
        daemon: the daemon, after :meth:`initialize`.
        nameserver: the :class:`NameServer` object.
        uri: the name server's URI.
        bcserver: the :class:`BroadcastServer`, or None.
    """

    def __init__(self, identification: str | bytes | None = None) -> None:
        self.identification = identification
        self.daemon: Daemon | None = None
        self.nameserver: NameServer | None = None
        self.uri: PyroURI | None = None
        self.bcserver: BroadcastServer | None = None
        self.started = threading.Event()
        self.verbose = 0

    def initialize(
        self,
        hostname: str | None = None,
        nsport: int | None = None,
        bcport: int | None = None,
        keep: int = 1,
        persistent: int = 0,
        dbfile: str | os.PathLike[str] | None = None,
        nobroadcast: bool = False,
        bcaddr: str | None = None,
        verbose: int = 0,
        *,
        mode: str = "threaded",
        timeout: float | None = None,
        storage: Storage | None = None,
        urifile: str | None = None,
        bcguard: BCReqValidator | None = None,
        allow_udp_shutdown: bool = False,
    ) -> PyroURI:
        """Create the daemon and the name server and start discovery; do not loop yet.

        Args:
            hostname: the address to bind (default ``PYRO_HOST``, 127.0.0.1).
            nsport: the TCP port (default ``PYRO_NS_PORT``; 0 = any free port).
            bcport: the UDP discovery port (default ``PYRO_NS_BC_PORT``; 0 = any free port).
            keep: accepted for Pyro 3 compatibility (shutdown requests are refused unless
                ``allow_udp_shutdown``).
            persistent: keep the namespace in ``dbfile`` (SQLite).
            dbfile: the database file (default ``PYRO_NS_DBFILE``).
            nobroadcast: no UDP discovery responder.
            bcaddr: the address the responder binds (default: the bind host when it is a
                loopback address, else every interface, to receive broadcasts).
            verbose: print what happens.
            mode: the daemon's server mode (``"single"`` or ``"threaded"``).
            timeout: the daemon's I/O timeout (default ``PYRO_NS_TIMEOUT``).
            storage: use this storage instead (overrides ``persistent``/``dbfile``).
            urifile: where to write the URI (default ``PYRO_NS_URIFILE``; ``""`` = nowhere).
            bcguard: a :class:`BCReqValidator` for discovery requests.
            allow_udp_shutdown: obey authenticated UDP shutdown requests (needs
                ``identification``).

        Returns:
            The name server's URI.

        Raises:
            DaemonError: the TCP port cannot be bound.
            NamingError: the storage cannot be opened, or the responder cannot start.
            ValueError: ``allow_udp_shutdown`` without an identification.
        """
        cfg = pyroact.config
        del keep
        self.verbose = verbose
        if allow_udp_shutdown and not self.identification:
            raise ValueError("UDP shutdown requests can only be allowed with an identification")
        if storage is None:
            storage = SqliteStorage(dbfile or cfg.PYRO_NS_DBFILE) if persistent else MemoryStorage()
        try:
            ns = NameServer(storage)
        except BaseException:
            storage.close()
            raise
        port = cfg.PYRO_NS_PORT if nsport is None else nsport
        try:
            daemon = Daemon(host=hostname or cfg.PYRO_HOST, port=port, norange=1, mode=mode)
        except BaseException:
            storage.close()
            raise
        try:
            if self.identification:
                daemon.setAllowedIdentifications([self.identification])
            daemon.setTimeout(cfg.PYRO_NS_TIMEOUT if timeout is None else timeout)
            guid = storage.get_setting(_GUID_SETTING)
            if guid is None:
                guid = util.getGUID()
                storage.set_setting(_GUID_SETTING, guid)
            ns.setGUID(guid)
            uri = daemon.connectPersistent(ns, constants.NAMESERVER_NAME)
            ns.register_self(uri)
            if not nobroadcast:
                bchost = bcaddr or (daemon.hostname if is_loopback(daemon.hostname) else "")
                bcp = cfg.PYRO_NS_BC_PORT if bcport is None else bcport
                try:
                    self.bcserver = BroadcastServer(
                        str(uri),
                        bchost,
                        bcp,
                        shutdown_identification=self.identification if allow_udp_shutdown else None,
                        validator=bcguard,
                    )
                except OSError as exc:
                    raise NamingError(
                        "cannot start broadcast server", f"{bchost}:{bcp}", str(exc)
                    ) from exc
                self.bcserver.on_shutdown = daemon.shutdown
        except BaseException:
            daemon.closedown()
            storage.close()
            raise
        self.daemon, self.nameserver, self.uri = daemon, ns, uri
        urifile = cfg.PYRO_NS_URIFILE if urifile is None else urifile
        if verbose:
            print(f"Name server listening on {daemon.hostname}:{daemon.port} ({daemon.mode})")
            print(f"Storage: {storage.describe()}")
            if self.bcserver is not None:
                host, bport = self.bcserver.address
                print(f"Broadcast server listening on {host or '*'}:{bport} (UDP)")
        if urifile:
            with contextlib.suppress(OSError):
                with open(urifile, "w", encoding="ascii") as f:
                    f.write(f"{uri}\n")
                if verbose:
                    print(f"URI written to: {urifile}")
        self.started.set()
        return uri

    def start(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`initialize` and then :meth:`requestLoop` until :meth:`shutdown`.

        Raises:
            DaemonError: the TCP port cannot be bound.
            NamingError: the storage or the responder cannot start.
        """
        self.initialize(*args, **kwargs)
        try:
            self.requestLoop()
        finally:
            self.close()

    def waitUntilStarted(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`initialize` finished.

        Returns:
            True when started.

        Raises:
            Nothing.
        """
        return self.started.wait(timeout)

    def _daemon(self) -> Daemon:
        if self.daemon is None:
            raise PyroError("the name server was not initialized")
        return self.daemon

    def getServerSockets(self) -> list[Any]:
        """The sockets a foreign event loop should watch (the daemon's and the responder's).

        Raises:
            PyroError: not initialized.
        """
        socks = list(self._daemon().getServerSockets())
        if self.bcserver is not None:
            socks.append(self.bcserver.sock)
        return socks

    def _others(self) -> tuple[list[Any], Callable[[list[Any]], Any] | None]:
        if self.bcserver is None:
            return [], None
        bc = self.bcserver
        return [bc.sock], lambda _ready: bc.handle_request()

    def handleRequests(self, timeout: float | None = None) -> None:
        """Serve one round (name server calls and discovery requests).

        Raises:
            PyroError: not initialized.
        """
        others, callback = self._others()
        self._daemon().handleRequests(timeout, others, callback)

    def requestLoop(self, timeout: float = 0.5) -> None:
        """Serve until :meth:`shutdown` (or an accepted UDP shutdown request).

        Raises:
            PyroError: not initialized.
        """
        others, callback = self._others()
        self._daemon().requestLoop(timeout=timeout, others=others, callback=callback)

    def shutdown(self) -> None:
        """Ask the request loop to stop (safe from signal handlers and other threads).

        Raises:
            Nothing.
        """
        if self.daemon is not None:
            self.daemon.shutdown()

    def close(self) -> None:
        """Close the daemon, the responder and the storage.

        Raises:
            Nothing.
        """
        if self.bcserver is not None:
            self.bcserver.close()
        if self.daemon is not None:
            self.daemon.shutdown()
            self.daemon.closedown()
        if self.nameserver is not None:
            self.nameserver.storage.close()
