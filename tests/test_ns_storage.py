"""Name server storage: SQLite file and memory, durability across restarts and kill -9."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from servers.ns_helpers import NSProcess

from pyroact import constants, core
from pyroact.errors import NamingError
from pyroact.nameserver import (
    MemoryStorage,
    NameServer,
    PersistentNameServer,
    SqliteStorage,
    Storage,
    StorageError,
)
from pyroact.nameserver.namespace import Entry
from pyroact.naming import NameServerLocator

URI = "PYRO://127.0.0.1:7766/0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "memory":
        return MemoryStorage()
    return SqliteStorage(tmp_path / "ns.sqlite")


def test_storage_interface(storage: Storage) -> None:
    storage.put([Entry(":a", None, created=1.0), Entry(":a.b", URI, '{"k": [1]}', 2.0)])
    storage.put([Entry(":a.b", URI, '"changed"', 2.0)])
    loaded = storage.load()
    assert [(e.name, e.uri, e.meta) for e in loaded] == [
        (":a", None, "null"),
        (":a.b", URI, '"changed"'),
    ]
    storage.delete([":a.b", ":missing"])
    assert [e.name for e in storage.load()] == [":a"]
    assert storage.get_setting("x") is None
    storage.set_setting("x", "1")
    assert storage.get_setting("x") == "1"
    storage.close()


def test_sqlite_file_is_wal_full_sync_and_pickle_free(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ns.sqlite"
    ns = PersistentNameServer(path)
    ns.register(":Default.obj", URI)
    ns.setMeta(":Default.obj", {"colour": "red"})
    assert ns.storage.persistent
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT name, uri, meta FROM entries").fetchall()
        assert all(not isinstance(v, bytes) for row in rows for v in row)
        assert (":Default.obj", URI, '{"colour": "red"}') in rows
        for _name, _uri, meta in rows:
            json.loads(meta)
    assert ns.storage._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # type: ignore[attr-defined]
    ns.storage.close()


def test_persistent_name_server_reloads_its_namespace(tmp_path: Path) -> None:
    path = tmp_path / "ns.sqlite"
    ns = PersistentNameServer(path)
    ns.createGroup(":app")
    ns.register(":app.obj", URI)
    ns.setMeta(":app", [1, 2])
    ns.register(":Default.gone", URI)
    ns.unregister(":Default.gone")
    ns.storage.close()
    again = PersistentNameServer(path)
    assert again.resolve(":app.obj") == core.PyroURI(URI)
    assert again.getMeta(":app") == [1, 2]
    assert sorted(again.list(":")) == [("Default", 0), ("Pyro", 0), ("app", 0)]
    with pytest.raises(NamingError, match="name not found"):
        again.resolve(":Default.gone")
    again.storage.close()


class FailingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def put(self, entries: list[Entry]) -> None:  # type: ignore[override]
        if self.fail:
            raise StorageError("name server database write failed", "test")
        super().put(entries)

    def delete(self, names: list[str]) -> None:  # type: ignore[override]
        if self.fail:
            raise StorageError("name server database write failed", "test")
        super().delete(names)


def test_a_failed_commit_changes_nothing() -> None:
    storage = FailingStorage()
    ns = NameServer(storage)
    ns.register(":Default.kept", URI)
    storage.fail = True
    with pytest.raises(StorageError):
        ns.register(":Default.new", URI)
    with pytest.raises(StorageError):
        ns.unregister(":Default.kept")
    with pytest.raises(StorageError):
        ns.deleteGroup(":Default")
    with pytest.raises(NamingError, match="name not found"):
        ns.resolve(":Default.new")
    assert ns.resolve(":Default.kept") == core.PyroURI(URI)
    assert isinstance(StorageError("x"), NamingError)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(StorageError, match="cannot use the name server database"):
        SqliteStorage(bogus)


# -- the name server process ---------------------------------------------------------------------


@pytest.mark.network
def test_restart_of_the_process_keeps_names_and_its_uri(tmp_path: Path) -> None:
    db = tmp_path / "ns.sqlite"
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", "0", "-x", "-d", str(db)) as first:
        port = first.port
        ns = NameServerLocator().getNS("127.0.0.1", port)
        ns.createGroup(":app")
        ns.register(":app.obj", URI)
        assert first.terminate() == 0
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", str(port), "-x", "-d", str(db)) as second:
        assert second.uri == first.uri  # same object id and port
        assert ns.resolve(":app.obj") == core.PyroURI(URI)  # the old proxy reconnects
        assert ns.resolve(constants.NAMESERVER_NAME) == core.PyroURI(first.uri)
        ns._release()


@pytest.mark.network
def test_a_registration_survives_kill_9_right_after_it_returned(tmp_path: Path) -> None:
    db = tmp_path / "ns.sqlite"
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", "0", "-x", "--db", str(db)) as first:
        ns = NameServerLocator().getNS("127.0.0.1", first.port)
        ns.register("acked", URI)
        first.kill()  # SIGKILL: no shutdown code runs
        ns._release()
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", "0", "-x", "--db", str(db)) as second:
        ns = NameServerLocator().getNS("127.0.0.1", second.port)
        assert ns.resolve("acked") == core.PyroURI(URI)
        assert second.uri.rsplit("/", 1)[1] == first.uri.rsplit("/", 1)[1]  # same object id
        ns._release()


@pytest.mark.network
def test_memory_name_server_forgets_on_restart(tmp_path: Path) -> None:
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", "0", "-x", "--memory") as first:
        ns = NameServerLocator().getNS("127.0.0.1", first.port)
        ns.register("volatile", URI)
        ns._release()
        port = first.port
        assert first.terminate() == 0
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", str(port), "-x", "--memory") as second:
        assert second.uri != first.uri
        ns = NameServerLocator().getNS("127.0.0.1", port)
        with pytest.raises(NamingError, match="name not found"):
            ns.resolve("volatile")
        ns._release()
    assert not list(tmp_path.glob("*.sqlite"))
