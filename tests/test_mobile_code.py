"""Mobile code (PYRO_MOBILE_CODE): modules travel to the side that lacks them.

The servers run in processes of their own (``servers/mobile_server.py``). The modules a test
uploads are written into a temporary folder that only this (client) process has on its
``sys.path``, so they are really missing on the server and in its workers; the modules a test
downloads live in a folder only the server has. Every test uses module names of its own, so
the servers can be shared by the whole module.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import RawClient, ServerProcess, config_values, serving, wait_until

import pyroact
from pyroact import _wirespec as spec
from pyroact import constants, serializer
from pyroact.core import CallbackObjBase, DynamicProxy, ObjBase, PyroURI, _refusal
from pyroact.errors import NoModuleError, PyroError, _InternalNoModuleError
from pyroact.mobile import accept_all, allow_modules, supply_code

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]

MODES = ("single", "threaded", "process")


# -- fixtures ----------------------------------------------------------------------------------


class ClientCode:
    """Writes modules into a folder only this process imports from; names get a unique prefix."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"mc{uuid.uuid4().hex[:10]}_"

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def write(self, suffix: str, source: str) -> str:
        """Write module ``prefix + suffix`` (``{p}`` in the source is the prefix); its name."""
        name = self.name(suffix)
        parts = name.split(".")
        folder = self.root
        for package in parts[:-1]:
            folder = folder / package
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").touch()
        path = folder / f"{parts[-1]}.py"
        path.write_text(textwrap.dedent(source).replace("{p}", self.prefix), encoding="utf-8")
        importlib.invalidate_caches()
        return name

    def agent(self, suffix: str, text: str = "agent") -> Any:
        """Write a module with an ``Agent`` class and return an instance of it."""
        name = self.write(
            suffix,
            f"""
            class Agent:
                def __init__(self, text):
                    self.text = text

                def describe(self):
                    return "{text}:" + self.text
            """,
        )
        return importlib.import_module(name).Agent("x")


@pytest.fixture
def client_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientCode]:
    root = tmp_path / "client_only"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    code = ClientCode(root)
    yield code
    for name in [n for n in sys.modules if n.startswith(code.prefix)]:
        del sys.modules[name]


SERVER_ONLY = {
    "goods_box_{mode}.py": """
        from goods_part_{mode} import Part

        class Box:
            def __init__(self, n):
                self.parts = [Part(i) for i in range(n)]

            def total(self):
                return sum(p.weight for p in self.parts)
        """,
    "goods_part_{mode}.py": """
        class Part:
            def __init__(self, weight):
                self.weight = weight
        """,
}
# Downloaded code stays importable in this process (its source is kept), so every test that
# downloads uses modules of its own: one pair per mode, and a spare one.
SERVER_ONLY_MODES = (*MODES, "spare")


