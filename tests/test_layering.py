"""The import direction of ARCHITECTURE §2: a module imports only from layers below its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyroact"

LAYERS: dict[str, int] = {
    "errors": 0,
    "constants": 0,
    "_wirespec": 0,
    "configuration": 1,
    "_fastwire": 1,
    "_purewire": 1,
    "wire": 2,
    "serializer": 2,
    "util": 2,
    "_connection": 3,
    "transport": 4,
    "_mailbox": 4,
    "_board": 4,
    "_readconns": 4,
    "_serverbase": 4,
    "svr_single": 5,
    "svr_threads": 5,
    "svr_procpool": 5,
    "_worker": 8,
    "protocol": 6,
    "_procroutes": 6,
    "core": 7,
    "naming": 8,
    "mobile": 8,
    "nameserver": 9,
    "eventservice": 9,
    "nsc": 9,
}
ENGINES = {"_fastwire", "_purewire"}
NO_IO = {"socket", "threading", "selectors", "logging", "multiprocessing", "ssl", "asyncio"}
# naming resolves NameServer & co. from pyroact.nameserver lazily (PEP 562): the one sanctioned
# upward reference.
ALLOWED_UPWARD = {("naming", "nameserver")}


def module_key(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports_of(path: Path) -> set[str]:
    """Top-level module names imported by a .py or .pyx file, pyroact ones as 'pyroact.X'."""
    text = path.read_text()
    names: set[str] = set()
    if path.suffix == ".pyx":
        for match in re.finditer(
            r"^\s*(?:from\s+([\w.]+)\s+c?import|c?import\s+([\w.]+))", text, re.M
        ):
            names.add(match.group(1) or match.group(2))
        return names
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _relative_base(path, node.level)
                if node.module:
                    names.add(f"{base}.{node.module}")
                else:
                    names.update(f"{base}.{alias.name}" for alias in node.names)
            elif node.module:
                names.add(node.module)
    return names


def _relative_base(path: Path, level: int) -> str:
    parts = ["pyroact", *path.relative_to(PACKAGE).parts[:-1]]
    return ".".join(parts[: len(parts) - level + 1])


def pyroact_target(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "pyroact" or len(parts) == 1:
        return None
    return parts[1]


SOURCES = sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyx")])


def test_every_module_has_a_layer() -> None:
    unknown = {module_key(p) for p in SOURCES if module_key(p) not in LAYERS} - {"__init__"}
    assert not unknown, f"modules without a layer in ARCHITECTURE §2: {sorted(unknown)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    key = module_key(path)
    if key == "__init__":
        return
    layer = LAYERS[key]
    for name in imports_of(path):
        target = pyroact_target(name)
        if target is None or target == "__init__" or target == key:
            continue
        if (key, target) in ALLOWED_UPWARD:
            continue
        assert target in LAYERS, f"{path.name} imports unknown pyroact module {name}"
        assert LAYERS[target] < layer, (
            f"{path.relative_to(PACKAGE)} (layer {layer}) imports {name} "
            f"(layer {LAYERS[target]}): imports must point to lower layers"
        )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_wire_imports_the_engines(path: Path) -> None:
    if module_key(path) in {"wire", *ENGINES}:
        return
    engines = {pyroact_target(n) for n in imports_of(path)} & ENGINES
    assert not engines, f"{path.name} imports {engines}; only pyroact.wire may choose an engine"


@pytest.mark.parametrize("name", ["_fastwire.pyx", "_purewire.py", "_connection.py"])
def test_sans_io_modules_import_no_io(name: str) -> None:
    path = PACKAGE / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    used = {n.split(".")[0] for n in imports_of(path)} & NO_IO
    assert not used, f"{name} must stay sans-IO but imports {sorted(used)}"
    if name in {"_fastwire.pyx", "_purewire.py"}:
        assert "pyroact.configuration" not in imports_of(path)


def test_the_checker_sees_pyx_imports() -> None:
    found = imports_of(PACKAGE / "_fastwire.pyx")
    assert "pyroact.errors" in found and "cython" in found
