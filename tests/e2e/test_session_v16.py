"""The walking skeleton's promise, end to end with real parts only.

A real WebSocket CSMS on loopback, the meter simulator as its own process on one end of a real pty pair, the daemon as
its own process on the other end: remote start, charging, remote stop, and the signed record the CSMS received must be
byte for byte what the meter signed (its ledger) and must verify with the key the CSMS reads from MeterPublicKey1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from pathlib import Path

import pytest

from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.meter.nullmodem import VirtualNullModem
from station.ocpp.signed_value import parse_oca_public_key
from tests.conftest import Process, station_config

pytestmark = pytest.mark.slow  # the daemon and the simulator as processes

STATION = "CP-TEST-1"


async def test_remote_start_stop_delivers_the_meters_signed_record(
    tmp_path: Path, csms: LocalCsms, cable: VirtualNullModem, processes: list[Process]
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    meter = Process(
        [
            "meter-sim",
            "--port",
            cable.path_b,
            "--state",
            str(tmp_path / "meter.json"),
            "--ledger",
            str(ledger),
            "--signing-time",
            "0.5",
            "--power-w",
            "36000",
        ],
        tmp_path / "meter.log",
    )
    processes.append(meter)
    config = station_config(tmp_path, csms.url, cable.path_a)
    daemon = Process(["run", "--config", str(config)], tmp_path / "daemon.log")
    processes.append(daemon)

    await csms.wait_connected(STATION, timeout=30)
    boot = await csms.wait_for("BootNotification")
    assert boot.payload["chargePointVendor"] and boot.payload["meterSerialNumber"] == "SIM00012345"
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")

    assert await csms.remote_start(STATION, "TAG-0001") == "Accepted"
    start = await csms.wait_for("StartTransaction", timeout=30)
    assert start.payload["connectorId"] == 1 and start.payload["idTag"] == "TAG-0001"
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
    await csms.wait_until(lambda: csms.assigned_transaction_ids)
    transaction_id = csms.assigned_transaction_ids[-1]

    await asyncio.sleep(1.5)  # charge a little: 36 kW for 1.5 s is 15 Wh
    mark = len(csms.received)
    assert await csms.remote_stop(STATION, transaction_id) == "Accepted"
    stop = await csms.wait_for("StopTransaction", timeout=60, after=mark)
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available", after=mark)

    assert stop.payload["transactionId"] == transaction_id
    assert stop.payload["reason"] == "Remote"
    sampled = [sv for mv in stop.payload["transactionData"] for sv in mv["sampledValue"]]
    assert len(sampled) == 1
    signed = sampled[0]
    assert signed["format"] == "SignedData" and signed["context"] == "Transaction.End"
    envelope = json.loads(signed["value"])
    assert envelope["encodingMethod"] == "OCMF" and envelope["signingMethod"] == ""
    record_text = base64.b64decode(envelope["signedMeterData"]).decode()

    # What the meter signed is exactly what the CSMS got: once, unaltered.
    signed_by_meter = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [e["ocmf"] for e in signed_by_meter] == [record_text]

    keys = await csms.get_configuration(STATION, ["MeterPublicKey1"])
    key_hex = parse_oca_public_key(keys["MeterPublicKey1"])
    assert parse_oca_public_key(envelope["publicKey"]) == key_hex
    record = ocmf.parse(record_text)
    assert ocmf.verify(record, key_hex).valid

    # meterStart / meterStop are the signed begin and end readings, in Wh.
    assert record.begin is not None and record.end is not None
    assert start.payload["meterStart"] == int(record.begin.value * 1000)
    assert stop.payload["meterStop"] == int(record.end.value * 1000)
    assert stop.payload["meterStop"] > start.payload["meterStart"]

    assert await daemon.terminate(signal.SIGTERM) == 0, daemon.log()
    assert await meter.terminate(signal.SIGTERM) == 0, meter.log()
