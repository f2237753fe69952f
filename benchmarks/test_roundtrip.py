"""Round trips over 127.0.0.1: pyroact's server modes beside the raw-socket floor, Pyro5 and RPyC.

Every server runs in its own process (``benchmarks/servers/``), the client in the pytest process.
Each workload is one benchmark group, so the report (``python -m benchmarks.report``) puts the
pyroact modes (single, threaded, process), the floor and the peers side by side:

* ``call-small``: ``add(1, 2)``, one synchronous call per op (floor: a 60-byte ping-pong);
* ``oneway``: 100 oneway ``notify`` calls and one synchronous ``count()`` per op;
* ``echo-1KiB`` ... ``echo-16MiB``: ``echo(data)`` of that many bytes (floor: a plain echo);
* ``clients-8``, ``clients-64``: 8 (64) threads, each with its own proxy, making
  ``CLIENT_CALLS[n]`` small calls each; one op is the whole batch, so ``extra_info["calls"]``
  gives the aggregate calls/s;
* ``connect``: a new proxy, its first small call, and closing it;
* ``connect-ident``: the same against a server that requires a passphrase
  (``setAllowedIdentifications(["secret"])``; the client ``_setIdentification("secret")``); for
  Pyro5, which has no HMAC key any more, a daemon whose ``validateHandshake`` checks the
  proxy's ``_pyroHandshake``. The floor row is the plain raw connect.

The scaling curves and the idle-connection workload are in ``test_scaling.py``.

In the process mode (``os.cpu_count()`` workers) the object is *replicated*: each call goes to the
least-loaded worker. The oneway workload is the exception: it uses the server's *pinned*
``bench-pinned`` object, because ``count()`` must see every ``notify`` and a replicated object
has one counter per worker.

Counts are small and fixed so the file runs in well under two minutes (and in seconds with
``--benchmark-disable``). Pyro5 and RPyC are optional: their targets skip when not importable.
"""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

import pyroact.wire
from benchmarks._servers import ServerPool, ServerProcess

ENGINE = pyroact.wire.IMPLEMENTATION
SMALL_SIZE = 60  # bytes of the raw ping-pong: about a pyroact small-call frame
ONEWAY_BURST = 100
CLIENT_CALLS = {8: 50, 64: 10}  # small calls per client per op in clients-8 and clients-64
PASSPHRASE = "secret"
ECHO_SIZES = {"1KiB": 1 << 10, "64KiB": 64 << 10, "1MiB": 1 << 20, "16MiB": 16 << 20}
# (rounds, iterations) per echo size; kept small so slow peers stay bounded.
ECHO_COUNTS = {"1KiB": (15, 40), "64KiB": (15, 10), "1MiB": (10, 3), "16MiB": (4, 1)}


class Client(Protocol):
    """One connection to a benchmark server, whatever the runtime."""

    def call(self) -> Any:
        """One small synchronous call (``add(1, 2)``; for the raw floor, a 60-byte ping-pong)."""

    def echo(self, data: bytes) -> Any:
        """Send ``data`` and return what comes back."""

    def oneway_burst(self, count: int) -> int:
        """``count`` oneway calls, then one synchronous call (returns its result)."""

    def close(self) -> None:
        """Close the connection."""


# -- clients -----------------------------------------------------------------------------------


class PyroactClient:
    """A ``pyroact.core`` proxy (connects on the first call, as users see it).

    ``name``: another object of the server, by ``PYROLOC`` (resolved once, on connect).
    """

    def __init__(self, server: ServerProcess, size: int, name: str | None = None,
                 ident: str | None = None) -> None:  # fmt: skip
        from pyroact.core import getProxyForURI

        if name is None:
            uri = server.address
        else:
            host, port = server.host_port
            uri = f"PYROLOC://{host}:{port}/{name}"
        self.proxy = getProxyForURI(uri)
        self.proxy._setOneway("notify")
        if ident is not None:
            self.proxy._setIdentification(ident)

    def call(self) -> Any:
        return self.proxy.add(1, 2)

    def echo(self, data: bytes) -> Any:
        return self.proxy.echo(data)

    def oneway_burst(self, count: int) -> int:
        notify = self.proxy.notify
        for i in range(count):
            notify(i)
        return int(self.proxy.count())

    def close(self) -> None:
        self.proxy._release()


