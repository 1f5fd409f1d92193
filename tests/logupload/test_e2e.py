"""Log upload end to end: the real LocalCsms asks the running station (simulated meter) for its log, the file
arrives on a real HTTP or FTP server on loopback, and the statuses come in order through the outbox. 1.6 §5.9
GetDiagnostics / §4.4 DiagnosticsStatusNotification, 1.6 security whitepaper N01 (GetLog, LogStatusNotification,
ExtendedTriggerMessage), 2.0.1 N01 and F06 (TC_N_25_CS, TC_N_26_CS, TC_F_15_CS, TC_F_16_CS)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from tests.logupload.servers import FtpServer, UploadServer
from tests.security.pki import CertificateAuthority, server_context

STATION = "CP-LOG"
DIAGNOSTICS_MEMBERS = {
    "manifest.json",
    "station-log.jsonl",
    "ocpp-trace.jsonl",
    "security-log.jsonl",
    "config.json",
    "store-summary.json",
}


def config_for(tmp_path: Path, url: str, version: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def write_daemon_log(tmp_path: Path) -> datetime:
    """Lines in the daemon's log file (where the station keeps it: beside the store) an hour apart; the middle one's
    time."""
    now = datetime.now(UTC)
    lines = [{"timestamp": (now - timedelta(hours=h)).isoformat(), "event": f"line {h}h ago"} for h in (3, 2, 1)]
    (tmp_path / "station.log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return now - timedelta(hours=2)


def members(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


def statuses(csms: LocalCsms, action: str) -> list[tuple[str, int | None]]:
    return [(m.payload["status"], m.payload.get("requestId")) for m in csms.messages(action)]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[UploadServer]:
    server = await UploadServer().start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def csms201() -> AsyncIterator[LocalCsms]:
    server = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    yield server
    await server.stop()
    assert server.violations == [], server.violations


async def test_v16_get_diagnostics_uploads_the_archive(tmp_path: Path, csms: LocalCsms, http: UploadServer) -> None:
    """§5.9: fileName in the answer, the file at the location, Uploading then Uploaded (§4.4); startTime/stopTime
    select the daemon's log lines; TriggerMessage DiagnosticsStatusNotification is Idle afterwards (§4.4 "Idle SHALL
    only be used" when triggered)."""
    middle = write_daemon_log(tmp_path)
    async with running_station(parse_config(config_for(tmp_path, csms.url, "1.6"))):
        await csms.wait_for("StatusNotification")
        assert await csms.trigger_message(STATION, "DiagnosticsStatusNotification") == "Accepted"
        await csms.wait_for("DiagnosticsStatusNotification", lambda p: p["status"] == "Idle")
        name = await csms.get_diagnostics(
            STATION,
            http.url,
            start_time=(middle - timedelta(minutes=30)).isoformat(),
            stop_time=(middle + timedelta(minutes=30)).isoformat(),
        )
        assert name is not None and name.startswith(f"{STATION}-diagnostics-") and name.endswith(".tar.gz")
        await csms.wait_for("DiagnosticsStatusNotification", lambda p: p["status"] == "Uploaded")
        assert statuses(csms, "DiagnosticsStatusNotification") == [
            ("Idle", None),
            ("Uploading", None),
            ("Uploaded", None),
        ]
        (upload,) = http.uploads
        assert upload.name == name
        got = members(upload.data)
        assert set(got) == DIAGNOSTICS_MEMBERS
        assert [json.loads(line)["event"] for line in got["station-log.jsonl"].splitlines()] == ["line 2h ago"]
        assert json.loads(got["manifest.json"])["station_id"] == STATION
        assert await csms.trigger_message(STATION, "DiagnosticsStatusNotification") == "Accepted"
        await csms.wait_until(lambda: len(csms.messages("DiagnosticsStatusNotification")) == 4)
        assert statuses(csms, "DiagnosticsStatusNotification")[-1] == ("Idle", None)
        # A location the station cannot upload to: no file name, nothing sent.
        assert await csms.get_diagnostics(STATION, "sftp://127.0.0.1/logs") is None


