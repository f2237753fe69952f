"""Dealing with exceptions: remote exceptions, getPyroTraceback, excepthook, RemoteError.

An exception raised by a remote method is raised again in the client, with the same class,
and carries the remote traceback lines in ``remote_stacktrace``. When the exception cannot
be rebuilt on the client, a ``pyroact.errors.RemoteError`` with the remote type name is
raised instead.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading

import pyroact
import pyroact.constants
import pyroact.core
import pyroact.util
from pyroact.errors import RemoteError


class UnshippableError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


class Thing(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)

    def method(self, x: int) -> float:
        secret = "local value"  # noqa: F841 - shows up in the detailed traceback
        return 1 / x

    def unshippable(self) -> None:
        raise UnshippableError()


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    uri = daemon.connect(Thing())
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    thing = pyroact.core.getProxyForURI(uri)
    try:
        try:
            print(thing.method(0))
        except ZeroDivisionError as x:
            print("caught the remote exception locally:", type(x).__name__, x)
            remote = getattr(x, pyroact.constants.TRACEBACK_ATTRIBUTE)
            print("remote traceback lines:", len(remote), "last:", remote[-1].strip())
            text = "".join(pyroact.util.getPyroTraceback(x))
            print("getPyroTraceback has the remote part:", "Remote traceback" in text)

        # The same text from an excepthook, for exceptions nobody catches.
        sys.excepthook = pyroact.util.excepthook
        try:
            thing.method(0)
        except ZeroDivisionError as x:
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                sys.excepthook(type(x), x, x.__traceback__)
            print("excepthook printed", len(stderr.getvalue().splitlines()), "lines")
        finally:
            sys.excepthook = sys.__excepthook__

        try:
            thing.unshippable()
        except RemoteError as x:
            print("not rebuildable here, got RemoteError:", x.remote_type)

        # Server-side debugging aid only: detailed tracebacks include local variables.
        pyroact.config.PYRO_DETAILED_TRACEBACK = True
        try:
            thing.method(0)
        except ZeroDivisionError as x:
            print("detailed traceback shows locals:", "local value" in "".join(x.remote_stacktrace))
        finally:
            pyroact.config.PYRO_DETAILED_TRACEBACK = False

        try:
            print(float("not a number"))  # getPyroTraceback is safe on local exceptions too
        except ValueError as x:
            print("local exception, lines:", len(pyroact.util.getPyroTraceback(x)))
        thing._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("exceptions done")


if __name__ == "__main__":
    main()
