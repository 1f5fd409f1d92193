"""Two EVSEs, each with its own fiscal meter, on one RS-485 line (issue 17): the meters are simulators on one real
pty pair, each answering its own Modbus device id. Overlapping sessions in both OCPP versions, each record signed
by its own meter and sent with that meter's key; one silent meter faults only its own EVSE while the other charges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms, Received
from station.meter import ocmf
from station.ocpp.signed_value import parse_oca_public_key
from tests.e2e.signed import signed_end_record

pytestmark = pytest.mark.slow  # two meters signing on a 9600 baud line

STATION = "CP-TWIN"


def twin_config(tmp_path: Path, url: str, version: str, *, models: tuple[str, str] = ("smartme", "smartme")) -> Any:
    ids = (1, 2) if models == ("smartme", "smartme") else (1, 33)
    return parse_config(
        {
            "station": {"id": STATION},
            "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
            "bus": {"rs485": {"transport": "simulated", "baudrate": 9600}},
            "evse": [
                {
                    "id": n,
                    "meter": {
                        "model": model,
                        "bus": "rs485",
                        "device_id": device,
                        "simulator": {
                            "state": str(tmp_path / f"m{n}.json"),
                            "ledger": str(tmp_path / f"ledger{n}.jsonl"),
                            "signing_time": 0.2,
                        },
                    },
                }
                for n, (model, device) in enumerate(zip(models, ids, strict=True), start=1)
            ],
            "storage": {"path": str(tmp_path / "s.db")},
        }
    )


def status(p: dict[str, Any]) -> Any:
    return p.get("status") or p.get("connectorStatus")


def where(p: dict[str, Any]) -> Any:
    return p.get("connectorId") if "status" in p else p.get("evseId")


def ledger(tmp_path: Path, n: int) -> list[str]:
    path = tmp_path / f"ledger{n}.jsonl"
    return [json.loads(line)["ocmf"] for line in path.read_text().splitlines()] if path.exists() else []


def payload(record: str) -> str:
    return record.split("|")[1]


async def meter_keys(csms: LocalCsms, version: str) -> dict[int, str]:
    """Each EVSE's meter key as the CSMS reads it: 1.6 MeterPublicKey<connectorId> (OCA app note), 2.0.1
    FiscalMetering.PublicKey per EVSE."""
    if version == "1.6":
        keys = await csms.get_configuration(STATION, ["MeterPublicKey1", "MeterPublicKey2"])
        return {n: parse_oca_public_key(keys[f"MeterPublicKey{n}"]) for n in (1, 2)}
    results = await csms.get_variables(
        STATION,
        [
            {"component": {"name": "FiscalMetering", "evse": {"id": n}}, "variable": {"name": "PublicKey"}}
            for n in (1, 2)
        ],
    )
    return {n: parse_oca_public_key(r["attribute_value"]) for n, r in zip((1, 2), results, strict=True)}


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_two_overlapping_sessions_each_signed_by_its_own_meter(tmp_path: Path, version: str) -> None:
    """Start on EVSE 1, start on EVSE 2, stop 1, stop 2 (issue 17 item 9's story). 1.6 connectors 1..N
    (§4.9 StatusNotification per connector, §5.11 RemoteStart connectorId); 2.0.1 EVSEs 1..N (E01, E06, F01;
    TransactionEvent carries its evse, E01.FR.16)."""
    csms = await LocalCsms().start()
    try:
        async with running_station(twin_config(tmp_path, csms.url, version, models=("smartme", "iskra-wm3m4c"))):
            for n in (1, 2):
                await csms.wait_for("StatusNotification", lambda p, n=n: status(p) == "Available" and where(p) == n)
            keys = await meter_keys(csms, version)
            assert keys[1] != keys[2]  # two meters, two keys
            ids: dict[int, str] = {}
            for n in (1, 2):
                mark = len(csms.received)
                if version == "1.6":
                    assert await csms.remote_start(STATION, f"TAG-{n}", connector_id=n) == "Accepted"
                else:
                    assert await csms.request_start(STATION, f"TAG-{n}", evse_id=n, remote_start_id=n) == "Accepted"
                started, ids[n] = await csms.wait_session_started(STATION, after=mark)
                if version == "1.6":
                    assert started.payload["connectorId"] == n
                else:
                    assert started.payload["evse"] == {"id": n, "connectorId": 1}
                await csms.wait_for(
                    "StatusNotification", lambda p, n=n: status(p) in ("Charging", "Occupied") and where(p) == n
                )
            ends: dict[int, Received] = {}
            for n in (1, 2):
                mark = len(csms.received)
                assert await csms.stop_session(STATION, ids[n]) == "Accepted"
                ends[n] = await csms.wait_session_ended(STATION, after=mark)
            for n in (1, 2):
                text, key = signed_end_record(ends[n], version)
                # Signed by this EVSE's meter, exactly once (the payload; Iskra's driver re-encodes a non-minimal DER
                # signature, which changes its text but not its integers).
                assert [payload(t) for t in ledger(tmp_path, n)] == [payload(text)]
                assert key == keys[n]  # sent with this meter's key
                assert ocmf.verify(ocmf.parse(text), key).valid
                other = 2 if n == 1 else 1
                assert not ocmf.verify(ocmf.parse(text), keys[other]).valid
    finally:
        await csms.stop()
    assert csms.violations == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_silent_meter_faults_only_its_own_evse(tmp_path: Path, version: str) -> None:
    """Issue 17 item 3: meter 2 goes silent while EVSE 1 charges; EVSE 2 is Faulted (1.6: its connector, with
    PowerMeterFailure; 2.0.1: its EVSE's connector, NotifyEvent on its FiscalMetering), EVSE 1 keeps charging and its
    stop still delivers the signed record; a start on EVSE 2 is refused, on EVSE 1 afterwards accepted."""
    csms = await LocalCsms().start()
    try:
        async with running_station(twin_config(tmp_path, csms.url, version)) as station:
            for n in (1, 2):
                await csms.wait_for("StatusNotification", lambda p, n=n: status(p) == "Available" and where(p) == n)
            assert await csms.start_session(STATION, "TAG-A") == "Accepted"  # no EVSE named: the first available
            _, tx_id = await csms.wait_session_started(STATION)
            await csms.wait_for("StatusNotification", lambda p: status(p) in ("Charging", "Occupied") and where(p) == 1)
            for worker in station.runtime.meters.values():
                worker.monitor_interval = 0.2
            station.simulator(2).faults.mute = True
            faulted = await csms.wait_for(
                "StatusNotification", lambda p: status(p) == "Faulted" and where(p) == 2, timeout=30
            )
            if version == "1.6":
                assert faulted.payload["errorCode"] == "PowerMeterFailure"
                assert await csms.remote_start(STATION, "TAG-B", connector_id=2) == "Rejected"
            else:
                event = await csms.wait_for("NotifyEvent")
                component = event.payload["eventData"][0]["component"]
                assert component == {"name": "FiscalMetering", "evse": {"id": 2}}
                assert await csms.request_start(STATION, "TAG-B", evse_id=2) == "Rejected"
            assert not [
                m
                for m in csms.messages("StatusNotification")
                if status(m.payload) == "Faulted" and where(m.payload) == 1
            ]
            mark = len(csms.received)
            assert await csms.stop_session(STATION, tx_id) == "Accepted"
            end = await csms.wait_session_ended(STATION, after=mark)
            text, _ = signed_end_record(end, version)
            assert ledger(tmp_path, 1) == [text] and ledger(tmp_path, 2) == []
            station.simulator(2).faults.mute = False
            await csms.wait_for(
                "StatusNotification", lambda p: status(p) == "Available" and where(p) == 2, after=mark, timeout=30
            )
    finally:
        await csms.stop()
    assert csms.violations == []
