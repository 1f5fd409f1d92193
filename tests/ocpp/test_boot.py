"""The boot to the letter, against the real WebSocket CSMS on loopback: nothing sent and nothing answered while the
CSMS has Rejected the station, Pending and TriggerMessage(BootNotification), and the 2.0.1 boot reason surviving the
restart (the store knows how the previous run ended)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

import station
from station.app import running_station
from station.config import parse_config
from station.demo.csms import CsmsBehaviour, LocalCsms
from station.ocpp import connection as connection_module
from tests.conftest import Process, write_config

STATION = "CP-BOOT"


def config_for(tmp_path: Path, url: str, version: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def station_calls(csms: LocalCsms, start: int, end: int | None = None) -> list[str]:
    """The actions of the CALLs the station sent between two indexes of `csms.frames`."""
    calls = []
    for _, raw in csms.frames[start:end]:
        msg = json.loads(raw)
        if msg[0] == 2:
            calls.append(str(msg[2]))
    return calls


def frame_index(csms: LocalCsms, action: str, nth: int = 0) -> int:
    found = [i for i, (_, raw) in enumerate(csms.frames) if json.loads(raw)[0] == 2 and json.loads(raw)[2] == action]
    return found[nth]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_nothing_is_sent_or_answered_while_rejected(tmp_path: Path, version: str) -> None:
    """1.6 §4.2: after a Rejected BootNotification.conf the Charge Point "SHALL NOT send any OCPP message ... until
    the ... retry interval has expired" and "SHALL NOT respond to any Central System initiated message"; then it boots
    again. 2.0.1 B03.FR.02 (nothing sent until the interval has passed), B03.FR.06 (boots again after it) and
    B03.FR.08 / TC_B_30_CS: a CSMS request meanwhile gets CALLERROR SecurityError, and nothing else."""
    behaviour = CsmsBehaviour(boot_statuses=["Rejected"], heartbeat_interval=3)
    csms = await LocalCsms(behaviour, subprotocols=(f"ocpp{version}",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, version))) as running:
            await csms.wait_for("BootNotification")
            await csms.wait_until(lambda: running.connection.state.registration == "Rejected")
            if version == "1.6":
                request = json.dumps([2, "raw-get", "GetConfiguration", {"key": ["HeartbeatInterval"]}])
                assert await csms.send_raw(STATION, request, timeout=1.5) is None  # not answered
            else:
                variable = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
                request = json.dumps([2, "raw-get", "GetVariables", {"getVariableData": [variable]}])
                answer = await csms.send_raw(STATION, request, timeout=1.5)
                assert answer is not None and answer[:3] == [4, "raw-get", "SecurityError"]
            # Then, and only after the interval, the station boots again; the CSMS accepts it this time.
            await csms.wait_for("BootNotification", after=1, timeout=10)
            await csms.wait_for("StatusNotification", timeout=10)
            between = station_calls(
                csms, frame_index(csms, "BootNotification") + 1, frame_index(csms, "BootNotification", 1)
            )
            assert between == [], between
            second = [r for r in csms.messages("BootNotification")][1]
            assert (second.at - csms.messages("BootNotification")[0].at).total_seconds() >= 2.5  # the CSMS's interval
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_pending_then_triggered_boot_201(tmp_path: Path) -> None:
    """B02.FR.01 (while Pending the station answers the CSMS), B02.FR.05 (RequestStartTransaction Rejected while
    Pending), TC_B_02_CS: a TriggerMessage(BootNotification) is answered and the BootNotification (reason Triggered,
    BootReasonEnumType) sent before the interval; once Accepted, F06.FR.17: TriggerMessage(BootNotification) Rejected
    and nothing sent."""
    behaviour = CsmsBehaviour(boot_statuses=["Pending"], heartbeat_interval=60)
    csms = await LocalCsms(behaviour, subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))) as running:
            first = await csms.wait_for("BootNotification")
            await csms.wait_until(lambda: STATION in csms.stations)
            assert first.payload["reason"] == "PowerUp"
            got = await csms.get_variables(
                STATION, [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "OfflineThreshold"}}]
            )
            assert got[0]["attribute_status"] == "Accepted"
            assert await csms.request_start(STATION, "TAG-PENDING") == "Rejected"
            assert station_calls(csms, 1) == []  # nothing but the boot while Pending
            assert await csms.trigger_message(STATION, "BootNotification") == "Accepted"
            triggered = await csms.wait_for("BootNotification", after=csms.received.index(first) + 1, timeout=10)
            assert triggered.payload["reason"] == "Triggered"
            await csms.wait_for("StatusNotification", timeout=10)
            await csms.wait_until(lambda: running.connection.state.booted == "2.0.1")
            assert await csms.trigger_message(STATION, "BootNotification") == "Rejected"
            await csms.trigger_message(STATION, "Heartbeat")
            await csms.wait_for("Heartbeat", after=len(csms.received))
            assert len(csms.messages("BootNotification")) == 2
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_triggered_boot_after_accepted_is_rejected_16(tmp_path: Path, csms: LocalCsms) -> None:
    """1.6 errata §3.35: after BootNotification.conf(Accepted) the Charge Point rejects TriggerMessage(BootNotification)
    and sends none."""
    async with running_station(parse_config(config_for(tmp_path, csms.url, "1.6"))):
        await csms.wait_for("StatusNotification")
        assert await csms.trigger_message(STATION, "BootNotification") == "Rejected"
        await csms.trigger_message(STATION, "Heartbeat")
        await csms.wait_for("Heartbeat")
        assert len(csms.messages("BootNotification")) == 1


async def test_boot_reason_survives_the_restart_201(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B01.FR.09 and BootReasonEnumType: PowerUp only for a real start; RemoteReset for the first boot after a Reset
    (B11.FR.03-04, TC_B_22_CS step 5), ScheduledReset for an OnIdle reset carried out once the transaction ended
    (B12.FR.01/03), LocalReset for a service restart, FirmwareUpdate after new software was installed, PowerUp again
    after the operating system booted anew."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    config = parse_config(config_for(tmp_path, csms.url, "2.0.1"))

    seen = 0  # BootNotifications taken by next_boot: the daemon may boot before running_station has yielded

    async def next_boot() -> str:
        nonlocal seen
        await csms.wait_until(lambda: len(csms.messages("BootNotification")) > seen)
        seen = len(csms.messages("BootNotification"))
        boot_at = max(i for i, r in enumerate(csms.received) if r.action == "BootNotification")
        await csms.wait_for("StatusNotification", after=boot_at)
        return str(csms.messages("BootNotification")[-1].payload["reason"])

    try:
        async with running_station(config) as running:
            assert await next_boot() == "PowerUp"
            assert await csms.reset(STATION, "Immediate") == "Accepted"
            await csms.wait_until(running.runtime.reset_requested.is_set)
        async with running_station(config) as running:
            assert await next_boot() == "RemoteReset"
            assert await csms.request_start(STATION, "TAG-IDLE") == "Accepted"
            _, tx_id = await csms.wait_session_started(STATION)
            assert await csms.reset(STATION, "OnIdle") == "Scheduled"
            assert not running.runtime.reset_requested.is_set()
            assert await csms.request_stop(STATION, tx_id) == "Accepted"
            await csms.wait_session_ended(STATION)
            await csms.wait_until(running.runtime.reset_requested.is_set)
        async with running_station(config):
            assert await next_boot() == "ScheduledReset"
        async with running_station(config):
            assert await next_boot() == "LocalReset"
        monkeypatch.setattr(station, "__version__", "99.0.0")
        async with running_station(config):
            assert await next_boot() == "FirmwareUpdate"
        monkeypatch.setattr(connection_module, "os_boot_id", lambda: "another-boot-of-the-board")
        async with running_station(config):
            assert await next_boot() == "PowerUp"
    finally:
        await csms.stop()
    assert csms.violations == []


@pytest.mark.slow
async def test_boot_reason_after_the_watchdog_killed_the_daemon(tmp_path: Path, processes: list[Process]) -> None:
    """BootReasonEnumType Watchdog: systemd's watchdog kills a hung daemon (SIGABRT, then SIGKILL); the run never said
    it stopped, the operating system kept running, so the next boot says Watchdog. A clean SIGTERM stop is not that."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        path = write_config(tmp_path / "station.toml", config_for(tmp_path, csms.url, "2.0.1"))
        daemon = Process(["run", "--config", str(path)], tmp_path / "d1.log")
        processes.append(daemon)
        await csms.wait_for("StatusNotification", timeout=30)
        assert csms.messages("BootNotification")[0].payload["reason"] == "PowerUp"
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        again = Process(["run", "--config", str(path)], tmp_path / "d2.log")
        processes.append(again)
        await csms.wait_until(lambda: len(csms.messages("BootNotification")) == 2, timeout=30)
        assert csms.messages("BootNotification")[1].payload["reason"] == "Watchdog", again.log()
        assert await again.terminate() == 0
    finally:
        await csms.stop()


