"""Callbacks and oneway calls.

The client runs its own daemon (in a thread) for its callback object and passes a *proxy* of
that object to the server. The server keeps the proxies under a lock, calls them, and drops
callbacks whose client went away. ``CallbackObjBase`` makes an exception raised in a
callback visible on the client too (the threaded daemon reports it through its
``callbackError`` hook). ``_setOneway`` makes a call return at once without a reply.
"""

from __future__ import annotations

import threading

import pyroact.core
from pyroact.errors import ConnectionClosedError, ProtocolError


class Publisher(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.lock = threading.Lock()
        self.listeners: list[pyroact.core.DynamicProxy] = []

    def register(self, listener: pyroact.core.DynamicProxy) -> None:
        with self.lock:
            self.listeners.append(listener)

    def publish(self, news: str) -> list[str]:
        outcomes = []
        with self.lock:
            listeners = list(self.listeners)
        for listener in listeners:
            try:
                listener.notify(news)
                outcomes.append("delivered")
            except (ConnectionClosedError, ProtocolError):
                with self.lock:
                    self.listeners.remove(listener)  # the client is gone
                outcomes.append("dropped dead listener")
            except Exception as exc:  # never let a callback's error kill the server
                outcomes.append(f"listener raised {type(exc).__name__}")
        return outcomes

    def slow_job(self, done: pyroact.core.DynamicProxy) -> None:  # called oneway
        done.notify("job finished")


class Listener(pyroact.core.CallbackObjBase):
    def __init__(self) -> None:
        pyroact.core.CallbackObjBase.__init__(self)
        self.received: list[str] = []
        self.got = threading.Event()

    def notify(self, news: str) -> None:
        if news == "bad news":
            raise ValueError("listener cannot handle bad news")
        self.received.append(news)
        self.got.set()


class ClientDaemon(pyroact.core.Daemon):
    """A threaded daemon reports CallbackObjBase errors through callbackError."""

    errors: list[BaseException] = []
    failed = threading.Event()

    def callbackError(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.failed.set()


def serve(daemon: pyroact.core.Daemon) -> threading.Thread:
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    return loop


def main() -> None:
    server = pyroact.core.Daemon(host="127.0.0.1", port=0)
    publisher_uri = server.connect(Publisher(), "publisher")
    client = ClientDaemon(host="127.0.0.1", port=0)  # the client is a server too
    listener = Listener()
    client.connect(listener)
    loops = [serve(server), serve(client)]
    try:
        publisher = pyroact.core.getProxyForURI(publisher_uri)
        publisher.register(listener.getProxy())  # pass a proxy, never the object
        print("publish 'hello':", publisher.publish("hello"))
        print("publish 'bad news':", publisher.publish("bad news"))
        client.failed.wait(5)
        print("client saw its callback fail:", repr(client.errors[0]))
        print("listener received:", listener.received)

        gone = pyroact.core.Daemon(host="127.0.0.1", port=0)  # a client that goes away
        gone_listener = Listener()
        gone.connect(gone_listener)
        publisher.register(gone_listener.getProxy())
        gone.closedown()
        print("publish 'later':", publisher.publish("later"))

        listener.got.clear()
        publisher._setOneway("slow_job")
        print("oneway call returned:", publisher.slow_job(listener.getProxy()))
        listener.got.wait(5)
        print("listener received:", listener.received)
        publisher._release()
    finally:
        for daemon in (server, client):
            daemon.shutdown()
        for loop in loops:
            loop.join(5)
        server.closedown()
        client.closedown()
    print("callbacks done")


if __name__ == "__main__":
    main()
