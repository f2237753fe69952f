"""Benchmark fixtures and the report written at the end of a run.

* ``server_pool``: server processes, each started once per session and always killed.
* A run that measures (not ``--benchmark-disable``) always leaves a JSON file: the one given
  with ``--benchmark-json``, or else ``benchmarks/results/latest.json``. At the end of the
  session the report (``python -m benchmarks.report``) of that file is written to
  ``benchmarks/results/latest.md``, and its chart to ``benchmarks/results/latest.png`` when
  matplotlib is installed.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks._servers import ServerPool

RESULTS = Path(__file__).resolve().parent / "results"
LATEST = RESULTS / "latest"


@pytest.fixture(scope="session")
def server_pool(request: pytest.FixtureRequest) -> ServerPool:
    """Benchmark servers in separate processes (``pool.get("raw_server.py")``)."""
    pool = ServerPool()
    request.addfinalizer(pool.close)
    return pool


def _measuring(config: pytest.Config) -> bool:
    opt = config.option
    return not any(
        getattr(opt, name, False) for name in ("benchmark_disable", "benchmark_skip", "collectonly")
    ) and config.pluginmanager.hasplugin("benchmark")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before pytest-benchmark's own (trylast) pytest_configure reads the option.
    if _measuring(config) and getattr(config.option, "benchmark_json", None) is None:
        RESULTS.mkdir(exist_ok=True)
        config.option.benchmark_json = open(f"{LATEST}.json", "wb")  # noqa: SIM115
        config._bench_own_json = True  # type: ignore[attr-defined]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the report of the run's JSON (pytest-benchmark has written it by now)."""
    config = session.config
    fh: Any = getattr(config.option, "benchmark_json", None)
    if fh is None or not _measuring(config):
        return
    if not fh.closed:  # no benchmark ran, so pytest-benchmark wrote nothing
        fh.close()
    path = Path(fh.name)
    try:
        with open(path, encoding="utf-8") as src:
            if not json.load(src).get("benchmarks"):
                return
    except (OSError, ValueError):
        return
    from benchmarks import report

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = report.main([str(path), "--png", f"{LATEST}.png"])
    if status != 0:
        return
    text = out.getvalue()
    note = "matplotlib is not installed: no chart written"
    body = text.replace(note + "\n", "")
    Path(f"{LATEST}.md").write_text(
        f"# Benchmark report\n\nFrom `{path}` (`python -m benchmarks.report`).\n\n{body}",
        encoding="utf-8",
    )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        chart = f" and {LATEST}.png" if note not in text else " (no chart: matplotlib missing)"
        reporter.write_line(f"benchmark report: {LATEST}.md{chart} (from {path})")
