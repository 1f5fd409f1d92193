"""The technician's local diagnostics socket: read-only reports about the running station, one JSON line each.

A Unix socket (mode 0660, so the service's group can read it) under the runtime directory. A client sends one JSON
object per line, `{"command": "status"}`, and gets one JSON object per line back (`log` with `"follow": true` then
streams one line per OCPP frame until the client hangs up). Every command here only reads: the
station's state, the store, and (for `meter-test`) the meter through the daemon's own link, which serialises requests
with the daemon's work. Nothing on this socket can start, stop or change charging. Bad requests get an error answer
and change nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from station.meter.interface import MeterError
from station.meter.ocmf import load_public_key
from station.meter.transparency import to_transparency_xml
from station.ocpp.connection import describe
from station.store import StoredTransaction

if TYPE_CHECKING:
    from station.app import Station

log = structlog.get_logger("station.diag")

MAX_REQUEST = 4096
COMMANDS = ("status", "meter", "meter-test", "transactions", "transaction", "export", "log", "security-log")
EXPORT_FORMATS = ("transparency-xml",)


def status_report(station: Station) -> dict[str, Any]:
    runtime = station.runtime
    meter = runtime.meter_state
    identity = meter.identity
    connectors = []
    for cid, connector in runtime.core.connectors.items():
        tx = connector.transaction
        connectors.append(
            {
                "id": cid,
                "state": runtime.core.status_of(cid).value,
                "phase": connector.phase.value,
                "transaction": None
                if tx is None
                else {
                    "ref": tx.ref,
                    "id_tag": tx.id_tag,
                    "started_at": tx.started_at.isoformat() if tx.started_at else None,
                    "meter_start_wh": tx.meter_start_wh,
                },
            }
        )
    return {
        "station_id": station.config.station.id,
        "ocpp": describe(station.connection.state, station.store.outbox_depth()),
        "meter": {
            "link": "up" if meter.link_up and runtime.core.meter_link_up else "down",
            "model": station.config.meter.model,
            "port": station.config.meter.port if station.config.meter.transport != "simulated" else "simulated",
            "serial": identity.serial_number if identity else None,
            "firmware": identity.firmware_version if identity else None,
            "public_key": meter.public_key_hex or None,
            "last_error": meter.last_error or None,
        },
        "connectors": connectors,
        "failed_messages": len(station.store.failed_messages()),
    }


def transaction_report(station: Station, ref: str) -> dict[str, Any] | None:
    """One transaction by our reference or the CSMS's transaction id."""
    stored = station.store.transaction(ref)
    if stored is None:
        for candidate in station.store.recent_transactions(1000):
            if candidate.csms_transaction_id == ref:
                stored = candidate
                break
    return None if stored is None else _report(stored)


def recent_reports(station: Station, last: int) -> list[dict[str, Any]]:
    """The newest `last` transactions, newest first."""
    return [_report(stored) for stored in station.store.recent_transactions(last)]


def _report(stored: StoredTransaction) -> dict[str, Any]:
    tx = stored.transaction
    return {
        "ref": tx.ref,
        "csms_transaction_id": stored.csms_transaction_id,
        "state": stored.state,
        "connector_id": tx.connector_id,
        "id_tag": tx.id_tag,
        "started_at": tx.started_at.isoformat() if tx.started_at else None,
        "stopped_at": tx.stopped_at.isoformat() if tx.stopped_at else None,
        "meter_start_wh": tx.meter_start_wh,
        "meter_stop_wh": tx.meter_stop_wh,
        "stop_reason": tx.stop_reason.value if tx.stop_reason else None,
        "verified": stored.verified,
        "delivered_at": stored.delivered_at,
        "records": [
            {"context": r.context, "data": r.data, "verified": r.verified, "problems": list(r.problems)}
            for r in tx.signed_records
        ],
    }


def export_transaction(station: Station, ref: object, fmt: object) -> dict[str, Any]:
    """A transaction's signed records with the meter's public key in the Transparenzsoftware's XML container, so a
    driver can check the bill with the official tool."""
    if not isinstance(ref, str) or not ref:
        return {"ok": False, "error": '"id" must be a transaction reference or CSMS transaction id'}
    if fmt not in EXPORT_FORMATS:
        return {"ok": False, "error": f"unknown format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}"}
    report = transaction_report(station, ref)
    if report is None:
        return {"ok": False, "error": f"no transaction {ref}"}
    if not report["records"]:
        return {"ok": False, "error": f"transaction {ref} has no signed record (yet)"}
    key_hex = station.runtime.meter_state.public_key_hex
    if not key_hex:
        return {"ok": False, "error": "the meter's public key is not known yet (meter not read since start)"}
    entries = [(r["context"], r["data"]) for r in report["records"]]
    xml = to_transparency_xml(entries, load_public_key(key_hex), report["csms_transaction_id"] or report["ref"])
    return {"ok": True, "export": xml, "verified": report["verified"]}


