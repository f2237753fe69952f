"""What the test server scripts here share: announce the URI, serve until stdin closes.

The test (the parent) reads the ``URI <uri>`` line, and ends the server by closing its stdin
(or by killing it, in the fault tests).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import pyroact.core


def serve(daemon: pyroact.core.Daemon, uri: Any) -> None:
    """Print ``URI <uri>``, run the request loop until stdin closes, then close the daemon."""
    print(f"URI {uri}", flush=True)

    def watch_stdin() -> None:
        sys.stdin.read()
        daemon.shutdown()

    threading.Thread(target=watch_stdin, daemon=True).start()
    daemon.requestLoop(timeout=0.1)
    daemon.closedown()
