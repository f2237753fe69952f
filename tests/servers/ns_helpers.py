"""Name-server helpers shared by tests/test_ns_*.py: an in-process name server in a thread,
and ``python -m pyroact.nameserver`` as a child process."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroact.nameserver import NameServerStarter

ROOT = Path(__file__).resolve().parent.parent.parent


@contextlib.contextmanager
def running_ns(mode: str = "threaded", **kwargs: Any) -> Iterator[NameServerStarter]:
    """A name server on 127.0.0.1, port 0, discovery on a free UDP port, loop in a thread."""
    kwargs.setdefault("hostname", "127.0.0.1")
    kwargs.setdefault("nsport", 0)
    kwargs.setdefault("bcport", 0)
    kwargs.setdefault("urifile", "")
    starter = NameServerStarter(kwargs.pop("identification", None))
    starter.initialize(mode=mode, **kwargs)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            starter.requestLoop(timeout=0.1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop, name="test-ns-loop", daemon=True)
    thread.start()
    try:
        yield starter
    finally:
        starter.shutdown()
        thread.join(5)
        starter.close()
    assert not thread.is_alive(), "name server loop did not stop"
    assert not errors, f"name server loop raised {errors!r}"


def child_env(storage: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYRO_STORAGE"] = str(storage)
    return env


class NSProcess:
    """``python -m pyroact.nameserver ARGS`` in a child process; waits for its URI line."""

    def __init__(self, storage: Path, *args: str, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyroact.nameserver", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(storage),
            cwd=str(storage),
        )
        self.output = ""
        self.uri = self._wait_for("URI is: ", timeout)

    def _wait_for(self, prefix: str, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                for line in buffer.decode(errors="replace").splitlines():
                    if line.startswith(prefix):
                        self.output = buffer.decode(errors="replace")
                        return line[len(prefix) :].strip()
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise AssertionError(f"name server printed no URI within {timeout}s")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.kill()
                    raise AssertionError(f"name server exited early:\n{buffer!r}\n{err}")
                buffer += chunk

    @property
    def port(self) -> int:
        return int(self.uri.rsplit(":", 1)[1].split("/", 1)[0])

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout)
        self._close_streams()
        return status

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_streams()

    def _close_streams(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> NSProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
