"""The README demo: a server process and a client calling it.

The server runs in a child process in the process-pool mode: a parent process accepts and
routes, and the object is replicated on one worker process per CPU. The client finds the object
through a PYROLOC URI and calls it from several threads, so the calls run on every core.
Run: python examples/demo.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pyroact.core
import pyroact.wire

SERVER = r"""
import pyroact.core

class Primes(pyroact.core.ObjBase):
    def count_below(self, limit):
        sieve = bytearray([1]) * limit
        sieve[0:2] = b"\0\0"
        for i in range(2, int(limit ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytes(len(sieve[i * i :: i]))
        return sum(sieve)

    def whoami(self):
        import os
        host, port = self.getLocalStorage().caller.addr
        return "worker pid %d, serving %s:%d" % (os.getpid(), host, port)

if __name__ == "__main__":
    daemon = pyroact.core.Daemon(mode="process")
    daemon.connect(Primes, "demo.primes", placement="replicated")
    print(daemon.port, flush=True)
    daemon.requestLoop()

"""


def main() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        uri = f"PYROLOC://127.0.0.1:{port}/demo.primes"
        proxies = [pyroact.core.getProxyForURI(uri) for _ in range(4)]
        start = time.perf_counter()
        with ThreadPoolExecutor(len(proxies)) as pool:
            counts = list(pool.map(lambda p: p.count_below(1_000_000), proxies))
        elapsed = time.perf_counter() - start
        print(f"wire engine: {pyroact.wire.IMPLEMENTATION}")
        print(f"server at {proxies[0].URI} ({proxies[0].whoami()})")
        print(f"primes below 1,000,000: {counts[0]} (4 parallel calls: {elapsed * 1000:.1f} ms)")
        for proxy in proxies:
            proxy._release()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
