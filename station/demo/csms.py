"""A small local CSMS (OCPP 1.6J and 2.0.1) on loopback, built on the `ocpp` library.

The demo drives a session with it, and the tests use it as the real WebSocket peer: it records every CALL the station
sends exactly as it arrived on the wire (after the library's schema validation), answers like a well-behaved CSMS,
and can be told to answer CALLERROR to chosen actions. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import json
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import structlog
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

log = structlog.get_logger("station.demo.csms")


@dataclass
class Received:
    station_id: str
    action: str
    payload: dict[str, Any]
    unique_id: str
    at: datetime
    # Answered with an injected CALLERROR, so not processed. Per copy: a station may send the same message id again
    # (a retry after a dropped connection), and the CSMS processes that copy.
    refused: bool = False


@dataclass
class CsmsBehaviour:
    boot_status: str = "Accepted"
    heartbeat_interval: int = 60
    call_errors: dict[str, int] = field(default_factory=dict)  # action -> how many of the next ones get a CALLERROR
    silent: dict[str, int] = field(default_factory=dict)  # action -> how many of the next ones get no answer
    late: dict[str, float] = field(default_factory=dict)  # action -> the next one is answered this many seconds late
    # 1.6: send RemoteStopTransaction for the transaction id being assigned *before* answering StartTransaction
    stop_before_start_answer: bool = False
    # The status of the next BootNotifications, one per boot (then `boot_status`); `boot_status` answers the rest.
    boot_statuses: list[str] = field(default_factory=list)
    # The idTagInfo / idTokenInfo status of transaction answers (StartTransaction, TransactionEvent), and the 1.6
    # transactionId given with a status that is not Accepted (CitrineOS gives 0 to an Invalid idTag).
    id_status: str = "Accepted"
    refused_transaction_id: int | None = None
    # The answer to SignCertificate; when Accepted and the CSMS has a `signer`, CertificateSigned follows.
    sign_certificate_status: str = "Accepted"


def _note_violation(csms: LocalCsms, frame: str) -> None:
    """A CALLERROR the library produced for a station frame (schema violation, unknown action, ...) is a protocol
    violation by the station: tests assert there are none."""
    try:
        msg = json.loads(frame)
    except json.JSONDecodeError:
        return
    if isinstance(msg, list) and msg and msg[0] == 4:
        csms.violations.append(frame)


async def _intercept(side: Any, csms: LocalCsms, raw_msg: str) -> bool:
    """Record a CALL as it arrived and apply the injected behaviour; True when the library should still route it."""
    csms.frames.append((side.id, raw_msg))
    try:
        msg = json.loads(raw_msg)
    except json.JSONDecodeError:
        msg = None
    if isinstance(msg, list) and len(msg) == 3 and msg[0] == 3 and str(msg[1]).startswith("raw-"):
        csms.raw_results[str(msg[1])] = msg[2]
        csms.notify_soon()
        return False
    if isinstance(msg, list) and len(msg) >= 2 and msg[0] == 4 and (str(msg[1]).startswith("raw-") or msg[1] == "-1"):
        csms.raw_errors.append(msg)  # the station's CALLERROR to a raw frame
        csms.notify_soon()
        return False
    if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2:
        action = str(msg[2])
        received = Received(side.id, action, msg[3], str(msg[1]), datetime.now(UTC))
        csms.record(received)
        b = csms.behaviour
        if action == "StartTransaction" and b.stop_before_start_answer:
            b.stop_before_start_answer = False
            transaction_id = next(csms.transaction_ids)
            csms.transaction_by_message_id[str(msg[1])] = transaction_id
            csms.assigned_transaction_ids.append(transaction_id)
            frame = [2, f"raw-stop-{transaction_id}", "RemoteStopTransaction", {"transactionId": transaction_id}]
            await side._send(json.dumps(frame))
        if action in b.late:
            await asyncio.sleep(b.late.pop(action))
            if received.unique_id in csms.refused:
                # A copy of this message was refused while this one waited: the CSMS said it did not take this
                # message id, so it does not take it now either (else one record would arrive twice, once under the
                # station's retry id after that CALLERROR).
                received.refused = True
                return False
        if b.silent.get(action, 0) > 0:
            b.silent[action] -= 1
            return False
        # A message id the CSMS has already taken is answered as a repeat, never refused: a CSMS that processed a
        # message and then told the station it did not would make the station send it again under a new id.
        if b.call_errors.get(action, 0) > 0 and received.unique_id not in csms.taken_ids:
            b.call_errors[action] -= 1
            received.refused = True
            csms.refused.add(received.unique_id)
            await side._connection.send(json.dumps([4, msg[1], "InternalError", "injected failure", {}]))
            return False
        csms.taken_ids.add(received.unique_id)
    return True


class _CentralSystemSide(ChargePoint):  # type: ignore[misc]
    """One connected 1.6 station, seen from the CSMS."""

    async def _send(self, message: str) -> None:
        _note_violation(self.csms, message)
        await super()._send(message)

    version = "1.6"

    def __init__(self, station_id: str, connection: ServerConnection, csms: LocalCsms) -> None:
        super().__init__(station_id, connection, response_timeout=30)
        self.csms = csms
        self._tx_ids = csms.transaction_ids

    async def route_message(self, raw_msg: str) -> None:
        if await _intercept(self, self.csms, raw_msg):
            await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> call_result.BootNotification:
        return call_result.BootNotification(
            current_time=_now(),
            interval=self.csms.behaviour.heartbeat_interval,
            status=RegistrationStatus(self.csms.next_boot_status()),
        )

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    def on_status(self, **_: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start_transaction(self, call_unique_id: str, **_: Any) -> call_result.StartTransaction:
        # A repeat of a message we already answered (same message id, e.g. resent after the station restarted
        # before it saw our answer) is the same transaction: answer it the same way.
        known = self.csms.transaction_by_message_id.get(call_unique_id)
        if known is not None:
            return call_result.StartTransaction(
                transaction_id=known, id_tag_info={"status": AuthorizationStatus.accepted}
            )
        status = self.csms.behaviour.id_status
        transaction_id = next(self._tx_ids)
        if status != "Accepted" and self.csms.behaviour.refused_transaction_id is not None:
            transaction_id = self.csms.behaviour.refused_transaction_id
        self.csms.transaction_by_message_id[call_unique_id] = transaction_id
        self.csms.assigned_transaction_ids.append(transaction_id)
        self.csms.notify_soon()
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info={"status": status})

    @on(Action.stop_transaction)
    def on_stop_transaction(self, **_: Any) -> call_result.StopTransaction:
        return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.security_event_notification)
    def on_security_event(self, **_: Any) -> call_result.SecurityEventNotification:
        return call_result.SecurityEventNotification()

    # ---- firmware update
    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()

    @on(Action.signed_firmware_status_notification)
    def on_signed_firmware_status(self, **_: Any) -> call_result.SignedFirmwareStatusNotification:
        return call_result.SignedFirmwareStatusNotification()

    # ---- log upload (GetDiagnostics / GetLog statuses)

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **_: Any) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status(self, **_: Any) -> call_result.LogStatusNotification:
        return call_result.LogStatusNotification()

    # ---- client certificate renewal (security whitepaper A02/A03)

    @on(Action.sign_certificate)
    def on_sign_certificate(self, csr: str, **_: Any) -> call_result.SignCertificate:
        status = self.csms.behaviour.sign_certificate_status
        if status == "Accepted":
            self.csms.sign_later(self.id, csr)
        return call_result.SignCertificate(status=status)


class _CentralSystemSide201(ChargePoint201):  # type: ignore[misc]
    """One connected 2.0.1 station, seen from the CSMS."""

    async def _send(self, message: str) -> None:
        _note_violation(self.csms, message)
        await super()._send(message)

    version = "2.0.1"

    def __init__(self, station_id: str, connection: ServerConnection, csms: LocalCsms) -> None:
        super().__init__(station_id, connection, response_timeout=30)
        self.csms = csms

    async def route_message(self, raw_msg: str) -> None:
        if await _intercept(self, self.csms, raw_msg):
            await super().route_message(raw_msg)

    @on(Action201.boot_notification)
    def on_boot(self, **_: Any) -> result201.BootNotification:
        return result201.BootNotification(
            current_time=_now(),
            interval=self.csms.behaviour.heartbeat_interval,
            status=self.csms.next_boot_status(),
        )

    @on(Action201.heartbeat)
    def on_heartbeat(self) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=_now())

    @on(Action201.status_notification)
    def on_status(self, **_: Any) -> result201.StatusNotification:
        return result201.StatusNotification()

    @on(Action201.notify_event)
    def on_notify_event(self, **_: Any) -> result201.NotifyEvent:
        return result201.NotifyEvent()

    @on(Action201.notify_report)
    def on_notify_report(self, **_: Any) -> result201.NotifyReport:
        return result201.NotifyReport()

    @on(Action201.authorize)
    def on_authorize(self, **_: Any) -> result201.Authorize:
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on(Action201.meter_values)
    def on_meter_values(self, **_: Any) -> result201.MeterValues:
        return result201.MeterValues()

    @on(Action201.transaction_event)
    def on_transaction_event(
        self, event_type: str, transaction_info: dict[str, Any], **_: Any
    ) -> result201.TransactionEvent:
        if event_type == "Started" and transaction_info["transaction_id"] not in self.csms.started_transactions:
            self.csms.started_transactions.append(transaction_info["transaction_id"])
        if event_type == "Ended":
            return result201.TransactionEvent()
        return result201.TransactionEvent(id_token_info={"status": self.csms.behaviour.id_status})

    @on(Action201.notify_customer_information)
    def on_notify_customer_information(self, **_: Any) -> result201.NotifyCustomerInformation:
        return result201.NotifyCustomerInformation()

    @on(Action201.security_event_notification)
    def on_security_event(self, **_: Any) -> result201.SecurityEventNotification:
        return result201.SecurityEventNotification()

    @on(Action201.firmware_status_notification)  # ---- firmware update
    def on_firmware_status(self, **_: Any) -> result201.FirmwareStatusNotification:
        return result201.FirmwareStatusNotification()

    @on(Action201.data_transfer)
    def on_data_transfer(self, **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status="UnknownVendorId")

    @on(Action201.report_charging_profiles)
    def on_report_charging_profiles(self, **_: Any) -> result201.ReportChargingProfiles:
        return result201.ReportChargingProfiles()

    # ---- log upload

    @on(Action201.log_status_notification)
    def on_log_status(self, **_: Any) -> result201.LogStatusNotification:
        return result201.LogStatusNotification()

    # ---- reservations (H04 Expired, H01.FR.16/17 Removed)
    @on(Action201.reservation_status_update)
    def on_reservation_status_update(self, **_: Any) -> result201.ReservationStatusUpdate:
        return result201.ReservationStatusUpdate()

    # ---- client certificate renewal (A02/A03)
    @on(Action201.sign_certificate)
    def on_sign_certificate(self, csr: str, **_: Any) -> result201.SignCertificate:
        status = self.csms.behaviour.sign_certificate_status
        if status == "Accepted":
            self.csms.sign_later(self.id, csr)
        return result201.SignCertificate(status=status)


def _now() -> str:
    """currentTime as a strict CSMS sends it (2.0.1 Part 2 §2.1: at most three decimals)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SIDES: dict[str, type[_CentralSystemSide] | type[_CentralSystemSide201]] = {
    "ocpp1.6": _CentralSystemSide,
    "ocpp2.0.1": _CentralSystemSide201,
}


