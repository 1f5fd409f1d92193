"""OCPP with two EVSEs (issue 17 item 4): each connector (1.6) or EVSE (2.0.1) is addressed on its own, and the
station as a whole too. A real LocalCsms on loopback, two simulated meters on one virtual line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ocpp.v16 import call
from ocpp.v201 import call as call201

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

STATION = "CP-EVSES"


def config(tmp_path: Path, url: str, version: str) -> Any:
    return parse_config(
        {
            "station": {"id": STATION},
            "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
            "bus": {"line": {"transport": "simulated", "baudrate": 115200}},
            "evse": [
                {
                    "id": n,
                    "meter": {
                        "bus": "line",
                        "device_id": n,
                        "simulator": {"state": str(tmp_path / f"m{n}.json"), "signing_time": 0.05},
                    },
                }
                for n in (1, 2)
            ],
            "storage": {"path": str(tmp_path / "s.db")},
        }
    )


def status(p: dict[str, Any]) -> Any:
    return p.get("status") or p.get("connectorStatus")


def where(p: dict[str, Any]) -> Any:
    return p.get("connectorId") if "status" in p else p.get("evseId")


async def test_change_availability_per_connector_and_for_the_station_16(tmp_path: Path) -> None:
    """1.6 §5.2: ChangeAvailability for connector 2 changes connector 2 only; connector 0 is the whole Charge Point;
    an unknown connector is Rejected. §4.9: a StatusNotification per connector that changed."""
    csms = await LocalCsms().start()
    try:
        async with running_station(config(tmp_path, csms.url, "1.6")) as station:
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available" and p["connectorId"] == 2)
            side = csms.stations[STATION]
            mark = len(csms.received)
            result = await side.call(call.ChangeAvailability(connector_id=2, type="Inoperative"), suppress=False)
            assert result.status == "Accepted"
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "Unavailable", after=mark)
            changed = [m.payload for m in csms.received[mark:] if m.action == "StatusNotification"]
            assert [(p["connectorId"], p["status"]) for p in changed] == [(2, "Unavailable")]
            assert station.runtime.core.status_of(1).value == "Available"
            bad = await side.call(call.ChangeAvailability(connector_id=3, type="Inoperative"), suppress=False)
            assert bad.status == "Rejected"
            mark = len(csms.received)
            await side.call(call.ChangeAvailability(connector_id=0, type="Inoperative"), suppress=False)
            await csms.wait_for(
                "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Unavailable", after=mark
            )
            assert await csms.remote_start(STATION, "TAG", connector_id=None) == "Rejected"  # nothing available
            # §5.17: TriggerMessage StatusNotification for connector 2 reports connector 2 only.
            mark = len(csms.received)
            assert await csms.trigger_message(STATION, "StatusNotification", 2) == "Accepted"
            await csms.wait_for("StatusNotification", after=mark)
            await asyncio.sleep(0.5)  # time for a wrong second report to arrive
            triggered = [m.payload for m in csms.received[mark:] if m.action == "StatusNotification"]
            assert [p["connectorId"] for p in triggered] == [2]
            # NumberOfConnectors and a key per connector's meter (OCA app note MeterPublicKey<connectorId>).
            keys = await csms.get_configuration(STATION, ["NumberOfConnectors", "MeterPublicKey1", "MeterPublicKey2"])
            assert keys["NumberOfConnectors"] == "2"
            assert keys["MeterPublicKey1"] != keys["MeterPublicKey2"]
            assert (await csms.get_configuration(STATION, ["MeterPublicKey3"])) == {}
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_remote_start_without_a_connector_takes_the_first_available_16(tmp_path: Path) -> None:
    """1.6 §5.11: without connectorId the Charge Point chooses; it takes the first Available connector, so with
    connector 1 busy the second start goes to connector 2. Triggered MeterValues of connector 2 name it (§5.17)."""
    csms = await LocalCsms().start()
    try:
        async with running_station(config(tmp_path, csms.url, "1.6")):
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available" and p["connectorId"] == 2)
            assert await csms.remote_start(STATION, "TAG-1", connector_id=None) == "Accepted"
            first = await csms.wait_for("StartTransaction")
            assert await csms.remote_start(STATION, "TAG-2", connector_id=None) == "Accepted"
            second = await csms.wait_for("StartTransaction", lambda p: p["idTag"] == "TAG-2")
            assert (first.payload["connectorId"], second.payload["connectorId"]) == (1, 2)
            assert await csms.remote_start(STATION, "TAG-3", connector_id=None) == "Rejected"
            mark = len(csms.received)
            assert await csms.trigger_message(STATION, "MeterValues", 2) == "Accepted"
            values = await csms.wait_for("MeterValues", after=mark)
            assert values.payload["connectorId"] == 2
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_change_availability_per_evse_and_for_the_station_201(tmp_path: Path) -> None:
    """2.0.1 G03: ChangeAvailability of EVSE 2 changes EVSE 2 only (G03.FR.01), an unknown EVSE is Rejected; G04:
    without an evse, the whole Charging Station. F06: TriggerMessage StatusNotification / MeterValues for EVSE 2
    answers for EVSE 2 only."""
    csms = await LocalCsms().start()
    try:
        async with running_station(config(tmp_path, csms.url, "2.0.1")):
            await csms.wait_for("StatusNotification", lambda p: status(p) == "Available" and where(p) == 2)
            side = csms.stations[STATION]
            mark = len(csms.received)
            result = await side.call(
                call201.ChangeAvailability(operational_status="Inoperative", evse={"id": 2}), suppress=False
            )
            assert result.status == "Accepted"
            await csms.wait_for("StatusNotification", lambda p: status(p) == "Unavailable", after=mark)
            changed = [m.payload for m in csms.received[mark:] if m.action == "StatusNotification"]
            assert [(p["evseId"], p["connectorId"], status(p)) for p in changed] == [(2, 1, "Unavailable")]
            bad = await side.call(
                call201.ChangeAvailability(operational_status="Inoperative", evse={"id": 3}), suppress=False
            )
            assert bad.status == "Rejected"
            mark = len(csms.received)
            await side.call(call201.ChangeAvailability(operational_status="Inoperative"), suppress=False)
            await csms.wait_for(
                "StatusNotification", lambda p: where(p) == 1 and status(p) == "Unavailable", after=mark
            )
            assert await csms.request_start(STATION, "TAG", evse_id=None) == "Rejected"
            await side.call(call201.ChangeAvailability(operational_status="Operative"), suppress=False)
            mark = len(csms.received)
            assert await csms.trigger_message(STATION, "StatusNotification", 2) == "Accepted"
            await csms.wait_for("StatusNotification", lambda p: where(p) == 2, after=mark)
            assert await csms.trigger_message(STATION, "MeterValues", 2) == "Accepted"
            values = await csms.wait_for("MeterValues", after=mark)
            assert values.payload["evseId"] == 2
            triggered = [m.payload for m in csms.received[mark:] if m.action in ("StatusNotification", "MeterValues")]
            assert all(where(p) == 2 for p in triggered)
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_the_device_model_lists_each_evse_connector_and_meter_key_201(tmp_path: Path) -> None:
    """2.0.1 B07 (GetBaseReport FullInventory) and Part 2 §2.13 referenced components: EVSE 1 and 2 with their
    Connector; FiscalMetering.PublicKey per EVSE, each its own meter's key."""
    csms = await LocalCsms().start()
    try:
        async with running_station(config(tmp_path, csms.url, "2.0.1")):
            await csms.wait_for("StatusNotification", lambda p: where(p) == 2)
            assert await csms.get_base_report(STATION, 7) == "Accepted"
            await csms.wait_until(
                lambda: any(not m.payload.get("tbc") for m in csms.messages("NotifyReport")), timeout=20
            )
            data = [d for m in csms.messages("NotifyReport") for d in m.payload.get("reportData", [])]
            components = {(d["component"]["name"], str(d["component"].get("evse"))) for d in data}
            for n in (1, 2):
                assert ("EVSE", str({"id": n})) in components
                assert ("Connector", str({"id": n, "connectorId": 1})) in components
            keys = {
                d["component"]["evse"]["id"]: d["variableAttribute"][0]["value"]
                for d in data
                if d["component"]["name"] == "FiscalMetering" and d["variable"]["name"] == "PublicKey"
            }
            assert sorted(keys) == [1, 2] and keys[1] != keys[2]
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_the_technician_reads_each_evses_meter(tmp_path: Path) -> None:
    """`station diag meter --evse N` / `meter-test --evse N`: each EVSE's own meter (its serial and key)."""
    from station.diag.server import meter_report, meter_test, status_report
    from station.diag.webpage import LiveSeries, render_page

    csms = await LocalCsms().start()
    try:
        async with running_station(config(tmp_path, csms.url, "1.6")) as station:
            await csms.wait_for("StatusNotification", lambda p: where(p) == 2)
            one, two = await meter_report(station, 1), await meter_report(station, 2)
            assert (one["evse_id"], two["evse_id"]) == (1, 2)
            assert one["serial"] != two["serial"] and one["public_key"] != two["public_key"]
            test = await meter_test(station, 2)
            assert test["ok"] and test["serial"] == two["serial"]
            meters = status_report(station)["meters"]
            assert [(m["evse_id"], m["device_id"], m["link"]) for m in meters] == [(1, 1, "up"), (2, 2, "up")]
            page = render_page(station, LiveSeries())  # the web page's first paint lists both meters
            assert "<td>line / 1</td>" in page and "<td>line / 2</td>" in page
            assert two["serial"] in page
    finally:
        await csms.stop()
