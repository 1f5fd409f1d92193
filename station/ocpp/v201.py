"""The OCPP 2.0.1 adapter: translates 2.0.1 messages to runtime requests and outbox entries to TransactionEvents.

Same shape as the 1.6 adapter (boot, heartbeat, status, deliver, thin handlers that never await the meter or another
CALL); work a request asks for after its answer (a NotifyReport, a triggered message) runs in a task. The station
generates the transactionId (our transaction ref); each transaction's events are numbered from seqNo 0. Signed
records go into TransactionEvent(Ended) as `signedMeterValue` beside the numeric value. Owns the physical part of the
device model (ChargingStation, EVSE and Connector components, read from the runtime); the configuration part is
station/ocpp/settings.py's. This module knows nothing about Modbus.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from station.core.model import (
    ConnectorStatus,
    ReportStatus,
    Reservation,
    SignedMeterRecord,
    StartSource,
    StopReason,
    Transaction,
)
from station.firmware.update import FirmwareUpdater, UpdateRequest
from station.logupload import service as log_upload
from station.logupload.archive import Window, parse_time
from station.meter.records import begin_wh, end_wh
from station.ocpp import profile_codec
from station.ocpp.adapter import (
    BootRefused,
    CallRefused,
    Delivery,
    FollowUps,
    RpcRules,
    body_evse,
    iso,
    measured,
    reservation_expiry,
    security_event_fields,
    signing_key,
)
from station.ocpp.boot import boot_reason as boot_reason  # the boot helpers' old home
from station.ocpp.boot import os_boot_id as os_boot_id
from station.ocpp.boot import software_version as software_version
from station.ocpp.network import NetworkProfiles
from station.ocpp.security import (  # ---- certificates
    CertificateAnswer,
    Security,
    certificate_signed,
    delete_certificate,
    install_certificate,
    installed_certificates,
    renew_client_certificate,
)
from station.ocpp.settings import CONNECTOR_TYPE, SUPPLY_PHASES, Settings, VariableResult
from station.ocpp.signed_value import PUBLIC_KEY_NEVER, signed_meter_value
from station.runtime import StationRuntime
from station.runtime.sampling import values_of
from station.smart.book import Refusal
from station.smart.profiles import ChargingProfile, Purpose, RateUnit
from station.store import IdTagEntry, OutboxMessage, Store, StoreError

log = structlog.get_logger("station.ocpp.v201")

SUBPROTOCOL = "ocpp2.0.1"
SIGNED_DATA_LIMIT = 2500  # SignedMeterValueType.signedMeterData maxLength

CONNECTOR_STATUS = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.PREPARING: "Occupied",
    ConnectorStatus.CHARGING: "Occupied",
    ConnectorStatus.SUSPENDED_EV: "Occupied",
    ConnectorStatus.SUSPENDED_EVSE: "Occupied",
    ConnectorStatus.FINISHING: "Occupied",
    ConnectorStatus.FAULTED: "Faulted",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.RESERVED: "Reserved",
}

# 1.6 stop reason (the core's vocabulary) -> (2.0.1 stoppedReason, triggerReason of the Ended event)
STOPPED = {
    StopReason.REMOTE: ("Remote", "RemoteStop"),
    StopReason.LOCAL: ("Local", "StopAuthorized"),
    StopReason.POWER_LOSS: ("PowerLoss", "AbnormalCondition"),
    StopReason.REBOOT: ("Reboot", "AbnormalCondition"),
    StopReason.SOFT_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.HARD_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.EMERGENCY_STOP: ("EmergencyStop", "AbnormalCondition"),
    StopReason.EV_DISCONNECTED: ("EVDisconnected", "EVCommunicationLost"),
    StopReason.DE_AUTHORIZED: ("DeAuthorized", "Deauthorized"),
    StopReason.UNLOCK_COMMAND: ("Other", "UnlockCommand"),
    StopReason.OTHER: ("Other", "AbnormalCondition"),
    StopReason.GROUND_FAULT: ("GroundFault", "AbnormalCondition"),
    StopReason.OVERCURRENT_FAULT: ("OvercurrentFault", "AbnormalCondition"),
    StopReason.TIMEOUT: ("Timeout", "EVConnectTimeout"),
    StopReason.STOPPED_BY_EV: ("StoppedByEV", "ChargingStateChanged"),
}

# The error code of a Faulted report -> the component its NotifyEvent names (Part 2 Referenced Components).
PROBLEM_COMPONENT = {
    "PowerMeterFailure": "FiscalMetering",
    "GroundFailure": "RCD",
    "OverCurrentFailure": "OverCurrentProtection",
    "HighTemperature": "TemperatureSensor",
    "ConnectorLockFailure": "ConnectorPlugRetentionLock",
    "EVCommunicationError": "ControlPilot",
    "OtherError": "PowerContactor",
}

ENERGY = "Energy.Active.Import.Register"
AVAILABILITY_STATES = "Available,Occupied,Reserved,Unavailable,Faulted"  # Part 2 Referenced Components §2.13.2
EVSE_MAX_POWER_W = 22000.0  # a three-phase 32 A AC EVSE: EVSE.Power maxLimit (§2.13.7)
CUSTOMER_DATA_LIMIT = 512  # NotifyCustomerInformationRequest.data maxLength
# A queued reading's context -> the triggerReason of its TransactionEvent(Updated) and the measurand setting it uses
UPDATED = {
    "Sample.Periodic": ("MeterValuePeriodic", "MeterValuesSampledData"),  # SampledDataCtrlr.TxUpdatedMeasurands
    "Sample.Clock": ("MeterValueClock", "MeterValuesAlignedData"),  # AlignedDataCtrlr.Measurands
    "Trigger": ("Trigger", "MeterValuesSampledData"),  # F06.FR.07
}


def _energy_value(value_wh: int | None, context: str) -> dict[str, Any]:
    return {
        "value": float(value_wh or 0),
        "context": context,
        "measurand": ENERGY,
        "location": "Outlet",
        "unit_of_measure": {"unit": "Wh"},
    }


def _readings(body: dict[str, Any], measurands: list[str], context: str | None = None) -> list[dict[str, Any]]:
    """A reading as 2.0.1 SampledValues of exactly the `measurands` (each with its phases)."""
    context = context or str(body["context"])
    values = []
    for measurand, phase, value, unit in measured(body, measurands):
        sampled: dict[str, Any] = {
            "value": value,
            "context": context,
            "measurand": measurand,
            "location": "Outlet",
            "unit_of_measure": {"unit": unit},
        }
        if phase is not None:
            sampled["phase"] = phase
        values.append(sampled)
    return values


def id_token_entry(id_tag: str, info: dict[str, Any]) -> IdTagEntry:
    """A 2.0.1 IdTokenInfo (snake_case, as the library hands it over) as a list/cache entry."""
    expiry = info.get("cache_expiry_date_time")
    parent = (info.get("group_id_token") or {}).get("id_token")
    return IdTagEntry(
        id_tag,
        str(info.get("status", "Invalid")),
        datetime.fromisoformat(expiry.replace("Z", "+00:00")) if expiry else None,
        parent,
    )


class V201Adapter(RpcRules, ChargePoint):  # type: ignore[misc]
    version = "2.0.1"

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
        signed_value_format: str = "oca",  # 1.6 only: 2.0.1 has a typed signedMeterValue, no raw variant
        firmware: FirmwareUpdater | None = None,
        log_uploads: log_upload.LogUploads | None = None,
        security: Security | None = None,  # ---- certificates
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout)
        self.security = security  # ---- certificates
        self.log_uploads = log_uploads
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.vendor = vendor
        self.model = model
        self.follow_ups = FollowUps()
        self._told: dict[tuple[int, int], str] = {}  # (EVSE, connector) -> the connectorStatus last sent
        self._event_ids = 0
        self.registration: str | None = None  # status of the last BootNotificationResponse
        self.accepted = asyncio.Event()  # set when a BootNotification (also a triggered one) was Accepted
        self.boot_interval = 0
        self.firmware = firmware  # ---- firmware update (station/firmware/)

    # ------------------------------------------------------------------ outgoing

    async def boot(self, reason: str = "PowerUp") -> int:
        """BootNotification with its reason (B01.FR.09, BootReasonEnumType); returns the heartbeat interval when
        Accepted, raises BootRefused otherwise."""
        station = {"model": self.model[:20], "vendor_name": self.vendor[:50]}
        result = await self.call(call.BootNotification(charging_station=station, reason=reason), suppress=False)
        interval = int(result.interval)
        self.registration = str(result.status)
        if result.status != "Accepted":
            raise BootRefused(str(result.status), interval)
        self.boot_interval = interval
        self.accepted.set()
        return interval

    async def authorize(self, id_tag: str) -> IdTagEntry | None:
        """Ask the CSMS; None when it cannot answer (the caller then decides locally)."""
        try:
            result = await self.call(call.Authorize(id_token={"id_token": id_tag, "type": "ISO14443"}), suppress=False)
        except (OCPPError, TimeoutError) as exc:
            log.warning("Authorize not answered", error=str(exc))
            return None
        return id_token_entry(id_tag, result.id_token_info)

    async def heartbeat(self) -> None:
        await self.call(call.Heartbeat(), suppress=False)

    async def status(self, report: ReportStatus) -> None:
        """A connector's status as it changed. 2.0.1 has fewer words than the core (Preparing, Charging, Suspended*
        and Finishing are all Occupied): a change that keeps the word is not sent again, but a fault always is."""
        where = (report.evse_id, report.connector_id)
        word = CONNECTOR_STATUS[report.status]
        if self._told.get(where) == word and report.status != ConnectorStatus.FAULTED:
            return
        await self._notify_status(report)

    async def _triggered_status(self, report: ReportStatus) -> None:
        await self._notify_status(report)  # F06: asked for, so sent whatever was told before

    async def _notify_status(self, report: ReportStatus) -> None:
        self._told[(report.evse_id, report.connector_id)] = CONNECTOR_STATUS[report.status]
        await self.call(
            call.StatusNotification(
                timestamp=iso(None),
                connector_status=CONNECTOR_STATUS[report.status],
                evse_id=report.evse_id,
                connector_id=report.connector_id,
            ),
            suppress=False,
        )
        if report.status == ConnectorStatus.FAULTED or report.error_code != "NoError":
            await self._notify_problem(report)

    async def _notify_problem(self, report: ReportStatus) -> None:
        """A fault is also a NotifyEvent (G05/N07): which component, what the problem is."""
        self._event_ids += 1
        component = PROBLEM_COMPONENT.get(report.error_code, "EVSE")
        await self.call(
            call.NotifyEvent(
                generated_at=iso(None),
                seq_no=0,
                event_data=[
                    {
                        "event_id": self._event_ids,
                        "timestamp": iso(None),
                        "trigger": "Delta",
                        "actual_value": "true",
                        "tech_code": report.error_code[:50],
                        "tech_info": report.info[:500] or None,
                        "event_notification_type": "HardWiredNotification",
                        "component": {"name": component, "evse": {"id": report.evse_id}},
                        "variable": {"name": "Problem"},
                    }
                ],
            ),
            suppress=False,
        )

    async def deliver(self, message: OutboxMessage) -> Delivery:
        """Send one outbox entry; returns when the CSMS answered with a CALLRESULT (raises on CALLERROR/timeout)."""
        if message.kind == "meter_values" and message.tx_ref is None:
            await self._meter_values(message)
            return Delivery()
        if message.kind == "signed_begin":
            return Delivery()  # 2.0.1 carries the signed begin value in TransactionEvent Started itself
        if message.kind == "firmware_status":  # ---- firmware update (L01.FR.01, L01.FR.10)
            firmware_call = call.FirmwareStatusNotification(
                status=message.body["status"], request_id=message.body.get("requestId")
            )
            await self.call(firmware_call, suppress=False, unique_id=message.call_id)
            return Delivery()
        if message.kind == "security_event":
            event = call.SecurityEventNotification(**security_event_fields(message.body, "2.0.1"))
            await self.call(event, suppress=False, unique_id=message.call_id)
            return Delivery()
        if message.kind == "reservation_status":
            # ---- reservations: H04.FR.01 Expired, H01.FR.16/17 Removed
            body = message.body
            update = call.ReservationStatusUpdate(
                reservation_id=int(body["reservation_id"]), reservation_update_status=str(body["status"])
            )
            await self.call(update, suppress=False, unique_id=message.call_id)
            return Delivery()
        if message.kind in log_upload.OUTBOX_KINDS.values():
            return await self._log_status(message)
        if message.kind not in ("transaction_started", "transaction_ended", "meter_values", "charging_state"):
            raise ValueError(f"2.0.1 adapter cannot send outbox entry of kind {message.kind!r}")
        assert message.tx_ref is not None
        stored = self.store.transaction(message.tx_ref)
        if stored is None:
            raise ValueError(f"outbox entry {message.id} names unknown transaction {message.tx_ref}")
        tx = stored.transaction
        # "When a transaction starts, the Charging Station SHOULD set the seqNo ... to 0" (Part 2 E §1.3.2.1): one
        # counter per transaction, so the CSMS checks each transaction's completeness on its own.
        seq_no = self.store.assign_seq_no(message.id, f"tx.{tx.ref}")
        if message.kind == "transaction_started":
            payload = self._started(tx, seq_no, message.offline, str(message.body.get("trigger", "")))
        elif message.kind == "meter_values":
            payload = self._updated(tx, seq_no, message)
        elif message.kind == "charging_state":
            payload = self._charging_state(tx, seq_no, message)
        else:
            payload = self._ended(tx, seq_no, message.offline)
        result = await self.call(payload, suppress=False, unique_id=message.call_id)
        status = str((result.id_token_info or {}).get("status", "Accepted"))
        if message.kind != "transaction_ended" and status != "Accepted":
            # E05.FR.10 (TxStopPoint PowerPathClosed) with StopTxOnInvalidId: end the transaction, Deauthorized.
            self.runtime.csms_refused_id(tx.ref, status)
        if message.kind in ("meter_values", "charging_state"):
            return Delivery()
        if message.kind == "transaction_started":
            if self.runtime.authorizer is not None and result.id_token_info:
                self.runtime.authorizer.remember(id_token_entry(tx.id_tag, result.id_token_info))
            log.info("TransactionEvent Started confirmed", tx_ref=tx.ref, seq_no=seq_no, id_token_status=status)
            return Delivery(csms_transaction=(tx.ref, tx.ref))
        log.info("TransactionEvent Ended confirmed", tx_ref=tx.ref, seq_no=seq_no)
        return Delivery(transaction_done=tx.ref)

    def _id_token(self, tx: Transaction) -> dict[str, Any]:
        """The idToken exactly as the CSMS sent it in RequestStartTransaction (E01.FR.10; its type too), else what
        the station knows: a card at the reader (ISO14443) or an identifier from the CSMS (Central)."""
        token = self.store.id_token(tx.ref)
        if token is not None:
            return token
        return {"id_token": tx.id_tag, "type": "ISO14443" if tx.source is StartSource.LOCAL else "Central"}

    def _started(self, tx: Transaction, seq_no: int, offline: bool, trigger: str = "") -> call.TransactionEvent:
        """E01/E02/E03 with TxStartPoint PowerPathClosed (EV connected and authorized): the triggerReason is what
        completed the start (RemoteStart or Authorized; CablePluggedIn when the authorization came first, E03);
        where the station sees the car its chargingState is EVConnected (the relay closes after the start)."""
        evse = self.runtime.core.evses.get(tx.evse_id)
        sees_car = evse is not None and evse.ev.senses_plug
        info: dict[str, Any] = {"transaction_id": tx.ref, "charging_state": "EVConnected" if sees_car else "Charging"}
        if tx.remote_start_id is not None:
            info["remote_start_id"] = tx.remote_start_id
        reason = trigger or ("RemoteStart" if tx.remote_start_id is not None else "Authorized")
        return call.TransactionEvent(
            event_type="Started",
            timestamp=iso(tx.started_at),
            trigger_reason=reason,
            seq_no=seq_no,
            transaction_info=info,
            offline=offline or None,
            id_token=self._id_token(tx),
            meter_value=[{"timestamp": iso(tx.started_at), "sampled_value": [self._begin_sample(tx)]}],
            evse={"id": tx.evse_id, "connector_id": tx.connector_id},
            reservation_id=tx.reservation_id,  # ---- reservations: H01.FR.15, E01.FR.13 / E02.FR.03 / E03.FR.03
        )

    def _begin_sample(self, tx: Transaction) -> dict[str, Any]:
        """The start reading; signed (SampledDataCtrlr.SignStartedReadings) where the meter signed a begin record."""
        if self.settings.value("SampledDataSignStartedReadings") == "true":
            for record in tx.signed_records:
                if record.context == "Transaction.Begin":
                    return self._signed_sample(tx, record)
        return _energy_value(tx.meter_start_wh, "Transaction.Begin")

    def _updated(self, tx: Transaction, seq_no: int, message: OutboxMessage) -> call.TransactionEvent:
        body = message.body
        trigger, _ = UPDATED.get(str(body["context"]), UPDATED["Sample.Periodic"])
        sampled = self._readings(body)
        at = iso(datetime.fromisoformat(body["at"]))
        return call.TransactionEvent(
            event_type="Updated",
            timestamp=at,
            trigger_reason=trigger,
            seq_no=seq_no,
            transaction_info={"transaction_id": tx.ref, "charging_state": "Charging"},
            offline=message.offline or None,
            # meterValue needs a sampledValue: with no measurand configured it is left out (it is optional).
            meter_value=[{"timestamp": at, "sampled_value": sampled}] if sampled else None,
        )

    def _charging_state(self, tx: Transaction, seq_no: int, message: OutboxMessage) -> call.TransactionEvent:
        """E02 / E03: the charging state changed (the car paused or resumed, the relay closed or opened): Updated
        with triggerReason ChargingStateChanged and the new chargingState."""
        return call.TransactionEvent(
            event_type="Updated",
            timestamp=iso(datetime.fromisoformat(message.body["at"])),
            trigger_reason=str(message.body.get("trigger", "ChargingStateChanged")),
            seq_no=seq_no,
            transaction_info={"transaction_id": tx.ref, "charging_state": str(message.body["state"])},
            offline=message.offline or None,
        )

    def _readings(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """A queued reading of the measurands configured for its context; with the meter's signed reading on the
        energy value where there is one (the energy value is there for it even if not configured)."""
        _, setting = UPDATED.get(str(body["context"]), UPDATED["Sample.Periodic"])
        measurands = self.settings.measurands(setting)
        if body.get("signed") and ENERGY not in measurands:
            measurands = [ENERGY, *measurands]
        sampled = _readings(body, measurands)
        if body.get("signed"):
            record = SignedMeterRecord(str(body["signed"]), context=str(body["context"]))
            sampled[0] = self._with_signature(sampled[0], record, None, self.runtime.meter_key(body_evse(body)))
        return sampled

    async def _meter_values(self, message: OutboxMessage) -> None:
        body = message.body
        sampled = self._readings(body)
        if not sampled:
            return  # no measurand configured: nothing to report
        await self.call(
            call.MeterValues(
                evse_id=body_evse(body),
                meter_value=[{"timestamp": iso(datetime.fromisoformat(body["at"])), "sampled_value": sampled}],
            ),
            suppress=False,
            unique_id=message.call_id,
        )

    def _ended(self, tx: Transaction, seq_no: int, offline: bool) -> call.TransactionEvent:
        """E06.FR.11 / E07.FR.08: the TxEndedMeasurands sampled every TxEndedInterval (Sample.Periodic), then the
        Transaction.End values: the meter's signed record. No idToken: a transaction ended by RequestStop or Reset
        carries none (TransactionEventRequest.idToken; TC_B_22_CS), and this station has no local stop."""
        stopped_reason, trigger = STOPPED[tx.stop_reason or StopReason.OTHER]
        measurands = self.settings.measurands("StopTxnSampledData")
        meter_values: list[dict[str, Any]] = []
        for sample in self.store.samples(tx.ref, "ended"):
            values = _readings(sample, measurands, "Sample.Periodic")
            if values:
                meter_values.append({"timestamp": iso(datetime.fromisoformat(sample["at"])), "sampled_value": values})
        end = [self._signed_sample(tx, record) for record in tx.signed_records]
        if not end:
            end = [_energy_value(tx.meter_stop_wh, "Transaction.End")]
        meter_values.append({"timestamp": iso(tx.stopped_at), "sampled_value": end})
        # The cable is fixed and stays plugged in: only an EV that left makes the state Idle (TC_B_22_CS, TC_E_14_CS).
        state = "Idle" if tx.stop_reason is StopReason.EV_DISCONNECTED else "EVConnected"
        info: dict[str, Any] = {"transaction_id": tx.ref, "charging_state": state, "stopped_reason": stopped_reason}
        if tx.remote_start_id is not None:
            info["remote_start_id"] = tx.remote_start_id
        return call.TransactionEvent(
            event_type="Ended",
            timestamp=iso(tx.stopped_at),
            trigger_reason=trigger,
            seq_no=seq_no,
            transaction_info=info,
            offline=offline or None,
            meter_value=meter_values,
            evse={"id": tx.evse_id, "connector_id": tx.connector_id},
        )

    def _signed_sample(self, tx: Transaction, record: SignedMeterRecord) -> dict[str, Any]:
        begin = record.context == "Transaction.Begin"
        value_wh = begin_wh(record.data) if begin else end_wh(record.data)
        if value_wh is None:
            value_wh = tx.meter_start_wh if begin else tx.meter_stop_wh
        return self._with_signature(
            _energy_value(value_wh, record.context), record, tx.ref, signing_key(self.runtime, tx)
        )

    def _with_signature(
        self, sample: dict[str, Any], record: SignedMeterRecord, tx_ref: str | None, key: str
    ) -> dict[str, Any]:
        """`sample` with the record as its signedMeterValue (with `key`, the key of the meter that signed it), within
        the 2.0.1 limit of 2500 characters."""
        with_key = self.settings.value("PublicKeyWithSignedMeterValue") != PUBLIC_KEY_NEVER
        signed = signed_meter_value(record, key, with_key)
        if len(signed["signedMeterData"]) > SIGNED_DATA_LIMIT:
            # Never truncated: the numeric value goes out, the record stays in the store (station diag transaction,
            # station export) and the CSMS sees why it is missing.
            log.error(
                "signed record longer than 2.0.1 allows; sent without it, kept in the store",
                tx_ref=tx_ref,
                length=len(signed["signedMeterData"]),
                limit=SIGNED_DATA_LIMIT,
            )
            sample["custom_data"] = {
                "vendorId": "station",
                "signedMeterValueOmitted": f"signedMeterData {len(signed['signedMeterData'])} > {SIGNED_DATA_LIMIT}",
            }
            return sample
        if len(signed["publicKey"]) > SIGNED_DATA_LIMIT:
            signed["publicKey"] = ""
        sample["signed_meter_value"] = signed
        return sample

    # ------------------------------------------------------------------ incoming

    @on(Action.request_start_transaction)
    def on_request_start(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.RequestStartTransaction:
        if self.registration == "Pending":
            # B02.FR.05: while Pending, RequestStartTransaction is Rejected.
            return call_result.RequestStartTransaction(status="Rejected")
        token = str(id_token.get("id_token", ""))
        # Without an evseId the station picks an available EVSE (F01.FR.07 would allow rejecting).
        if charging_profile is None:
            outcome = self.runtime.remote_start(evse_id, token, remote_start_id)
        else:
            # K05: the TxProfile of the transaction about to start; a bad one refuses the start (K05.FR.05).
            try:
                profile = profile_codec.from_v201(charging_profile, evse_id or 0)
            except profile_codec.ProfileFormatError as exc:
                refusal: Refusal | None = Refusal(exc.reason_code, str(exc))
            else:
                outcome, refusal = self.runtime.remote_start_with_profile(
                    evse_id, token, profile, ocpp16=False, remote_start_id=remote_start_id
                )
            if refusal is not None:
                log.info("RequestStartTransaction", evse_id=evse_id, accepted=False, reason=refusal.reason_code)
                return call_result.RequestStartTransaction(status="Rejected", status_info=_status_info(refusal))
        log.info(
            "RequestStartTransaction",
            evse_id=evse_id,
            remote_start_id=remote_start_id,
            accepted=outcome.accepted,
            reason=outcome.reason,
        )
        if not outcome.accepted or outcome.transaction is None:
            return call_result.RequestStartTransaction(
                status="Rejected", status_info={"reason_code": "Occupied", "additional_info": outcome.reason[:512]}
            )
        # E01.FR.10: the TransactionEvent carries the idToken as given here, its type and additional info too.
        self.store.set_id_token(outcome.transaction.ref, id_token)
        return call_result.RequestStartTransaction(status="Accepted")

    @on(Action.request_stop_transaction)
    def on_request_stop(self, transaction_id: str, **_: Any) -> call_result.RequestStopTransaction:
        running = {tx.ref for tx in self.runtime.core.running_transactions()}
        accepted = (
            self.registration != "Pending"  # B02.FR.05
            and transaction_id in running
            and self.runtime.remote_stop(transaction_id, StopReason.REMOTE).accepted
        )
        log.info("RequestStopTransaction", transaction_id=transaction_id, accepted=accepted)
        return call_result.RequestStopTransaction(status="Accepted" if accepted else "Rejected")

    def call_limits(self, action: str, payload: dict[str, Any], size: int) -> CallRefused | None:
        """What the station announces it takes per request (DeviceDataCtrlr ItemsPerMessage / BytesPerMessage):
        more items get OccurrenceConstraintViolation (B06.FR.16), more bytes FormatViolation (B06.FR.17)."""
        field = {"GetVariables": "getVariableData", "SetVariables": "setVariableData"}.get(action)
        if field is None:
            return None
        items = payload.get(field)
        limit = self.settings.int_value(f"ItemsPerMessage{action}")
        if isinstance(items, list) and len(items) > limit:
            return CallRefused("OccurrenceConstraintViolation", f"more than {limit} items (ItemsPerMessage{action})")
        byte_limit = self.settings.int_value(f"BytesPerMessage{action}")
        if size > byte_limit:
            return CallRefused("FormatViolation", f"more than {byte_limit} bytes (BytesPerMessage{action})")
        return None

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> call_result.GetVariables:
        results = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            attribute = item.get("attribute_type") or "Actual"
            got = self._physical_variable(component, variable, attribute) or self.settings.get_variable(
                component["name"],
                variable["name"],
                instance=variable.get("instance"),
                evse=(component.get("evse") or {}).get("id"),
                attribute=attribute,
            )
            result: dict[str, Any] = {
                "attribute_status": got.status,
                "attribute_type": attribute,
                "component": component,
                "variable": variable,
            }
            if got.value is not None:
                result["attribute_value"] = got.value[:2500]
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> call_result.SetVariables:
        results = []
        for item in set_variable_data:
            component, variable = item["component"], item["variable"]
            attribute = item.get("attribute_type") or "Actual"
            physical = self._physical_variable(component, variable, attribute)
            if physical is not None:
                # The physical components' variables are all ReadOnly (B05.FR.09); unknown ones keep their status.
                status = "Rejected" if physical.status == "Accepted" else physical.status
            else:
                status = self.settings.set_variable(
                    component["name"],
                    variable["name"],
                    str(item["attribute_value"]),
                    instance=variable.get("instance"),
                    evse=(component.get("evse") or {}).get("id"),
                    attribute=attribute,
                )
            log.info("SetVariables", component=component["name"], variable=variable["name"], status=status)
            results.append(
                {"attribute_status": status, "attribute_type": attribute, "component": component, "variable": variable}
            )
        return call_result.SetVariables(set_variable_result=results)

    # ------------------------------------------------------------------ the physical device model

    def _physical(self) -> list[tuple[dict[str, Any], str, str, dict[str, Any]]]:
        """(component, variable, value, characteristics) of the ChargingStation, each EVSE and its Connector, as
        Part 2 "Referenced Components and Variables" §2.13 requires them; all ReadOnly."""
        core = self.runtime.core
        options = {"dataType": "OptionList", "valuesList": AVAILABILITY_STATES}
        station_state = "Available"
        if all(not e.meter_link_up for e in core.evses.values()) or not core.store_ok:
            station_state = "Faulted"
        elif core.inoperative():
            station_state = "Unavailable"
        rows: list[tuple[dict[str, Any], str, str, dict[str, Any]]] = [
            ({"name": "ChargingStation"}, "AvailabilityState", station_state, options),
            ({"name": "ChargingStation"}, "Available", "true", {"dataType": "boolean"}),
            ({"name": "ChargingStation"}, "SupplyPhases", SUPPLY_PHASES, {"dataType": "integer"}),
        ]
        for evse_id, connector_ids in core.layout.evses:
            live = self.runtime.meter_state(evse_id).live
            charging = core.transaction_on(evse_id) is not None
            power = float(live.power_w) if live is not None and charging else 0.0
            evse = {"name": "EVSE", "evse": {"id": evse_id}}
            first = connector_ids[0]
            evse_state = CONNECTOR_STATUS[core.status_of(evse_id, first)]
            rows += [
                (evse, "AvailabilityState", evse_state, options),
                (evse, "Available", "true", {"dataType": "boolean"}),
                (evse, "Power", f"{power:.1f}", {"dataType": "decimal", "unit": "W", "maxLimit": EVSE_MAX_POWER_W}),
                (evse, "SupplyPhases", SUPPLY_PHASES, {"dataType": "integer"}),
            ]
            for connector_id in connector_ids:
                connector = {"name": "Connector", "evse": {"id": evse_id, "connectorId": connector_id}}
                rows += [
                    (connector, "AvailabilityState", CONNECTOR_STATUS[core.status_of(evse_id, connector_id)], options),
                    (connector, "Available", "true", {"dataType": "boolean"}),
                    (connector, "ConnectorType", CONNECTOR_TYPE, {"dataType": "string"}),
                    (connector, "SupplyPhases", SUPPLY_PHASES, {"dataType": "integer"}),
                ]
        return rows

    def _physical_variable(
        self, component: dict[str, Any], variable: dict[str, Any], attribute: str
    ) -> VariableResult | None:
        """GetVariables of a physical component; None when the component is not one of them."""
        name = component.get("name")
        if name not in ("ChargingStation", "EVSE", "Connector"):
            return None
        evse = component.get("evse") or {}
        wanted = {"name": name} if name == "ChargingStation" else {"name": name, "evse": evse}
        if name == "Connector":
            wanted["evse"] = {"id": evse.get("id"), "connectorId": evse.get("connector_id")}
        rows = [r for r in self._physical() if r[0] == wanted]
        if not rows:
            return VariableResult("UnknownComponent")
        row = next((r for r in rows if r[1] == variable.get("name") and not variable.get("instance")), None)
        if row is None:
            return VariableResult("UnknownVariable")
        if attribute != "Actual":
            return VariableResult("NotSupportedAttributeType")
        return VariableResult("Accepted", row[2])

    def _physical_report(self) -> list[dict[str, Any]]:
        return [
            {
                "component": component,
                "variable": {"name": variable},
                "variableAttribute": [
                    {"type": "Actual", "value": value, "mutability": "ReadOnly", "persistent": False}
                ],
                "variableCharacteristics": {**characteristics, "supportsMonitoring": False},
            }
            for component, variable, value, characteristics in self._physical()
        ]

    @on(Action.get_base_report)
    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> call_result.GetBaseReport:
        if report_base not in ("ConfigurationInventory", "FullInventory"):
            return call_result.GetBaseReport(status="NotSupported")
        configuration_only = report_base == "ConfigurationInventory"
        items = self.settings.report(configuration_only=configuration_only)
        if not configuration_only:
            items = self._physical_report() + items  # B07.FR.08: all component-variables
        if not self.follow_ups.later(self._notify_report(request_id, items), f"NotifyReport {request_id}"):
            return call_result.GetBaseReport(status="Rejected")
        return call_result.GetBaseReport(status="Accepted")

    async def _notify_report(self, request_id: int, items: list[dict[str, Any]]) -> None:
        """In parts of ItemsPerMessage[GetReport] items, seqNo from 0 (B07.FR.10), tbc on all but the last."""
        per_message = max(1, self.settings.int_value("ItemsPerMessageGetReport"))
        chunks = [items[i : i + per_message] for i in range(0, len(items), per_message)] or [[]]
        for seq_no, chunk in enumerate(chunks):
            await self.call(
                call.NotifyReport(
                    request_id=request_id,
                    generated_at=iso(None),
                    seq_no=seq_no,
                    report_data=chunk or None,
                    tbc=seq_no < len(chunks) - 1,
                ),
                suppress=False,
            )

    # ------------------------------------------------------------------ smart charging (K01, K05, K08-K10)

    def not_offered(self) -> frozenset[str]:
        return frozenset() if self.runtime.smart.available else SMART_ACTIONS

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        """K01: installed, stored (K01.FR.27) and applied at once (K01.FR.07); Rejected with a reasonCode for what
        the station cannot read or honour (K01.FR.09/26/28/31/35/38/40/41/43/48/52/53, the SmartChargingCtrlr
        limits). Not offered at all where no EVSE can limit the car (K01.FR.29: the adapter answers NotSupported)."""
        try:
            profile = profile_codec.from_v201(charging_profile, evse_id)
        except profile_codec.ProfileFormatError as exc:
            refusal: Refusal | None = Refusal(exc.reason_code, str(exc))
        else:
            refusal = self.runtime.smart.install(profile, ocpp16=False)
        log.info(
            "SetChargingProfile",
            evse_id=evse_id,
            accepted=refusal is None,
            reason=None if refusal is None else refusal.reason_code,
        )
        if refusal is None:
            return call_result.SetChargingProfile(status="Accepted")
        return call_result.SetChargingProfile(status="Rejected", status_info=_status_info(refusal))

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """K10: the profile with the id (K10.FR.03), or all matching every criterion given (K10.FR.04); Unknown when
        none matched (K10.FR.01); the limits are worked out again at once (K10.FR.05)."""
        criteria = charging_profile_criteria or {}
        purpose = criteria.get("charging_profile_purpose")
        removed: tuple[int, ...] = ()
        if purpose != "ChargingStationExternalConstraints":  # K10.FR.06/08: never cleared by the CSMS
            try:
                removed = self.runtime.smart.clear(
                    charging_profile_id,
                    criteria.get("evse_id"),
                    None if purpose is None else Purpose.parse(purpose),
                    criteria.get("stack_level"),
                )
            except StoreError as exc:
                log.error("ClearChargingProfile not stored", error=str(exc))
        log.info("ClearChargingProfile", id=charging_profile_id, removed=list(removed))
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        """K08: from now for `duration` s (K08.FR.02; EVSE 0: what the station draws, K08.FR.03); Rejected for an
        unknown EVSE (K08.FR.05) or a unit not in SmartChargingCtrlr.RateUnit (K08.FR.07)."""
        smart = self.runtime.smart
        unit = RateUnit(charging_rate_unit) if charging_rate_unit else RateUnit.A
        if unit not in smart.rules.allowed_units:
            why = Refusal("UnsupportedRateUnit", f"the station does not use {unit.value} (K08.FR.07)")
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_status_info(why))
        try:
            composite = smart.composite(evse_id, duration, unit)
        except ValueError as exc:
            why = Refusal("UnknownEVSE", str(exc))
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_status_info(why))
        return call_result.GetCompositeSchedule(status="Accepted", schedule=profile_codec.to_v201_schedule(composite))

    @on(Action.get_charging_profiles)
    def on_get_charging_profiles(
        self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None, **_: Any
    ) -> call_result.GetChargingProfiles:
        """K09: Accepted and then ReportChargingProfiles with the requestId (K09.FR.01), one per EVSE and source,
        tbc on all but the last (K09.FR.02); NoProfiles when none matches (K09 error handling)."""
        purpose = charging_profile.get("charging_profile_purpose")
        if purpose == "ChargingStationExternalConstraints":
            found: tuple[ChargingProfile, ...] = ()  # none exist here: no external control signals
        else:
            found = self.runtime.smart.book.select(
                evse_id,
                charging_profile.get("charging_profile_id"),
                None if purpose is None else Purpose.parse(purpose),
                charging_profile.get("stack_level"),
                charging_profile.get("charging_limit_source"),
            )
        if not found:
            return call_result.GetChargingProfiles(status="NoProfiles")
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for profile in sorted(found, key=lambda p: (p.evse_id, p.source, p.id)):
            groups.setdefault((profile.evse_id, profile.source), []).append(profile_codec.to_v201_profile(profile))
        if not self.follow_ups.later(self._report_profiles(request_id, groups), f"ReportChargingProfiles {request_id}"):
            return call_result.GetChargingProfiles(status="Rejected")
        return call_result.GetChargingProfiles(status="Accepted")

    async def _report_profiles(self, request_id: int, groups: dict[tuple[int, str], list[dict[str, Any]]]) -> None:
        reports = [(evse, source, chunk) for (evse, source), profiles in groups.items() for chunk in _chunks(profiles)]
        for n, (evse, source, chunk) in enumerate(reports):
            await self.call(
                call.ReportChargingProfiles(
                    request_id=request_id,
                    charging_limit_source=source,
                    charging_profile=chunk,
                    evse_id=evse,
                    tbc=n < len(reports) - 1,
                ),
                suppress=False,
            )

    # ------------------------------------------------------------------ triggered messages

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        # One pending trigger per message type and EVSE (station/ocpp/adapter.py FollowUps).
        evses = list(self.runtime.core.layout.evse_ids)
        wanted = (evse or {}).get("id")
        what = f"triggered {requested_message} {'all' if wanted is None else wanted}"
        if wanted is not None and requested_message in ("MeterValues", "TransactionEvent") and wanted not in evses:
            return call_result.TriggerMessage(status="Rejected")  # evse 0 too: there is no main meter apart
        targets = evses if wanted is None else [wanted]  # F06.FR.11: absent means every EVSE
        if requested_message == "Heartbeat":
            queued = self.follow_ups.later(self.heartbeat(), what)
        elif requested_message == "StatusNotification":
            if wanted is not None and wanted not in evses:
                return call_result.TriggerMessage(status="Rejected")
            reports = self.runtime.core.report_all(wanted, (evse or {}).get("connector_id"))
            if not reports:
                return call_result.TriggerMessage(status="Rejected")
            queued = self.follow_ups.send_statuses(reports, self._triggered_status, what)
        elif requested_message == "BootNotification":
            if self.registration == "Accepted":
                return call_result.TriggerMessage(status="Rejected")  # F06.FR.17
            queued = self.follow_ups.later(self.boot("Triggered"), what)
        elif requested_message == "MeterValues":
            if all(self.runtime.meter_state(e).live is None for e in targets):
                return call_result.TriggerMessage(status="Rejected")  # nothing measured yet
            queued = self.follow_ups.later(self._triggered_meter_values(targets), what)
        elif requested_message == "TransactionEvent":
            # F06.FR.07: a TransactionEvent(Updated, Trigger) per EVSE with a transaction, queued as a transaction
            # message so that it keeps its place and its seqNo in the transaction's sequence.
            queued = bool([e for e in targets if self.runtime.queue_triggered_reading(e)])
            if not queued:
                return call_result.TriggerMessage(status="Rejected")
        elif requested_message == "FirmwareStatusNotification" and self.firmware is not None:
            queued = self.follow_ups.later(self._triggered_firmware_status(), what)  # L01.FR.25/26
        elif requested_message == "LogStatusNotification" and self.log_uploads is not None:
            queued = self.follow_ups.later(self._triggered_log_status(), what)
        elif requested_message == "SignChargingStationCertificate" and self.security is not None:
            # A02.FR.02: a new key and a SignCertificate once this answer is out (the connection sends it)
            queued = renew_client_certificate(self.security, asyncio.get_running_loop().time())
        else:  # SignV2GCertificate, SignCombinedCertificate: no ISO 15118 here
            return call_result.TriggerMessage(status="NotImplemented")  # F06.FR.08
        return call_result.TriggerMessage(status="Accepted" if queued else "Rejected")

    # ---- firmware update (2.0.1 L01 Secure Firmware Update)

    @on(Action.update_firmware)
    def on_update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.UpdateFirmware:
        if self.firmware is None:
            return call_result.UpdateFirmware(status="Rejected")
        request = UpdateRequest.signed(request_id, firmware, retries, retry_interval)
        return call_result.UpdateFirmware(status=self.firmware.request(request))

    async def _triggered_firmware_status(self) -> None:
        assert self.firmware is not None
        status, request_id = self.firmware.triggered()
        await self.call(call.FirmwareStatusNotification(status=status, request_id=request_id))

    # ---- end firmware update

    async def _triggered_meter_values(self, evses: list[int]) -> None:
        """F06.FR.06: the most recent measurements of the AlignedDataCtrlr.Measurands, context Trigger."""
        for evse_id in evses:
            live = self.runtime.meter_state(evse_id).live
            if live is None:
                continue
            body = values_of(live)
            sampled = _readings(body, self.settings.measurands("MeterValuesAlignedData"), "Trigger")
            if not sampled:
                sampled = _readings(body, [ENERGY], "Trigger")  # meterValue needs one sampledValue
            await self.call(
                call.MeterValues(evse_id=evse_id, meter_value=[{"timestamp": iso(None), "sampled_value": sampled}]),
                suppress=False,
            )

    # ------------------------------------------------------------------ transactions and customers

    @on(Action.get_transaction_status)
    def on_get_transaction_status(
        self, transaction_id: str | None = None, **_: Any
    ) -> call_result.GetTransactionStatus:
        """E14: whether transaction messages wait in the outbox (for one transaction, or any), and for a known
        transaction whether it still runs."""
        if transaction_id is None:
            return call_result.GetTransactionStatus(
                messages_in_queue=self.store.transaction_messages_queued()
            )  # E14.FR.06-08
        stored = self.store.transaction(transaction_id)
        if stored is None:
            return call_result.GetTransactionStatus(messages_in_queue=False, ongoing_indicator=False)  # E14.FR.01
        return call_result.GetTransactionStatus(
            messages_in_queue=self.store.transaction_messages_queued(transaction_id),  # E14.FR.04/05
            ongoing_indicator=stored.state == "started",  # E14.FR.02/03
        )

    @on(Action.customer_information)
    def on_customer_information(
        self,
        request_id: int,
        report: bool,
        clear: bool,
        id_token: dict[str, Any] | None = None,
        customer_certificate: dict[str, Any] | None = None,
        customer_identifier: str | None = None,
        **_: Any,
    ) -> call_result.CustomerInformation:
        """N09/N10: what the station holds about a customer, reported and/or cleared. It holds data by idToken only:
        the authorization cache entry (cleared), the local list entry (the CSMS's: kept, N10.FR.03) and the
        transactions started with it (signed billing records: kept)."""
        references = [r for r in (id_token, customer_certificate, customer_identifier) if r is not None]
        if len(references) != 1:
            return call_result.CustomerInformation(status="Invalid")  # N09.FR.09
        if not report and not clear:
            return call_result.CustomerInformation(status="Rejected")  # N09.FR.07 / N10.FR.07
        held: list[str] = []
        if id_token is not None:
            held = self._customer_data(str(id_token.get("id_token", "")), clear=clear)
        if not held:
            parts = ["No data found for this customer."]  # N09.FR.06 / N10.FR.04
        elif report:
            parts = held  # N09.FR.05 / N10.FR.03
        else:
            parts = [f"Cleared: {line}" for line in held if line.startswith("authorization cache")] or [
                "Nothing to clear: only the local list entry and signed transactions, which are kept."
            ]
        self.follow_ups.later(self._notify_customer(request_id, parts), f"NotifyCustomerInformation {request_id}")
        log.info("CustomerInformation", request_id=request_id, report=report, clear=clear, items=len(held))
        return call_result.CustomerInformation(status="Accepted")

    def _customer_data(self, id_tag: str, *, clear: bool) -> list[str]:
        lines: list[str] = []
        cached = self.store.id_tag_entry("cache", id_tag)
        if cached is not None:
            expiry = f", valid until {iso(cached.expiry)}" if cached.expiry else ""
            lines.append(f"authorization cache: {id_tag} {cached.status}{expiry}" + (" (cleared)" if clear else ""))
            if clear:
                self.store.replace_id_tags("cache", [IdTagEntry(id_tag, None)], full=False, version=None)
        listed = self.store.id_tag_entry("list", id_tag)
        if listed is not None:
            lines.append(f"local authorization list: {id_tag} {listed.status} (kept: the list is the CSMS's)")
        count, recent = self.store.transactions_of(id_tag, limit=20)
        for stored in recent:
            tx = stored.transaction
            lines.append(
                f"transaction {tx.ref}: started {iso(tx.started_at or tx.requested_at)}"
                + (f", ended {iso(tx.stopped_at)}" if tx.stopped_at else ", running")
                + " (kept: signed billing record)"
            )
        if count > len(recent):
            lines.append(f"and {count - len(recent)} earlier transactions (kept: signed billing records)")
        return lines

    async def _notify_customer(self, request_id: int, lines: list[str]) -> None:
        """The lines in NotifyCustomerInformation parts of at most 512 characters, seqNo from 0, tbc on all but the
        last."""
        parts: list[str] = []
        for line in lines:
            while line:
                piece, line = line[:CUSTOMER_DATA_LIMIT], line[CUSTOMER_DATA_LIMIT:]
                if parts and len(parts[-1]) + 1 + len(piece) <= CUSTOMER_DATA_LIMIT:
                    parts[-1] = f"{parts[-1]}\n{piece}"
                else:
                    parts.append(piece)
        for seq_no, data in enumerate(parts):
            await self.call(
                call.NotifyCustomerInformation(
                    data=data, seq_no=seq_no, generated_at=iso(None), request_id=request_id, tbc=seq_no < len(parts) - 1
                ),
                suppress=False,
            )

    # ---- reservations (H01 ReserveNow, H02 CancelReservation; H03 and H04 are the core's and the runtime's)

    @on(Action.reserve_now)
    def on_reserve_now(
        self,
        id: int,
        expiry_date_time: str,
        id_token: dict[str, Any],
        connector_type: str | None = None,
        evse_id: int | None = None,
        group_id_token: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ReserveNow:
        """H01: Rejected when ReservationCtrlr.Enabled is false (H01.FR.01), without an evseId unless NonEvseSpecific
        (H01.FR.18/19), for an EVSE or connector type the station does not have; else the core's answer (H01.FR.02-14;
        every connector here is of one type, so a connectorType reservation is one of any EVSE, H01.FR.06/09)."""
        if self.settings.value("ReservationEnabled") != "true":
            status, why = "Rejected", "ReservationCtrlr.Enabled is false"
        elif evse_id is None and self.settings.value("ReserveConnectorZeroSupported") != "true":
            status, why = "Rejected", "ReservationCtrlr.NonEvseSpecific is false"
        elif evse_id is not None and evse_id not in self.runtime.core.layout.evse_ids:
            status, why = "Rejected", f"no EVSE {evse_id}"
        elif connector_type is not None and connector_type not in (CONNECTOR_TYPE, "Unknown"):
            status, why = "Rejected", f"no connector of type {connector_type}"
        else:
            group = None if group_id_token is None else str(group_id_token.get("id_token", ""))
            token = str(id_token.get("id_token", ""))
            expiry = reservation_expiry(expiry_date_time)
            outcome = self.runtime.reserve(Reservation(id, evse_id, token, expiry, group or None, connector_type))
            status, why = outcome.answer or "Rejected", outcome.reason
        log.info("ReserveNow", reservation_id=id, evse_id=evse_id, status=status, reason=why)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> call_result.CancelReservation:
        """H02.FR.01 (Rejected for an unknown id), H02.FR.02 (cancelled; no ReservationStatusUpdate, H02 remark)."""
        status = self.runtime.cancel_reservation(reservation_id).answer or "Rejected"
        log.info("CancelReservation", reservation_id=reservation_id, status=status)
        return call_result.CancelReservation(status=status)

    @on(Action.change_availability)
    def on_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.ChangeAvailability:
        # G03: no evse is the whole station; an evse without connectorId is that EVSE with all its connectors.
        evse_id = int((evse or {}).get("id", 0))
        connector_id = int((evse or {}).get("connector_id", 0))
        layout = self.runtime.core.layout
        if evse_id != 0 and evse_id not in layout.evse_ids:
            return call_result.ChangeAvailability(status="Rejected", status_info={"reason_code": "UnknownEvse"})
        if evse_id != 0 and connector_id not in (0, *layout.connectors_of(evse_id)):
            return call_result.ChangeAvailability(status="Rejected", status_info={"reason_code": "UnknownConnector"})
        outcome = self.runtime.change_availability(evse_id, operational_status == "Operative", connector_id)
        log.info("ChangeAvailability", evse_id=evse_id, to=operational_status, accepted=outcome.accepted)
        if not outcome.accepted:
            return call_result.ChangeAvailability(status="Rejected")
        return call_result.ChangeAvailability(status="Scheduled" if outcome.reason == "scheduled" else "Accepted")

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        """F05: UnknownConnector for a connector the station does not have; OngoingAuthorizedTransaction while a
        transaction runs there (F05.FR.02: the CSMS ends it first); else the lock opens: Unlocked, or UnlockFailed
        when the lock says it did not (F05.FR.04). A fixed cable has no lock to open: nothing holds the plug."""
        status = await self.runtime.unlock(evse_id, connector_id, end_transaction=False)
        log.info("UnlockConnector", evse_id=evse_id, connector_id=connector_id, status=status)
        return call_result.UnlockConnector(status="Unlocked" if status == "NotSupported" else status)

    @on(Action.send_local_list)
    def on_send_local_list(
        self,
        version_number: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> call_result.SendLocalList:
        authorizer = self.runtime.authorizer
        if authorizer is None or self.settings.value("LocalAuthListEnabled") != "true":
            return call_result.SendLocalList(status="Failed", status_info={"reason_code": "Disabled"})
        items = local_authorization_list or []
        if len(items) > self.settings.int_value("SendLocalListMaxLength"):
            return call_result.SendLocalList(status="Failed", status_info={"reason_code": "TooManyEntries"})
        entries = [
            IdTagEntry(item["id_token"]["id_token"], None)
            if item.get("id_token_info") is None
            else id_token_entry(item["id_token"]["id_token"], item["id_token_info"])
            for item in items
        ]
        status = authorizer.update_list(version_number, entries, full=update_type == "Full")
        log.info("SendLocalList", version=version_number, update_type=update_type, entries=len(entries), status=status)
        return call_result.SendLocalList(status=status)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        authorizer = self.runtime.authorizer
        return call_result.GetLocalListVersion(version_number=authorizer.list_version() if authorizer else 0)

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        if self.runtime.authorizer is None:
            return call_result.ClearCache(status="Rejected")
        self.runtime.authorizer.clear_cache()
        return call_result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.reset)
    def on_reset(self, type: str, evse_id: int | None = None, **_: Any) -> call_result.Reset:
        if evse_id is not None:
            # Resetting one EVSE alone is not something this station can do (its meter and daemon are shared).
            return call_result.Reset(status="Rejected", status_info={"reason_code": "UnsupportedRequest"})
        status = self.runtime.reset(immediate=type == "Immediate", reason=StopReason.HARD_RESET)
        # B11/B12: the next boot says why (BootReasonEnumType): at once, or once the transactions have ended.
        self.store.restart_reason("ScheduledReset" if status == "Scheduled" else "RemoteReset")
        log.warning("Reset", type=type, status=status)
        return call_result.Reset(status=status)

    # ---- certificates (M03 GetInstalledCertificateIds, M04 DeleteCertificate, M05 InstallCertificate; the rules are
    # version-neutral in station/ocpp/security.py)

    @on(Action.install_certificate)
    def on_install_certificate(
        self, certificate_type: str, certificate: str, **_: Any
    ) -> call_result.InstallCertificate:
        """M05: Accepted / Rejected (invalid: M05.FR.07, full: M05.FR.06) / Failed (M05.FR.03), with the reason."""
        if self.security is None:
            return call_result.InstallCertificate(status="Failed")
        answer = install_certificate(self.security, certificate_type, certificate)
        return call_result.InstallCertificate(status=answer.status, status_info=_certificate_info(answer))

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(
        self, certificate_type: list[str] | None = None, **_: Any
    ) -> call_result.GetInstalledCertificateIds:
        """M03: every installed certificate of the types asked (all without a filter); NotFound (M03.FR.02) when
        none. V2GCertificateChain (M03.FR.05) is the station's own ISO 15118 chain, which it does not have."""
        found = installed_certificates(self.security, certificate_type) if self.security else []
        if not found:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        chains = [{"certificate_type": use, "certificate_hash_data": data} for use, data in found]
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data_chain=chains)

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> call_result.DeleteCertificate:
        """M04: Accepted / NotFound (M04.FR.04) / Failed (M04.FR.03, M04.FR.06)."""
        if self.security is None:
            return call_result.DeleteCertificate(status="Failed")
        answer = delete_certificate(self.security, certificate_hash_data)
        return call_result.DeleteCertificate(status=answer.status, status_info=_certificate_info(answer))

    # ---- end certificates

    # ---- client certificate (A02/A03: SignCertificate, CertificateSigned; the rules in station/ocpp/security.py
    # and client_certificate.py)

    async def sign_certificate(self, csr: str) -> bool:
        """SignCertificateRequest for the ChargingStationCertificate (A02.FR.03/13); True when Accepted (A02.FR.11)."""
        result = await self.call(
            call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate"), suppress=False
        )
        return str(result.status) == "Accepted"

    @on(Action.certificate_signed)
    def on_certificate_signed(
        self, certificate_chain: str, certificate_type: str | None = None, **_: Any
    ) -> call_result.CertificateSigned:
        """A02.FR.06-08: Accepted for a chain for this station's pending key that chains to a CSMS root, used from
        the next connection; Rejected with the reason and InvalidChargingStationCertificate (A02.FR.07) otherwise."""
        if self.security is None:
            return call_result.CertificateSigned(status="Rejected")
        answer = certificate_signed(self.security, certificate_chain, certificate_type)
        return call_result.CertificateSigned(status=answer.status, status_info=_certificate_info(answer))

    # ---- end client certificate

    # ---- network profiles (B09 Setting a new NetworkConnectionProfile): station/ocpp/network.py does the work

    network: NetworkProfiles | None = None  # set by the connection

    @on(Action.set_network_profile)
    def on_set_network_profile(
        self, configuration_slot: int, connection_data: dict[str, Any], **_: Any
    ) -> call_result.SetNetworkProfile:
        """B09.FR.01-05: validated in full, stored, Accepted; Rejected with the reason (a slot outside the valuesList
        of NetworkConfigurationPriority, a lower security profile, what the station cannot do); Failed when the
        store cannot take it. Used from the next connection attempt that reaches its slot (B10)."""
        if self.network is None:
            return call_result.SetNetworkProfile(status="Failed")
        answer = self.network.set_profile(configuration_slot, connection_data)
        info = {"reason_code": answer.reason_code, "additional_info": answer.reason[:512]} if answer.reason else None
        return call_result.SetNetworkProfile(status=answer.status, status_info=info)

    # ---- log upload (N01 Retrieve Log; F06 TriggerMessage LogStatusNotification): station/logupload/ does the work

    @on(Action.get_log)
    def on_get_log(
        self,
        log: dict[str, Any],
        log_type: str,
        request_id: int,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.GetLog:
        """N01.FR.01-05, N01.FR.12: Accepted (AcceptedCanceled when a running upload was canceled for it) with the
        file name, then LogStatusNotifications with this requestId (N01.FR.07); Rejected for a location the station
        cannot upload to or a period that cannot hold anything."""
        if self.log_uploads is None:
            return call_result.GetLog(status="Rejected")
        request = log_upload.LogRequest(
            log_upload.LOG_REQUEST,
            "2.0.1",
            log_type,
            str(log.get("remote_location", "")),
            Window(parse_time(log.get("oldest_timestamp")), parse_time(log.get("latest_timestamp"))),
            request_id=request_id,
            retries=retries,
            retry_interval=retry_interval,
        )
        answer = self.log_uploads.request(request)
        info = {"reason_code": "InvalidValue", "additional_info": answer.reason[:512]} if answer.reason else None
        return call_result.GetLog(status=answer.status, filename=answer.file_name, status_info=info)

    async def _triggered_log_status(self) -> None:
        """F06.FR.14/15 (TC_F_15/16): Uploading with the upload's requestId while one runs, else Idle without one
        (N01.FR.13)."""
        assert self.log_uploads is not None
        running = self.log_uploads.uploading(log_upload.LOG_REQUEST)
        await self.call(
            call.LogStatusNotification(
                status="Uploading" if running else "Idle", request_id=running.request_id if running else None
            ),
            suppress=False,
        )

    async def _log_status(self, message: OutboxMessage) -> Delivery:
        """A queued log upload status. 1.6 DiagnosticsStatusNotification (a GetDiagnostics before the station
        switched to 2.0.1) has no 2.0.1 counterpart: dropped."""
        if message.kind != log_upload.OUTBOX_KINDS[log_upload.LOG_REQUEST]:
            return Delivery()
        status = str(message.body["status"])
        payload = call.LogStatusNotification(status=status, request_id=message.body.get("request_id"))
        await self.call(payload, suppress=False, unique_id=message.call_id)
        return Delivery()


SMART_ACTIONS = frozenset({"SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule", "GetChargingProfiles"})
PROFILES_PER_REPORT = 16  # ReportChargingProfiles carry at most this many profiles (each up to 1024 periods)


def _chunks(profiles: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [profiles[i : i + PROFILES_PER_REPORT] for i in range(0, len(profiles), PROFILES_PER_REPORT)]


def _status_info(refusal: Refusal) -> dict[str, str]:
    """StatusInfoType: reasonCode (CiString20) and additionalInfo (CiString512)."""
    return {"reason_code": refusal.reason_code[:20], "additional_info": refusal.text[:512]}


# ---- certificates
def _certificate_info(answer: CertificateAnswer) -> dict[str, str] | None:
    if not answer.reason:
        return None
    return {"reason_code": answer.reason[:20], "additional_info": answer.detail[:512]}
