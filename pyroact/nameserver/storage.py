"""Where a name server keeps its namespace: one interface, in memory or in SQLite (layer 9).

:class:`Storage` is the one interface the name server uses, so another store (shared by several
name servers) can be plugged in later. Two implementations:

* :class:`MemoryStorage`: nothing survives the process.
* :class:`SqliteStorage`: one embedded SQLite file in WAL mode with ``synchronous=FULL``; every
  change is one transaction, committed before the name server acknowledges it, so a
  registration that returned survives a crash (``kill -9``) of the name server. Nothing on disk
  is a pickle: URIs are stored as strings and metadata as JSON text.

Besides the entries a storage keeps a few settings, notably the name server's own object id
(``nameserver_guid``), which makes its URI stable across restarts.
"""

from __future__ import annotations

import abc
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Final

from pyroact.errors import NamingError

from .namespace import Entry

__all__ = ["MemoryStorage", "SqliteStorage", "Storage", "StorageError"]

SCHEMA_VERSION: Final = 1


class StorageError(NamingError):
    """The name server's storage failed (the change was not made)."""


class Storage(abc.ABC):
    """The storage interface of a name server.

    Every method is called with the name server's lock held; implementations still guard their
    own state, so they may be used on their own.
    """

    @abc.abstractmethod
    def load(self) -> list[Entry]:
        """Every stored entry, parents before children.

        Raises:
            StorageError: the store cannot be read.
        """

    @abc.abstractmethod
    def put(self, entries: Sequence[Entry]) -> None:
        """Add or replace entries, durably, in one transaction.

        Raises:
            StorageError: the change was not made.
        """

    @abc.abstractmethod
    def delete(self, names: Sequence[str]) -> None:
        """Remove entries by absolute name, in one transaction (missing ones are ignored).

        Raises:
            StorageError: the change was not made.
        """

    @abc.abstractmethod
    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None.

        Raises:
            StorageError: the store cannot be read.
        """

    @abc.abstractmethod
    def set_setting(self, key: str, value: str) -> None:
        """Store a setting durably.

        Raises:
            StorageError: the change was not made.
        """

    @property
    @abc.abstractmethod
    def persistent(self) -> bool:
        """True when the contents survive a restart.

        Raises:
            Nothing.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release resources; the storage is unusable afterwards.

        Raises:
            Nothing.
        """

    def describe(self) -> str:
        """A short human-readable description (for logs and ``-v``).

        Raises:
            Nothing.
        """
        return type(self).__name__


def _copy(entry: Entry) -> Entry:
    return Entry(entry.name, entry.uri, entry.meta, entry.created, entry.owner)


class MemoryStorage(Storage):
    """A storage that keeps nothing beyond the process (Pyro 3's plain ``NameServer``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._settings: dict[str, str] = {}

    @property
    def persistent(self) -> bool:
        """False.

        Raises:
            Nothing.
        """
        return False

    def load(self) -> list[Entry]:
        """Every entry, parents before children.

        Raises:
            Nothing.
        """
        with self._lock:
            entries = [_copy(e) for e in self._entries.values()]
        return sorted(entries, key=lambda e: (e.name.count("."), e.name))

    def put(self, entries: Sequence[Entry]) -> None:
        """Add or replace entries.

        Raises:
            Nothing.
        """
        with self._lock:
            for entry in entries:
                self._entries[entry.name] = _copy(entry)

    def delete(self, names: Sequence[str]) -> None:
        """Remove entries.

        Raises:
            Nothing.
        """
        with self._lock:
            for name in names:
                self._entries.pop(name, None)

    def get_setting(self, key: str) -> str | None:
        """A setting, or None.

        Raises:
            Nothing.
        """
        with self._lock:
            return self._settings.get(key)

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting.

        Raises:
            Nothing.
        """
        with self._lock:
            self._settings[key] = value

    def describe(self) -> str:
        """``'in memory'``.

        Raises:
            Nothing.
        """
        return "in memory"


class SqliteStorage(Storage):
    """A storage in one SQLite file (WAL, ``synchronous=FULL``, one transaction per change).

    Args:
        path: the database file; created (with its directory) when missing.

    Raises:
        StorageError: the file cannot be opened or is not a pyroact name server database.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._lock = threading.Lock()
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageError("cannot open the name server database", self.path, str(exc)) from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise StorageError("cannot use the name server database", self.path, str(exc)) from exc

    def _setup(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS entries ("
                " name TEXT PRIMARY KEY, uri TEXT, meta TEXT NOT NULL DEFAULT 'null',"
                " created REAL NOT NULL DEFAULT 0, owner TEXT)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM settings WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO settings (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unsupported schema version {row[0]!r}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @property
    def persistent(self) -> bool:
        """True.

        Raises:
            Nothing.
        """
        return True

    def _transaction(self, statements: Sequence[tuple[str, tuple[object, ...]]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in statements:
                        self._db.execute(sql, params)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(
                    "name server database write failed", self.path, str(exc)
                ) from exc

    def load(self) -> list[Entry]:
        """Every stored entry, parents before children.

        Raises:
            StorageError: the database cannot be read.
        """
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT name, uri, meta, created, owner FROM entries"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError("name server database read failed", self.path, str(exc)) from exc
        entries = [Entry(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        return sorted(entries, key=lambda e: (e.name.count("."), e.name))

    def put(self, entries: Sequence[Entry]) -> None:
        """Add or replace entries in one committed transaction.

        Raises:
            StorageError: the change was not made.
        """
        self._transaction(
            [
                (
                    "INSERT OR REPLACE INTO entries (name, uri, meta, created, owner)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (e.name, e.uri, e.meta, e.created, e.owner),
                )
                for e in entries
            ]
        )

    def delete(self, names: Sequence[str]) -> None:
        """Remove entries in one committed transaction.

        Raises:
            StorageError: the change was not made.
        """
        self._transaction([("DELETE FROM entries WHERE name = ?", (n,)) for n in names])

    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None.

        Raises:
            StorageError: the database cannot be read.
        """
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT value FROM settings WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise StorageError("name server database read failed", self.path, str(exc)) from exc
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting in one committed transaction.

        Raises:
            StorageError: the change was not made.
        """
        self._transaction(
            [("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))]
        )

    def close(self) -> None:
        """Close the database file.

        Raises:
            Nothing.
        """
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def describe(self) -> str:
        """``'SQLite file <path>'``.

        Raises:
            Nothing.
        """
        return f"SQLite file {self.path}"
