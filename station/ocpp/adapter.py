"""What the connection needs from a protocol adapter (one per OCPP version), and what both adapters share.

Owns the rules of the OCPP-J RPC framework that are the same in both versions but spelled per version: which
CALLERROR code a frame gets (1.6 OCPP-J §4.2.3 Table 7 with its errata; 2.0.1 Part 4 §4.3), that an unknown action
is NotImplemented and a known one without a handler NotSupported, what a frame of an unknown message type gets, and
that nothing the CSMS initiates is answered while the last BootNotification was Rejected. Also the one formatter of
every timestamp the station sends. It must never carry out a request itself: the adapters' handlers do that.
"""

from __future__ import annotations

import asyncio
import decimal
import functools
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, get_validator

from station.core.model import ReportStatus, Transaction
from station.store import IdTagEntry, OutboxMessage

if TYPE_CHECKING:
    from station.firmware.update import FirmwareUpdater
    from station.logupload.service import LogUploads
    from station.ocpp.security import Security
    from station.ocpp.settings import Settings
    from station.runtime import StationRuntime
    from station.store import Store

log = structlog.get_logger("station.ocpp")


async def let_started_work_begin() -> None:
    """Yield once to the event loop before answering a request that started meter work (a remote start or stop): the
    work takes its first step, which puts its first frame on the meter's line, and the answer (the library validates
    and encodes it, and the socket takes it: about a millisecond) is sent while that frame is on the wire instead of
    before it. The work needs at least one answer from the meter before it can do anything the CSMS sees, so
    whatever the handler does after this still happens first."""
    await asyncio.sleep(0)


class BootRefused(Exception):
    """BootNotification answered Pending or Rejected: retry after `interval`, no charging before Accepted."""

    def __init__(self, status: str, interval: int) -> None:
        self.status = status
        self.interval = interval
        super().__init__(f"BootNotification {status}, retry in {interval} s")


@dataclass(frozen=True)
class Delivery:
    """What the CSMS's answer to an outbox message taught, stored with the message's removal in one commit."""

    csms_transaction: tuple[str, str] | None = None  # (our ref, the CSMS's transaction id)
    transaction_done: str | None = None  # our ref: its last message is through


class CsmsAdapter(Protocol):
    version: str
    registration: str | None
    accepted: asyncio.Event
    boot_interval: int

    async def start(self) -> None:
        """Read and route frames until the connection closes."""

    async def boot(self, reason: str = "PowerUp") -> int:
        """BootNotification; the heartbeat interval when Accepted, BootRefused otherwise."""

    async def heartbeat(self) -> None: ...

    async def authorize(self, id_tag: str) -> IdTagEntry | None:
        """Ask the CSMS about an identifier; None when it cannot answer."""

    async def status(self, report: ReportStatus) -> None: ...

    async def deliver(self, message: OutboxMessage) -> Delivery:
        """Send one outbox entry; returns when the CSMS answered with a CALLRESULT (raises on CALLERROR/timeout)."""

    async def sign_certificate(self, csr: str) -> bool:
        """SignCertificate with a PEM CSR for the client certificate; True when the CSMS accepted it."""


def signing_key(runtime: StationRuntime, tx: Transaction) -> str:
    """The public key of the meter that signed a transaction's records: the one stored with the transaction (a meter
    swapped since keeps old bills verifiable), else, for transactions stored before meters were stamped, the key of
    its EVSE's meter now."""
    if tx.meter is not None and tx.meter.public_key:
        return tx.meter.public_key
    return runtime.meter_key(tx.evse_id)


def body_evse(body: dict[str, Any]) -> int:
    """The EVSE a queued reading belongs to; readings queued before EVSEs existed named connector 1 of EVSE 1."""
    return int(body.get("evse_id", body.get("connector_id", 1)))


def iso(at: datetime | None) -> str:
    """Every timestamp the station sends, in both versions: UTC, millisecond precision, with a Z. 2.0.1 Part 2 §2.1
    (dateTime) allows at most three decimals; CitrineOS refuses six with FormatViolation."""
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Settings a security event's techInfo names by their 1.6 key (station/ocpp/security.py), as 2.0.1 names them.
TECH_INFO_NAMES_201 = {
    "AuthorizationKey": "SecurityCtrlr.BasicAuthPassword",
    "SecurityProfile": "SecurityCtrlr.SecurityProfile",
}


# 2.0.1 security event names whose 1.6 names (security whitepaper ed. 3 §8) differ by more than Csms/CentralSystem
EVENT_NAMES_16 = {
    "FailedToAuthenticateAtCsms": "FailedToAuthenticationAtCentralSystem",
    "InvalidChargingStationCertificate": "InvalidChargePointCertificate",
}


