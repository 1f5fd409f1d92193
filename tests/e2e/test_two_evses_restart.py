"""A daemon killed (SIGKILL, like a power cut of the board) while both EVSEs of a twin column charge: when it comes
back it ends both transactions on their own meters and delivers each signed record exactly once, on its own
connector, with stop reason PowerLoss (1.6 §4.10 / §7.43; issue 17's "daemon SIGKILL with both EVSEs
mid-transaction"). The two meters are one `station meter-sim` process on one real pty pair, ids 1 and 2."""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path

import pytest

from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.meter.nullmodem import VirtualNullModem
from station.ocpp.signed_value import parse_oca_public_key
from tests.conftest import Process

pytestmark = pytest.mark.slow  # two processes, killed and restarted

STATION = "CP-TWIN-KILL"


def twin_toml(tmp_path: Path, url: str, port: str) -> Path:
    evses = "\n".join(
        f"""
[[evse]]
id = {n}
[evse.meter]
model = "smartme"
bus = "rs485"
device_id = {n}
"""
        for n in (1, 2)
    )
    path = tmp_path / "station.toml"
    path.write_text(
        f"""
[station]
id = "{STATION}"

[csms]
url = "{url}"
ocpp_version = "1.6"
reconnect_min = 0.2
reconnect_max = 1.0

[bus.rs485]
port = "{port}"
baudrate = 9600
{evses}
[storage]
path = "{tmp_path / "station.db"}"
"""
    )
    return path


async def test_sigkill_with_both_evses_charging_delivers_each_record_once_on_its_connector(
    tmp_path: Path, csms: LocalCsms, cable: VirtualNullModem, processes: list[Process]
) -> None:
    meters = Process(
        [
            "meter-sim",
            "--port",
            cable.path_b,
            "--meter",
            f"smartme:1:state={tmp_path / 'm1.json'},ledger={tmp_path / 'l1.jsonl'},signing_time=0.3",
            "--meter",
            f"smartme:2:state={tmp_path / 'm2.json'},ledger={tmp_path / 'l2.jsonl'},signing_time=0.3",
        ],
        tmp_path / "meters.log",
    )
    processes.append(meters)
    config = twin_toml(tmp_path, csms.url, cable.path_a)
    daemon = Process(["run", "--config", str(config)], tmp_path / "daemon-1.log")
    processes.append(daemon)

    for n in (1, 2):
        await csms.wait_for(
            "StatusNotification", lambda p, n=n: p["status"] == "Available" and p["connectorId"] == n, timeout=30
        )
    for n in (1, 2):
        assert await csms.remote_start(STATION, f"TAG-{n}", connector_id=n) == "Accepted"
        await csms.wait_for("StatusNotification", lambda p, n=n: p["status"] == "Charging" and p["connectorId"] == n)
    starts = {m.payload["connectorId"]: m for m in csms.messages("StartTransaction")}
    assert sorted(starts) == [1, 2]
    await csms.wait_until(lambda: all(m.unique_id in csms.transaction_by_message_id for m in starts.values()))
    tx_of = {n: csms.transaction_by_message_id[starts[n].unique_id] for n in (1, 2)}

    assert await daemon.terminate(signal.SIGKILL) == -signal.SIGKILL
    mark = len(csms.received)
    again = Process(["run", "--config", str(config)], tmp_path / "daemon-2.log")
    processes.append(again)
    for n in (1, 2):
        await csms.wait_for("StopTransaction", lambda p, n=n: p["transactionId"] == tx_of[n], after=mark, timeout=60)
    keys = await csms.get_configuration(STATION, ["MeterPublicKey1", "MeterPublicKey2"])
    assert keys["MeterPublicKey1"] != keys["MeterPublicKey2"]
    for n in (1, 2):
        stops = [m for m in csms.messages("StopTransaction") if m.payload["transactionId"] == tx_of[n]]
        assert len(stops) == 1, again.log()
        stop = stops[0].payload
        assert stop["reason"] == "PowerLoss"
        value = json.loads(stop["transactionData"][-1]["sampledValue"][-1]["value"])
        record = base64.b64decode(value["signedMeterData"]).decode()
        ledger = [json.loads(line) for line in (tmp_path / f"l{n}.jsonl").read_text().splitlines()]
        assert [e["ocmf"] for e in ledger] == [record]  # this EVSE's meter signed it, once
        assert ledger[0]["id"] == f"TAG-{n}"
        key = parse_oca_public_key(keys[f"MeterPublicKey{n}"])
        assert parse_oca_public_key(value["publicKey"]) == key
        assert ocmf.verify(record, key).valid
    assert await again.terminate(signal.SIGTERM) == 0, again.log()
    assert len(csms.messages("StopTransaction")) == 2
    await meters.terminate()
