"""The configuration items, their defaults and the validated ``Config`` object (layer 1).

This module owns:

* :data:`CONFIG_ITEMS`, the one table of every configuration item (name, type, default,
  meaning); ``docs/configuration.md`` documents the same table.
* :class:`ConfigItem`, one row of that table, which also converts and validates values.
* :class:`Config`, the object behind ``pyroact.config``: attribute access to the items, with
  the precedence *set in code > environment variable > config file > default*.
* ``python -m pyroact.configuration``, which prints the effective configuration.

It imports only the standard library and :mod:`pyroact.errors` / :mod:`pyroact.constants`;
it does no logging and opens no sockets. The global instance is created in
``pyroact/__init__.py``, not here.

Differences from Pyro 3 (see W-12 of the reference): unknown or misspelled names raise
:class:`~pyroact.errors.ConfigurationError` instead of being silently accepted, booleans are
real ``bool`` values that also accept ``true/false/yes/no/on/off`` spellings, ``./Pyro.conf`` is
never read implicitly, and ``PYRO_HOST`` defaults to the loopback address.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import pickle
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from pyroact import constants
from pyroact.errors import ConfigurationError

__all__ = [
    "CONFIG_ITEMS",
    "Config",
    "ConfigItem",
    "ConfigValue",
    "DROPPED_ITEMS",
    "main",
]

ConfigValue: TypeAlias = bool | int | float | str | None
"""The Python type of any configuration value."""

_ItemType: TypeAlias = type[bool] | type[int] | type[float] | type[str]

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_BOOL_SPELLINGS: Final = "1/0, true/false, yes/no or on/off"

# A token counts only as a whole path component, so "$STORAGEX" stays literal.
_PATH_TOKEN_RE: Final = re.compile(r"^\$(CURDIR|STORAGE)(?=$|[/\\])")
# Pyro 3's file syntax (value = first non-blank token); a trailing "# comment" is allowed,
# any other trailing text is rejected rather than silently dropped as Pyro 3 did.
_FILE_LINE_RE: Final = re.compile(r"^(\w+)\s*=\s*(\S*)\s*(#.*)?$")


def _check_no_storage_token(value: ConfigValue) -> str | None:
    # PYRO_STORAGE is what "$STORAGE" expands to, so it cannot refer to itself.
    match = _PATH_TOKEN_RE.match(value) if isinstance(value, str) else None
    if match is not None and match.group(1) == "STORAGE":
        return "a directory that does not start with $STORAGE"
    return None


def _check_absolute_group(value: ConfigValue) -> str | None:
    # Relative names are expanded against this group, so it has to be absolute itself.
    if isinstance(value, str) and not value.startswith(":"):
        return "an absolute group name starting with ':'"
    return None


@dataclass(frozen=True, slots=True)
class ConfigItem:
    """One configuration item: its name, type, default and meaning.

    Attributes:
        name: the item name, also the name of the environment variable (``PYRO_PORT``).
        type: ``bool``, ``int``, ``float`` or ``str``.
        default: the built-in default; ``None`` makes the item an optional string.
        description: a one-line meaning.
        minimum: the smallest accepted ``int``/``float`` value, if bounded.
        maximum: the largest accepted ``int``/``float`` value, if bounded.
        choices: the accepted ``str`` values, if restricted (compared case-insensitively).
        path: ``$CURDIR`` and ``$STORAGE`` at the start of the value are expanded when read.
        check: an extra validator returning what was expected when the value is wrong.
    """

    name: str
    type: _ItemType
    default: ConfigValue
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    path: bool = False
    check: Callable[[ConfigValue], str | None] | None = None

    @property
    def optional(self) -> bool:
        """Whether ``None`` is an accepted value (items whose default is ``None``).

        Raises:
            Nothing.
        """
        return self.default is None

    @property
    def type_name(self) -> str:
        """The type as written in the documentation: ``int``, ``str``, ``str | None`` ...

        Raises:
            Nothing.
        """
        return self.type.__name__ + (" | None" if self.optional else "")

    def expected(self) -> str:
        """Describe the accepted values, for error messages and :meth:`Config.describe`.

        Returns:
            A phrase such as ``"an integer in 0..65535"``.

        Raises:
            Nothing.
        """
        if self.type is bool:
            return f"a boolean ({_BOOL_SPELLINGS})"
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is int or self.type is float:
            text = "an integer" if self.type is int else "a number"
            if self.minimum is not None and self.maximum is not None:
                return f"{text} in {self._fmt(self.minimum)}..{self._fmt(self.maximum)}"
            if self.minimum is not None:
                return f"{text} >= {self._fmt(self.minimum)}"
            if self.maximum is not None:
                return f"{text} <= {self._fmt(self.maximum)}"
            return text
        return "a string or None" if self.optional else "a string"

    @staticmethod
    def _fmt(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() else str(bound)

    def convert(self, value: object, *, origin: str = "") -> ConfigValue:
        """Convert ``value`` to this item's type and validate it.

        Strings (from the environment, a config file or code) are parsed; values set from code
        may also already have the right type. ``0``/``1`` integers are accepted for booleans,
        as Pyro 3 code does ``config.PYRO_MULTITHREADED = 0``.

        Args:
            value: the raw value.
            origin: where the value came from, appended to error messages
                (for example ``" (environment variable)"``).

        Returns:
            The converted value.

        Raises:
            ConfigurationError: the value does not convert or is out of range; the message
                names the item, the value and what was expected.
        """
        try:
            result = self._convert(value)
        except (TypeError, ValueError, OverflowError):
            result = _INVALID
        if isinstance(result, _Invalid):
            problem: str | None = self.expected()
        else:
            problem = None if self.check is None or result is None else self.check(result)
        if problem is not None or isinstance(result, _Invalid):
            raise ConfigurationError(
                f"invalid value {value!r} for {self.name}{origin}: expected {problem}"
            )
        return result

    def _convert(self, value: object) -> ConfigValue | _Invalid:
        if value is None:
            return None if self.optional else _INVALID
        if self.type is bool:
            return self._convert_bool(value)
        if self.type is int or self.type is float:
            return self._convert_number(value)
        if not isinstance(value, str):
            return _INVALID
        if self.choices:
            folded = value.strip().lower()
            return folded if folded in self.choices else _INVALID
        return value

    @staticmethod
    def _convert_bool(value: object) -> bool | _Invalid:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return bool(value) if value in (0, 1) else _INVALID
        if isinstance(value, str):
            folded = value.strip().lower()
            if folded in _TRUE:
                return True
            if folded in _FALSE:
                return False
        return _INVALID

    def _convert_number(self, value: object) -> int | float | _Invalid:
        # bool is an int subclass; True for a port or timeout is almost surely a mistake.
        if isinstance(value, bool):
            return _INVALID
        number: int | float
        if self.type is int:
            if isinstance(value, int):
                number = value
            elif isinstance(value, str):
                number = int(value.strip())
            else:
                return _INVALID
        else:
            if isinstance(value, int | float):
                number = float(value)
            elif isinstance(value, str):
                number = float(value.strip())
            else:
                return _INVALID
            if math.isnan(number):
                return _INVALID
        if self.minimum is not None and number < self.minimum:
            return _INVALID
        if self.maximum is not None and number > self.maximum:
            return _INVALID
        return number


class _Invalid:
    """Marker for a value that did not convert (``None`` is a valid value)."""

    __slots__ = ()


_INVALID: Final = _Invalid()

_MAX_PORT: Final = 65535

# The table is laid out by hand, one item per (continued) line.
# fmt: off
CONFIG_ITEMS: Final[tuple[ConfigItem, ...]] = (
    # -- files and directories
    ConfigItem("PYRO_CONFIG_FILE", str, "",
               "config file in use: the absolute path actually read, '' if none"),
    ConfigItem("PYRO_STORAGE", str, "$CURDIR",
               "directory for logs, the NS URI file and database, certificates",
               path=True, check=_check_no_storage_token),
    # -- daemon networking
    ConfigItem("PYRO_HOST", str, "127.0.0.1",
               "default bind host of daemons and the NS (loopback by default)"),
    ConfigItem("PYRO_PUBLISHHOST", str, None,
               "host name/IP put into published URIs instead of the bind host (NAT)"),
    ConfigItem("PYRO_PORT", int, constants.DEFAULT_PORT,
               "base TCP port for daemons; default URI port",
               minimum=0, maximum=_MAX_PORT),
    ConfigItem("PYRO_PORT_RANGE", int, 100,
               "daemons try PYRO_PORT .. PYRO_PORT+PYRO_PORT_RANGE-1", minimum=1),
    ConfigItem("PYRO_ALLOW_PUBLIC_BIND", bool, False,
               "allow binding a non-loopback address without a key or TLS"),
    ConfigItem("PYRO_DNS_URI", bool, False,
               "keep host names instead of IP addresses in URIs"),
    ConfigItem("PYRO_MAXCONNECTIONS", int, 200,
               "max simultaneous connections per daemon", minimum=1),
    ConfigItem("PYRO_TCP_LISTEN_BACKLOG", int, 200, "listen() backlog", minimum=0),
    ConfigItem("PYRO_SOCK_KEEPALIVE", bool, True,
               "SO_KEEPALIVE on connections (skipped where unsupported)"),
    ConfigItem("PYRO_BROKEN_MSGWAITALL", bool, False,
               "accepted for compatibility; no effect (pyroact never relies on MSG_WAITALL)"),
    ConfigItem("PYRO_HANDSHAKE_TIMEOUT", float, 5.0,
               "seconds a new connection may take to complete the handshake", minimum=0.001),
    ConfigItem("PYRO_MAX_MESSAGE_SIZE", int, 1073741824,
               "largest accepted message in bytes, checked on the frame header", minimum=1),
    # -- name server
    ConfigItem("PYRO_NS_HOSTNAME", str, None,
               "NS host for direct lookup (disables broadcast discovery)"),
    ConfigItem("PYRO_NS_PORT", int, constants.DEFAULT_NS_PORT,
               "NS TCP port (0 = random; clients must then broadcast)",
               minimum=0, maximum=_MAX_PORT),
    ConfigItem("PYRO_NS_BC_ADDR", str, None,
               "broadcast address for NS discovery (default <broadcast>)"),
    ConfigItem("PYRO_NS_BC_PORT", int, constants.DEFAULT_NS_BC_PORT,
               "NS UDP broadcast port", minimum=0, maximum=_MAX_PORT),
    ConfigItem("PYRO_NS2_HOSTNAME", str, None, "as PYRO_NS_HOSTNAME, for the paired second NS"),
    ConfigItem("PYRO_NS2_PORT", int, 9091, "second NS TCP port",
               minimum=0, maximum=_MAX_PORT),
    ConfigItem("PYRO_NS2_BC_ADDR", str, None, "second NS broadcast address"),
    ConfigItem("PYRO_NS2_BC_PORT", int, 9091, "second NS UDP broadcast port",
               minimum=0, maximum=_MAX_PORT),
    ConfigItem("PYRO_NS_URIFILE", str, "$STORAGE/Pyro_NS_URI",
               "file where the NS writes its URI", path=True),
    ConfigItem("PYRO_NS_DBFILE", str, "$STORAGE/pyroact_ns.sqlite",
               "database file of the persistent name server", path=True),
    ConfigItem("PYRO_NS_DEFAULTGROUP", str, ":Default",
               "group used to expand relative names (must be absolute)",
               check=_check_absolute_group),
    ConfigItem("PYRO_NS_TIMEOUT", float, 20.0,
               "seconds to wait for a name server call", minimum=0.001),
    ConfigItem("PYRO_BC_RETRIES", int, 1,
               "broadcast retries for NS discovery (negative = forever)"),
    ConfigItem("PYRO_BC_TIMEOUT", float, 0.75,
               "seconds to wait per broadcast attempt (negative = forever)"),
    # -- serialization and message options
    ConfigItem("PYRO_PICKLE_FORMAT", int, 5,
               "pickle protocol for message bodies (out-of-band buffers need 5)",
               minimum=0, maximum=pickle.HIGHEST_PROTOCOL),
    ConfigItem("PYRO_OOB_THRESHOLD", int, 65536,
               "bytes-like values at least this large travel as out-of-band pickle-5 buffers",
               minimum=0),
    ConfigItem("PYRO_COMPRESSION", bool, False,
               "zlib-compress message bodies when that makes them smaller"),
    ConfigItem("PYRO_COMPRESSION_LEVEL", int, 6,
               "zlib compression level (-1 = zlib's default)", minimum=-1, maximum=9),
    ConfigItem("PYRO_CHECKSUM", bool, False,
               "accepted for compatibility; no effect (superseded by the HMAC-SHA256 message MAC)"),
    ConfigItem("PYRO_MOBILE_CODE", bool, False,
               "enable mobile code (server: accept uploads; client: download)"),
    ConfigItem("PYRO_DETAILED_TRACEBACK", bool, False,
               "extended remote tracebacks including local variables"),
    # -- execution model
    ConfigItem("PYRO_MULTITHREADED", bool, True,
               "threaded daemons; used when PYRO_SERVERTYPE is ''"),
    ConfigItem("PYRO_SERVERTYPE", str, "",
               "'single', 'threaded' or 'process'; '' = derive from PYRO_MULTITHREADED",
               choices=("", "single", "threaded", "process")),
    ConfigItem("PYRO_WORKERS", int, 0,
               "worker processes in process mode (0 = os.cpu_count())", minimum=0),
    ConfigItem("PYRO_THREADPOOL_SIZE", int, 64,
               "max threads running requests in threaded mode", minimum=1),
    ConfigItem("PYRO_MAILBOX_SIZE", int, 10000,
               "capacity of each object's bounded actor mailbox", minimum=1),
    ConfigItem("PYRO_WORKER_LINGER", float, 0.02,
               "process mode: seconds a call to an ObjBase waits for a call of the same "
               "object that is busy on the CPU before running beside it, and the longest a "
               "frame stays unread on a worker's link while a call computes (0 = never waits)",
               minimum=0),
    ConfigItem("PYRO_WORKER_NOTICES", bool, False,
               "process mode: a worker that answers a call on the client's socket also sends "
               "the daemon a notice (true), instead of marking it in shared memory (false); "
               "with notices the daemon holds an object's later calls for their turn"),
    ConfigItem("PYRO_WORKER_READS", bool, True,
               "process mode: a worker reads the plain connections whose calls it serves "
               "(true, unless PYRO_WORKER_NOTICES), so that the daemon's process is not woken "
               "for each call, and gives a connection back for frames it cannot serve; "
               "false: the daemon reads them all"),
    ConfigItem("PYRO_ONEWAY_THREADED", bool, True,
               "run oneway calls without blocking the caller's connection"),
    # -- event service
    ConfigItem("PYRO_ES_QUEUESIZE", int, 1000,
               "per-subscriber event queue size (0 = unbounded)", minimum=0),
    ConfigItem("PYRO_ES_BLOCKQUEUE", bool, True,
               "publisher blocks on a full queue (true) or the event is dropped (false)"),
    ConfigItem("PYRO_ES_TIMEOUT", float, 20.0,
               "seconds a publisher waits for a full subscriber queue (PYRO_ES_BLOCKQUEUE)",
               minimum=0.001),
    # -- logging
    ConfigItem("PYRO_TRACELEVEL", int, 0, "system log level: 0 off, 1 errors, 2 +warnings, 3 all"),
    ConfigItem("PYRO_USER_TRACELEVEL", int, 0, "user log level: 0 off .. 3 all"),
    ConfigItem("PYRO_LOGFILE", str, "$STORAGE/Pyro_log", "system log file", path=True),
    ConfigItem("PYRO_USER_LOGFILE", str, "$STORAGE/Pyro_userlog", "user log file", path=True),
    ConfigItem("PYRO_STDLOGGING", bool, False, "log through the standard logging module"),
    ConfigItem("PYRO_STDLOGGING_CFGFILE", str, "logging.cfg",
               "logging.config.fileConfig file (relative to PYRO_STORAGE)", path=True),
    # -- TLS
    ConfigItem("PYROSSL_CERTDIR", str, "$STORAGE/certs", "certificate directory", path=True),
    ConfigItem("PYROSSL_CA_CERT", str, "ca.pem", "CA certificate (in PYROSSL_CERTDIR)"),
    ConfigItem("PYROSSL_CERT", str, "host.pem",
               "own certificate, client and server (in PYROSSL_CERTDIR)"),
    ConfigItem("PYROSSL_KEY", str, None, "separate private key file, if not inside the cert"),
    ConfigItem("PYROSSL_POSTCONNCHECK", bool, True,
               "check the peer certificate's host name after connecting"),
    ConfigItem("PYROSSL_REQUIRE_CLIENT_CERT", bool, True,
               "TLS servers demand a client certificate (mutual TLS)"),
)
# fmt: on
"""Every configuration item, in documentation order."""

_BY_NAME: Final[Mapping[str, ConfigItem]] = MappingProxyType({i.name: i for i in CONFIG_ITEMS})

DROPPED_ITEMS: Final[Mapping[str, str]] = MappingProxyType(
    {
        name: f"{name} is not supported: Gnosis XML pickling was dropped in pyroact "
        "(messages are always pickled; remove the setting)"
        for name in ("PYRO_XML_PICKLE", "PYRO_GNOSIS_PARANOIA")
    }
)
"""Pyro 3 items that pyroact rejects, with the reason."""

_METHODS: Final = (
    "as_dict",
    "copy",
    "describe",
    "effective_servertype",
    "effective_workers",
    "items",
    "reset",
    "source",
)


# Taken by reads that store an item's value on a Config and by changes (see Config).
_VALUES_LOCK = threading.RLock()


def _new_values_lock() -> None:
    # A child forked while another thread held the lock would otherwise wait for it forever.
    global _VALUES_LOCK
    _VALUES_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_new_values_lock)


def _item(name: str) -> ConfigItem:
    try:
        return _BY_NAME[name]
    except KeyError:
        pass
    if name in DROPPED_ITEMS:
        raise ConfigurationError(DROPPED_ITEMS[name])
    raise ConfigurationError(f"unknown config item {name!r}{_suggestion(name)}")


def _suggestion(name: str) -> str:
    matches = difflib.get_close_matches(name.upper(), list(_BY_NAME), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]}?)" if matches else ""


class Config:
    """The validated configuration: one attribute per item of :data:`CONFIG_ITEMS`.

    Values are looked up in this order: set in code (attribute assignment) > environment
    variable of the same name > config file > built-in default. The environment and the file
    are read once, by the constructor. Path items (``PYRO_STORAGE``, log files ...) expand a
    leading ``$CURDIR`` (the current directory) and ``$STORAGE`` (``PYRO_STORAGE``, made
    absolute) each time they are read, so changing ``PYRO_STORAGE`` later moves them too.

    Args:
        environ: the environment to read; ``None`` means ``os.environ``. Only item names are
            looked at; empty values are ignored.
        config_file: a config file to read; when omitted, the file named by the
            ``PYRO_CONFIG_FILE`` environment variable (if set and non-empty) is read.
            ``./Pyro.conf`` is never read implicitly.
        read_environment: ``False`` ignores the environment entirely, including
            ``PYRO_CONFIG_FILE``.

    Raises:
        ConfigurationError: the config file is unreadable or has an unknown item, a malformed
            line or a bad value (the message names the file and line), or an environment
            variable holds a bad value or a dropped item.

    Example::

        >>> cfg = Config(read_environment=False)
        >>> cfg.PYRO_PORT = "7777"
        >>> cfg.PYRO_PORT
        7777
        >>> cfg.PYRO_MULTITHREADED = 0
        >>> cfg.PYRO_MULTITHREADED
        False
        >>> cfg.PYRO_MULTITHREADING = 0
        Traceback (most recent call last):
        ...
        pyroact.errors.ConfigurationError: unknown config item 'PYRO_MULTITHREADING' (did ...
    """

    # The instance __dict__ holds the item values read so far, where plain attribute lookup
    # finds them without __getattr__: every call reads a few items, and a lookup through the
    # layers costs a microsecond. Path items are not kept (they follow the current directory).
    # Any change empties it; reads that fill it and changes take turns (_VALUES_LOCK), so no
    # value outlives a change.
    __slots__ = ("__dict__", "_code", "_env", "_file")

    _code: dict[str, ConfigValue]
    _env: dict[str, ConfigValue]
    _file: dict[str, ConfigValue]

    # Declared for type checkers only (no class attribute is created, so a first read goes
    # through __getattr__); tests check this list against CONFIG_ITEMS.
    PYRO_CONFIG_FILE: str
    PYRO_STORAGE: str
    PYRO_HOST: str
    PYRO_PUBLISHHOST: str | None
    PYRO_PORT: int
    PYRO_PORT_RANGE: int
    PYRO_ALLOW_PUBLIC_BIND: bool
    PYRO_DNS_URI: bool
    PYRO_MAXCONNECTIONS: int
    PYRO_TCP_LISTEN_BACKLOG: int
    PYRO_SOCK_KEEPALIVE: bool
    PYRO_BROKEN_MSGWAITALL: bool
    PYRO_HANDSHAKE_TIMEOUT: float
    PYRO_MAX_MESSAGE_SIZE: int
    PYRO_NS_HOSTNAME: str | None
    PYRO_NS_PORT: int
    PYRO_NS_BC_ADDR: str | None
    PYRO_NS_BC_PORT: int
    PYRO_NS2_HOSTNAME: str | None
    PYRO_NS2_PORT: int
    PYRO_NS2_BC_ADDR: str | None
    PYRO_NS2_BC_PORT: int
    PYRO_NS_URIFILE: str
    PYRO_NS_DBFILE: str
    PYRO_NS_DEFAULTGROUP: str
    PYRO_NS_TIMEOUT: float
    PYRO_BC_RETRIES: int
    PYRO_BC_TIMEOUT: float
    PYRO_PICKLE_FORMAT: int
    PYRO_OOB_THRESHOLD: int
    PYRO_COMPRESSION: bool
    PYRO_COMPRESSION_LEVEL: int
    PYRO_CHECKSUM: bool
    PYRO_MOBILE_CODE: bool
    PYRO_DETAILED_TRACEBACK: bool
    PYRO_MULTITHREADED: bool
    PYRO_SERVERTYPE: str
    PYRO_WORKERS: int
    PYRO_THREADPOOL_SIZE: int
    PYRO_MAILBOX_SIZE: int
    PYRO_WORKER_LINGER: float
    PYRO_WORKER_NOTICES: bool
    PYRO_WORKER_READS: bool
    PYRO_ONEWAY_THREADED: bool
    PYRO_ES_QUEUESIZE: int
    PYRO_ES_BLOCKQUEUE: bool
    PYRO_ES_TIMEOUT: float
    PYRO_TRACELEVEL: int
    PYRO_USER_TRACELEVEL: int
    PYRO_LOGFILE: str
    PYRO_USER_LOGFILE: str
    PYRO_STDLOGGING: bool
    PYRO_STDLOGGING_CFGFILE: str
    PYROSSL_CERTDIR: str
    PYROSSL_CA_CERT: str
    PYROSSL_CERT: str
    PYROSSL_KEY: str | None
    PYROSSL_POSTCONNCHECK: bool
    PYROSSL_REQUIRE_CLIENT_CERT: bool

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        config_file: str | None = None,
        read_environment: bool = True,
    ) -> None:
        object.__setattr__(self, "_code", {})
        object.__setattr__(self, "_env", {})
        object.__setattr__(self, "_file", {})
        env: Mapping[str, str] = {}
        if read_environment:
            env = os.environ if environ is None else environ
        if config_file is None:
            config_file = env.get("PYRO_CONFIG_FILE") or None
        if config_file is not None:
            path = os.path.abspath(config_file)
            self._file.update(_read_config_file(path))
            self._file["PYRO_CONFIG_FILE"] = path
        self._env.update(_read_environment(env))

    # -- attribute protocol

    def __getattr__(self, name: str) -> ConfigValue:
        # Only called when normal lookup fails, i.e. for item names not read since the last
        # change, path items, and typos; _item() does not touch self, so copy/pickle probing a
        # half-built object cannot recurse. Path items are expanded at every read, as
        # documented: $CURDIR and relative paths follow the current directory.
        item = _item(name)
        if item.path:
            return self._expand(item, self._raw(item.name))
        with _VALUES_LOCK:
            value = self.__dict__[name] = self._raw(item.name)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        item = _item(name)
        with _VALUES_LOCK:
            self._code[item.name] = item.convert(value)
            self._forget_values()

    def _forget_values(self) -> None:
        with _VALUES_LOCK:
            self.__dict__.clear()

    def __delattr__(self, name: str) -> None:
        self.reset(name)

    def __dir__(self) -> list[str]:
        return sorted(_BY_NAME) + list(_METHODS)

    def __repr__(self) -> str:
        changed = [
            f"{name}={value!r}"
            for name, value in self.items()
            if self._raw(name) != _BY_NAME[name].default
        ]
        return f"Config({', '.join(changed)})"

    def __getstate__(self) -> dict[str, dict[str, ConfigValue]]:
        return {"code": dict(self._code), "env": dict(self._env), "file": dict(self._file)}

    def __setstate__(self, state: Mapping[str, Mapping[str, ConfigValue]]) -> None:
        object.__setattr__(self, "_code", dict(state["code"]))
        object.__setattr__(self, "_env", dict(state["env"]))
        object.__setattr__(self, "_file", dict(state["file"]))
        self._forget_values()

    # -- public methods

    def copy(self) -> Config:
        """Return an independent copy; changing either afterwards does not affect the other.

        Returns:
            A new :class:`Config` with the same values and sources (the environment and the
            file are not read again).

        Raises:
            Nothing.
        """
        new = Config.__new__(Config)
        new.__setstate__(self.__getstate__())
        return new

    def reset(self, name: str | None = None) -> None:
        """Forget values set in code, for one item or for all of them.

        The item then has its environment, config file or default value again.

        Args:
            name: the item to reset; ``None`` resets every item.

        Raises:
            ConfigurationError: ``name`` is not a configuration item.
        """
        with _VALUES_LOCK:
            if name is None:
                self._code.clear()
            else:
                self._code.pop(_item(name).name, None)
            self._forget_values()

    def as_dict(self, *, expand: bool = True) -> dict[str, ConfigValue]:
        """Return every item's effective value, sorted by name.

        Args:
            expand: expand ``$CURDIR``/``$STORAGE`` in path items (as attribute reads do);
                ``False`` returns the values as stored.

        Returns:
            A new dict mapping item names to values.

        Raises:
            Nothing.
        """
        result: dict[str, ConfigValue] = {}
        for name in sorted(_BY_NAME):
            raw = self._raw(name)
            result[name] = self._expand(_BY_NAME[name], raw) if expand else raw
        return result

    def items(self) -> list[tuple[str, ConfigValue]]:
        """Return ``(name, value)`` pairs of every item, sorted by name, paths expanded.

        Returns:
            A new list of pairs.

        Raises:
            Nothing.
        """
        return list(self.as_dict().items())

    def source(self, name: str) -> str:
        """Tell where an item's current value comes from.

        Args:
            name: the item.

        Returns:
            ``"code"``, ``"environment"``, ``"file"`` or ``"default"``.

        Raises:
            ConfigurationError: ``name`` is not a configuration item.
        """
        key = _item(name).name
        for label, layer in (
            ("code", self._code),
            ("environment", self._env),
            ("file", self._file),
        ):
            if key in layer:
                return label
        return "default"

    def describe(self, name: str) -> str:
        """Describe an item: type, default, accepted values, meaning and current value.

        Args:
            name: the item.

        Returns:
            One line of text.

        Raises:
            ConfigurationError: ``name`` is not a configuration item.
        """
        item = _item(name)
        value = getattr(self, item.name)
        return (
            f"{item.name} ({item.type_name}, default {item.default!r}; {item.expected()}): "
            f"{item.description}. Current value: {value!r} (from {self.source(item.name)})."
        )

    def effective_servertype(self) -> str:
        """Resolve ``PYRO_SERVERTYPE``, deriving ``''`` from ``PYRO_MULTITHREADED``.

        Returns:
            ``"single"``, ``"threaded"`` or ``"process"``.

        Raises:
            Nothing.
        """
        if self.PYRO_SERVERTYPE:
            return self.PYRO_SERVERTYPE
        return "threaded" if self.PYRO_MULTITHREADED else "single"

    def effective_workers(self) -> int:
        """Resolve ``PYRO_WORKERS``, where ``0`` means one worker per CPU.

        Returns:
            The number of worker processes for process mode (at least 1).

        Raises:
            Nothing.
        """
        return self.PYRO_WORKERS or os.cpu_count() or 1

    # -- internals

    def _raw(self, name: str) -> ConfigValue:
        for layer in (self._code, self._env, self._file):
            if name in layer:
                return layer[name]
        return _BY_NAME[name].default

    def _expand(self, item: ConfigItem, value: ConfigValue) -> ConfigValue:
        if not (item.path and isinstance(value, str)):
            return value
        match = _PATH_TOKEN_RE.match(value)
        if match is None:
            return value
        if match.group(1) == "CURDIR":
            base = os.getcwd()
        else:
            storage = self._expand(_BY_NAME["PYRO_STORAGE"], self._raw("PYRO_STORAGE"))
            base = os.path.abspath(str(storage))
        rest = value[match.end() :].lstrip("/\\")
        return os.path.join(base, rest) if rest else base


def _read_environment(env: Mapping[str, str]) -> dict[str, ConfigValue]:
    values: dict[str, ConfigValue] = {}
    for name, item in _BY_NAME.items():
        # PYRO_CONFIG_FILE only selects the file; its value becomes the absolute path read.
        if name == "PYRO_CONFIG_FILE":
            continue
        raw = env.get(name)
        if raw:
            values[name] = item.convert(raw, origin=" (environment variable)")
    for name, reason in DROPPED_ITEMS.items():
        if env.get(name):
            raise ConfigurationError(f"{reason} (environment variable)")
    return values


def _read_config_file(path: str) -> dict[str, ConfigValue]:
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"error reading config file {path}: {exc}") from exc
    return _parse_config_lines(lines, path)


def _parse_config_lines(lines: Iterable[str], path: str) -> dict[str, ConfigValue]:
    values: dict[str, ConfigValue] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"config file {path}, line {number}"
        match = _FILE_LINE_RE.match(text)
        if match is None:
            raise ConfigurationError(f"syntax error in {where}: {text!r} is not ITEM=VALUE")
        name, raw = match.group(1), match.group(2)
        if name in DROPPED_ITEMS:
            raise ConfigurationError(f"{DROPPED_ITEMS[name]} ({where})")
        if name not in _BY_NAME:
            raise ConfigurationError(f"unknown config item {name!r} in {where}{_suggestion(name)}")
        # A file cannot name another file; the line is accepted so that the output of
        # ``python -m pyroact.configuration`` reads back as a config file.
        if raw and name != "PYRO_CONFIG_FILE":
            values[name] = _BY_NAME[name].convert(raw, origin=f" ({where})")
    return values


def _format_value(value: ConfigValue) -> str:
    # None prints as an empty value, which a config file reads back as "keep the default".
    return "" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the effective configuration as sorted ``ITEM=value`` lines.

    The configuration is read as ``pyroact.config`` is: environment variables and the file
    named by ``PYRO_CONFIG_FILE``. The output is itself a valid config file.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``); ``-v`` adds each item's
            description and source as a comment line.

    Returns:
        The exit status: 0, or 2 when the configuration is invalid (reported on stderr).

    Raises:
        SystemExit: bad command-line arguments, or ``--help`` (from :mod:`argparse`).
    """
    parser = argparse.ArgumentParser(
        prog="python -m pyroact.configuration",
        description="Print the effective pyroact configuration as ITEM=value lines.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="add descriptions")
    args = parser.parse_args(argv)
    try:
        cfg = Config()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    for name, value in cfg.items():
        if args.verbose:
            print(f"# {_BY_NAME[name].description} [{cfg.source(name)}]")
        print(f"{name}={_format_value(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