class RawClient:
    """The floor: a plain socket; each message is ``size`` bytes, echoed by the server."""

    def __init__(self, server: ServerProcess, size: int) -> None:
        self.sock = socket.create_connection(server.host_port)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(struct.pack("!I", size))
        self.message = b"x" * size
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)

    def _roundtrip(self, data: bytes) -> bytearray:
        sock, view = self.sock, self.view
        sock.sendall(data)
        got, size = 0, len(view)
        while got < size:
            n = sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("raw server closed the connection")
            got += n
        return self.buf

    def call(self) -> Any:
        return self._roundtrip(self.message)

    def echo(self, data: bytes) -> Any:
        return self._roundtrip(data)

    def oneway_burst(self, count: int) -> int:  # pragma: no cover - no oneway floor
        raise NotImplementedError

    def close(self) -> None:
        self.view.release()
        self.sock.close()


class Pyro5Client:
    """A ``Pyro5.api.Proxy`` with Pyro5's default configuration, or another serializer."""

    def __init__(self, server: ServerProcess, size: int, serializer: str | None = None,
                 handshake: str | None = None) -> None:  # fmt: skip
        import Pyro5.api

        self.proxy = Pyro5.api.Proxy(server.address)
        if serializer is not None:
            self.proxy._pyroSerializer = serializer
        if handshake is not None:
            self.proxy._pyroHandshake = handshake

    def call(self) -> Any:
        return self.proxy.add(1, 2)

    def echo(self, data: bytes) -> Any:
        result = self.proxy.echo(data)
        if isinstance(result, dict):  # serpent sends bytes as base64; users convert back
            import serpent

            result = serpent.tobytes(result)
        return result

    def oneway_burst(self, count: int) -> int:
        notify = self.proxy.notify
        for i in range(count):
            notify(i)
        return int(self.proxy.count())

    def close(self) -> None:
        self.proxy._pyroRelease()


class RpycClient:
    """An RPyC service connection; the remote methods are looked up once (one round trip each)."""

    def __init__(self, server: ServerProcess, size: int) -> None:
        import rpyc

        host, port = server.host_port
        self.conn = rpyc.connect(host, port)
        root = self.conn.root
        self._add = root.add
        self._echo = root.echo

    def call(self) -> Any:
        return self._add(1, 2)

    def echo(self, data: bytes) -> Any:
        return self._echo(data)

    def oneway_burst(self, count: int) -> int:  # pragma: no cover - not measured
        raise NotImplementedError

    def close(self) -> None:
        self.conn.close()


# -- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One runtime and configuration under test."""

    name: str
    impl: str  # "pyroact", "raw", "pyro5" or "rpyc"
    server: tuple[str, ...]  # the script in benchmarks/servers/ and its arguments
    mode: str
    serializer: str
    factory: Callable[[ServerProcess, int], Client]
    module: str | None = None  # the optional package it needs
    oneway_object: str | None = None  # the object the oneway workload calls, if not the default

    def connect(self, server: ServerProcess, size: int = SMALL_SIZE) -> Client:
        return self.factory(server, size)

    def connect_oneway(self, server: ServerProcess) -> Client:
        """A client of the object the oneway workload calls (it must count every call)."""
        if self.oneway_object is None:
            return self.connect(server)
        return PyroactClient(server, SMALL_SIZE, self.oneway_object)

    def extra_info(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "impl": self.impl,
            "mode": self.mode,
            "serializer": self.serializer,
            "engine": ENGINE if self.impl == "pyroact" else "-",
            "pyroact_engine": ENGINE,
            "floor": self.impl == "raw",
            "pyro5_default": self.name == "pyro5",
        }


