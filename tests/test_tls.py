"""PYROSSL / PYROLOCSSL: TLS through the stdlib ``ssl`` module, certificates made at test time."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import LoopThread, config_values, serving, wait_until

import pyroact
import pyroact.core
from pyroact.errors import DaemonError, ProtocolError

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command line is needed")

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _leaf(certs: Path, name: str, cn: str, san: str) -> None:
    (certs / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _run("req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
         cwd=certs)  # fmt: skip
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
         cwd=certs)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client one and one with a wrong name."""
    certs = tmp_path_factory.mktemp("certs")
    _run("req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=pyroact test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=certs)  # fmt: skip
    _leaf(certs, "server", "localhost", "IP:127.0.0.1,DNS:localhost")
    _leaf(certs, "client", "pyroact client", "DNS:client.example")
    _leaf(certs, "wrongname", "other.example", "DNS:other.example")
    return certs


def _server_config(certs: Path, cert: str = "server", **extra: Any) -> Any:
    return config_values(
        PYROSSL_CERTDIR=str(certs),
        PYROSSL_CA_CERT="ca.pem",
        PYROSSL_CERT=f"{cert}.pem",
        PYROSSL_KEY=f"{cert}.key",
        **extra,
    )


@pytest.fixture
def client_config(certs: Path) -> Iterator[None]:
    """The client side's certificate (set after the daemon made its context)."""
    with config_values(
        PYROSSL_CERTDIR=str(certs),
        PYROSSL_CA_CERT="ca.pem",
        PYROSSL_CERT="client.pem",
        PYROSSL_KEY="client.key",
    ):
        yield


class Thing(pyroact.core.ObjBase):
    def echo(self, value: Any) -> Any:
        return value

    def peer_subject(self) -> Any:
        caller = self.getLocalStorage().caller
        cert = caller.peercert
        return None if cert is None else dict(x[0] for x in cert["subject"])


@contextlib.contextmanager
def _tls_daemon(
    mode: str, certs: Path, cert: str = "server", workers: int | None = None, **extra: Any
) -> Iterator[Any]:
    """A PYROSSL daemon serving in a thread; its certificate is configured only to start it."""
    with config_values(**extra):
        with _server_config(certs, cert):
            daemon = pyroact.core.Daemon(mode=mode, prtcol="PYROSSL", workers=workers)
        loop = LoopThread(daemon)
        loop.start()
        try:
            yield daemon
        finally:
            try:
                loop.stop()
            finally:
                daemon.closedown()
        assert loop.errors == []


def test_pyrossl_calls_and_pyrolocssl(server_mode: str, certs: Path, client_config: None) -> None:
    with _tls_daemon(server_mode, certs) as daemon:
        thing = Thing()
        uri = daemon.connect(thing, "thing")
        assert str(uri).startswith("PYROSSL://127.0.0.1:")
        proxy = uri.getProxy()
        assert proxy.echo("hello") == "hello"
        big = b"x" * 3_000_000  # several TLS records and partial writes
        assert proxy.echo(big) == big
        assert proxy.peer_subject() == {"commonName": "pyroact client"}
        loc = pyroact.core.getProxyForURI(f"PYROLOCSSL://127.0.0.1:{daemon.port}/thing")
        assert loc.echo(5) == 5
        assert loc.URI.protocol == "PYROSSL" and loc.objectID == thing.GUID()
        proxy._release()
        assert proxy.echo("again") == "again"  # reconnects


def test_many_tls_clients_in_threads(certs: Path, client_config: None) -> None:
    with _tls_daemon("threaded", certs) as daemon:
        uri = daemon.connect(Thing())
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                proxy = uri.getProxy()
                for i in range(20):
                    assert proxy.echo((n, i, b"y" * 70_000)) == (n, i, b"y" * 70_000)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert errors == []


def test_client_without_certificate_is_refused(certs: Path) -> None:
    with _tls_daemon("threaded", certs) as daemon:
        uri = daemon.connect(Thing())
        with config_values(PYROSSL_CERTDIR=str(certs), PYROSSL_CERT="", PYROSSL_KEY=None):
            with pytest.raises(ProtocolError, match="connection failed"):
                uri.getProxy().echo(1)
        with config_values(
            PYROSSL_CERTDIR=str(certs), PYROSSL_CERT="client.pem", PYROSSL_KEY="client.key"
        ):
            assert uri.getProxy().echo(2) == 2  # still serving


def test_client_certificate_optional(certs: Path) -> None:
    with _tls_daemon("single", certs, PYROSSL_REQUIRE_CLIENT_CERT=False) as daemon:
        uri = daemon.connect(Thing())
        with config_values(PYROSSL_CERTDIR=str(certs), PYROSSL_CERT="", PYROSSL_KEY=None):
            proxy = uri.getProxy()
            assert proxy.echo(1) == 1
            assert proxy.peer_subject() is None


def test_plain_client_to_tls_daemon_fails_cleanly(server_mode: str, certs: Path) -> None:
    with _tls_daemon(server_mode, certs, PYRO_HANDSHAKE_TIMEOUT=0.5) as daemon:
        uri = daemon.connect(Thing())
        plain = pyroact.core.PyroURI(str(uri).replace("PYROSSL://", "PYRO://"))
        start = time.monotonic()
        with pytest.raises(ProtocolError, match="connection failed"):
            plain.getProxy().echo(1)
        assert time.monotonic() - start < 5
        with config_values(
            PYROSSL_CERTDIR=str(certs), PYROSSL_CERT="client.pem", PYROSSL_KEY="client.key"
        ):
            assert uri.getProxy().echo(3) == 3


def test_tls_client_to_plain_daemon_fails_without_fallback(
    server_mode: str, certs: Path, client_config: None
) -> None:
    with serving(server_mode) as daemon:
        uri = daemon.connect(Thing())
        assert uri.getProxy().echo(1) == 1
        tls_uri = pyroact.core.PyroURI(str(uri).replace("PYRO://", "PYROSSL://"))
        with pytest.raises(ProtocolError, match="TLS handshake"):
            tls_uri.getProxy().echo(1)
        assert uri.getProxy().echo(2) == 2


def test_missing_or_bad_files_are_named(certs: Path, tmp_path: Path) -> None:
    with _server_config(certs, "nope"):
        with pytest.raises(DaemonError, match="nope.pem"):
            pyroact.core.Daemon(prtcol="PYROSSL")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with config_values(PYROSSL_CERTDIR=str(tmp_path), PYROSSL_CERT="bad.pem", PYROSSL_KEY=None):
        with pytest.raises(DaemonError, match="bad.pem"):
            pyroact.core.Daemon(prtcol="PYROSSL")
    with config_values(PYROSSL_CERTDIR=str(certs), PYROSSL_CA_CERT="missing-ca.pem"):
        with pytest.raises(ProtocolError, match="missing-ca.pem"):
            pyroact.core.getProxyForURI("PYROSSL://127.0.0.1:9/x")
    with pytest.raises(DaemonError, match="unsupported protocol"):
        pyroact.core.Daemon(prtcol="HTTP")


def test_hostname_check_follows_postconncheck(certs: Path, client_config: None) -> None:
    with _tls_daemon("threaded", certs, cert="wrongname") as daemon:
        uri = daemon.connect(Thing())
        with pytest.raises(ProtocolError, match="rejected"):
            uri.getProxy().echo(1)
        with config_values(PYROSSL_POSTCONNCHECK=False):
            assert uri.getProxy().echo(1) == 1


def test_untrusted_server_is_rejected(certs: Path, tmp_path: Path, client_config: None) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _run("req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=another CA", cwd=other)  # fmt: skip
    with _tls_daemon("single", certs) as daemon:
        uri = daemon.connect(Thing())
        with config_values(PYROSSL_CERTDIR=str(other), PYROSSL_CERT=""):
            with pytest.raises(ProtocolError, match="rejected"):
                uri.getProxy().echo(1)


def test_silent_client_does_not_block_others(server_mode: str, certs: Path) -> None:
    with _tls_daemon(server_mode, certs, PYRO_HANDSHAKE_TIMEOUT=1.0) as daemon:
        uri = daemon.connect(Thing())
        silent = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        half = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        half.sendall(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, then nothing
        try:
            with config_values(
                PYROSSL_CERTDIR=str(certs), PYROSSL_CERT="client.pem", PYROSSL_KEY="client.key"
            ):
                start = time.monotonic()
                assert uri.getProxy().echo("ok") == "ok"
                assert time.monotonic() - start < 0.9
            # Both are dropped at the handshake deadline.
            assert silent.recv(1) == b""
            assert half.recv(1) == b""
        finally:
            silent.close()
            half.close()


def test_idle_tls_connection_closed_by_the_daemon_is_reopened(
    server_mode: str, certs: Path, client_config: None
) -> None:
    with _tls_daemon(server_mode, certs) as daemon:
        daemon.setTimeout(0.3)
        proxy = daemon.connect(Thing()).getProxy()
        assert proxy.echo(1) == 1
        # The daemon forgets the connection just before it closes the socket: wait until the
        # client can see the close too (a call in between would be lost with the connection).
        channel = proxy.adapter.channel
        wait_until(
            lambda: not daemon.connections and channel.peer_closed(),
            timeout=5,
            what="the idle connection closed",
        )
        assert proxy.echo(2) == 2


def test_process_mode_serves_tls_and_forwards_the_peer_certificate(
    certs: Path, client_config: None
) -> None:
    from proc_objects import Worker

    with _tls_daemon("process", certs, workers=1) as daemon:
        proxy = daemon.connect(Worker, "worker").getProxy()
        assert proxy.echo("p") == "p"
        cert = proxy.caller_attr("peercert")
        assert dict(x[0] for x in cert["subject"]) == {"commonName": "pyroact client"}


def test_public_bind_refusal_mentions_tls() -> None:
    with config_values(PYRO_ALLOW_PUBLIC_BIND=False):
        with pytest.raises(DaemonError, match="PYROSSL"):
            pyroact.core.Daemon(host="192.0.2.1", port=0, mode="single")
