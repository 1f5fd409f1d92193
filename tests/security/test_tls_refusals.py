"""A CSMS whose TLS the station must refuse is refused with the cause named and the security event recorded
(issue 14.8; 1.6 security whitepaper A00.FR.315 / A00.FR.322, 2.0.1 A00.FR.315 / A00.FR.322 likewise).

The servers are real OpenSSL servers on loopback, in threads with blocking sockets as a real server would run them:
one that offers only a cipher suite OCPP forbids (the station saw "sslv3 alert handshake failure" and nothing more),
one that speaks only TLS 1.1, and one that resets the connection on a modern ClientHello and answers a legacy one
(the station saw a bare ConnectionResetError).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from station.app import Station, running_station
from station.config import parse_config
from tests.security.pki import CertificateAuthority, Issued

PASSWORD = "0123456789abcdef0123"


class TlsServer:
    """A blocking TLS server in a thread: accepts, runs `handle(connection)`, closes."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.handle = handle
        self.handshakes = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            connection.settimeout(5)
            try:
                self.handle(connection)
            except (OSError, ValueError):
                pass
            finally:
                connection.close()

    def close(self) -> None:
        self.listener.close()


def tls_handler(context: ssl.SSLContext, server: list[TlsServer]) -> Callable[[socket.socket], None]:
    def handle(connection: socket.socket) -> None:
        with context.wrap_socket(connection, server_side=True) as tls:
            server[0].handshakes += 1
            tls.recv(16)

    return handle


def server_context(issued: Issued, setup: Callable[[ssl.SSLContext], None]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        setup(context)
    return context


def offers_supported_versions(hello: bytes) -> bool:
    """Whether a ClientHello carries the supported_versions extension (TLS 1.3-capable clients do; a client limited
    to TLS 1.1 does not)."""
    pos = 5 + 4 + 2 + 32  # record header, handshake header, client_version, random
    pos += 1 + hello[pos]  # session id
    pos += 2 + struct.unpack(">H", hello[pos : pos + 2])[0]  # cipher suites
    pos += 1 + hello[pos]  # compression methods
    end = pos + 2 + struct.unpack(">H", hello[pos : pos + 2])[0]
    pos += 2
    while pos + 4 <= end:
        kind, length = struct.unpack(">HH", hello[pos : pos + 4])
        if kind == 0x002B:
            return True
        pos += 4 + length
    return False


def reset_on_modern_hello(legacy: ssl.SSLContext, server: list[TlsServer]) -> Callable[[socket.socket], None]:
    def handle(connection: socket.socket) -> None:
        while True:  # peek until the whole ClientHello record is there; the TLS handshake then reads it itself
            hello = connection.recv(16384, socket.MSG_PEEK)
            if not hello:
                return
            if len(hello) >= 5 and len(hello) >= 5 + struct.unpack(">H", hello[3:5])[0]:
                break
            time.sleep(0.01)
        if offers_supported_versions(hello):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            return
        tls_handler(legacy, server)(connection)

    return handle


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, Issued]:
    ca = CertificateAuthority(tmp_path_factory.mktemp("tls-pki"), "csms-ca")
    return ca, ca.issue("csms", "localhost", hosts=("localhost", "127.0.0.1"))


def only_weak_cipher(context: ssl.SSLContext) -> None:
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA")  # CBC with SHA-1: not among the suites OCPP allows


def only_tls_1_1(context: ssl.SSLContext) -> None:
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1


@pytest.fixture
def servers() -> Iterator[list[TlsServer]]:
    started: list[TlsServer] = []
    yield started
    for server in started:
        server.close()


async def refused(tmp_path: Path, ca: CertificateAuthority, port: int, version: str) -> tuple[Station, list[str]]:
    config: dict[str, Any] = {
        "station": {"id": "CP-TLS"},
        "csms": {
            "url": f"wss://localhost:{port}/ocpp",
            "ocpp_version": version,
            "security_profile": 2,
            "basic_auth_password": PASSWORD,
            "ca_file": str(ca.path),
            "reconnect_min": 0.3,
            "reconnect_max": 1,
        },
        "meter": {"transport": "simulated", "simulator": {"state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }
    async with running_station(parse_config(config)) as station:
        async with asyncio.timeout(20):
            while not [e for e in station.store.security_log() if e["type"].startswith("InvalidTLS")]:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a few more attempts: the event is recorded once, not once per attempt
        return station, [e["type"] for e in station.store.security_log()]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_csms_offering_only_a_weak_cipher_suite_is_refused_with_the_cause_named(
    tmp_path: Path, issued: tuple[CertificateAuthority, Issued], servers: list[TlsServer], version: str
) -> None:
    """A00.FR.322: the CSMS only allows a suite OCPP does not: InvalidTLSCipherSuite, and the connection ends."""
    ca, cert = issued
    holder: list[TlsServer] = []
    server = TlsServer(tls_handler(server_context(cert, only_weak_cipher), holder))
    holder.append(server)
    servers.append(server)
    station, events = await refused(tmp_path, ca, server.port, version)
    assert events.count("InvalidTLSCipherSuite") == 1, events
    assert "ECDHE-ECDSA-AES128-SHA" in station.connection.state.last_error
    assert "cipher suite" in station.connection.state.last_error
    assert not station.connection.state.connected


async def test_a_csms_speaking_only_tls_1_1_is_refused_with_the_cause_named(
    tmp_path: Path, issued: tuple[CertificateAuthority, Issued], servers: list[TlsServer]
) -> None:
    """A00.FR.315: the CSMS only allows an older TLS version: InvalidTLSVersion, and the connection ends."""
    ca, cert = issued
    holder: list[TlsServer] = []
    server = TlsServer(tls_handler(server_context(cert, only_tls_1_1), holder))
    holder.append(server)
    servers.append(server)
    station, events = await refused(tmp_path, ca, server.port, "1.6")
    assert events.count("InvalidTLSVersion") == 1, events
    assert "TLSv1.1" in station.connection.state.last_error


async def test_a_csms_that_resets_a_modern_handshake_is_found_to_speak_old_tls(
    tmp_path: Path, issued: tuple[CertificateAuthority, Issued], servers: list[TlsServer]
) -> None:
    """A00.FR.315 where the CSMS gives no alert but resets the connection: the station's diagnostic handshake finds
    that it answers only a TLS 1.1 ClientHello, and says so instead of "ConnectionResetError"."""
    ca, cert = issued
    holder: list[TlsServer] = []
    server = TlsServer(reset_on_modern_hello(server_context(cert, only_tls_1_1), holder))
    holder.append(server)
    servers.append(server)
    station, events = await refused(tmp_path, ca, server.port, "2.0.1")
    assert "InvalidTLSVersion" in events
    assert "TLSv1.1" in station.connection.state.last_error
    assert "ConnectionResetError" not in station.connection.state.last_error
