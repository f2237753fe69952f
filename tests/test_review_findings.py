"""Regression tests for bugs found in a review of the runtime modules.

Each test pins one finding of a review of the runtime; each failed before its fix landed.
Everything binds 127.0.0.1 with port 0, and every wait is bounded by a deadline.
"""

from __future__ import annotations

import copy
import socket
import threading
import time
from typing import Any

import pytest
from helpers import RawClient, serving

from pyroact import _wirespec as spec
from pyroact import errors
from pyroact.core import DynamicProxy, ObjBase, PyroURI
from pyroact.protocol import DefaultConnValidator

# -- objects served by these tests (module level, so pickle finds them by reference) ---------


class ReduceRaisesValueError:
    """A result whose pickling raises ValueError (not PicklingError/TypeError/AttributeError)."""

    def __reduce__(self) -> Any:
        raise ValueError("this object refuses to be pickled")


class FatalSignal(BaseException):
    """A BaseException that is not an Exception (like SystemExit or KeyboardInterrupt)."""


class Faulty(ObjBase):
    def __init__(self) -> None:
        ObjBase.__init__(self)

    def ok(self, value: Any) -> Any:
        return value

    def bad_result(self) -> Any:
        return ReduceRaisesValueError()

    def deep_result(self) -> Any:
        value: list[Any] = []
        for _ in range(100_000):
            value = [value]
        return value

    def raise_base(self) -> None:
        raise FatalSignal("user code raised a BaseException")


def _proxy(daemon: Any, obj: ObjBase, timeout: float = 3.0) -> DynamicProxy:
    """A proxy for ``obj`` (connected to ``daemon`` on first use) with a call timeout."""
    if obj.getDaemon() is None:
        daemon.connect(obj)
    proxy = DynamicProxy(PyroURI("127.0.0.1", obj.GUID(), daemon.port))
    proxy._setTimeout(timeout)
    return proxy


# -- F1: pre-authentication memory: a CONNECT may announce PYRO_MAX_MESSAGE_SIZE bytes -------


@pytest.mark.parametrize("mode", ["single", "threaded"])
def test_oversized_handshake_message_is_refused_at_once(mode: str) -> None:
    with serving(mode) as daemon:
        daemon.setAllowedIdentifications(["s3cret"])
        raw = RawClient(daemon.port, handshake=False)
        try:
            raw.channel.recv_frame()  # the CHALLENGE
            # A CONNECT header announcing a 16 MiB payload (a real CONNECT is 32 or 64 bytes).
            header = spec.HEADER_STRUCT.pack(
                spec.MAGIC, spec.PROTOCOL_VERSION, spec.MSG_CONNECT, 0, 0, 0, 0, 16 << 20, 0, 0
            )
            raw.send_raw(header)
            # The server should drop this peer now, not after PYRO_HANDSHAKE_TIMEOUT (5 s)
            # with a 16 MiB buffer allocated for it (up to 1 GiB per connection).
            assert raw.closed_by_server(timeout=2.0)
        finally:
            raw.close()


# -- F2: a result that fails to pickle with an unexpected exception gets no reply ------------


@pytest.mark.parametrize("mode", ["single", "threaded"])
def test_result_whose_reduce_raises_valueerror_gets_an_error_reply(mode: str) -> None:
    with serving(mode, check_errors=False) as daemon:
        proxy = _proxy(daemon, Faulty())
        try:
            with pytest.raises(Exception) as info:
                proxy.bad_result()
            assert not isinstance(info.value, errors.ConnectionClosedError), info.value
            assert proxy.ok(5) == 5
        finally:
            proxy._release()


def test_result_too_deep_to_pickle_gets_an_error_reply() -> None:
    with serving("threaded", check_errors=False) as daemon:
        proxy = _proxy(daemon, Faulty())
        try:
            with pytest.raises(Exception) as info:
                proxy.deep_result()
            assert not isinstance(info.value, errors.ConnectionClosedError), info.value
        finally:
            proxy._release()


def test_dumps_raises_serialize_error_for_any_pickling_failure() -> None:
    from pyroact import serializer

    with pytest.raises(errors.SerializeError):
        serializer.dumps(ReduceRaisesValueError())


# -- F3: a BaseException in user code: no reply, pool thread dies, client hangs --------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_base_exception_in_a_remote_method_does_not_hang_the_caller() -> None:
    with serving("threaded", check_errors=False) as daemon:
        proxy = _proxy(daemon, Faulty())
        try:
            with pytest.raises(BaseException) as info:
                proxy.raise_base()
            assert not isinstance(info.value, errors.TimeoutError), "no reply and no close"
        finally:
            proxy._release()


