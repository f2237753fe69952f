"""Benchmark servers in their own processes: start one, wait until it is ready, always kill it.

A server script in ``benchmarks/servers/`` prints ``READY <address> <engine>`` on stdout once it
accepts connections (see ``servers/_common.py``). :func:`start_server` waits for that line with a
deadline and raises, with the server's stderr, if it does not come; :meth:`ServerProcess.stop`
kills the process and reaps it.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVERS = Path(__file__).resolve().parent / "servers"
READY_TIMEOUT = 20.0


class ServerError(RuntimeError):
    """A benchmark server did not start."""


class ServerProcess:
    """A running server: ``address`` (a URI or ``host:port``), ``engine`` and ``pid``."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], stderr: object) -> None:
        self.name = name
        self.proc = proc
        self._stderr = stderr
        self.address = ""
        self.engine = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def host_port(self) -> tuple[str, int]:
        """``(host, port)`` from the address (a URI ``PROTO:id@host:port`` or ``host:port``)."""
        rest = self.address.split("://", 1)[-1].split("@")[-1]
        host, _, port = rest.split("/", 1)[0].rpartition(":")
        return host, int(port)

    def stderr_text(self) -> str:
        stream = self._stderr
        stream.seek(0)  # type: ignore[attr-defined]
        return stream.read().decode(errors="replace")  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Kill the server and reap it (idempotent)."""
        proc = self.proc
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill that did not take
            pass
        for stream in (proc.stdin, proc.stdout, self._stderr):
            if stream is not None and not stream.closed:  # type: ignore[attr-defined]
                stream.close()  # type: ignore[attr-defined]


def start_server(script: str, *args: str, timeout: float = READY_TIMEOUT) -> ServerProcess:
    """Run ``servers/<script>`` with this interpreter and wait for its readiness line.

    Raises:
        ServerError: the server exited, printed something else, or was not ready in time.
    """
    stderr = tempfile.TemporaryFile()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(SERVERS / script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        cwd=tempfile.gettempdir(),  # log or storage files a server writes stay out of the tree
    )
    server = ServerProcess(f"{script} {' '.join(args)}".strip(), proc, stderr)
    try:
        line = _read_line(proc, time.monotonic() + timeout)
        words = line.split()
        if len(words) != 3 or words[0] != "READY":
            raise ServerError(f"{server.name}: unexpected first line {line!r}")
        server.address, server.engine = words[1], words[2]
    except BaseException as exc:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        text = server.stderr_text()  # before stop() closes the file
        server.stop()
        if isinstance(exc, ServerError):
            raise ServerError(f"{exc}\n--- server stderr ---\n{text}") from None
        raise
    return server


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError("not ready before the deadline")
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ServerError(f"exited with status {proc.wait()} before it was ready")
            data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


class ServerPool:
    """Starts each kind of server at most once, on first use; :meth:`close` kills them all."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, ...], ServerProcess] = {}

    def get(self, script: str, *args: str) -> ServerProcess:
        """The running server for ``servers/<script> args`` (started now if need be).

        Raises:
            ServerError: it does not start, or it died since it was started.
        """
        key = (script, *args)
        server = self._servers.get(key)
        if server is not None and server.proc.poll() is not None:
            raise ServerError(
                f"{server.name} died (status {server.proc.returncode})\n"
                f"--- server stderr ---\n{server.stderr_text()}"
            )
        if server is None:
            server = self._servers[key] = start_server(script, *args)
        return server

    def close(self) -> None:
        """Kill every server started so far."""
        while self._servers:
            _, server = self._servers.popitem()
            server.stop()


def raise_fd_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; the new soft limit.

    The idle-connection workload holds 1,000 connections open in the pytest process, more
    than the usual soft limit of 1,024 descriptors leaves room for.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft
