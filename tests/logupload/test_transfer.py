"""Uploads to real servers on loopback: HTTP PUT, POST where PUT is refused, HTTPS with a CA made here, FTP passive
and active, credentials from the URL, and a failure status that says why (1.6 security whitepaper / 2.0.1 N01)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from station.logupload import transfer
from station.ocpp.settings import BY_NAME
from tests.logupload.servers import FtpServer, UploadServer
from tests.security.pki import CertificateAuthority, server_context

DATA = b"\x1f\x8b" + bytes(range(256)) * 64


@pytest_asyncio.fixture
async def http() -> AsyncIterator[UploadServer]:
    server = await UploadServer().start()
    yield server
    await server.stop()


async def test_http_put_into_the_location_directory(http: UploadServer) -> None:
    """N01.FR.14, N01.FR.18: PUT of the file named in the answer, into the directory the location names."""
    how = await transfer.upload(http.url, "CP-1-diagnostics-x.tar.gz", DATA, timeout=5)
    assert how == "HTTP PUT 201"
    (upload,) = http.uploads
    assert (upload.method, upload.path, upload.data) == ("PUT", "/logs/CP-1-diagnostics-x.tar.gz", DATA)


async def test_post_multipart_where_put_is_not_allowed(http: UploadServer) -> None:
    """N01.FR.18, N01.FR.19: a server without PUT gets a POST with Content-Disposition naming the file."""
    http.put = False
    how = await transfer.upload(http.url, "f.tar.gz", DATA, timeout=5)
    assert how == "HTTP POST 200"
    (upload,) = http.uploads
    assert (upload.method, upload.name, upload.data) == ("POST", "f.tar.gz", DATA)


async def test_basic_auth_from_the_url_and_refusals_say_why(http: UploadServer) -> None:
    """N01.FR.17: user:password@ in the URL is Basic auth; wrong credentials are PermissionDenied, a server error
    UploadFailure, a 413 BadMessage (N01.FR.10: the status describes the failure); the password is in no error."""
    http.credentials = ("csms-user", "upl0ad-Secret")
    url = http.url.replace("http://", "http://csms-user:upl0ad-Secret@")
    assert (await transfer.upload(url, "a.tar.gz", DATA, timeout=5)).startswith("HTTP PUT")
    assert http.uploads[0].user == "csms-user"
    with pytest.raises(transfer.UploadError) as refused:
        await transfer.upload(url.replace("upl0ad-Secret", "wrong-pass"), "b.tar.gz", DATA, timeout=5)
    assert refused.value.status == "PermissionDenied" and "wrong-pass" not in str(refused.value)
    assert "csms-user" not in str(refused.value)
    for code, status in ((500, "UploadFailure"), (413, "BadMessage")):
        http.refuse = code
        with pytest.raises(transfer.UploadError) as failed:
            await transfer.upload(url, "c.tar.gz", DATA, timeout=5)
        assert failed.value.status == status and "upl0ad-Secret" not in str(failed.value)


async def test_unreachable_and_slow_servers_fail_within_the_timeout(http: UploadServer) -> None:
    with pytest.raises(transfer.UploadError) as closed:
        await transfer.upload("http://127.0.0.1:1/logs/", "a.tar.gz", DATA, timeout=5)
    assert closed.value.status == "UploadFailure"
    http.delay = 5
    with pytest.raises(transfer.UploadError) as slow:
        await transfer.upload(http.url, "a.tar.gz", DATA, timeout=0.5)
    assert slow.value.status == "UploadFailure" and "0.5 s" in slow.value.reason


async def test_size_limit_and_unsupported_schemes() -> None:
    with pytest.raises(transfer.UploadError, match="exceeds"):
        await transfer.upload("http://127.0.0.1:9/", "a", b"x" * (transfer.MAX_UPLOAD_BYTES + 1))
    for location in ("sftp://h/x", "file:///etc/passwd", "not a url", "http:///nohost"):
        with pytest.raises(ValueError):
            transfer.parse_location(location)


async def test_https_trusts_the_given_ca_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    """N01.FR.15: the CSMS trust chain (here a throw-away CA) is trusted; a certificate from another CA is not."""
    ca = CertificateAuthority(tmp_path, "upload-ca")
    server = await UploadServer(tls=server_context(ca.issue("srv", "127.0.0.1", hosts=("127.0.0.1",)))).start()
    try:
        trusting = ssl.create_default_context(cafile=str(ca.path))
        assert (await transfer.upload(server.url, "t.tar.gz", DATA, timeout=5, ssl_context=trusting)) == "HTTP PUT 201"
        assert server.uploads[0].data == DATA
        with pytest.raises(transfer.UploadError) as refused:
            await transfer.upload(server.url, "u.tar.gz", DATA, timeout=5, ssl_context=ssl.create_default_context())
        assert refused.value.status == "UploadFailure" and "TLS" in refused.value.reason
        assert len(server.uploads) == 1
    finally:
        await server.stop()


@pytest.mark.parametrize("passive", [True, False])
async def test_ftp_passive_and_active(tmp_path: Path, passive: bool) -> None:
    """2.0.1 N01 remarks: FTP passive first; a server that refuses passive mode gets the file in active mode."""
    server = FtpServer(tmp_path / "ftp", passive=passive).start()
    try:
        how = await transfer.upload(server.url, "CP-1-diagnostics.tar.gz", DATA, timeout=5)
        assert how == ("FTP passive" if passive else "FTP active")
        assert server.files() == {"CP-1-diagnostics.tar.gz": DATA}
        assert any(c.startswith("PORT") for c in server.commands) != passive
    finally:
        server.stop()


async def test_ftp_wrong_password_is_permission_denied(tmp_path: Path) -> None:
    server = FtpServer(tmp_path / "ftp").start()
    try:
        with pytest.raises(transfer.UploadError) as refused:
            await transfer.upload(server.url.replace(FtpServer.PASSWORD, "nope-pw"), "a.tar.gz", DATA, timeout=5)
        assert refused.value.status == "PermissionDenied" and "nope-pw" not in str(refused.value)
        with pytest.raises(transfer.UploadError) as closed:
            await transfer.upload("ftp://127.0.0.1:1/logs", "a.tar.gz", DATA, timeout=5)
        assert closed.value.status == "UploadFailure"
        assert server.files() == {}
    finally:
        server.stop()


def test_file_transfer_protocols_report_what_is_implemented() -> None:
    """2.0.1 §2.1.4 OCPPCommCtrlr.FileTransferProtocols, 1.6 §8 SupportedFileTransferProtocols: exactly what this
    module sends over (each proven above)."""
    setting = BY_NAME["FileTransferProtocols"]
    assert setting.default == ",".join(transfer.PROTOCOLS) == "FTP,HTTP,HTTPS"
    assert setting.key16 == "SupportedFileTransferProtocols" and setting.readonly
