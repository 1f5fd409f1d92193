"""A whole signed OCPP session on every meter model the station knows, each on its own simulator over a pty pair:
the model only changes the driver, never what the CSMS receives."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.demo.session import extract_signed_record
from station.meter import ocmf
from station.meter.models import MODELS
from station.ocpp.signed_value import parse_oca_public_key

pytestmark = pytest.mark.slow  # whole sessions per meter model


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_signed_session_per_model(tmp_path: Path, csms: LocalCsms, model: str) -> None:
    raw = {
        "station": {"id": "CP-MODEL"},
        "csms": {"url": csms.url, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "model": model,
            "transport": "simulated",
            "simulator": {"signing_time": 0.2, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }
    async with running_station(parse_config(raw)):
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        assert await csms.remote_start("CP-MODEL", "TAG-M") == "Accepted"
        start, tx_id = await csms.wait_session_started("CP-MODEL")
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        assert await csms.stop_session("CP-MODEL", tx_id) == "Accepted"
        stop = await csms.wait_session_ended("CP-MODEL")
        key = parse_oca_public_key(await csms.meter_public_key("CP-MODEL"))
    texts = [
        json.loads(s["value"])["signedMeterData"]
        for mv in stop.payload["transactionData"]
        for s in mv["sampledValue"]
        if s.get("format") == "SignedData"
    ]
    records = [ocmf.parse(base64.b64decode(t).decode()) for t in texts]
    assert records and all(ocmf.verify(r, key).valid for r in records)
    assert all(r.identification == "TAG-M" for r in records)
    begin = next(r.begin for r in records if r.begin is not None)
    end = next(r.end for r in records if r.end is not None)
    assert int(begin.value * 1000) == start.payload["meterStart"]
    assert int(end.value * 1000) == stop.payload["meterStop"]
    end_text, _ = extract_signed_record(stop.payload)
    assert ocmf.parse(end_text).end is not None  # the demo's reader picks the end record


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_signed_start_value_from_a_meter_that_signs_at_the_start(
    tmp_path: Path, csms: LocalCsms, version: str
) -> None:
    """BAUER signs a begin record at the start: with SampledDataSignStartedReadings on it goes out right away (1.6: a
    MeterValues after StartTransaction; 2.0.1: in TransactionEvent Started), and it verifies."""
    raw = {
        "station": {"id": "CP-BEGIN"},
        "csms": {"url": csms.url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "model": "bauer-bsm-ws36a",
            "transport": "simulated",
            "simulator": {"signing_time": 0.2, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }
    async with running_station(parse_config(raw)) as station:
        await csms.wait_for("BootNotification")
        await csms.wait_until(lambda: station.runtime.core.accepted_by_csms)
        if version == "1.6":
            assert await csms.change_configuration("CP-BEGIN", "SampledDataSignStartedReadings", "true") == "Accepted"
        else:
            variable = {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "SignStartedReadings"}}
            [result] = await csms.set_variables("CP-BEGIN", [{**variable, "attribute_value": "true"}])
            assert result["attribute_status"] == "Accepted"
        assert await csms.start_session("CP-BEGIN", "TAG-B") == "Accepted"
        start, tx_id = await csms.wait_session_started("CP-BEGIN")
        key = parse_oca_public_key(await csms.meter_public_key("CP-BEGIN"))
        if version == "1.6":
            values = await csms.wait_for("MeterValues", lambda p: p.get("transactionId") == int(tx_id))
            assert csms.received.index(start) < csms.received.index(values)
            [sampled] = values.payload["meterValue"][0]["sampledValue"]
            assert sampled["context"] == "Transaction.Begin" and sampled["format"] == "SignedData"
            text = base64.b64decode(json.loads(sampled["value"])["signedMeterData"]).decode()
        else:
            [sampled] = start.payload["meterValue"][0]["sampledValue"]
            assert sampled["context"] == "Transaction.Begin"
            text = base64.b64decode(sampled["signedMeterValue"]["signedMeterData"]).decode()
        record = ocmf.parse(text)
        assert record.begin is not None and record.end is None and ocmf.verify(record, key).valid
        assert await csms.stop_session("CP-BEGIN", tx_id) == "Accepted"
        await csms.wait_session_ended("CP-BEGIN")
