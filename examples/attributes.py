"""Nested attribute access: remote attributes travel by value.

``proxy.sub1`` is fetched from the server and rebuilt on the client, so ``proxy.sub1.sub2``
reads (and writes!) a *local copy*. Only attributes of the proxied object itself are remote.
Use getter/setter methods for nested state.
"""

from __future__ import annotations

import threading

import pyroact.core


class Sub2:
    def __init__(self) -> None:
        self.value = "original"


class Sub1:
    def __init__(self) -> None:
        self.sub2 = Sub2()


class Thing(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.name = "thing"
        self.sub1 = Sub1()
        self.somedict = {f"key{i}": i for i in range(1000)}

    def getSub2(self) -> str:
        return self.sub1.sub2.value

    def setSub2(self, value: str) -> None:
        self.sub1.sub2.value = value

    def lookup(self, key: str) -> int:
        return self.somedict[key]


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    thing = Thing()
    uri = daemon.connect(thing)
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        remote = pyroact.core.getAttrProxyForURI(uri)  # attribute access needs this proxy
        print("remote.name:", remote.name)
        remote.name = "renamed"  # a direct attribute of the object: remote write
        print("server-side name after remote.name = ...:", thing.name)

        local_sub1 = remote.sub1  # a local copy of the server's sub1
        local_sub1.sub2.value = "changed locally"
        remote.sub1.sub2.value = "also lost"  # changes a temporary local copy
        print("server-side sub2 after nested assignment:", thing.sub1.sub2.value)

        remote.setSub2("changed remotely")  # the setter runs on the server
        print("server-side sub2 after setSub2():", remote.getSub2())

        # remote.somedict["key7"] transfers all 1000 entries; a getter transfers one int.
        print("somedict lookup via attribute:", remote.somedict["key7"])
        print("somedict lookup via getter:", remote.lookup("key7"))

        plain = pyroact.core.getProxyForURI(uri)
        print("a regular proxy returns a method stub for attributes:", type(plain.name).__name__)
        remote._release()
        plain._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("attributes done")


if __name__ == "__main__":
    main()
