"""A whole signed OCPP session on every meter model the station knows, each on its own simulator over a pty pair:
the model only changes the driver, never what the CSMS receives."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.demo.session import extract_signed_record
from station.meter import ocmf
from station.meter.models import MODELS
from station.ocpp.signed_value import parse_oca_public_key


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
    text, _ = extract_signed_record(stop.payload)
    record = ocmf.parse(text)
    assert ocmf.verify(record, key).valid
    assert record.identification == "TAG-M"
    assert record.begin is not None and int(record.begin.value * 1000) == start.payload["meterStart"]
    assert record.end is not None and int(record.end.value * 1000) == stop.payload["meterStop"]
