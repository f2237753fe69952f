"""The name server's UDP discovery responder (layer 9).

Pyro 3's protocol, kept for compatibility: the request datagram ``location`` is answered with
the name server's URI as plain ASCII; anything unknown is ignored. Differences (W-17):

* ``shutdown`` is refused (``Shutdown request denied``) unless the responder was created with a
  shutdown key, and then only an authenticated request is obeyed: ``shutdown <time> <nonce>
  <HMAC-SHA256>`` as built by :func:`pyroact.naming.shutdown_request` with the same
  identification, fresh (within 60 s) and never seen before.
* The responder binds the address it is given, loopback included, so discovery is testable on
  127.0.0.1: send a datagram straight to the bound address and port.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Final

from pyroact import constants
from pyroact.naming import shutdown_key, shutdown_mac

__all__ = ["BCReqValidator", "BroadcastServer"]

log = logging.getLogger("pyroact.system")

_MAX_DATAGRAM: Final = 1024
_SHUTDOWN_WINDOW: Final = 60.0
_REPLY_DENIED: Final = b"Shutdown request denied"
_REPLY_SHUTDOWN: Final = b"Will shut down shortly"


class BCReqValidator:
    """Decides per datagram whether a discovery request is answered (Pyro 3's class).

    Subclass it and override :meth:`acceptLocationCmd` / :meth:`acceptShutdownCmd`; both see
    ``self.addr`` (the sender) and may :meth:`reply` on their own. A refused request is dropped
    silently.
    """

    def __init__(self) -> None:
        self.addr: tuple[str, int] | None = None
        self.sock: socket.socket | None = None

    def __call__(self, command: bytes, sock: socket.socket, addr: tuple[str, int]) -> bool:
        """Decide on one request.

        Args:
            command: ``b"location"`` or ``b"shutdown"``.
            sock: the responder's socket.
            addr: the sender.

        Returns:
            True to answer.

        Raises:
            Nothing.
        """
        self.addr, self.sock = addr, sock
        if command == constants.NS_SYSCMD_LOCATION:
            return bool(self.acceptLocationCmd())
        if command == constants.NS_SYSCMD_SHUTDOWN:
            return bool(self.acceptShutdownCmd())
        return False

    def acceptLocationCmd(self) -> bool:
        """Answer ``location`` requests (default: yes).

        Raises:
            Nothing.
        """
        return True

    def acceptShutdownCmd(self) -> bool:
        """Consider ``shutdown`` requests (default: yes; authentication still applies).

        Raises:
            Nothing.
        """
        return True

    def reply(self, msg: bytes | str) -> None:
        """Send a datagram back to the sender of the current request.

        Raises:
            OSError: the datagram cannot be sent.
        """
        if self.sock is not None and self.addr is not None:
            data = msg.encode() if isinstance(msg, str) else msg
            self.sock.sendto(data, self.addr)


class BroadcastServer:
    """Answers ``location`` datagrams with the name server's URI.

    Args:
        nsuri: the URI to hand out.
        host: the address to bind (``""`` for every interface, which is what receives real
            broadcasts; a loopback address for local use and tests).
        port: the UDP port (0: any free port; see :attr:`port`).
        shutdown_identification: when given, an authenticated ``shutdown`` request made with
            this identification stops the name server; otherwise ``shutdown`` is refused.
        validator: a :class:`BCReqValidator` (default: accept everything).

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(
        self,
        nsuri: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shutdown_identification: str | bytes | None = None,
        validator: BCReqValidator | None = None,
    ) -> None:
        self.nsuri = str(nsuri)
        self.validator = validator or BCReqValidator()
        self._key = shutdown_key(shutdown_identification) if shutdown_identification else None
        self._seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self.shutdown_requested = False
        self.on_shutdown: Callable[[], None] | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self.sock.bind((host, port))
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``.

        Raises:
            Nothing.
        """
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        """The bound UDP port.

        Raises:
            Nothing.
        """
        return self.address[1]

    def fileno(self) -> int:
        """The socket's file descriptor (so the responder can be watched by a selector).

        Raises:
            Nothing.
        """
        return self.sock.fileno()

    def handle_request(self) -> None:
        """Read and answer every datagram waiting now (never blocks).

        Raises:
            Nothing: socket errors are logged.
        """
        while True:
            try:
                data, addr = self.sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self.sock.fileno() >= 0:
                    log.warning("name server broadcast responder: %s", exc)
                return
            reply = self.process(data, addr)
            if reply is not None:
                try:
                    self.sock.sendto(reply, addr)
                except OSError as exc:
                    log.warning("name server broadcast reply to %s failed: %s", addr, exc)

    def process(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """The reply to one datagram, or None to stay silent.

        Args:
            data: the datagram.
            addr: its sender.

        Returns:
            The reply datagram, or None.

        Raises:
            Nothing.
        """
        words = data.strip().split()
        if not words:
            return None
        command = words[0]
        if command not in (constants.NS_SYSCMD_LOCATION, constants.NS_SYSCMD_SHUTDOWN):
            return None
        try:
            accepted = self.validator(command, self.sock, addr)
        except Exception:  # a faulty validator must not kill the responder
            log.exception("broadcast request validator failed; request dropped")
            return None
        if not accepted:
            log.info("broadcast request %r from %s refused by the validator", command, addr)
            return None
        if command == constants.NS_SYSCMD_LOCATION:
            return self.nsuri.encode("ascii")
        if self._key is None or not self._authentic(words[1:]):
            log.warning("refused a UDP shutdown request from %s", addr)
            return _REPLY_DENIED
        log.warning("UDP shutdown request from %s accepted", addr)
        self.shutdown_requested = True
        if self.on_shutdown is not None:
            self.on_shutdown()
        return _REPLY_SHUTDOWN

    def _authentic(self, parts: list[bytes]) -> bool:
        if len(parts) != 3 or self._key is None:
            return False
        stamp, nonce, mac = parts
        try:
            moment = float(stamp)
        except ValueError:
            return False
        now = time.time()
        if abs(now - moment) > _SHUTDOWN_WINDOW:
            return False
        expected = shutdown_mac(self._key, stamp, nonce).encode("ascii")
        if not hmac.compare_digest(expected, mac):
            return False
        while self._seen and next(iter(self._seen.values())) < now - 2 * _SHUTDOWN_WINDOW:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True

    # -- running on its own --------------------------------------------------------------------

    def start_thread(self) -> None:
        """Serve in a background thread until :meth:`close` (when no request loop drives it).

        Raises:
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("the broadcast responder thread is already running")
        self._thread = threading.Thread(
            target=self._serve, name="pyroact-ns-broadcast", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if sel.select(0.1):
                    self.handle_request()

    def close(self) -> None:
        """Stop the thread (if any) and close the socket.

        Raises:
            Nothing.
        """
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self.sock.close()