async def meter_report(station: Station) -> dict[str, Any]:
    meter = station.meter
    live = await meter.live_values()
    identity = await meter.identity()
    return {
        "model": station.config.meter.model,
        "serial": identity.serial_number,
        "firmware": identity.firmware_version,
        "public_key": await meter.public_key(),
        "readings": {
            "1-b:1.8.0": {"value": live.energy_import_wh, "unit": "Wh", "name": "active energy import"},
            "1-b:2.8.0": {"value": live.energy_export_wh, "unit": "Wh", "name": "active energy export"},
        },
        "power_w": live.power_w,
        "voltage_v": list(live.voltage_v),
        "current_a": list(live.current_a),
    }


async def meter_test(station: Station) -> dict[str, Any]:
    """What a technician runs when commissioning: each step, its round trip, and a plain-words verdict."""
    steps: list[dict[str, Any]] = []
    meter = station.meter

    async def step(name: str, action: Any) -> Any:
        started = time.monotonic()
        try:
            result = await action()
        except MeterError as exc:
            steps.append(
                {"step": name, "ok": False, "error": str(exc), "ms": round((time.monotonic() - started) * 1000)}
            )
            return None
        steps.append({"step": name, "ok": True, "ms": round((time.monotonic() - started) * 1000)})
        return result

    identity = await step("read identity (serial number, firmware)", meter.identity)
    key = await step("read the public key", meter.public_key)
    live = await step("read energy and live values", meter.live_values)
    ok = all(s["ok"] for s in steps)
    if ok:
        verdict = "the meter answers correctly on this line"
    elif not any(s["ok"] for s in steps):
        verdict = (
            "the meter does not answer: check wiring (A/B swapped?), the serial settings in the config "
            "(baud rate, parity) and the meter's Modbus address"
        )
    else:
        verdict = "the meter answers but some registers fail: check the meter model and register map in the config"
    return {
        "ok": ok,
        "verdict": verdict,
        "steps": steps,
        "serial": identity.serial_number if identity else None,
        "public_key": key,
        "energy_import_wh": live.energy_import_wh if live else None,
    }


class DiagnosticsServer:
    def __init__(self, station: Station, path: str) -> None:
        self.station = station
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)
        log.info("diagnostics socket listening", path=str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = await self.answer(line)
                writer.write(json.dumps(answer, default=str).encode() + b"\n")
                await writer.drain()
                if answer.get("follow"):
                    await self._follow_frames(reader, writer)
                    return
        except (ValueError, ConnectionError):  # over-long line or a client that went away
            pass
        finally:
            writer.close()

    async def _follow_frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """`diag log --follow`: one JSON line per OCPP frame until the client hangs up."""
        with self.station.connection.trace.follow() as frames:
            hangup = asyncio.ensure_future(reader.read())
            try:
                while not hangup.done():
                    next_frame = asyncio.ensure_future(frames.get())
                    await asyncio.wait([next_frame, hangup], return_when=asyncio.FIRST_COMPLETED)
                    if not next_frame.done():
                        next_frame.cancel()
                        break
                    writer.write(json.dumps({"frame": next_frame.result().as_json()}).encode() + b"\n")
                    await writer.drain()
            finally:
                hangup.cancel()

    async def answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": 'request is not JSON; send {"command": "status"}'}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'request must be an object with a "command" string'}
        command = request["command"]
        try:
            if command == "status":
                return {"ok": True, "status": status_report(self.station)}
            if command == "transactions":
                last = request.get("last", 10)
                if not isinstance(last, int) or not 1 <= last <= 1000:
                    return {"ok": False, "error": '"last" must be an integer 1..1000'}
                return {"ok": True, "transactions": recent_reports(self.station, last)}
            if command == "transaction":
                ref = request.get("id")
                if not isinstance(ref, str) or not ref:
                    return {"ok": False, "error": '"id" must be a transaction reference or CSMS transaction id'}
                report = transaction_report(self.station, ref)
                if report is None:
                    return {"ok": False, "error": f"no transaction {ref}"}
                return {"ok": True, "transaction": report}
            if command == "log":
                last = request.get("last", 50)
                if not isinstance(last, int) or not 0 <= last <= 500:
                    return {"ok": False, "error": '"last" must be an integer 0..500'}
                frames = [f.as_json() for f in self.station.connection.trace.recent(last)]
                return {"ok": True, "log": frames, "follow": request.get("follow") is True}
            if command == "export":
                return export_transaction(self.station, request.get("id"), request.get("format", "transparency-xml"))
            if command == "security-log":
                return {"ok": True, "security_log": self.station.store.security_log(100)}
            if command == "meter":
                return {"ok": True, "meter": await meter_report(self.station)}
            if command == "meter-test":
                return {"ok": True, "meter_test": await meter_test(self.station)}
        except MeterError as exc:
            return {"ok": False, "error": f"meter: {exc}"}
        return {
            "ok": False,
            "error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}",
        }
