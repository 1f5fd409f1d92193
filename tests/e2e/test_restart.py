"""A daemon killed mid-transaction (SIGKILL, like a power cut of the board) ends the transaction on the meter when it
comes back and delivers the signed record exactly once, with stop reason PowerLoss. The meter keeps metering
meanwhile; its ledger is the truth the CSMS's messages are compared with.
"""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path

from station.demo.csms import LocalCsms
from station.meter.nullmodem import VirtualNullModem
from tests.conftest import Process, station_config

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
