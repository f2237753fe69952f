"""The event service through a real ES daemon and a real name server (ARCHITECTURE §6, W-18)."""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyroact import constants
from pyroact.core import CallbackObjBase, Daemon, getProxyForURI
from pyroact.errors import NamingError
from pyroact.eventservice import Event, EventService, Publisher, Subscriber
from pyroact.eventservice.server import EventServiceStarter
from pyroact.naming import NameServerLocator
from tests.helpers import serving, wait_until
from tests.servers.ns_helpers import running_ns


class ES:
    """A running event service, registered in a running name server."""

    def __init__(self, ns_port: int, starter: EventServiceStarter) -> None:
        self.ns_port = ns_port
        self.starter = starter
        assert starter.uri is not None and starter.service is not None
        self.uri = starter.uri
        self.service = starter.service

    def publisher(self) -> Publisher:
        return Publisher(nsHost="127.0.0.1", nsPort=self.ns_port)

    def proxy(self) -> Any:
        return getProxyForURI(self.uri)


@contextlib.contextmanager
def event_service(**service_args: Any) -> Iterator[ES]:
    with running_ns() as ns:
        ns_port = ns.daemon.port
        starter = EventServiceStarter()
        starter.initialize(
            "127.0.0.1",
            0,
            nsHost="127.0.0.1",
            nsPort=ns_port,
            service=EventService(**service_args),
        )
        thread = threading.Thread(target=starter.requestLoop, kwargs={"timeout": 0.1})
        thread.start()
        try:
            yield ES(ns_port, starter)
        finally:
            starter.shutdown()
            thread.join(5)
            starter.close()
        assert not thread.is_alive()


@pytest.fixture
def es() -> Iterator[ES]:
    with event_service() as running:
        yield running


