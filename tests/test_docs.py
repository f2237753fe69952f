"""Run every ```python block of docs/*.md and README.md as a program of its own.

Each block must be a complete program: it runs alone with ``python -c`` in an empty folder and
exits 0. Blocks that cannot be whole programs (listings, shell sessions) use another fence tag
(``text``, ``pycon``, ``console``, ...), so they are not collected.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
# Pages that need no runnable example of their own.
NO_EXAMPLE = {"index.md"}


def python_blocks(path: Path) -> list[str]:
    return [m.group(1) for m in PYTHON_BLOCK.finditer(path.read_text(encoding="utf-8"))]


BLOCKS = [
    pytest.param(path, index, code, id=f"{path.name}-{index}")
    for path in [*PAGES, ROOT / "README.md"]
    for index, code in enumerate(python_blocks(path))
]


def test_docs_exist() -> None:
    assert PAGES, f"no pages in {DOCS}"
    assert BLOCKS


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p.name not in NO_EXAMPLE], ids=lambda p: p.name
)
def test_page_has_runnable_example(page: Path) -> None:
    assert python_blocks(page), f"{page.name} has no ```python example"


@pytest.mark.parametrize(("path", "index", "code"), BLOCKS)
def test_block_runs(path: Path, index: int, code: str, tmp_path: Path) -> None:
    env = dict(os.environ, PYRO_STORAGE=str(tmp_path), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"{path.name} block {index} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
