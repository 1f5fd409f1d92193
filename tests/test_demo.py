"""`station demo --json` as a user runs it: a whole signed session per OCPP version, verified from what crossed the
wire. The JSON keys are an interface other tools rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from station.meter import ocmf

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
