"""A process-mode pyroact server for the no-orphans test, run as a separate process.

Usage: python procpool_server.py

Serves a ``proc_objects.Worker`` on 127.0.0.1 (any port) from a two-worker process-mode
daemon, prints ``URI <uri>`` and serves until stdin closes or the process is killed.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proc_objects import Worker  # noqa: E402
from serve_until_stdin_closes import serve  # noqa: E402

import pyroact.core  # noqa: E402


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0, mode="process", workers=2)
    uri = daemon.connect(Worker, "worker")
    serve(daemon, uri)


if __name__ == "__main__":
    main()
