"""``python -m benchmarks.profile`` stays alive: one short window per workload shape.

The profile itself is a tool, not a benchmark; this only checks that it runs and reports
sane figures (it runs in CI with the rest of ``benchmarks/``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import profile

pytestmark = pytest.mark.timeout(120)


def test_profile_reports_every_row_with_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "profile.md"
    profile.main([
        "--workloads", "call-small,oneway,connect-ident",
        "--targets", "pyroact-single,pyroact-process,raw",
        "--window", "0.1", "--rounds", "1", "--out", str(out),
    ])  # fmt: skip
    text = out.read_text()
    for workload in ("call-small", "oneway", "connect-ident"):
        assert f"### {workload}" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| pyroact")]
    assert len(rows) == 6  # two pyroact targets × three workloads
    for cells in rows:
        ops, wall = int(cells[1]), float(cells[2])
        assert ops > 0 and wall > 0
    # The floor has no oneway calls, so its row is left out of that workload only.
    assert text.count("| raw |") == 2


def test_profile_refuses_an_unknown_workload() -> None:
    with pytest.raises(SystemExit):
        profile.main(["--workloads", "nonsense"])
