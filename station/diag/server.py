"""The technician's local diagnostics socket: read-only reports about the running station, one JSON line each.

A Unix socket (mode 0660, so the service's group can read it) under the runtime directory. A client sends one JSON
object per line, `{"command": "status"}`, and gets one JSON object per line back (`log` with `"follow": true` then
streams one line per OCPP frame until the client hangs up). Every command here only reads: the
station's state, the store, and (for `meter-test`) the meter through the daemon's own link, which serialises requests
with the daemon's work. Nothing on this socket can start, stop or change charging. Bad requests get an error answer
and change nothing; a request is bounded in length and nesting (checked before it is parsed, so no peer makes the
parser recurse), a client that says nothing is timed out, one that does not read is dropped, and the number of
clients at once is capped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import structlog

from station.bus import PortUnavailable
from station.meter.interface import MeterError, MeterLinkError
from station.meter.ocmf import load_public_key
from station.meter.transparency import to_transparency_xml
from station.ocpp.connection import describe
from station.ocpp.trace import FollowerLagged
from station.smart.composite import CompositeSchedule, limits_at
from station.smart.profiles import ChargingProfile, Purpose, RateUnit
from station.store import StoredTransaction

if TYPE_CHECKING:
    from station.app import Station

log = structlog.get_logger("station.diag")

MAX_REQUEST = 4096
MAX_DEPTH = 8  # no command needs more than an object of scalars; deeper requests are refused unparsed
IDLE_TIMEOUT = 60.0  # seconds a client may keep a connection open without sending a request
WRITE_TIMEOUT = 30.0  # seconds a client may leave an answer (or a followed frame) unread before it is dropped
MAX_CLIENTS = 16  # connections at once; one more is told so and closed
MIN_PREFIX = 6  # hex digits of a transaction reference that may stand for it (the web page shows 8)
COMMANDS = (
    "status",
    "meter",
    "meter-test",
    "transactions",
    "transaction",
    "export",
    "log",
    "security-log",
    "schedule",
)
EXPORT_FORMATS = ("transparency-xml",)
SCHEDULE_S = 86400  # `schedule`: the composite schedule of the next 24 h
MAX_SCHEDULE_PERIODS = 1000  # periods reported per EVSE (a day of 1024-period recurring profiles may have more)


def status_report(station: Station) -> dict[str, Any]:
    runtime = station.runtime
    core = runtime.core
    connectors = []
    for number, evse_id, cid in core.layout.numbered():
        evse = core.evses[evse_id]
        tx = evse.transaction if evse.transaction is not None and evse.transaction.connector_id == cid else None
        connectors.append(
            {
                "id": number,
                "evse_id": evse_id,
                "connector_id": cid,
                "state": core.status_of(evse_id, cid).value,
                "phase": evse.phase.value,  # the EVSE's: its one meter serves one connector at a time
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
    ocpp = describe(station.connection.state, station.store.outbox_depth())
    if ocpp["last_error"]:
        ocpp["last_error_detail"] = ocpp["last_error"]
        ocpp["last_error"] = plain_csms_error(ocpp["last_error"], ocpp["url"])
    ocpp["client_certificate"] = station.connection.security.client.describe()
    meters = [_meter_report(station, evse.id) for evse in station.config.evses]
    ev = [_ev_report(station, evse.id) for evse in station.config.evses if runtime.controller_state(evse.id)]
    return {
        "station_id": station.config.station.id,
        "ocpp": ocpp,
        "meter": meters[0],  # the first EVSE's (the only one on most stations); "meters" has each EVSE's
        "meters": meters,
        "connectors": connectors,
        "ev": ev,  # each EVSE whose charge controller the station talks to: the car's side
        "failed_messages": len(station.store.failed_messages()),
    }


def _ev_report(station: Station, evse_id: int) -> dict[str, Any]:
    state = station.runtime.controller_state(evse_id)
    assert state is not None
    ev = station.runtime.core.evses[evse_id].ev
    return {
        "evse_id": evse_id,
        "controller": station.config.evse(evse_id).charge_controller.driver,
        "online": state.online,
        "pilot": state.pilot.value,
        "plugged": state.pilot.plugged,
        "relay": "closed" if state.relay_closed else "open",
        "power_allowed": ev.power_on,
        "lock": state.lock.value,
        "current_limit_a": state.current_limit_a,
        "ampacity_a": state.ampacity_a,
        "faults": {fault.value: detail for fault, detail in state.faults.items()},
        "last_error": state.last_error or None,
    }


def _meter_report(station: Station, evse_id: int) -> dict[str, Any]:
    meter = station.runtime.meter_state(evse_id)
    identity = meter.identity
    evse = station.config.evse(evse_id)
    bus = station.config.bus_of(evse)
    return {
        "evse_id": evse_id,
        "link": "up" if meter.link_up and station.runtime.core.evses[evse_id].meter_link_up else "down",
        "model": evse.meter.model,
        "bus": bus.name,
        "port": bus.port if bus.transport != "simulated" else "simulated",
        "device_id": evse.meter.device_id,
        "serial": identity.serial_number if identity else None,
        "firmware": identity.firmware_version if identity else None,
        "public_key": meter.public_key_hex or None,
        "last_error": meter.last_error or None,
    }


_ERRNO = re.compile(r"\[Errno (-?\d+)\]")


def plain_csms_error(raw: str, url: str) -> str:
    """The connection's last error in the words a technician needs: what failed, with the host, and not the
    exception's class name. Unknown kinds are passed through as they are."""
    parsed = urlparse(url)
    host = parsed.hostname or url
    where = f"{host}:{parsed.port}" if parsed.port else host
    kind, _, detail = raw.partition(": ")
    errno = int(m.group(1)) if (m := _ERRNO.search(raw)) else None
    if kind == "gaierror":
        if errno == -3:
            return f"cannot look up the CSMS host name {host} (no name server reachable?)"
        return f"CSMS host name not found: {host}"
    if kind == "ConnectionRefusedError" or errno == 111:
        return f"the CSMS refused the connection: nothing listens on {where}"
    if errno in (101, 113):
        return f"no network route to the CSMS at {where} (is the station online?)"
    if kind == "TimeoutError" or errno == 110:
        return f"the CSMS at {where} did not answer in time"
    if kind == "InvalidStatus":
        status = re.search(r"HTTP (\d{3})", detail)
        code = status.group(1) if status else "?"
        if code in ("401", "403"):
            return f"the CSMS refused this station's credentials (HTTP {code}): check the password and profile"
        return f"the CSMS answered HTTP {code} instead of opening the WebSocket: check [csms] url and [station] id"
    if kind in ("InvalidMessage", "InvalidUpgrade"):
        return f"the server at {where} does not speak WebSocket: check [csms] url"
    if kind.startswith("ConnectionClosed"):
        return f"the CSMS closed the connection ({detail})"
    if kind == "SSLCertVerificationError" or "CERTIFICATE_VERIFY_FAILED" in raw:
        return f"the CSMS certificate is not trusted ({detail})"
    if kind in ("ConnectionResetError", "BrokenPipeError"):
        return f"the connection to the CSMS at {where} broke off"
    return raw


