"""Firmware update end to end (2.0.1 L01 Secure Firmware Update, TC_L_01..TC_L_10 in spirit; 1.6 security
whitepaper SignedUpdateFirmware): the real LocalCsms sends UpdateFirmware for a release of this source tree built
and signed by the test (its own throwaway manufacturer CA), served by a real HTTP file server on loopback; the
station downloads, verifies and installs it into a temporary releases folder as a real venv, switches `current` and
asks for the restart; the test then starts `<releases>/current/bin/station run` as the unit would and the new
release reports Installed. A bad signature installs nothing; a release that crashes is rolled back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.firmware.release import sign_file
from station.firmware.releases import RECORD, Releases, preflight
from tests.conftest import Process
from tests.firmware.kit import FileServer, Signer, build_release, manufacturer

pytestmark = pytest.mark.slow
STATION = "CP-FW"
GOOD = "0.1.1"
CRASHING = "0.1.2"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Path]:
    """The manufacturer and its two releases (built once: a wheel of the whole tree takes seconds)."""
    directory = tmp_path_factory.mktemp("firmware-kit")
    signer = manufacturer(directory)
    build_release(directory, GOOD)
    build_release(directory, CRASHING, crash=True)
    return signer, directory / "dist"


def config_for(tmp_path: Path, url: str, signer: Signer, **firmware: Any) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": "2.0.1", "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "power_w": 11000, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "state" / "s.db")},
        "firmware": {"releases": str(tmp_path / "releases"), "manufacturer_root": str(signer.root)} | firmware,
    }


def toml(data: dict[str, Any], path: Path) -> Path:
    from tests.conftest import write_config

    return write_config(path, data)


def statuses(csms: LocalCsms) -> list[tuple[str, Any]]:
    return [(m.payload["status"], m.payload.get("requestId")) for m in csms.messages("FirmwareStatusNotification")]


async def install(csms: LocalCsms, config: dict[str, Any], url: str, signer: Signer, sig: str) -> None:
    async with running_station(parse_config(config)) as station:
        await csms.wait_for("BootNotification")
        await csms.wait_connected(STATION)
        answer = await csms.update_firmware(
            STATION, url, request_id=7, signing_certificate=signer.cert_pem, signature=sig, retries=3, retry_interval=0
        )
        assert answer == "Accepted"
        assert station.firmware is not None
        failed = asyncio.ensure_future(
            csms.wait_for("FirmwareStatusNotification", lambda p: "Failed" in p["status"], timeout=180)
        )
        restart = asyncio.ensure_future(station.firmware.restart_requested.wait())
        await asyncio.wait([failed, restart], timeout=180, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        assert restart.done(), statuses(csms)
        await csms.wait_for("FirmwareStatusNotification", lambda p: p["status"] == "InstallRebooting")


def start_release(releases: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """What the unit does: ExecStart=<releases>/current/bin/station run --config ..."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(releases / "current" / "bin" / "station"), "run", "--config", str(config), "--log-format", "json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def test_a_signed_release_is_downloaded_verified_installed_and_reports_installed_after_the_restart(
    tmp_path: Path, csms: LocalCsms, kit: tuple[Signer, Path]
) -> None:
    """L01.FR.01/L01.FR.10: every step as a FirmwareStatusNotification with the requestId, in order; the download
    fails twice and succeeds with retries = 3 (L01.FR.30 not reached); L01.FR.04/12 SignatureVerified; L01.FR.15
    InstallRebooting before the restart; L01.FR.28/32 (a) Installed from the new release, which boots with reason
    FirmwareUpdate (B01.FR.09) and sends the FirmwareUpdated security event (L01.FR.31)."""
    signer, dist = kit
    wheel = dist / f"station-{GOOD}-py3-none-any.whl"
    server = await FileServer(dist, fail_first=2).start()
    config = config_for(tmp_path, csms.url, signer)
    releases = tmp_path / "releases"
    try:
        await install(csms, config, server.url(wheel.name), signer, sign_file(wheel, signer.key.read_bytes()))
    finally:
        await server.stop()
    assert server.requests == 3
    assert statuses(csms) == [
        ("Downloading", 7),
        ("Downloaded", 7),
        ("SignatureVerified", 7),
        ("Installing", 7),
        ("InstallRebooting", 7),
    ]
    assert Releases(releases).link("current") == releases / GOOD
    assert Releases(releases).link("previous") == Path(sys.prefix)
    assert (tmp_path / "state" / RECORD).exists()
    mark = len(csms.received)
    proc = start_release(releases, toml(config, tmp_path / "station.toml"), tmp_path / "new.log")
    try:
        installed = await csms.wait_for(
            "FirmwareStatusNotification", lambda p: p["status"] == "Installed", after=mark, timeout=120
        )
        assert installed.payload["requestId"] == 7
        boot = [m for m in csms.received[mark:] if m.action == "BootNotification"]
        assert boot[0].payload["reason"] == "FirmwareUpdate"
        await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == "FirmwareUpdated", after=mark)
        await csms.wait_until(lambda: not (tmp_path / "state" / RECORD).exists(), 30)
    finally:
        proc.terminate()
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, (tmp_path / "new.log").read_text()[-3000:]
    assert f'"{GOOD}"' in (tmp_path / "new.log").read_text() or GOOD in (tmp_path / "new.log").read_text()


