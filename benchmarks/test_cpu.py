"""The CPU workload of issue 4: 4 clients calling a method that burns 5 ms of pure-Python CPU.

One benchmark group, ``cpu-5ms``, measured in one run over windows of the same length:

* ``raw-capacity``: the machine's raw parallel capacity for the same work: ``os.cpu_count()``
  plain processes, each looping :func:`_cpuwork.burn` with no RPC; the figure is the burns
  completed in the window, per second, summed over the processes. This, not cores / 5 ms, is
  the ceiling (two vCPUs of a VM can give well under twice one core);
* ``raw-1core``: the same with one process (what one core does), for scale;
* ``pyroact-single``, ``pyroact-threaded``, ``pyroact-process``: 4 client *processes*, each
  with its own proxy to the server's ``burner`` object (an ``ObjBase``, replicated in the
  process mode, whose daemon has ``os.cpu_count()`` workers), each calling ``burn()`` in a loop
  for the window;
* ``pyroact-process-sync``: the same against ``burner-sync``, a replicated
  ``SynchronizedObjBase`` (one call at a time per worker; the others wait in its mailbox);
* ``pyroact-single-per-core``: a reference, not a mode: ``os.cpu_count()`` independent
  single-mode daemons (separate processes), the 4 clients spread over them round-robin. No
  parent process relays anything, so this is what a process design without the parent's hop
  per call could reach on this machine;
* ``socket-floor``: the raw socket floor: ``os.cpu_count()`` plain single-threaded socket
  servers (``servers/burn_socket_server.py``: one byte in, burn, 8 bytes out; no framing, no
  pickle, no dispatch), the 4 clients spread over them. What the least possible RPC reaches
  against the raw capacity on this machine: the wake-ups and the loopback hops alone;
* ``pyro5``: the same against Pyro5's default thread-pool server (skipped without Pyro5).

Every load generator is a separate process (``servers/_cpuwork.py``), started before the
window, connected and warmed up; the window starts when each gets ``GO`` and only calls (or
burns) that completed inside it count. The pytest process only waits. A raw row is the mean of
``ROUNDS`` windows. Every RPC row is measured *interleaved* with the raw capacity, because the
shared VM's speed drifts by up to ±15 % between windows a few seconds apart (two back-to-back
raw windows gave 287 and 388 burns/s): ``raw, rpc, raw, rpc, …, raw`` (``ROUNDS`` RPC windows,
each between two raw windows, every window ``WINDOW`` s). The timed op of each benchmark is
that whole sequence (``rounds=1``); the figures are in ``extra_info``: ``calls_per_s`` (the
mean over the RPC windows), ``raw_capacity_per_s`` (the mean over the raw windows around them)
and ``vs_raw_capacity``, their ratio: the issue-4 target for the process mode is at least 0.9.
Also recorded: ``round_ratios`` (each RPC window against the mean of the two raw windows around
it), their median, and ``vs_highest_raw``, the rate against the fastest raw window of the run
so far (``raw_windows``), a stricter figure that compares the row with the machine's best
moment rather than with its state at the time. With ``--benchmark-disable`` one round of 0.3 s
windows runs instead, so the file still takes a few seconds.

The machine may be shared: before each window the test waits (up to 20 s) until other
processes use less than 0.15 core, and it measures where the CPU went during the window
(``cpu_server``, ``cpu_clients``, ``cpu_other``, ``cpu_steal``, ``cpu_idle`` in cores, from
``/proc``). A
window during which other processes used 0.15 core or more is measured again, up to 4 windows;
the least disturbed one counts, ``cpu_windows`` says how many were run and ``cpu_disturbed``
that none was clean. The same rule applies to every row, the raw capacity included.

An RPC row also says where its shortfall against the raw capacity went (:func:`shortfall`):
``cores_burning`` (the burns themselves), ``cores_server_overhead`` (the server's CPU beyond
the burns, also as ``server_overhead_us_per_call``), the load generators' ``cpu_clients`` and
``cpu_idle`` (cores nobody used).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import pytest

import pyroact.wire
from benchmarks._servers import SERVERS, ServerPool, ServerProcess, _read_line

WINDOW = 2.0  # seconds per window
ROUNDS = 6  # RPC windows per RPC row, each between two raw-capacity windows
QUICK_WINDOW = 0.3  # with --benchmark-disable (one round)
CLIENTS = 4
CPUS = os.cpu_count() or 1
CPU_WORK = SERVERS / "_cpuwork.py"
GROUP = "cpu-5ms"
START_TIMEOUT = 30.0
# Before each window, wait (up to QUIET_WAIT s) until the rest of the machine uses less than
# QUIET_CORES cores: other work on a shared 2-core VM would otherwise decide the figures.
# A window during which they used more is measured again, up to ATTEMPTS windows in all.
QUIET_CORES = 0.15
QUIET_WAIT = 20.0
ATTEMPTS = 4
TARGET_RATIO = 0.9  # process mode ≥ 0.9 × raw capacity (issue 4)

sys.path.insert(0, str(SERVERS))
try:
    import _cpuwork  # the same module the servers and the load generators import
finally:
    sys.path.remove(str(SERVERS))


@dataclass(frozen=True)
class CpuTarget:
    """One row of the CPU group."""

    name: str
    kind: str  # the load generator: "raw", "socket", "pyroact" or "pyro5"
    processes: int
    server: tuple[str, ...] = ()
    mode: str = "-"
    module: str | None = None
    obj: str = "burner"  # the server object called
    copies: int = 1  # independent servers of this kind; the clients are spread over them


TARGETS = {
    t.name: t
    for t in (
        CpuTarget("raw-capacity", "raw", CPUS, mode=f"{CPUS} processes"),
        CpuTarget("raw-1core", "raw", 1, mode="1 process"),
        CpuTarget("pyroact-single", "pyroact", CLIENTS, ("pyroact_server.py", "single"), "single"),
        CpuTarget("pyroact-threaded", "pyroact", CLIENTS, ("pyroact_server.py", "threaded"),
                  "threaded"),
        CpuTarget("pyroact-process", "pyroact", CLIENTS, ("pyroact_server.py", "process"),
                  f"process, {CPUS} workers, replicated ObjBase"),
        CpuTarget("pyroact-process-sync", "pyroact", CLIENTS, ("pyroact_server.py", "process"),
                  f"process, {CPUS} workers, replicated SynchronizedObjBase", obj="burner-sync"),
        CpuTarget("pyroact-single-per-core", "pyroact", CLIENTS, ("pyroact_server.py", "single"),
                  f"{CPUS} single-mode daemons, clients spread", copies=CPUS),
        CpuTarget("socket-floor", "socket", CLIENTS, ("burn_socket_server.py",),
                  f"{CPUS} plain socket servers, clients spread", copies=CPUS),
        CpuTarget("pyro5", "pyro5", CLIENTS, ("pyro5_server.py",), "thread", "Pyro5"),
    )
}  # fmt: skip

# burns per second of the raw rows measured so far in this run, by target name
MEASURED: dict[str, float] = {}
RAW_WINDOWS: list[tuple[float, float]] = []  # (burns/s, other processes' cores) per raw window
TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy CPU-seconds, stolen CPU-seconds) of the whole machine so far (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy / TICK, fields[7] / TICK


def process_cpu(pids: list[int]) -> float:
    """CPU-seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its direct children (a process-mode daemon and its workers)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except OSError:
            continue
    return found


