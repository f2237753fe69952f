"""pyroact: Pyro 3's remote-object model for modern Python.

Importing the package is cheap: it creates the global configuration object ``pyroact.config``
(Pyro 3's ``Pyro.config``) and nothing else. The API lives in the submodules, with Pyro 3's
names: :mod:`pyroact.core`, :mod:`pyroact.naming`, :mod:`pyroact.util`,
:mod:`pyroact.errors` and :mod:`pyroact.constants`.
"""

from .configuration import Config

__version__ = "0.1.0"

config: Config = Config()

__all__ = ["Config", "__version__", "config"]