async def test_v16_refused_upload_is_upload_failed_after_the_retries(
    tmp_path: Path, csms: LocalCsms, http: UploadServer
) -> None:
    """§5.9 retries: 1 + retries attempts, then one UploadFailed (not one per attempt)."""
    http.refuse = 500
    async with running_station(parse_config(config_for(tmp_path, csms.url, "1.6"))):
        await csms.wait_for("StatusNotification")
        assert await csms.get_diagnostics(STATION, http.url, retries=2, retry_interval=0) is not None
        await csms.wait_for("DiagnosticsStatusNotification", lambda p: p["status"] == "UploadFailed")
        assert statuses(csms, "DiagnosticsStatusNotification") == [("Uploading", None), ("UploadFailed", None)]
        assert http.attempts == 3 and http.uploads == []


async def test_v16_security_get_log_over_ftp_and_a_second_request(tmp_path: Path, csms: LocalCsms) -> None:
    """Whitepaper N01.FR.01/03/07/08/09: SecurityLog over FTP, statuses with the requestId; N01.FR.11: a second GetLog
    while one uploads is AcceptedCanceled and only the second completes; N01.FR.12: ExtendedTriggerMessage
    LogStatusNotification is Idle without a requestId when nothing uploads."""
    ftp = FtpServer(tmp_path / "ftp").start()
    slow = await UploadServer(delay=30).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "1.6"))):
            await csms.wait_for("StatusNotification")
            status, name = await csms.get_log(STATION, ftp.url, 7, log_type="SecurityLog")
            assert status == "Accepted" and name is not None and "-security-" in name
            await csms.wait_for("LogStatusNotification", lambda p: p["status"] == "Uploaded")
            assert statuses(csms, "LogStatusNotification") == [("Uploading", 7), ("Uploaded", 7)]
            got = members(ftp.files()[name])
            assert set(got) == {"manifest.json", "security-log.jsonl"}
            assert "StartupOfTheDevice" in got["security-log.jsonl"]

            assert await csms.extended_trigger_message(STATION, "LogStatusNotification") == "Accepted"
            await csms.wait_until(lambda: len(csms.messages("LogStatusNotification")) == 3)
            assert statuses(csms, "LogStatusNotification")[-1] == ("Idle", None)

            assert (await csms.get_log(STATION, slow.url, 8, retries=0))[0] == "Accepted"
            await csms.wait_for("LogStatusNotification", lambda p: p.get("requestId") == 8)
            await csms.wait_until(lambda: slow.attempts == 1)
            status, second = await csms.get_log(STATION, ftp.url, 9)
            assert status == "AcceptedCanceled"
            await csms.wait_for("LogStatusNotification", lambda p: p == {"status": "Uploaded", "requestId": 9})
            assert statuses(csms, "LogStatusNotification")[3:] == [("Uploading", 8), ("Uploading", 9), ("Uploaded", 9)]
            assert second in ftp.files() and slow.uploads == []
    finally:
        ftp.stop()
        await slow.stop()


async def test_v201_get_log_uploads_and_survives_a_reconnect(
    tmp_path: Path, csms201: LocalCsms, http: UploadServer
) -> None:
    """TC_N_25_CS (N01.FR.01/02/04/07/08/09): Accepted with a filename, Uploading and Uploaded with the requestId;
    the statuses are queued in the outbox, so one that falls in a dropped connection arrives after the reconnect.
    TC_F_15_CS / TC_F_16_CS: a triggered LogStatusNotification is Uploading with the requestId during the upload,
    Idle without one after it (N01.FR.13)."""
    csms = csms201
    http.delay = 1.0
    http.credentials = ("csms-logs", "upl0ad-Pass-42")  # N01.FR.17: Basic auth from the URL
    location = http.url.replace("http://", "http://csms-logs:upl0ad-Pass-42@")
    async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))):
        await csms.wait_for("StatusNotification")
        status, name = await csms.get_log(STATION, location, 42, retries=1, retry_interval=1)
        assert status == "Accepted" and name
        await csms.wait_for("LogStatusNotification", lambda p: p["status"] == "Uploading")
        assert await csms.trigger_message(STATION, "LogStatusNotification") == "Accepted"
        await csms.wait_until(lambda: len(csms.messages("LogStatusNotification")) == 2)
        await csms.drop_connections()
        await csms.wait_for("LogStatusNotification", lambda p: p["status"] == "Uploaded", timeout=15)
        assert statuses(csms, "LogStatusNotification") == [("Uploading", 42), ("Uploading", 42), ("Uploaded", 42)]
        got = members(http.uploads[0].data)
        assert set(got) == DIAGNOSTICS_MEMBERS and http.uploads[0].name == name and http.uploads[0].user == "csms-logs"
        assert '\\"GetLog\\"' in got["ocpp-trace.jsonl"]  # the request itself is in the trace ...
        assert all("upl0ad-Pass-42" not in text for text in got.values())  # ... without the upload password
        assert await csms.trigger_message(STATION, "LogStatusNotification") == "Accepted"
        await csms.wait_until(lambda: len(csms.messages("LogStatusNotification")) == 4)
        assert csms.messages("LogStatusNotification")[-1].payload == {"status": "Idle"}
        status, name = await csms.get_log(STATION, "gopher://127.0.0.1/logs", 43)  # N01.FR.05
        assert (status, name) == ("Rejected", None)


