"""Miscellaneous utilities: GUIDs, traceback formatting, logging, thread helpers, ArgParser.

This is the port of Pyro 3's ``Pyro.util`` (layer 2: imports only the standard library and
:mod:`pyroact.errors` / :mod:`pyroact.constants`). The Pyro 3 camelCase names are the public
contract and are kept as they were.

Logging always goes through :mod:`logging`, with the loggers ``pyroact.system`` (Pyro 3's
``Pyro.util.Log``) and ``pyroact.user`` (``Pyro.util.UserLogger()``). Until
:func:`configure_logging` installs the classic file handler, records only propagate to
whatever the application configured: a :class:`logging.NullHandler` on each logger keeps
:mod:`logging` from dumping warnings of an unconfigured library onto stderr.
"""

from __future__ import annotations

import linecache
import logging
import os
import secrets
import sys
import threading
import traceback
from collections.abc import Iterable, Sequence
from types import FrameType, TracebackType
from typing import Any, Final, TypeVar, overload

from pyroact import constants

__all__ = [
    "ArgParser",
    "ClassicFormatter",
    "Log",
    "SYSTEM_LOGGER_NAME",
    "SystemLogger",
    "USER_LOGGER_NAME",
    "UserLogger",
    "configure_logging",
    "excepthook",
    "formatTraceback",
    "genguid_scripthelper",
    "getEventObject",
    "getGUID",
    "getLockObject",
    "getPyroTraceback",
    "getRLockObject",
    "supports_compression",
    "supports_multithreading",
    "trace_level_to_logging",
]

_T = TypeVar("_T")


# --------------------------------------------------------------------------- GUIDs


def getGUID() -> str:  # noqa: N802 - Pyro 3 name
    """Return a new globally unique id: 32 lowercase hex characters (128 random bits).

    Pyro 3 built GUIDs from the IP address, pid, time and ``random.random()``; those were
    guessable, and transient object ids act as capabilities, so pyroact uses the OS CSPRNG.

    Returns:
        The GUID string, always exactly 32 characters from ``0-9a-f``.
    """
    return secrets.token_hex(16)


def genguid_scripthelper(argv: Sequence[str]) -> None:
    """Implement the ``pyro-genguid`` tool: print one new GUID.

    Args:
        argv: the command-line arguments without the program name; there must be none.

    Raises:
        SystemExit: with status 1 after printing the usage text when arguments were given.
    """
    parser = ArgParser()
    parser.parse(list(argv), "")
    if parser.args or parser.ignored:
        print("Usage: genguid  (no arguments)")
        print("This tool generates Pyro UIDs.")
        raise SystemExit(1)
    print(getGUID())


# --------------------------------------------------------------------------- tracebacks

_SEPARATOR: Final = "-" * 50 + "\n"
_MAX_REPR: Final = 200
_REMOTE_HEADER: Final = " +--- This exception occured remotely (Pyro) - Remote traceback:"
_REMOTE_LINE_PREFIX: Final = "\n | "
_REMOTE_FOOTER: Final = "\n +--- End of remote traceback\n"

_ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


def _resolve_exc_info(
    ex_type: type[BaseException] | None,
    ex_value: BaseException | None,
    ex_tb: TracebackType | None,
) -> _ExcInfo:
    """Fill in the parts of an exception triple the caller left out."""
    if isinstance(ex_type, BaseException) and ex_value is None:
        # Pyro 4 style call that passes only the exception object as the first argument.
        ex_type, ex_value = None, ex_type
    if ex_value is not None:
        if ex_type is None:
            ex_type = type(ex_value)
        if ex_tb is None:
            ex_tb = ex_value.__traceback__
        return ex_type, ex_value, ex_tb
    if ex_type is None and ex_tb is None:
        return sys.exc_info()
    return ex_type, ex_value, ex_tb