@pytest.fixture(scope="module")
def server_only_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of modules only the download servers have."""
    folder = tmp_path_factory.mktemp("server_only")
    for label in SERVER_ONLY_MODES:
        for filename, source in SERVER_ONLY.items():
            text = textwrap.dedent(source).replace("{mode}", label)
            (folder / filename.replace("{mode}", label)).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def server() -> Iterator[Callable[..., str]]:
    """``server(mode, mobile=True, validator="accept", path=None)``: the URI of its shop."""
    started: dict[tuple[Any, ...], ServerProcess] = {}

    def get(
        mode: str, *, mobile: bool = True, validator: str = "accept", path: Path | None = None
    ) -> str:
        key = (mode, mobile, validator, path)
        if key not in started:
            args = [mode, f"--validator={validator}"]
            if mobile:
                args.append("--mobile")
            if path is not None:
                args.append(f"--path={path}")
            started[key] = ServerProcess("mobile_server.py", *args, timeout=30)
        return started[key].uri

    try:
        yield get
    finally:
        for process in started.values():
            process.kill()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pyroloc(uri: str, name: str) -> str:
    parsed = PyroURI(uri)
    return f"PYROLOC://{parsed.address}:{parsed.port}/{name}"


# -- uploads (client -> server) ----------------------------------------------------------------


def test_upload_in_every_mode(server: Callable[..., str], client_code: ClientCode, mode: str):
    agent = client_code.agent("agent", "uploaded")
    module = type(agent).__module__
    with DynamicProxy(server(mode)) as shop:
        assert shop.has_modules(module) == [False]
        reply = shop.describe(agent)
        assert reply["text"] == "uploaded:x"
        assert reply["module"] == module
        assert shop.has_modules(module) == [True]
        # Installed once: the next call needs no upload and the server kept serving.
        assert shop.describe(agent)["text"] == "uploaded:x"


def test_upload_of_a_package_module_and_its_dependency_chain(
    server: Callable[..., str], client_code: ClientCode, mode: str
):
    # pkg.sub.agent imports pkg.sub.prices, which imports a top-level module: all at module
    # level, all missing on the server (Pyro 3.9.1's mobilehierarchy).
    base = client_code.write("rates", "RATE = 3\n")
    prices = client_code.write(
        "pkg.sub.prices",
        """
        from {p}rates import RATE

        def price(n):
            return n * RATE
        """,
    )
    agent_module = client_code.write(
        "pkg.sub.agent",
        """
        import {p}pkg.sub.prices as prices

        class Agent:
            def describe(self):
                return f"costs {prices.price(14)}"
        """,
    )
    agent = importlib.import_module(agent_module).Agent()
    with DynamicProxy(server(mode)) as shop:
        assert shop.describe(agent)["text"] == "costs 42"
        names = [agent_module, prices, base, client_code.name("pkg"), client_code.name("pkg.sub")]
        assert shop.has_modules(*names) == [True] * 5


def test_upload_reaches_the_worker_of_a_replicated_object(
    server: Callable[..., str], client_code: ClientCode, tmp_path: Path
):
    # Two workers: while one is held busy, calls (and the supply call, which goes to the
    # same object) land on the other; afterwards the first one gets the module on its own.
    uri = pyroloc(server("process"), "replicated")
    agent = client_code.agent("agent", "replicated")
    started, release = tmp_path / "started", tmp_path / "release"
    holder = DynamicProxy(uri)
    held: list[Any] = []
    thread = threading.Thread(target=lambda: held.append(holder.hold(str(started), str(release))))
    thread.start()
    try:
        wait_until(started.exists, timeout=20, what="the held call to start")
        with DynamicProxy(uri) as shop:
            other = shop.describe(agent)
            assert other["text"] == "replicated:x"
            release.touch()
            thread.join(20)
            assert held and held[0] != other["pid"]
            pids = {other["pid"]}
        # Idle workers: a new connection's calls go to the first one again (this connection's
        # would stay on its worker), which gets the module itself.
        with DynamicProxy(uri) as fresh:
            for _ in range(50):
                reply = fresh.describe(agent)
                assert reply["text"] == "replicated:x"
                pids.add(reply["pid"])
                if held[0] in pids:
                    break
        assert pids == {held[0], other["pid"]}
    finally:
        release.touch()
        thread.join(20)
        holder._release()


def test_code_is_passed_on_from_server_to_server(
    server: Callable[..., str], client_code: ClientCode
):
    # Pyro 3's testmobile "passon" / agent3: the first server got the module as mobile code
    # and supplies it, from the source it kept, to the second one.
    agent = client_code.agent("agent", "travelled")
    first, second = server("threaded"), server("single")
    with DynamicProxy(first) as shop:
        reply = shop.pass_on(second, agent)
        assert reply["text"] == "travelled:x"
        assert reply["pid"] != shop.pid()


def test_concurrent_uploads_of_the_same_module(server: Callable[..., str], client_code: ClientCode):
    # Pyro 3's threadmobile: clients that all need the same unknown module at once.
    agent = client_code.agent("agent", "concurrent")
    uri = server("threaded")
    results: list[Any] = []

    def call() -> None:
        with DynamicProxy(uri) as shop:
            try:
                results.append(shop.describe(agent)["text"])
            except BaseException as exc:
                results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["concurrent:x"] * 8


def test_code_that_fails_on_import_fails_the_call(
    server: Callable[..., str], client_code: ClientCode
):
    name = client_code.write(
        "broken",
        """
        import os

        class Agent:
            def describe(self):
                return "never"

        if "mobile:" in __file__:  # only where it arrived as mobile code
            raise ValueError("refuses to run on the server")
        """,
    )
    with DynamicProxy(server("threaded")) as shop:
        with pytest.raises(ValueError, match="refuses to run on the server") as info:
            shop.describe(importlib.import_module(name).Agent())
        assert shop.has_modules(name) == [False]
    # The server's traceback shows the mobile code's own lines.
    remote = "".join(info.value.remote_stacktrace)  # type: ignore[attr-defined]
    assert f'File "mobile:{name}"' in remote and 'raise ValueError("refuses' in remote


def test_module_limit_per_call(server: Callable[..., str], client_code: ClientCode):
    limit = constants.MOBILE_CODE_MAX_MODULES

    def chain(label: str, length: int) -> Any:
        # m0 imports m1 ... imports m<length-1>, all at module level.
        for i in reversed(range(length)):
            after = f"import {{p}}{label}{i + 1}\n" if i + 1 < length else ""
            client_code.write(f"{label}{i}", after + f"VALUE = {i}\n")
        client_code.write(
            f"{label}agent",
            f"""
            import {{p}}{label}0

            class Agent:
                def describe(self):
                    return "chain"
            """,
        )
        return importlib.import_module(client_code.name(f"{label}agent")).Agent()

    with DynamicProxy(server("threaded")) as shop:
        # The agent's module and limit-1 dependencies: exactly the limit.
        assert shop.describe(chain("ok", limit - 1))["text"] == "chain"
        with pytest.raises(PyroError, match=f"MOBILE_CODE_MAX_MODULES={limit}") as info:
            shop.describe(chain("long", limit))
        assert client_code.name("long") in str(info.value)
        assert shop.pid() > 0  # the connection is still usable


def test_client_without_the_source_gets_no_module_error(server: Callable[..., str]):
    # A class whose module the client can no longer find (it was created in memory).
    module = types.ModuleType("mc_nowhere_module")
    exec("class Agent:\n    def describe(self):\n        return 'x'\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        agent = module.Agent()
        with DynamicProxy(server("threaded")) as shop:
            with pytest.raises(NoModuleError, match="cannot be supplied from here"):
                shop.describe(agent)
    finally:
        del sys.modules[module.__name__]


def test_oneway_calls_get_no_mobile_code(server: Callable[..., str], client_code: ClientCode):
    agent = client_code.agent("agent", "oneway")
    with DynamicProxy(server("threaded")) as shop:
        shop._setOneway("keep")
        shop.keep(agent)  # fails on the server (logged): no reply to ask for the module with
        assert shop.kept_text() is None
        assert supply_code(shop, type(agent).__module__) == 1
        shop.keep(agent)
        assert wait_until(lambda: shop.kept_text(), timeout=10) == "oneway:x"


# -- permission: PYRO_MOBILE_CODE and the code validator ---------------------------------------


def test_without_mobile_code_a_missing_module_is_no_module_error(
    server: Callable[..., str], client_code: ClientCode, mode: str
):
    agent = client_code.agent("pkg.agent")
    module = type(agent).__module__
    with DynamicProxy(server(mode, mobile=False)) as shop:
        with pytest.raises(NoModuleError, match=f"No module named '{module}'") as info:
            shop.describe(agent)
        assert isinstance(info.value, ImportError)
        assert info.value.name == module  # the dotted name, not just the missing package
        assert shop.has_modules(module) == [False]  # nothing was uploaded


def test_no_validator_denies_and_the_server_goes_on(
    server: Callable[..., str], client_code: ClientCode, mode: str
):
    agent = client_code.agent("agent")
    uri = server(mode, validator="none")
    with DynamicProxy(uri) as shop, DynamicProxy(uri) as other:
        with pytest.raises(PyroError, match="attempt to supply code denied") as info:
            shop.describe(agent)
        assert "setCodeValidator" in str(info.value)
        assert shop.has_modules(type(agent).__module__) == [False]
        assert shop.pid() > 0 and other.pid() > 0


def test_validator_allows_by_pattern(server: Callable[..., str], client_code: ClientCode):
    uri = server("process", validator=f"allow:{client_code.prefix}allowed*")
    with DynamicProxy(uri) as shop:
        assert shop.describe(client_code.agent("allowed", "ok"))["text"] == "ok:x"
        with pytest.raises(PyroError, match="denied by the code validator") as info:
            shop.describe(client_code.agent("other"))
        assert client_code.name("other") in str(info.value)


def test_validator_sees_name_source_and_address(
    server: Callable[..., str], client_code: ClientCode, mode: str
):
    agent = client_code.agent("agent", "seen")
    module = type(agent).__module__
    with DynamicProxy(server(mode, validator="record")) as shop:
        shop.describe(agent)
        address = shop.adapter.channel.sock.getsockname()
        questions = [q for q in shop.validator_questions() if q[0] == module]
    assert questions == [(module, inspect.getsource(sys.modules[module]), tuple(address))]


# -- downloads (server -> client) --------------------------------------------------------------


def test_download_of_a_module_and_its_dependency(
    server: Callable[..., str], server_only_dir: Path, mode: str
):
    # goods_box imports goods_part at module level; the client has neither.
    box_module, part_module = f"goods_box_{mode}", f"goods_part_{mode}"
    assert importlib.util.find_spec(box_module) is None
    with (
        config_values(PYRO_MOBILE_CODE=True),
        DynamicProxy(server(mode, path=server_only_dir)) as shop,
    ):
        box = shop.make(box_module, "Box", 4)
    assert type(box).__module__ == box_module
    assert type(box.parts[0]).__module__ == part_module
    assert box.total() == 6
    assert inspect.getsource(type(box)).startswith("class Box")


def test_download_needs_mobile_code_on_both_sides(
    server: Callable[..., str], server_only_dir: Path
):
    with DynamicProxy(server("threaded", path=server_only_dir)) as shop:
        with pytest.raises(NoModuleError, match="goods_part_spare"):
            shop.make("goods_part_spare", "Part", 1)  # mobile code off in this client
    denied = server("threaded", validator="none", path=server_only_dir)
    with config_values(PYRO_MOBILE_CODE=True), DynamicProxy(denied) as shop:
        with pytest.raises(PyroError, match="attempt to retrieve code denied"):
            shop.make("goods_part_spare", "Part", 1)
    assert importlib.util.find_spec("goods_part_spare") is None


def test_retrieve_errors(server: Callable[..., str]):
    with DynamicProxy(server("threaded")) as shop:
        with pytest.raises(PyroError, match="Client wanted a non-existing module"):
            shop.remote_retrieve_code("mc_no_such_module_anywhere")
        with pytest.raises(PyroError, match="cannot read module source code"):
            shop.remote_retrieve_code("_socket")
        assert "def " in shop.remote_retrieve_code("mobile_objects")


# -- in-process: the object's entry points and the mechanism -----------------------------------


class Plain(ObjBase):
    def __init__(self) -> None:
        ObjBase.__init__(self)


def test_entry_points_are_reachable_but_check_the_flag() -> None:
    obj = Plain()
    assert _refusal(obj, "remote_supply_code") is None
    assert _refusal(obj, "remote_retrieve_code") is None
    assert _refusal(obj, "setCodeValidator") is not None
    with config_values(PYRO_MOBILE_CODE=False):
        obj.setCodeValidator(accept_all)
        with pytest.raises(PyroError, match="attempt to supply code denied.*PYRO_MOBILE_CODE"):
            obj.remote_supply_code("mc_flag_off", "X = 1\n", None)
        with pytest.raises(PyroError, match="attempt to retrieve code denied"):
            obj.remote_retrieve_code("json")
    assert "mc_flag_off" not in sys.modules


def test_supply_refuses_bytecode_and_reuses_existing_modules() -> None:
    obj = Plain()
    obj.setCodeValidator(accept_all)
    with config_values(PYRO_MOBILE_CODE=True):
        with pytest.raises(PyroError, match="source text, not str and bytes"):
            obj.remote_supply_code("mc_bytes", b"X = 1\n", None)  # type: ignore[arg-type]
        obj.remote_supply_code("json", "raise SystemExit('replaced!')\n", None)
    assert importlib.import_module("json").dumps(1) == "1"
    assert "mc_bytes" not in sys.modules


def test_allow_modules_by_direction() -> None:
    both = allow_modules("agent.*")
    assert both("agent.shop", "src", None) and both("agent.shop", None, None)
    assert not both("agentx", "src", None) and not both("other", None, None)
    uploads = allow_modules("agent.*", download=False)
    assert uploads("agent.shop", "src", None) and not uploads("agent.shop", None, None)
    with pytest.raises(TypeError):
        allow_modules(3)  # type: ignore[arg-type]


def test_in_process_daemon_denies_by_default(server_mode: str) -> None:
    with config_values(PYRO_MOBILE_CODE=True), serving(server_mode) as daemon:
        uri = daemon.connect(Plain())
        with DynamicProxy(uri) as proxy:
            with pytest.raises(PyroError, match="attempt to supply code denied"):
                proxy.remote_supply_code("mc_in_process", "X = 1\n", None)
    assert "mc_in_process" not in sys.modules


class Listener(CallbackObjBase):
    def __init__(self) -> None:
        CallbackObjBase.__init__(self)

    def notify(self, event: Any) -> str:
        return "heard"


def test_the_no_module_signal_keeps_the_connection_and_the_loop(server_mode: str) -> None:
    # By hand, as a client would see it: the signal is an ordinary reply on a connection that
    # stays open, and for a CallbackObjBase it is no callback error (the single mode would
    # otherwise raise it out of the request loop, which serving() checks).
    missing = f"mc{uuid.uuid4().hex[:8]}.agent"
    with config_values(PYRO_MOBILE_CODE=True), serving(server_mode) as daemon:
        guid = daemon.connect(Listener()).objectID
        client = RawClient(daemon.port)
        try:
            seq = client.sm.next_seq()
            payload = f"c{missing}\nThing\n.".encode()
            client.channel.send(
                client.sm.build(
                    spec.MSG_REQUEST, seq=seq, object_id=guid, method="notify", payload=payload
                )
            )
            reply = client.sm.check(client.channel.recv_frame())
            assert reply.msg_type == spec.MSG_EXCEPTION
            signal = serializer.loads_exception(reply.payload)
            assert isinstance(signal, _InternalNoModuleError) and signal.args == (missing,)
            answer = client.call(guid, "notify", 1)
            assert serializer.loads(answer.payload) == "heard"
        finally:
            client.close()


def test_missing_module_is_named_with_its_dotted_name(client_code: ClientCode) -> None:
    # Protocol 0 GLOBAL opcodes: "c<module>\n<name>\n", then STOP.
    missing = client_code.name("pkg.sub.mod")
    with pytest.raises(NoModuleError) as info:
        serializer.loads(f"c{missing}\nThing\n.".encode())
    assert info.value.name == missing
    # A module that exists but whose own import is missing names that import.
    dependent = client_code.write("dependent", "import {p}gone\n")
    with pytest.raises(NoModuleError) as info:
        serializer.loads(f"c{dependent}\nThing\n.".encode())
    assert info.value.name == client_code.name("gone")


def test_install_module_builds_packages_and_keeps_its_source() -> None:
    unique = f"mc{uuid.uuid4().hex[:8]}"
    name = f"{unique}.a.b"
    source = "def f():\n    return 42\n"
    try:
        module = serializer.install_module(name, source, origin="test")
        assert module.f() == 42
        assert importlib.import_module(f"{unique}.a").b is module
        assert serializer.module_source(name) == source
        assert inspect.getsource(module.f) == source
        needs = f"import {unique}_gone\nY = 2\n"
        with pytest.raises(NoModuleError) as info:
            serializer.install_module(f"{unique}.needs", needs, origin="test")
        assert info.value.name == f"{unique}_gone"
        assert f"{unique}.needs" not in sys.modules
        # The dependency arrives: the module runs on its next import.
        serializer.install_module(f"{unique}_gone", "X = 1\n", origin="test")
        assert importlib.import_module(f"{unique}.needs").Y == 2
        with pytest.raises(TypeError):
            serializer.install_module(f"{unique}.c", b"X = 1", origin="t")  # type: ignore[arg-type]
    finally:
        for key in [k for k in sys.modules if k.startswith(unique)]:
            del sys.modules[key]


def test_module_source_errors() -> None:
    with pytest.raises(NoModuleError):
        serializer.module_source("mc_really_not_there")
    for bad in ("..up", "a..b", "", "a b", "os/path"):
        with pytest.raises(PyroError, match="is not a module name"):
            serializer.module_source(bad)
        with pytest.raises(PyroError, match="is not a module name"):
            serializer.install_module(bad, "X = 1\n", origin="test")
    with pytest.raises(PyroError, match="cannot read module source code"):
        serializer.module_source("sys")
    assert "def dumps" in serializer.module_source("json")
    assert pyroact.config.PYRO_MOBILE_CODE is False  # the default
