"""Scaling curves and the cost of idle connections (issue 5), one run, bounded counts.

* ``scale-clients``: calls/s of small calls against the number of concurrent clients
  (:data:`CLIENT_COUNTS`, 1 to 64), per pyroact mode, for the raw floor and for Pyro5. Each
  point is a :class:`~benchmarks.test_roundtrip.ClientGang` of that many threads in the pytest
  process, each with its own connection, making :data:`POINT_CALLS` small calls in all (split
  between them); the figure is the best of :data:`POINT_REPEATS` batches after a warm-up batch.
* ``scale-payload``: echo calls/s (and MB/s) against the payload size, 64 B to 16 MiB in steps
  of 4×, per pyroact mode, for the raw floor and for Pyro5 (default configuration, serpent).
  Each point is a fixed number of echoes bounded by bytes (:func:`echo_count`).
* ``idle-1000``: two fresh, identical servers per pyroact mode. The first one's resident memory
  (``/proc/<pid>/status`` ``VmRSS``; in the process mode the parent's, and the parent's plus its
  workers') is read before and after a helper process opened :data:`IDLE` idle connections to
  it (each proxy made one call, so its handshake completed); then a new client's connect +
  first call and its small-call latency are measured on both servers, interleaved, and
  compared (median with the idle connections ÷ median without).

The op each benchmark times is the whole sweep (``rounds=1``); the points are in
``extra_info["curve"]`` (``[x, calls/s]`` pairs; ``"mb_s"`` too for payloads), and the idle
figures in ``extra_info`` (see :func:`test_idle_connections`). With ``--benchmark-disable`` the
counts are cut so the file runs in seconds.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from benchmarks._servers import ServerPool, ServerProcess, raise_fd_limit, start_server
from benchmarks.test_roundtrip import (
    PYROACT,
    TARGETS,
    Client,
    ClientGang,
    Target,
    prepare,
    serve,
    targets,
)

CLIENT_COUNTS = (1, 2, 4, 8, 16, 32, 64)
POINT_CALLS = 384  # small calls per batch, split between the clients of the point
QUICK_POINT_CALLS = 64
POINT_REPEATS = 2
PAYLOAD_SIZES = tuple(64 << (2 * k) for k in range(10))  # 64 B, 256 B, ... 16 MiB
PAYLOAD_BYTES = 8 << 20  # about this many bytes echoed per point (bounded by the counts below)
IDLE = 1000  # idle connections in idle-1000
QUICK_IDLE = 200
IDLE_TARGET_KIB = 64.0  # issue 5: under 64 KiB of server memory per idle connection
SLOWER_TOLERANCE = 1.2  # "not slower": with idle connections at most 1.2× the time without


def size_name(size: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size >> shift} {unit}"
    return f"{size} B"


@cache
def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def echo_count(size: int, quick: bool) -> int:
    """Echoes per payload point: about :data:`PAYLOAD_BYTES` bytes, 3 to 200 echoes."""
    return 1 if quick else max(3, min(200, PAYLOAD_BYTES // size))


# -- calls/s against clients ---------------------------------------------------------------------


def clients_point(target: Target, server: ServerProcess, count: int, total: int,
                  repeats: int) -> float:  # fmt: skip
    """Best calls/s of ``repeats`` batches of ``count`` clients making ``total`` calls in all."""
    per_client = max(1, total // count)
    gang = ClientGang(target, server, count, per_client)
    try:
        gang.run()  # warm-up batch
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            gang.run()
            best = max(best, count * per_client / (time.perf_counter() - start))
    finally:
        gang.close()
    assert not gang.errors
    return best


@pytest.mark.parametrize("name", targets(*PYROACT, "raw", "pyro5"))
def test_scale_clients(benchmark: Any, server_pool: ServerPool, name: str) -> None:
    target = TARGETS[name]
    server = serve(server_pool, target)
    quick = benchmark.disabled
    total = QUICK_POINT_CALLS if quick else POINT_CALLS
    repeats = 1 if quick else POINT_REPEATS
    curve: list[list[float]] = []

    def sweep() -> None:
        curve.clear()
        for count in CLIENT_COUNTS:
            curve.append([count, clients_point(target, server, count, total, repeats)])

    prepare(benchmark, target, "scale-clients", 1, curve_x="clients", point_calls=total,
            point_repeats=repeats)  # fmt: skip
    benchmark.pedantic(sweep, rounds=1, iterations=1)
    benchmark.extra_info["curve"] = curve
    print(f"\n[scale-clients] {name}: " + ", ".join(f"{int(n)}: {r:.0f}/s" for n, r in curve))
    assert len(curve) == len(CLIENT_COUNTS) and all(rate > 0 for _, rate in curve)


# -- calls/s against payload ---------------------------------------------------------------------


@pytest.mark.parametrize("name", targets(*PYROACT, "raw", "pyro5"))
def test_scale_payload(benchmark: Any, server_pool: ServerPool, name: str) -> None:
    target = TARGETS[name]
    server = serve(server_pool, target)
    quick = benchmark.disabled
    curve: list[list[float]] = []

    def point(size: int) -> list[float]:
        data = payload(size)
        client = target.connect(server, size)  # the raw floor's message size is per connection
        try:
            assert client.echo(data) == data  # connect and warm up
            count = echo_count(size, quick)
            start = time.perf_counter()
            for _ in range(count):
                result = client.echo(data)
            elapsed = time.perf_counter() - start
            assert len(result) == size
        finally:
            client.close()
        return [size, count / elapsed, count * size / elapsed / 1e6]

    def sweep() -> None:
        curve.clear()
        curve.extend(point(size) for size in PAYLOAD_SIZES)

    prepare(benchmark, target, "scale-payload", 1, curve_x="bytes",
            payload_bytes=PAYLOAD_BYTES)  # fmt: skip
    benchmark.pedantic(sweep, rounds=1, iterations=1)
    benchmark.extra_info["curve"] = curve
    print(
        f"\n[scale-payload] {name}: "
        + ", ".join(f"{size_name(int(s))}: {r:.0f}/s {mb:.0f} MB/s" for s, r, mb in curve)
    )
    assert len(curve) == len(PAYLOAD_SIZES)


# -- idle connections ----------------------------------------------------------------------------


def status(pid: int) -> dict[str, int]:
    """``VmRSS`` (KiB) and ``Threads`` of a process, from ``/proc/<pid>/status``."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def server_memory(pid: int) -> dict[str, int]:
    """The server's RSS and threads, and with its child processes (process-mode workers)."""
    main = status(pid)
    tree = [main, *(status(c) for c in children(pid))]
    return {
        "rss_kib": main["VmRSS"],
        "threads": main["Threads"],
        "tree_rss_kib": sum(s["VmRSS"] for s in tree),
        "processes": len(tree),
    }