class LocalCsms:
    def __init__(
        self,
        behaviour: CsmsBehaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        subprotocols: tuple[str, ...] = ("ocpp1.6", "ocpp2.0.1"),
        tls: ssl.SSLContext | None = None,
        passwords: dict[str, str] | None = None,
    ) -> None:
        """`subprotocols`: what this CSMS speaks, in its order of preference. `tls`: serve wss:// with this context
        (require client certificates in it for security profile 3). `passwords`: station id -> Basic-auth password;
        when given, a station without the right Authorization header gets HTTP 401."""
        self.behaviour = behaviour or CsmsBehaviour()
        self.tls = tls
        self.passwords = passwords
        self.refused_credentials = 0  # handshakes answered 401
        self.client_certificates: list[dict[str, Any]] = []  # the peer certificate of each TLS connection
        self.subprotocols = subprotocols
        self.started_transactions: list[str] = []  # 2.0.1 transactionIds in the order they were Started
        self.host = host
        self.port = port
        self.received: list[Received] = []
        self.stations: dict[str, Any] = {}
        self.transaction_ids = itertools.count(1001)
        self.assigned_transaction_ids: list[int] = []
        self.transaction_by_message_id: dict[str, int] = {}
        self.raw_results: dict[str, Any] = {}  # answers to frames sent around the library (behaviour tricks)
        self.violations: list[str] = []  # CALLERRORs this CSMS had to send: the station broke the protocol
        # Message ids of the CALLs it processed, and of those it answered with an injected CALLERROR (a copy of each
        # received message says whether it was refused: Received.refused)
        self.taken_ids: set[str] = set()
        self.refused: set[str] = set()
        self.frames: list[tuple[str, str]] = []  # (station id, frame) of every frame a station sent, as on the wire
        self.raw_errors: list[list[Any]] = []  # the stations' CALLERRORs to frames sent with send_raw
        self.listeners: list[Callable[[Received], None]] = []
        # The CSMS's certificate authority (A02.FR.04: it forwards the CSR): PEM CSR -> PEM chain to send back in a
        # CertificateSigned, or None to send nothing. The answers to those CertificateSigned requests, in order.
        self.signer: Callable[[str], str | None] | None = None
        self.certificates_signed: list[str] = []  # the chains sent
        self.certificate_signed_answers: list[dict[str, Any]] = []
        self.connections = 0
        self._server: Server | None = None
        self._changed = asyncio.Condition()
        self._pending: set[asyncio.Future[None]] = set()

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/ocpp"

    async def start(self) -> LocalCsms:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            select_subprotocol=self._select_subprotocol,
            max_size=2**22,
            ssl=self.tls,
            process_request=self._check_credentials,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _check_credentials(self, connection: ServerConnection, request: Request) -> Response | None:
        """HTTP Basic auth as OCPP security profiles 1 and 2 use it: user = the station id in the URL."""
        if self.passwords is None:
            return None
        station_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        expected = self.passwords.get(station_id)
        header = request.headers.get("Authorization", "")
        if expected is not None and header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
            if user == station_id and hmac.compare_digest(password, expected):
                return None
        self.refused_credentials += 1
        return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong or missing credentials\n")

    def _select_subprotocol(self, _: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        for mine in self.subprotocols:
            if mine in offered:
                return Subprotocol(mine)
        return None  # the station must close: we speak nothing it offered

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def drop_connections(self) -> None:
        for side in list(self.stations.values()):
            await side._connection.close()

    def record(self, item: Received) -> None:
        self.received.append(item)
        for listener in self.listeners:
            listener(item)
        self.notify_soon()

    def notify_soon(self) -> None:
        task = asyncio.ensure_future(self._notify())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request else "/"
        station_id = path.rstrip("/").rsplit("/", 1)[-1]
        if connection.subprotocol is None:
            await connection.close(code=1002, reason=f"this CSMS speaks {', '.join(self.subprotocols)}")
            return
        peer = connection.transport.get_extra_info("peercert") if self.tls else None
        if peer:
            self.client_certificates.append(peer)
        side = SIDES[connection.subprotocol](station_id, connection, self)
        self.stations[station_id] = side
        self.connections += 1
        await self._notify()
        try:
            await side.start()
        except Exception:  # the station went away; that is its right
            pass
        finally:
            if self.stations.get(station_id) is side:
                del self.stations[station_id]

    # ------------------------------------------------------------------ what tests and the demo ask

    def messages(self, action: str) -> list[Received]:
        return [r for r in self.received if r.action == action]

    async def wait_for(
        self,
        action: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float = 30,
        after: int = 0,
    ) -> Received:
        """The first `action` message (from index `after` on) that satisfies `predicate`."""

        def find() -> Received | None:
            for r in self.received[after:]:
                if r.action == action and (predicate is None or predicate(r.payload)):
                    return r
            return None

        async with asyncio.timeout(timeout):
            async with self._changed:
                while (found := find()) is None:
                    await self._changed.wait()
                return found

    async def wait_until(self, condition: Callable[[], object], timeout: float = 30) -> None:
        """Wait for a condition on anything (also the station's side): re-checked on every message and every 50 ms."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while not condition():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.05)

    async def wait_connected(self, station_id: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                while station_id not in self.stations:
                    await self._changed.wait()

    async def remote_start(self, station_id: str, id_tag: str, connector_id: int | None = 1) -> str:
        result = await self.stations[station_id].call(
            call.RemoteStartTransaction(id_tag=id_tag, connector_id=connector_id), suppress=False
        )
        return str(result.status)

    async def remote_stop(self, station_id: str, transaction_id: int) -> str:
        result = await self.stations[station_id].call(
            call.RemoteStopTransaction(transaction_id=transaction_id), suppress=False
        )
        return str(result.status)

    async def get_configuration(self, station_id: str, keys: list[str] | None = None) -> dict[str, str]:
        result = await self.stations[station_id].call(call.GetConfiguration(key=keys), suppress=False)
        return {item["key"]: item.get("value", "") for item in (result.configuration_key or [])}

    async def change_configuration(self, station_id: str, key: str, value: str) -> str:
        result = await self.stations[station_id].call(call.ChangeConfiguration(key=key, value=value), suppress=False)
        return str(result.status)

    # ------------------------------------------------------------------ 2.0.1

    async def request_start(
        self, station_id: str, id_token: str, evse_id: int | None = 1, remote_start_id: int = 1
    ) -> str:
        result = await self.stations[station_id].call(
            call201.RequestStartTransaction(
                id_token={"id_token": id_token, "type": "Central"}, remote_start_id=remote_start_id, evse_id=evse_id
            ),
            suppress=False,
        )
        return str(result.status)

    async def request_stop(self, station_id: str, transaction_id: str) -> str:
        result = await self.stations[station_id].call(
            call201.RequestStopTransaction(transaction_id=transaction_id), suppress=False
        )
        return str(result.status)

    async def get_variables(self, station_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = await self.stations[station_id].call(call201.GetVariables(get_variable_data=items), suppress=False)
        return list(result.get_variable_result)

    async def set_variables(self, station_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = await self.stations[station_id].call(call201.SetVariables(set_variable_data=items), suppress=False)
        return list(result.set_variable_result)

    async def get_base_report(self, station_id: str, request_id: int, report_base: str = "FullInventory") -> str:
        result = await self.stations[station_id].call(
            call201.GetBaseReport(request_id=request_id, report_base=report_base), suppress=False
        )
        return str(result.status)

    # ------------------------------------------------------------------ either version (the demo's vocabulary)

    def version_of(self, station_id: str) -> str:
        return str(self.stations[station_id].version)

    async def start_session(self, station_id: str, id_tag: str, evse_id: int | None = 1) -> str:
        """A remote start on `evse_id` (1.6: that connector; 2.0.1: that EVSE, its remoteStartId the EVSE's id);
        None names none (the station picks an available one)."""
        if self.version_of(station_id) == "2.0.1":
            return await self.request_start(station_id, id_tag, evse_id=evse_id, remote_start_id=evse_id or 1)
        return await self.remote_start(station_id, id_tag, connector_id=evse_id)

    async def wait_session_started(
        self, station_id: str, *, after: int = 0, timeout: float = 30
    ) -> tuple[Received, str]:
        """The message announcing the start, and the transaction id the CSMS knows it by."""
        if self.version_of(station_id) == "2.0.1":
            started = await self.wait_for(
                "TransactionEvent", lambda p: p["eventType"] == "Started", after=after, timeout=timeout
            )
            return started, str(started.payload["transactionInfo"]["transactionId"])
        start = await self.wait_for("StartTransaction", after=after, timeout=timeout)
        await self.wait_until(lambda: start.unique_id in self.transaction_by_message_id, timeout=timeout)
        return start, str(self.transaction_by_message_id[start.unique_id])

    async def stop_session(self, station_id: str, transaction_id: str) -> str:
        if self.version_of(station_id) == "2.0.1":
            return await self.request_stop(station_id, transaction_id)
        return await self.remote_stop(station_id, int(transaction_id))

    async def wait_session_ended(self, station_id: str, *, after: int = 0, timeout: float = 60) -> Received:
        if self.version_of(station_id) == "2.0.1":
            return await self.wait_for(
                "TransactionEvent", lambda p: p["eventType"] == "Ended", after=after, timeout=timeout
            )
        return await self.wait_for("StopTransaction", after=after, timeout=timeout)

    async def meter_public_key(self, station_id: str, evse_id: int = 1) -> str:
        """The key of `evse_id`'s meter the way a CSMS reads it: MeterPublicKey<N> (1.6, OCA application note) or
        FiscalMetering.PublicKey of EVSE N (2.0.1)."""
        if self.version_of(station_id) == "2.0.1":
            results = await self.get_variables(
                station_id,
                [
                    {
                        "component": {"name": "FiscalMetering", "evse": {"id": evse_id}},
                        "variable": {"name": "PublicKey"},
                    }
                ],
            )
            return str(results[0].get("attribute_value", ""))
        name = f"MeterPublicKey{evse_id}"
        keys = await self.get_configuration(station_id, [name])
        return keys.get(name, "")

    # ------------------------------------------------------------------ issue 15: boot answers, raw frames and the
    # CSMS-initiated calls the conformance tests need

    def next_boot_status(self) -> str:
        """The status of this BootNotification's answer: the next of `boot_statuses`, else `boot_status`."""
        if self.behaviour.boot_statuses:
            return self.behaviour.boot_statuses.pop(0)
        return self.behaviour.boot_status

    async def send_raw(self, station_id: str, frame: str, *, timeout: float = 5) -> list[Any] | None:
        """Send `frame` as it is (around the library) and return the station's answer to it: a CALLRESULT or CALLERROR
        whose id is the frame's (ids must start with "raw-") or "-1"; None when none comes within `timeout`."""
        errors, results = len(self.raw_errors), set(self.raw_results)
        await self.stations[station_id]._connection.send(frame)

        def answer() -> list[Any] | None:
            if len(self.raw_errors) > errors:
                return self.raw_errors[errors]
            new = set(self.raw_results) - results
            return [3, next(iter(new)), self.raw_results[next(iter(new))]] if new else None

        try:
            await self.wait_until(lambda: answer() is not None, timeout=timeout)
        except TimeoutError:
            return None
        return answer()

    def sign_later(self, station_id: str, csr: str) -> None:
        """A02 step 5-9: once the SignCertificate answer is out, the CA signs and the CSMS sends CertificateSigned."""
        if self.signer is None:
            return
        chain = self.signer(csr)
        if chain is None:
            return
        self.certificates_signed.append(chain)

        async def send() -> None:
            await asyncio.sleep(0.05)  # after the SignCertificate answer
            with contextlib.suppress(Exception):
                self.certificate_signed_answers.append(await self.certificate_signed(station_id, chain))
                self.notify_soon()

        task = asyncio.ensure_future(send())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def certificate_signed(
        self, station_id: str, chain: str, certificate_type: str | None = "ChargingStationCertificate"
    ) -> dict[str, Any]:
        """CertificateSigned in the station's version; its answer as a dict (status, and 2.0.1 statusInfo)."""
        side = self.stations[station_id]
        if side.version == "2.0.1":
            result = await side.call(
                call201.CertificateSigned(certificate_chain=chain, certificate_type=certificate_type), suppress=False
            )
            return {"status": str(result.status), "status_info": result.status_info}
        result = await side.call(call.CertificateSigned(certificate_chain=chain), suppress=False)
        return {"status": str(result.status)}

    async def trigger_message(self, station_id: str, message: str, target: int | None = None) -> str:
        """TriggerMessage in the station's version: `target` is the 1.6 connectorId or the 2.0.1 evse id."""
        side = self.stations[station_id]
        if side.version == "2.0.1":
            evse = {"id": target} if target is not None else None
            result = await side.call(call201.TriggerMessage(requested_message=message, evse=evse), suppress=False)
        else:
            result = await side.call(
                call.TriggerMessage(requested_message=message, connector_id=target), suppress=False
            )
        return str(result.status)

    async def update_firmware(
        self,
        station_id: str,
        location: str,
        *,
        request_id: int = 1,
        signing_certificate: str | None = None,
        signature: str | None = None,
        retries: int | None = None,
        retry_interval: int | None = None,
        retrieve: str | None = None,
        install: str | None = None,
    ) -> str:
        """2.0.1 UpdateFirmware; 1.6 SignedUpdateFirmware when a certificate is given, else plain UpdateFirmware
        (whose conf has no status: "" then)."""
        side = self.stations[station_id]
        firmware: dict[str, Any] = {"location": location, "retrieve_date_time": retrieve or _now()}
        if install:
            firmware["install_date_time"] = install
        if signing_certificate is not None:
            firmware |= {"signing_certificate": signing_certificate, "signature": signature or ""}
        if side.version == "2.0.1":
            request: Any = call201.UpdateFirmware(
                request_id=request_id, firmware=firmware, retries=retries, retry_interval=retry_interval
            )
        elif signing_certificate is not None:
            request = call.SignedUpdateFirmware(
                request_id=request_id, firmware=firmware, retries=retries, retry_interval=retry_interval
            )
        else:
            request = call.UpdateFirmware(
                location=location,
                retrieve_date=firmware["retrieve_date_time"],
                retries=retries,
                retry_interval=retry_interval,
            )
        result = await side.call(request, suppress=False)
        return str(getattr(result, "status", ""))

    async def reset(self, station_id: str, kind: str) -> str:
        """Reset: 1.6 type Soft/Hard, 2.0.1 type Immediate/OnIdle."""
        side = self.stations[station_id]
        payload = call201.Reset(type=kind) if side.version == "2.0.1" else call.Reset(type=kind)
        return str((await side.call(payload, suppress=False)).status)

    async def get_transaction_status(self, station_id: str, transaction_id: str | None) -> dict[str, Any]:
        result = await self.stations[station_id].call(
            call201.GetTransactionStatus(transaction_id=transaction_id), suppress=False
        )
        return {"messages_in_queue": result.messages_in_queue, "ongoing_indicator": result.ongoing_indicator}

    async def customer_information(
        self, station_id: str, request_id: int, *, report: bool, clear: bool, id_token: dict[str, Any] | None
    ) -> str:
        result = await self.stations[station_id].call(
            call201.CustomerInformation(request_id=request_id, report=report, clear=clear, id_token=id_token),
            suppress=False,
        )
        return str(result.status)

    async def request_start_token(
        self, station_id: str, id_token: dict[str, Any], evse_id: int | None = 1, remote_start_id: int = 1
    ) -> str:
        """RequestStartTransaction with a whole IdTokenType (snake_case: id_token, type, additional_info)."""
        result = await self.stations[station_id].call(
            call201.RequestStartTransaction(id_token=id_token, remote_start_id=remote_start_id, evse_id=evse_id),
            suppress=False,
        )
        return str(result.status)

    # ---- log upload: GetDiagnostics (1.6), GetLog (1.6 security whitepaper, 2.0.1), ExtendedTriggerMessage (1.6)

    async def get_diagnostics(
        self,
        station_id: str,
        location: str,
        *,
        retries: int | None = None,
        retry_interval: int | None = None,
        start_time: str | None = None,
        stop_time: str | None = None,
    ) -> str | None:
        """The file name the station answers (None: it has nothing to upload)."""
        result = await self.stations[station_id].call(
            call.GetDiagnostics(
                location=location,
                retries=retries,
                retry_interval=retry_interval,
                start_time=start_time,
                stop_time=stop_time,
            ),
            suppress=False,
        )
        return None if result.file_name is None else str(result.file_name)

    async def get_log(
        self,
        station_id: str,
        location: str,
        request_id: int,
        *,
        log_type: str = "DiagnosticsLog",
        retries: int | None = None,
        retry_interval: int | None = None,
        oldest: str | None = None,
        latest: str | None = None,
    ) -> tuple[str, str | None]:
        """GetLog in the station's version: (status, filename)."""
        side = self.stations[station_id]
        log = {"remote_location": location}
        if oldest is not None:
            log["oldest_timestamp"] = oldest
        if latest is not None:
            log["latest_timestamp"] = latest
        module: Any = call201 if side.version == "2.0.1" else call
        payload = module.GetLog(
            log=log, log_type=log_type, request_id=request_id, retries=retries, retry_interval=retry_interval
        )
        result = await side.call(payload, suppress=False)
        return str(result.status), None if result.filename is None else str(result.filename)

    async def extended_trigger_message(self, station_id: str, message: str, connector_id: int | None = None) -> str:
        result = await self.stations[station_id].call(
            call.ExtendedTriggerMessage(requested_message=message, connector_id=connector_id), suppress=False
        )
        return str(result.status)

    # ---- reservations (1.6 §5.13 / §5.1, 2.0.1 H01 / H02)

    async def reserve_now(
        self,
        station_id: str,
        reservation_id: int,
        id_tag: str,
        expiry: datetime,
        target: int | None = None,
        group: str | None = None,
    ) -> str:
        """ReserveNow: `target` is the 1.6 connectorId (None: 0) or the 2.0.1 evseId (None: any EVSE); `group` the
        parentIdTag / groupIdToken."""
        side = self.stations[station_id]
        when = expiry.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if side.version == "2.0.1":
            payload: Any = call201.ReserveNow(
                id=reservation_id,
                expiry_date_time=when,
                id_token={"id_token": id_tag, "type": "Central"},
                evse_id=target,
                group_id_token=None if group is None else {"id_token": group, "type": "Central"},
            )
        else:
            payload = call.ReserveNow(
                connector_id=target or 0,
                expiry_date=when,
                id_tag=id_tag,
                reservation_id=reservation_id,
                parent_id_tag=group,
            )
        return str((await side.call(payload, suppress=False)).status)

    async def cancel_reservation(self, station_id: str, reservation_id: int) -> str:
        side = self.stations[station_id]
        if side.version == "2.0.1":
            payload: Any = call201.CancelReservation(reservation_id=reservation_id)
        else:
            payload = call.CancelReservation(reservation_id=reservation_id)
        return str((await side.call(payload, suppress=False)).status)

    # ---- certificates (1.6 security whitepaper / 2.0.1 M03 GetInstalledCertificateIds, M04 DeleteCertificate, M05
    # InstallCertificate): the answers as dicts with snake_case keys, as the library gives them

    async def install_certificate(self, station_id: str, certificate_type: str, pem: str) -> dict[str, Any]:
        """`certificate_type` in the station's version's words (1.6 CentralSystemRootCertificate, 2.0.1
        CSMSRootCertificate, ...)."""
        side = self.stations[station_id]
        module: Any = call201 if side.version == "2.0.1" else call
        result = await side.call(
            module.InstallCertificate(certificate_type=certificate_type, certificate=pem), suppress=False
        )
        return dict(vars(result))

    async def get_installed_certificate_ids(
        self, station_id: str, certificate_type: str | list[str] | None = None
    ) -> dict[str, Any]:
        """1.6 asks for one type; 2.0.1 for a list of them or (None) all."""
        side = self.stations[station_id]
        if side.version == "2.0.1":
            types = [certificate_type] if isinstance(certificate_type, str) else certificate_type
            payload: Any = call201.GetInstalledCertificateIds(certificate_type=types)
        else:
            payload = call.GetInstalledCertificateIds(certificate_type=certificate_type)
        return dict(vars(await side.call(payload, suppress=False)))

    async def delete_certificate(self, station_id: str, hash_data: dict[str, Any]) -> dict[str, Any]:
        side = self.stations[station_id]
        module: Any = call201 if side.version == "2.0.1" else call
        return dict(vars(await side.call(module.DeleteCertificate(certificate_hash_data=hash_data), suppress=False)))

    # ---- end certificates

    # ---- network profiles (2.0.1 B09 SetNetworkProfile)

    async def set_network_profile(self, station_id: str, slot: int, connection_data: dict[str, Any]) -> dict[str, Any]:
        """SetNetworkProfile; the answer's status and statusInfo (snake case, as the library gives it)."""
        result = await self.stations[station_id].call(
            call201.SetNetworkProfile(configuration_slot=slot, connection_data=connection_data), suppress=False
        )
        return {"status": str(result.status), "status_info": result.status_info}
