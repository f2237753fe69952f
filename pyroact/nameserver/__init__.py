"""The pyroact name server: namespace, storage, server object, discovery, CLI (layer 9).

``python -m pyroact.nameserver`` starts one (see :mod:`pyroact.nameserver.__main__`). The
client side (locator, proxy, ``PYRONAME://``) is :mod:`pyroact.naming`.
"""

from __future__ import annotations

from .broadcast import BCReqValidator, BroadcastServer
from .namespace import NameSpace
from .server import NameServer, NameServerStarter, PersistentNameServer
from .storage import MemoryStorage, SqliteStorage, Storage, StorageError

__all__ = [
    "BCReqValidator",
    "BroadcastServer",
    "MemoryStorage",
    "NameServer",
    "NameServerStarter",
    "NameSpace",
    "PersistentNameServer",
    "SqliteStorage",
    "Storage",
    "StorageError",
]
