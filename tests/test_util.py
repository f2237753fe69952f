"""Tests for pyroact.util: GUIDs, Pyro tracebacks, excepthook, classic logging, ArgParser."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyroact import constants, util

REMOTE_TB = [
    "Traceback (most recent call last):\n",
    '  File "x", line 1, in f\n',
    "ValueError: boom\n",
]
HEADER = " +--- This exception occured remotely (Pyro) - Remote traceback:"
FOOTER = "\n +--- End of remote traceback\n"


def _raise_value_error(message: str = "local boom") -> ValueError:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


# --------------------------------------------------------------------------- GUIDs


def test_guid_is_32_lowercase_hex_chars() -> None:
    for _ in range(50):
        guid = util.getGUID()
        assert len(guid) == 32
        assert re.fullmatch(r"[0-9a-f]{32}", guid), guid


def test_guids_are_unique() -> None:
    guids = {util.getGUID() for _ in range(2000)}
    assert len(guids) == 2000


def test_genguid_scripthelper(capsys: pytest.CaptureFixture[str]) -> None:
    util.genguid_scripthelper([])
    assert re.fullmatch(r"[0-9a-f]{32}\n", capsys.readouterr().out)
    with pytest.raises(SystemExit) as info:
        util.genguid_scripthelper(["extra"])
    assert info.value.code == 1
    assert "Usage: genguid" in capsys.readouterr().out


# --------------------------------------------------------------------------- tracebacks


def test_pyro_traceback_of_local_exception_has_no_remote_section() -> None:
    exc = _raise_value_error()
    lines = util.getPyroTraceback(exc)
    text = "".join(lines)
    assert text.startswith("Traceback (most recent call last):\n")
    assert "_raise_value_error" in text
    assert text.endswith("ValueError: local boom\n")
    assert "occured remotely" not in text
    assert "End of remote traceback" not in text


def test_pyro_traceback_uses_exc_info_without_arguments() -> None:
    try:
        raise KeyError("inside handler")
    except KeyError:
        text = "".join(util.getPyroTraceback())
    assert "KeyError: 'inside handler'" in text
    assert "test_pyro_traceback_uses_exc_info_without_arguments" in text


def test_pyro_traceback_with_explicit_triple() -> None:
    exc = _raise_value_error("triple")
    text = "".join(util.getPyroTraceback(exc, type(exc), exc.__traceback__))
    assert "_raise_value_error" in text
    assert text.endswith("ValueError: triple\n")


def test_pyro_traceback_of_remote_exception_exact_format() -> None:
    exc = _raise_value_error("boom")
    setattr(exc, constants.TRACEBACK_ATTRIBUTE, list(REMOTE_TB))
    lines = util.getPyroTraceback(exc)
    local = util.formatTraceback(type(exc), exc, exc.__traceback__)
    assert lines[: len(local)] == local
    assert lines[len(local) :] == [
        HEADER,
        "\n | ",
        "Traceback (most recent call last):",
        "\n | ",
        '  File "x", line 1, in f',
        "\n | ",
        "ValueError: boom",
        FOOTER,
    ]
    text = "".join(lines)
    assert text.endswith(
        "ValueError: boom\n"
        + HEADER
        + "\n | Traceback (most recent call last):"
        + '\n |   File "x", line 1, in f'
        + "\n | ValueError: boom"
        + "\n +--- End of remote traceback\n"
    )


def test_remote_line_with_embedded_newlines_is_split() -> None:
    exc = _raise_value_error()
    exc.remote_stacktrace = ["first\nsecond\n", "third"]  # type: ignore[attr-defined]
    remote = util.getPyroTraceback(exc)[-7:]
    assert remote == [HEADER, "\n | ", "first", "\n | ", "second", "\n | ", "third", FOOTER][-7:]
    assert "".join(util.getPyroTraceback(exc)).endswith(
        HEADER + "\n | first\n | second\n | third" + FOOTER
    )


def test_empty_remote_stacktrace_means_local_only() -> None:
    exc = _raise_value_error()
    exc.remote_stacktrace = []  # type: ignore[attr-defined]
    assert "occured remotely" not in "".join(util.getPyroTraceback(exc))


def test_format_traceback_plain_matches_stdlib() -> None:
    import traceback

    exc = _raise_value_error()
    assert util.formatTraceback(type(exc), exc, exc.__traceback__) == (
        traceback.format_exception(type(exc), exc, exc.__traceback__)
    )
    # The exception alone is enough.
    assert util.formatTraceback(ex_value=exc) == traceback.format_exception(exc)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class _Thrower:
    def explode(self) -> None:
        secret_marker = "the-local-value-42"
        broken = _BadRepr()
        long_value = "x" * 5000
        assert broken is not None and long_value and secret_marker
        raise ZeroDivisionError("detailed")


def test_detailed_traceback_contains_locals() -> None:
    try:
        _Thrower().explode()
    except ZeroDivisionError as exc:
        lines = util.formatTraceback(type(exc), exc, exc.__traceback__, detailed=True)
    text = "".join(lines)
    assert "Local values:" in text
    assert "'the-local-value-42'" in text
    assert "secret_marker" in text
    assert "_Thrower::explode" in text
    assert "Source code:" in text
    assert 'raise ZeroDivisionError("detailed")' in text
    assert " <ZeroDivisionError> RAISED : detailed\n" in text
    assert "broken = <unrepresentable _BadRepr object>" in text
    # The 5000-char string is truncated, not dumped whole.
    assert "x" * 5000 not in text
    assert "long_value = 'xxx" in text
    assert all(isinstance(line, str) for line in lines)


def test_detailed_traceback_defaults_to_exc_info() -> None:
    try:
        local_in_handler = "handler-local"  # noqa: F841 - must appear in the dump
        raise OSError("via exc_info")
    except OSError:
        text = "".join(util.formatTraceback(detailed=True))
    assert "via exc_info" in text
    assert "'handler-local'" in text


def test_excepthook_writes_pyro_traceback_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    exc = _raise_value_error("hooked")
    exc.remote_stacktrace = list(REMOTE_TB)  # type: ignore[attr-defined]
    util.excepthook(type(exc), exc, exc.__traceback__)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ValueError: hooked\n" in captured.err
    assert HEADER in captured.err
    assert "\n | ValueError: boom" in captured.err
    assert captured.err.endswith(FOOTER)
    assert captured.err == "".join(util.getPyroTraceback(exc))


def test_excepthook_is_usable_as_sys_excepthook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "excepthook", util.excepthook)
    exc = _raise_value_error("via sys")
    sys.excepthook(type(exc), exc, exc.__traceback__)
    assert "ValueError: via sys" in capsys.readouterr().err


# --------------------------------------------------------------------------- logging

LINE_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \[(\d+):([^\]]+)\] \*\* (NOTE|WARN|ERR!) \*\* (.*)$"
)


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """Restore the pyroact loggers (levels and handlers) after a test."""
    loggers = [logging.getLogger(util.SYSTEM_LOGGER_NAME), logging.getLogger(util.USER_LOGGER_NAME)]
    saved = [(lg.level, list(lg.handlers)) for lg in loggers]
    yield
    util.configure_logging(0, None, 0, None)
    for lg, (level, handlers) in zip(loggers, saved, strict=True):
        lg.setLevel(level)
        lg.handlers[:] = handlers


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.usefixtures("clean_logging")
def test_classic_log_line_format(tmp_path: Path) -> None:
    logfile = tmp_path / "Pyro_log"
    util.configure_logging(3, str(logfile), 0, None)
    util.Log.msg("Daemon", "started", 42)
    util.Log.warn("NS", "name", "exists")
    util.Log.error("only message")
    lines = _read_lines(logfile)
    assert len(lines) == 3
    parsed = [LINE_RE.match(line) for line in lines]
    assert all(parsed), lines
    first = parsed[0]
    assert first is not None
    assert first.group(2) == str(os.getpid())
    assert first.group(3) == threading.current_thread().name
    assert [m.group(4) for m in parsed if m] == ["NOTE", "WARN", "ERR!"]
    assert [m.group(5) for m in parsed if m] == [
        "Daemon ** started 42",
        "NS ** name exists",
        "N/A ** only message",
    ]


@pytest.mark.usefixtures("clean_logging")
def test_trace_levels_filter(tmp_path: Path) -> None:
    logfile = tmp_path / "levels.log"
    util.configure_logging(2, str(logfile), 0, None)
    util.Log.msg("src", "note hidden")
    util.Log.warn("src", "warn shown")
    util.Log.error("src", "error shown")
    util.configure_logging(1, str(logfile), 0, None)
    util.Log.warn("src", "warn hidden")
    util.Log.error("src", "error shown again")
    util.Log.raw("RAW BANNER\n")
    # Level 0 removes the file handler: the application's logging setup decides alone.
    util.configure_logging(0, str(logfile), 0, None)
    util.Log.error("src", "error hidden")
    lines = _read_lines(logfile)
    assert [line.split(" ** ", 1)[1] for line in lines[:3]] == [
        "WARN ** src ** warn shown",
        "ERR! ** src ** error shown",
        "ERR! ** src ** error shown again",
    ]
    # raw() is unconditional (whatever the level) and verbatim, as in Pyro 3.
    assert lines[3:] == ["RAW BANNER"]


@pytest.mark.usefixtures("clean_logging")
def test_user_logger_uses_its_own_file(tmp_path: Path) -> None:
    system_file = tmp_path / "sys.log"
    user_file = tmp_path / "user.log"
    util.configure_logging(3, str(system_file), 2, str(user_file))
    user = util.UserLogger()
    user.msg("app", "hidden at level 2")
    user.warn("app", "careful")
    util.UserLogger().error("app", "bad")
    assert [line.split(" ** ", 1)[1] for line in _read_lines(user_file)] == [
        "WARN ** app ** careful",
        "ERR! ** app ** bad",
    ]
    assert not system_file.exists()  # file handlers open lazily


@pytest.mark.usefixtures("clean_logging")
def test_configure_logging_is_idempotent(tmp_path: Path) -> None:
    logfile = tmp_path / "idem.log"
    system = logging.getLogger(util.SYSTEM_LOGGER_NAME)
    before = len(system.handlers)
    for _ in range(3):
        util.configure_logging(3, str(logfile), 3, None)
    assert len(system.handlers) == before + 1
    util.Log.msg("once")
    assert len(_read_lines(logfile)) == 1

    other = tmp_path / "other.log"
    util.configure_logging(3, str(other), 3, None)
    assert len(system.handlers) == before + 1
    util.Log.msg("moved")
    assert len(_read_lines(logfile)) == 1
    assert len(_read_lines(other)) == 1

    util.configure_logging(3, None, 3, None)
    assert len(system.handlers) == before


@pytest.mark.usefixtures("clean_logging")
def test_relative_logfile_resolved_against_storage(tmp_path: Path) -> None:
    util.configure_logging(3, "rel.log", 0, None, storage=str(tmp_path))
    util.Log.msg("x", "y")
    assert (tmp_path / "rel.log").exists()


@pytest.mark.usefixtures("clean_logging")
def test_records_propagate_to_stdlib_logging(caplog: pytest.LogCaptureFixture) -> None:
    util.configure_logging(3, None, 0, None)
    with caplog.at_level(logging.DEBUG, logger=util.SYSTEM_LOGGER_NAME):
        util.Log.warn("Src", "a", "b")
    record = caplog.records[-1]
    assert record.name == "pyroact.system"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "Src ** a b"


def test_classic_formatter_for_foreign_records() -> None:
    record = logging.LogRecord("pyroact.core", logging.INFO, __file__, 1, "hello %s", ("w",), None)
    line = util.ClassicFormatter().format(record)
    match = LINE_RE.match(line)
    assert match is not None
    assert match.group(4) == "NOTE"
    assert match.group(5) == "pyroact.core ** hello w"


def test_trace_level_mapping() -> None:
    assert util.trace_level_to_logging(3) == logging.DEBUG
    assert util.trace_level_to_logging(7) == logging.DEBUG
    assert util.trace_level_to_logging(2) == logging.WARNING
    assert util.trace_level_to_logging(1) == logging.ERROR
    assert util.trace_level_to_logging(0) > logging.CRITICAL
    assert util.trace_level_to_logging(-1) > logging.CRITICAL


# --------------------------------------------------------------------------- threads


def test_thread_helpers() -> None:
    assert util.supports_multithreading() is True
    assert util.supports_compression() is True
    lock = util.getLockObject()
    assert lock.acquire(blocking=False)
    assert not lock.acquire(blocking=False)
    lock.release()
    rlock = util.getRLockObject()
    with rlock, rlock:
        pass
    event = util.getEventObject()
    assert not event.is_set()
    event.set()
    assert event.wait(0)


# --------------------------------------------------------------------------- ArgParser


def test_argparser_options_values_and_positionals() -> None:
    parser = util.ArgParser()
    argv = ["-a", "pos1", "-b", "value", "-cx", "pos2", "-dinline"]
    parser.parse(argv, "ab:cd:")
    assert argv == ["-a", "pos1", "-b", "value", "-cx", "pos2", "-dinline"]  # not consumed
    assert parser.hasOpt("a")
    assert parser.getOpt("a") is None
    assert parser.getOpt("b") == "value"
    assert parser.getOpt("c") is None
    assert parser.getOpt("d") == "inline"
    assert parser.args == ["pos1", "pos2"]
    assert parser.ignored == ["x"]


def test_argparser_missing_option() -> None:
    parser = util.ArgParser()
    parser.parse("-a foo", "ab:")
    assert not parser.hasOpt("b")
    with pytest.raises(KeyError, match="no such option"):
        parser.getOpt("b")
    assert parser.getOpt("b", "dflt") == "dflt"
    assert parser.getOpt("b", None) is None
    assert parser.args == ["foo"]


def test_argparser_value_option_at_end_and_dash_terminator() -> None:
    parser = util.ArgParser()
    parser.parse(["-v", "x", "-", "-a", "-b"], "ab:v")
    assert parser.args == ["x", "-a", "-b"]
    assert not parser.hasOpt("a")
    parser.parse(["-b"], "ab:")
    assert parser.hasOpt("b")
    assert parser.getOpt("b") is None
    assert parser.args == []  # previous results are reset


def test_argparser_colon_is_not_an_option() -> None:
    parser = util.ArgParser()
    parser.parse(["-:", "-q"], "b:")
    assert parser.options == {}
    assert parser.ignored == [":", "q"]


def test_argparser_print_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    parser = util.ArgParser()
    parser.parse(["-x", "-y", "-a"], "a")
    parser.printIgnored()
    assert capsys.readouterr().out == "Ignored options: -x -y\n"
    parser.parse(["-a"], "a")
    parser.printIgnored()
    assert capsys.readouterr().out == ""
