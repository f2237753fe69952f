"""Automatic rebinding: the client recovers after the server process is killed and restarted.

The server runs in a child process (this same script with ``--server PORT``). It uses a fixed
object id (``setGUID``) and a fixed port, so the restarted server serves the object under the
same ``PYRO://`` URI. The client notices ``ConnectionClosedError`` and calls
``proxy.adapter.rebindURI(tries, wait)``. The call that failed is not retried automatically
(at-most-once semantics): the client repeats it itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pyroact.core
from pyroact.errors import ConnectionClosedError, ProtocolError

FIXED_GUID = "0123456789abcdef0123456789abcdef"


class Counter(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.setGUID(FIXED_GUID)  # fixed object id: the URI survives a restart

    def ping(self, n: int) -> str:
        return f"pong {n}"


def run_server(port: int) -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=port, norange=1)
    uri = daemon.connect(Counter(), "counter")
    print(uri, flush=True)  # tells the parent that the server is ready
    try:
        daemon.requestLoop(timeout=0.1)
    finally:
        daemon.closedown()


def start_server(port: int) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--server", str(port)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    uri = child.stdout.readline().strip()
    if not uri:
        child.kill()
        raise SystemExit("the server did not start")
    return child, uri


def pick_port() -> int:
    # Ask the OS for a free loopback port once; both server runs then use it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    port = pick_port()
    server, uri = start_server(port)
    print("server URI:", uri)
    proxy = pyroact.core.getProxyForURI(uri)
    try:
        print(proxy.ping(1))
        server.kill()
        server.wait(10)
        print("server killed")
        try:
            proxy.ping(2)
        except (ConnectionClosedError, ProtocolError) as exc:
            print("call failed:", type(exc).__name__)
        server, uri2 = start_server(port)
        print("server restarted, same URI:", uri2 == uri)
        proxy.adapter.rebindURI(tries=50, wait=0.1)
        print("rebound;", proxy.ping(2))  # repeat the lost call ourselves
        proxy._release()
    finally:
        server.kill()
        server.wait(10)
    print("autorebind done")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--server":
        run_server(int(sys.argv[2]))
    else:
        main()
