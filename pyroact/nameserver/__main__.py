"""``python -m pyroact.nameserver``: run a name server in the foreground (layer 9).

Persistent by default (SQLite file ``PYRO_NS_DBFILE``); ``--memory`` keeps the namespace in
memory. Prints its URI and writes it to ``PYRO_NS_URIFILE``; exits with status 1 and a message
on stderr when it cannot start; stops cleanly on SIGTERM and SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pyroact
from pyroact import util
from pyroact.errors import DaemonError, PyroError

from .server import NameServerStarter

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The command line parser.

    Raises:
        Nothing.
    """
    cfg = pyroact.config
    p = argparse.ArgumentParser(
        prog="python -m pyroact.nameserver",
        description="Run a pyroact name server (persistent on an SQLite file by default).",
    )
    p.add_argument("-n", "--host", default=None, help="bind address (default PYRO_HOST)")
    p.add_argument(
        "-p",
        "--port",
        type=int,
        default=None,
        help=f"TCP port, 0 = any free port (default PYRO_NS_PORT, {cfg.PYRO_NS_PORT})",
    )
    p.add_argument(
        "-b",
        "--bc-port",
        type=int,
        default=None,
        help=f"UDP discovery port, 0 = any free port (default PYRO_NS_BC_PORT, "
        f"{cfg.PYRO_NS_BC_PORT})",
    )
    p.add_argument(
        "-c",
        "--bc-addr",
        default=None,
        help="address the discovery responder binds (default: the bind host if it is a "
        "loopback address, else every interface)",
    )
    p.add_argument("-x", "--no-broadcast", action="store_true", help="no discovery responder")
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "-d", "--db", default=None, metavar="FILE", help="SQLite database (default PYRO_NS_DBFILE)"
    )
    store.add_argument("--memory", action="store_true", help="keep the namespace in memory")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"connection I/O timeout in seconds (default PYRO_NS_TIMEOUT, {cfg.PYRO_NS_TIMEOUT})",
    )
    p.add_argument("-i", "--identification", default=None, help="passphrase clients must present")
    p.add_argument(
        "--allow-udp-shutdown",
        action="store_true",
        help="obey UDP shutdown requests authenticated with the identification (needs -i)",
    )
    p.add_argument(
        "--mode", choices=("single", "threaded"), default="threaded", help="daemon server mode"
    )
    p.add_argument("--urifile", default=None, help="URI file (default PYRO_NS_URIFILE)")
    p.add_argument("-v", "--verbose", action="store_true", help="print more")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the name server until SIGTERM/SIGINT (or an accepted shutdown request).

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean stop, 1 when the name server could not start,
        2 for bad arguments.

    Raises:
        SystemExit: for ``--help`` and bad arguments (argparse).
    """
    args = parser().parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    if args.allow_udp_shutdown and not args.identification:
        print("error: --allow-udp-shutdown needs -i/--identification", file=sys.stderr)
        return 2
    starter = NameServerStarter(identification=args.identification)
    try:
        uri = starter.initialize(
            hostname=args.host,
            nsport=args.port,
            bcport=args.bc_port,
            persistent=0 if args.memory else 1,
            dbfile=args.db,
            nobroadcast=args.no_broadcast,
            bcaddr=args.bc_addr,
            verbose=int(args.verbose),
            mode=args.mode,
            timeout=args.timeout,
            urifile=args.urifile,
            allow_udp_shutdown=args.allow_udp_shutdown,
        )
    except DaemonError as exc:
        print(
            f"The Name Server appears to be already running on this host, or the address "
            f"cannot be used: {exc}",
            file=sys.stderr,
        )
        return 1
    except (PyroError, OSError, ValueError) as exc:
        print(f"Cannot start the Name Server: {exc}", file=sys.stderr)
        return 1

    return util.run_service(starter, title="Name Server", uri_line=f"URI is: {uri}")


if __name__ == "__main__":
    sys.exit(main())