def settle(pid: int, seconds: float = 0.3, limit: float = 5.0) -> dict[str, int]:
    """Read the server's memory once its RSS stopped moving (it is still accepting otherwise)."""
    deadline = time.monotonic() + limit
    last = server_memory(pid)
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = server_memory(pid)
        if abs(now["tree_rss_kib"] - last["tree_rss_kib"]) < 64:
            return now
        last = now
    return last


def paired_latencies(loaded: Callable[[], Client], base: Callable[[], Client], connects: int,
                     batches: int, calls: int) -> dict[str, list[float]]:  # fmt: skip
    """Seconds per connect + first call + close, and per small call, on two servers, interleaved.

    ``loaded`` connects to the server holding the idle connections, ``base`` to an identical
    server with none; the measurements alternate (ABBA order), so whatever else the machine
    does weighs on both alike.
    """
    out: dict[str, list[float]] = {"connect_idle": [], "connect_base": [], "call_idle": [],
                                   "call_base": []}  # fmt: skip

    def connect_once(factory: Callable[[], Client], key: str) -> None:
        start = time.perf_counter()
        client = factory()
        try:
            client.call()
        finally:
            client.close()
        out[key].append(time.perf_counter() - start)

    pairs = ((loaded, "idle"), (base, "base"))
    for i in range(connects):
        for factory, key in pairs if i % 2 == 0 else pairs[::-1]:
            connect_once(factory, f"connect_{key}")
    clients = {key: factory() for factory, key in pairs}
    try:
        for client in clients.values():
            for _ in range(20):  # connect and warm up
                client.call()
        for i in range(batches):
            for _, key in pairs if i % 2 == 0 else pairs[::-1]:
                client = clients[key]
                start = time.perf_counter()
                for _ in range(calls):
                    client.call()
                out[f"call_{key}"].append((time.perf_counter() - start) / calls)
    finally:
        for client in clients.values():
            client.close()
    return out


