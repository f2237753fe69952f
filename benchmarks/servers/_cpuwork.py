"""The 5 ms CPU workload: one burn function for the servers, the clients and the raw capacity.

Everything that burns CPU in ``benchmarks/test_cpu.py`` calls :func:`burn` from this module, so
the RPC servers and the raw-capacity processes run exactly the same loop. It is a
deterministic pure-Python integer loop of :data:`BURN_ITERATIONS` iterations, calibrated once on
the 2-core benchmark machine to take about 5 ms (``python _cpuwork.py calibrate`` prints the
time per burn here; change the constant, not the loop, if the machine changes).

Run as a script it is also the load generator (each a separate process, so the pytest process
burns no CPU of its own)::

    python _cpuwork.py raw                     # loop burn() locally, no RPC
    python _cpuwork.py pyroact URI             # loop proxy.burn() (a pyroact proxy)
    python _cpuwork.py pyro5 URI               # loop proxy.burn() (a Pyro5 proxy)
    python _cpuwork.py socket HOST:PORT        # one byte out, 8 back (burn_socket_server.py)
    python _cpuwork.py calibrate

A load generator connects (and makes one warm-up call), prints ``READY``, waits for a line
``GO <seconds>`` on stdin, then runs for that window and prints ``DONE <count> <elapsed>``:
``count`` is the number of burns (or calls) that *completed* inside the window; the one that
straddles the deadline is not counted, for RPC and raw alike. It exits on stdin EOF.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

BURN_ITERATIONS = 70_000  # ~5 ms of CPython 3.11 on the benchmark machine's Xeon vCPU


def burn(iterations: int = BURN_ITERATIONS) -> int:
    """Burn CPU in pure Python (holds the GIL throughout) and return a checksum."""
    x = 0
    for i in range(iterations):
        x = (x + i * 7) % 1_000_003
    return x


EXPECTED = burn()  # what every call must return (checked by the load generators)


def calibrate(repeats: int = 50) -> float:
    """Median seconds per :func:`burn` in this process."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        burn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _socket_caller(address: str | None) -> tuple[Callable[[], Any], Callable[[], None]]:
    import socket
    import struct

    if address is None:
        raise SystemExit("the socket load generator needs HOST:PORT")
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reply = struct.Struct("!Q")

    def call() -> int:
        sock.sendall(b"b")
        data = b""
        while len(data) < reply.size:
            chunk = sock.recv(reply.size - len(data))
            if not chunk:
                raise ConnectionError("the burn socket server closed the connection")
            data += chunk
        return int(reply.unpack(data)[0])

    return call, sock.close


def _caller(kind: str, uri: str | None) -> tuple[Callable[[], Any], Callable[[], None]]:
    if kind == "raw":
        return burn, lambda: None
    if kind == "pyroact":
        from pyroact.core import getProxyForURI

        proxy = getProxyForURI(uri)
        return proxy.burn, proxy._release
    if kind == "socket":
        return _socket_caller(uri)
    if kind == "pyro5":
        import Pyro5.api

        p5 = Pyro5.api.Proxy(uri)
        return p5.burn, p5._pyroRelease
    raise SystemExit(f"unknown load generator {kind!r}")


def run_window(call: Callable[[], Any], seconds: float) -> tuple[int, float]:
    """Call ``call`` until ``seconds`` have passed; (calls completed in the window, elapsed)."""
    count = 0
    start = time.monotonic()
    deadline = start + seconds
    while True:
        result = call()
        if time.monotonic() > deadline:
            break
        if result != EXPECTED:
            raise AssertionError(f"burn returned {result!r}, expected {EXPECTED!r}")
        count += 1
    return count, time.monotonic() - start


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "calibrate":
        per = calibrate()
        print(f"{per * 1e3:.2f} ms per burn of {BURN_ITERATIONS} iterations")
        return 0
    call, close = _caller(kind, argv[1] if len(argv) > 1 else None)
    call()  # connect and warm up
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] != "GO":
            break
        count, elapsed = run_window(call, float(words[1]))
        out.write(f"DONE {count} {elapsed:.6f}\n")
        out.flush()
    close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