def schedule_report(station: Station, evse_id: int | None = None) -> dict[str, Any]:
    """Issue 19 part 5: what smart charging does to each EVSE (or the one asked; 0 is the station as a whole): the
    limit handed to its charge controller now, what the profiles allow now and which profile sets it, its hardware,
    the installed profiles that apply to it, and the composite schedule of the next 24 h in amperes per phase."""
    smart = station.runtime.smart
    now = smart.clock()
    limits = smart.limits()
    ids = sorted(smart.evses) if evse_id is None else [] if evse_id == 0 else [evse_id]
    evses = []
    for e in ids:
        shape = smart.evses[e]
        profiles = [p for p in smart.book.all if p.evse_id in (0, e) and _applies_to(p, e, station)]
        evses.append(
            {
                "evse_id": e,
                "controllable": shape.controllable,
                "controller": station.config.evse(e).charge_controller.driver,
                "max_current_a": shape.max_current_a,
                "min_current_a": shape.min_current_a,
                "phases": shape.phases,
                # None: no limit (the controller's maximum); absent from `applied`: never handed one.
                "applied_a": smart.applied.get(e) if shape.controllable else None,
                "profile_limit_a": limits.per_evse_a.get(e),
                "min_rate_a": limits.min_rate_a.get(e),
                "set_by": _set_by(smart.book.all, profiles, e, limits.per_evse_a.get(e), shape.max_current_a, station),
                "profiles": [_profile_entry(p, now) for p in sorted(profiles, key=_profile_order)],
                "schedule": _schedule_entry(smart.composite(e, SCHEDULE_S, RateUnit.A)),
            }
        )
    total = None
    if evse_id in (None, 0):
        profiles = [p for p in smart.book.all if p.purpose is Purpose.STATION_MAX]
        total = {
            "evse_id": 0,
            "max_current_a": sum(s.max_current_a for s in smart.evses.values()),
            "station_cap_a": limits.station_cap_a,
            "profiles": [_profile_entry(p, now) for p in sorted(profiles, key=_profile_order)],
            "schedule": _schedule_entry(smart.composite(0, SCHEDULE_S, RateUnit.A)),
        }
    return {
        "now": now.isoformat(),
        "available": smart.available,  # whether any EVSE's current can be controlled
        "installed": len(smart.book.all),
        "nominal_voltage": smart.nominal_voltage,
        "evses": evses,
        "station": total,
    }


