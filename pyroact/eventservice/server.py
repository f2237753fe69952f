"""The event server object and a starter for it (Pyro 3's ``Pyro.EventService.Server``).

:class:`EventService` keeps three tables under one lock: exact subjects (lower-cased) to
subscribers, regex patterns to subscribers, and subscribers to their delivery worker. Every
distinct subscriber (proxies compare by address, port and object id) has one bounded queue
and one delivery thread, so a slow subscriber only ever fills its own queue.

Differences from Pyro 3 (spec W-18): a subscriber gets each published subject once even when
an exact subscription and several patterns match it; a subscriber found dead on delivery is
removed from every table, so subscribing again works; the tables are locked; a publisher
blocked by a full queue waits at most ``PYRO_ES_TIMEOUT`` seconds; the starter never asks on
stdin (it refuses a taken name unless told to replace it); the worker class is
``_DeliveryWorker``, not ``Subscriber``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import pyroact
from pyroact import constants
from pyroact.core import Daemon, DynamicProxy, ObjBase, PyroURI
from pyroact.errors import NamingError, ProtocolError, PyroError
from pyroact.naming import NameServerLocator, NameServerProxy

from .event import Event

__all__ = ["EventService", "EventServiceStarter"]

log = logging.getLogger("pyroact.system")

_STOP = object()
# How often a publisher blocked on a full queue checks whether that worker died meanwhile.
_BLOCK_SLICE = 0.05


def _subject_list(subjects: str | Iterable[str] | None, what: str) -> list[str]:
    """One subject or a list of them as a list (falsy: empty); every item must be a str."""
    if not subjects:
        return []
    items = [subjects] if isinstance(subjects, str) else list(subjects)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must be strings, not {type(item).__name__}")
    return items


def _as_subscriber(subscriber: Any) -> Any:
    """The object events are delivered to: a private proxy copy (or a local object)."""
    if isinstance(subscriber, PyroURI | str):
        return DynamicProxy(subscriber)
    if isinstance(subscriber, DynamicProxy):
        return copy.copy(subscriber)
    if subscriber is None or not callable(getattr(subscriber, "event", None)):
        raise TypeError("a subscriber must be a proxy (or URI) of an object with event(event)")
    return subscriber


class _DeliveryWorker:
    """One subscriber's queue and delivery thread."""

    def __init__(
        self, subscriber: Any, queuesize: int, oneway: bool, service: EventService
    ) -> None:
        self.subscriber = subscriber
        self.queue: queue.Queue[Any] = queue.Queue(queuesize)
        self.subjects: set[str] = set()
        self.patterns: set[str] = set()
        self.alive = True
        self.stopping = False
        self._service = service
        if oneway and isinstance(subscriber, DynamicProxy):
            subscriber._setOneway("event")
        self.thread = threading.Thread(
            target=self._run, name=f"pyroact-es-delivery {subscriber!r}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def has_subscriptions(self) -> bool:
        return bool(self.subjects or self.patterns)

    def put(self, event: Event, timeout: float | None) -> bool:
        """Queue ``event``: at once (``timeout`` None) or waiting until ``timeout``.

        Returns:
            True if it was queued (or the worker is gone, so there is nothing to wait for),
            False if the queue stayed full.
        """
        if timeout is None:
            try:
                self.queue.put_nowait(event)
            except queue.Full:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.alive and not self.stopping:
            left = deadline - time.monotonic()
            try:
                self.queue.put(event, timeout=max(0.0, min(left, _BLOCK_SLICE)))
                return True
            except queue.Full:
                if left <= 0:
                    return False
        return True

    def stop(self) -> None:
        """Ask the thread to end; queued events are discarded."""
        self.stopping = True
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_STOP)

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()

    def _run(self) -> None:
        try:
            while not self.stopping:
                event = self.queue.get()
                if event is _STOP or self.stopping:
                    break
                try:
                    self.subscriber.event(event)
                except ProtocolError as exc:  # includes ConnectionClosedError
                    log.warning(
                        "event service: subscriber %r is unreachable, dropping it: %s",
                        self.subscriber,
                        exc,
                    )
                    self.alive = False
                    self._service._remove_worker(self)
                    break
                except Exception as exc:  # the subscriber's own error: keep delivering
                    log.warning(
                        "event service: subscriber %r raised %r on event %s",
                        self.subscriber,
                        exc,
                        event,
                    )
        finally:
            self.alive = False
            self._drain()
            if isinstance(self.subscriber, DynamicProxy):
                with contextlib.suppress(Exception):
                    self.subscriber._release()