async def test_a_bad_signature_is_invalid_signature_and_nothing_is_installed(
    tmp_path: Path, csms: LocalCsms, kit: tuple[Signer, Path]
) -> None:
    """L01.FR.03/04: a signature that does not verify over the file: InvalidSignature, the security event
    InvalidFirmwareSignature, no venv, no link switched, no restart."""
    signer, dist = kit
    wheel = dist / f"station-{GOOD}-py3-none-any.whl"
    wrong = sign_file(dist / f"station-{CRASHING}-py3-none-any.whl", signer.key.read_bytes())
    server = await FileServer(dist).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, signer))) as station:
            await csms.wait_connected(STATION)
            await csms.wait_for("BootNotification")
            assert (
                await csms.update_firmware(
                    STATION, server.url(wheel.name), request_id=3, signing_certificate=signer.cert_pem, signature=wrong
                )
                == "Accepted"
            )
            await csms.wait_for("FirmwareStatusNotification", lambda p: p["status"] == "InvalidSignature")
            await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == "InvalidFirmwareSignature")
            assert station.firmware is not None and not station.firmware.restart_requested.is_set()
            # L01.FR.26: a triggered FirmwareStatusNotification repeats the last status sent.
            mark = len(csms.received)
            assert await csms.trigger_message(STATION, "FirmwareStatusNotification") == "Accepted"
            again = await csms.wait_for("FirmwareStatusNotification", after=mark)
            assert (again.payload["status"], again.payload["requestId"]) == ("InvalidSignature", 3)
    finally:
        await server.stop()
    assert statuses(csms)[:3] == [("Downloading", 3), ("Downloaded", 3), ("InvalidSignature", 3)]
    releases = tmp_path / "releases"
    assert sorted(p.name for p in releases.iterdir()) == ["downloads"]
    assert list((releases / "downloads").iterdir()) == []


async def test_a_certificate_of_another_manufacturer_is_answered_invalid_certificate(
    tmp_path: Path, csms: LocalCsms, kit: tuple[Signer, Path]
) -> None:
    """L01.FR.21/22: the certificate is validated before the request is accepted; L01.FR.02 the security event."""
    signer, _dist = kit
    (tmp_path / "other").mkdir()
    other = manufacturer(tmp_path / "other", "Someone Else")
    async with running_station(parse_config(config_for(tmp_path, csms.url, signer))):
        await csms.wait_connected(STATION)
        await csms.wait_for("BootNotification")
        answer = await csms.update_firmware(
            STATION,
            "http://127.0.0.1:1/station-9.0.0-py3-none-any.whl",
            signing_certificate=other.cert_pem,
            signature="AAAA",
        )
        assert answer == "InvalidCertificate"
        await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == "InvalidFirmwareSigningCertificate")
    assert statuses(csms) == []


async def test_a_release_that_crashes_on_start_is_rolled_back_and_reported_installation_failed(
    tmp_path: Path, csms: LocalCsms, kit: tuple[Signer, Path]
) -> None:
    """A release whose daemon dies at once: the unit's ExecStartPre (`station release preflight`, from the previous
    release) counts its starts; after max_boots the `current` link goes back, the previous release runs again and
    reports InstallationFailed with the requestId (L01.FR.01/10)."""
    signer, dist = kit
    wheel = dist / f"station-{CRASHING}-py3-none-any.whl"
    server = await FileServer(dist).start()
    config = config_for(tmp_path, csms.url, signer, max_boots=2)
    releases = tmp_path / "releases"
    try:
        await install(csms, config, server.url(wheel.name), signer, sign_file(wheel, signer.key.read_bytes()))
    finally:
        await server.stop()
    path = toml(config, tmp_path / "station.toml")
    said = []
    for _ in range(3):  # as systemd would: ExecStartPre, then ExecStart, which fails; Restart=on-failure
        said.append(preflight(Releases(releases), tmp_path / "state", 2))
        if Releases(releases).link("current") != releases / CRASHING:
            break
        proc = start_release(releases, path, tmp_path / "crash.log")
        assert await asyncio.to_thread(proc.wait, 60) == 70
    assert said[-1].startswith(f"release {CRASHING} did not boot in 2 starts"), said
    assert Releases(releases).link("current") == Path(sys.prefix)
    mark = len(csms.received)
    async with running_station(parse_config(config)):
        failed = await csms.wait_for("FirmwareStatusNotification", after=mark)
    assert (failed.payload["status"], failed.payload["requestId"]) == ("InstallationFailed", 7)
    assert not (tmp_path / "state" / RECORD).exists()


