"""A daemon killed mid-transaction (SIGKILL, like a power cut of the board) ends the transaction on the meter when it
comes back and delivers the signed record exactly once, with stop reason PowerLoss. The meter keeps metering
meanwhile; its ledger is the truth the CSMS's messages are compared with.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from station.app import build_meter
from station.config import load_config
from station.demo.csms import LocalCsms
from station.meter.interface import MeterTransactionRequest
from station.meter.nullmodem import VirtualNullModem
from station.meter.ocmf import verify
from station.ocpp.signed_value import parse_oca_public_key
from tests.conftest import Process, station_config

pytestmark = pytest.mark.slow  # the daemon as a process, killed and restarted

STATION = "CP-TEST-1"


async def test_sigkill_while_charging_then_restart_delivers_the_record_once(
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
            "0.3",
        ],
        tmp_path / "meter.log",
    )
    processes.append(meter)
    config = station_config(tmp_path, csms.url, cable.path_a)
    daemon = Process(["run", "--config", str(config)], tmp_path / "daemon-1.log")
    processes.append(daemon)

    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available", timeout=30)
    assert await csms.remote_start(STATION, "TAG-KILL") == "Accepted"
    await csms.wait_for("StartTransaction", timeout=30)
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")

    assert await daemon.terminate(signal.SIGKILL) == -signal.SIGKILL
    assert not ledger.exists() or ledger.read_text() == ""  # the meter has not been asked to end anything

    mark = len(csms.received)
    again = Process(["run", "--config", str(config)], tmp_path / "daemon-2.log")
    processes.append(again)
    stop = await csms.wait_for("StopTransaction", timeout=60, after=mark)
    assert stop.payload["reason"] == "PowerLoss"
    assert stop.payload["transactionId"] == csms.assigned_transaction_ids[0]
    value = json.loads(stop.payload["transactionData"][0]["sampledValue"][0]["value"])
    record = base64.b64decode(value["signedMeterData"]).decode()
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [e["ocmf"] for e in entries] == [record]
    assert entries[0]["id"] == "TAG-KILL"
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available", after=mark)

    # Exactly once: one StopTransaction; StartTransaction once, or repeated under the same message id when the kill
    # came between the CSMS's answer and the daemon storing it (at-least-once delivery, recognisable as a repeat).
    assert await again.terminate(signal.SIGTERM) == 0, again.log()
    assert len(csms.messages("StopTransaction")) == 1
    assert len({m.unique_id for m in csms.messages("StartTransaction")}) == 1
    assert csms.assigned_transaction_ids == [stop.payload["transactionId"]]
    await meter.terminate()


async def test_transaction_only_the_meter_knows_is_ended_and_announced_start_then_stop(
    tmp_path: Path, csms: LocalCsms, cable: VirtualNullModem, processes: list[Process]
) -> None:
    """The daemon died after the meter started the transaction and before storing it: at the next start the meter
    still reports it running. It is ended, and the CSMS gets StartTransaction (idTag and meterStart from the signed
    record) and then StopTransaction with the signed record, once each."""
    ledger = tmp_path / "ledger.jsonl"
    meter = Process(
        ["meter-sim", "--port", cable.path_b, "--state", str(tmp_path / "m.json"), "--ledger", str(ledger)],
        tmp_path / "meter.log",
    )
    processes.append(meter)
    config_path = station_config(tmp_path, csms.url, cable.path_a)

    # What the dead daemon got as far as: the Start Transaction command on the meter, nothing in the store.
    driver = build_meter(load_config(config_path))
    await driver.open()
    started = await driver.start_transaction(
        MeterTransactionRequest("lost-ref", 1, "TAG-ORPHAN", STATION, datetime.now(UTC))
    )
    assert await driver.transaction_running()
    await driver.close()

    daemon = Process(["run", "--config", str(config_path)], tmp_path / "daemon.log")
    processes.append(daemon)
    stop = await csms.wait_for("StopTransaction", timeout=60)
    start = csms.messages("StartTransaction")
    assert len(start) == 1 and csms.received.index(start[0]) < csms.received.index(stop)
    assert start[0].payload["idTag"] == "TAG-ORPHAN"
    assert start[0].payload["meterStart"] == started.meter_start_wh
    assert stop.payload["reason"] == "PowerLoss"
    assert stop.payload["transactionId"] == csms.assigned_transaction_ids[0]
    value = json.loads(stop.payload["transactionData"][0]["sampledValue"][0]["value"])
    record = base64.b64decode(value["signedMeterData"]).decode()
    assert [json.loads(line)["ocmf"] for line in ledger.read_text().splitlines()] == [record]
    keys = await csms.get_configuration(STATION, ["MeterPublicKey1"])
    assert verify(record, parse_oca_public_key(keys["MeterPublicKey1"])).valid

    # A restart after that changes nothing: the meter has nothing open, the store has it delivered.
    assert await daemon.terminate() == 0, daemon.log()
    again = Process(["run", "--config", str(config_path)], tmp_path / "daemon-2.log")
    processes.append(again)
    await csms.wait_for("BootNotification", after=len(csms.received))
    await asyncio.sleep(1.0)
    assert len(csms.messages("StopTransaction")) == 1 and len(csms.messages("StartTransaction")) == 1
    assert await again.terminate() == 0, again.log()
    await meter.terminate()