class EventService(ObjBase):
    """The event server object (registered as ``:Pyro.EventService``).

    Serve it on a threaded daemon: a publisher waiting for room in a full queue blocks only
    its own connection.

    Args:
        queuesize: each subscriber's queue size, 0 = unbounded (default ``PYRO_ES_QUEUESIZE``).
        blockqueue: a publisher waits for room in a full queue (True) or the event is dropped
            for that subscriber at once (False) (default ``PYRO_ES_BLOCKQUEUE``).
        timeout: the longest one ``publish`` call waits for room, in seconds; then the event
            is dropped for the subscribers still full, with a log line (default
            ``PYRO_ES_TIMEOUT``).
        oneway: deliver with oneway ``event`` calls (Pyro 3). False waits for each
            ``event`` to return, so a subscriber's slowness fills its own queue (flow control).

    Raises:
        ValueError: a negative queue size or a non-positive timeout.
    """

    def __init__(
        self,
        queuesize: int | None = None,
        blockqueue: bool | None = None,
        timeout: float | None = None,
        *,
        oneway: bool = True,
    ) -> None:
        ObjBase.__init__(self)
        cfg = pyroact.config
        self._queuesize = cfg.PYRO_ES_QUEUESIZE if queuesize is None else int(queuesize)
        self._blockqueue = cfg.PYRO_ES_BLOCKQUEUE if blockqueue is None else bool(blockqueue)
        self._timeout = cfg.PYRO_ES_TIMEOUT if timeout is None else float(timeout)
        if self._queuesize < 0:
            raise ValueError("the queue size must be 0 (unbounded) or positive")
        if self._timeout <= 0:
            raise ValueError("the publish timeout must be positive")
        self._oneway = oneway
        self._lock = threading.RLock()
        self._exact: dict[str, set[Any]] = {}
        self._patterns: dict[str, tuple[re.Pattern[str], set[Any]]] = {}
        self._workers: dict[Any, _DeliveryWorker] = {}
        self._closed = False

    # -- remote API ----------------------------------------------------------------------------

    def publish(self, subjects: str | Iterable[str], msg: Any) -> None:
        """Send ``msg`` to the subscribers of each subject.

        Every subscriber gets one :class:`Event` per published subject that it subscribed
        to exactly (case-insensitively) or through a matching pattern, however many of its
        subscriptions match. All events of one call share one creation time.

        Args:
            subjects: a subject or a list of subjects (falsy: nothing is published).
            msg: the message (any picklable object).

        Raises:
            TypeError: a subject is not a string.
        """
        items = _subject_list(subjects, "subjects")
        if not items:
            return
        now = time.time()
        deliveries: list[tuple[_DeliveryWorker, Event]] = []
        with self._lock:
            for subject in items:
                event = Event(subject, msg, now)
                lowered = subject.lower()
                targets: dict[Any, None] = dict.fromkeys(self._exact.get(lowered, ()))
                for compiled, subscribers in self._patterns.values():
                    if compiled.match(subject):
                        targets.update(dict.fromkeys(subscribers))
                for subscriber in targets:
                    worker = self._workers.get(subscriber)
                    if worker is not None and worker.alive:
                        deliveries.append((worker, event))
        self._deliver(deliveries)

    def subscribe(self, subjects: str | Iterable[str], subscriber: Any) -> None:
        """Subscribe ``subscriber`` to exact subjects (case-insensitive; repeats are ignored).

        Args:
            subjects: a subject or a list of subjects.
            subscriber: a proxy (or URI) of an object with ``event(self, event)``.

        Raises:
            TypeError: a subject is not a string, or ``subscriber`` is not a subscriber.
        """
        items = _subject_list(subjects, "subjects")
        if not items:
            return
        target = _as_subscriber(subscriber)
        with self._lock:
            worker = self._worker_for(target)
            for subject in items:
                lowered = subject.lower()
                self._exact.setdefault(lowered, set()).add(worker.subscriber)
                worker.subjects.add(lowered)

    def subscribeMatch(self, subjectPatterns: str | Iterable[str], subscriber: Any) -> None:
        """Subscribe ``subscriber`` to every subject a regex matches (``re.match``, ignoring case).

        Args:
            subjectPatterns: a pattern or a list of patterns.
            subscriber: a proxy (or URI) of an object with ``event(self, event)``.

        Raises:
            TypeError: a pattern is not a string, or ``subscriber`` is not a subscriber.
            re.error: a pattern is not a valid regular expression.
        """
        items = _subject_list(subjectPatterns, "subject patterns")
        if not items:
            return
        compiled = [(p, re.compile(p, re.IGNORECASE)) for p in items]
        target = _as_subscriber(subscriber)
        with self._lock:
            worker = self._worker_for(target)
            for pattern, regex in compiled:
                entry = self._patterns.setdefault(pattern, (regex, set()))
                entry[1].add(worker.subscriber)
                worker.patterns.add(pattern)

    def unsubscribe(self, subjects: str | Iterable[str], subscriber: Any) -> None:
        """Remove subscriptions; each item is an exact subject, else a pattern; unknown ones
        are ignored. A subscriber left without subscriptions loses its delivery thread.

        Args:
            subjects: a subject or pattern, or a list of them.
            subscriber: the proxy (or URI) that subscribed.

        Raises:
            TypeError: an item is not a string, or ``subscriber`` is not a subscriber.
        """
        items = _subject_list(subjects, "subjects")
        if not items:
            return
        target = _as_subscriber(subscriber)
        with self._lock:
            worker = self._workers.get(target)
            if worker is None:
                return
            for item in items:
                lowered = item.lower()
                if lowered in worker.subjects:
                    worker.subjects.discard(lowered)
                    self._discard(self._exact, lowered, worker.subscriber)
                elif item in worker.patterns:
                    worker.patterns.discard(item)
                    entry = self._patterns.get(item)
                    if entry is not None:
                        entry[1].discard(worker.subscriber)
                        if not entry[1]:
                            del self._patterns[item]
            if not worker.has_subscriptions():
                del self._workers[worker.subscriber]
                worker.stop()

    # -- local API -----------------------------------------------------------------------------

    def subscriberCount(self) -> int:
        """How many distinct subscribers have a delivery worker now."""
        with self._lock:
            return len(self._workers)

    def _close(self) -> None:
        """Stop every delivery thread and forget all subscriptions.

        Local use only (the leading underscore keeps it from being called remotely).
        """
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
            self._exact.clear()
            self._patterns.clear()
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.thread.join(5)

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _discard(table: dict[str, set[Any]], key: str, subscriber: Any) -> None:
        members = table.get(key)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del table[key]

    def _worker_for(self, subscriber: Any) -> _DeliveryWorker:
        """The live worker of ``subscriber``, creating it (caller holds the lock)."""
        if self._closed:
            raise PyroError("the event service is closed")
        worker = self._workers.get(subscriber)
        if worker is not None and worker.alive and not worker.stopping:
            return worker
        if worker is not None:
            self._remove_worker(worker)
        worker = _DeliveryWorker(subscriber, self._queuesize, self._oneway, self)
        self._workers[subscriber] = worker
        worker.start()
        return worker

    def _remove_worker(self, worker: _DeliveryWorker) -> None:
        """Forget a dead or stopped worker and all its subscriptions."""
        with self._lock:
            if self._workers.get(worker.subscriber) is worker:
                del self._workers[worker.subscriber]
                for subject in worker.subjects:
                    self._discard(self._exact, subject, worker.subscriber)
                for pattern in worker.patterns:
                    entry = self._patterns.get(pattern)
                    if entry is not None:
                        entry[1].discard(worker.subscriber)
                        if not entry[1]:
                            del self._patterns[pattern]
            worker.subjects.clear()
            worker.patterns.clear()
        worker.stop()

    def _deliver(self, deliveries: list[tuple[_DeliveryWorker, Event]]) -> None:
        """Queue each event; full queues first get every other delivery, then the wait."""
        waiting: dict[_DeliveryWorker, list[Event]] = {}
        for worker, event in deliveries:
            if worker in waiting:  # keep this subscriber's events in order
                waiting[worker].append(event)
            elif not worker.put(event, None):
                if self._blockqueue:
                    waiting[worker] = [event]
                else:
                    log.warning(
                        "event service: queue of %r is full, event dropped: %s",
                        worker.subscriber,
                        event,
                    )
        if not waiting:
            return
        deadline = time.monotonic() + self._timeout
        for worker, events in waiting.items():
            for event in events:
                if not worker.put(event, max(0.0, deadline - time.monotonic())):
                    log.warning(
                        "event service: queue of %r stayed full for %ss, event dropped: %s",
                        worker.subscriber,
                        self._timeout,
                        event,
                    )