class LoadGang:
    """``count`` load-generator processes of one kind, connected and waiting for ``GO``."""

    def __init__(self, kind: str, count: int, uris: list[str] | None = None,
                 server_pids: list[int] | None = None) -> None:  # fmt: skip
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server_pids = server_pids or []
        self.cpu: dict[str, float] = {}
        self._stderr: list[Any] = []
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            for number in range(count):
                args = [sys.executable, str(CPU_WORK), kind]
                if uris:
                    args.append(uris[number % len(uris)])
                err = tempfile.TemporaryFile()
                self._stderr.append(err)
                self.procs.append(
                    subprocess.Popen(
                        args,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        env=env,
                        cwd=tempfile.gettempdir(),
                    )
                )
            deadline = time.monotonic() + START_TIMEOUT
            for proc in self.procs:
                self._expect(proc, "READY", deadline)
        except BaseException:
            self.close()
            raise

    def _expect(self, proc: subprocess.Popen[bytes], word: str, deadline: float) -> list[str]:
        try:
            line = _read_line(proc, deadline)
        except Exception as exc:
            raise RuntimeError(f"load generator {proc.args}: {exc}\n{self.stderr_text()}") from None
        words = line.split()
        if not words or words[0] != word:
            raise RuntimeError(f"load generator said {line!r}, not {word}\n{self.stderr_text()}")
        return words

    def stderr_text(self) -> str:
        texts = []
        for err in self._stderr:
            err.seek(0)
            texts.append(err.read().decode(errors="replace"))
        return "\n".join(t for t in texts if t)

    def go(self, window: float) -> list[int]:
        """Run one window in every process at once; the count each completed inside it.

        Also fills :attr:`cpu` with where the machine's CPU went meanwhile (in cores):
        ``server``, ``clients`` (the load generators), ``other`` (every other process on the
        machine: other work competing for the cores) and ``steal`` (taken by the hypervisor).
        """
        ours = [p.pid for p in self.procs]
        busy0, steal0 = machine_cpu()
        server0, clients0, me0 = (process_cpu(self.server_pids), process_cpu(ours),
                                  process_cpu([os.getpid()]))  # fmt: skip
        start = time.monotonic()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"GO {window}\n".encode())
            proc.stdin.flush()
        deadline = time.monotonic() + window + START_TIMEOUT
        counts = [int(self._expect(proc, "DONE", deadline)[1]) for proc in self.procs]
        elapsed = time.monotonic() - start
        busy1, steal1 = machine_cpu()
        server = process_cpu(self.server_pids) - server0
        clients = process_cpu(ours) - clients0
        me = process_cpu([os.getpid()]) - me0
        self.cpu = {
            **self.cpu,
            "server": server / elapsed,
            "clients": clients / elapsed,
            "other": max(0.0, (busy1 - busy0) - server - clients - me) / elapsed,
            "steal": (steal1 - steal0) / elapsed,
            "idle": max(0.0, CPUS - (busy1 - busy0 + steal1 - steal0) / elapsed),
        }
        return counts

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()  # the generator exits on stdin EOF
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck generator
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for err in self._stderr:
            err.close()


