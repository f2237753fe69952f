"""Mobile code: Python modules that travel to the side that lacks them (layer 8).

How it works
------------
*Upload.* A client passes an object whose class lives in a module the server does not have.
With ``PYRO_MOBILE_CODE`` on in the server, the daemon does not fail the call: it answers with
an internal "no module" signal naming the module, the client's proxy reads that module's
**source** and calls the object's ``remote_supply_code(name, source, address)``, and then
sends the call again. A module whose own module-level imports are missing on the server is
answered the same way, so dependency chains (``agent.shop`` importing ``agent.prices``) travel
too, one module at a time, at most :data:`~pyroact.constants.MOBILE_CODE_MAX_MODULES` per call.

*Download.* With ``PYRO_MOBILE_CODE`` on in the client, a result that needs a module the
client lacks is completed through the server object's ``remote_retrieve_code(name)``, and the
result is unpickled again.

*Permission.* Mobile code runs code from the peer. The server's object decides with its code
validator (``obj.setCodeValidator(v)``): ``v(name, source, address)`` for an upload,
``v(name, None, None)`` for a download; only a true result allows it. Unlike Pyro 3, an
object without a validator **denies** both. :func:`accept_all` and :func:`allow_modules` are
ready-made validators. A name check alone is weak (a client can upload anything under an
allowed name); it is a guard against accidents, not against a malicious peer, which could as
well send a malicious pickle (see docs/security.md).

*Rules.*

* Source only, never bytecode: a module without readable source (a C extension, a ``.pyc``
  without its ``.py``) cannot travel.
* A module the receiving process has (imported or importable) is never replaced, and a
  supplied module is never reloaded: restart the server to change its code.
* A missing parent package is created empty on the receiving side; keep mobile classes in
  modules, not in a package's ``__init__.py``.
* Mobile classes must live in a module of their own, not in ``__main__`` (pyroact ships
  ``__main__`` classes by value with cloudpickle instead).
* Imports *inside* methods of a mobile module run when the method runs; a module missing then
  is an ordinary ``ModuleNotFoundError`` of the call (the call is not re-run, since it may
  have done part of its work). Import dependencies at module level.
* No mobile code over oneway calls: they get no reply to ask for the module with. Supply the
  module first (:func:`supply_code`, or a normal call), then make the oneway calls.
* In the process mode the module is installed in the worker that runs the call; the supply
  call goes to the same object, so a replicated object's workers each get it when they first
  need it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from .core import DynamicProxy
from .serializer import install_module, module_source

__all__ = [
    "CodeValidator",
    "accept_all",
    "allow_modules",
    "install_module",
    "module_source",
    "supply_code",
]

CodeValidator = Callable[[str, "str | None", Any], bool]
"""``validator(name, source, address) -> bool``; ``source`` and ``address`` are None for a
download."""


def accept_all(name: str, source: str | None, address: Any) -> bool:
    """A code validator that allows every upload and download (trusted peers only).

    Args:
        name: the module name.
        source: the uploaded source, or None for a download.
        address: the uploading client's address, or None for a download.

    Returns:
        True.
    """
    return True


def allow_modules(*patterns: str, upload: bool = True, download: bool = True) -> CodeValidator:
    """A code validator that allows the modules whose names match one of ``patterns``.

    Patterns are shell-style (:func:`fnmatch.fnmatchcase`): ``"agent.shop"`` allows exactly
    that module, ``"agent.*"`` every module of the ``agent`` package (cascaded loading of its
    dependencies included).

    Args:
        *patterns: module name patterns.
        upload: allow matching modules to be supplied by clients.
        download: allow clients to retrieve the source of matching modules.

    Returns:
        The validator, for ``obj.setCodeValidator``.

    Raises:
        TypeError: a pattern is not a string.
    """
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"module patterns are strings, not {type(pattern).__name__}")
    allowed = tuple(patterns)

    def validator(name: str, source: str | None, address: Any) -> bool:
        if not (upload if source is not None else download):
            return False
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)

    return validator


def supply_code(proxy: DynamicProxy, name: str) -> int:
    """Upload module ``name`` to the proxy's object now, with what its imports need.

    Calls supply code by themselves when the server asks for it; this is for oneway calls,
    which cannot ask.

    Args:
        proxy: a proxy of the object whose code validator decides.
        name: the dotted module name (it must be importable, with source, here).

    Returns:
        How many modules were sent (the server ignores those it already has).

    Raises:
        NoModuleError: the module, or one it needs, has no source here.
        PyroError: the server denied the code.
    """
    return proxy.adapter.supply_module(proxy._pyroact_bound_id(), name)