class EventServiceStarter:
    """Creates an event service on a daemon, optionally registered in a name server.

    Unlike Pyro 3 it never asks on stdin: a name server that already knows
    ``:Pyro.EventService`` makes :meth:`initialize` fail unless ``replace`` is set.

    Args:
        identification: the passphrase clients must present, also used towards the name
            server.
    """

    def __init__(self, identification: str | None = None) -> None:
        self.identification = identification
        self.daemon: Daemon | None = None
        self.service: EventService | None = None
        self.ns: NameServerProxy | None = None
        self.uri: PyroURI | None = None

    def initialize(
        self,
        hostname: str | None = None,
        port: int | None = None,
        useNameServer: bool = True,
        norange: int = 0,
        *,
        nsHost: str | None = None,
        nsPort: int | None = None,
        replace: bool = False,
        service: EventService | None = None,
    ) -> PyroURI:
        """Create the daemon and the service; do not loop yet.

        Args:
            hostname: the address to bind (default ``PYRO_HOST``).
            port: the port (default ``PYRO_PORT`` and the following range; 0 = any port).
            useNameServer: register as ``:Pyro.EventService`` in a name server.
            norange: use exactly ``port``.
            nsHost: the name server's host (default ``PYRO_NS_HOSTNAME``, else discovery).
            nsPort: the name server's port.
            replace: take over the name if another event service holds it.
            service: the EventService to serve (default: a new one from the configuration).

        Returns:
            The event service's PYRO URI.

        Raises:
            DaemonError: the daemon cannot start.
            NamingError: no name server found, or the name is taken and ``replace`` is off.
            ConnectionDeniedError: the name server refused the identification.
        """
        ns: NameServerProxy | None = None
        if useNameServer:
            ns = NameServerLocator(identification=self.identification).getNS(nsHost, nsPort)
            try:
                known: PyroURI | None = ns.resolve(constants.EVENTSERVER_NAME)
            except NamingError:
                known = None
            if known is not None and not replace:
                raise NamingError(
                    f"an event service is already registered as {constants.EVENTSERVER_NAME}"
                    f" ({known}); use replace to take over the name"
                )
        if port is None:
            port = pyroact.config.PYRO_PORT
        elif port == 0:
            norange = 1
        daemon = Daemon(host=hostname, port=port, norange=norange, mode="threaded")
        try:
            if self.identification:
                daemon.setAllowedIdentifications([self.identification])
            self.service = service if service is not None else EventService()
            if ns is not None:
                with contextlib.suppress(NamingError):
                    ns.unregister(constants.EVENTSERVER_NAME)
                daemon.useNameServer(ns)
            self.uri = daemon.connect(self.service, constants.EVENTSERVER_NAME)
        except BaseException:
            daemon.closedown()
            raise
        self.daemon, self.ns = daemon, ns
        return self.uri

    def start(self, *args: Any, **kwargs: Any) -> PyroURI:
        """:meth:`initialize`, then serve until :meth:`shutdown` (Pyro 3's ``start``).

        Args:
            *args: as for :meth:`initialize`.
            **kwargs: as for :meth:`initialize`.

        Returns:
            The URI it served under.

        Raises:
            DaemonError: the daemon cannot start.
            NamingError: as for :meth:`initialize`.
        """
        uri = self.initialize(*args, **kwargs)
        try:
            self.requestLoop()
        finally:
            self.close()
        return uri

    def requestLoop(self, timeout: float = 0.5) -> None:
        """Serve until :meth:`shutdown`.

        Args:
            timeout: the longest one round waits, so a shutdown is noticed.

        Raises:
            PyroError: not initialized.
        """
        if self.daemon is None:
            raise PyroError("EventServiceStarter.initialize() was not called")
        self.daemon.requestLoop(timeout=timeout)

    def shutdown(self) -> None:
        """Make :meth:`requestLoop` return (safe from a signal handler or another thread)."""
        if self.daemon is not None:
            self.daemon.shutdown()

    def close(self) -> None:
        """Unregister the name (if it is still ours), stop delivery, close the daemon."""
        daemon, self.daemon = self.daemon, None
        ns, self.ns = self.ns, None
        if ns is not None and self.uri is not None:
            with contextlib.suppress(PyroError, OSError):
                if ns.resolve(constants.EVENTSERVER_NAME) == self.uri:
                    ns.unregister(constants.EVENTSERVER_NAME)
            with contextlib.suppress(Exception):
                ns._release()
        if self.service is not None:
            self.service._close()
        if daemon is not None:
            daemon.shutdown()
            daemon.closedown()