def wait_for_quiet(ours: list[int], sample: float = 0.5) -> float:
    """Wait until processes other than ``ours`` use < ``QUIET_CORES`` cores; the last sample."""
    ours = [*ours, os.getpid()]
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        busy0, _ = machine_cpu()
        mine0 = process_cpu(ours)
        time.sleep(sample)
        other = max(0.0, (machine_cpu()[0] - busy0) - (process_cpu(ours) - mine0)) / sample
        if other < QUIET_CORES or time.monotonic() > deadline:
            return other


def burner_uri(target: CpuTarget, server: ServerProcess) -> str:
    host, port = server.host_port
    if target.kind == "pyro5":
        return f"PYRO:{target.obj}@{host}:{port}"
    if target.kind == "socket":
        return f"{host}:{port}"
    return f"PYROLOC://{host}:{port}/{target.obj}"


def shortfall(rate: float, raw_rate: float, cpu: dict[str, float]) -> dict[str, float]:
    """Where the cores went in an RPC row, against the raw capacity (``raw_rate`` burns/s).

    At the raw rate the burns fill every core, so a burn costs ``CPUS / raw_rate``
    CPU-seconds; ``rate`` calls a second then keep ``cores_burning`` cores on the burns
    themselves (``rate / raw_rate`` of the machine: the row's ratio). The rest of the
    server's CPU is what serving the calls costs beyond the work, per call in
    ``server_overhead_us_per_call``; with the load generators, other processes, steal and
    idle time it makes up the shortfall.
    """
    burning = rate * CPUS / raw_rate
    overhead = cpu["server"] - burning
    return {
        "cores_burning": burning,
        "cores_server_overhead": overhead,
        "server_overhead_us_per_call": overhead / rate * 1e6 if rate else 0.0,
    }