def _applies_to(profile: ChargingProfile, evse_id: int, station: Station) -> bool:
    if profile.purpose is not Purpose.TX:
        return True
    tx = station.runtime.core.evses[evse_id].transaction
    return tx is not None and profile.transaction_ref == tx.ref


def _profile_order(profile: ChargingProfile) -> tuple[int, int, int]:
    order = {Purpose.STATION_MAX: 0, Purpose.TX: 1, Purpose.TX_DEFAULT: 2}
    return order[profile.purpose], -profile.stack_level, profile.id


def _profile_entry(profile: ChargingProfile, now: datetime) -> dict[str, Any]:
    schedule = profile.schedule
    return {
        "id": profile.id,
        "purpose": profile.purpose.value,
        "stack_level": profile.stack_level,
        "evse_id": profile.evse_id,
        "kind": profile.kind.value,
        "recurrency": profile.recurrency.value if profile.recurrency else None,
        "valid_from": profile.valid_from.isoformat() if profile.valid_from else None,
        "valid_to": profile.valid_to.isoformat() if profile.valid_to else None,
        "valid_now": profile.valid_at(now),
        "unit": schedule.unit.value,
        "start": schedule.start.isoformat() if schedule.start else None,
        "duration": schedule.duration,
        "periods": len(schedule.periods),
        "transaction_ref": profile.transaction_ref,
        "source": profile.source,
    }


def _set_by(
    book: tuple[ChargingProfile, ...],
    candidates: list[ChargingProfile],
    evse_id: int,
    limit: float | None,
    hardware: float,
    station: Station,
) -> list[int]:
    """The profiles that set the EVSE's limit now: those without which it would be different; at a tie (two give the
    same limit), those that alone would give it. None when the hardware maximum is the limit."""
    if limit is None or limit >= hardware:
        return []
    smart = station.runtime.smart
    now, site = smart.clock(), smart.site()
    binding = [
        p.id
        for p in candidates
        if limits_at([q for q in book if q.id != p.id], now, site).per_evse_a.get(evse_id) != limit
    ]
    if binding:
        return binding
    return [p.id for p in candidates if limits_at([p], now, site).per_evse_a.get(evse_id) == limit]


def _schedule_entry(composite: CompositeSchedule) -> dict[str, Any]:
    periods = composite.periods[:MAX_SCHEDULE_PERIODS]
    return {
        "start": composite.start.isoformat(),
        "duration": composite.duration,
        "unit": composite.unit.value,
        "min_rate": composite.min_rate,
        "periods": [
            {
                "start": p.start,
                "at": (composite.start + timedelta(seconds=p.start)).isoformat(),
                "limit": p.limit,
                "phases": p.phases,
            }
            for p in periods
        ],
        "truncated": len(composite.periods) > len(periods),
    }


class AmbiguousReference(LookupError):
    pass


