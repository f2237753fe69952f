"""The frame layout spec is self-consistent, both engines use it, and wire picks an engine."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pyroact.wire as wire_module
from pyroact import _purewire
from pyroact import _wirespec as spec

ROOT = Path(__file__).resolve().parent.parent


def fast_engine() -> ModuleType | None:
    try:
        return importlib.import_module("pyroact._fastwire")
    except ImportError:
        return None


def header_table() -> list[tuple[int, int, str]]:
    """(offset, size, field) rows of the fixed-header table in the module docstring."""
    doc = spec.__doc__ or ""
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\w+)\s{2,}", doc, flags=re.MULTILINE)
    return [(int(off), int(size), name) for off, size, name in rows]


# --------------------------------------------------------------------------- self-consistency


def test_header_size_is_24() -> None:
    assert spec.HEADER_SIZE == spec.HEADER_STRUCT.size == 24
    assert spec.HEADER_STRUCT.format == "!4sHBBHHIIHH"
    assert spec.BUFLEN_SIZE == spec.BUFLEN_STRUCT.size == 8


def test_docstring_table_matches_the_struct() -> None:
    rows = header_table()
    assert [name for _, _, name in rows] == [
        "magic",
        "version",
        "msg_type",
        "objid_len",
        "flags",
        "method_len",
        "seq",
        "payload_len",
        "nbuffers",
        "mac_len",
    ]
    # Contiguous, and covering exactly the header.
    position = 0
    for offset, size, _ in rows:
        assert offset == position
        position += size
    assert position == spec.HEADER_SIZE
    # Each field lands where the table says: pack distinct values and read them back.
    values = [
        spec.MAGIC,
        0x0102,
        0x03,
        0x04,
        0x0506,
        0x0708,
        0x090A0B0C,
        0x0D0E0F10,
        0x1112,
        0x1314,
    ]
    packed = spec.HEADER_STRUCT.pack(*values)
    for (offset, size, name), value in zip(rows, values, strict=True):
        field = packed[offset : offset + size]
        expected = value if isinstance(value, bytes) else value.to_bytes(size, "big")
        assert field == expected, name


def test_magic_is_not_pyro() -> None:
    assert spec.MAGIC != b"PYRO"  # a Pyro 3/4/5 peer fails on the first four bytes
    assert len(spec.MAGIC) == 4 and spec.MAGIC == b"PRAC"
    assert isinstance(spec.PROTOCOL_VERSION, int) and 0 < spec.PROTOCOL_VERSION <= 0xFFFF


def test_message_types_unique_and_named() -> None:
    names = [n for n in dir(spec) if n.startswith("MSG_") and n not in ("MSG_TYPES", "MSG_NAMES")]
    numbers = [getattr(spec, n) for n in names]
    assert len(set(numbers)) == len(numbers) == 9
    assert set(numbers) == spec.MSG_TYPES
    assert set(spec.MSG_NAMES) == spec.MSG_TYPES
    assert len(set(spec.MSG_NAMES.values())) == len(spec.MSG_NAMES)
    for name in names:
        assert spec.MSG_NAMES[getattr(spec, name)] == name.removeprefix("MSG_")
    assert all(0 < n <= 0xFF for n in spec.MSG_TYPES)  # fits the u8 field


def test_flags_are_distinct_bits() -> None:
    flags = [getattr(spec, n) for n in dir(spec) if n.startswith("FLAG_")]
    assert len(flags) == 4
    combined = 0
    for flag in flags:
        assert flag > 0 and flag & (flag - 1) == 0, hex(flag)  # a single bit
        assert combined & flag == 0  # not shared with another flag
        combined |= flag
    assert combined == spec.FLAGS_KNOWN
    assert spec.FLAGS_KNOWN <= 0xFFFF  # fits the u16 field


def test_limits_fit_their_fields() -> None:
    assert spec.MAX_OBJID_LEN == 0xFF
    assert spec.MAX_METHOD_LEN <= 0xFFFF
    assert spec.MAX_BUFFERS <= 0xFFFF
    assert spec.MAC_SIZE <= 0xFFFF
    assert spec.MAX_SEQ == spec.MAX_PAYLOAD_LEN == 2**32 - 1
    assert spec.JOIN_PAYLOAD_THRESHOLD < spec.LARGE_FRAME_THRESHOLD
    # The receive buffer starts small (one per connection) and grows for bigger frames.
    assert spec.HEADER_SIZE <= spec.RECV_BUFFER_SIZE <= spec.LARGE_FRAME_THRESHOLD
    assert spec.DEFAULT_MAX_MESSAGE_SIZE == 1 << 30


# --------------------------------------------------------------------------- engine constants


def expected_constants() -> dict[str, object]:
    return {
        name: getattr(spec, name)
        for name in (
            "MAGIC",
            "PROTOCOL_VERSION",
            "HEADER_SIZE",
            "BUFLEN_SIZE",
            "MAX_OBJID_LEN",
            "MAX_METHOD_LEN",
            "MAX_BUFFERS",
            "MAC_SIZE",
            "FLAGS_KNOWN",
            "MSG_TYPES",
            "LARGE_FRAME_THRESHOLD",
            "JOIN_PAYLOAD_THRESHOLD",
            "RECV_BUFFER_SIZE",
            "DEFAULT_MAX_MESSAGE_SIZE",
        )
    }


def test_engine_constants_equal_the_spec(wire: ModuleType) -> None:
    constants = wire._constants()
    assert constants == expected_constants()
    for name, value in constants.items():
        assert type(value) is type(getattr(spec, name)), name


def test_both_engines_report_the_same_constants() -> None:
    fast = fast_engine()
    if fast is None:
        pytest.skip("pyroact._fastwire is not built")
    assert fast._constants() == _purewire._constants()


# --------------------------------------------------------------------------- engine selection


def test_in_process_selection_follows_the_environment() -> None:
    if os.environ.get("PYROACT_PUREPYTHON"):
        expected = "python"
    else:
        expected = "cython" if fast_engine() is not None else "python"
    assert wire_module.IMPLEMENTATION == expected
    assert wire_module.FASTWIRE is (expected == "cython")
    engine = fast_engine() if expected == "cython" else _purewire
    assert engine is not None
    assert wire_module.FrameDecoder is engine.FrameDecoder
    assert wire_module.Frame is engine.Frame
    assert wire_module.encode_frame is engine.encode_frame
    assert wire_module.spec is spec


def _selection_in_subprocess(purepython: str | None) -> tuple[str, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYROACT_PUREPYTHON"}
    if purepython is not None:
        env["PYROACT_PUREPYTHON"] = purepython
    code = (
        "import pyroact.wire as w; print(w.IMPLEMENTATION, w.FASTWIRE, w.FrameDecoder.__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    implementation, fastwire, module = result.stdout.split()
    return implementation, fastwire, module


def test_purepython_environment_selects_the_python_engine() -> None:
    assert _selection_in_subprocess("1") == ("python", "False", "pyroact._purewire")


def test_default_selects_the_cython_engine_when_built() -> None:
    if fast_engine() is None:
        expected = ("python", "False", "pyroact._purewire")
    else:
        expected = ("cython", "True", "pyroact._fastwire")
    assert _selection_in_subprocess(None) == expected