async def test_a_request_right_after_the_boot_waits_for_the_meter_key(tmp_path: Path) -> None:
    """The connection boots while the runtime still reads the meter (its key, a first reading): a CSMS request sent
    the moment the BootNotification arrives is answered once the runtime is ready, so GetConfiguration of the meter's
    key (1.6 §9.1 MeterPublicKey, OCA signed meter values) never answers an empty key, and the StatusNotifications
    come after the boot (1.6 §4.2)."""
    csms = await LocalCsms(subprotocols=("ocpp1.6",)).start()
    config = config_for(tmp_path, csms.url, "1.6")
    config["meter"]["baudrate"] = 9600  # the key read takes a wire time of its own after the identity
    asked: list[Any] = []

    def on_boot(received: Any) -> None:
        if received.action == "BootNotification" and not asked:
            asked.append(asyncio.ensure_future(csms.get_configuration(STATION, ["MeterPublicKey1"])))

    csms.listeners.append(on_boot)
    try:
        async with running_station(parse_config(config)):
            await csms.wait_until(lambda: bool(asked), timeout=30)
            keys = await asked[0]
            assert keys["MeterPublicKey1"], keys
            assert frame_index(csms, "BootNotification") < frame_index(csms, "StatusNotification")
    finally:
        await csms.stop()
    assert csms.violations == []
