"""Holds idle pyroact connections open: ``python idle_clients.py URI COUNT``.

Opens ``COUNT`` proxies to ``URI``, each making one call (so its handshake completed), prints
``READY <count> <seconds it took>`` (the readiness line of ``_common.announce``, with the count in
place of an address) and then sits idle until stdin reaches end of file. The soft descriptor
limit is raised to the hard one first: 1,000 connections need more than the usual 1,024.

The idle-connection workload (``benchmarks/test_scaling.py``) holds them in this separate
process, so the client whose latency it measures is not the one holding 1,000 proxies.
"""

from __future__ import annotations

import sys
import time

from _common import announce, raise_fd_limit

from pyroact.core import getProxyForURI


def main() -> None:
    uri, count = sys.argv[1], int(sys.argv[2])
    raise_fd_limit()
    proxies = []
    start = time.perf_counter()
    for _ in range(count):
        proxy = getProxyForURI(uri)
        if proxy.add(1, 2) != 3:
            raise SystemExit("unexpected result")
        proxies.append(proxy)
    announce(str(count), f"{time.perf_counter() - start:.3f}")
    sys.stdin.buffer.read()  # until the parent closes our stdin (or dies)
    for proxy in proxies:
        proxy._release()


if __name__ == "__main__":
    main()
