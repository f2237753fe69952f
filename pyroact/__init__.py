"""pyroact: Pyro 3's remote-object model for modern Python.

Importing the package is cheap. ``pyroact.config`` (Pyro 3's ``Pyro.config``) is created on
first access, from the environment and the file named by ``PYRO_CONFIG_FILE``. The API lives in
the submodules, with Pyro 3's names: :mod:`pyroact.core`, :mod:`pyroact.naming`,
:mod:`pyroact.util`, :mod:`pyroact.errors` and :mod:`pyroact.constants`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "config"]

if TYPE_CHECKING:
    from .configuration import Config

    config: Config


def __getattr__(name: str) -> Any:
    # Created lazily (PEP 562) so that `python -m pyroact.configuration` and clients that never
    # touch the configuration do not read the environment at import.
    if name == "config":
        from .configuration import Config

        value = Config()
        globals()["config"] = value
        return value
    raise AttributeError(f"module 'pyroact' has no attribute {name!r}")