TARGETS = {
    t.name: t
    for t in (
        Target("pyroact-single", "pyroact", ("pyroact_server.py", "single"), "single", "pickle",
               PyroactClient),
        Target("pyroact-threaded", "pyroact", ("pyroact_server.py", "threaded"), "threaded",
               "pickle", PyroactClient),
        Target("pyroact-process", "pyroact", ("pyroact_server.py", "process"), "process",
               "pickle", PyroactClient, oneway_object="bench-pinned"),
        Target("raw", "raw", ("raw_server.py",), "thread/conn", "-", RawClient),
        Target("pyro5", "pyro5", ("pyro5_server.py",), "thread", "serpent",
               lambda s, n: Pyro5Client(s, n), "Pyro5"),
        Target("pyro5-marshal", "pyro5", ("pyro5_server.py",), "thread", "marshal",
               lambda s, n: Pyro5Client(s, n, "marshal"), "Pyro5"),
        Target("rpyc", "rpyc", ("rpyc_server.py",), "thread/conn", "brine", RpycClient, "rpyc"),
    )
}  # fmt: skip


PYROACT = ("pyroact-single", "pyroact-threaded", "pyroact-process")  # every workload runs all three


def targets(*names: str) -> list[Any]:
    """``pytest.param`` per target, skipped when its optional package is not importable."""
    params = []
    for name in names:
        target = TARGETS[name]
        missing = target.module is not None and importlib.util.find_spec(target.module) is None
        mark = pytest.mark.skipif(missing, reason=f"{target.module} is not installed")
        params.append(pytest.param(name, id=name, marks=mark))
    return params


def serve(pool: ServerPool, target: Target) -> ServerProcess:
    server = pool.get(*target.server)
    if target.impl == "pyroact":
        assert server.engine == ENGINE, f"server engine {server.engine}, client engine {ENGINE}"
    return server


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opens; every one is closed afterwards."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def prepare(benchmark: Any, target: Target, group: str, calls: int, **extra: Any) -> None:
    """Name the group and record what the report needs (``calls``: round trips in one op)."""
    benchmark.group = group
    load = os.getloadavg()[0]  # other work on the machine makes figures noisy: keep the load
    benchmark.extra_info.update(target.extra_info(), calls=calls, loadavg_1m=load, **extra)


# -- workloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", targets(*PYROACT, "raw", "pyro5", "pyro5-marshal", "rpyc"))
def test_call_small(benchmark: Any, server_pool: ServerPool, clients: list[Client],
                    name: str) -> None:  # fmt: skip
    target = TARGETS[name]
    client = target.connect(serve(server_pool, target))
    clients.append(client)
    first = client.call()
    assert first == 3 or (target.impl == "raw" and len(first) == SMALL_SIZE)
    prepare(benchmark, target, "call-small", 1)
    benchmark.pedantic(client.call, rounds=15, iterations=100, warmup_rounds=1)


PAIRED_GROUP = "call-small-paired"


