"""Remote exceptions and tracebacks (issue 3)."""

from __future__ import annotations

import sys

import pytest
from helpers import ServerProcess, config_values
from remote_objects import CustomInitError, Echo

from pyroact import constants, util
from pyroact.core import Daemon, DynamicProxy
from pyroact.errors import RemoteError, SerializeError


def test_remote_exception_is_its_own_class_with_the_remote_traceback(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    with pytest.raises(ValueError, match="remote-boom") as info:
        proxy.fail("remote-boom")
    lines = getattr(info.value, constants.TRACEBACK_ATTRIBUTE)
    assert isinstance(lines, list) and all(isinstance(line, str) for line in lines)
    text = "".join(lines)
    assert "in fail" in text and "remote-boom" in text
    assert proxy.echo(1) == 1
    proxy._release()


def test_getpyrotraceback_shows_the_remote_part(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    try:
        proxy.fail("tb-check")
    except ValueError as exc:
        text = "".join(util.getPyroTraceback(exc))
    else:
        pytest.fail("no exception")
    local, _, remote = text.partition(
        " +--- This exception occured remotely (Pyro) - Remote traceback:"
    )
    assert remote, text
    assert "test_getpyrotraceback_shows_the_remote_part" in local
    assert "\n | " in remote and "in fail" in remote
    assert remote.rstrip().endswith("+--- End of remote traceback")
    proxy._release()


def test_excepthook_prints_the_remote_part(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    try:
        proxy.fail("hook-check")
    except ValueError:
        util.excepthook(*sys.exc_info())  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "Remote traceback" in err and "hook-check" in err
    proxy._release()


def test_detailed_traceback_adds_local_variables(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    with pytest.raises(ValueError) as plain:
        proxy.fail("plain")
    assert "xyzzy-42" not in "".join(plain.value.remote_stacktrace)  # type: ignore[attr-defined]
    with config_values(PYRO_DETAILED_TRACEBACK=True):
        with pytest.raises(ValueError) as detailed:
            proxy.fail("detailed")
    text = "".join(detailed.value.remote_stacktrace)  # type: ignore[attr-defined]
    assert "secret_local" in text and "xyzzy-42" in text
    proxy._release()


def test_custom_init_exception_survives(daemon: Daemon) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    with pytest.raises(CustomInitError) as info:
        proxy.fail_custom()
    assert info.value.code == 7 and info.value.detail == "custom"
    assert str(info.value) == "error 7: custom"
    proxy._release()


def test_unpicklable_result_is_a_serializeerror_and_the_connection_survives(
    daemon: Daemon,
) -> None:
    proxy = daemon.connect(Echo()).getProxy()
    assert proxy.echo(0) == 0
    channel = proxy.adapter.channel
    with pytest.raises(SerializeError):
        proxy.unpicklable()
    assert proxy.echo(1) == 1
    assert proxy.adapter.channel is channel
    proxy._release()


def test_exception_class_the_client_cannot_import_is_a_remoteerror() -> None:
    with ServerProcess("echo_server.py", "0", "secret-errors-object", "threaded") as server:
        proxy = DynamicProxy(server.uri)
        assert proxy.echo("up") == "up"
        with pytest.raises(RemoteError) as info:
            proxy.secret_failure("only the server knows")
        exc = info.value
        assert exc.remote_type == "server_only_errors.SecretError"
        assert exc.message == "only the server knows"
        assert "server_only_errors.SecretError" in str(exc)
        text = "".join(exc.remote_stacktrace)  # type: ignore[attr-defined]
        assert "secret_failure" in text
        assert proxy.echo("still up") == "still up"
        proxy._release()
