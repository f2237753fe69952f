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

The CPU group (``cpu-5ms``, from ``benchmarks/test_cpu.py``) is different: each row is one
window of 4 clients (or, for ``raw-*``, plain processes) and its figure is calls/s
(``extra_info["calls_per_s"]``); **vs raw capacity** divides it by the ``raw-capacity`` row
(as many plain processes as cores looping the same burn function, no RPC, same window).

After the tables comes a check of the targets of issues 4 and 5 that this suite measures, per
pyroact server mode. The chart needs matplotlib; without it ``--png`` prints a note and is
skipped.
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
    "connect",
    "cpu-5ms",
]
CPU_GROUP = "cpu-5ms"
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


def cpu_table(rows: Sequence[Row]) -> str:
    """The CPU group: calls/s per row and the ratio to the raw parallel capacity."""
    raw = reference(rows, "floor")
    windows = max((r.info.get("raw_windows", []) for r in rows), key=len, default=[])
    if raw is not None:
        raw.info["all_raw_windows"] = windows
    head = ["target", "details", "clients / processes", "window", "calls/s", "vs raw capacity",
            "cores: server", "cores: other processes"]  # fmt: skip
    lines = [f"### {CPU_GROUP}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        info = row.info
        cells = [f"**{row.name}**" if info.get("impl") == "pyroact" else row.name, describe(row)]
        cells.append(str(info.get("clients", "?")))
        window = f"{info['window_s']:g} s" if "window_s" in info else "?"
        if int(info.get("cpu_windows", 1)) > 1:
            window += f" (window {info['cpu_windows']} of {info['cpu_windows']})"
        if info.get("cpu_disturbed"):
            window += " **disturbed**"
        cells.append(window)
        cells.append(f"{row.rate:.1f}")
        cells.append(fmt_cpu_ratio(row, raw))
        server = info.get("cpu_server") if not row.is_floor and info.get("impl") != "raw" else None
        cells.append(f"{server:.2f}" if server is not None else "—")
        cells.append(f"{info['cpu_other']:.2f}" if "cpu_other" in info else "—")
        lines.append("| " + " | ".join(cells) + " |")
    burn = rows[0].info.get("burn_iterations") if rows else None

    lines += [
        "",
        f"One window per row; each call (or raw burn) runs the same {burn} iteration pure-Python"
        " loop (~5 ms). *cores: other processes* is what the rest of the machine used during"
        " the window (other work competing for the cores); a window where it reached 0.15 core"
        " was measured again (up to 4 windows), and *disturbed* marks a row with no clean"
        " window.",
    ]
    if windows:
        lines += [
            "",
            "Raw-capacity windows in this run (burns/s, other processes' cores): "
            + ", ".join(f"{rate:.1f} ({other:.2f})" for rate, other in windows)
            + "; each *vs raw capacity* uses the highest measured before that row.",
        ]
    return "\n".join(lines)


def group_table(name: str, rows: Sequence[Row], stat: str) -> str:
    if name == CPU_GROUP:
        return cpu_table(rows)
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
        ("connect + first call ≥ 1.2× Pyro5", "connect", "pyro5", 1.2),
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
    # A trivial call in the process mode costs at most twice its cost in the threaded mode.
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


def chart(rows: Sequence[Row], path: str) -> bool:
    """A bar chart of each figure's speed against the floor (or Pyro5); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = {
        g: r for g, r in by_group(rows).items() if reference(r, "floor") or reference(r, "pyro5")
    }
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.2 + 0.45 * len(rows)), squeeze=False)
    for ax, (name, group_rows) in zip(axes[:, 0], groups.items(), strict=True):
        floor = reference(group_rows, "floor")
        ref = floor or reference(group_rows, "pyro5")
        assert ref is not None
        if name == CPU_GROUP:  # calls/s against the raw parallel capacity
            values = [r.rate / ref.rate for r in group_rows]
        else:
            values = [ref.time / r.time for r in group_rows]
        ax.barh([r.name for r in group_rows], values)
        ax.axvline(1.0, color="grey", linewidth=0.8)
        against = "raw capacity" if name == CPU_GROUP else "raw floor" if floor else "Pyro5"
        ax.set_title(f"{name}: speed vs {against}", fontsize=9)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
