"""Turn a pytest-benchmark JSON file into Markdown tables (and, optionally, a PNG chart).

Usage::

    python -m pytest benchmarks --benchmark-json=results.json
    python -m benchmarks.report results.json [--stat mean|median] [--png chart.png]

One table per benchmark group. Each row gives the time of one op, ops/s, calls/s when one op
is several calls (``extra_info["calls"]``), and two speed ratios measured in the same run:

* **vs floor**: the raw-socket figure of the group (``extra_info["floor"]``) divided by the row's
  time, so 0.6 means "60 % of the plain socket's speed";
* **vs Pyro5**: Pyro5's default-configuration figure (``extra_info["pyro5_default"]``) divided
  by the row's time, so 2.5 means "2.5 times as fast as Pyro5".

The CPU group (``cpu-5ms``, from ``benchmarks/test_cpu.py``) is different: each RPC row is
4 client processes calling for several windows, each between two windows of the raw capacity
(as many plain processes as cores looping the same burn function, no RPC); its figure is
calls/s (``extra_info["calls_per_s"]``) and **vs raw capacity** divides it by the mean of those
raw windows (``raw_capacity_per_s``).

The scaling groups (``scale-clients``, ``scale-payload``, from ``benchmarks/test_scaling.py``)
are curves: one row per target, one column per point (``extra_info["curve"]``), calls/s (and,
for payloads, MB/s) and the ratio to the floor and to Pyro5 at each point. ``idle-1000`` is the
server's memory per idle connection and the ratio of a new client's latency with and without
the idle connections.

After the tables comes a check of the targets of issues 4 and 5 that this suite measures, per
pyroact server mode. The chart (``--png``) has four panels: each workload's speed as a ratio to
the floor and to Pyro5 per pyroact mode (bars, with the targets marked), and the two scaling
curves. It needs matplotlib; without it ``--png`` prints a note and is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

GROUP_ORDER = [
    "call-small",
    "oneway",
    "echo-1KiB",
    "echo-64KiB",
    "echo-1MiB",
    "echo-16MiB",
    "clients-8",
    "clients-64",
    "connect",
    "connect-ident",
    "cpu-5ms",
    "scale-clients",
    "scale-payload",
    "idle-1000",
]
CPU_GROUP = "cpu-5ms"
CURVE_GROUPS = ("scale-clients", "scale-payload")
IDLE_GROUP = "idle-1000"
PAIRED_GROUP = "call-small-paired"  # process vs threaded, interleaved batches
SPECIAL_GROUPS = (CPU_GROUP, *CURVE_GROUPS, IDLE_GROUP, PAIRED_GROUP)
MODE_ORDER = ["pyroact-single", "pyroact-threaded", "pyroact-process", "pyroact-process-sync"]


@dataclass
class Row:
    """One benchmark of the JSON file."""

    group: str
    name: str
    time: float  # seconds per op (the chosen statistic)
    stats: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return int(self.info.get("calls", 1) or 1)

    @property
    def is_floor(self) -> bool:
        return bool(self.info.get("floor"))

    @property
    def is_pyro5(self) -> bool:
        return bool(self.info.get("pyro5_default"))

    @property
    def rate(self) -> float:
        """Calls (or burns) per second: ``extra_info["calls_per_s"]`` if given, else calls/time."""
        if "calls_per_s" in self.info:
            return float(self.info["calls_per_s"])
        return self.calls / self.time


def load(path: str, stat: str = "mean") -> tuple[dict[str, Any], list[Row]]:
    """The JSON document and its benchmarks as rows (those without stats are left out)."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    rows = []
    for bench in doc.get("benchmarks", []):
        stats = bench.get("stats") or {}
        if stat not in stats or not stats[stat]:
            continue
        rows.append(
            Row(
                group=bench.get("group") or "(no group)",
                name=(bench.get("extra_info") or {}).get("target")
                or bench.get("param")
                or bench.get("name", "?"),
                time=float(stats[stat]),
                stats=stats,
                info=bench.get("extra_info") or {},
            )
        )
    return doc, rows


