"""What every benchmark server script shares: the readiness line and dying with the parent.

A server prints exactly one line on stdout, ``READY <address> <pyroact wire engine or ->``, once it
accepts connections, and then nothing more. It exits when its stdin reaches end of file, so a
server outlives neither a finalizer's kill nor a pytest process that was itself killed.
"""

from __future__ import annotations

import os
import resource
import sys
import threading


def _exit_on_stdin_eof() -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def watch_parent() -> None:
    """Exit the process (at once, without cleanup) when stdin is closed."""
    threading.Thread(target=_exit_on_stdin_eof, name="watch-parent", daemon=True).start()


def raise_fd_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; the new soft limit.

    The idle-connection workload opens 1,000 connections to one server, more than the usual
    soft limit of 1,024 descriptors leaves room for.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def announce(address: str, engine: str = "-") -> None:
    """Print the readiness line (``engine``: the pyroact wire engine, ``-`` for other servers)."""
    sys.stdout.write(f"READY {address} {engine}\n")
    sys.stdout.flush()