def security_event_fields(body: dict[str, Any], version: str) -> dict[str, Any]:
    """SecurityEventNotification from a queued security event (station/store/). The 1.6 Security Whitepaper names
    the CSMS "CentralSystem" where 2.0.1 says "Csms" (InvalidCentralSystemCertificate / InvalidCsmsCertificate), and a
    setting has its 1.6 key or its 2.0.1 component.variable in techInfo."""
    kind = str(body["type"])
    tech_info = str(body.get("techInfo") or "")
    if version != "1.6":
        for key, name in TECH_INFO_NAMES_201.items():
            if tech_info.startswith(f"{key} "):
                tech_info = name + tech_info[len(key) :]
    return {
        "type": EVENT_NAMES_16.get(kind, kind.replace("Csms", "CentralSystem")) if version == "1.6" else kind,
        "timestamp": iso(datetime.fromisoformat(str(body["timestamp"]).replace("Z", "+00:00"))),
        "tech_info": tech_info[:255] or None,
    }


# ---------------------------------------------------------------------- the RPC framework's error codes

# What kind of rule a payload broke -> the code each version has for it. 1.6 keeps its misspellings (OCPP-J 1.6
# errata §5.1/§5.2: FormationViolation, OccurenceConstraintViolation are the wire values); 2.0.1 Part 4 §4.3 has
# FormatViolation and ProtocolError ("not conform the PDU structure") where 1.6 has only FormationViolation.
ERROR_CODES: dict[str, dict[str, str]] = {
    "1.6": {
        "syntax": "FormationViolation",
        "structure": "FormationViolation",
        "occurrence": "OccurenceConstraintViolation",
        "property": "PropertyConstraintViolation",
        "type": "TypeConstraintViolation",
    },
    "2.0.1": {
        "syntax": "FormatViolation",
        "structure": "ProtocolError",
        "occurrence": "OccurrenceConstraintViolation",
        "property": "PropertyConstraintViolation",
        "type": "TypeConstraintViolation",
    },
}

# JSON-schema keyword that failed -> kind of rule. A value outside its enumeration is an invalid value
# (PropertyConstraintViolation); a string over its CiString length breaks its data type.
SCHEMA_RULES = {
    "type": "type",
    "maxLength": "type",
    "minLength": "type",
    "pattern": "type",
    "format": "type",
    "required": "occurrence",
    "minItems": "occurrence",
    "maxItems": "occurrence",
    "uniqueItems": "occurrence",
    "enum": "property",
    "minimum": "property",
    "maximum": "property",
    "exclusiveMinimum": "property",
    "exclusiveMaximum": "property",
    "multipleOf": "property",
    "additionalProperties": "structure",
}


@functools.cache
def known_actions(version: str) -> frozenset[str]:
    """Every action of the version's specification (the `ocpp` library's enum), imported for the version spoken."""
    if version == "1.6":
        from ocpp.v16.enums import Action as Action16

        return frozenset(str(a.value) for a in Action16)
    from ocpp.v201.enums import Action as Action201

    return frozenset(str(a.value) for a in Action201)


class CallRefused(Exception):
    """A CALL from the CSMS that gets a CALLERROR instead of a handler: `code` is the version's error code."""

    def __init__(self, code: str, description: str) -> None:
        self.code = code
        self.description = description
        super().__init__(f"{code}: {description}")


def schema_error(version: str, action: str, payload: dict[str, Any]) -> CallRefused | None:
    """The CALLERROR a request payload earns under its JSON schema, or None when it is valid. The description names
    the rule and where, never the value (which may be a secret)."""
    parse_float: Any = float
    if version == "1.6" and action in ("SetChargingProfile", "RemoteStartTransaction"):
        # As the library does: those schemas check multipleOf 0.1, which only holds for decimals.
        parse_float = decimal.Decimal
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    try:
        validator = get_validator(2, action, version, parse_float=parse_float)
    except (OSError, ValueError):
        return None
    error = best_match(validator.iter_errors(payload))
    if error is None:
        return None
    rule = SCHEMA_RULES.get(str(error.validator), "syntax")
    where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
    return CallRefused(ERROR_CODES[version][rule], f"{action}: {error.validator} violated at {where}"[:255])


