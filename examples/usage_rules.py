"""Usage rules: augmented assignment, delegation, disconnect, and other guidelines.

* ``remote += 50`` needs ``__iadd__`` on the server class returning ``self.getAttrProxy()``
  (the in-place result must be a proxy, not a copy). pyroact forwards only the numeric and
  container dunders the class itself defines.
* Delegation: a plain ``ObjBase()`` with ``delegateTo(impl)`` serves a class that knows
  nothing about pyroact.
* ``daemon.disconnect(obj_or_guid)`` stops serving an object.
* Everything that crosses the wire must be picklable.
"""

from __future__ import annotations

import socket
import threading

import pyroact.core
import pyroact.errors


class Number(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)  # rule: always call the base __init__
        self.value = 0

    def init(self, value: int) -> None:  # rule: no remote __init__, use a method
        self.value = value

    def __iadd__(self, value: int) -> pyroact.core.DynamicProxyWithAttrs:
        self.value += value
        return self.getAttrProxy()

    def openSocket(self) -> object:
        return socket.socket()  # a socket cannot be pickled, so it cannot be returned


class Calculator:
    """Knows nothing about pyroact."""

    def add(self, a: int, b: int) -> int:
        return a + b


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    number = Number()
    number_uri = daemon.connect(number)
    impl = Calculator()
    obj = pyroact.core.ObjBase()
    obj.delegateTo(impl)
    calc_uri = daemon.connect(obj, "calculator")
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        remote = pyroact.core.getAttrProxyForURI(number_uri)
        remote.init(10)
        remote += 50
        print("after remote += 50:", remote.value, "still a proxy:", type(remote).__name__)
        try:
            remote.openSocket()
        except pyroact.errors.SerializeError as exc:
            print("unpicklable result:", type(exc).__name__)
        print("a proxy is always true:", bool(remote))

        calc = pyroact.core.getProxyForURI(calc_uri)
        print("delegated add(2, 3):", calc.add(2, 3))

        daemon.disconnect(number)  # or daemon.disconnect(number.GUID())
        try:
            remote.init(1)
        except pyroact.errors.ProtocolError as exc:
            print("after disconnect:", str(exc).split(" '")[0])
        for p in (remote, calc):
            p._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("usage_rules done")


if __name__ == "__main__":
    main()