def clean_window(gang: LoadGang, quiet_pids: list[int], window: float, quick: bool
                 ) -> tuple[list[int], dict[str, Any]]:  # fmt: skip
    """Counts and CPU use of one window of ``gang``; a disturbed window is measured again.

    A window during which other processes took ``QUIET_CORES`` or more is retried (up to
    ``ATTEMPTS`` windows); if none was clean, the least disturbed one counts and is flagged.
    """
    best: tuple[list[int], dict[str, Any]] | None = None
    used = 0
    for used in range(1, (1 if quick else ATTEMPTS) + 1):  # noqa: B007 - counted after the loop
        before = None if quick else wait_for_quiet(quiet_pids)
        counts = gang.go(window)
        cpu: dict[str, Any] = dict(gang.cpu)
        if before is not None:
            cpu["other_before"] = before
        if best is None or cpu["other"] < best[1]["other"]:
            best = (counts, cpu)
        if quick or cpu["other"] < QUIET_CORES:
            break
    assert best is not None
    best[1]["windows"] = used
    best[1]["disturbed"] = not quick and best[1]["other"] >= QUIET_CORES
    return best


@dataclass
class Windows:
    """What a row measured: its windows' rates and CPU use, and the raw ones around them."""

    rates: list[float]
    counts: list[list[int]]
    cpu: list[dict[str, Any]]
    raw_rates: list[float]  # empty for a raw row

    @property
    def rate(self) -> float:
        return sum(self.rates) / len(self.rates)

    @property
    def raw_rate(self) -> float:
        return sum(self.raw_rates) / len(self.raw_rates)

    def round_ratios(self) -> list[float]:
        """Each RPC window against the mean of the raw windows before and after it."""
        raw = self.raw_rates
        return [r / ((raw[i] + raw[i + 1]) / 2) for i, r in enumerate(self.rates)]

    def mean_cpu(self, key: str) -> float:
        return sum(c[key] for c in self.cpu) / len(self.cpu)


def measure(target: CpuTarget, servers: list[ServerProcess], window: float,
            benchmark: Any = None) -> Windows:  # fmt: skip
    """Measure ``target``: one window for a raw row, interleaved rounds for an RPC row."""
    quick = window < WINDOW
    rounds = 1 if quick else ROUNDS
    if not servers:
        gang = LoadGang(target.kind, target.processes)
        raw_gang = None
    else:
        pids = [pid for server in servers for pid in process_tree(server.pid)]
        uris = [burner_uri(target, server) for server in servers]
        gang = LoadGang(target.kind, target.processes, uris, pids)
        raw_gang = LoadGang("raw", CPUS)
    gangs = [gang] if raw_gang is None else [gang, raw_gang]
    quiet_pids = [pid for g in gangs for pid in (*g.server_pids, *(p.pid for p in g.procs))]

    def run() -> Windows:
        result = Windows([], [], [], [])

        def raw_window() -> None:
            assert raw_gang is not None
            counts, cpu = clean_window(raw_gang, quiet_pids, window, quick)
            result.raw_rates.append(sum(counts) / window)
            RAW_WINDOWS.append((sum(counts) / window, cpu["other"]))

        if raw_gang is not None:
            raw_window()
        for _ in range(rounds):
            counts, cpu = clean_window(gang, quiet_pids, window, quick)
            result.rates.append(sum(counts) / window)
            result.counts.append(counts)
            result.cpu.append(cpu)
            if raw_gang is not None:
                raw_window()
        return result

    try:
        if benchmark is None:
            return run()
        result: Windows = benchmark.pedantic(run, rounds=1, iterations=1)
        return result
    finally:
        for g in gangs:
            g.close()


def params() -> list[Any]:
    out = []
    for name, target in TARGETS.items():
        missing = target.module is not None and importlib.util.find_spec(target.module) is None
        mark = pytest.mark.skipif(missing, reason=f"{target.module} is not installed")
        out.append(pytest.param(name, id=name, marks=mark))
    return out


