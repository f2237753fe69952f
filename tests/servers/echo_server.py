"""A small pyroact server for restart/kill tests, run as a separate process.

Usage: python echo_server.py PORT GUID MODE

Serves an ``Echo`` object under the object id GUID on 127.0.0.1:PORT (0: any), prints
``URI <uri>`` and serves until stdin closes or the process is killed.
"""

from __future__ import annotations

import sys

import server_only_errors
from serve_until_stdin_closes import serve

import pyroact.core


class Echo(pyroact.core.ObjBase):
    def echo(self, value: object) -> object:
        return value

    def secret_failure(self, message: str) -> None:
        raise server_only_errors.SecretError(message)


def main() -> None:
    port, guid, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    daemon = pyroact.core.Daemon(port=port, norange=1, mode=mode)
    obj = Echo()
    obj.setGUID(guid)
    uri = daemon.connect(obj, "echo")
    serve(daemon, uri)


if __name__ == "__main__":
    main()
