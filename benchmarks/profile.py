"""Where the time of one benchmark op goes: ``python -m benchmarks.profile [options]``.

For each workload and target (the same servers and clients as ``test_roundtrip.py``) it runs
the op back to back for a fixed window and reports, per op:

* the wall time, the client process's CPU time and the server's CPU time (user and system,
  the process and its children, i.e. a process-mode daemon with its workers, from
  ``/proc/<pid>/stat``), and the server's context switches (``/proc/<pid>/task/*/status``);
  system time and switches are the kernel's share: socket calls and thread or process
  wake-ups;
* with ``--py-spy``, a second window sampled by py-spy in the server (and each worker): the
  functions holding the most samples, without the frames that only wait (``select``,
  parked pool threads, the benchmark server's stdin watcher).

The rows of one workload run interleaved, window by window, so they share the machine's
state. Example::

    python -m benchmarks.profile --workloads call-small,oneway --py-spy --out profile.md
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._servers import ServerProcess, start_server
from benchmarks.test_roundtrip import (
    CLIENT_CALLS,
    ECHO_SIZES,
    ONEWAY_BURST,
    PYROACT,
    TARGETS,
    ClientGang,
    ident_client,
)

WORKLOADS = ("call-small", "oneway", "echo-1MiB", "clients-8", "connect", "connect-ident")
DEFAULT_TARGETS = (*PYROACT, "raw", "pyro5")
TICKS = os.sysconf("SC_CLK_TCK")
# Frames where a thread only waits; they are left out of the py-spy summary.
WAITING = (
    "select (selectors.py",
    "poll (selectors.py",
    "_epoll_loop (pyroact/svr_threads.py",
    "_next_task (pyroact/_mailbox.py",
    "_exit_on_stdin_eof",
    "wait (threading.py",
    "accept (socket.py",
    "_send_outbox (pyroact/_worker.py",
    "serve (pyroact/_worker.py",
    "Channel._receive_into (pyroact/transport.py",  # blocking reads: the link readers
)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@dataclass
class Usage:
    """CPU seconds and context switches of a process tree at one moment."""

    user: float = 0.0
    system: float = 0.0
    switches: int = 0

    @classmethod
    def of_tree(cls, pid: int) -> Usage:
        usage = cls()
        for p in (pid, *_children(pid)):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                usage.user += int(fields[11]) / TICKS
                usage.system += int(fields[12]) / TICKS
                for task in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{task}/status") as f:
                        for line in f:
                            if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                                usage.switches += int(line.split()[1])
            except (OSError, ValueError):
                continue  # a thread or worker ended meanwhile
        return usage


@dataclass
class Row:
    """Per-op figures of one target in one workload."""

    target: str
    ops: int = 0
    wall: float = 0.0
    client_cpu: float = 0.0
    server_user: float = 0.0
    server_system: float = 0.0
    switches: int = 0

    def add(self, ops: int, wall: float, client: float, before: Usage, after: Usage) -> None:
        self.ops += ops
        self.wall += wall
        self.client_cpu += client
        self.server_user += after.user - before.user
        self.server_system += after.system - before.system
        self.switches += after.switches - before.switches

    def cells(self, calls_per_op: int) -> list[str]:
        ops = max(self.ops, 1)

        def us(seconds: float) -> str:
            return f"{seconds / ops * 1e6:.0f}"

        return [
            self.target,
            str(self.ops),
            us(self.wall),
            us(self.client_cpu),
            us(self.server_user),
            us(self.server_system),
            f"{self.switches / ops / calls_per_op:.1f}",
        ]


@dataclass
class Workload:
    """How to make the server, the client and one op of a workload."""

    name: str
    calls_per_op: int
    ident: bool = False

    def server_args(self, target: str) -> tuple[str, ...]:
        if self.ident:
            return ident_client(TARGETS[target])[0]
        return TARGETS[target].server

    @contextmanager
    def op(self, target: str, server: ServerProcess) -> Iterator[Callable[[], Any]]:
        spec = TARGETS[target]
        if self.name in ("connect", "connect-ident"):
            factory = ident_client(spec)[1] if self.ident else spec.connect

            def connect_and_call() -> Any:
                client = factory(server)
                try:
                    return client.call()
                finally:
                    client.close()

            yield connect_and_call
            return
        if self.name == "clients-8":
            gang = ClientGang(spec, server, 8, CLIENT_CALLS[8])
            try:
                yield gang.run
            finally:
                gang.close()
            return
        if self.name == "oneway":
            client = spec.connect_oneway(server)
            op: Callable[[], Any] = lambda: client.oneway_burst(ONEWAY_BURST)  # noqa: E731
        elif self.name == "echo-1MiB":
            client = spec.connect(server, ECHO_SIZES["1MiB"])
            data = bytes(ECHO_SIZES["1MiB"])
            op = lambda: client.echo(data)  # noqa: E731
        else:
            client = spec.connect(server)
            op = client.call
        try:
            yield op
        finally:
            client.close()


WORKLOAD_SPECS = {
    "call-small": Workload("call-small", 1),
    "oneway": Workload("oneway", ONEWAY_BURST + 1),
    "echo-1MiB": Workload("echo-1MiB", 1),
    "clients-8": Workload("clients-8", 8 * CLIENT_CALLS[8]),
    "connect": Workload("connect", 1),
    "connect-ident": Workload("connect-ident", 1, ident=True),
}


def applies(workload: str, target: str) -> bool:
    """Whether a target runs a workload (its peer is installed; the floor has no oneway)."""
    module = TARGETS[target].module
    if module is not None and importlib.util.find_spec(module) is None:
        return False
    return not (workload == "oneway" and TARGETS[target].impl == "raw")


def measure(workload: Workload, targets: list[str], window: float, rounds: int) -> list[Row]:
    """Run each target's op for ``window`` seconds, ``rounds`` times, interleaved."""
    servers = {t: start_server(*workload.server_args(t)) for t in targets}
    rows = {t: Row(t) for t in targets}
    try:
        ops = {}
        stack = []
        for t in targets:
            cm = workload.op(t, servers[t])
            ops[t] = cm.__enter__()
            stack.append(cm)
            for _ in range(3):
                ops[t]()  # warm-up
        for _ in range(rounds):
            for t in targets:
                op, pid = ops[t], servers[t].pid
                count = 0
                before, c0, t0 = Usage.of_tree(pid), time.process_time(), time.perf_counter()
                while time.perf_counter() - t0 < window:
                    op()
                    count += 1
                wall, client = time.perf_counter() - t0, time.process_time() - c0
                rows[t].add(count, wall, client, before, Usage.of_tree(pid))
        for cm in reversed(stack):
            cm.__exit__(None, None, None)
    finally:
        for s in servers.values():
            s.stop()
    return [rows[t] for t in targets]