class RpcRules:
    """Mixed in before the `ocpp` library's ChargePoint in both adapters: routes every frame the CSMS sends by the
    RPC framework's rules of the adapter's version and answers what the library would answer wrongly."""

    version: str
    registration: str | None = None  # status of the last BootNotification answer (None: not answered yet)
    route_map: dict[str, dict[str, Any]]
    runtime_ready: asyncio.Event | None = None  # set once the runtime has started: CSMS requests wait for it

    if TYPE_CHECKING:  # the `ocpp` library's ChargePoint provides these; declared for the type checker only

        async def _send(self, message: str) -> None: ...

        async def _handle_call(self, msg: Call) -> Any: ...

    async def _send_error(self, unique_id: str, code: str, description: str) -> None:
        await self._send(json.dumps([4, unique_id, code, description[:255], {}], separators=(",", ":")))

    def call_limits(self, action: str, payload: dict[str, Any], size: int) -> CallRefused | None:
        """Limits an adapter announces (2.0.1 ItemsPerMessage / BytesPerMessage); None when the request is within."""
        return None

    def not_offered(self) -> frozenset[str]:
        """Actions this station's hardware cannot carry out although the adapter has handlers for them (smart
        charging without a controller that sets the current): answered NotSupported (2.0.1 K01.FR.29)."""
        return frozenset()

    async def route_message(self, raw_msg: str | bytes) -> None:
        try:
            msg = json.loads(raw_msg)
        except (ValueError, TypeError, RecursionError):
            msg = None
        if not isinstance(msg, list) or not msg:
            await self._unreadable("not a JSON array")
            return
        kind = msg[0]
        unique_id = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
        if type(kind) is int and kind in (3, 4):
            await super().route_message(raw_msg)  # type: ignore[misc]  # answers to our CALLs: the library's queue
            return
        if type(kind) is not int or kind != 2:
            # 2.0.1 Part 4 §4.4: an unknown message type gets MessageTypeNotSupported. 1.6 defines no such code
            # and no answer: the frame is ignored (OCPP-J 1.6 §4.1.3 lists the only three types).
            log.info("CSMS frame of an unknown message type", message_type=repr(kind)[:20], version=self.version)
            if self.version != "1.6":
                await self._send_error(unique_id or "-1", "MessageTypeNotSupported", f"message type {kind!r}"[:60])
            return
        if self.registration == "Rejected" and self.version == "1.6":
            # 1.6 §4.2: "While Rejected, the Charge Point SHALL NOT respond to any Central System initiated message."
            log.info("CSMS request not answered: the CSMS rejected our boot (1.6 §4.2)", action=str(msg[2:3])[:40])
            return
        if unique_id is None or len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
            if unique_id is None:
                await self._unreadable("CALL without a readable message id")
            else:
                code = "FormationViolation" if self.version == "1.6" else "RpcFrameworkError"
                await self._send_error(unique_id, code, "a CALL is [2, messageId, action, {payload}]")
            return
        action, payload = str(msg[2]), msg[3]
        size = len(raw_msg.encode("utf-8", "replace")) if isinstance(raw_msg, str) else len(raw_msg)
        try:
            self._check_call(action, payload, size)
        except CallRefused as refused:
            # A plain line: refusing what the station does not do is normal operation, not an error.
            log.info("CSMS request refused", action=action[:40], code=refused.code, reason=refused.description)
            await self._send_error(unique_id, refused.code, refused.description)
            return
        if self.runtime_ready is not None and not self.runtime_ready.is_set():
            # The connection dials while the runtime starts: a request answered before it is ready could see a meter
            # without its key or a transaction not restored yet. It waits (the frames after it too, in order).
            await self.runtime_ready.wait()
        try:
            await self._handle_call(Call(unique_id, action, payload))
        except OCPPError as exc:
            # The request passed its schema above: what the library refuses now is our own answer, a bug of ours.
            log.error("the answer to a CSMS request failed its schema", action=action, error=str(exc.description)[:200])
            await self._send_error(unique_id, "InternalError", "the station could not answer this request")

    def _check_call(self, action: str, payload: dict[str, Any], size: int) -> None:
        if self.registration == "Rejected":
            raise CallRefused("SecurityError", "BootNotification was Rejected")  # 2.0.1 B03.FR.08
        if action not in self.route_map or action in self.not_offered():
            if action in known_actions(self.version):
                raise CallRefused("NotSupported", f"{action} is not supported by this station"[:255])
            raise CallRefused("NotImplemented", f"{action[:60]!r} is not a known action")
        limits = self.call_limits(action, payload, size)
        if limits is not None:
            raise limits
        error = schema_error(self.version, action, payload)
        if error is not None:
            raise error

    async def _unreadable(self, why: str) -> None:
        """A frame whose message id cannot be read: 2.0.1 Part 4 §4.2.3 answers with message id "-1"; 1.6 has no such
        rule and ignores it."""
        log.info("CSMS frame is not a readable OCPP-J message", reason=why, version=self.version)
        if self.version != "1.6":
            await self._send_error("-1", "RpcFrameworkError", why)


