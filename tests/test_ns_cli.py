"""``python -m pyroact.nameserver`` and ``python -m pyroact.nsc`` as a user runs them."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.ns_helpers import NSProcess, child_env

from pyroact import nsc
from pyroact.protocol import getHostname

pytestmark = pytest.mark.network


@pytest.fixture
def nsproc(tmp_path: Path) -> Iterator[NSProcess]:
    with NSProcess(
        tmp_path, "-n", "127.0.0.1", "-p", "0", "-b", "0", "-d", str(tmp_path / "ns.sqlite"), "-v"
    ) as proc:
        yield proc


def run_nsc(tmp_path: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyroact.nsc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(tmp_path),
        cwd=tmp_path,
    )


def nsc_main(port: int, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    status = nsc.main(["-h", "127.0.0.1", "-p", str(port), *args], out=out)
    return status, out.getvalue()


def test_the_name_server_prints_and_writes_its_uri(nsproc: NSProcess, tmp_path: Path) -> None:
    assert nsproc.uri.startswith("PYRO://127.0.0.1:")
    assert "Name server listening on 127.0.0.1:" in nsproc.output
    assert f"Storage: SQLite file {tmp_path / 'ns.sqlite'}" in nsproc.output
    assert (tmp_path / "Pyro_NS_URI").read_text() == nsproc.uri + "\n"
    assert (tmp_path / "ns.sqlite").exists()


def test_nsc_commands_in_a_child_process(nsproc: NSProcess, tmp_path: Path) -> None:
    port = str(nsproc.port)
    ok = run_nsc(tmp_path, "-h", "127.0.0.1", "-p", port, "ping")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        f"NS is at 127.0.0.1 ({getHostname('127.0.0.1') or '??'}) port {port}",
        "NS is up and running!",
    ]
    failed = run_nsc(tmp_path, "-h", "127.0.0.1", "-p", port, "resolve", "nothing")
    assert failed.returncode == 1
    assert "## name not found: :Default.nothing ##" in failed.stderr
    usage = run_nsc(tmp_path, "-h", "127.0.0.1", "-p", port, "frobnicate")
    assert usage.returncode == 2 and "unknown command 'frobnicate'" in usage.stderr


def test_nsc_command_outputs(nsproc: NSProcess) -> None:
    port = nsproc.port
    uri = "PYRO://127.0.0.1:7766/0123456789abcdef0123456789abcdef"
    assert nsc_main(port, "creategroup", "app")[1].endswith("app created.\n")
    status, out = nsc_main(port, "register", "app.obj", uri)
    assert status == 0 and out.endswith(f"registered app.obj  -->  {uri}\n")
    assert nsc_main(port, "resolve", "app.obj")[1].endswith(f"app.obj  --> {uri}\n")
    assert nsc_main(port, "list")[1].endswith(":Default --> ( [app] )\n")
    assert nsc_main(port, "list", "app", ":")[1].splitlines()[1:] == [
        ":Default.app --> ( obj )",
        ": --> ( [Default] [Pyro] )",
    ]
    status, out = nsc_main(port, "listall")
    assert out.splitlines()[1:] == [
        "-------------- START DATABASE",
        f":Default.app.obj  -->  {uri}",
        f":Pyro.NameServer  -->  {nsproc.uri}",
        "-------------- END",
    ]
    assert nsc_main(port, "setmeta", "app.obj", "blue")[1].endswith("Metadata of app.obj set.\n")
    lines = nsc_main(port, "showmeta", "app.obj")[1].splitlines()
    assert lines[1] == "META INFO OF :Default.app.obj"
    assert lines[2].startswith("system meta info : [type=1 timestamp=")
    assert lines[3] == "  user meta info : 'blue'"
    assert nsc_main(port, "remove", "app.obj")[1].endswith("app.obj unregistered.\n")
    assert nsc_main(port, "deletegroup", "app")[1].endswith("app deleted.\n")


def test_nsc_failures_exit_non_zero(
    nsproc: NSProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = nsproc.port
    cases = [
        (("remove", "nothing"), 1, "## name not found: :Default.nothing ##"),
        (("creategroup", ":Default"), 1, "## group already exists: :Default ##"),
        (("deletegroup", ":"), 1, "## not allowed to delete root group: : ##"),
        (("register", "x", "not-a-uri"), 1, "## invalid URI: :Default.x ##"),
        (("resync",), 1, "not paired"),
        (("register", "only-a-name"), 2, "wrong number of arguments"),
        ((), 2, "no command"),
    ]
    for args, status, message in cases:
        assert nsc_main(port, *args)[0] == status, args
        assert message in capsys.readouterr().err, args
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    assert nsc_main(free, "ping")[0] == 1
    assert "could not find NameServer on host 127.0.0.1" in capsys.readouterr().err


def test_nsc_shutdown_is_refused_by_default(nsproc: NSProcess) -> None:
    bcport = int(nsproc.output.split("Broadcast server listening on 127.0.0.1:")[1].split()[0])
    out = io.StringIO()
    status = nsc.main(["-h", "127.0.0.1", "-b", str(bcport), "shutdown"], out=out)
    assert status == 1
    assert out.getvalue() == "Result from system command shutdown : Shutdown request denied\n"
    assert nsproc.proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_name_server_stops_cleanly_on_signals(tmp_path: Path, sig: int) -> None:
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", "0", "-x", "--memory") as proc:
        proc.proc.send_signal(sig)
        assert proc.proc.wait(10) == 0
        assert proc.proc.stdout is not None
        assert "Name Server shut down." in proc.proc.stdout.read().decode()


def test_persistent_by_default_in_the_storage_directory(tmp_path: Path) -> None:
    with NSProcess(tmp_path, "-n", "127.0.0.1", "-p", "0", "-x") as proc:
        assert (tmp_path / "pyroact_ns.sqlite").exists()
        assert proc.terminate() == 0


def run_ns(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyroact.nameserver", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(tmp_path),
        cwd=tmp_path,
    )


def test_the_name_server_fails_clearly_when_it_cannot_start(
    nsproc: NSProcess, tmp_path: Path
) -> None:
    busy = run_ns(tmp_path, "-n", "127.0.0.1", "-p", str(nsproc.port), "-x", "--memory")
    assert busy.returncode == 1
    assert "The Name Server appears to be already running on this host" in busy.stderr
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"not a database" * 200)
    bad_db = run_ns(tmp_path, "-n", "127.0.0.1", "-p", "0", "-x", "-d", str(bogus))
    assert bad_db.returncode == 1
    assert "Cannot start the Name Server" in bad_db.stderr
    assert "cannot use the name server database" in bad_db.stderr
    no_ident = run_ns(tmp_path, "-p", "0", "-x", "--memory", "--allow-udp-shutdown")
    assert no_ident.returncode == 2 and "needs -i" in no_ident.stderr
    public = run_ns(tmp_path, "-n", "0.0.0.0", "-p", "0", "-x", "--memory")
    assert public.returncode == 1 and "refusing to bind" in public.stderr