@pytest.mark.parametrize("name", params())
def test_cpu_5ms(benchmark: Any, server_pool: ServerPool, name: str) -> None:
    target = TARGETS[name]
    window = QUICK_WINDOW if benchmark.disabled else WINDOW
    servers = []
    if target.server:
        # Copies differ only in an --instance argument, so the pool starts each once.
        copies = (
            [()] if target.copies == 1 else [("--instance", str(k)) for k in range(target.copies)]
        )
        servers = [server_pool.get(*target.server, *extra) for extra in copies]
    if target.kind == "pyroact":
        assert all(server.engine == pyroact.wire.IMPLEMENTATION for server in servers)
    benchmark.group = GROUP
    benchmark.extra_info.update(
        target=name,
        impl=target.kind if target.kind != "raw" else "raw",
        mode=target.mode,
        serializer="pickle" if target.kind == "pyroact" else "-",
        engine=pyroact.wire.IMPLEMENTATION if target.kind == "pyroact" else "-",
        clients=target.processes,
        window_s=window,
        burn_iterations=_cpuwork.BURN_ITERATIONS,
        cpus=CPUS,
        floor=name == "raw-capacity",
        loadavg_1m=os.getloadavg()[0],
    )
    measured = measure(target, servers, window, benchmark)
    rate = measured.rate
    cpu = {key: measured.mean_cpu(key) for key in ("server", "clients", "other", "steal", "idle")}
    info: dict[str, Any] = {
        "calls_per_s": rate,
        "counts": measured.counts,
        "calls": sum(map(sum, measured.counts)),
        "rpc_windows": len(measured.rates),
        **{f"cpu_{key}": value for key, value in cpu.items()},
        "cpu_windows": max(c["windows"] for c in measured.cpu),
        "cpu_disturbed": any(c["disturbed"] for c in measured.cpu),
    }
    line = (
        f"\n[{GROUP}] {name}: {rate:.1f} /s, {len(measured.rates)} × {window:g} s "
        f"(per window: {', '.join(f'{r:.1f}' for r in measured.rates)}); cores busy: "
        f"server {cpu['server']:.2f}, load generators {cpu['clients']:.2f}, other processes "
        f"{cpu['other']:.2f}, steal {cpu['steal']:.2f}"
    )
    if info["cpu_disturbed"]:
        line += " (DISTURBED: some window had no clean attempt)"
    if measured.raw_rates:
        raw = measured.raw_rate
        ratios = measured.round_ratios()
        highest = max(rate for rate, _ in RAW_WINDOWS)
        info.update(
            raw_capacity_per_s=raw,
            vs_raw_capacity=rate / raw,
            round_ratios=ratios,
            median_round_ratio=statistics.median(ratios),
            vs_highest_raw=rate / highest,
            interleaved_raw=measured.raw_rates,
            raw_windows=list(RAW_WINDOWS),
        )
        line += (
            f"; raw capacity around it {raw:.1f} burns/s "
            f"({', '.join(f'{r:.1f}' for r in measured.raw_rates)}): {rate / raw:.3f}× "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; against the run's fastest raw "
            f"window, {highest:.1f}: {rate / highest:.3f}×)"
        )
        budget = shortfall(rate, raw, cpu)
        info.update(budget)
        line += (
            f"; of the {CPUS} cores: burns {budget['cores_burning']:.2f}, server beyond the "
            f"burns {budget['cores_server_overhead']:.2f} "
            f"({budget['server_overhead_us_per_call']:.0f} µs per call), load generators "
            f"{cpu['clients']:.2f}, idle {cpu['idle']:.2f}"
        )
        if name.startswith("pyroact-process"):
            met = "met" if rate / raw >= TARGET_RATIO else "MISSED"
            line += f" — target ≥ {TARGET_RATIO}×: {met}"
    else:
        MEASURED[name] = rate
        if name == "raw-capacity":
            pairs = zip(measured.rates, measured.cpu, strict=True)
            RAW_WINDOWS.extend((r, c["other"]) for r, c in pairs)
            info["raw_capacity_per_s"] = rate  # the reference itself: 1.000×
        elif "raw-capacity" in MEASURED:
            info["raw_capacity_per_s"] = MEASURED["raw-capacity"]
        if name == "raw-1core" and "raw-capacity" in MEASURED:
            info["capacity_vs_1core"] = MEASURED["raw-capacity"] / rate
            line += f"; {CPUS} processes give {MEASURED['raw-capacity'] / rate:.2f}× one"
    benchmark.extra_info.update(info)
    print(line)
    assert info["calls"] > 0
