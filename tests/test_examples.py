"""Run every program in examples/ and check that it exits 0 and prints its key line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# One line (substring) per example that only appears when the feature really worked.
EXPECTED = {
    "quickstart.py": "Hello, again!",
    "attributes.py": "server-side sub2 after nested assignment: original",
    "autorebind.py": "rebound; pong 2",
    "multithreading.py": "threaded daemon, SyncWorker: 3 calls of 0.2s took",
    "proxies_over_calls.py": "transfer 30 alice -> bob, balances: (70, 30)",
    "tls.py": "single  : oneway call saw caller: True",
    "publishhost.py": "URI with PYRO_DNS_URI on (host name kept): PYRO://localhost:",
    "callbacks.py": "client saw its callback fail: ValueError",
    "exceptions.py": "not rebuildable here, got RemoteError: __main__.UnshippableError",
    "daemon_access.py": "ResolvePYROLOC('my.thing') is thing's GUID: True",
    "timeouts_reaping.py": "job reaped after idling: True",
    "usage_rules.py": "after remote += 50: 60 still a proxy: DynamicProxyWithAttrs",
    "demo.py": "primes below 1,000,000: 78498",
    "mobile_code.py": "downloaded goods.Basket from the server: total 9",
}
# The feature examples also end with "<name> done"; demo.py (the README demo) does not.
NO_DONE_LINE = {"demo.py"}


def test_every_example_has_an_expectation() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path) -> None:
    env = dict(os.environ, PYRO_STORAGE=str(tmp_path), PYTHONUNBUFFERED="1")
    root = str(EXAMPLES.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert EXPECTED[name] in result.stdout, output
    if name not in NO_DONE_LINE:
        assert f"{name[:-3]} done" in result.stdout, output
