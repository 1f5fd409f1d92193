"""Periodic and clock-aligned meter values over a real WebSocket: MeterValues with the transactionId in 1.6,
TransactionEvent(Updated) in the transaction's sequence in 2.0.1, and MeterValues without a transaction."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.ocpp.signed_value import parse_oca_public_key

STATION = "CP-MV"


def config_for(tmp_path: Path, url: str, version: str = "1.6") -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "power_w": 36000, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


async def test_sampled_meter_values_16(tmp_path: Path, csms: LocalCsms) -> None:
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        measurands = "Energy.Active.Import.Register,Power.Active.Import"
        assert await csms.change_configuration(STATION, "MeterValuesSampledData", measurands) == "Accepted"
        assert await csms.change_configuration(STATION, "MeterValueSampleInterval", "1") == "Accepted"
        assert await csms.change_configuration(STATION, "MeterValueSampleInterval", "-1") == "Rejected"
        assert csms.messages("MeterValues") == []  # sampled values belong to transactions
        assert await csms.remote_start(STATION, "TAG-MV") == "Accepted"
        _, tx_id = await csms.wait_session_started(STATION)
        first = await csms.wait_for("MeterValues", timeout=10)
        second = await csms.wait_for("MeterValues", after=csms.received.index(first) + 1, timeout=10)
        for message in (first, second):
            assert message.payload["transactionId"] == int(tx_id) and message.payload["connectorId"] == 1
            sampled = message.payload["meterValue"][0]["sampledValue"]
            assert {s["measurand"] for s in sampled} == {"Energy.Active.Import.Register", "Power.Active.Import"}
            assert all(s["context"] == "Sample.Periodic" for s in sampled)
        energy = [int(m.payload["meterValue"][0]["sampledValue"][0]["value"]) for m in (first, second)]
        assert energy[1] >= energy[0]
        await csms.remote_stop(STATION, int(tx_id))
        stop = await csms.wait_session_ended(STATION)
        assert stop.payload["meterStop"] >= energy[1]
        await station.runtime.idle()
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        count = len(csms.messages("MeterValues"))
        assert await csms.change_configuration(STATION, "MeterValueSampleInterval", "0") == "Accepted"
        assert len(csms.messages("MeterValues")) == count


async def test_clock_aligned_values_without_a_transaction_16(tmp_path: Path, csms: LocalCsms) -> None:
    async with running_station(parse_config(config_for(tmp_path, csms.url))):
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        assert await csms.change_configuration(STATION, "ClockAlignedDataInterval", "1") == "Accepted"
        aligned = await csms.wait_for("MeterValues", timeout=10)
        assert "transactionId" not in aligned.payload
        assert aligned.payload["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"


async def test_transaction_event_updated_201(tmp_path: Path) -> None:
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))):
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            results = await csms.set_variables(
                STATION,
                [
                    {
                        "component": {"name": "SampledDataCtrlr"},
                        "variable": {"name": "TxUpdatedInterval"},
                        "attribute_value": "1",
                    }
                ],
            )
            assert results[0]["attribute_status"] == "Accepted"
            assert await csms.request_start(STATION, "TAG-U") == "Accepted"
            started, tx_id = await csms.wait_session_started(STATION)
            updated = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Updated", timeout=10)
            assert updated.payload["triggerReason"] == "MeterValuePeriodic"
            assert updated.payload["transactionInfo"]["transactionId"] == tx_id
            assert await csms.request_stop(STATION, tx_id) == "Accepted"
            ended = await csms.wait_session_ended(STATION)
            events = [
                m.payload
                for m in csms.messages("TransactionEvent")
                if m.payload["transactionInfo"]["transactionId"] == tx_id
            ]
            seq = [e["seqNo"] for e in events]
            assert seq == list(range(seq[0], seq[0] + len(seq)))  # no gap: the CSMS can tell it has them all
            assert events[0] is started.payload and events[-1] is ended.payload
            assert csms.violations == []
    finally:
        await csms.stop()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_signed_aligned_values_carry_the_meters_fiscal_reading(tmp_path: Path, version: str) -> None:
    """smart-me signs its registers every 15 minutes outside transactions: with AlignedDataSignReadings on,
    clock-aligned values carry the latest of those records (OCMF PG F<n>), which verifies with the meter's key."""
    csms = await LocalCsms(subprotocols=(f"ocpp{version}",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, version))) as station:
            station.simulator(1).fiscal_interval = 1.0  # the real meter: 900 s
            await csms.wait_for("BootNotification")
            await csms.wait_until(lambda: station.runtime.core.accepted_by_csms)
            if version == "1.6":
                assert await csms.change_configuration(STATION, "AlignedDataSignReadings", "true") == "Accepted"
                assert await csms.change_configuration(STATION, "ClockAlignedDataInterval", "1") == "Accepted"
            else:
                results = await csms.set_variables(
                    STATION,
                    [
                        {"component": {"name": name}, "variable": {"name": var}, "attribute_value": value}
                        for name, var, value in (
                            ("AlignedDataCtrlr", "SignReadings", "true"),
                            ("AlignedDataCtrlr", "Interval", "1"),
                        )
                    ],
                )
                assert [r["attribute_status"] for r in results] == ["Accepted", "Accepted"]
            key = parse_oca_public_key(await csms.meter_public_key(STATION))
            records = []
            for _ in range(2):
                after = len(csms.received)
                values = await csms.wait_for("MeterValues", after=after, timeout=10)
                sampled = values.payload["meterValue"][0]["sampledValue"]
                if version == "1.6":
                    [signed] = [s for s in sampled if s.get("format") == "SignedData"]
                    assert signed["context"] == "Sample.Clock"
                    data = json.loads(signed["value"])["signedMeterData"]
                else:
                    data = sampled[0]["signedMeterValue"]["signedMeterData"]
                records.append(ocmf.parse(base64.b64decode(data).decode()))
            for record in records:
                assert record.pagination.startswith("F") and ocmf.verify(record, key).valid
                assert [r.tx for r in record.readings] == [None, None]  # fiscal readings carry no TX
                assert {r.obis for r in record.readings} == {"1-b:1.8.0", "1-b:2.8.0"}
    finally:
        await csms.stop()
    assert csms.violations == []
