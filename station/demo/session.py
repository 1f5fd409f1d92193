"""`station demo`: one whole signed charging session on this machine, with nothing to set up.

Starts a local CSMS on loopback, the daemon with its meter simulator on a virtual serial line, then plays the CSMS:
remote start, a few seconds of charging, remote stop (1.6: RemoteStart/StopTransaction; 2.0.1: Request...). It reads
the signed value out of the StopTransaction or TransactionEvent(Ended) the CSMS received, fetches the meter's key the
way a CSMS would (GetConfiguration MeterPublicKey1 / GetVariables FiscalMetering.PublicKey), and verifies the record
with it. Everything it reports comes from what crossed the wire, not from the daemon's memory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.ocpp.signed_value import parse_oca_public_key

STATION_ID = "DEMO-CP-1"


@dataclass
class DemoResult:
    ocpp_version: str
    transaction_id: int | str
    energy_wh: float | None
    ocmf: str
    public_key: str
    verified: bool
    reason: str
    meter_start_wh: int
    meter_stop_wh: int
    pagination: str
    meter_model: str = "smartme"

    def as_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def demo_config(
    workdir: Path, csms_url: str, *, ocpp_version: str = "1.6", meter_model: str = "smartme"
) -> dict[str, Any]:
    return {
        "station": {"id": STATION_ID, "vendor": "station", "model": "demo"},
        "csms": {"url": csms_url, "ocpp_version": ocpp_version, "reconnect_min": 0.2, "reconnect_max": 2},
        "meter": {
            "model": meter_model,
            "transport": "simulated",
            "baudrate": 9600,
            "simulator": {
                "power_w": 22000,
                "signing_time": 1.0,
                "state": str(workdir / "meter-sim.json"),
                "ledger": str(workdir / "meter-ledger.jsonl"),
            },
        },
        "storage": {"path": str(workdir / "station.db")},
    }


def extract_signed_record(stop_payload: dict[str, Any]) -> tuple[str, str | None]:
    """(OCMF text, public key from the envelope or None) from a StopTransaction or TransactionEvent(Ended) as it
    arrived at the CSMS."""
    for meter_value in stop_payload.get("meterValue") or []:  # 2.0.1
        for sampled in meter_value.get("sampledValue", []):
            signed = sampled.get("signedMeterValue")
            if signed and sampled.get("context") == "Transaction.End":
                data = base64.b64decode(signed["signedMeterData"]).decode("utf-8")
                key = parse_oca_public_key(signed["publicKey"]) if signed.get("publicKey") else None
                return data, key
    found: list[tuple[str, str | None]] = []
    for meter_value in stop_payload.get("transactionData") or []:
        for sampled in meter_value.get("sampledValue", []):
            if sampled.get("format") != "SignedData":
                continue
            value = sampled["value"]
            if value.startswith("OCMF|"):
                item: tuple[str, str | None] = (value, None)
            else:
                envelope = json.loads(value)
                data = base64.b64decode(envelope["signedMeterData"]).decode("utf-8")
                item = (data, parse_oca_public_key(envelope["publicKey"]) if envelope.get("publicKey") else None)
            if sampled.get("context", "Transaction.End") == "Transaction.End":
                return item
            found.append(item)
    if found:
        return found[-1]
    raise ValueError("the transaction's end carries no signed meter value")


async def run_demo(
    *,
    seconds: float = 4.0,
    ocpp_version: str = "1.6",
    meter_model: str = "smartme",
    say: Callable[[str], None] = print,
) -> DemoResult:
    with tempfile.TemporaryDirectory(prefix="station-demo-") as tmp:
        workdir = Path(tmp)
        csms = await LocalCsms().start()
        say(f"local CSMS listening on {csms.url}")
        config = parse_config(
            demo_config(workdir, csms.url, ocpp_version=ocpp_version, meter_model=meter_model), "demo"
        )
        try:
            async with running_station(config) as station:
                baudrate = config.bus_of(config.evses[0]).baudrate
                say(f"{meter_model} meter simulator on a virtual serial line at {baudrate} baud, RTU framing")
                await csms.wait_connected(STATION_ID)
                await csms.wait_for(
                    "StatusNotification", lambda p: (p.get("status") or p.get("connectorStatus")) == "Available"
                )
                say(f"station {STATION_ID} connected (OCPP {ocpp_version}), booted, connector 1 Available")

                status = await csms.start_session(STATION_ID, "DEMO-TOKEN-01")
                start_name = "RequestStartTransaction" if ocpp_version == "2.0.1" else "RemoteStartTransaction"
                say(f"CSMS -> {start_name}: {status}")
                start, transaction_id = await csms.wait_session_started(STATION_ID)
                meter_start = _start_reading(start.payload)
                say(
                    f"meter started its transaction; {start.action} with start reading {meter_start} Wh, "
                    f"transactionId={transaction_id}"
                )
                await csms.wait_until(lambda: station.runtime.core.evses[1].phase.value == "charging")
                loop = asyncio.get_running_loop()
                end = loop.time() + seconds
                while loop.time() < end:
                    await asyncio.sleep(1.0)
                    live = await station.meters[1].live_values()
                    say(f"  charging: {live.power_w / 1000:.1f} kW, meter register {live.energy_import_wh} Wh")

                status = await csms.stop_session(STATION_ID, transaction_id)
                stop_name = "RequestStopTransaction" if ocpp_version == "2.0.1" else "RemoteStopTransaction"
                say(f"CSMS -> {stop_name}: {status}; the meter ends and signs the transaction")
                stop = await csms.wait_session_ended(STATION_ID, timeout=60)
                key_text = await csms.meter_public_key(STATION_ID)
                await station.runtime.idle()
        finally:
            await csms.stop()

    record_text, envelope_key = extract_signed_record(stop.payload)
    key_hex = parse_oca_public_key(key_text)
    if envelope_key is not None and envelope_key.upper() != key_hex.upper():
        raise ValueError("the key in the signed value differs from the one the station publishes")
    record = ocmf.parse(record_text)
    verdict = ocmf.verify(record, key_hex)
    energy = record.energy_wh()
    if energy is None:  # a meter with separate begin and end records (BAUER): the signed readings of both
        energy = Decimal(_stop_reading(stop.payload) - _start_reading(start.payload))
    return DemoResult(
        ocpp_version=ocpp_version,
        transaction_id=int(transaction_id) if ocpp_version == "1.6" else transaction_id,
        energy_wh=float(energy) if energy is not None else None,
        ocmf=record_text,
        public_key=key_hex,
        verified=verdict.valid,
        reason=verdict.reason,
        meter_start_wh=_start_reading(start.payload),
        meter_stop_wh=_stop_reading(stop.payload),
        pagination=record.pagination,
        meter_model=meter_model,
    )


def _energy_sample(payload: dict[str, Any], context: str) -> int:
    for meter_value in payload.get("meterValue") or []:
        for sampled in meter_value.get("sampledValue", []):
            if sampled.get("context") == context and sampled.get("measurand", "Energy.Active.Import.Register") == (
                "Energy.Active.Import.Register"
            ):
                return int(sampled["value"])
    raise ValueError(f"no {context} energy reading in the message")


def _start_reading(payload: dict[str, Any]) -> int:
    return int(payload["meterStart"]) if "meterStart" in payload else _energy_sample(payload, "Transaction.Begin")


def _stop_reading(payload: dict[str, Any]) -> int:
    return int(payload["meterStop"]) if "meterStop" in payload else _energy_sample(payload, "Transaction.End")


def print_result(result: DemoResult, say: Callable[[str], None] = print) -> None:
    say("")
    end_message = "TransactionEvent(Ended)" if result.ocpp_version == "2.0.1" else "StopTransaction"
    say(f"{end_message} received: meter stop {result.meter_stop_wh} Wh, signed record {result.pagination}")
    say(f"energy (from the signed begin and end readings): {result.energy_wh:g} Wh")
    say("signed record (OCMF, exactly as the meter produced it):")
    say(f"  {result.ocmf}")
    source = (
        "GetVariables FiscalMetering.PublicKey"
        if result.ocpp_version == "2.0.1"
        else "GetConfiguration MeterPublicKey1"
    )
    say(f"meter public key ({source}): {result.public_key}")
    say(f"signature: {'VALID' if result.verified else 'INVALID'} ({result.reason})")
