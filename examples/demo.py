"""The README demo: a server process and a client calling it.

The server runs in a child process (the threaded mode; the process-pool mode arrives with its
own issue), the client finds the object through a PYROLOC URI and calls it.
Run: python examples/demo.py
"""

from __future__ import annotations

import subprocess
import sys
import time

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
        return "served to %s:%d" % self.getLocalStorage().caller.addr

daemon = pyroact.core.Daemon(mode="threaded")
daemon.connect(Primes(), "demo.primes")
print(daemon.port, flush=True)
daemon.requestLoop()
"""


def main() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        primes = pyroact.core.getProxyForURI(f"PYROLOC://127.0.0.1:{port}/demo.primes")
        start = time.perf_counter()
        count = primes.count_below(1_000_000)
        elapsed = time.perf_counter() - start
        print(f"wire engine: {pyroact.wire.IMPLEMENTATION}")
        print(f"server at {primes.URI} ({primes.whoami()})")
        print(f"primes below 1,000,000: {count} (remote call took {elapsed * 1000:.1f} ms)")
        primes._release()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
