"""What every benchmark server script shares: the readiness line and dying with the parent.

A server prints exactly one line on stdout, ``READY <address> <pyroact wire engine or ->``, once it
accepts connections, and then nothing more. It exits when its stdin reaches end of file, so a
server outlives neither a finalizer's kill nor a pytest process that was itself killed.
"""

from __future__ import annotations

import os
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


def announce(address: str, engine: str = "-") -> None:
    """Print the readiness line (``engine``: the pyroact wire engine, ``-`` for other servers)."""
    sys.stdout.write(f"READY {address} {engine}\n")
    sys.stdout.flush()