def test_call_small_process_against_threaded(benchmark: Any, server_pool: ServerPool,
                                             clients: list[Client]) -> None:  # fmt: skip
    """The process mode's small call against the threaded mode's, in interleaved batches.

    ``call-small`` times each mode in its own block of rounds, seconds apart, and on this
    machine the threaded figure alone moves by a third between blocks; here batches of the two
    modes alternate (ABBA), so both see the same machine. ``extra_info["ratio"]`` is the median
    process batch time over the median threaded batch time.
    """
    quick = benchmark.disabled
    pairs, calls = (2, 20) if quick else (16, 100)
    threaded = TARGETS["pyroact-threaded"].connect(serve(server_pool, TARGETS["pyroact-threaded"]))
    process = TARGETS["pyroact-process"].connect(serve(server_pool, TARGETS["pyroact-process"]))
    clients += [threaded, process]
    times: dict[str, list[float]] = {"threaded": [], "process": []}

    def batch(name: str, client: Client) -> None:
        start = time.perf_counter()
        for _ in range(calls):
            client.call()
        times[name].append((time.perf_counter() - start) / calls)

    def run() -> None:
        for client in (threaded, process):
            for _ in range(calls):  # the same warm-up on both
                client.call()
        for i in range(pairs):
            order = [("threaded", threaded), ("process", process)]
            for name, client in order if i % 2 == 0 else order[::-1]:
                batch(name, client)

    prepare(benchmark, TARGETS["pyroact-process"], PAIRED_GROUP, 1)
    benchmark.pedantic(run, rounds=1, iterations=1)
    median = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    benchmark.extra_info.update(
        threaded_s=median["threaded"],
        process_s=median["process"],
        ratio=median["process"] / median["threaded"],
        batches=pairs,
        calls_per_batch=calls,
    )
    assert all(v > 0 for v in median.values())


@pytest.mark.parametrize("name", targets(*PYROACT, "pyro5", "pyro5-marshal"))
def test_oneway(benchmark: Any, server_pool: ServerPool, clients: list[Client],
                name: str) -> None:  # fmt: skip
    target = TARGETS[name]
    client = target.connect_oneway(serve(server_pool, target))
    clients.append(client)
    start = client.oneway_burst(0)
    sent = 0

    def burst() -> int:
        nonlocal sent
        sent += ONEWAY_BURST
        return client.oneway_burst(ONEWAY_BURST)

    prepare(benchmark, target, "oneway", ONEWAY_BURST + 1, oneway_calls=ONEWAY_BURST)
    benchmark.pedantic(burst, rounds=20, iterations=1, warmup_rounds=1)
    # Every oneway call ran (a threaded server may still be finishing the last few).
    deadline = time.monotonic() + 10
    while (received := client.oneway_burst(0) - start) < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == sent


def echo_params() -> list[Any]:
    """Every echo size for pyroact, the floor and Pyro5; RPyC at 1 MiB only (it is slow)."""
    params = []
    for param in targets(*PYROACT, "raw", "pyro5", "pyro5-marshal"):
        for size_name in ECHO_SIZES:
            params.append(pytest.param(*param.values, size_name, id=f"{param.id}-{size_name}",
                                       marks=param.marks))  # fmt: skip
    for param in targets("rpyc"):
        params.append(pytest.param(*param.values, "1MiB", id=f"{param.id}-1MiB", marks=param.marks))
    return params


@pytest.mark.parametrize(("name", "size_name"), echo_params())
def test_echo(benchmark: Any, server_pool: ServerPool, clients: list[Client], name: str,
              size_name: str) -> None:  # fmt: skip
    target = TARGETS[name]
    size = ECHO_SIZES[size_name]
    data = random.Random(size).randbytes(size)
    client = target.connect(serve(server_pool, target), size)
    clients.append(client)
    assert client.echo(data) == data
    rounds, iterations = ECHO_COUNTS[size_name]
    prepare(benchmark, target, f"echo-{size_name}", 1, bytes=size)
    result = benchmark.pedantic(
        client.echo, args=(data,), rounds=rounds, iterations=iterations, warmup_rounds=1
    )
    assert len(result) == size