async def test_the_install_waits_for_the_running_transaction_with_no_new_starts(
    tmp_path: Path, csms: LocalCsms, kit: tuple[Signer, Path]
) -> None:
    """L01.FR.06: with a transaction running the download goes ahead but the install waits for its end; L01.FR.34
    InstallScheduled meanwhile; L01.FR.07: an EVSE that becomes free is set Unavailable until the new release runs
    (kept in the store across the restart), and the new release gives it back."""
    signer, dist = kit
    wheel = dist / f"station-{GOOD}-py3-none-any.whl"
    server = await FileServer(dist).start()
    config = config_for(tmp_path, csms.url, signer)
    try:
        async with running_station(parse_config(config)) as station:
            await csms.wait_connected(STATION)
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            assert await csms.start_session(STATION, "TAG-FW") == "Accepted"
            _started, tx_id = await csms.wait_session_started(STATION)
            sig = sign_file(wheel, signer.key.read_bytes())
            answer = await csms.update_firmware(
                STATION, server.url(wheel.name), request_id=11, signing_certificate=signer.cert_pem, signature=sig
            )
            assert answer == "Accepted"
            await csms.wait_for("FirmwareStatusNotification", lambda p: p["status"] == "InstallScheduled")
            await asyncio.sleep(1.5)
            assert "Installing" not in [s for s, _ in statuses(csms)]
            mark = len(csms.received)
            assert await csms.request_stop(STATION, tx_id) == "Accepted"
            await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", after=mark)
            await csms.wait_for(
                "StatusNotification", lambda p: p["connectorStatus"] == "Unavailable", after=mark, timeout=30
            )
            assert station.firmware is not None
            await asyncio.wait_for(station.firmware.restart_requested.wait(), 180)
            assert station.store.setting("firmware.held_evses") == "1"
    finally:
        await server.stop()
    assert [s for s, _ in statuses(csms)] == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallScheduled",
        "Installing",
        "InstallRebooting",
    ][: len(statuses(csms))]
    mark = len(csms.received)
    proc = start_release(tmp_path / "releases", toml(config, tmp_path / "station.toml"), tmp_path / "new.log")
    try:
        await csms.wait_for("FirmwareStatusNotification", lambda p: p["status"] == "Installed", after=mark, timeout=120)
        await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available", after=mark)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


async def test_sigkill_during_the_download_and_during_the_install_leaves_the_old_release_running(
    tmp_path: Path, csms: LocalCsms, kit: tuple[Signer, Path], processes: list[Process]
) -> None:
    """Power loss in the middle of an update: the daemon (a real process) is killed while it downloads, then while it
    installs; each time the next start runs the release it ran before (`current` not switched), reports
    DownloadFailed / InstallationFailed with the requestId (L01.FR.01/10) from what the killed run had stored, and
    stops cleanly. A half-made venv is left as `<releases>/<version>` with its `.installing` mark, never linked, and
    made again by the next install of that version."""
    signer, dist = kit
    wheel = dist / f"station-{GOOD}-py3-none-any.whl"
    sig = sign_file(wheel, signer.key.read_bytes())
    config = config_for(tmp_path, csms.url, signer)
    path = toml(config, tmp_path / "station.toml")
    releases = Releases(tmp_path / "releases")
    server = await FileServer(dist, slow=0.5).start()
    try:
        for request_id, kill_at, reported in ((21, "Downloading", "DownloadFailed"), (22, "Installing", None)):
            server.slow = 0.5 if kill_at == "Downloading" else 0.0
            mark = len(csms.received)
            daemon = Process(["run", "--config", str(path)], tmp_path / f"daemon-{request_id}.log")
            processes.append(daemon)
            await csms.wait_for("BootNotification", after=mark, timeout=60)
            await csms.wait_connected(STATION)
            answer = await csms.update_firmware(
                STATION,
                server.url(wheel.name),
                request_id=request_id,
                signing_certificate=signer.cert_pem,
                signature=sig,
            )
            assert answer == "Accepted"
            await csms.wait_for("FirmwareStatusNotification", lambda p, k=kill_at: p["status"] == k, after=mark)
            await daemon.terminate(signal.SIGKILL)
            assert releases.link("current") is None  # never switched
            mark = len(csms.received)
            again = Process(["run", "--config", str(path)], tmp_path / f"again-{request_id}.log")
            processes.append(again)
            failed = await csms.wait_for(
                "FirmwareStatusNotification", lambda p: "Failed" in p["status"], after=mark, timeout=60
            )
            assert failed.payload == {"status": reported or "InstallationFailed", "requestId": request_id}
            assert await again.terminate() == 0
    finally:
        await server.stop()
    assert not (tmp_path / "state" / RECORD).exists()
