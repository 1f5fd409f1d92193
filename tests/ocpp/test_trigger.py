"""TriggerMessage to the letter in both versions, over the real WebSocket: 1.6 StatusNotification for the Charge
Point itself and every connector, MeterValues with exactly the configured measurands; 2.0.1 MeterValues and
TransactionEvent for an EVSE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocpp.v16 import call

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

STATION = "CP-TRIG"


def config_for(tmp_path: Path, url: str, version: str = "1.6") -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "power_w": 11000, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


async def test_status_notification_for_the_charge_point_and_each_connector(tmp_path: Path, csms: LocalCsms) -> None:
    """1.6 §5.17: "A request for a statusNotification for connectorId 0 is a request for the status of the Charge
    Point. A request for a statusNotification without connectorId is a request for multiple statusNotifications: the
    notification for the Charge Point itself and a notification for each of its connectors." Connector 0 only knows
    Available, Unavailable and Faulted (§4.9)."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))):
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        mark = len(csms.received)
        assert await csms.trigger_message(STATION, "StatusNotification") == "Accepted"
        await csms.wait_until(lambda: len(csms.messages("StatusNotification")) >= 3)
        triggered = [m.payload for m in csms.received[mark:] if m.action == "StatusNotification"]
        assert [(p["connectorId"], p["status"]) for p in triggered] == [(0, "Available"), (1, "Available")]
        mark = len(csms.received)
        assert await csms.trigger_message(STATION, "StatusNotification", 0) == "Accepted"
        only = await csms.wait_for("StatusNotification", after=mark)
        assert only.payload["connectorId"] == 0
        assert await csms.trigger_message(STATION, "StatusNotification", 9) == "Rejected"
        # All connectors inoperative: the Charge Point itself is Unavailable.
        changed = await csms.stations[STATION].call(
            call.ChangeAvailability(connector_id=0, type="Inoperative"), suppress=False
        )
        assert changed.status == "Accepted"
        mark = len(csms.received)
        assert await csms.trigger_message(STATION, "StatusNotification", 0) == "Accepted"
        unavailable = await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 0, after=mark)
        assert unavailable.payload["status"] == "Unavailable"


async def test_meter_values_report_exactly_the_configured_measurands(tmp_path: Path, csms: LocalCsms) -> None:
    """1.6 §5.17 with errata §3.46: a triggered MeterValues.req "SHALL return the most recent measurements for all
    measurands configured in configuration key MeterValuesSampledData" - and only those. §3.16.4: a measurand the
    station cannot measure is Rejected when set, and changes nothing; what it accepts (Voltage, per phase: §3.16.3)
    it delivers."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))):
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        key = "MeterValuesSampledData"
        assert await csms.change_configuration(STATION, key, "Energy.Active.Import.Register,SoC") == "Rejected"
        assert (await csms.get_configuration(STATION, [key]))[key] == "Energy.Active.Import.Register"
        assert await csms.change_configuration(STATION, key, "Voltage,Energy.Active.Import.Register") == "Accepted"
        for target in (None, 1):
            mark = len(csms.received)
            assert await csms.trigger_message(STATION, "MeterValues", target) == "Accepted"
            values = await csms.wait_for("MeterValues", after=mark)
            assert values.payload["connectorId"] == 1 and "transactionId" not in values.payload
            sampled = values.payload["meterValue"][0]["sampledValue"]
            assert [(s["measurand"], s.get("phase"), s["unit"]) for s in sampled] == [
                ("Voltage", "L1-N", "V"),
                ("Voltage", "L2-N", "V"),
                ("Voltage", "L3-N", "V"),
                ("Energy.Active.Import.Register", None, "Wh"),
            ]
            assert all(s["context"] == "Trigger" for s in sampled)
            assert float(sampled[0]["value"]) > 100  # a real voltage reading from the meter
        assert await csms.trigger_message(STATION, "MeterValues", 0) == "Rejected"  # no main meter apart


async def test_meter_values_and_transaction_event_for_an_evse_201(tmp_path: Path) -> None:
    """F06.FR.06 / TC_F_11_CS / TC_F_12_CS: MeterValues for an EVSE (or each EVSE when none is given, F06.FR.11)
    with context Trigger and the AlignedDataCtrlr.Measurands; F06.FR.07 / TC_F_13_CS: TransactionEvent with
    triggerReason Trigger, chargingState, and meterValue of the TxUpdatedMeasurands with context Trigger, in the
    transaction's sequence. Not NotImplemented (F06.FR.08 is for messages not implemented)."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))):
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            for target in (1, None):
                mark = len(csms.received)
                assert await csms.trigger_message(STATION, "MeterValues", target) == "Accepted"
                values = await csms.wait_for("MeterValues", after=mark)
                assert values.payload["evseId"] == 1
                [sampled] = values.payload["meterValue"][0]["sampledValue"]
                assert sampled["context"] == "Trigger" and sampled["measurand"] == "Energy.Active.Import.Register"
            assert await csms.trigger_message(STATION, "MeterValues", 7) == "Rejected"
            assert await csms.trigger_message(STATION, "TransactionEvent", 1) == "Rejected"  # no transaction
            assert await csms.request_start(STATION, "TAG-T") == "Accepted"
            started, tx_id = await csms.wait_session_started(STATION)
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Occupied")
            assert await csms.trigger_message(STATION, "TransactionEvent", 1) == "Accepted"
            event = await csms.wait_for("TransactionEvent", lambda p: p["triggerReason"] == "Trigger")
            assert event.payload["eventType"] == "Updated"
            assert event.payload["transactionInfo"] == {"transactionId": tx_id, "chargingState": "Charging"}
            assert event.payload["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
            assert event.payload["seqNo"] == started.payload["seqNo"] + 1
            assert await csms.trigger_message(STATION, "SignV2GCertificate") == "NotImplemented"  # no ISO 15118
            assert await csms.request_stop(STATION, tx_id) == "Accepted"
            await csms.wait_session_ended(STATION)
    finally:
        await csms.stop()
    assert csms.violations == []
