"""Rules of the wire in both versions, against the real WebSocket CSMS: every timestamp the station sends has at most
three decimals (found with CitrineOS), and the reconnect back-off starts over after every connection loss."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import structlog

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

STATION = "CP-WIRE"
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:\d{2})$")
LOOKS_LIKE_A_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")


def config_for(tmp_path: Path, url: str, version: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_every_timestamp_of_a_whole_session_has_at_most_three_decimals(tmp_path: Path, version: str) -> None:
    """2.0.1 Part 2 §2.1 dateTime: "at most 3 decimal places" (CitrineOS refused every StatusNotification,
    TransactionEvent, NotifyReport and SecurityEventNotification with six). One formatter for both versions: every
    frame of a whole session (boot, statuses, security events, heartbeat, start, meter values, stop, report or
    configuration) is checked."""
    csms = await LocalCsms(subprotocols=(f"ocpp{version}",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, version))) as station:
            await csms.wait_for("StatusNotification")
            await csms.wait_for("SecurityEventNotification")
            await csms.trigger_message(STATION, "Heartbeat")
            await csms.wait_for("Heartbeat")
            if version == "1.6":
                assert await csms.change_configuration(STATION, "MeterValueSampleInterval", "1") == "Accepted"
                await csms.get_configuration(STATION)
            else:
                await csms.set_variables(
                    STATION,
                    [
                        {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": name}, "attribute_value": "1"}
                        for name in ("TxUpdatedInterval", "TxEndedInterval")
                    ],
                )
                assert await csms.get_base_report(STATION, 3) == "Accepted"
                await csms.wait_for("NotifyReport", lambda p: not p.get("tbc"))
            assert await csms.start_session(STATION, "TAG-TIME") == "Accepted"
            _, tx_id = await csms.wait_session_started(STATION)
            await csms.wait_until(lambda: len(csms.messages("MeterValues") + csms.messages("TransactionEvent")) >= 2)
            await csms.trigger_message(STATION, "MeterValues")
            await csms.wait_for("MeterValues", lambda p: "Trigger" in json.dumps(p))
            assert await csms.stop_session(STATION, tx_id) == "Accepted"
            await csms.wait_session_ended(STATION)
            await csms.wait_until(lambda: station.store.outbox_depth() == 0)
    finally:
        await csms.stop()
    times = [s for _, raw in csms.frames for s in strings(json.loads(raw)) if LOOKS_LIKE_A_TIME.match(s)]
    assert len(times) > 10
    wrong = [t for t in times if not DATE_TIME.match(t)]
    assert wrong == [], wrong[:5]
    assert csms.violations == []


async def test_the_back_off_starts_over_after_every_connection_loss(tmp_path: Path) -> None:
    """2.0.1 Part 4 §5.3 with errata 2025-04 §4.12: the first reconnection attempt after a loss waits
    RetryBackOffWaitMinimum (+ random up to RetryBackOffRandomRange), each failed attempt doubles it at most
    RetryBackOffRepeatTimes times, and "After a successful connection the backoff wait timer SHALL be reset to
    RetryBackOffWaitMinimum seconds" - also when that connection later ends with a loss. Found in the field (item 15):
    4 s instead of 2 s after the second loss."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    port = csms.port
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))) as station:
            await csms.wait_for("StatusNotification")
            results = await csms.set_variables(
                STATION,
                [
                    {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": name}, "attribute_value": value}
                    for name, value in (
                        ("RetryBackOffWaitMinimum", "1"),
                        ("RetryBackOffRandomRange", "0"),
                        ("RetryBackOffRepeatTimes", "1"),
                    )
                ],
            )
            assert {r["attribute_status"] for r in results} == {"Accepted"}
            with structlog.testing.capture_logs() as logs:
                for loss in range(2):  # two losses, each followed by a successful reconnection
                    await csms.drop_connections()
                    await csms.wait_until(lambda n=loss: csms.connections == n + 2, timeout=10)
                waits_after_losses = [e["in_s"] for e in logs if e["event"] == "reconnecting"]
                # Then the CSMS is gone: failed attempts double the wait, once (RepeatTimes 1), then keep it.
                await csms.stop()
                await csms.drop_connections()
                await csms.wait_until(lambda: len([e for e in logs if e["event"] == "reconnecting"]) >= 5, timeout=20)
                failing = [e["in_s"] for e in logs if e["event"] == "reconnecting"][2:5]
            assert waits_after_losses == [1.0, 1.0]
            assert failing == [1.0, 2.0, 2.0]
            csms.port = port
            await csms.start()
            await csms.wait_until(lambda: station.connection.state.connected, timeout=20)
    finally:
        await csms.stop()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_no_measurand_configured_sends_no_empty_meter_value(tmp_path: Path, version: str) -> None:
    """An empty measurand list (1.6 MeterValuesSampledData / 2.0.1 SampledDataCtrlr.TxUpdatedMeasurands, both
    allowed empty) with a sample interval: 1.6 sends no MeterValues.req (a MeterValue without a reading says nothing),
    2.0.1 leaves the optional meterValue out of TransactionEvent(Updated) (its sampledValue needs at least one item,
    TransactionEventRequest schema); the outbox drains and every frame passes the schemas."""
    csms = await LocalCsms(subprotocols=(f"ocpp{version}",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, version))) as station:
            await csms.wait_for("StatusNotification")
            if version == "1.6":
                assert await csms.change_configuration(STATION, "MeterValuesSampledData", "") == "Accepted"
                assert await csms.change_configuration(STATION, "MeterValueSampleInterval", "1") == "Accepted"
            else:
                results = await csms.set_variables(
                    STATION,
                    [
                        {
                            "component": {"name": "SampledDataCtrlr"},
                            "variable": {"name": name},
                            "attribute_value": value,
                        }
                        for name, value in (("TxUpdatedMeasurands", ""), ("TxUpdatedInterval", "1"))
                    ],
                )
                assert {r["attribute_status"] for r in results} == {"Accepted"}
            assert await csms.start_session(STATION, "TAG-EMPTY") == "Accepted"
            _, tx_id = await csms.wait_session_started(STATION)
            [running] = station.runtime.core.running_transactions()
            await csms.wait_until(lambda: len(station.store.samples(running.ref, "periodic")) >= 2, timeout=10)
            assert await csms.stop_session(STATION, tx_id) == "Accepted"
            await csms.wait_session_ended(STATION)
            await csms.wait_until(lambda: station.store.outbox_depth() == 0)
            assert station.store.failed_messages() == []
    finally:
        await csms.stop()
    assert csms.messages("MeterValues") == []
    updated = [m.payload for m in csms.messages("TransactionEvent") if m.payload["eventType"] == "Updated"]
    assert all("meterValue" not in p for p in updated)
    assert csms.violations == []