def transaction_report(station: Station, ref: str) -> dict[str, Any] | None:
    """One transaction by our reference, a unique start of it (at least MIN_PREFIX hex digits, as the web page shows
    them), or the CSMS's transaction id. Raises AmbiguousReference when a start fits more than one."""
    stored = station.store.transaction(ref)
    if stored is None:
        recent = station.store.recent_transactions(1000)
        stored = next((c for c in recent if c.csms_transaction_id == ref), None)
        prefix = ref.lower()
        if stored is None and len(prefix) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in prefix):
            matches = [c for c in recent if c.transaction.ref.startswith(prefix)]
            if len(matches) > 1:
                refs = ", ".join(m.transaction.ref for m in matches[:5])
                raise AmbiguousReference(f"{ref} is the start of {len(matches)} transactions ({refs}); give more")
            stored = matches[0] if matches else None
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
        "evse_id": tx.evse_id,
        "connector_id": tx.connector_id,
        # The meter that metered and signed it, stored with it; None for a transaction stored before schema 3.
        "meter": None
        if tx.meter is None
        else {
            "model": tx.meter.model,
            "serial": tx.meter.serial,
            "firmware": tx.meter.firmware,
            "public_key": tx.meter.public_key,
        },
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
    """A transaction's signed records with the public key of the meter that signed them (stored with the
    transaction) in the Transparenzsoftware's XML container, so a driver can check the bill with the official tool.
    Only a transaction stored before transactions remembered their meter gets the key of the meter in place now,
    and the answer says so (`key_source`)."""
    if not isinstance(ref, str) or not ref:
        return {"ok": False, "error": '"id" must be a transaction reference or CSMS transaction id'}
    if fmt not in EXPORT_FORMATS:
        return {"ok": False, "error": f"unknown format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}"}
    try:
        report = transaction_report(station, ref)
    except AmbiguousReference as exc:
        return {"ok": False, "error": str(exc)}
    if report is None:
        return {"ok": False, "error": f"no transaction {ref}"}
    if not report["records"]:
        return {"ok": False, "error": f"transaction {ref} has no signed record (yet)"}
    stamp = report["meter"]
    if stamp is not None and stamp["public_key"]:
        key_hex, key_source = stamp["public_key"], "transaction"
    else:
        key_hex, key_source = station.runtime.meter_key(report["evse_id"]), "current meter"
        if not key_hex:
            return {"ok": False, "error": "the meter's public key is not known yet (meter not read since start)"}
    entries = [(r["context"], r["data"]) for r in report["records"]]
    xml = to_transparency_xml(entries, load_public_key(key_hex), report["csms_transaction_id"] or report["ref"])
    return {"ok": True, "export": xml, "verified": report["verified"], "key_source": key_source}