class AdapterBase(RpcRules):
    """Both adapters' constructor: the station's parts the connection hands in, and what every session keeps (the
    last boot's answer, the follow-up work of requests). Before the `ocpp` library's ChargePoint in each adapter."""

    def __init__(
        self,
        station_id: str,
        connection: Any,
        *,
        runtime: StationRuntime,
        store: Store,
        settings: Settings,
        vendor: str,
        model: str,
        response_timeout: float,
        signed_value_format: str = "oca",
        firmware: FirmwareUpdater | None = None,
        log_uploads: LogUploads | None = None,
        security: Security | None = None,  # ---- certificates
    ) -> None:
        # The library's ChargePoint, next in each adapter's order.
        super().__init__(station_id, connection, response_timeout=response_timeout)  # type: ignore[call-arg]
        self.runtime = runtime
        self.runtime_ready = runtime.ready
        self.store = store
        self.settings = settings
        self.vendor = vendor
        self.model = model
        self.raw_signed_values = signed_value_format == "raw"  # 1.6 only: 2.0.1 has a typed signedMeterValue
        self.firmware = firmware  # ---- firmware update (station/firmware/)
        self.log_uploads = log_uploads
        self.security = security  # ---- certificates
        self.follow_ups = FollowUps()
        self.registration: str | None = None  # status of the last BootNotification answer
        self.accepted = asyncio.Event()  # set when a BootNotification (also a triggered one) was Accepted
        self.boot_interval = 0


class FollowUps:
    """Work a CSMS request asks for after its answer has gone out (a triggered message, a report): run in tasks,
    because a handler that awaits a CALL deadlocks the `ocpp` library's receive loop.

    Bounded, because the CSMS decides how often it asks: work with the same name (one kind of triggered message for
    one connector, one report) that is still pending is not queued again (5,000 TriggerMessages once queued 1,250
    BootNotifications and held up the next session for 12 s), and at most `MAX_PENDING` pieces of work wait at a
    time; beyond that the request is refused (`later` returns False) so the adapter can answer Rejected."""

    MAX_PENDING = 32

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.coalesced = 0  # requests that found the same work already pending
        self.refused = 0  # requests refused because too much work was pending

    def later(self, coro: Coroutine[Any, Any, Any], what: str) -> bool:
        """Run `coro` once the answer is out. False when it was not queued: the same work is already pending (it
        will do what this request asks) or too much is pending."""
        if what in self._tasks:
            coro.close()
            self.coalesced += 1
            return True
        if len(self._tasks) >= self.MAX_PENDING:
            coro.close()
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("follow-up work refused: too much pending", what=what, refused=self.refused)
            return False

        async def run() -> None:
            await asyncio.sleep(0)  # let the answer go out first
            try:
                await coro
            except Exception as exc:
                log.warning("follow-up message failed", what=what, error=repr(exc)[:300])

        task = asyncio.create_task(run(), name=what)
        self._tasks[what] = task
        task.add_done_callback(lambda done: self._tasks.pop(what, None) if self._tasks.get(what) is done else None)
        return True

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def send_statuses(
        self, reports: list[ReportStatus], send: Callable[[ReportStatus], Awaitable[None]], what: str
    ) -> bool:
        """StatusNotifications the CSMS asked for (TriggerMessage), one after another."""

        async def run() -> None:
            for report in reports:
                await send(report)

        return self.later(run(), what)


# ---------------------------------------------------------------------- readings as measurands

ENERGY = "Energy.Active.Import.Register"
PHASES_VOLTAGE = ("L1-N", "L2-N", "L3-N")
PHASES_CURRENT = ("L1", "L2", "L3")


def measured(body: dict[str, Any], measurands: list[str]) -> list[tuple[str, str | None, float, str]]:
    """(measurand, phase, value, unit) of a queued reading (station/runtime/sampling.py `reading`) for exactly the
    measurands configured, in their order; voltage and current per phase (1.6 §3.16.3: every phase the meter
    measures)."""
    values: list[tuple[str, str | None, float, str]] = []
    for measurand in measurands:
        if measurand == ENERGY and "energy_wh" in body:
            values.append((measurand, None, float(body["energy_wh"]), "Wh"))
        elif measurand == "Energy.Active.Export.Register" and "export_wh" in body:
            values.append((measurand, None, float(body["export_wh"]), "Wh"))
        elif measurand == "Power.Active.Import" and "power_w" in body:
            values.append((measurand, None, float(body["power_w"]), "W"))
        elif measurand == "Voltage":
            values.extend(
                (measurand, p, float(v), "V") for p, v in zip(PHASES_VOLTAGE, body.get("voltage_v", []), strict=False)
            )
        elif measurand == "Current.Import":
            values.extend(
                (measurand, p, float(a), "A") for p, a in zip(PHASES_CURRENT, body.get("current_a", []), strict=False)
            )
    return values


# ---- reservations (1.6 §6.37 expiryDate, 2.0.1 ReserveNowRequest expiryDateTime)


def reservation_expiry(text: str) -> datetime:
    """A reservation's expiry as the CSMS sent it (RFC 3339; one without an offset is taken as UTC)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
