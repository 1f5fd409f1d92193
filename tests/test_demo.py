"""`station demo --json` as a user runs it: a whole signed session per OCPP version, verified from what crossed the
wire. The JSON keys are an interface other tools rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from station.meter import ocmf
from station.meter.records import ocmf_time

pytestmark = pytest.mark.slow  # the demo, once per version and meter model


def demo_json(*args: str) -> dict[str, Any]:
    """`station demo --json ARGS` as a user runs it; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "station", "demo", "--json", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_demo_json(version: str) -> None:
    result = demo_json("--ocpp", version, "--seconds", "1.5")
    assert result["ocpp_version"] == version
    assert result["verified"] is True
    assert ocmf.verify(result["ocmf"], result["public_key"]).valid  # checked again, independently of the demo
    record = ocmf.parse(result["ocmf"])
    assert record.energy_wh() == pytest.approx(result["energy_wh"]) and result["energy_wh"] > 0
    assert result["meter_stop_wh"] - result["meter_start_wh"] == pytest.approx(result["energy_wh"], abs=1)
    assert isinstance(result["transaction_id"], int if version == "1.6" else str)


@pytest.mark.parametrize("model", ["iskra-wm3m4c", "carlo-gavazzi-em580", "bauer-bsm-ws36a"])
def test_demo_json_per_meter_model(model: str) -> None:
    result = demo_json("--meter-model", model, "--seconds", "1")
    assert result["meter_model"] == model and result["verified"] is True
    assert ocmf.verify(result["ocmf"], result["public_key"]).valid
    assert result["energy_wh"] == pytest.approx(result["meter_stop_wh"] - result["meter_start_wh"], abs=1)


def demo_refused(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "station", "demo", "--json", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    return done.stderr


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_demo_two_evses_on_one_bus(version: str) -> None:
    """Issue 17 item 9: start on EVSE 1, start on EVSE 2, stop 1, stop 2; one object per EVSE, each record signed by
    its own meter and verified with that meter's key (and not with the other's)."""
    result = demo_json("--ocpp", version, "--seconds", "1", "--evses", "2")
    assert list(result) == ["sessions"]
    sessions = result["sessions"]
    assert [s["evse_id"] for s in sessions] == [1, 2]
    one = demo_json("--ocpp", version, "--seconds", "0.5")  # today's single object: the same keys, but evse_id
    for session in sessions:
        assert set(session) == set(one) | {"evse_id"}
        assert session["ocpp_version"] == version and session["verified"] is True
        assert session["meter_stop_wh"] - session["meter_start_wh"] == pytest.approx(session["energy_wh"], abs=1)
        assert session["energy_wh"] > 0
    first, second = sessions
    assert first["public_key"] != second["public_key"]
    assert first["transaction_id"] != second["transaction_id"]
    records = [ocmf.parse(s["ocmf"]) for s in sessions]
    assert records[0].meter_serial != records[1].meter_serial
    for record, session, other in ((records[0], first, second), (records[1], second, first)):
        assert ocmf.verify(record, session["public_key"]).valid
        assert not ocmf.verify(record, other["public_key"]).valid
    # They overlapped, by the meters' own signed clocks: EVSE 2 began before EVSE 1 ended.
    begin_2, end_1 = records[1].begin, records[0].end
    assert begin_2 is not None and end_1 is not None
    began_2, ended_1 = ocmf_time(begin_2.time), ocmf_time(end_1.time)
    assert began_2 is not None and ended_1 is not None and began_2 < ended_1


@pytest.mark.parametrize("count", ["0", "5", "-1", "two"])
def test_demo_evse_count_is_bounded(count: str) -> None:
    error = demo_refused("--evses", count)
    assert "--evses" in error
    assert ("1 to 4 EVSEs" in error) if count.lstrip("-").isdigit() else ("whole number" in error)