async def meter_report(station: Station, evse_id: int = 1) -> dict[str, Any]:
    meter = station.meters[evse_id]
    live = await meter.live_values()
    identity = await meter.identity()
    return {
        "evse_id": evse_id,
        "model": station.config.evse(evse_id).meter.model,
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


async def meter_test(station: Station, evse_id: int = 1) -> dict[str, Any]:
    """What a technician runs when commissioning (one EVSE's meter): each step, its round trip, and a plain-words
    verdict."""
    steps: list[dict[str, Any]] = []
    meter = station.meters[evse_id]

    causes: list[MeterError] = []

    async def step(name: str, action: Any) -> Any:
        started = time.monotonic()
        try:
            result = await action()
        except MeterError as exc:
            causes.append(exc)
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
    # The advice must fit the cause: no wiring hint when the port itself cannot be opened.
    if ok:
        verdict = "the meter answers correctly on this line"
    elif any(isinstance(c, PortUnavailable) for c in causes):
        verdict = next(str(c) for c in causes if isinstance(c, PortUnavailable))
    elif not any(s["ok"] for s in steps) and all(isinstance(c, MeterLinkError) for c in causes):
        verdict = (
            "the meter does not answer: check wiring (A/B swapped?), the serial settings in the config "
            "(baud rate, parity) and the meter's Modbus address"
        )
    else:
        verdict = "the meter answers but some registers fail: check the meter model and register map in the config"
    return {
        "ok": ok,
        "evse_id": evse_id,
        "verdict": verdict,
        "steps": steps,
        "serial": identity.serial_number if identity else None,
        "public_key": key,
        "energy_import_wh": live.energy_import_wh if live else None,
    }


async def _until_hangup(reader: asyncio.StreamReader) -> None:
    """Whatever a follower sends is read and dropped (not buffered) until it hangs up."""
    while await reader.read(MAX_REQUEST):
        pass


def too_deep(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests deeper than `limit`, by one pass over the bytes (strings skipped), so that the
    recursive parser never sees a request that could exhaust the stack."""
    depth = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


class DiagnosticsServer:
    def __init__(
        self,
        station: Station,
        path: str,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.station = station
        self.path = Path(path)
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.max_clients = max_clients
        self.clients = 0
        self._saturated = False
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
        if self.clients >= self.max_clients:
            if not self._saturated:  # once per episode: a flood of connections is not also a flood of log lines
                self._saturated = True
                log.warning("diagnostics socket: too many clients", limit=self.max_clients)
            with suppress(ConnectionError, TimeoutError):  # not counted, so not allowed to linger either
                writer.write(
                    json.dumps({"ok": False, "error": f"too many clients at once ({self.max_clients})"}).encode()
                )
                writer.write(b"\n")
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            return
        self.clients += 1
        self._saturated = False
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except TimeoutError:
                    await self._send(writer, {"ok": False, "error": f"no request for {self.idle_timeout:g} s; bye"})
                    return
                except ValueError:  # the line is longer than the stream's limit
                    await self._send(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
                    return
                if not line:
                    return
                answer = await self.answer(line)
                await self._send(writer, answer)
                if answer.get("follow"):
                    await self._follow_frames(reader, writer)
                    return
        except (ConnectionError, TimeoutError):  # a client that went away, or one that does not read its answers
            pass
        finally:
            self.clients -= 1
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer, default=str).encode() + b"\n")
        await asyncio.wait_for(writer.drain(), self.write_timeout)

    async def _follow_frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """`diag log --follow`: one JSON line per OCPP frame until the client hangs up."""
        with self.station.connection.trace.follow() as frames:
            hangup = asyncio.ensure_future(_until_hangup(reader))
            try:
                while not hangup.done():
                    next_frame = asyncio.ensure_future(frames.get())
                    await asyncio.wait([next_frame, hangup], return_when=asyncio.FIRST_COMPLETED)
                    if not next_frame.done():
                        next_frame.cancel()
                        break
                    try:
                        frame = next_frame.result()
                    except FollowerLagged as exc:  # it did not read: told why (if it reads that), then closed
                        with suppress(ConnectionError, TimeoutError):
                            writer.write(json.dumps({"ok": False, "error": f"log --follow: {exc}"}).encode() + b"\n")
                            await asyncio.wait_for(writer.drain(), 1.0)
                        return
                    await self._send(writer, {"frame": frame.as_json()})
            finally:
                hangup.cancel()

    async def answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        if too_deep(line):
            return {"ok": False, "error": f"request nested deeper than {MAX_DEPTH} levels"}
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
                try:
                    report = transaction_report(self.station, ref)
                except AmbiguousReference as exc:
                    return {"ok": False, "error": str(exc)}
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
            if command == "schedule":
                evse = request.get("evse")
                known_evses = sorted(self.station.runtime.smart.evses)
                if evse is not None and (type(evse) is not int or evse not in (0, *known_evses)):
                    known = ", ".join(str(e) for e in known_evses)
                    return {"ok": False, "error": f'"evse" must be one of the EVSE ids {known} (0: the station)'}
                return {"ok": True, "schedule": schedule_report(self.station, evse)}
            if command in ("meter", "meter-test"):
                evse = request.get("evse", 1)
                if isinstance(evse, bool) or evse not in self.station.meters:
                    known = ", ".join(str(e) for e in self.station.meters)
                    return {"ok": False, "error": f'"evse" must be one of the EVSE ids {known}'}
                if command == "meter":
                    return {"ok": True, "meter": await meter_report(self.station, evse)}
                return {"ok": True, "meter_test": await meter_test(self.station, evse)}
        except MeterError as exc:
            return {"ok": False, "error": f"meter: {exc}"}
        return {
            "ok": False,
            "error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}",
        }
