"""`station demo --json` as a user runs it: a whole signed session per OCPP version, verified from what crossed the
wire. The JSON keys are an interface other tools rely on."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from station.demo.ev import CARD_UID
from station.demo.session import DemoResult
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


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """Whether `wanted` occurs in `seen` in this order (other items may come between)."""
    rest = iter(seen)
    return all(item in rest for item in wanted)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_demo_ev_json(version: str) -> None:
    """Issue 18 "Also": `station demo --ev` tells the car's story. Today's keys, plus "ev": what the CSMS saw, in
    order: plug-in, the card authorized, charging, the car pausing and resuming, the unplug ending the transaction
    with EVDisconnected; the signed record verifies with the meter's published key and names the card."""
    result = demo_json("--ev", "--ocpp", version, "--seconds", "1")
    today = {f.name for f in dataclasses.fields(DemoResult)} - {"evse_id"}
    assert set(result) == today | {"ev"}
    assert result["ocpp_version"] == version and result["verified"] is True
    assert ocmf.verify(result["ocmf"], result["public_key"]).valid
    record = ocmf.parse(result["ocmf"])
    assert record.payload["ID"] == CARD_UID
    assert result["energy_wh"] > 0
    assert result["meter_stop_wh"] - result["meter_start_wh"] == pytest.approx(result["energy_wh"], abs=1)
    ev = result["ev"]
    assert ev["card"] == ev["authorize"] == CARD_UID
    assert ev["stop_reason"] == "EVDisconnected"
    if version == "1.6":
        wanted = ["Preparing", "SuspendedEV", "Charging", "SuspendedEV", "Charging", "Finishing", "Available"]
        assert in_order(ev["statuses"], wanted), ev["statuses"]
        assert ev["charging_states"] == [] and ev["trigger_reasons"] == []
    else:
        assert in_order(ev["statuses"], ["Occupied", "Available"]), ev["statuses"]
        assert in_order(ev["charging_states"], ["Charging", "SuspendedEV", "Charging", "Idle"]), ev["charging_states"]
        reasons = ev["trigger_reasons"]
        assert reasons[0].startswith("Started ") and reasons[-1].startswith("Ended ")
        assert "Updated ChargingStateChanged" in reasons
    steps = ev["steps"]
    assert [s["step"].split(" (")[0] for s in steps[:2]] == [
        "the car is plugged in",
        f"card {CARD_UID} held to the station's reader",
    ]
    assert any(line.startswith("Authorize ") for line in steps[1]["csms_saw"])
    end = "StopTransaction reason=EVDisconnected" if version == "1.6" else "TransactionEvent Ended"
    assert any(line.startswith(end) for line in steps[-1]["csms_saw"])


def test_demo_ev_tells_the_story() -> None:
    """The story as a user reads it (2.0.1): each step, then what the CSMS received; the meter reads no power while
    the car pauses."""
    done = subprocess.run(
        [sys.executable, "-m", "station", "demo", "--ev", "--ocpp", "2.0.1", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    pause = next(i for i, line in enumerate(lines) if line.startswith("the car pauses"))
    resume = next(i for i, line in enumerate(lines) if line.startswith("the car resumes"))
    assert any(line.strip().startswith("meter: 0.0 kW") for line in lines[pause:resume])
    assert "  CSMS <- StatusNotification Occupied" in lines
    assert "  CSMS <- Authorize 04A2B3C4" in lines
    assert any("TransactionEvent Updated ChargingStateChanged chargingState=SuspendedEV" in line for line in lines)
    assert any("stoppedReason=EVDisconnected" in line for line in lines)
    assert "signature: VALID (signature valid)" in lines
    assert lines[-1] == "the transaction ended with reason EVDisconnected"


def test_demo_ev_is_one_car_on_one_evse() -> None:
    error = demo_refused("--ev", "--evses", "2")
    assert "--ev" in error and "--evses 2" in error