async def test_v201_refusal_and_cancel(tmp_path: Path, csms201: LocalCsms, http: UploadServer) -> None:
    """TC_N_26_CS (N01.FR.10): a server that refuses gets every retry, then one status saying why (403:
    PermissionDenied); N01.FR.12 / N01.FR.20: a GetLog while one uploads is AcceptedCanceled, the canceled one is
    told AcceptedCanceled with its requestId, the new one runs to Uploaded."""
    csms = csms201
    http.refuse = 403
    async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))):
        await csms.wait_for("StatusNotification")
        assert (await csms.get_log(STATION, http.url, 1, retries=2, retry_interval=0))[0] == "Accepted"
        await csms.wait_for("LogStatusNotification", lambda p: p["status"] == "PermissionDenied")
        assert statuses(csms, "LogStatusNotification") == [("Uploading", 1), ("PermissionDenied", 1)]
        assert http.attempts == 3

        http.refuse, http.delay = None, 30
        assert (await csms.get_log(STATION, http.url, 2))[0] == "Accepted"
        await csms.wait_until(lambda: http.attempts == 4)
        http.delay = 0
        assert (await csms.get_log(STATION, http.url, 3))[0] == "AcceptedCanceled"
        await csms.wait_for("LogStatusNotification", lambda p: p == {"status": "Uploaded", "requestId": 3})
        assert statuses(csms, "LogStatusNotification")[2:] == [
            ("Uploading", 2),
            ("AcceptedCanceled", 2),
            ("Uploading", 3),
            ("Uploaded", 3),
        ]
        assert len(http.uploads) == 1


async def test_v201_https_upload_trusts_the_csms_ca(tmp_path: Path, csms201: LocalCsms) -> None:
    """N01.FR.15: an HTTPS location whose certificate chains to the CSMS trust chain (the certificate store's CSMS
    roots: [csms] ca_file, here a CA made by the test) takes the upload; one from a CA the station does not know gets
    UploadFailure after its retries, and takes the upload once the CSMS installed that CA as a CSMS root (M05)."""
    csms = csms201
    ca = CertificateAuthority(tmp_path, "csms-ca")
    trusted = await UploadServer(tls=server_context(ca.issue("logs", "127.0.0.1", hosts=("127.0.0.1",)))).start()
    other = CertificateAuthority(tmp_path, "other-ca")
    untrusted = await UploadServer(tls=server_context(other.issue("evil", "127.0.0.1", hosts=("127.0.0.1",)))).start()
    config = config_for(tmp_path, csms.url, "2.0.1")
    config["csms"]["ca_file"] = str(ca.path)
    try:
        async with running_station(parse_config(config)):
            await csms.wait_for("StatusNotification")
            assert (await csms.get_log(STATION, trusted.url, 1))[0] == "Accepted"
            await csms.wait_for("LogStatusNotification", lambda p: p == {"status": "Uploaded", "requestId": 1})
            assert (await csms.get_log(STATION, untrusted.url, 2, retries=1, retry_interval=0))[0] == "Accepted"
            await csms.wait_for("LogStatusNotification", lambda p: p == {"status": "UploadFailure", "requestId": 2})
            assert len(trusted.uploads) == 1 and untrusted.uploads == []
            installed = await csms.install_certificate(STATION, "CSMSRootCertificate", other.path.read_text())
            assert installed["status"] == "Accepted"
            assert (await csms.get_log(STATION, untrusted.url, 3))[0] == "Accepted"
            await csms.wait_for("LogStatusNotification", lambda p: p == {"status": "Uploaded", "requestId": 3})
            assert len(untrusted.uploads) == 1
    finally:
        await trusted.stop()
        await untrusted.stop()
