"""Remotely accessing the daemon: its internal object at INTERNAL_DAEMON_GUID.

Every daemon serves an internal object with a fixed id. Only ``getRegistered()`` and
``ResolvePYROLOC(name)`` are reachable remotely; ``PYROLOC://`` URIs use the latter.
"""

from __future__ import annotations

import threading

import pyroact.constants
import pyroact.core


class Thing(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)

    def hello(self) -> str:
        return "hello from thing"


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    thing = Thing()
    daemon.connect(thing, "my.thing")
    daemon.connect(Thing())  # a transient, unnamed object
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        d = pyroact.core.PyroURI(
            host="127.0.0.1", port=daemon.port, objectID=pyroact.constants.INTERNAL_DAEMON_GUID
        ).getProxy()
        registered = d.getRegistered()
        print("registered objects:", len(registered))
        for guid, name in sorted(registered.items(), key=lambda item: str(item[1])):
            print(f"  {guid} -> {name}")
        guid = d.ResolvePYROLOC("my.thing")
        print("ResolvePYROLOC('my.thing') is thing's GUID:", guid == thing.GUID())
        try:
            d.setGUID("0" * 32)  # an ObjBase management method
        except AttributeError as exc:
            print("management methods are refused:", exc)

        loc = pyroact.core.getProxyForURI(f"PYROLOC://127.0.0.1:{daemon.port}/my.thing")
        print(loc.hello())
        print("PYROLOC proxy now has URI", loc.URI.protocol, "and objectID", loc.objectID)
        d._release()
        loc._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("daemon_access done")


if __name__ == "__main__":
    main()
