"""Firmware download from a real aiohttp file server on loopback, HTTP and HTTPS with a throwaway CA (2.0.1 L01:
`retries`, `retryInterval`, L01.FR.30; L01.FR.08 recommends HTTPS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.firmware.download import DownloadFailed, check_location, download, where
from tests.firmware.kit import FileServer
from tests.security.pki import CertificateAuthority, server_context


async def test_a_download_that_fails_twice_succeeds_with_three_retries(tmp_path: Path) -> None:
    """`retries` = 3: up to three attempts after the first, `retryInterval` apart; two 503s, then the file."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "station-2.0.0-py3-none-any.whl").write_bytes(b"w" * 100_000)
    server = await FileServer(tmp_path / "srv", fail_first=2).start()
    attempts: list[int] = []
    try:
        size = await download(
            server.url("station-2.0.0-py3-none-any.whl"),
            tmp_path / "got.whl",
            retries=3,
            retry_interval=0,
            max_bytes=1 << 20,
            timeout=10,
            on_attempt=attempts.append,
        )
    finally:
        await server.stop()
    assert size == 100_000 and (tmp_path / "got.whl").read_bytes() == b"w" * 100_000
    assert attempts == [0, 1, 2] and server.requests == 3


async def test_all_attempts_failing_is_download_failed_and_leaves_no_file(tmp_path: Path) -> None:
    """L01.FR.30: DownloadFailed only after every retry failed; a file over the size bound is refused as it arrives."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "big.whl").write_bytes(b"w" * 200_000)
    server = await FileServer(tmp_path / "srv", fail_first=5).start()
    try:
        with pytest.raises(DownloadFailed, match="3 attempt"):
            await download(
                server.url("big.whl"), tmp_path / "x", retries=2, retry_interval=0, max_bytes=1 << 20, timeout=5
            )
        assert server.requests == 3
        server.fail_first = 0
        with pytest.raises(DownloadFailed, match="larger"):
            await download(
                server.url("big.whl"), tmp_path / "x", retries=0, retry_interval=0, max_bytes=1000, timeout=5
            )
    finally:
        await server.stop()
    assert list(tmp_path.glob("x*")) == []


async def test_https_with_the_configured_ca_and_not_without_it(tmp_path: Path) -> None:
    """HTTPS (L01.FR.08): the server's certificate is checked against the CA bundle; an unknown CA fails."""
    import ssl

    ca = CertificateAuthority(tmp_path, "files-ca")
    issued = ca.issue("files", "127.0.0.1", hosts=("127.0.0.1",))
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.whl").write_bytes(b"tls")
    server = await FileServer(tmp_path / "srv", tls=server_context(issued)).start()
    try:
        trusted = ssl.create_default_context(cafile=str(ca.path))
        await download(
            server.url("f.whl"),
            tmp_path / "ok",
            retries=0,
            retry_interval=0,
            max_bytes=100,
            timeout=5,
            ssl_context=trusted,
        )
        assert (tmp_path / "ok").read_bytes() == b"tls"
        with pytest.raises(DownloadFailed):
            await download(
                server.url("f.whl"),
                tmp_path / "no",
                retries=0,
                retry_interval=0,
                max_bytes=100,
                timeout=5,
                ssl_context=ssl.create_default_context(),
            )
    finally:
        await server.stop()


def test_locations_are_checked_and_logged_without_credentials() -> None:
    assert check_location("ftp://host/f") is not None
    assert check_location("https://" + "a" * 600) is not None
    assert check_location("https://files.example/station-1-py3-none-any.whl") is None
    assert where("https://user:secret@files.example:8443/p?token=t") == "https://files.example:8443"
