"""``python -m pyroact.nsc``: Pyro 3's name server control tool (layer 9).

Usage: ``python -m pyroact.nsc [-h host] [-p port] [-c bcaddr] [-b bcport] [-i ident] command
[args...]``. ``-p`` is the name server's port when ``-h`` is given and the discovery port
otherwise, as in Pyro 3. Commands and their output texts are Pyro 3's (``ping``, ``list``,
``listall``, ``resolve``, ``register``, ``remove``, ``creategroup``, ``deletegroup``,
``showmeta``, ``setmeta``, ``resync``, ``shutdown``). Unlike Pyro 3 (W-26) the exit status is
1 when a command failed and 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Final, TextIO

from pyroact import constants
from pyroact.errors import ConnectionDeniedError, NamingError, PyroError
from pyroact.naming import NameServerLocator, NameServerProxy, shutdown_request
from pyroact.protocol import getHostname

__all__ = ["main"]

_USAGE: Final = """\
usage: python -m pyroact.nsc [-h host] [-p port] [-c bcaddr] [-b bcport] [-i identification]
                             command [args...]
commands:
  ping                        check that the name server runs
  list [groups...]            list groups (default: the default group)
  listall                     list every registered name
  resolve names...            print the URIs of names
  register name uri           register a name
  remove names...             unregister names
  creategroup names...        create groups
  deletegroup names...        delete groups (recursively)
  showmeta names...           print the metadata of names
  setmeta name data           set the user metadata of a name (a string)
  resync                      resynchronise a paired name server
  shutdown                    send the (authenticated, with -i) UDP shutdown request
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser() -> _Parser:
    p = _Parser(prog="python -m pyroact.nsc", add_help=False, usage=_USAGE)
    p.add_argument("-h", "--host", default=None)
    p.add_argument("-p", "--port", type=int, default=None)
    p.add_argument("-c", "--bcaddr", default=None)
    p.add_argument("-b", "--bcport", type=int, default=None)
    p.add_argument("-i", "--identification", default=None)
    p.add_argument("--help", action="store_true")
    p.add_argument("command", nargs="?")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


class _Control:
    def __init__(self, options: argparse.Namespace, out: TextIO) -> None:
        self.options = options
        self.out = out
        self._ns: NameServerProxy | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out)

    @property
    def ns(self) -> NameServerProxy:
        if self._ns is None:
            o = self.options
            ns = NameServerLocator(identification=o.identification).getNS(
                o.host, o.port, bcaddr=o.bcaddr
            )
            uri = ns.URI
            self.say(f"NS is at {uri.address} ({getHostname(uri.address) or '??'}) port {uri.port}")
            self._ns = ns
        return self._ns

    def close(self) -> None:
        if self._ns is not None:
            self._ns._release()

    @staticmethod
    def need(args: list[str], count: int, exact: bool = False) -> None:
        if len(args) < count or (exact and len(args) != count):
            raise _UsageError("wrong number of arguments")

    # -- commands ----------------------------------------------------------------------------

    def cmd_ping(self, args: list[str]) -> None:
        self.need(args, 0, exact=True)
        self.ns.ping()
        self.say("NS is up and running!")

    def cmd_list(self, args: list[str]) -> None:
        ns = self.ns
        groups: list[str | None] = list(args) or [None]
        for group in groups:
            members = sorted(ns.list(group))
            items = [f"[{name}]" if kind == 0 else name for name, kind in members]
            self.say(f"{ns.fullName(group)} --> ( {' '.join(items)} )")

    def cmd_listall(self, args: list[str]) -> None:
        self.need(args, 0, exact=True)
        entries = sorted(self.ns.flatlist())
        self.say("-------------- START DATABASE")
        for name, uri in entries:
            self.say(f"{name}  -->  {uri}")
        self.say("-------------- END")

    def cmd_resolve(self, args: list[str]) -> None:
        self.need(args, 1)
        for name in args:
            self.say(f"{name}  --> {self.ns.resolve(name)}")

    def cmd_register(self, args: list[str]) -> None:
        self.need(args, 2, exact=True)
        name, uri = args
        self.ns.register(name, uri)
        self.say(f"registered {name}  -->  {uri}")

    def cmd_remove(self, args: list[str]) -> None:
        self.need(args, 1)
        for name in args:
            self.ns.unregister(name)
            self.say(f"{name} unregistered.")

    def cmd_creategroup(self, args: list[str]) -> None:
        self.need(args, 1)
        for name in args:
            self.ns.createGroup(name)
            self.say(f"{name} created.")

    def cmd_deletegroup(self, args: list[str]) -> None:
        self.need(args, 1)
        for name in args:
            self.ns.deleteGroup(name)
            self.say(f"{name} deleted.")

    def cmd_showmeta(self, args: list[str]) -> None:
        self.need(args, 1)
        ns = self.ns
        for name in args:
            system = ns.getSystemMeta(name)
            user = ns.getMeta(name)
            self.say(f"META INFO OF {ns.fullName(name)}")
            self.say(
                f"system meta info : [type={system['type']} timestamp={system['timestamp']} "
                f"owner={system['owner']}]"
            )
            self.say(f"  user meta info : {user!r}")

    def cmd_setmeta(self, args: list[str]) -> None:
        self.need(args, 2, exact=True)
        name, data = args
        self.ns.setMeta(name, data)
        self.say(f"Metadata of {name} set.")

    def cmd_resync(self, args: list[str]) -> None:
        self.need(args, 0, exact=True)
        self.ns.resync()
        self.say("resync done")

    def cmd_shutdown(self, args: list[str]) -> None:
        self.need(args, 0, exact=True)
        o = self.options
        request = (
            shutdown_request(o.identification) if o.identification else constants.NS_SYSCMD_SHUTDOWN
        )
        reply = NameServerLocator(o.identification).sendSysCommand(
            request, o.host, o.bcport, bcaddr=o.bcaddr
        )
        self.say(f"Result from system command shutdown : {reply}")
        if reply.strip() != "Will shut down shortly":
            raise PyroError(reply)


_COMMANDS: Final = frozenset(
    "ping list listall resolve register remove creategroup deletegroup showmeta setmeta "
    "resync shutdown".split()
)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one nsc command.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        out: where normal output goes (default stdout); errors go to stderr.

    Returns:
        0 on success, 1 when the command failed, 2 for a usage error.

    Raises:
        Nothing.
    """
    out = out or sys.stdout
    try:
        options = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except _UsageError as exc:
        print(f"error: {exc}\n{_USAGE}", file=sys.stderr)
        return 2
    if options.help:
        print(_USAGE, file=out)
        return 0
    if options.command not in _COMMANDS:
        what = f"unknown command {options.command!r}" if options.command else "no command"
        print(f"error: {what}\n{_USAGE}", file=sys.stderr)
        return 2
    control = _Control(options, out)
    action: Callable[[list[str]], None] = getattr(control, "cmd_" + options.command)
    try:
        action(list(options.args))
    except _UsageError as exc:
        print(f"error: {options.command}: {exc}\n{_USAGE}", file=sys.stderr)
        return 2
    except NamingError as exc:
        detail = ": ".join(str(a) for a in exc.args[:2]) if exc.args else str(exc)
        print(f"## {detail} ##", file=sys.stderr)
        return 1
    except ConnectionDeniedError as exc:
        print(f"Could not connect to the server: {exc}", file=sys.stderr)
        if "security" in str(exc):
            print("(supply the correct identification with -i)", file=sys.stderr)
        return 1
    except PyroError as exc:
        print(f"There is a problem: {exc}", file=sys.stderr)
        return 1
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
