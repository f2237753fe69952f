"""DNS names, IP addresses and NAT: the Daemon's host and publishhost, PYRO_DNS_URI.

``host`` is the address the daemon binds; ``publishhost`` is the host put into the URIs it
hands out (for a NAT gateway with port forwarding). URIs normally hold IP addresses; with
``PYRO_DNS_URI`` they keep the host name, which is looked up again at every connect.
All traffic here goes to 127.0.0.1 only.
"""

from __future__ import annotations

import threading

import pyroact
import pyroact.core
from pyroact.errors import DaemonError


class Echo(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)

    def echo(self, text: str) -> str:
        return text


def main() -> None:
    print("default bind host (PYRO_HOST):", pyroact.config.PYRO_HOST)
    try:
        pyroact.core.Daemon(host="0.0.0.0", port=0)
    except DaemonError as exc:
        print("public bind refused:", str(exc).split(":")[0])

    # Bind on 127.0.0.1 but publish the name "localhost" (think: the NAT gateway's name).
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0, publishhost="localhost")
    echo = Echo()
    uri = daemon.connect(echo)
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        print("daemon.hostname:", daemon.hostname)
        print("URI with PYRO_DNS_URI off (resolved to an IP):", uri)
        pyroact.config.PYRO_DNS_URI = True
        try:
            print("URI with PYRO_DNS_URI on (host name kept):", echo.getProxy().URI)
        finally:
            pyroact.config.PYRO_DNS_URI = False
        proxy = pyroact.core.getProxyForURI(uri)  # the IP form: connects to 127.0.0.1
        print("call through the published URI:", proxy.echo("hello"))
        proxy._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("publishhost done")


if __name__ == "__main__":
    main()
