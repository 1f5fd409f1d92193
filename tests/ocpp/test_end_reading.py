"""The end reading of a signed record, one rule for every driver and both adapters: OCMF `TX` E, and also L, R, A or
P (a transaction the meter ended itself: loss of power, error, ...). Each meter model on its own simulator over a pty
pair, against the real WebSocket CSMS."""

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
from station.meter.models import MODELS
from station.meter.records import end_wh

STATION = "CP-END"


def config_for(tmp_path: Path, url: str, model: str, version: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "model": model,
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "power_w": 350000, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


def test_every_end_code_is_the_end_reading() -> None:
    """OCMF (Table "TX"): E end, L end by loss of power... each of E, L, R, A, P closes a transaction."""
    for code in ocmf.END_CODES:
        text = 'OCMF|{"FV":"1.0","PG":"T1","RD":[{"TX":"B","RV":1.000,"RU":"kWh"},{"TX":"' + code
        text += '","RV":2.345,"RU":"kWh"}]}|{"SD":"00"}'
        assert end_wh(text) == 2345, code


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_meter_stop_from_a_record_that_ends_with_r(tmp_path: Path, csms: LocalCsms, model: str) -> None:
    """1.6 StopTransaction.req meterStop (§6.49) is the record's end reading, whatever its TX: a record ending with
    TX=R sent meterStop 0 before (records.py read TX=E only)."""
    async with running_station(parse_config(config_for(tmp_path, csms.url, model, "1.6"))) as station:
        station.simulator(1).end_tx = "R"
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        assert await csms.remote_start(STATION, "TAG-R") == "Accepted"
        _, tx_id = await csms.wait_session_started(STATION)
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        assert await csms.remote_stop(STATION, int(tx_id)) == "Accepted"
        stop = await csms.wait_session_ended(STATION)
    texts = [
        base64.b64decode(json.loads(s["value"])["signedMeterData"]).decode()
        for mv in stop.payload["transactionData"]
        for s in mv["sampledValue"]
        if s.get("format") == "SignedData"
    ]
    [end] = [r.end for r in map(ocmf.parse, texts) if r.end is not None]
    assert end.tx == "R"
    assert stop.payload["meterStop"] == int(end.value * 1000) > 0


async def test_transaction_end_value_from_a_record_that_ends_with_l(tmp_path: Path) -> None:
    """2.0.1 TransactionEvent(Ended): the Transaction.End sampledValue's value is the record's end reading (E06.FR.11)
    also for TX=L."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "smartme", "2.0.1"))) as station:
            station.simulator(1).end_tx = "L"
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            assert await csms.request_start(STATION, "TAG-L") == "Accepted"
            _, tx_id = await csms.wait_session_started(STATION)
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Occupied")
            assert await csms.request_stop(STATION, tx_id) == "Accepted"
            ended = (await csms.wait_session_ended(STATION)).payload
    finally:
        await csms.stop()
    [sample] = ended["meterValue"][-1]["sampledValue"]
    record = ocmf.parse(base64.b64decode(sample["signedMeterValue"]["signedMeterData"]).decode())
    assert record.end is not None and record.end.tx == "L"
    assert sample["value"] == pytest.approx(float(record.end.value) * 1000) and sample["value"] > 0
    assert csms.violations == []