class Collector(Subscriber):
    """Records events; with a gate, every ``event`` call waits for it to open."""

    def __init__(self, es: ES, *, gate: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__(nsHost="127.0.0.1", nsPort=es.ns_port, **kwargs)
        self.events: list[Event] = []
        self.entered = 0
        self.gate = gate
        self.lock = threading.Lock()

    def event(self, event: Event) -> None:
        with self.lock:
            self.entered += 1
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        with self.lock:
            self.events.append(event)

    def messages(self) -> list[Any]:
        with self.lock:
            return [e.msg for e in self.events]

    def subjects(self) -> list[str]:
        with self.lock:
            return [e.subject for e in self.events]

    def wait_for(self, msg: Any, timeout: float = 5.0) -> list[Any]:
        wait_until(lambda: msg in self.messages(), timeout, what=f"event {msg!r}")
        return self.messages()


@contextlib.contextmanager
def listening(sub: Subscriber) -> Iterator[Subscriber]:
    thread = threading.Thread(target=sub.listen, kwargs={"timeout": 0.05})
    thread.start()
    try:
        yield sub
    finally:
        sub.abort()
        thread.join(5)
        sub.close()
    assert not thread.is_alive(), "listen() did not return after abort()"


def ordered(es: ES, **kwargs: Any) -> Collector:
    """A subscriber in a single-threaded daemon: events arrive in publishing order."""
    return Collector(es, threaded=False, **kwargs)


# -- Event -------------------------------------------------------------------------------------


def test_event_value_object() -> None:
    event = Event("Stock.SUN", {"price": 1.5}, 1000.0)
    assert (event.subject, event.msg, event.time) == ("Stock.SUN", {"price": 1.5}, 1000.0)
    copy = pickle.loads(pickle.dumps(event))
    assert copy == event and copy is not event
    assert str(event) == f"<EVENT SUBJ Stock.SUN ({time.ctime(1000.0)}): {{'price': 1.5}}>"
    assert Event("s", 1).time == pytest.approx(time.time(), abs=5)
    with pytest.raises(TypeError):
        Event(3, "x")  # type: ignore[arg-type]


def test_service_argument_checks() -> None:
    with pytest.raises(ValueError):
        EventService(queuesize=-1)
    with pytest.raises(ValueError):
        EventService(timeout=0)


# -- publish / subscribe -----------------------------------------------------------------------


def test_registered_in_the_name_server(es: ES) -> None:
    ns = NameServerLocator().getNS("127.0.0.1", es.ns_port)
    assert ns.resolve(constants.EVENTSERVER_NAME) == es.uri


def test_exact_subscription_is_case_insensitive_and_keeps_case(es: ES) -> None:
    with listening(ordered(es)) as sub:
        assert isinstance(sub, Collector)
        sub.subscribe(["weather.NL", "end"])
        pub = es.publisher()
        pub.publish("weather.be", "not for us")
        pub.publish("WEATHER.nl", "rain")
        pub.publish("End", "done")
        sub.wait_for("done")
        assert sub.subjects() == ["WEATHER.nl", "End"]
        assert sub.messages() == ["rain", "done"]
        assert all(isinstance(e, Event) for e in sub.events)


def test_one_publish_many_subjects_share_one_time(es: ES) -> None:
    with listening(ordered(es)) as sub:
        assert isinstance(sub, Collector)
        sub.subscribe(["a", "b"])
        es.publisher().publish(["a", "c", "B"], "m")
        wait_until(lambda: len(sub.messages()) == 2, what="two events")
        assert sub.subjects() == ["a", "B"]
        assert sub.events[0].time == sub.events[1].time
        es.publisher().publish([], "nothing")  # falsy: no-op


def test_regex_subscription(es: ES) -> None:
    with listening(ordered(es)) as sub:
        assert isinstance(sub, Collector)
        sub.subscribeMatch(r"^STOCKQUOTE\.S.*$")
        sub.subscribe("end")
        pub = es.publisher()
        for subject in (
            "STOCKQUOTE.SUN",
            "stockquote.sap",
            "STOCKQUOTE.IBM",
            "NYSE.STOCKQUOTE.SUN",
        ):
            pub.publish(subject, subject)
        pub.publish("end", "end")
        assert sub.wait_for("end") == ["STOCKQUOTE.SUN", "stockquote.sap", "end"]


def test_invalid_regex_is_refused(es: ES) -> None:
    import re

    with es.proxy() as proxy, pytest.raises(re.error):
        proxy.subscribeMatch("(unclosed", "PYRO://127.0.0.1:1/x")


def test_non_string_subject_is_refused(es: ES) -> None:
    with es.proxy() as proxy, pytest.raises(TypeError):
        proxy.publish([1, 2], "m")


def test_overlapping_subscriptions_deliver_once(es: ES) -> None:
    """W-18: Pyro 3 delivered one copy per matching entry (3 here)."""
    with listening(ordered(es)) as sub:
        assert isinstance(sub, Collector)
        sub.subscribe(["stock.sun", "STOCK.SUN", "end"])
        sub.subscribeMatch([r"stock\..*", r"STOCK\.S.*", r"stock\.sun"])
        pub = es.publisher()
        pub.publish("Stock.Sun", 1)
        pub.publish("end", "end")
        assert sub.wait_for("end") == [1, "end"]


def test_unsubscribe(es: ES) -> None:
    with listening(ordered(es)) as sub:
        assert isinstance(sub, Collector)
        sub.subscribe(["a", "b", "end"])
        sub.subscribeMatch(r"p\..*")
        with es.proxy() as proxy:
            assert proxy.subscriberCount() == 1
        sub.unsubscribe(["A", r"p\..*", "never-subscribed"])
        pub = es.publisher()
        for subject in ("a", "b", "p.x"):
            pub.publish(subject, subject)
        pub.publish("end", "end")
        assert sub.wait_for("end") == ["b", "end"]
        sub.unsubscribe(["b", "end"])
        with es.proxy() as proxy:
            wait_until(lambda: proxy.subscriberCount() == 0, what="the worker to go")
        # subscribing again after a full unsubscribe works
        sub.subscribe("again")
        pub.publish("again", "back")
        assert sub.wait_for("back") == ["b", "end", "back"]


def test_different_proxies_are_one_subscriber(es: ES) -> None:
    with listening(ordered(es)) as sub:
        assert isinstance(sub, Collector)
        with es.proxy() as proxy:
            proxy.subscribe("x", sub.getProxy())
            proxy.subscribe("x", str(sub.getProxy().URI))  # a URI names the same subscriber
            assert proxy.subscriberCount() == 1
        es.publisher().publish(["x", "x"], "twice")
        wait_until(lambda: len(sub.messages()) == 2, what="two events")


# -- slow, full and dead subscribers -----------------------------------------------------------


def test_slow_subscriber_does_not_delay_a_fast_one() -> None:
    # oneway=False: the delivery thread waits for each event() to return, so the gated
    # subscriber really is slow at the event service.
    with event_service(oneway=False, queuesize=0) as es:
        gate = threading.Event()
        with listening(Collector(es, gate=gate)) as slow, listening(Collector(es)) as fast:
            assert isinstance(slow, Collector) and isinstance(fast, Collector)
            slow.subscribe("tick")
            fast.subscribe("tick")
            pub = es.publisher()
            start = time.monotonic()
            for n in range(5):
                pub.publish("tick", n)
            assert fast.wait_for(4, timeout=5) == [0, 1, 2, 3, 4]
            assert time.monotonic() - start < 5
            assert slow.messages() == []
            gate.set()
            assert slow.wait_for(4) == [0, 1, 2, 3, 4]


def _stalled(es: ES, gate: threading.Event) -> Collector:
    """A subscriber whose delivery thread is stuck in event() for the first message."""
    slow = Collector(es, gate=gate)
    slow.subscribe("q")
    return slow


def test_full_queue_drops_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyroact.system")
    with event_service(oneway=False, queuesize=2, blockqueue=False) as es:
        gate = threading.Event()
        with listening(_stalled(es, gate)) as slow:
            assert isinstance(slow, Collector)
            pub = es.publisher()
            pub.publish("q", 1)
            wait_until(lambda: slow.entered == 1, what="delivery of the first event")
            start = time.monotonic()
            for n in range(2, 7):  # 2 and 3 fit the queue; 4, 5, 6 are dropped
                pub.publish("q", n)
            assert time.monotonic() - start < 3, "a non-blocking publish waited"
            assert "queue of" in caplog.text and "event dropped" in caplog.text
            gate.set()
            assert slow.wait_for(3) == [1, 2, 3]
            pub.publish("q", 7)
            assert slow.wait_for(7) == [1, 2, 3, 7]


def test_full_queue_blocks_the_publisher_until_there_is_room() -> None:
    with event_service(oneway=False, queuesize=1, blockqueue=True, timeout=10) as es:
        gate = threading.Event()
        with listening(_stalled(es, gate)) as slow, listening(Collector(es)) as fast:
            assert isinstance(slow, Collector) and isinstance(fast, Collector)
            fast.subscribe("q")
            pub = es.publisher()
            pub.publish("q", 1)
            wait_until(lambda: slow.entered == 1, what="delivery of the first event")
            pub.publish("q", 2)  # fills the slow queue
            blocked = threading.Thread(target=es.publisher().publish, args=("q", 3))
            blocked.start()
            # the fast subscriber gets event 3 while the publisher still waits for the slow one
            fast.wait_for(3)
            blocked.join(0.3)
            assert blocked.is_alive(), "publish() did not wait for room in the full queue"
            gate.set()
            blocked.join(5)
            assert not blocked.is_alive()
            assert slow.wait_for(3) == [1, 2, 3]


def test_blocked_publisher_gives_up_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyroact.system")
    with event_service(oneway=False, queuesize=1, blockqueue=True, timeout=0.3) as es:
        gate = threading.Event()
        with listening(_stalled(es, gate)) as slow:
            assert isinstance(slow, Collector)
            pub = es.publisher()
            pub.publish("q", 1)
            wait_until(lambda: slow.entered == 1, what="delivery of the first event")
            pub.publish("q", 2)
            start = time.monotonic()
            pub.publish("q", 3)  # waits 0.3 s, then drops event 3
            assert 0.25 <= time.monotonic() - start < 5
            assert "stayed full" in caplog.text
            gate.set()
            assert slow.wait_for(2) == [1, 2]
            pub.publish("q", 4)
            assert slow.wait_for(4) == [1, 2, 4]


class Plain(CallbackObjBase):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[Any] = []

    def event(self, event: Event) -> None:
        self.got.append(event.msg)


def test_dead_subscriber_is_dropped_and_can_resubscribe(es: ES) -> None:
    """W-18: Pyro 3 kept the dead worker, so the same object never got events again."""
    with listening(Collector(es)) as other:
        assert isinstance(other, Collector)
        other.subscribe("news")
        victim = Plain()
        with serving("threaded", host="127.0.0.1") as daemon:
            daemon.connect(victim)
            port, guid = daemon.port, victim.GUID()
            with es.proxy() as proxy:
                proxy.subscribe("news", victim.getProxy())
                assert proxy.subscriberCount() == 2
                es.publisher().publish("news", "alive")
                wait_until(lambda: victim.got == ["alive"], what="the first event")
        # its daemon is gone: deliveries fail and the event service drops it
        pub = es.publisher()
        with es.proxy() as proxy:
            counter = iter(range(10_000))

            def dropped() -> bool:
                pub.publish("news", f"probe {next(counter)}")
                return bool(proxy.subscriberCount() == 1)

            wait_until(dropped, timeout=10, interval=0.05, what="the dead subscriber to go")
        assert other.wait_for("probe 0")
        # the same object id at the same address subscribes again and gets events
        reborn = Plain()
        reborn.setGUID(guid)
        daemon2 = Daemon(host="127.0.0.1", port=port, norange=1, mode="threaded")
        daemon2.connect(reborn)
        thread = threading.Thread(target=daemon2.requestLoop, kwargs={"timeout": 0.05})
        thread.start()
        try:
            with es.proxy() as proxy:
                proxy.subscribe("news", reborn.getProxy())
                assert proxy.subscriberCount() == 2
            pub.publish("news", "again")
            wait_until(lambda: "again" in reborn.got, what="an event after resubscribing")
        finally:
            daemon2.shutdown()
            thread.join(5)
            daemon2.closedown()


# -- client helpers ----------------------------------------------------------------------------


def test_helpers_with_an_explicit_uri(es: ES) -> None:
    sub = Collector(es)
    sub.setThreading(False)  # rebuilt before listening, on the same address
    assert sub.getDaemon().mode == "single"
    direct = Publisher(esURI=str(es.uri))
    with listening(sub):
        sub.subscribe("direct")
        direct.publish("direct", "hello")
        assert sub.wait_for("hello") == ["hello"]
        with pytest.raises(Exception, match="before listen"):
            sub.setThreading(True)


def test_helpers_need_a_registered_event_service() -> None:
    with running_ns() as ns:
        with pytest.raises(NamingError):
            Publisher(nsHost="127.0.0.1", nsPort=ns.daemon.port)
        with pytest.raises(NamingError):
            Subscriber(nsHost="127.0.0.1", nsPort=ns.daemon.port)


def test_default_event_prints(capsys: pytest.CaptureFixture[str]) -> None:
    Subscriber.event(None, Event("s", "m", 0.0))  # type: ignore[arg-type]
    assert "Subscriber: received event <EVENT SUBJ s" in capsys.readouterr().out


def test_starter_refuses_a_taken_name_unless_replace(es: ES) -> None:
    second = EventServiceStarter()
    with pytest.raises(NamingError, match="already registered"):
        second.initialize("127.0.0.1", 0, nsHost="127.0.0.1", nsPort=es.ns_port)
    assert second.daemon is None
    uri = second.initialize("127.0.0.1", 0, nsHost="127.0.0.1", nsPort=es.ns_port, replace=True)
    try:
        ns = NameServerLocator().getNS("127.0.0.1", es.ns_port)
        assert ns.resolve(constants.EVENTSERVER_NAME) == uri != es.uri
    finally:
        second.close()
    # closing the replacement unregistered its name
    with pytest.raises(NamingError):
        ns.resolve(constants.EVENTSERVER_NAME)
