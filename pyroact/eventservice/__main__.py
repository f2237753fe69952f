"""``python -m pyroact.eventservice``: run an event service in the foreground (layer 9).

Registers itself in a name server as ``:Pyro.EventService`` (found with ``--ns-host`` /
``--ns-port``, else ``PYRO_NS_HOSTNAME`` or discovery) unless ``-N`` is given. Refuses to start
when that name is taken, unless ``--replace``. Prints its URI; exits with status 1 and a
message on stderr when it cannot start; stops cleanly on SIGTERM and SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pyroact
from pyroact import util
from pyroact.errors import DaemonError, NamingError, PyroError

from .server import EventService, EventServiceStarter

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The command line parser.

    Raises:
        Nothing.
    """
    cfg = pyroact.config
    p = argparse.ArgumentParser(
        prog="python -m pyroact.eventservice",
        description="Run a pyroact event service (publish/subscribe).",
    )
    p.add_argument("-n", "--host", default=None, help="bind address (default PYRO_HOST)")
    p.add_argument(
        "-p",
        "--port",
        type=int,
        default=None,
        help=f"TCP port, 0 = any free port (default PYRO_PORT, {cfg.PYRO_PORT}, and the "
        "ports after it)",
    )
    p.add_argument("-N", "--no-ns", action="store_true", help="do not register in a name server")
    p.add_argument("--ns-host", default=None, help="name server host (default: discovery)")
    p.add_argument("--ns-port", type=int, default=None, help="name server port")
    p.add_argument(
        "--replace",
        action="store_true",
        help="take over the name :Pyro.EventService if another event service holds it",
    )
    p.add_argument(
        "-i", "--identification", default=None, help="passphrase (also used towards the NS)"
    )
    p.add_argument(
        "--queuesize",
        type=int,
        default=None,
        help=f"per-subscriber queue size, 0 = unbounded (default PYRO_ES_QUEUESIZE, "
        f"{cfg.PYRO_ES_QUEUESIZE})",
    )
    block = p.add_mutually_exclusive_group()
    block.add_argument(
        "--block",
        dest="blockqueue",
        action="store_const",
        const=True,
        default=None,
        help="a publisher waits for room in a full queue (default PYRO_ES_BLOCKQUEUE)",
    )
    block.add_argument(
        "--drop",
        dest="blockqueue",
        action="store_const",
        const=False,
        help="an event for a full queue is dropped at once",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"longest wait for room in a full queue, seconds (default PYRO_ES_TIMEOUT, "
        f"{cfg.PYRO_ES_TIMEOUT})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the event service until SIGTERM/SIGINT.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean stop, 1 when the event service could not start,
        2 for bad arguments.

    Raises:
        SystemExit: for ``--help`` and bad arguments (argparse).
    """
    args = parser().parse_args(argv)
    if args.no_ns and (args.ns_host or args.ns_port is not None or args.replace):
        print("error: -N/--no-ns excludes --ns-host, --ns-port and --replace", file=sys.stderr)
        return 2
    try:
        service = EventService(args.queuesize, args.blockqueue, args.timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    starter = EventServiceStarter(identification=args.identification)
    try:
        uri = starter.initialize(
            hostname=args.host,
            port=args.port,
            useNameServer=not args.no_ns,
            nsHost=args.ns_host,
            nsPort=args.ns_port,
            replace=args.replace,
            service=service,
        )
    except DaemonError as exc:
        print(f"Cannot start the Event Server, the address cannot be used: {exc}", file=sys.stderr)
        return 1
    except NamingError as exc:
        print(f"Cannot start the Event Server: {exc}", file=sys.stderr)
        return 1
    except (PyroError, OSError) as exc:
        print(f"Cannot start the Event Server: {exc}", file=sys.stderr)
        return 1

    return util.run_service(starter, title="Event Server", uri_line=f"URI= {uri}")


if __name__ == "__main__":
    sys.exit(main())
