"""A meter that stops answering makes the connector Faulted, told to the CSMS in its version's words, and the station
recovers by itself when the meter answers again."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

pytestmark = pytest.mark.slow  # waits out the meter's real link timeouts


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_silent_meter_faults_the_connector_and_recovers(tmp_path: Path, version: str) -> None:
    csms = await LocalCsms().start()
    raw = {
        "station": {"id": "CP-FAULT"},
        "csms": {"url": csms.url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }

    def status(p: dict[str, object]) -> object:
        return p.get("status") or p.get("connectorStatus")

    try:
        async with running_station(parse_config(raw)) as station:
            await csms.wait_for("StatusNotification", lambda p: status(p) == "Available")
            station.runtime.meters[1].monitor_interval = 0.2
            station.simulator(1).faults.mute = True
            faulted = await csms.wait_for("StatusNotification", lambda p: status(p) == "Faulted", timeout=30)
            if version == "1.6":
                assert faulted.payload["errorCode"] == "PowerMeterFailure"
                assert await csms.remote_start("CP-FAULT", "TAG") == "Rejected"
            else:
                event = await csms.wait_for("NotifyEvent")
                data = event.payload["eventData"][0]
                assert data["component"]["name"] == "FiscalMetering" and data["techCode"] == "PowerMeterFailure"
                assert await csms.request_start("CP-FAULT", "TAG") == "Rejected"
            station.simulator(1).faults.mute = False
            mark = csms.received.index(faulted)
            await csms.wait_for("StatusNotification", lambda p: status(p) == "Available", after=mark, timeout=30)
    finally:
        await csms.stop()
    assert csms.violations == []
