"""The README demo: a name server, a process-mode server, and a client that finds it by name.

1. A name server runs on its embedded defaults (persistent, on an SQLite file in
   ``PYRO_STORAGE``, here a temporary folder).
2. A server runs in the process-pool mode: its parent process accepts and routes calls, and the
   ``Primes`` object is replicated on one worker process per CPU. It registers as ``primes``.
3. The client resolves ``PYRONAME://…/primes`` through the name server and calls the object
   from four threads at once, so the calls run on every core.

Run: python examples/demo.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pyroact.core
import pyroact.naming  # noqa: F401  (makes PYRONAME:// URIs resolvable)
import pyroact.wire

SERVER = r"""
import os
import pyroact.core
import pyroact.naming


class Primes(pyroact.core.ObjBase):
    def count_below(self, limit):
        sieve = bytearray([1]) * limit
        sieve[0:2] = b"\0\0"
        for i in range(2, int(limit ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytes(len(sieve[i * i :: i]))
        return sum(sieve)

    def whoami(self):
        host, port = self.getLocalStorage().caller.addr
        return "worker pid %d, serving %s:%d" % (os.getpid(), host, port)


if __name__ == "__main__":
    daemon = pyroact.core.Daemon(mode="process")
    daemon.useNameServer(pyroact.naming.NameServerLocator().getNS())
    daemon.connect(Primes, "primes", placement="replicated")
    print("ready", flush=True)
    daemon.requestLoop()
"""


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


def read_until(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    for _ in range(50):
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"{process.args!r} did not print {prefix!r}")


def main() -> None:
    storage = tempfile.mkdtemp(prefix="pyroact-demo-")
    env = dict(os.environ, PYRO_STORAGE=storage)
    ns = start([sys.executable, "-m", "pyroact.nameserver", "-p", "0", "-x"], env)
    processes = [ns]
    try:
        ns_uri = pyroact.core.PyroURI(read_until(ns, "URI is: "))
        env.update(PYRO_NS_HOSTNAME="127.0.0.1", PYRO_NS_PORT=str(ns_uri.port))
        server = start([sys.executable, "-c", SERVER], env)
        processes.append(server)
        read_until(server, "ready")

        uri = f"PYRONAME://127.0.0.1:{ns_uri.port}/primes"
        proxies = [pyroact.core.getProxyForURI(uri) for _ in range(4)]
        start_time = time.perf_counter()
        with ThreadPoolExecutor(len(proxies)) as pool:
            counts = list(pool.map(lambda p: p.count_below(1_000_000), proxies))
        elapsed = time.perf_counter() - start_time
        print(f"wire engine: {pyroact.wire.IMPLEMENTATION}")
        print(f"name server at {ns_uri}, database in {storage}")
        print(f"'primes' resolved to {proxies[0].URI} ({proxies[0].whoami()})")
        print(f"primes below 1,000,000: {counts[0]} (4 parallel calls: {elapsed * 1000:.1f} ms)")
        for proxy in proxies:
            proxy._release()
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