# -- F4: a failing validator or init-TLS function kills the server's I/O loop ----------------


class ExplodingOnceValidator(DefaultConnValidator):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def acceptIdentification(self, daemon: Any, connection: Any, token: bytes, challenge: bytes):
        self.calls += 1
        if self.calls == 1:
            raise KeyError("user validator bug, triggered by one client")
        return super().acceptIdentification(daemon, connection, token, challenge)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("mode", ["single", "threaded"])
def test_validator_error_for_one_client_does_not_stop_the_server(mode: str) -> None:
    with serving(mode, check_errors=False) as daemon:
        daemon.setNewConnectionValidator(ExplodingOnceValidator())
        obj = Faulty()
        first = _proxy(daemon, obj, timeout=2.0)
        with pytest.raises(errors.ProtocolError):
            first.ok(1)  # its handshake blows up in the validator
        first._release()
        second = _proxy(daemon, obj, timeout=2.0)
        try:
            assert second.ok(2) == 2
        finally:
            second._release()
        assert not daemon.test_loop.errors, daemon.test_loop.errors


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_init_tls_error_does_not_stop_the_threaded_server() -> None:
    calls = []

    def init_tls(tls: Any) -> None:
        calls.append(tls)
        if len(calls) == 1:
            raise RuntimeError("init TLS bug")

    with serving("threaded", check_errors=False) as daemon:
        daemon.setInitTLS(init_tls)
        obj = Faulty()
        first = _proxy(daemon, obj, timeout=2.0)
        with pytest.raises(errors.ProtocolError):
            first.ok(1)
        first._release()
        second = _proxy(daemon, obj, timeout=2.0)
        try:
            assert second.ok(2) == 2
        finally:
            second._release()


# -- F5: a client that never reads its refusal replies blocks the threaded I/O thread --------


def test_client_not_reading_refusals_does_not_freeze_the_threaded_server() -> None:
    with serving("threaded", check_errors=False) as daemon:
        obj = Faulty()
        good = _proxy(daemon, obj, timeout=3.0)
        guid = obj.GUID()
        assert good.ok(0) == 0

        # A hostile client with a tiny receive window: it pipelines calls to a refused
        # (private) name and never reads the AttributeError replies.
        raw = RawClient(daemon.port)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _seq, segments = raw.request_segments(guid, "_private_name", ())
        one = b"".join(bytes(memoryview(s).cast("B")) for s in segments)
        # Frames on a keyless connection carry no MAC, so the same bytes can be repeated.
        assert not raw.sm.authenticated

        def flood() -> None:
            # ~5 MB of requests in one blocking write (no timeout, so never a partial frame).
            raw.sock.settimeout(None)
            try:
                raw.sock.sendall(one * 60_000)
            except OSError:
                pass  # closed by the test's cleanup

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            time.sleep(0.5)  # settle: let the server's send buffer towards the hostile client fill
            good._release()
            fresh = _proxy(daemon, obj, timeout=3.0)
            try:
                assert fresh.ok(1) == 1  # a new, well-behaved client must still be served
            finally:
                fresh._release()
        finally:
            raw.close()
            flooder.join(10)


# -- F6: client-side interruption during a call leaves a stale reply on the connection -------


class Interrupting:
    """Wraps a Channel: the first recv_frame raises KeyboardInterrupt (Ctrl-C while waiting)."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def recv_frame(self) -> Any:
        if not self._fired:
            self._fired = True
            raise KeyboardInterrupt
        return self._channel.recv_frame()


@pytest.mark.parametrize("mode", ["single", "threaded"])
def test_interrupted_call_does_not_desynchronise_the_next_call(mode: str) -> None:
    with serving(mode) as daemon:
        proxy = _proxy(daemon, Faulty())
        try:
            assert proxy.ok(0) == 0
            adapter = proxy.adapter
            adapter.channel = Interrupting(adapter.channel)
            with pytest.raises(KeyboardInterrupt):
                proxy.ok(1)
            # The reply to ok(1) is still in flight; the next call must not receive it.
            assert proxy.ok(2) == 2
        finally:
            proxy._release()


# -- F7: copy.copy(proxy) loses the client-side connection validator --------------------------


class TokenValidator(DefaultConnValidator):
    pass


def test_copied_proxy_keeps_its_connection_validator() -> None:
    proxy = DynamicProxy(PyroURI("127.0.0.1", "someguid", 7766))
    validator = TokenValidator()
    proxy._setNewConnectionValidator(validator)
    assert copy.copy(proxy).adapter.validator is validator
