"""The update's rules over the real WebSocket without installing anything: a second UpdateFirmware cancels the first
(2.0.1 L01.FR.24), 1.6 UpdateFirmware only where the config allows unsigned updates, 1.6 SignedUpdateFirmware with
SignedFirmwareStatusNotification, TriggerMessage FirmwareStatusNotification (1.6 §4.5 Idle; 2.0.1 L01.FR.25/26);
and, without a CSMS, the new release's own boot check (L01.FR.29 InstallVerificationFailed after a rollback) and the
store put back for a release that cannot open a migrated one."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import NotSupportedError

import station
from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.firmware.release import sign_file
from station.firmware.releases import RECORD, Pending, Releases, load_pending, restore_store, save_pending
from station.firmware.update import FirmwareUpdater
from station.store import Store
from tests.firmware.kit import FileServer, manufacturer

STATION = "CP-FW2"


def config_for(tmp_path: Path, url: str, version: str, **firmware: Any) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "power_w": 11000, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "state" / "s.db")},
        "firmware": {"releases": str(tmp_path / "releases")} | firmware,
    }


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_a_second_update_firmware_cancels_the_first_one(tmp_path: Path, csms: LocalCsms) -> None:
    """L01.FR.13: retrieveDateTime in the future is DownloadScheduled; L01.FR.24: a new UpdateFirmware while one
    waits cancels it and is answered AcceptedCanceled; the new one runs with its own requestId (L01.FR.10); all
    retries failing is DownloadFailed (L01.FR.30)."""
    signer = manufacturer(tmp_path)
    config = config_for(tmp_path, csms.url, "2.0.1", manufacturer_root=str(signer.root))
    async with running_station(parse_config(config)):
        await csms.wait_connected(STATION)
        await csms.wait_for("BootNotification")
        url = "http://127.0.0.1:9/station-5.0.0-py3-none-any.whl"  # nothing listens on the discard port
        first = await csms.update_firmware(
            STATION, url, request_id=1, signing_certificate=signer.cert_pem, signature="AAAA", retrieve=later(3600)
        )
        assert first == "Accepted"
        await csms.wait_for("FirmwareStatusNotification", lambda p: p["status"] == "DownloadScheduled")
        second = await csms.update_firmware(
            STATION,
            url,
            request_id=2,
            signing_certificate=signer.cert_pem,
            signature="AAAA",
            retries=1,
            retry_interval=0,
        )
        assert second == "AcceptedCanceled"
        await csms.wait_for("FirmwareStatusNotification", lambda p: p["status"] == "DownloadFailed")
    seen = [(m.payload["status"], m.payload["requestId"]) for m in csms.messages("FirmwareStatusNotification")]
    assert seen == [("DownloadScheduled", 1), ("Downloading", 2), ("DownloadFailed", 2)]


async def test_16_update_firmware_needs_allow_unsigned_and_trigger_says_idle(tmp_path: Path, csms: LocalCsms) -> None:
    """1.6 §5.19 UpdateFirmware has no signature: refused unless [firmware] allow_unsigned_16 (CALLERROR
    NotSupported, OCPP-J §4.2.3: its conf has no status to refuse with, and FirmwareManagement is not claimed in
    SupportedFeatureProfiles, §9.1.29); nothing done, nothing sent. §4.5 a triggered FirmwareStatusNotification is
    Idle when no update runs."""
    url = "http://127.0.0.1:9/station-5.0.0-py3-none-any.whl"
    async with running_station(parse_config(config_for(tmp_path, csms.url, "1.6"))):
        await csms.wait_connected(STATION)
        await csms.wait_for("BootNotification")
        with pytest.raises(NotSupportedError):
            await csms.update_firmware(STATION, url, retries=0)
        assert await csms.trigger_message(STATION, "FirmwareStatusNotification") == "Accepted"
        idle = await csms.wait_for("FirmwareStatusNotification")
        assert idle.payload == {"status": "Idle"}
    assert len(csms.messages("FirmwareStatusNotification")) == 1
    (tmp_path / "state" / "s.db").unlink()
    mark = len(csms.received)
    async with running_station(parse_config(config_for(tmp_path, csms.url, "1.6", allow_unsigned_16=True))):
        await csms.wait_connected(STATION)
        await csms.wait_for("BootNotification", after=mark)
        await csms.update_firmware(STATION, url, retries=0)
        await csms.wait_for("FirmwareStatusNotification", lambda p: p["status"] == "DownloadFailed", after=mark)
    seen = [m.payload for m in csms.received[mark:] if m.action == "FirmwareStatusNotification"]
    assert seen == [{"status": "Downloading"}, {"status": "DownloadFailed"}]


async def test_16_signed_update_with_a_bad_signature(tmp_path: Path, csms: LocalCsms) -> None:
    """1.6 security whitepaper: SignedUpdateFirmware is checked like 2.0.1 L01 and answered with
    SignedFirmwareStatusNotification (with requestId): InvalidSignature and the InvalidFirmwareSignature event."""
    signer = manufacturer(tmp_path)
    (tmp_path / "srv").mkdir()
    release = tmp_path / "srv" / "station-5.0.0-py3-none-any.whl"
    release.write_bytes(b"not really a wheel")
    wrong = sign_file(tmp_path / signer.root.name, signer.key.read_bytes())
    server = await FileServer(tmp_path / "srv").start()
    config = config_for(tmp_path, csms.url, "1.6", manufacturer_root=str(signer.root))
    try:
        async with running_station(parse_config(config)):
            await csms.wait_connected(STATION)
            await csms.wait_for("BootNotification")
            answer = await csms.update_firmware(
                STATION, server.url(release.name), request_id=9, signing_certificate=signer.cert_pem, signature=wrong
            )
            assert answer == "Accepted"
            await csms.wait_for("SignedFirmwareStatusNotification", lambda p: p["status"] == "InvalidSignature")
            await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == "InvalidFirmwareSignature")
    finally:
        await server.stop()
    seen = [(m.payload["status"], m.payload["requestId"]) for m in csms.messages("SignedFirmwareStatusNotification")]
    assert seen == [("Downloading", 9), ("Downloaded", 9), ("InvalidSignature", 9)]


async def test_a_new_release_without_an_accepted_boot_is_rolled_back(tmp_path: Path) -> None:
    """L01.FR.29: the new release proves itself by an Accepted BootNotification within [firmware] boot_timeout;
    without it `current` goes back to the previous release, which reports InstallVerificationFailed."""
    config = parse_config(config_for(tmp_path, "ws://127.0.0.1:9/ocpp", "2.0.1"))
    config = dataclasses.replace(config, firmware=dataclasses.replace(config.firmware, boot_timeout=0.2))
    releases = Releases(tmp_path / "releases")
    (tmp_path / "releases" / "new").mkdir(parents=True)
    releases.switch(tmp_path / "releases" / "new")  # previous -> this venv, current -> the new one
    state = tmp_path / "state"
    state.mkdir()
    save_pending(state, Pending(4, False, station.__version__, str(tmp_path / "releases" / "new"), sys.prefix, "", 4))
    store = Store(state / "s.db")
    try:
        woken: list[int] = []
        updater = FirmwareUpdater(config, store, busy=lambda: False, wake=lambda: woken.append(1))
        updater.on_start(lambda: False)
        await asyncio.wait_for(updater.restart_requested.wait(), 10)
        assert releases.link("current") == Path(sys.prefix)
        pending = load_pending(state)
        assert pending is not None and (pending.state, pending.reason) == ("rolled_back", "InstallVerificationFailed")
        # The previous release starts again and reports it.
        again = FirmwareUpdater(config, store, busy=lambda: False, wake=lambda: None)
        again.on_start(lambda: True)
        message = store.next_message("other")
        while message is not None and message.kind != "firmware_status":
            store.delivered(message.id)
            message = store.next_message("other")
        assert message is not None and message.body["status"] == "InstallVerificationFailed"
        assert message.body["requestId"] == 4
        assert not (state / RECORD).exists()
        await updater.close()
    finally:
        store.close()


def test_a_rollback_puts_the_store_back_when_the_new_release_migrated_it(tmp_path: Path) -> None:
    """The store migrations run forward only (a newer store is refused): after a rollback the copy made before the
    switch comes back, and the migrated file is kept aside, never deleted."""
    store = tmp_path / "s.db"
    copy = tmp_path / "s.db.before-9"
    for path, version in ((copy, 4), (store, 5)):
        db = sqlite3.connect(path)
        db.execute(f"PRAGMA user_version={version}")
        db.execute("CREATE TABLE t (v TEXT)")
        db.execute("INSERT INTO t VALUES (?)", (f"written at {version}",))
        db.commit()
        db.close()
    pending = Pending(1, True, "9", "/x", "/y", str(copy), 4, state="rolled_back", reason="InstallationFailed")
    restore_store(pending, store, supported=5)
    assert sqlite3.connect(store).execute("SELECT v FROM t").fetchone()[0] == "written at 5"  # it can open it
    restore_store(pending, store, supported=4)
    assert sqlite3.connect(store).execute("SELECT v FROM t").fetchone()[0] == "written at 4"
    aside = tmp_path / "s.db.from-9"
    assert sqlite3.connect(aside).execute("SELECT v FROM t").fetchone()[0] == "written at 5"


def test_an_update_interrupted_before_the_switch_is_reported_failed_at_the_next_start(tmp_path: Path) -> None:
    """Power loss (or SIGKILL) during the download or the install, before the `current` link changed: the release
    that runs is the old one, the CSMS hears DownloadFailed / InstallationFailed with the requestId (L01.FR.01/10),
    and the EVSEs the install held are given back."""
    config = parse_config(config_for(tmp_path, "ws://127.0.0.1:9/ocpp", "2.0.1"))
    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state" / "s.db")
    given_back: list[bool] = []
    try:
        for last, reported in (("Downloading", "DownloadFailed"), ("Installing", "InstallationFailed")):
            store.set_setting("firmware.last_status", last)
            store.set_setting("firmware.last_request", "5")
            updater = FirmwareUpdater(config, store, busy=lambda: False, wake=lambda: None, hold=given_back.append)
            updater.on_start(lambda: True)
            message = store.next_message("other")
            while message is not None and message.kind != "firmware_status":
                store.delivered(message.id)
                message = store.next_message("other")
            assert message is not None and (message.body["status"], message.body["requestId"]) == (reported, 5)
            store.delivered(message.id)
        FirmwareUpdater(config, store, busy=lambda: False, wake=lambda: None).on_start(lambda: True)
        assert store.outbox_depth("firmware_status") == 0  # a failure reported is not in progress any more
    finally:
        store.close()
    assert given_back == [False, False]


def test_config_check_names_a_missing_manufacturer_root(tmp_path: Path) -> None:
    """`station config check`: a [firmware] manufacturer_root that is not there is said, with what to do."""
    from station.config import config_warnings

    config = parse_config(
        config_for(tmp_path, "ws://127.0.0.1:9/ocpp", "2.0.1", manufacturer_root=str(tmp_path / "root.pem"))
    )
    assert any(w.startswith("firmware.manufacturer_root:") for w in config_warnings(config))
    (tmp_path / "root.pem").write_text("x")
    assert not any(w.startswith("firmware.") for w in config_warnings(config))
