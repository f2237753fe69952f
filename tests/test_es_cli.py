"""``python -m pyroact.eventservice`` as a child process (W-18 --replace, W-26 exit status)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pyroact import constants
from pyroact.errors import NamingError
from pyroact.eventservice import Event, Publisher, Subscriber
from pyroact.naming import NameServerLocator
from tests.helpers import wait_until
from tests.servers.ns_helpers import child_env, running_ns

PREFIX = "URI= "


class ESProcess:
    """``python -m pyroact.eventservice ARGS``; waits for its URI line."""

    def __init__(self, storage: Path, *args: str, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyroact.eventservice", "-n", "127.0.0.1", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(storage),
            cwd=str(storage),
        )
        self.uri = self._wait_for_uri(timeout)

    def _wait_for_uri(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                for line in buffer.decode(errors="replace").splitlines():
                    if line.startswith(PREFIX):
                        return line[len(PREFIX) :].strip()
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise AssertionError(f"event service printed no URI within {timeout}s")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.kill()
                    raise AssertionError(f"event service exited early:\n{buffer!r}\n{err}")
                buffer += chunk

    def terminate(self, timeout: float = 10.0) -> tuple[int, str]:
        """SIGTERM and wait; returns the exit status and the rest of stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10)

    def __enter__(self) -> ESProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_failing(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyroact.eventservice", "-n", "127.0.0.1", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(storage),
        cwd=str(storage),
        timeout=30,
    )


class Collector(Subscriber):
    def __init__(self, ns_port: int) -> None:
        super().__init__(nsHost="127.0.0.1", nsPort=ns_port)
        self.got: list[object] = []

    def event(self, event: Event) -> None:
        self.got.append(event.msg)


def test_cli_registers_serves_replaces_and_stops(tmp_path: Path) -> None:
    with running_ns() as ns_starter:
        port = str(ns_starter.daemon.port)
        ns = NameServerLocator().getNS("127.0.0.1", ns_starter.daemon.port)
        nsargs = ("-p", "0", "--ns-host", "127.0.0.1", "--ns-port", port)
        with ESProcess(tmp_path, *nsargs) as first:
            assert first.uri.startswith("PYRO://127.0.0.1:")
            assert str(ns.resolve(constants.EVENTSERVER_NAME)) == first.uri

            # pub/sub through the child
            sub = Collector(ns_starter.daemon.port)
            thread = threading.Thread(target=sub.listen, kwargs={"timeout": 0.05})
            thread.start()
            try:
                sub.subscribe("cli")
                Publisher(nsHost="127.0.0.1", nsPort=ns_starter.daemon.port).publish("CLI", 42)
                wait_until(lambda: sub.got == [42], what="an event through the CLI server")
            finally:
                sub.abort()
                thread.join(5)
                sub.close()

            # the name is taken: refuse, non-zero exit, nothing asked on stdin (W-18, W-26)
            refused = run_failing(tmp_path, *nsargs)
            assert refused.returncode == 1
            assert "already registered" in refused.stderr
            assert str(ns.resolve(constants.EVENTSERVER_NAME)) == first.uri

            with ESProcess(tmp_path, *nsargs, "--replace") as second:
                assert second.uri != first.uri
                assert str(ns.resolve(constants.EVENTSERVER_NAME)) == second.uri
                # stopping the replaced one leaves the new registration alone
                status, out = first.terminate()
                assert status == 0 and "Event Server shut down." in out
                assert str(ns.resolve(constants.EVENTSERVER_NAME)) == second.uri
                status, out = second.terminate()
                assert status == 0
        with pytest.raises(NamingError):
            ns.resolve(constants.EVENTSERVER_NAME)


def test_cli_without_name_server(tmp_path: Path) -> None:
    with ESProcess(tmp_path, "-p", "0", "-N") as es:
        sub_uri = es.uri
        Publisher(esURI=sub_uri).publish("nobody", "listens")
        status, out = es.terminate()
        assert status == 0 and "Event Server shut down." in out


def test_cli_fails_without_a_reachable_name_server(tmp_path: Path) -> None:
    with running_ns() as ns_starter:
        closed_port = ns_starter.daemon.port
    result = run_failing(
        tmp_path, "-p", "0", "--ns-host", "127.0.0.1", "--ns-port", str(closed_port)
    )
    assert result.returncode == 1
    assert "Cannot start the Event Server" in result.stderr


def test_cli_bad_arguments(tmp_path: Path) -> None:
    assert run_failing(tmp_path, "-N", "--replace").returncode == 2
    assert run_failing(tmp_path, "-N", "--queuesize", "-1").returncode == 2
    assert run_failing(tmp_path, "--port", "x").returncode == 2
