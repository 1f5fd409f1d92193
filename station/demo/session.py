"""`station demo`: whole signed charging sessions on this machine, with nothing to set up.

Starts a local CSMS on loopback, the daemon with its meter simulators on one virtual serial line (one simulated
RS-485 bus, device ids 1..N, one meter per EVSE), then plays the CSMS: a remote start on each EVSE in turn, a few
seconds of charging, a remote stop on each in turn, so the sessions overlap (1.6: RemoteStart/StopTransaction;
2.0.1: Request...). It reads each signed value out of the StopTransaction or TransactionEvent(Ended) the CSMS
received, fetches each EVSE's meter key the way a CSMS would (GetConfiguration MeterPublicKey<N> / GetVariables
FiscalMetering.PublicKey of EVSE N), and verifies each record with its own meter's key. Everything it reports comes
from what crossed the wire, not from the daemon's memory.
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
from station.demo.csms import LocalCsms, Received
from station.meter import ocmf
from station.ocpp.signed_value import parse_oca_public_key

STATION_ID = "DEMO-CP-1"
MAX_EVSES = 4  # a twin or quad column on one RS-485 line; each simulated meter costs a signing on the one bus
BUS = "demo"


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
    evse_id: int = 1

    def as_json(self, *, with_evse: bool = True) -> dict[str, Any]:
        """Its JSON object; without `evse_id` for the one-EVSE demo, whose object predates several EVSEs."""
        out = self.__dict__.copy()
        if not with_evse:
            del out["evse_id"]
        return out


def demo_json(results: list[DemoResult]) -> dict[str, Any]:
    """`station demo --json`: one EVSE's object as it always was, else {"sessions": [one object per EVSE]}."""
    if len(results) == 1:
        return results[0].as_json(with_evse=False)
    return {"sessions": [result.as_json() for result in results]}


def check_evse_count(evses: int) -> int:
    if not 1 <= evses <= MAX_EVSES:
        raise ValueError(f"the demo runs 1 to {MAX_EVSES} EVSEs (on its one bus), not {evses}")
    return evses


