"""Client helpers :class:`Subscriber` and :class:`Publisher` (Pyro 3's ``ES.Clients``).

Both find the event service through the name server (``:Pyro.EventService``) unless they are
given its URI, and use a fresh proxy for every call, so they are safe to use from any thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyroact import constants
from pyroact.core import (
    CallbackObjBase,
    Daemon,
    DynamicProxy,
    PyroURI,
    getProxyForURI,
    initClient,
    initServer,
)
from pyroact.errors import PyroError
from pyroact.naming import NameServerLocator

from .event import Event

__all__ = ["Publisher", "Subscriber"]

Subjects = str | Iterable[str]


def _locate_es(
    ident: str | None, esURI: PyroURI | str | None, nsHost: str | None, nsPort: int | None
) -> PyroURI:
    if esURI is not None:
        return esURI if isinstance(esURI, PyroURI) else PyroURI(esURI)
    ns = NameServerLocator(identification=ident).getNS(nsHost, nsPort)
    try:
        return ns.resolve(constants.EVENTSERVER_NAME)
    finally:
        ns._release()


class _ESClient:
    ES_uri: PyroURI
    ES_ident: str | None

    def getES(self) -> DynamicProxy:
        """A new proxy for the event service (with the identification set).

        Raises:
            URIError: the event service URI is malformed.
        """
        es = getProxyForURI(self.ES_uri)
        if self.ES_ident:
            es._setIdentification(self.ES_ident)
        return es

    def _call(self, method: str, *args: Any) -> None:
        with self.getES() as es:
            getattr(es, method)(*args)


class Subscriber(CallbackObjBase, _ESClient):
    """A callback object that receives events; override :meth:`event`.

    It creates its own daemon and connects itself to it (transiently).

    Args:
        ident: the passphrase for the event service and the name server.
        esURI: the event service's URI (then no name server is asked).
        nsHost: the name server's host (default ``PYRO_NS_HOSTNAME``, else discovery).
        nsPort: the name server's port.
        host: the address this subscriber's daemon binds (default ``PYRO_HOST``).
        threaded: serve events in a threaded daemon (default ``PYRO_SERVERTYPE``).

    Raises:
        NamingError: no name server, or no event service registered in it.
        DaemonError: the daemon cannot start.
    """

    def __init__(
        self,
        ident: str | None = None,
        esURI: PyroURI | str | None = None,
        *,
        nsHost: str | None = None,
        nsPort: int | None = None,
        host: str | None = None,
        threaded: bool | None = None,
    ) -> None:
        CallbackObjBase.__init__(self)
        initServer()
        initClient()
        self.ES_uri = _locate_es(ident, esURI, nsHost, nsPort)
        self.ES_ident = ident
        self.abortListen = False
        self._listening = False
        mode = None if threaded is None else ("threaded" if threaded else "single")
        self._esdaemon = Daemon(host=host, mode=mode)
        self._esdaemon.connect(self)

    def subscribe(self, subjects: Subjects) -> None:
        """Subscribe to exact subjects (case-insensitive).

        Args:
            subjects: a subject or a list of subjects (falsy: nothing happens).

        Raises:
            ProtocolError: the event service cannot be reached.
            TypeError: a subject is not a string.
        """
        if subjects:
            self._call("subscribe", subjects, self.getProxy())

    def subscribeMatch(self, subjectPatterns: Subjects) -> None:
        """Subscribe to every subject a regex matches (``re.match``, case-insensitive).

        Args:
            subjectPatterns: a pattern or a list of patterns (falsy: nothing happens).

        Raises:
            ProtocolError: the event service cannot be reached.
            re.error: a pattern is invalid.
        """
        if subjectPatterns:
            self._call("subscribeMatch", subjectPatterns, self.getProxy())

    def unsubscribe(self, subjects: Subjects) -> None:
        """Remove subscriptions (exact subjects or patterns; unknown ones are ignored).

        Args:
            subjects: a subject or pattern, or a list of them (falsy: nothing happens).

        Raises:
            ProtocolError: the event service cannot be reached.
        """
        if subjects:
            self._call("unsubscribe", subjects, self.getProxy())

    def getDaemon(self) -> Daemon:
        """This subscriber's own daemon."""
        return self._esdaemon

    def setThreading(self, threaded: bool) -> None:
        """Serve events in a threaded (True) or single-threaded daemon; call before
        :meth:`listen`. The daemon is rebuilt on the same address, so subscriptions made
        already stay valid.

        Args:
            threaded: the wanted mode.

        Raises:
            PyroError: called while listening.
            DaemonError: the address cannot be bound again.
        """
        wanted = "threaded" if threaded else "single"
        if self._esdaemon.mode == wanted:
            return
        if self._listening:
            raise PyroError("setThreading() must be called before listen()")
        old = self._esdaemon
        host, port = old.sock.getsockname()[:2]
        old.disconnect(self)
        old.closedown()
        self._esdaemon = Daemon(host=host, port=port, norange=1, mode=wanted)
        self._esdaemon.connect(self)

    def listen(self, timeout: float = 0.2) -> None:
        """Handle events until :meth:`abort` is called.

        Args:
            timeout: the longest one round waits, so an abort is noticed.

        Raises:
            Exception: single-threaded daemon: what :meth:`event` raised.
        """
        self.abortListen = False
        self._listening = True
        try:
            self._esdaemon.requestLoop(lambda: not self.abortListen, timeout=timeout)
        finally:
            self._listening = False

    def abort(self) -> None:
        """Make :meth:`listen` return (from another thread or from :meth:`event`)."""
        self.abortListen = True

    def close(self) -> None:
        """Stop listening and close the daemon; unsubscribe first if the event service
        should not keep trying to deliver."""
        self.abort()
        self._esdaemon.shutdown()
        self._esdaemon.closedown()

    def event(self, event: Event) -> None:
        """Called for every event; the default prints it. Override it.

        Args:
            event: the event.
        """
        print("Subscriber: received event", event)


class Publisher(_ESClient):
    """Publishes events; every :meth:`publish` uses a fresh proxy, released afterwards.

    Args:
        ident: the passphrase for the event service and the name server.
        esURI: the event service's URI (then no name server is asked).
        nsHost: the name server's host (default ``PYRO_NS_HOSTNAME``, else discovery).
        nsPort: the name server's port.

    Raises:
        NamingError: no name server, or no event service registered in it.
    """

    def __init__(
        self,
        ident: str | None = None,
        esURI: PyroURI | str | None = None,
        *,
        nsHost: str | None = None,
        nsPort: int | None = None,
    ) -> None:
        initClient()
        self.ES_uri = _locate_es(ident, esURI, nsHost, nsPort)
        self.ES_ident = ident

    def publish(self, subjects: Subjects, msg: Any) -> None:
        """Publish ``msg`` under one subject or a list of subjects.

        Args:
            subjects: a subject or a list of subjects (falsy: nothing happens).
            msg: the message (any picklable object).

        Raises:
            ProtocolError: the event service cannot be reached.
            TypeError: a subject is not a string.
        """
        if subjects:
            self._call("publish", subjects, msg)