def _safe_repr(value: object) -> str:
    """Return a truncated ``repr`` of *value* that never raises."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the original error
        try:
            text = f"<unrepresentable {type(value).__qualname__} object>"
        except Exception:  # noqa: BLE001
            text = "<ERROR>"
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return text


def _frame_display_name(frame: FrameType) -> str:
    """Return ``Class::function`` for methods (Pyro 3's notation), else the function name."""
    name = frame.f_code.co_name
    try:
        instance = frame.f_locals.get("self")
    except Exception:  # noqa: BLE001 - f_locals can fail for exotic frames
        instance = None
    if instance is not None:
        try:
            return f"{type(instance).__name__}::{name}"
        except Exception:  # noqa: BLE001
            pass
    return name


def _format_detailed(
    ex_type: type[BaseException] | None,
    ex_value: BaseException | None,
    ex_tb: TracebackType | None,
) -> list[str]:
    """Build Pyro 3's extended stack trace, with source lines and each frame's locals."""
    raised = f" <{_type_name(ex_type)}> RAISED : {_safe_text(ex_value)}\n"
    result = [
        _SEPARATOR,
        raised,
        " Extended Stacktrace follows (most recent call last)\n",
        _SEPARATOR,
    ]
    tb = ex_tb
    while tb is not None:
        frame = tb.tb_frame
        line_number = tb.tb_lineno
        filename = frame.f_code.co_filename
        result.append(f'File "{filename}", line ({line_number}), in {_frame_display_name(frame)}\n')
        result.append("Source code:\n")
        code_line = linecache.getline(filename, line_number, frame.f_globals)
        if code_line:
            result.append(f"    {code_line.strip()}\n")
        result.append("Local values:\n")
        for key, value in sorted(frame.f_locals.items(), key=lambda item: str(item[0])):
            result.append(f"  {key:>20} = {_safe_repr(value)}\n")
        result.append(_SEPARATOR)
        tb = tb.tb_next
    result.append(raised)
    result.append(_SEPARATOR)
    return result


def _type_name(cls: type[BaseException] | None) -> str:
    """Return ``module.QualName`` of an exception class (just the name for builtins)."""
    if cls is None:
        return "None"
    module = getattr(cls, "__module__", "builtins")
    qualname = getattr(cls, "__qualname__", repr(cls))
    return qualname if module == "builtins" else f"{module}.{qualname}"


def _safe_text(value: object) -> str:
    """Return ``str(value)``, or a placeholder when ``__str__`` itself fails."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001
        return _safe_repr(value)


def formatTraceback(  # noqa: N802 - Pyro 3 name
    ex_type: type[BaseException] | None = None,
    ex_value: BaseException | None = None,
    ex_tb: TracebackType | None = None,
    detailed: bool = False,
) -> list[str]:
    """Format an exception as a list of strings, like :func:`traceback.format_exception`.

    With *detailed* (Pyro 3's ``PYRO_DETAILED_TRACEBACK``) every frame also shows its source
    line and a ``Local values:`` dump of its locals. That leaks data to whoever receives the
    traceback, so it is meant for debugging only.

    Args:
        ex_type: the exception class; taken from ``sys.exc_info()`` when it and *ex_tb* are
            None and no *ex_value* is given.
        ex_value: the exception; its ``__traceback__`` is used when *ex_tb* is None.
        ex_tb: the traceback.
        detailed: produce the extended format with locals.

    Returns:
        The traceback text split into strings, each ending in a newline.

    Raises:
        Nothing: a failure while building the extended format is reported inside the result.
    """
    ex_type, ex_value, ex_tb = _resolve_exc_info(ex_type, ex_value, ex_tb)
    try:
        if not detailed:
            return traceback.format_exception(ex_type, ex_value, ex_tb)
        try:
            return _format_detailed(ex_type, ex_value, ex_tb)
        except Exception:  # noqa: BLE001 - fall back, as Pyro 3 did, rather than lose the error
            return [
                _SEPARATOR + "Error building extended traceback!!! :\n",
                traceback.format_exc() + _SEPARATOR,
                "Original Exception follows:\n",
                "".join(traceback.format_exception(ex_type, ex_value, ex_tb)),
            ]
    finally:
        # Dropping the traceback reference breaks the frame <-> traceback cycle early.
        del ex_tb


def _format_remote_traceback(remote_tb_lines: Iterable[str] | str) -> list[str]:
    """Render remote traceback lines in Pyro 3's boxed ``" | "`` format."""
    if isinstance(remote_tb_lines, str):
        remote_tb_lines = [remote_tb_lines]
    result = [_REMOTE_HEADER]
    for line in remote_tb_lines:
        line = str(line)
        if line.endswith("\n"):
            line = line[:-1]
        for part in line.split("\n"):
            result.append(_REMOTE_LINE_PREFIX)
            result.append(part)
    result.append(_REMOTE_FOOTER)
    return result


def getPyroTraceback(  # noqa: N802 - Pyro 3 name
    exc_obj: BaseException | None = None,
    exc_type: type[BaseException] | None = None,
    exc_trb: TracebackType | None = None,
) -> list[str]:
    """Return the local traceback followed by the remote one, in Pyro 3's format.

    The remote part is present only when the exception carries a ``remote_stacktrace``
    attribute (:data:`pyroact.constants.TRACEBACK_ATTRIBUTE`)::

        <local traceback lines>
         +--- This exception occured remotely (Pyro) - Remote traceback:
         | <remote line>
         | ...
         +--- End of remote traceback

    Args:
        exc_obj: the exception; with only this argument its ``__traceback__`` is used.
            With no arguments at all the exception being handled (``sys.exc_info()``) is used.
        exc_type: the exception class (defaults to ``type(exc_obj)``).
        exc_trb: the local traceback (defaults to ``exc_obj.__traceback__``).

    Returns:
        A list of strings; ``"".join()`` of it is the printable text.

    Raises:
        Nothing: works for local exceptions without a remote traceback too.
    """
    exc_type, exc_obj, exc_trb = _resolve_exc_info(exc_type, exc_obj, exc_trb)
    try:
        local_tb = formatTraceback(exc_type, exc_obj, exc_trb)
        remote_tb = getattr(exc_obj, constants.TRACEBACK_ATTRIBUTE, None)
        if remote_tb:
            return local_tb + _format_remote_traceback(remote_tb)
        return local_tb
    finally:
        del exc_trb


def excepthook(
    ex_type: type[BaseException],
    ex_value: BaseException,
    ex_tb: TracebackType | None,
) -> None:
    """Print an uncaught exception with its remote traceback; use as ``sys.excepthook``.

    Args:
        ex_type: the exception class.
        ex_value: the exception.
        ex_tb: the traceback.

    Raises:
        Nothing.
    """
    sys.stderr.write("".join(getPyroTraceback(ex_value, ex_type, ex_tb)))


# --------------------------------------------------------------------------- logging

SYSTEM_LOGGER_NAME: Final = "pyroact.system"
USER_LOGGER_NAME: Final = "pyroact.user"

# Pyro 3 logged raw() text at level 999 so it passes any threshold, including "off".
_RAW_LEVEL: Final = 999
_CLASSIC_MARK: Final = "_pyroact_classic"
_RAW_MARK: Final = "_pyroact_raw"
_DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

if logging.getLevelName(_RAW_LEVEL) == f"Level {_RAW_LEVEL}":
    logging.addLevelName(_RAW_LEVEL, "RAW")


def trace_level_to_logging(tracelevel: int) -> int:
    """Map a Pyro 3 trace level to a :mod:`logging` level.

    Args:
        tracelevel: 0 (or less) off, 1 errors, 2 errors and warnings, 3 (or more) everything.

    Returns:
        The logging level to set on the logger; "off" still lets :meth:`SystemLogger.raw`
        through, as in Pyro 3.

    Raises:
        Nothing.
    """
    if tracelevel >= 3:
        return logging.DEBUG
    if tracelevel == 2:
        return logging.WARNING
    if tracelevel == 1:
        return logging.ERROR
    return _RAW_LEVEL


class ClassicFormatter(logging.Formatter):
    """Formatter for Pyro 3's log line format.

    ``YYYY-MM-DD HH:MM:SS [pid:threadname] ** NOTE|WARN|ERR! ** source ** message``; records
    written by :meth:`SystemLogger.raw` come out verbatim, records from ordinary ``logging``
    calls use the logger name as the source.
    """

    def __init__(self) -> None:
        super().__init__(datefmt=_DATE_FORMAT)

    @staticmethod
    def label(levelno: int) -> str:
        """Return Pyro 3's level label for a logging level.

        Args:
            levelno: a :mod:`logging` level number.

        Returns:
            ``"ERR!"``, ``"WARN"`` or ``"NOTE"``.

        Raises:
            Nothing.
        """
        if levelno >= logging.ERROR:
            return "ERR!"
        if levelno >= logging.WARNING:
            return "WARN"
        return "NOTE"

    def format(self, record: logging.LogRecord) -> str:
        """Format *record* as one classic Pyro log line (plus any exception text).

        Args:
            record: the record to format.

        Returns:
            The formatted text without a trailing newline.

        Raises:
            Nothing beyond what :meth:`logging.Formatter.format` raises for bad arguments.
        """
        message = record.getMessage()
        if getattr(record, _RAW_MARK, False):
            return message
        if not getattr(record, _CLASSIC_MARK, False):
            message = f"{record.name} ** {message}"
        line = (
            f"{self.formatTime(record, self.datefmt)} [{record.process}:{record.threadName}]"
            f" ** {self.label(record.levelno)} ** {message}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class _PyroLogger:
    """Pyro 3's ``LoggerBase`` on top of a :mod:`logging` logger."""

    _logger_name: str = SYSTEM_LOGGER_NAME

    def __init__(self) -> None:
        self.logger = logging.getLogger(self._logger_name)

    def _log(self, level: int, source: object, args: tuple[object, ...]) -> None:
        if not self.logger.isEnabledFor(level):
            return
        if not args:
            args, source = (source,), "N/A"
        text = " ".join(str(arg) for arg in args)
        # stacklevel 3 attributes the record to the code that called msg/warn/error.
        self.logger.log(level, "%s ** %s", source, text, extra={_CLASSIC_MARK: True}, stacklevel=3)

    def msg(self, source: object, *args: object) -> None:
        """Log a note (Pyro 3 trace level 3, ``NOTE``).

        Args:
            source: where the message comes from; the message itself if it is the only
                argument (the source is then ``N/A``).
            *args: message parts, joined with spaces.

        Raises:
            Nothing.
        """
        self._log(logging.INFO, source, args)

    def warn(self, source: object, *args: object) -> None:
        """Log a warning (Pyro 3 trace level 2, ``WARN``).

        Args:
            source: where the message comes from, or the whole message.
            *args: message parts, joined with spaces.

        Raises:
            Nothing.
        """
        self._log(logging.WARNING, source, args)

    def error(self, source: object, *args: object) -> None:
        """Log an error (Pyro 3 trace level 1, ``ERR!``).

        Args:
            source: where the message comes from, or the whole message.
            *args: message parts, joined with spaces.

        Raises:
            Nothing.
        """
        self._log(logging.ERROR, source, args)

    def raw(self, text: str) -> None:
        """Write *text* to the log as it is, whatever the trace level.

        Args:
            text: the text; one trailing newline is supplied by the handler.

        Raises:
            Nothing.
        """
        self.logger.log(_RAW_LEVEL, "%s", text.rstrip("\n"), extra={_RAW_MARK: True})


class SystemLogger(_PyroLogger):
    """Pyro 3's system logger (``pyroact.system``, ``PYRO_TRACELEVEL``, ``PYRO_LOGFILE``)."""

    _logger_name = SYSTEM_LOGGER_NAME


class UserLogger(_PyroLogger):
    """Pyro 3's user logger (``pyroact.user``, ``PYRO_USER_TRACELEVEL``, ``PYRO_USER_LOGFILE``).

    Every instance writes to the same ``pyroact.user`` logger.
    """

    _logger_name = USER_LOGGER_NAME


Log: Final = SystemLogger()

for _name in (SYSTEM_LOGGER_NAME, USER_LOGGER_NAME):
    logging.getLogger(_name).addHandler(logging.NullHandler())
del _name

_handlers_lock = threading.Lock()
_file_handlers: dict[str, logging.FileHandler] = {}


def _install_file_handler(logger_name: str, logfile: str | None, storage: str | None) -> None:
    """Point *logger_name*'s classic file handler at *logfile* (None removes it)."""
    logger = logging.getLogger(logger_name)
    path: str | None = None
    if logfile:
        if storage and not os.path.isabs(logfile):
            logfile = os.path.join(storage, logfile)
        path = os.path.abspath(logfile)
    current = _file_handlers.get(logger_name)
    if current is not None:
        if path is not None and current.baseFilename == path:
            return
        logger.removeHandler(current)
        current.close()
        del _file_handlers[logger_name]
    if path is not None:
        # delay=True: the file is created at the first record, not merely by configuring.
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        handler.setFormatter(ClassicFormatter())
        logger.addHandler(handler)
        _file_handlers[logger_name] = handler


def configure_logging(
    tracelevel: int,
    logfile: str | None,
    user_tracelevel: int,
    user_logfile: str | None,
    *,
    storage: str | None = None,
) -> None:
    """Set the levels of the system and user loggers and install their file handlers.

    Calling it again with the same files only changes the levels; with another file the old
    handler is closed and replaced, and with None (or ``""``) it is removed. Handlers added by
    the application are left alone.

    Args:
        tracelevel: ``PYRO_TRACELEVEL`` (0 off, 1 errors, 2 +warnings, 3 all).
        logfile: ``PYRO_LOGFILE``, or None for no file.
        user_tracelevel: ``PYRO_USER_TRACELEVEL``.
        user_logfile: ``PYRO_USER_LOGFILE``, or None for no file.
        storage: directory that relative log file names are resolved against
            (``PYRO_STORAGE``); the current directory when None.

    Raises:
        Nothing: the files are opened lazily, so an unwritable path fails at the first record
        (reported by :mod:`logging`'s error handling).
    """
    with _handlers_lock:
        for name, level, path in (
            (SYSTEM_LOGGER_NAME, tracelevel, logfile),
            (USER_LOGGER_NAME, user_tracelevel, user_logfile),
        ):
            # Trace level 0 leaves the logger to the application's own logging setup (and
            # writes no file), so pyroact's warnings still reach handlers such as caplog.
            logging.getLogger(name).setLevel(
                trace_level_to_logging(level) if level > 0 else logging.NOTSET
            )
            _install_file_handler(name, path if level > 0 else None, storage)


# --------------------------------------------------------------------------- threads


def supports_multithreading() -> bool:
    """Tell whether threads are available (always True on supported Pythons).

    Returns:
        True.

    Raises:
        Nothing.
    """
    return True


def supports_compression() -> bool:
    """Tell whether zlib compression (``PYRO_COMPRESSION``) is available.

    Returns:
        True when the :mod:`zlib` module can be imported.

    Raises:
        Nothing.
    """
    try:
        import zlib  # noqa: F401
    except ImportError:
        return False
    return True


def getLockObject() -> threading.Lock:  # noqa: N802 - Pyro 3 name
    """Return a new :class:`threading.Lock`.

    Returns:
        An unlocked lock.

    Raises:
        Nothing.
    """
    return threading.Lock()


def getRLockObject() -> threading.RLock:  # noqa: N802 - Pyro 3 name
    """Return a new :class:`threading.RLock`.

    Returns:
        An unlocked re-entrant lock.

    Raises:
        Nothing.
    """
    return threading.RLock()


def getEventObject() -> threading.Event:  # noqa: N802 - Pyro 3 name
    """Return a new :class:`threading.Event`.

    Returns:
        A cleared event.

    Raises:
        Nothing.
    """
    return threading.Event()


# --------------------------------------------------------------------------- ArgParser

_NO_DEFAULT: Final[Any] = object()


class ArgParser:
    """Pyro 3's small getopt-like command-line parser.

    ``parse(args, "ab:c")`` looks for ``-a``, ``-b VALUE`` (or ``-bVALUE``) and ``-c``;
    options without a value map to None. Flags may be grouped (``-ac``). A lone ``-`` stops
    option parsing; everything after it is positional.

    Attributes:
        options: option letter -> value (None for flags or a value-option at the end).
        args: positional arguments in order.
        ignored: letters of options not in the option list.
    """

    def __init__(self) -> None:
        self.options: dict[str, str | None] = {}
        self.args: list[str] = []
        self.ignored: list[str] = []

    @staticmethod
    def _option_table(optionletters: str) -> dict[str, bool]:
        """Map each option letter of a getopt spec to whether it takes a value."""
        table: dict[str, bool] = {}
        for index, letter in enumerate(optionletters):
            if letter == ":" or letter.isspace():
                continue
            table[letter] = optionletters[index + 1 : index + 2] == ":"
        return table

    def parse(self, args: str | Sequence[str], optionletters: str) -> None:
        """Parse *args*, replacing the results of any previous call.

        Args:
            args: the arguments (without the program name), or one string split on whitespace.
                The caller's list is not modified.
            optionletters: getopt spec such as ``"ab:c"``; a colon after a letter means the
                option takes a value.

        Raises:
            Nothing: unknown options are collected in :attr:`ignored`.
        """
        self.options = {}
        self.args = []
        self.ignored = []
        table = self._option_table(optionletters)
        remaining = args.split() if isinstance(args, str) else list(args)
        index = 0
        while index < len(remaining):
            arg = remaining[index]
            index += 1
            if not arg.startswith("-"):
                self.args.append(arg)
                continue
            if arg == "-":
                self.args.extend(remaining[index:])
                break
            position = 1
            while position < len(arg):
                letter = arg[position]
                position += 1
                if letter not in table:
                    self.ignored.append(letter)
                    continue
                if not table[letter]:
                    self.options[letter] = None
                    continue
                if position < len(arg):
                    self.options[letter] = arg[position:]
                elif index < len(remaining):
                    self.options[letter] = remaining[index]
                    index += 1
                else:
                    self.options[letter] = None
                break

    def hasOpt(self, option: str) -> bool:  # noqa: N802 - Pyro 3 name
        """Tell whether *option* was given.

        Args:
            option: the option letter, without the dash.

        Returns:
            True if the option occurred.

        Raises:
            Nothing.
        """
        return option in self.options

    @overload
    def getOpt(self, option: str) -> str | None: ...

    @overload
    def getOpt(self, option: str, default: _T) -> str | None | _T: ...

    def getOpt(self, option: str, default: Any = _NO_DEFAULT) -> Any:  # noqa: N802
        """Return the value of *option*.

        Args:
            option: the option letter, without the dash.
            default: returned when the option was not given.

        Returns:
            The option's value (None for a flag), or *default*.

        Raises:
            KeyError: ``'no such option'`` when the option is absent and no default is given.
        """
        try:
            return self.options[option]
        except KeyError:
            if default is _NO_DEFAULT:
                raise KeyError("no such option") from None
            return default

    def printIgnored(self) -> None:  # noqa: N802 - Pyro 3 name
        """Print ``Ignored options: -x -y`` to stdout when unknown options were given.

        Raises:
            Nothing.
        """
        if self.ignored:
            print("Ignored options:", " ".join("-" + letter for letter in self.ignored))


def run_service(starter: Any, *, title: str, uri_line: str) -> int:
    """Serve a started name server or event service until SIGTERM/SIGINT, as its CLI does.

    Prints ``uri_line`` and ``"<title> started."``, runs ``starter.requestLoop()`` with the
    signals mapped to ``starter.shutdown()``, and always calls ``starter.close()`` at the end.

    Args:
        starter: an object with ``requestLoop()``, ``shutdown()`` and ``close()``.
        title: ``"Name Server"`` or ``"Event Server"`` (Pyro 3's wording).
        uri_line: the line that announces the service's URI.

    Returns:
        The process exit status: 0 after a clean stop, 1 when the loop failed.
    """
    import signal

    def stop(signum: int, _frame: Any) -> None:
        starter.shutdown()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(uri_line, flush=True)
    print(f"{title} started.", flush=True)
    try:
        starter.requestLoop()
    except Exception as exc:  # report, then stop cleanly with a failure status
        print(f"{title} stopped on an error: {exc!r}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        starter.close()
    print(f"{title} shut down.", flush=True)
    return 0