def demo_config(
    workdir: Path,
    csms_url: str,
    *,
    ocpp_version: str = "1.6",
    meter_model: str = "smartme",
    evses: int = 1,
    ev: bool = False,
) -> dict[str, Any]:
    """EVSEs 1..`evses`, each with one connector and its own simulated meter (device id = EVSE id) on one bus; with
    `ev`, each with a simulated charge controller (a car behind it, a connector lock) that the demo drives directly."""
    check_evse_count(evses)
    controller = {"charge_controller": {"driver": "simulated", "lock": True}} if ev else {}
    return {
        "station": {"id": STATION_ID, "vendor": "station", "model": "demo"},
        "csms": {"url": csms_url, "ocpp_version": ocpp_version, "reconnect_min": 0.2, "reconnect_max": 2},
        "bus": {BUS: {"transport": "simulated", "baudrate": 9600}},
        "evse": [
            {
                "id": n,
                "meter": {
                    "model": meter_model,
                    "bus": BUS,
                    "device_id": n,
                    "simulator": {
                        "power_w": 22000,
                        "signing_time": 1.0,
                        "state": str(workdir / f"meter-sim-{n}.json"),
                        "ledger": str(workdir / f"meter-ledger-{n}.jsonl"),
                    },
                },
                **controller,
            }
            for n in range(1, evses + 1)
        ],
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


def _status(payload: dict[str, Any]) -> Any:
    return payload.get("status") or payload.get("connectorStatus")


def _where(payload: dict[str, Any]) -> Any:
    """The connector (1.6) or EVSE (2.0.1) a StatusNotification is about: both are the EVSE id in the demo."""
    return payload.get("connectorId") if "status" in payload else payload.get("evseId")


def _evse_of_start(payload: dict[str, Any]) -> Any:
    return payload["connectorId"] if "connectorId" in payload else (payload.get("evse") or {}).get("id")


def _available_on(evse_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda payload: _status(payload) == "Available" and _where(payload) == evse_id


def _ends_transaction(transaction_id: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a StopTransaction / TransactionEvent is the end of `transaction_id`."""

    def ends(payload: dict[str, Any]) -> bool:
        if "transactionInfo" in payload:
            info = payload["transactionInfo"]
            return bool(payload.get("eventType") == "Ended" and info.get("transactionId") == transaction_id)
        return str(payload.get("transactionId")) == transaction_id

    return ends


@dataclass
class _Session:
    evse_id: int
    transaction_id: str
    start: Received
    stop: Received | None = None
    key_text: str = ""


async def run_demo(
    *,
    seconds: float = 4.0,
    ocpp_version: str = "1.6",
    meter_model: str = "smartme",
    evses: int = 1,
    say: Callable[[str], None] = print,
) -> list[DemoResult]:
    """One signed session per EVSE, overlapping: start 1, start 2 .. N, charge, stop 1, stop 2 .. N."""
    check_evse_count(evses)
    ids = range(1, evses + 1)

    def on(n: int) -> str:
        return f"EVSE {n}: " if evses > 1 else ""

    start_name = "RequestStartTransaction" if ocpp_version == "2.0.1" else "RemoteStartTransaction"
    stop_name = "RequestStopTransaction" if ocpp_version == "2.0.1" else "RemoteStopTransaction"
    sessions: dict[int, _Session] = {}
    with tempfile.TemporaryDirectory(prefix="station-demo-") as tmp:
        workdir = Path(tmp)
        csms = await LocalCsms().start()
        say(f"local CSMS listening on {csms.url}")
        config = parse_config(
            demo_config(workdir, csms.url, ocpp_version=ocpp_version, meter_model=meter_model, evses=evses), "demo"
        )
        try:
            async with running_station(config) as station:
                baudrate = config.bus_of(config.evses[0]).baudrate
                if evses == 1:
                    say(f"{meter_model} meter simulator on a virtual serial line at {baudrate} baud, RTU framing")
                else:
                    say(
                        f"{evses} {meter_model} meter simulators (Modbus device ids 1..{evses}, one per EVSE) on one "
                        f"virtual serial line at {baudrate} baud, RTU framing"
                    )
                await csms.wait_connected(STATION_ID)
                for n in ids:
                    await csms.wait_for("StatusNotification", _available_on(n))
                connectors = "connector 1" if evses == 1 else f"connectors 1..{evses}"
                say(f"station {STATION_ID} connected (OCPP {ocpp_version}), booted, {connectors} Available")

                for n in ids:
                    mark = len(csms.received)
                    status = await csms.start_session(STATION_ID, f"DEMO-TOKEN-{n:02d}", evse_id=n)
                    say(f"{on(n)}CSMS -> {start_name}: {status}")
                    start, transaction_id = await csms.wait_session_started(STATION_ID, after=mark)
                    if _evse_of_start(start.payload) != n:
                        raise ValueError(f"the start asked of EVSE {n} arrived as {start.payload!r}")
                    sessions[n] = _Session(n, transaction_id, start)
                    say(
                        f"{on(n)}meter started its transaction; {start.action} with start reading "
                        f"{_start_reading(start.payload)} Wh, transactionId={transaction_id}"
                    )
                    evse = station.runtime.core.evses[n]
                    await csms.wait_until(lambda: evse.phase.value == "charging")  # noqa: B023 -- awaited here
                loop = asyncio.get_running_loop()
                end = loop.time() + seconds
                while loop.time() < end:
                    await asyncio.sleep(1.0)
                    for n in ids:
                        live = await station.meters[n].live_values()
                        say(
                            f"  {on(n)}charging: {live.power_w / 1000:.1f} kW, "
                            f"meter register {live.energy_import_wh} Wh"
                        )

                for n in ids:
                    session = sessions[n]
                    mark = len(csms.received)
                    status = await csms.stop_session(STATION_ID, session.transaction_id)
                    say(f"{on(n)}CSMS -> {stop_name}: {status}; the meter ends and signs the transaction")
                    session.stop = await csms.wait_for(
                        "TransactionEvent" if ocpp_version == "2.0.1" else "StopTransaction",
                        _ends_transaction(session.transaction_id),
                        after=mark,
                        timeout=60,
                    )
                for n in ids:
                    sessions[n].key_text = await csms.meter_public_key(STATION_ID, evse_id=n)
                await station.runtime.idle()
        finally:
            await csms.stop()
    return [_result(sessions[n], ocpp_version, meter_model) for n in ids]


def _result(session: _Session, ocpp_version: str, meter_model: str) -> DemoResult:
    """Verify one EVSE's signed record with the key its meter published, from what the CSMS received."""
    assert session.stop is not None
    start, stop = session.start.payload, session.stop.payload
    record_text, envelope_key = extract_signed_record(stop)
    key_hex = parse_oca_public_key(session.key_text)
    if envelope_key is not None and envelope_key.upper() != key_hex.upper():
        raise ValueError(
            f"EVSE {session.evse_id}: the key in the signed value differs from the one the station publishes"
        )
    record = ocmf.parse(record_text)
    verdict = ocmf.verify(record, key_hex)
    energy = record.energy_wh()
    if energy is None:  # a meter with separate begin and end records (BAUER): the signed readings of both
        energy = Decimal(_stop_reading(stop) - _start_reading(start))
    return DemoResult(
        ocpp_version=ocpp_version,
        transaction_id=int(session.transaction_id) if ocpp_version == "1.6" else session.transaction_id,
        energy_wh=float(energy) if energy is not None else None,
        ocmf=record_text,
        public_key=key_hex,
        verified=verdict.valid,
        reason=verdict.reason,
        meter_start_wh=_start_reading(start),
        meter_stop_wh=_stop_reading(stop),
        pagination=record.pagination,
        meter_model=meter_model,
        evse_id=session.evse_id,
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


def print_results(results: list[DemoResult], say: Callable[[str], None] = print) -> None:
    for result in results:
        print_result(result, say, several=len(results) > 1)


def print_result(result: DemoResult, say: Callable[[str], None] = print, *, several: bool = False) -> None:
    on = f"EVSE {result.evse_id}: " if several else ""
    say("")
    end_message = "TransactionEvent(Ended)" if result.ocpp_version == "2.0.1" else "StopTransaction"
    say(f"{on}{end_message} received: meter stop {result.meter_stop_wh} Wh, signed record {result.pagination}")
    say(f"{on}energy (from the signed begin and end readings): {result.energy_wh:g} Wh")
    say(f"{on}signed record (OCMF, exactly as the meter produced it):")
    say(f"  {result.ocmf}")
    source = (
        f"GetVariables FiscalMetering.PublicKey of EVSE {result.evse_id}"
        if result.ocpp_version == "2.0.1"
        else f"GetConfiguration MeterPublicKey{result.evse_id}"
    )
    say(f"{on}meter public key ({source}): {result.public_key}")
    say(f"{on}signature: {'VALID' if result.verified else 'INVALID'} ({result.reason})")
