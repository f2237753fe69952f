"""The pyroact exception hierarchy (layer 0: imports nothing from pyroact).

Pyro 3's names are kept, and every class also derives from the builtin exception that matches
its meaning, so ``except ConnectionError`` or ``except TimeoutError`` works for code that knows
nothing of pyroact::

    PyroError(Exception)
     ├ URIError(ValueError)
     ├ DaemonError(RuntimeError)
     ├ NamingError(LookupError)
     ├ NoModuleError(ImportError)
     ├ SerializeError(ValueError)
     ├ RemoteError                      an exception whose class the client cannot import
     ├ ConfigurationError(AttributeError)
     └ ProtocolError(ValueError)        the peer broke the protocol, or the link failed
        ├ MessageTooLargeError
        ├ ConnectionClosedError(ConnectionError)
        │   ├ TimeoutError(builtins.TimeoutError)
        │   └ WorkerDiedError             a process-mode worker died under a call
        ├ ConnectionDeniedError(PermissionError)
        └ BusyError                       a mailbox or the connection table is full
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "BusyError",
    "ConfigurationError",
    "ConnectionClosedError",
    "ConnectionDeniedError",
    "DaemonError",
    "MessageTooLargeError",
    "NamingError",
    "NoModuleError",
    "ProtocolError",
    "PyroError",
    "PyroExceptionCapsule",
    "RemoteError",
    "SerializeError",
    "TimeoutError",
    "URIError",
    "WorkerDiedError",
]


class PyroError(Exception):
    """Base class of every error pyroact raises on its own behalf."""


class URIError(PyroError, ValueError):
    """A URI string or its parts are malformed, or its host cannot be resolved."""


class DaemonError(PyroError, RuntimeError):
    """The daemon could not start, or was used in a way it does not allow."""


class NamingError(PyroError, LookupError):
    """A name server or PYROLOC lookup failed; ``args`` is ``(message[, offending name])``."""


class NoModuleError(PyroError, ImportError):
    """A module needed to unpickle a message is missing on the receiving side."""


class _InternalNoModuleError(PyroError):
    """Mobile-code signal from a server: the module ``args[0]`` is missing there (internal)."""


class SerializeError(PyroError, ValueError):
    """A value could not be pickled or unpickled."""


class ConfigurationError(PyroError, AttributeError):
    """An unknown configuration item, or a value that does not convert to the item's type."""


class RemoteError(PyroError):
    """A remote exception whose class is not importable here.

    Attributes:
        remote_type: the dotted name of the remote exception class.
        remote_stacktrace: the remote traceback lines (Pyro 3's ``remote_stacktrace``).
    """

    def __init__(self, remote_type: str = "", message: str = "") -> None:
        super().__init__(remote_type, message)
        self.remote_type = remote_type
        self.message = message

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}" if self.remote_type else self.message


class ProtocolError(PyroError, ValueError):
    """The peer sent something that breaks the protocol, or the link failed."""


class MessageTooLargeError(ProtocolError):
    """A frame announced a size above the configured ``PYRO_MAX_MESSAGE_SIZE``.

    Attributes:
        size: the announced size in bytes.
        limit: the limit in force.
    """

    def __init__(self, size: int = 0, limit: int = 0) -> None:
        super().__init__(f"message of {size} bytes exceeds PYRO_MAX_MESSAGE_SIZE={limit}")
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.size, self.limit))


class ConnectionClosedError(ProtocolError, ConnectionError):
    """An established connection was lost (Pyro 3's ``'connection lost'``)."""


class TimeoutError(ConnectionClosedError, builtins.TimeoutError):  # noqa: A001 - Pyro 3 name
    """A connect, send or receive took longer than the timeout; the connection is dropped."""


class WorkerDiedError(ConnectionClosedError):
    """The worker process that held an object died while a call was queued or running."""


class ConnectionDeniedError(ProtocolError, PermissionError):
    """The server refused the connection; ``str()`` is the reason."""


class BusyError(ProtocolError):
    """A bounded queue (an object's mailbox, the connection table) is full."""


class PyroExceptionCapsule:
    """Pyro 3's wrapper of a remote exception and its traceback lines.

    pyroact transports exceptions differently (see ``pyroact.serializer``), but keeps the class
    for code that builds or inspects capsules itself.

    Args:
        excObj: the exception.
        args: the remote traceback as a list of strings.
    """

    def __init__(self, excObj: BaseException, args: list[str] | None = None) -> None:  # noqa: N803
        self.excObj = excObj
        self.args = args or []

    def raiseEx(self) -> None:  # noqa: N802 - Pyro 3 name
        """Raise the wrapped exception with ``remote_stacktrace`` set.

        Raises:
            BaseException: always, the wrapped exception.
        """
        self.excObj.remote_stacktrace = self.args  # type: ignore[attr-defined]
        raise self.excObj

    def __str__(self) -> str:
        return str(self.excObj)