def by_group(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows per group, groups in the suite's order (then alphabetical), rows fastest first."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    order = {name: i for i, name in enumerate(GROUP_ORDER)}
    return {
        name: sorted(groups[name], key=lambda r: -r.rate if name == CPU_GROUP else r.time)
        for name in sorted(groups, key=lambda g: (order.get(g, len(order)), g))
    }


def reference(rows: Sequence[Row], which: str) -> Row | None:
    """The group's floor (``which="floor"``) or Pyro5 default (``"pyro5"``) row, if any."""
    for row in rows:
        if row.is_floor if which == "floor" else row.is_pyro5:
            return row
    return None


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        value = seconds / scale
        if value >= 1 or unit == "ns":
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def fmt_rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M"
    if per_second >= 1e4:
        return f"{per_second / 1e3:.1f} k"
    if per_second >= 100:
        return f"{per_second:.0f}"
    return f"{per_second:.3g}"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if ratio < 0.1:
        return f"{ratio:.3f}×"
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×"


def ratio(ref: Row | None, row: Row) -> float | None:
    """How many times as fast as ``ref`` the row is (None without a reference)."""
    if ref is None:
        return None
    return ref.time / row.time


def describe(row: Row) -> str:
    info = row.info
    parts = [str(info[key]) for key in ("mode", "serializer") if info.get(key) not in (None, "-")]
    if info.get("engine") not in (None, "-"):
        parts.append(f"{info['engine']} engine")
    return ", ".join(parts)


def cpu_capacity(row: Row, raw: Row | None) -> float | None:
    """The raw capacity a CPU row is compared with: the one its test used, else the raw row.

    A raw row is compared with the highest raw-capacity window of the run.
    """
    if "raw_capacity_per_s" in row.info:
        return float(row.info["raw_capacity_per_s"])
    if raw is None or not raw.rate:
        return None
    return max([raw.rate, *(float(w[0]) for w in raw.info.get("all_raw_windows", []))])


def fmt_cpu_ratio(row: Row, raw: Row | None) -> str:
    capacity = cpu_capacity(row, raw)
    return f"{row.rate / capacity:.3f}×" if capacity else "—"


def socket_floor_lines(rows: Sequence[Row]) -> list[str]:
    """The pyroact rows against the raw socket floor (``socket-floor``), if it was measured.

    Both ratios are taken against the raw capacity measured around each row, so their
    quotient compares the rows with each other without the drift between their windows.
    """
    floor = next((r for r in rows if r.name == "socket-floor"), None)
    if floor is None or "vs_raw_capacity" not in floor.info:
        return []
    base = float(floor.info["vs_raw_capacity"])
    parts = [
        f"{row.name} {float(row.info['vs_raw_capacity']) / base:.3f}×"
        for row in rows
        if row.info.get("impl") == "pyroact" and "vs_raw_capacity" in row.info
    ]
    return [
        "",
        f"Against the raw socket floor (*socket-floor*: {base:.3f}× the raw capacity, the"
        " least any RPC reaches here), each row's ratio to the raw capacity over the floor's: "
        + (", ".join(parts) or "no pyroact row")
        + ".",
    ]


def cpu_table(rows: Sequence[Row]) -> str:
    """The CPU group: calls/s per row and the ratio to the raw parallel capacity."""
    raw = reference(rows, "floor")
    windows = max((r.info.get("raw_windows", []) for r in rows), key=len, default=[])
    if raw is not None:
        raw.info["all_raw_windows"] = windows
    head = ["target", "details", "clients / processes", "windows", "calls/s",
            "vs raw capacity", "rounds", "vs fastest raw window", "cores: server",
            "server µs per call beyond the burn", "cores: load generators", "cores: idle",
            "cores: other processes"]  # fmt: skip
    lines = [f"### {CPU_GROUP}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        info = row.info
        cells = [f"**{row.name}**" if info.get("impl") == "pyroact" else row.name, describe(row)]
        cells.append(str(info.get("clients", "?")))
        window = f"{info['window_s']:g} s" if "window_s" in info else "?"
        if int(info.get("rpc_windows", 1)) > 1:
            window = f"{info['rpc_windows']} × {window}"
        if int(info.get("cpu_windows", 1)) > 1:
            window += f" (up to {info['cpu_windows']} attempts)"
        if info.get("cpu_disturbed"):
            window += " **disturbed**"
        cells.append(window)
        cells.append(f"{row.rate:.1f}")
        cells.append(fmt_cpu_ratio(row, raw))
        rounds = info.get("round_ratios")
        cells.append(", ".join(f"{r:.3f}" for r in rounds) if rounds else "—")
        highest = info.get("vs_highest_raw")
        cells.append(f"{highest:.3f}×" if highest is not None else "—")
        server = info.get("cpu_server") if not row.is_floor and info.get("impl") != "raw" else None
        cells.append(f"{server:.2f}" if server is not None else "—")
        overhead = info.get("server_overhead_us_per_call")
        cells.append(f"{overhead:.0f}" if overhead is not None else "—")
        for key in ("cpu_clients", "cpu_idle", "cpu_other"):
            cells.append(f"{info[key]:.2f}" if key in info else "—")
        lines.append("| " + " | ".join(cells) + " |")
    burn = rows[0].info.get("burn_iterations") if rows else None

    lines += [
        "",
        f"Each call (or raw burn) runs the same {burn} iteration pure-Python loop (~5 ms). An"
        " RPC row's windows alternate with raw-capacity windows (raw, RPC, raw, …, raw); *vs"
        " raw capacity* is its mean rate over the mean of those raw windows, *rounds* each RPC"
        " window against the two raw windows around it, *vs fastest raw window* the rate"
        " against the fastest raw window of the run so far (stricter: the machine's speed"
        " drifts between windows). *Server µs per call beyond the burn* is the server's CPU"
        " per call less what the burn costs at the raw rate (cores / raw burns per second):"
        " what serving a call costs; with the load generators' and idle cores it is where the"
        " shortfall against the raw capacity went. *cores: other processes* is what the rest"
        " of the machine used (other work competing for the cores); a window where it reached"
        " 0.15 core was"
        " measured again (up to 4 attempts), and *disturbed* marks a row with a window that"
        " had no clean attempt.",
    ]
    lines += socket_floor_lines(rows)
    if windows:
        lines += [
            "",
            "Raw-capacity windows in this run (burns/s, other processes' cores): "
            + ", ".join(f"{rate:.1f} ({other:.2f})" for rate, other in windows)
            + ".",
        ]
    return "\n".join(lines)


def size_label(size: float) -> str:
    size = int(size)
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def curve(row: Row) -> dict[float, list[float]]:
    """A scaling row's points: x → [calls/s, ...]."""
    return {float(p[0]): [float(v) for v in p[1:]] for p in row.info.get("curve", [])}


def curve_table(name: str, rows: Sequence[Row]) -> str:
    """A scaling group: calls/s per point, and the ratio to the floor and to Pyro5 per point."""
    floor, pyro5 = reference(rows, "floor"), reference(rows, "pyro5")
    order = {name: i for i, name in enumerate(MODE_ORDER)}
    rows = sorted(rows, key=lambda r: (r.info.get("impl") != "pyroact", order.get(r.name, 9),
                                       r.name))  # fmt: skip
    xs = sorted({x for r in rows for x in curve(r)})
    payload = name == "scale-payload"
    label = size_label if payload else (lambda x: f"{int(x)}")
    head = ["target", "figure", *(label(x) for x in xs)]
    what = "payload size" if payload else "concurrent clients"
    lines = [f"### {name}", "", f"Calls/s against the {what}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for row in rows:
        points = curve(row)
        bold = f"**{row.name}**" if row.info.get("impl") == "pyroact" else row.name
        cells = [bold, "calls/s", *(fmt_rate(points[x][0]) if x in points else "—" for x in xs)]
        lines.append("| " + " | ".join(cells) + " |")
        if payload:
            cells = ["", "MB/s"] + [
                f"{points[x][1]:.3g}" if x in points and len(points[x]) > 1 else "—" for x in xs
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if row.info.get("impl") != "pyroact":
            continue
        for ref, text in ((floor, "vs floor"), (pyro5, "vs Pyro5")):
            if ref is None:
                continue
            refpoints = curve(ref)
            cells = ["", text] + [
                fmt_ratio(points[x][0] / refpoints[x][0])
                if x in points and x in refpoints and refpoints[x][0]
                else "—"
                for x in xs
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if rows:
        info = rows[0].info
        if payload:
            lines += [
                "",
                f"Each point: about {info.get('payload_bytes', 0) >> 20} MiB echoed "
                "(3 to 200 echoes) after one warm-up echo, on a new connection.",
            ]
        else:
            lines += ["", f"Each point: the best of {info.get('point_repeats', '?')} batches of "
                          f"{info.get('point_calls', '?')} small calls split between the clients "
                          "(threads of one client process, each with its own connection), after "
                          "a warm-up batch."]  # fmt: skip
    return "\n".join(lines)


def idle_table(rows: Sequence[Row]) -> str:
    """Server memory per idle connection and a new client's latency with them open."""
    head = ["target", "idle connections", "server RSS before → after", "KiB / connection",
            "with workers", "threads added", "connect+call: with / without",
            "small call: with / without"]  # fmt: skip
    lines = [f"### {IDLE_GROUP}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(rows, key=lambda r: MODE_ORDER.index(r.name) if r.name in MODE_ORDER else 9):
        i = row.info
        if "kib_per_connection" not in i:
            continue
        cells = [
            f"**{row.name}**",
            str(i["idle_connections"]),
            f"{i['before']['rss_kib'] / 1024:.1f} → {i['after']['rss_kib'] / 1024:.1f} MiB",
            f"{i['kib_per_connection']:.1f}",
            f"{i['tree_kib_per_connection']:.1f} ({i['after']['processes']} process"
            f"{'es' if i['after']['processes'] > 1 else ''})",
            str(i["threads_added"]),
            f"{i['connect_ratio']:.2f}× ({fmt_time(i['connect_idle_s'])} / "
            f"{fmt_time(i['connect_base_s'])})",
            f"{i['call_ratio']:.2f}× ({fmt_time(i['call_idle_s'])} / {fmt_time(i['call_base_s'])})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "RSS from `/proc/<pid>/status` (VmRSS) of a fresh server, before and after "
                  "a helper process opened the idle connections (each proxy made one call); "
                  "the latencies are medians of a new client's measurements on that server "
                  "(*with*) and on an identical fresh server with no idle connection "
                  "(*without*), interleaved."]  # fmt: skip
    return "\n".join(lines)


def paired_table(rows: Sequence[Row]) -> str:
    """The process mode's small call against the threaded mode's, batches interleaved."""
    head = ["target", "threaded, median batch", "process, median batch", "process / threaded"]
    lines = [f"### {PAIRED_GROUP}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        i = row.info
        if "ratio" not in i:
            continue
        cells = [f"**{row.name}**", f"{fmt_time(i['threaded_s'])} / call",
                 f"{fmt_time(i['process_s'])} / call", f"{i['ratio']:.3f}×"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"{i['batches']} batches of {i['calls_per_batch']} `add(1, 2)` calls per "
                      "mode, the two modes' batches alternating (ABBA), after a warm-up batch "
                      "each."]  # fmt: skip
    return "\n".join(lines)


def group_table(name: str, rows: Sequence[Row], stat: str) -> str:
    if name == CPU_GROUP:
        return cpu_table(rows)
    if name == PAIRED_GROUP:
        return paired_table(rows)
    if name in CURVE_GROUPS:
        return curve_table(name, rows)
    if name == IDLE_GROUP:
        return idle_table(rows)
    floor, pyro5 = reference(rows, "floor"), reference(rows, "pyro5")
    multi = any(r.calls > 1 for r in rows)
    head = ["target", "details", f"{stat} / op", "ops/s"]
    if multi:
        head += ["calls/op", "calls/s", "per call"]
    refs = floor is not None or pyro5 is not None
    if refs:
        head += ["vs floor", "vs Pyro5"]
    lines = [f"### {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"**{row.name}**" if row.info.get("impl") == "pyroact" else row.name]
        cells += [describe(row), fmt_time(row.time), fmt_rate(1 / row.time)]
        if multi:
            cells += [
                str(row.calls),
                fmt_rate(row.calls / row.time),
                fmt_time(row.time / row.calls),
            ]
        if refs:
            cells += [fmt_ratio(ratio(floor, row)), fmt_ratio(ratio(pyro5, row))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _find(groups: dict[str, list[Row]], group: str, target: str) -> Row | None:
    for row in groups.get(group, []):
        if row.info.get("target", row.name) == target or row.name == target:
            return row
    return None


def target_checks(groups: dict[str, list[Row]]) -> str:
    """Issue 5's targets that this suite measures, per pyroact mode: met, missed or not run."""
    found = {
        r.info["target"]
        for rows in groups.values()
        for r in rows
        if r.info.get("impl") == "pyroact"
    }
    modes = sorted(found, key=lambda m: (MODE_ORDER.index(m) if m in MODE_ORDER else 99, m))
    if not modes:
        return ""
    checks: list[tuple[str, str, str, float]] = [
        # (description, group, reference: "floor" | "pyro5", minimum speed ratio)
        ("small call ≥ 2.5× Pyro5", "call-small", "pyro5", 2.5),
        ("small call ≥ 0.6× raw ping-pong", "call-small", "floor", 0.6),
        ("oneway ≥ 20× Pyro5", "oneway", "pyro5", 20.0),
        ("1 MiB echo ≥ 0.5× raw echo", "echo-1MiB", "floor", 0.5),
        ("1 MiB echo ≥ 20× Pyro5", "echo-1MiB", "pyro5", 20.0),
        ("8 clients ≥ 2× Pyro5", "clients-8", "pyro5", 2.0),
        ("64 clients ≥ 2× Pyro5 (the 8-client target, applied to 64)", "clients-64", "pyro5", 2.0),
        ("connect + first call ≥ 1.2× Pyro5", "connect", "pyro5", 1.2),
        ("connect + first call with identification ≥ 1.2× Pyro5", "connect-ident", "pyro5", 1.2),
    ]
    head = ["target (issues 4, 5)", *modes]
    lines = ["### targets", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for text, group, which, minimum in checks:
        cells = [text]
        ref = reference(groups.get(group, []), which)
        for mode in modes:
            row = _find(groups, group, mode)
            if row is None or ref is None:
                cells.append("not run")
                continue
            value = ref.time / row.time
            cells.append(f"{'met' if value >= minimum else 'MISSED'} ({fmt_ratio(value)})")
        lines.append("| " + " | ".join(cells) + " |")
    # oneway faster than synchronous calls: per-call time of a burst against one small call.
    cells = ["oneway faster per call than a sync call"]
    for mode in modes:
        burst, sync = _find(groups, "oneway", mode), _find(groups, "call-small", mode)
        if burst is None or sync is None:
            cells.append("not run")
            continue
        value = sync.time / (burst.time / burst.calls)
        cells.append(f"{'met' if value > 1 else 'MISSED'} ({fmt_ratio(value)})")
    lines.append("| " + " | ".join(cells) + " |")
    # The CPU workload: calls/s against the raw parallel capacity (the target is for process).
    raw = reference(groups.get(CPU_GROUP, []), "floor")
    cells = ["5 ms CPU × 4 clients ≥ 0.9× raw capacity (process mode)"]
    for mode in modes:
        row = _find(groups, CPU_GROUP, mode)
        if row is None or raw is None:
            cells.append("not run")
            continue
        capacity = cpu_capacity(row, raw)
        assert capacity is not None
        value = row.rate / capacity
        if not mode.startswith("pyroact-process"):
            cells.append(f"({value:.3f}×)")
            continue
        cells.append(f"{'met' if value >= 0.9 else 'MISSED'} ({value:.3f}×)")
    lines.append("| " + " | ".join(cells) + " |")
    # A trivial call in the process mode costs at most twice its cost in the threaded mode:
    # from the separate call-small blocks, and from the interleaved batches of the two modes.
    threaded = _find(groups, "call-small", "pyroact-threaded")
    cells = ["small call ≤ 2× the threaded mode's time (process mode)"]
    for mode in modes:
        row = _find(groups, "call-small", mode)
        if row is None or threaded is None:
            cells.append("not run")
            continue
        value = row.time / threaded.time
        text = f"{value:.3f}× threaded's time"
        cells.append(f"{'met' if value <= 2 else 'MISSED'} ({text})" if mode == "pyroact-process"
                     else f"({text})")  # fmt: skip
    lines.append("| " + " | ".join(cells) + " |")
    paired = _find(groups, PAIRED_GROUP, "pyroact-process")
    if paired is not None and "ratio" in paired.info:
        value = float(paired.info["ratio"])
        cells = ["the same, threaded and process batches interleaved"]
        for mode in modes:
            if mode != "pyroact-process":
                cells.append("")
                continue
            text = f"{value:.3f}× threaded's time"
            cells.append(f"{'met' if value <= 2 else 'MISSED'} ({text})")
        lines.append("| " + " | ".join(cells) + " |")
    # Idle connections: memory per connection, and a new client not slowed by them.
    idle_checks = [
        ("server memory per idle connection < 64 KiB", "kib_per_connection", "KiB", 64.0),
        (
            "1,000 idle connections: new client's connect+call not slower (≤ 1.2×)",
            "connect_ratio",
            "×",
            1.2,
        ),
        (
            "1,000 idle connections: new client's small call not slower (≤ 1.2×)",
            "call_ratio",
            "×",
            1.2,
        ),
    ]
    for text, key, unit, limit in idle_checks:
        cells = [text]
        for mode in modes:
            row = _find(groups, IDLE_GROUP, mode)
            if row is None or key not in row.info:
                cells.append("not run")
                continue
            value = float(row.info[key])
            shown = f"{value:.1f} KiB" if unit == "KiB" else f"{value:.2f}×"
            ok = value < limit if unit == "KiB" else value <= limit
            cells.append(f"{'met' if ok else 'MISSED'} ({shown})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_line(doc: dict[str, Any]) -> str:
    info = doc.get("machine_info") or {}
    cpu = info.get("cpu") or {}
    commit = doc.get("commit_info") or {}
    parts = [
        f"{info.get('python_implementation', '?')} {info.get('python_version', '?')}",
        f"{info.get('system', '?')} {info.get('machine', '?')}",
        f"{cpu.get('count', '?')} × {cpu.get('brand_raw', '?')}",
    ]
    if commit.get("id"):
        parts.append(f"commit {commit['id'][:10]}{' (dirty)' if commit.get('dirty') else ''}")
    if doc.get("datetime"):
        parts.append(str(doc["datetime"])[:19].replace("T", " ") + " UTC")
    return "; ".join(parts)


def render(doc: dict[str, Any], rows: Sequence[Row], stat: str = "mean") -> str:
    groups = by_group(rows)
    out = [f"Machine: {machine_line(doc)}.", ""]
    loads = [float(r.info["loadavg_1m"]) for r in rows if "loadavg_1m" in r.info]
    if loads:
        out += [f"1-minute load average during the run: {min(loads):.2f} to {max(loads):.2f}.", ""]
    for name, group_rows in groups.items():
        out += [group_table(name, group_rows, stat), ""]
    checks = target_checks(groups)
    if checks:
        out += [checks, ""]
    return "\n".join(out)


# Targets drawn on the chart: (group, reference) → minimum ratio.
CHART_TARGETS = {
    ("call-small", "floor"): 0.6,
    ("echo-1MiB", "floor"): 0.5,
    ("cpu-5ms", "floor"): 0.9,
    ("call-small", "pyro5"): 2.5,
    ("oneway", "pyro5"): 20.0,
    ("echo-1MiB", "pyro5"): 20.0,
    ("clients-8", "pyro5"): 2.0,
    ("connect", "pyro5"): 1.2,
    ("connect-ident", "pyro5"): 1.2,
}
CHART_MODES = ["pyroact-single", "pyroact-threaded", "pyroact-process"]


def chart_ratios(groups: dict[str, list[Row]], which: str) -> tuple[list[str], list[list[float]]]:
    """Workloads with a ``which`` reference, and per pyroact mode its speed ratio in each."""
    names: list[str] = []
    values: list[list[float]] = [[] for _ in CHART_MODES]
    for name, group_rows in groups.items():
        if name in CURVE_GROUPS or name in (IDLE_GROUP, PAIRED_GROUP):
            continue
        ref = reference(group_rows, which)
        if ref is None or (name == CPU_GROUP and which != "floor"):
            continue
        names.append(name)
        for i, mode in enumerate(CHART_MODES):
            row = _find(groups, name, mode)
            if row is None:
                values[i].append(float("nan"))
            elif name == CPU_GROUP:
                capacity = cpu_capacity(row, ref)
                values[i].append(row.rate / capacity if capacity else float("nan"))
            else:
                values[i].append(ref.time / row.time)
    return names, values


def chart(rows: Sequence[Row], path: str) -> bool:
    """Ratio bars (vs floor, vs Pyro5) per pyroact mode and the two scaling curves.

    Returns False without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = by_group(rows)
    for group_rows in groups.values():  # the CPU rows' capacity needs every raw window
        raw = reference(group_rows, "floor")
        if raw is not None and group_rows[0].group == CPU_GROUP:
            raw.info["all_raw_windows"] = max(
                (r.info.get("raw_windows", []) for r in group_rows), key=len, default=[]
            )
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    panels = ((axes[0][0], "floor", "speed ÷ raw floor (cpu-5ms: ÷ raw parallel capacity)"),
              (axes[0][1], "pyro5", "speed ÷ Pyro5 (default configuration)"))  # fmt: skip
    for ax, which, title in panels:
        names, values = chart_ratios(groups, which)
        width = 0.8 / len(CHART_MODES)
        for i, mode in enumerate(CHART_MODES):
            xs = [k + (i - 1) * width for k in range(len(names))]
            ax.bar(xs, values[i], width, label=mode.replace("pyroact-", ""), color=colors[i])
        for k, name in enumerate(names):
            target = CHART_TARGETS.get((name, which))
            if target is not None:
                ax.hlines(target, k - 0.45, k + 0.45, colors="red", linewidth=2)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_yscale("log")
        ticks = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
        ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
        ax.set_title(title + "; red: target", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, title="pyroact mode", title_fontsize=8)
    curve_panels = ((axes[1][0], "scale-clients", "concurrent clients"),
                    (axes[1][1], "scale-payload", "echo payload (bytes)"))  # fmt: skip
    for ax, name, xlabel in curve_panels:
        group_rows = sorted(groups.get(name, []), key=lambda r: r.name)
        styles = {"pyroact-single": colors[0], "pyroact-threaded": colors[1],
                  "pyroact-process": colors[2], "raw": "black", "pyro5": "grey"}  # fmt: skip
        for row in group_rows:
            points = sorted(curve(row).items())
            if not points:
                continue
            ax.plot([x for x, _ in points], [v[0] for _, v in points], marker="o", markersize=3,
                    label=row.name, color=styles.get(row.name),
                    linestyle="--" if row.info.get("impl") != "pyroact" else "-")  # fmt: skip
        ax.set_xscale("log", base=2 if name == "scale-clients" else 10)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("calls/s", fontsize=8)
        ax.set_title(f"{name}: calls/s", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(which="both", alpha=0.3)
        if group_rows:
            ax.legend(fontsize=7)
        if name == "scale-clients":
            ax.set_xticks(sorted({x for r in group_rows for x in curve(r)}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("json", help="a pytest-benchmark JSON file (--benchmark-json)")
    parser.add_argument("--stat", default="mean", choices=["mean", "median", "min"])
    parser.add_argument("--png", help="also write a bar chart here (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        doc, rows = load(args.json, args.stat)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read {args.json}: {exc}")
    if not rows:
        print(f"{args.json}: no benchmark results (was it run with --benchmark-disable?)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(render(doc, rows, args.stat))
    if args.png and not chart(rows, args.png):
        print("matplotlib is not installed: no chart written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
