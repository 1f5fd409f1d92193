"""Remote control over a real WebSocket in both versions: ChangeAvailability (kept across restarts, scheduled during
a transaction), Reset (transactions ended properly, then the process exits 75 so systemd starts it again) and
TriggerMessage."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call
from ocpp.v201 import call as call201

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.meter.nullmodem import VirtualNullModem
from tests.conftest import Process, station_config

STATION = "CP-RC"


def config_for(tmp_path: Path, url: str, version: str = "1.6") -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def status_is(value: str) -> Any:
    return lambda p: (p.get("status") or p.get("connectorStatus")) == value


async def test_change_availability_16(tmp_path: Path, csms: LocalCsms) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config):
        await csms.wait_for("StatusNotification", status_is("Available"))
        side = csms.stations[STATION]
        result = await side.call(call.ChangeAvailability(connector_id=1, type="Inoperative"), suppress=False)
        assert result.status == "Accepted"
        await csms.wait_for("StatusNotification", status_is("Unavailable"))
        assert await csms.remote_start(STATION, "TAG") == "Rejected"
        bad = await side.call(call.ChangeAvailability(connector_id=9, type="Inoperative"), suppress=False)
        assert bad.status == "Rejected"
    mark = len(csms.received)
    async with running_station(config):  # kept across a restart
        await csms.wait_for("StatusNotification", status_is("Unavailable"), after=mark)
        side = csms.stations[STATION]
        await side.call(call.ChangeAvailability(connector_id=0, type="Operative"), suppress=False)
        await csms.wait_for("StatusNotification", status_is("Available"), after=mark)
        assert await csms.remote_start(STATION, "TAG") == "Accepted"
        charging = await csms.wait_for("StatusNotification", status_is("Charging"), after=mark)
        during = await side.call(call.ChangeAvailability(connector_id=1, type="Inoperative"), suppress=False)
        assert during.status == "Scheduled"
        await csms.wait_until(lambda: csms.assigned_transaction_ids)
        await csms.remote_stop(STATION, csms.assigned_transaction_ids[-1])
        await csms.wait_for("StopTransaction", after=mark)
        # The scheduled change takes effect once the transaction has ended.
        await csms.wait_for("StatusNotification", status_is("Unavailable"), after=csms.received.index(charging))


async def test_change_availability_201(tmp_path: Path) -> None:
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))):
            await csms.wait_for("StatusNotification", status_is("Available"))
            side = csms.stations[STATION]
            result = await side.call(
                call201.ChangeAvailability(operational_status="Inoperative", evse={"id": 1}), suppress=False
            )
            assert result.status == "Accepted"
            await csms.wait_for("StatusNotification", status_is("Unavailable"))
            assert await csms.request_start(STATION, "TAG") == "Rejected"
            assert csms.violations == []
    finally:
        await csms.stop()


async def test_trigger_message_16(tmp_path: Path, csms: LocalCsms) -> None:
    async with running_station(parse_config(config_for(tmp_path, csms.url))):
        await csms.wait_for("StatusNotification", status_is("Available"))
        side = csms.stations[STATION]
        for message in ("Heartbeat", "StatusNotification", "MeterValues"):
            mark = len(csms.received)
            result = await side.call(call.TriggerMessage(requested_message=message), suppress=False)
            assert result.status == "Accepted", message
            await csms.wait_for(message, after=mark, timeout=10)
        # §4.4: Idle, only ever sent when triggered, while no diagnostics upload runs (tests/logupload/).
        mark = len(csms.received)
        result = await side.call(call.TriggerMessage(requested_message="DiagnosticsStatusNotification"), suppress=False)
        assert result.status == "Accepted"
        assert (await csms.wait_for("DiagnosticsStatusNotification", after=mark, timeout=10)).payload == {
            "status": "Idle"
        }


async def test_reset_ends_the_transaction_then_exits_75(
    tmp_path: Path, csms: LocalCsms, cable: VirtualNullModem, processes: list[Process]
) -> None:
    meter = Process(["meter-sim", "--port", cable.path_b, "--state", str(tmp_path / "m.json")], tmp_path / "m.log")
    processes.append(meter)
    daemon = Process(["run", "--config", str(station_config(tmp_path, csms.url, cable.path_a))], tmp_path / "d.log")
    processes.append(daemon)
    await csms.wait_for("StatusNotification", status_is("Available"), timeout=30)
    assert await csms.remote_start("CP-TEST-1", "TAG-RESET") == "Accepted"
    await csms.wait_for("StatusNotification", status_is("Charging"), timeout=30)
    result = await csms.stations["CP-TEST-1"].call(call.Reset(type="Soft"), suppress=False)
    assert result.status == "Accepted"
    stop = await csms.wait_for("StopTransaction", timeout=30)
    assert stop.payload["reason"] == "SoftReset" and stop.payload["transactionData"]
    assert await daemon.terminate(signal.SIGCONT, timeout=30) == 75, daemon.log()
    await meter.terminate()


def _kinds_after(csms: LocalCsms, mark: int) -> list[int]:
    """The message types (2 CALL, 3 CALLRESULT, 4 CALLERROR) of the frames the station sent from `mark` on."""
    return [json.loads(frame)[0] for _, frame in csms.frames[mark:]]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_remote_start_and_stop_are_answered_before_anything_they_set_off(tmp_path: Path, version: str) -> None:
    """The answer to RemoteStart/RemoteStopTransaction (RequestStart/RequestStopTransaction) reaches the CSMS before
    the StatusNotification, StartTransaction, TransactionEvent or StopTransaction the request set off, as every test
    case lists them (TC_K_37_CS steps 2 then 3 and 5: "The Charging Station responds with a
    RequestStartTransactionResponse", then "sends" what follows; 1.6 §5.11, §5.12): the station lets the meter work
    begin before it answers (the answer goes while the meter's first frame is on the line), and its own CALLs wait
    for that answer."""
    csms = await LocalCsms(subprotocols=(f"ocpp{version}",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, version))):
            await csms.wait_for("StatusNotification", status_is("Available"))
            await csms.wait_until(lambda: not csms.received or csms.received[-1].action == "StatusNotification")
            mark, frames = len(csms.received), len(csms.frames)
            assert await csms.start_session(STATION, "TAG-ORDER") == "Accepted"
            _, transaction_id = await csms.wait_session_started(STATION, after=mark)
            kinds = _kinds_after(csms, frames)
            assert kinds[0] == 3 and 2 in kinds  # the answer first, then the CALLs it set off
            await csms.wait_for("StatusNotification", status_is("Charging" if version == "1.6" else "Occupied"))
            await asyncio.sleep(0.3)  # whatever the start set off is through
            mark, frames = len(csms.received), len(csms.frames)
            assert await csms.stop_session(STATION, transaction_id) == "Accepted"
            await csms.wait_session_ended(STATION, after=mark)
            kinds = _kinds_after(csms, frames)
            assert kinds[0] == 3 and 2 in kinds
            assert csms.violations == []
    finally:
        await csms.stop()