class ClientGang:
    """``count`` threads, each with its own client made in that thread, calling in lockstep.

    :meth:`run` releases every thread for ``calls`` small calls and returns when all are done.
    """

    def __init__(self, target: Target, server: ServerProcess, count: int, calls: int) -> None:
        self.calls = calls
        self.errors: list[BaseException] = []
        self._stop = False
        self._start = threading.Barrier(count + 1, timeout=60)
        self._done = threading.Barrier(count + 1, timeout=60)
        ready = threading.Barrier(count + 1, timeout=60)
        self._threads = [
            threading.Thread(target=self._work, args=(target, server, ready), daemon=True)
            for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()
        ready.wait()
        self._check()

    def _work(self, target: Target, server: ServerProcess, ready: threading.Barrier) -> None:
        client: Client | None = None
        try:
            client = target.connect(server)
            client.call()
            ready.wait()
            while True:
                self._start.wait()
                if self._stop:
                    return
                for _ in range(self.calls):
                    client.call()
                self._done.wait()
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:
            self.errors.append(exc)
            for barrier in (ready, self._start, self._done):
                barrier.abort()
        finally:
            if client is not None:
                client.close()

    def _check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def run(self) -> None:
        try:
            self._start.wait()
            self._done.wait()
        except threading.BrokenBarrierError:
            self._check()
            raise

    def close(self) -> None:
        self._stop = True
        if not self._start.broken:
            try:
                self._start.wait()
            except threading.BrokenBarrierError:
                pass
        for thread in self._threads:
            thread.join(timeout=30)


def gang_params() -> list[Any]:
    params = []
    for count in CLIENT_CALLS:
        for param in targets(*PYROACT, "raw", "pyro5"):
            params.append(pytest.param(*param.values, count, id=f"{param.id}-{count}",
                                       marks=param.marks))  # fmt: skip
    return params


@pytest.mark.parametrize(("name", "count"), gang_params())
def test_clients(benchmark: Any, server_pool: ServerPool, name: str, count: int) -> None:
    target = TARGETS[name]
    calls = CLIENT_CALLS[count]
    gang = ClientGang(target, serve(server_pool, target), count, calls)
    try:
        prepare(benchmark, target, f"clients-{count}", count * calls, clients=count)
        benchmark.pedantic(gang.run, rounds=6, iterations=1, warmup_rounds=1)
    finally:
        gang.close()
    assert not gang.errors


@pytest.mark.parametrize("name", targets(*PYROACT, "raw", "pyro5", "rpyc"))
def test_connect(benchmark: Any, server_pool: ServerPool, name: str) -> None:
    target = TARGETS[name]
    server = serve(server_pool, target)

    def connect_and_call() -> Any:
        client = target.connect(server)
        try:
            return client.call()
        finally:
            client.close()

    prepare(benchmark, target, "connect", 1)
    first = benchmark.pedantic(connect_and_call, rounds=25, iterations=1, warmup_rounds=1)
    assert first == 3 or (target.impl == "raw" and len(first) == SMALL_SIZE)


def ident_client(target: Target) -> tuple[tuple[str, ...], Callable[[ServerProcess], Client]]:
    """The server (script and arguments) and client factory of ``target`` with a passphrase."""
    if target.impl == "pyroact":
        return (*target.server, "--ident", PASSPHRASE), lambda s: PyroactClient(
            s, SMALL_SIZE, ident=PASSPHRASE
        )
    if target.impl == "pyro5":
        return (*target.server, "--ident", PASSPHRASE), lambda s: Pyro5Client(
            s, SMALL_SIZE, handshake=PASSPHRASE
        )
    return target.server, target.connect  # the floor: no identification


@pytest.mark.parametrize("name", targets(*PYROACT, "raw", "pyro5"))
def test_connect_ident(benchmark: Any, server_pool: ServerPool, name: str) -> None:
    target = TARGETS[name]
    script, factory = ident_client(target)
    server = server_pool.get(*script)

    def connect_and_call() -> Any:
        client = factory(server)
        try:
            return client.call()
        finally:
            client.close()

    prepare(benchmark, target, "connect-ident", 1,
            identification=target.impl in ("pyroact", "pyro5"))  # fmt: skip
    first = benchmark.pedantic(connect_and_call, rounds=25, iterations=1, warmup_rounds=1)
    assert first == 3 or (target.impl == "raw" and len(first) == SMALL_SIZE)
    if target.impl == "pyroact":  # the passphrase is really required
        from pyroact.errors import ConnectionDeniedError

        refused = target.connect(server)
        try:
            with pytest.raises(ConnectionDeniedError):
                refused.call()
        finally:
            refused.close()