@pytest.mark.parametrize("name", targets(*PYROACT))
def test_idle_connections(benchmark: Any, name: str) -> None:
    """Server memory per idle connection, and whether idle connections slow a new client.

    Two identical fresh servers of the mode: ``loaded`` gets :data:`IDLE` idle connections from
    a helper process (``servers/idle_clients.py``), ``base`` none. The loaded server's RSS is
    read before and after; then a new client (the pytest process) measures connect + first
    call and small calls on both servers, interleaved (:func:`paired_latencies`).
    """
    target = TARGETS[name]
    quick = benchmark.disabled
    idle_count = QUICK_IDLE if quick else IDLE
    connects, batches, calls = (6, 2, 20) if quick else (60, 16, 40)
    raise_fd_limit()
    maxconn = ("--maxconn", str(idle_count + 100))  # Pyro 3's default limit is 200
    servers: list[ServerProcess] = []
    info: dict[str, Any] = {}

    def run() -> None:
        loaded = start_server(*target.server, *maxconn)
        servers.append(loaded)
        base = start_server(*target.server, *maxconn)
        servers.append(base)
        for server in (loaded, base):  # the same warm-up on both
            warm = target.connect(server)
            for _ in range(200):
                warm.call()
            warm.close()
        before = settle(loaded.pid)
        holder = start_server("idle_clients.py", loaded.address, str(idle_count), timeout=120)
        servers.append(holder)
        after = settle(loaded.pid)
        lat = paired_latencies(lambda: target.connect(loaded), lambda: target.connect(base),
                               connects, batches, calls)  # fmt: skip
        med = {key: statistics.median(values) for key, values in lat.items()}
        info.update(
            idle_connections=idle_count,
            open_seconds=float(holder.engine),
            before=before,
            after=after,
            base_after_warmup=server_memory(base.pid),
            kib_per_connection=(after["rss_kib"] - before["rss_kib"]) / idle_count,
            tree_kib_per_connection=(after["tree_rss_kib"] - before["tree_rss_kib"]) / idle_count,
            threads_added=after["threads"] - before["threads"],
            connect_base_s=med["connect_base"],
            connect_idle_s=med["connect_idle"],
            call_base_s=med["call_base"],
            call_idle_s=med["call_idle"],
            connect_ratio=med["connect_idle"] / med["connect_base"],
            call_ratio=med["call_idle"] / med["call_base"],
            samples={"connects": connects, "call_batches": batches, "calls_per_batch": calls},
            target_kib=IDLE_TARGET_KIB,
            slower_tolerance=SLOWER_TOLERANCE,
        )

    prepare(benchmark, target, "idle-1000", 1, floor=False)
    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        while servers:
            servers.pop().stop()  # the holder first: it closes its connections
    benchmark.extra_info.update(info)
    print(
        f"\n[idle-1000] {name}: {info['kib_per_connection']:.1f} KiB per idle connection "
        f"(server RSS {info['before']['rss_kib']} -> {info['after']['rss_kib']} KiB for "
        f"{idle_count}; with workers {info['tree_kib_per_connection']:.1f} KiB), threads +"
        f"{info['threads_added']}; with them open: connect+call {info['connect_ratio']:.2f}×, "
        f"small call {info['call_ratio']:.2f}× the time on an identical server without"
    )
    assert info["after"]["rss_kib"] > info["before"]["rss_kib"]