def spy(workload: Workload, target: str, window: float, top: int) -> list[str]:
    """py-spy samples of the server (and its workers) during ``window`` seconds of ops."""
    server = start_server(*workload.server_args(target))
    lines: list[str] = []
    try:
        with workload.op(target, server) as op:
            op()
            pids = [server.pid, *_children(server.pid)]
            with tempfile.TemporaryDirectory() as tmp:
                outs = [Path(tmp) / f"{p}.txt" for p in pids]
                seconds = str(max(1, round(window)))
                command = ["py-spy", "record", "-r", "400", "-d", seconds, "-f", "raw", "-o"]
                spies = [
                    subprocess.Popen(
                        [*command, str(out), "-p", str(p)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for p, out in zip(pids, outs, strict=True)
                ]
                deadline = time.monotonic() + window + 0.5
                while time.monotonic() < deadline:
                    op()
                for proc in spies:
                    proc.wait(timeout=60)
                for p, out in zip(pids, outs, strict=True):
                    role = "server" if p == server.pid else f"worker {p}"
                    lines += summarize(out, f"{target} {role}", top)
    finally:
        server.stop()
    return lines


def summarize(path: Path, label: str, top: int) -> list[str]:
    """The ``top`` functions by own samples in a py-spy raw file, waiting frames left out."""
    if not path.exists():
        return [f"- {label}: no samples"]
    own: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(w in frames[-1] for w in WAITING):
            continue
        own[frames[-1]] += int(count)
        busy += int(count)
    if not busy:
        return [f"- {label}: no busy samples"]
    items = ", ".join(f"`{f}` {c / busy:.0%}" for f, c in own.most_common(top))
    return [f"- {label} ({busy} busy samples): {items}"]


def report(workloads: list[str], targets: list[str], window: float, rounds: int,
           use_spy: bool, top: int) -> str:  # fmt: skip
    """The Markdown report of every workload."""
    out = [
        f"Window {window:g} s × {rounds} rounds per row, rows interleaved; per op unless "
        "noted; *switches* are the server's context switches per call.",
        "",
    ]
    for name in workloads:
        workload = WORKLOAD_SPECS[name]
        names = [t for t in targets if applies(name, t)]
        rows = measure(workload, names, window, rounds)
        out += [
            f"### {name} ({workload.calls_per_op} call{'s' if workload.calls_per_op > 1 else ''}"
            " per op)",
            "",
            "| target | ops | wall µs | client CPU µs | server user µs | server system µs "
            "| switches/call |",
            "|---|---|---|---|---|---|---|",
        ]
        out += ["| " + " | ".join(r.cells(workload.calls_per_op)) + " |" for r in rows]
        if use_spy:
            out.append("")
            for t in names:
                if TARGETS[t].impl == "pyroact":
                    out += spy(workload, t, window * 2, top)
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    parser.add_argument("--window", type=float, default=1.0, help="seconds per round and row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--py-spy", action="store_true", help="also sample the servers")
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args(argv)
    workloads = opts.workloads.split(",")
    targets = opts.targets.split(",")
    for name in workloads:
        if name not in WORKLOAD_SPECS:
            parser.error(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    for name in targets:
        if name not in TARGETS:
            parser.error(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    if opts.py_spy and shutil.which("py-spy") is None:
        parser.error("--py-spy needs the py-spy command (pip install py-spy)")
    text = report(workloads, targets, opts.window, opts.rounds, opts.py_spy, opts.top)
    if opts.out:
        opts.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
