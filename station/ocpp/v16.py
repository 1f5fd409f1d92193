"""The OCPP 1.6J adapter: translates 1.6 messages to runtime requests and outbox entries to 1.6 messages.

Handlers are thin: they translate, ask the runtime (which decides synchronously), and answer. They never await the
meter or another CALL (the `ocpp` library reads no frames while a handler awaits). Outgoing transaction messages are
built from the store at send time, so a transaction started offline gets its real transactionId in its
StopTransaction. The RPC framework's rules (error codes, no answer while Rejected) are `RpcRules`'. This module knows
nothing about Modbus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    DataTransferStatus,
    GetCompositeScheduleStatus,
    RegistrationStatus,
    RemoteStartStopStatus,
)

from station.core.model import (
    ConnectorStatus,
    Outcome,
    ReportStatus,
    Reservation,
    SignedMeterRecord,
    StopReason,
    Transaction,
)
from station.firmware.update import FirmwareUpdater, UpdateRequest
from station.firmware.update import parse_time as firmware_time
from station.logupload import service as log_upload
from station.logupload.archive import DIAGNOSTICS, Window, parse_time
from station.meter.interface import LiveValues
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
from station.ocpp.certificates import USE_16  # ---- certificates
from station.ocpp.security import (  # ---- certificates
    Security,
    certificate_signed,
    delete_certificate,
    install_certificate,
    installed_certificates,
    renew_client_certificate,
)
from station.ocpp.settings import Settings
from station.ocpp.signed_value import PUBLIC_KEY_NEVER, v16_signed_sampled_value
from station.runtime import StationRuntime
from station.runtime.sampling import values_of
from station.smart.profiles import Purpose, RateUnit
from station.store import IdTagEntry, OutboxMessage, Store, StoreError

log = structlog.get_logger("station.ocpp.v16")

SUBPROTOCOL = "ocpp1.6"


# ---- firmware update: the 2.0.1 words the updater queues -> plain 1.6 FirmwareStatusNotification
FIRMWARE_STATUSES_16 = (
    "Downloaded",
    "DownloadFailed",
    "Downloading",
    "Idle",
    "InstallationFailed",
    "Installing",
    "Installed",
)
FIRMWARE_STATUS_16 = {"InstallVerificationFailed": "InstallationFailed"}


class V16Adapter(RpcRules, ChargePoint):  # type: ignore[misc]
    version = "1.6"

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
        signed_value_format: str,
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
        self.raw_signed_values = signed_value_format == "raw"
        self.follow_ups = FollowUps()
        self.registration: str | None = None  # status of the last BootNotification.conf
        self.accepted = asyncio.Event()  # set when a BootNotification (also a triggered one) was Accepted
        self.boot_interval = 0
        self.firmware = firmware  # ---- firmware update (station/firmware/)

    # ------------------------------------------------------------------ outgoing

    async def boot(self, reason: str = "PowerUp") -> int:
        """BootNotification; returns the heartbeat interval when Accepted, raises BootRefused otherwise. (1.6 has no
        boot reason.)"""
        # meterType / meterSerialNumber name "the main power meter": one there is only with one EVSE.
        meters = self.runtime.meters
        identity = next(iter(meters.values())).state.identity if len(meters) == 1 else None
        result = await self.call(
            call.BootNotification(
                charge_point_model=self.model,
                charge_point_vendor=self.vendor,
                meter_type=identity.model[:25] if identity else None,
                meter_serial_number=identity.serial_number[:25] if identity else None,
            ),
            suppress=False,
        )
        interval = int(result.interval)
        self.registration = str(result.status)
        if result.status != RegistrationStatus.accepted:
            raise BootRefused(str(result.status), interval)
        self.boot_interval = interval
        self.accepted.set()
        return interval

    async def authorize(self, id_tag: str) -> IdTagEntry | None:
        """Ask the CSMS; None when it cannot answer (the caller then decides locally)."""
        try:
            result = await self.call(call.Authorize(id_tag=id_tag), suppress=False)
        except (OCPPError, TimeoutError) as exc:
            log.warning("Authorize not answered", error=str(exc))
            return None
        return id_tag_entry(id_tag, result.id_tag_info)

    async def heartbeat(self) -> None:
        await self.call(call.Heartbeat(), suppress=False)

    async def status(self, report: ReportStatus) -> None:
        await self.call(
            call.StatusNotification(
                connector_id=self._number(report.evse_id, report.connector_id),
                error_code=ChargePointErrorCode(report.error_code),
                status=ChargePointStatus(report.status.value),
                info=report.info[:50] or None,
                timestamp=iso(None),
            ),
            suppress=False,
        )

    async def deliver(self, message: OutboxMessage) -> Delivery:
        """Send one outbox entry; returns when the CSMS answered with a CALLRESULT (raises on CALLERROR/timeout)."""
        if message.kind == "transaction_started":
            return await self._start_transaction(message)
        if message.kind == "transaction_ended":
            return await self._stop_transaction(message)
        if message.kind == "meter_values":
            await self._meter_values(message)
            return Delivery()
        if message.kind == "signed_begin":
            await self._signed_begin(message)
            return Delivery()
        if message.kind == "charging_state":
            return Delivery()  # 1.6 tells the charging state by StatusNotification only (SuspendedEV, ...)
        if message.kind == "reservation_status":
            return Delivery()  # ---- reservations: 1.6 has no such message (an expiry is a StatusNotification)
        if message.kind == "firmware_status":
            await self._firmware_status(message)
            return Delivery()
        if message.kind == "security_event":
            event = call.SecurityEventNotification(**security_event_fields(message.body, "1.6"))
            await self.call(event, suppress=False, unique_id=message.call_id)
            return Delivery()
        if message.kind in log_upload.OUTBOX_KINDS.values():
            return await self._log_status(message)
        else:
            raise ValueError(f"1.6 adapter cannot send outbox entry of kind {message.kind!r}")

    async def _start_transaction(self, message: OutboxMessage) -> Delivery:
        assert message.tx_ref is not None
        stored = self.store.transaction(message.tx_ref)
        if stored is None:
            raise ValueError(f"outbox entry {message.id} names unknown transaction {message.tx_ref}")
        tx = stored.transaction
        result = await self.call(
            call.StartTransaction(
                connector_id=self._number(tx.evse_id, tx.connector_id),
                id_tag=tx.id_tag,
                meter_start=int(tx.meter_start_wh or 0),
                timestamp=iso(tx.started_at),
                reservation_id=tx.reservation_id,  # ---- reservations: §5.13 "SHALL send the reservationId"
            ),
            suppress=False,
            unique_id=message.call_id,
        )
        if str(result.transaction_id) in self.runtime.pending_remote_stops:
            self.runtime.pending_remote_stops.discard(str(result.transaction_id))
            self.runtime.remote_stop(tx.ref, StopReason.REMOTE)
        if self.runtime.authorizer is not None and result.id_tag_info:
            self.runtime.authorizer.remember(id_tag_entry(tx.id_tag, result.id_tag_info))
        status = str((result.id_tag_info or {}).get("status"))
        log.info(
            "StartTransaction confirmed", tx_ref=tx.ref, transaction_id=result.transaction_id, id_tag_status=status
        )
        if status != "Accepted" and stored.state == "started":
            # §4.8 (errata §3.17) and §9.1.24 StopTransactionOnInvalidId: stop at once, reason DeAuthorized.
            self.runtime.csms_refused_id(tx.ref, status)
        return Delivery(csms_transaction=(tx.ref, str(result.transaction_id)))

    async def _stop_transaction(self, message: OutboxMessage) -> Delivery:
        assert message.tx_ref is not None
        stored = self.store.transaction(message.tx_ref)
        if stored is None:
            raise ValueError(f"outbox entry {message.id} names unknown transaction {message.tx_ref}")
        if stored.csms_transaction_id is None:
            # FIFO delivery sends StartTransaction first; reaching here means it was given up on (CALLERROR).
            raise ValueError(
                f"transaction {stored.transaction.ref} has no CSMS transactionId (StartTransaction failed)"
            )
        tx = stored.transaction
        transaction_data = self._transaction_data(tx)
        await self.call(
            call.StopTransaction(
                meter_stop=int(tx.meter_stop_wh or 0),
                timestamp=iso(tx.stopped_at),
                transaction_id=int(stored.csms_transaction_id),
                reason=(tx.stop_reason or StopReason.OTHER).ocpp16,
                id_tag=tx.id_tag,
                transaction_data=transaction_data,
            ),
            suppress=False,
            unique_id=message.call_id,
        )
        log.info("StopTransaction confirmed", tx_ref=tx.ref, transaction_id=stored.csms_transaction_id)
        return Delivery(transaction_done=tx.ref)

    def _transaction_data(self, tx: Transaction) -> list[dict[str, Any]] | None:
        """StopTransaction.transactionData: the unsigned readings of the StopTxnSampledData measurands taken every
        MeterValueSampleInterval from the start (§9.1.27, §3.16.1), then the meter's signed record(s) at the end. The
        signed record goes even when both StopTxn*Data keys are empty (§3.16.5 yields to the OCA application note:
        a lost signed record is lost money)."""
        measurands = self.settings.measurands("StopTxnSampledData")
        data: list[dict[str, Any]] = []
        for sample in self.store.samples(tx.ref, "periodic"):
            values = sampled_values(sample, measurands)
            if values:
                data.append({"timestamp": iso(datetime.fromisoformat(sample["at"])), "sampled_value": values})
        signed = self._signed_samples(tx.signed_records, signing_key(self.runtime, tx))
        if signed:
            data.append({"timestamp": iso(tx.stopped_at), "sampled_value": signed})
        return data or None

    def _signed_samples(self, records: Sequence[SignedMeterRecord], key: str) -> list[dict[str, Any]]:
        """Signed records as 1.6 SampledValues (OCA envelope or raw OCMF, with `key`, the key of the meter that signed
        them, per PublicKeyWithSignedMeterValue)."""
        with_key = self.settings.value("PublicKeyWithSignedMeterValue") != PUBLIC_KEY_NEVER
        return [v16_signed_sampled_value(r, key, with_key=with_key, raw=self.raw_signed_values) for r in records]

    async def _signed_begin(self, message: OutboxMessage) -> None:
        """OCA app note: the signed start value in a MeterValues right after StartTransaction, when
        SampledDataSignStartedReadings is on (StopTransaction carries it again in transactionData either way)."""
        if self.settings.value("SampledDataSignStartedReadings") != "true":
            return
        assert message.tx_ref is not None
        stored = self.store.transaction(message.tx_ref)
        if stored is None or stored.csms_transaction_id is None:
            raise ValueError(
                f"signed begin value for {message.tx_ref}: no CSMS transactionId (StartTransaction failed)"
            )
        tx = stored.transaction
        begin = [r for r in tx.signed_records if r.context == "Transaction.Begin"]
        sampled = self._signed_samples(begin, signing_key(self.runtime, tx))
        await self.call(
            call.MeterValues(
                connector_id=self._number(tx.evse_id, tx.connector_id),
                transaction_id=int(stored.csms_transaction_id),
                meter_value=[{"timestamp": iso(tx.started_at), "sampled_value": sampled}],
            ),
            suppress=False,
            unique_id=message.call_id,
        )

    async def _meter_values(self, message: OutboxMessage) -> None:
        body = message.body
        evse = body_evse(body)
        transaction_id = None
        if message.tx_ref is not None:
            stored = self.store.transaction(message.tx_ref)
            if stored is not None and stored.csms_transaction_id is not None:
                transaction_id = int(stored.csms_transaction_id)
        key = "MeterValuesAlignedData" if body["context"] == "Sample.Clock" else "MeterValuesSampledData"
        sampled = sampled_values(body, self.settings.measurands(key))
        if body.get("signed"):  # the meter's own signed reading (signed aligned data)
            record = SignedMeterRecord(str(body["signed"]), context=str(body["context"]))
            sampled += self._signed_samples([record], self.runtime.meter_key(evse))
        if not sampled:
            return  # no measurand configured: nothing to report (an empty MeterValue says nothing)
        await self.call(
            call.MeterValues(
                connector_id=self._number(evse),
                transaction_id=transaction_id,
                meter_value=[{"timestamp": iso(datetime.fromisoformat(body["at"])), "sampled_value": sampled}],
            ),
            suppress=False,
            unique_id=message.call_id,
        )

    # ------------------------------------------------------------------ incoming

    @on(Action.remote_start_transaction)
    def on_remote_start(
        self,
        id_tag: str,
        connector_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.RemoteStartTransaction:
        if connector_id is not None and connector_id <= 0:
            # §6.33: "connectorId SHALL be > 0"; connector 0 is the Charge Point itself, where nothing charges.
            log.info("RemoteStartTransaction refused", id_tag=id_tag, connector_id=connector_id, reason="connector 0")
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        if self.registration == "Pending":
            # §4.2: "While in pending state, ... RemoteStartTransaction.req and RemoteStopTransaction.req" are not
            # allowed.
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        # Without a connector id the station picks one: the first available (§5.11 leaves the choice to it).
        where = None if connector_id is None else self.runtime.core.layout.locate(connector_id)
        evse_id, within = (None, 1) if where is None else where
        if connector_id is not None and where is None:
            outcome = Outcome(False, reason=f"no connector {connector_id}")
        elif charging_profile is not None:
            # §5.16.2: a TxProfile for the transaction about to start, installed once it has.
            try:
                profile = profile_codec.from_v16(charging_profile, evse_id or 0)
            except profile_codec.ProfileFormatError as exc:
                outcome = Outcome(False, reason=f"chargingProfile: {exc}")
            else:
                outcome, _refusal = self.runtime.remote_start_with_profile(
                    evse_id, id_tag, profile, ocpp16=True, connector_id=within
                )
        else:
            outcome = self.runtime.remote_start(evse_id, id_tag, connector_id=within)
        log.info(
            "RemoteStartTransaction",
            id_tag=id_tag,
            connector_id=connector_id,
            accepted=outcome.accepted,
            reason=outcome.reason,
        )
        return call_result.RemoteStartTransaction(
            status=RemoteStartStopStatus.accepted if outcome.accepted else RemoteStartStopStatus.rejected
        )

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int, **_: Any) -> call_result.RemoteStopTransaction:
        ref = self.runtime.transaction_for_csms_id(str(transaction_id))
        if self.registration == "Pending":
            accepted = False  # §4.2: not allowed while Pending
        elif ref is not None:
            accepted = self.runtime.remote_stop(ref, StopReason.REMOTE).accepted
        elif self._start_in_flight():
            # The CSMS stops a transaction right after assigning its id: its StartTransaction answer is still behind
            # this frame (the library reads no frame while a handler runs). Only that answer can carry an id the CSMS
            # knows, so the stop is accepted and carried out when the answer names this id.
            self.runtime.pending_remote_stops.add(str(transaction_id))
            accepted = True
        else:
            accepted = False
        log.info("RemoteStopTransaction", transaction_id=transaction_id, accepted=accepted, pending=ref is None)
        return call_result.RemoteStopTransaction(
            status=RemoteStartStopStatus.accepted if accepted else RemoteStartStopStatus.rejected
        )

    def _start_in_flight(self) -> bool:
        return any(
            (stored := self.store.transaction(tx.ref)) is not None and stored.csms_transaction_id is None
            for tx in self.runtime.core.running_transactions()
        )

    def call_limits(self, action: str, payload: dict[str, Any], size: int) -> CallRefused | None:
        keys = payload.get("key")
        if action == "GetConfiguration" and isinstance(keys, list):
            limit = self.settings.int_value("GetConfigurationMaxKeys")
            if len(keys) > limit:
                # §9.1.9 GetConfigurationMaxKeys: more keys than the station takes in one request.
                return CallRefused("OccurenceConstraintViolation", f"more than {limit} keys (GetConfigurationMaxKeys)")
        return None

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> call_result.GetConfiguration:
        known, unknown = self.settings.read(key)
        return call_result.GetConfiguration(configuration_key=known or None, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> call_result.ChangeConfiguration:
        status = self.settings.change(key, value)
        log.info("ChangeConfiguration", key=key, status=status)
        return call_result.ChangeConfiguration(status=ConfigurationStatus(status))

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    @on(Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str, **_: Any) -> call_result.ChangeAvailability:
        # Connector 0 is the whole Charge Point (§5.2).
        where = (0, 0) if connector_id == 0 else self.runtime.core.layout.locate(connector_id)
        if where is None:
            return call_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        outcome = self.runtime.change_availability(where[0], type == "Operative", where[1])
        log.info("ChangeAvailability", connector_id=connector_id, to=type, accepted=outcome.accepted)
        if not outcome.accepted:
            return call_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        scheduled = outcome.reason == "scheduled"
        return call_result.ChangeAvailability(
            status=AvailabilityStatus.scheduled if scheduled else AvailabilityStatus.accepted
        )

    @on(Action.send_local_list)
    def on_send_local_list(
        self,
        list_version: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> call_result.SendLocalList:
        if self.runtime.authorizer is None or self.settings.value("LocalAuthListEnabled") != "true":
            return call_result.SendLocalList(status="NotSupported")
        items = local_authorization_list or []
        if len(items) > self.settings.int_value("SendLocalListMaxLength"):
            return call_result.SendLocalList(status="Failed")
        entries = [
            IdTagEntry(item["id_tag"], None)
            if item.get("id_tag_info") is None
            else id_tag_entry(item["id_tag"], item["id_tag_info"])
            for item in items
        ]
        status = self.runtime.authorizer.update_list(list_version, entries, full=update_type == "Full")
        log.info("SendLocalList", version=list_version, update_type=update_type, entries=len(entries), status=status)
        return call_result.SendLocalList(status=status)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        if self.runtime.authorizer is None or self.settings.value("LocalAuthListEnabled") != "true":
            return call_result.GetLocalListVersion(list_version=-1)
        return call_result.GetLocalListVersion(list_version=self.runtime.authorizer.list_version())

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        if self.runtime.authorizer is None:
            return call_result.ClearCache(status="Rejected")
        self.runtime.authorizer.clear_cache()
        return call_result.ClearCache(status="Accepted")

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        """§5.18: a running transaction there is ended first (reason UnlockCommand), then the lock opens: Unlocked,
        or UnlockFailed when the lock says it did not; NotSupported for a fixed cable (no lock) and for a connector
        the station does not have."""
        where = self.runtime.core.layout.locate(connector_id)
        if where is None:
            return call_result.UnlockConnector(status="NotSupported")
        status = await self.runtime.unlock(where[0], where[1], end_transaction=True)
        log.info("UnlockConnector", connector_id=connector_id, status=status)
        return call_result.UnlockConnector(status="NotSupported" if status == "UnknownConnector" else status)

    # ---- reservations (§3.11, §5.13 ReserveNow, §5.1 CancelReservation)

    @on(Action.reserve_now)
    def on_reserve_now(
        self,
        connector_id: int,
        expiry_date: str,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
        **_: Any,
    ) -> call_result.ReserveNow:
        """§5.13: connector 0 only with ReserveConnectorZeroSupported (else Rejected); a connector reserves its EVSE
        (the unit with the meter: all of its connectors report Reserved); the answer is the core's (§7.40)."""
        where = None if connector_id == 0 else self.runtime.core.layout.locate(connector_id)
        if self.settings.value("ReservationEnabled") != "true":
            status, why = "Rejected", "reservations are disabled"
        elif connector_id == 0 and self.settings.value("ReserveConnectorZeroSupported") != "true":
            status, why = "Rejected", "ReserveConnectorZeroSupported is false"
        elif connector_id != 0 and where is None:
            status, why = "Rejected", f"no connector {connector_id}"
        else:
            evse_id = None if where is None else where[0]
            reservation = Reservation(reservation_id, evse_id, id_tag, reservation_expiry(expiry_date), parent_id_tag)
            outcome = self.runtime.reserve(reservation)
            status, why = outcome.answer or "Rejected", outcome.reason
        log.info("ReserveNow", reservation_id=reservation_id, connector_id=connector_id, status=status, reason=why)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> call_result.CancelReservation:
        """§5.1: Accepted for a reservation the station holds, else Rejected."""
        status = self.runtime.cancel_reservation(reservation_id).answer or "Rejected"
        log.info("CancelReservation", reservation_id=reservation_id, status=status)
        return call_result.CancelReservation(status=status)

    # ------------------------------------------------------------------ smart charging (§3.13, §5.5, §5.7, §5.16)

    def not_offered(self) -> frozenset[str]:
        """What SupportedFeatureProfiles does not claim is NotSupported: without current control the SmartCharging
        requests (SetChargingProfile answers NotSupported in its own status, §6.44); without `[firmware]
        allow_unsigned_16` the plain UpdateFirmware, whose answer has no status to refuse it with (§6.51)."""
        offered = self.settings.value("SupportedFeatureProfiles").split(",")
        refused: set[str] = set()
        if "SmartCharging" not in offered:
            refused |= {"ClearChargingProfile", "GetCompositeSchedule"}
        if "FirmwareManagement" not in offered:
            refused.add("UpdateFirmware")
        return frozenset(refused)

    def _profile_evse(self, connector_id: int) -> int | None:
        """The EVSE a profile's connectorId names (0: the Charge Point), None for a connector the station lacks."""
        if connector_id == 0:
            return 0
        where = self.runtime.core.layout.locate(connector_id)
        return None if where is None else where[0]

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        """§5.16 / §6.43: NotSupported where no EVSE's current can be controlled (driver "meter-output"); Rejected
        for an unknown connector, a profile the station cannot read or honour (§3.13, §9.4 limits), a TxProfile
        without a transaction (§5.16.4); else installed, stored, and applied at once (§5.16.3 "re-evaluate")."""
        smart = self.runtime.smart
        if not smart.available:
            return call_result.SetChargingProfile(status=ChargingProfileStatus.not_supported)
        evse_id = self._profile_evse(connector_id)
        refusal: str | None = f"no connector {connector_id}" if evse_id is None else None
        if evse_id is not None:
            try:
                profile = profile_codec.from_v16(cs_charging_profiles, evse_id)
            except profile_codec.ProfileFormatError as exc:
                refusal = str(exc)
            else:
                refused = smart.install(profile, ocpp16=True)
                refusal = None if refused is None else f"{refused.reason_code}: {refused.text}"
        log.info("SetChargingProfile", connector_id=connector_id, accepted=refusal is None, reason=refusal)
        status = ChargingProfileStatus.accepted if refusal is None else ChargingProfileStatus.rejected
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """§5.5 / §6.13: one profile by id, or those matching every criterion given; Unknown when none matched."""
        evse_id = None if connector_id is None else self._profile_evse(connector_id)
        removed: tuple[int, ...] = ()
        if connector_id is None or evse_id is not None:
            purpose = None if charging_profile_purpose is None else Purpose.parse(charging_profile_purpose)
            try:
                removed = self.runtime.smart.clear(id, evse_id, purpose, stack_level)
            except StoreError as exc:
                log.error("ClearChargingProfile not stored", error=str(exc))
        log.info("ClearChargingProfile", id=id, connector_id=connector_id, removed=list(removed))
        status = ClearChargingProfileStatus.accepted if removed else ClearChargingProfileStatus.unknown
        return call_result.ClearChargingProfile(status=status)

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        """§5.7 / §6.21: the composite from now for `duration` s (connector 0: what the Charge Point as a whole
        draws); Rejected for an unknown connector or a unit the station does not use (§9.4.2)."""
        evse_id = self._profile_evse(connector_id)
        unit = RateUnit(charging_rate_unit) if charging_rate_unit else RateUnit.A
        if evse_id is None or not self.runtime.smart.available or unit not in self.runtime.smart.rules.allowed_units:
            return call_result.GetCompositeSchedule(status=GetCompositeScheduleStatus.rejected)
        composite = self.runtime.smart.composite(evse_id, duration, unit)
        return call_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted,
            connector_id=connector_id,
            schedule_start=iso(composite.start),
            charging_schedule=profile_codec.to_v16_schedule(composite),
        )

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        reason = StopReason.HARD_RESET if type == "Hard" else StopReason.SOFT_RESET
        self.store.restart_reason("RemoteReset")  # the next run knows why it started
        self.runtime.reset(immediate=True, reason=reason)
        log.warning("Reset", type=type)
        return call_result.Reset(status="Accepted")

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        # One pending trigger per message type and connector: a repeat while one is pending is answered Accepted
        # and sends nothing more (station/ocpp/adapter.py FollowUps).
        what = f"triggered {requested_message} {'all' if connector_id is None else connector_id}"
        connectors = [number for number, _, _ in self.runtime.core.layout.numbered()]
        if requested_message == "Heartbeat":
            queued = self.follow_ups.later(self.heartbeat(), what)
        elif requested_message == "BootNotification":
            if self.registration == "Accepted":
                # Errata §3.35: after an Accepted boot, a triggered BootNotification is rejected (what would a
                # Pending or Rejected answer mean for running transactions?).
                return call_result.TriggerMessage(status="Rejected")
            queued = self.follow_ups.later(self.boot(), what)
        elif requested_message == "StatusNotification":
            # §5.17: connectorId 0 is the Charge Point itself; none means the Charge Point and every connector.
            if connector_id is not None and connector_id != 0 and connector_id not in connectors:
                return call_result.TriggerMessage(status="Rejected")
            if connector_id in (None, 0):
                reports = [] if connector_id == 0 else self.runtime.core.report_all()
            else:
                evse, connector = self.runtime.core.layout.locate(connector_id) or (0, 0)
                reports = self.runtime.core.report_all(evse, connector)
            if connector_id in (None, 0):
                reports.insert(0, self._charge_point_status())
            queued = self.follow_ups.send_statuses(reports, self.status, what)
        elif requested_message == "MeterValues":
            if connector_id is not None and connector_id not in connectors:
                return call_result.TriggerMessage(status="Rejected")  # 0 too: there is no main meter apart
            targets = connectors if connector_id is None else [connector_id]
            if all(self._live(number) is None for number in targets):
                return call_result.TriggerMessage(status="Rejected")  # nothing measured yet to report
            queued = self.follow_ups.later(self._live_meter_values(targets), what)
        elif requested_message == "FirmwareStatusNotification" and self.firmware is not None:
            queued = self.follow_ups.later(self._triggered_firmware_status(), what)
        elif requested_message == "DiagnosticsStatusNotification" and self.log_uploads is not None:
            queued = self.follow_ups.later(self._triggered_log_status(log_upload.DIAGNOSTICS_REQUEST), what)
        else:
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Accepted" if queued else "Rejected")

    # ---- firmware update (1.6 §5.19 UpdateFirmware, §4.5 FirmwareStatusNotification; security whitepaper
    # SignedUpdateFirmware / SignedFirmwareStatusNotification)

    @on(Action.update_firmware)
    def on_update_firmware(
        self, location: str, retrieve_date: str, retries: int | None = None, retry_interval: int | None = None, **_: Any
    ) -> call_result.UpdateFirmware:
        """§5.19: the conf has no status; an unsigned update the config does not allow is logged and not done."""
        if self.firmware is not None:
            request = UpdateRequest(
                location, firmware_time(retrieve_date), None, None, None, None, retries, retry_interval
            )
            answer = self.firmware.request(request)
            log.info("UpdateFirmware", answer=answer)
        return call_result.UpdateFirmware()

    @on(Action.signed_update_firmware)
    def on_signed_update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.SignedUpdateFirmware:
        if self.firmware is None:
            return call_result.SignedUpdateFirmware(status="Rejected")
        request = UpdateRequest.signed(request_id, firmware, retries, retry_interval)
        return call_result.SignedUpdateFirmware(status=self.firmware.request(request))

    async def _firmware_status(self, message: OutboxMessage) -> None:
        status, signed = str(message.body["status"]), bool(message.body.get("signed"))
        if signed:
            signed_call = call.SignedFirmwareStatusNotification(status=status, request_id=message.body["requestId"])
            await self.call(signed_call, suppress=False, unique_id=message.call_id)
            return
        status = FIRMWARE_STATUS_16.get(status, status)
        if status in FIRMWARE_STATUSES_16:  # the rest has no 1.6 word: not sent
            await self.call(call.FirmwareStatusNotification(status=status), suppress=False, unique_id=message.call_id)

    async def _triggered_firmware_status(self) -> None:
        """§4.5: Idle when not busy with a firmware update; else the status of the one under way."""
        assert self.firmware is not None
        status, request_id = self.firmware.triggered()
        if self.store.setting("firmware.last_signed") == "1" and request_id is not None:
            await self.call(call.SignedFirmwareStatusNotification(status=status, request_id=request_id))
            return
        status = FIRMWARE_STATUS_16.get(status, status)
        await self.call(call.FirmwareStatusNotification(status=status if status in FIRMWARE_STATUSES_16 else "Idle"))

    # ---- end firmware update

    def _charge_point_status(self) -> ReportStatus:
        """Connector 0, the Charge Point itself (§4.9: only Available, Unavailable or Faulted): Faulted while the
        meter or the store fails, Unavailable when every connector is inoperative."""
        core = self.runtime.core
        if all(not e.meter_link_up for e in core.evses.values()):
            reason = next(iter(core.evses.values())).meter_link_reason
            return ReportStatus(0, ConnectorStatus.FAULTED, "PowerMeterFailure", reason[:50], connector_id=0)
        if not core.store_ok:
            return ReportStatus(
                0, ConnectorStatus.FAULTED, "InternalError", f"store: {core.store_reason}"[:50], connector_id=0
            )
        if core.inoperative():
            return ReportStatus(0, ConnectorStatus.UNAVAILABLE, connector_id=0)
        return ReportStatus(0, ConnectorStatus.AVAILABLE, connector_id=0)

    def _number(self, evse_id: int, connector_id: int = 1) -> int:
        """The 1.6 connectorId: connectors numbered over the EVSEs in order (0: the Charge Point itself)."""
        return 0 if evse_id == 0 else self.runtime.core.layout.number_of(evse_id, connector_id)

    def _live(self, number: int) -> LiveValues | None:
        where = self.runtime.core.layout.locate(number)
        return None if where is None else self.runtime.meter_state(where[0]).live

    async def _live_meter_values(self, connectors: list[int]) -> None:
        """§5.17 with errata §3.46: the most recent measurements of exactly the MeterValuesSampledData measurands."""
        for connector_id in connectors:
            where = self.runtime.core.layout.locate(connector_id)
            live = None if where is None else self.runtime.meter_state(where[0]).live
            if live is None or where is None:
                continue
            body = values_of(live)
            sampled = sampled_values(body, self.settings.measurands("MeterValuesSampledData"), "Trigger")
            tx = self.runtime.core.transaction_on(where[0])
            if tx is not None and tx.connector_id != where[1]:
                tx = None
            stored = self.store.transaction(tx.ref) if tx else None
            transaction_id = int(stored.csms_transaction_id) if stored and stored.csms_transaction_id else None
            await self.call(
                call.MeterValues(
                    connector_id=connector_id,
                    transaction_id=transaction_id,
                    meter_value=[{"timestamp": iso(None), "sampled_value": sampled}],
                ),
                suppress=False,
            )

    # ---- certificates (1.6 security whitepaper ed. 3: M03 GetInstalledCertificateIds, M04 DeleteCertificate, M05
    # InstallCertificate; the rules are version-neutral in station/ocpp/security.py)

    @on(Action.install_certificate)
    def on_install_certificate(
        self, certificate_type: str, certificate: str, **_: Any
    ) -> call_result.InstallCertificate:
        """CentralSystemRootCertificate is the store's CSMS root. Accepted / Rejected (invalid, full) / Failed."""
        if self.security is None:
            return call_result.InstallCertificate(status="Failed")
        use = USE_16[certificate_type]
        return call_result.InstallCertificate(status=install_certificate(self.security, use, certificate).status)

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(
        self, certificate_type: str, **_: Any
    ) -> call_result.GetInstalledCertificateIds:
        """M03: the hash data (SHA256) of each certificate of the type; NotFound when there is none."""
        found = installed_certificates(self.security, [USE_16[certificate_type]]) if self.security else []
        if not found:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data=[d for _, d in found])

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> call_result.DeleteCertificate:
        if self.security is None:
            return call_result.DeleteCertificate(status="Failed")
        return call_result.DeleteCertificate(status=delete_certificate(self.security, certificate_hash_data).status)

    # ---- end certificates

    # ---- client certificate (1.6 security whitepaper ed. 3 A02/A03: ExtendedTriggerMessage SignChargePointCertificate,
    # SignCertificate, CertificateSigned; the rules in station/ocpp/security.py and client_certificate.py)

    async def sign_certificate(self, csr: str) -> bool:
        """SignCertificate.req (whitepaper 5.17): True when the Central System accepted it (A02.FR.11)."""
        result = await self.call(call.SignCertificate(csr=csr), suppress=False)
        return str(result.status) == "Accepted"

    @on(Action.certificate_signed)
    def on_certificate_signed(self, certificate_chain: str, **_: Any) -> call_result.CertificateSigned:
        """A02.FR.06/07: Accepted for a chain for this station's pending key that chains to a CentralSystemRoot;
        Rejected (and InvalidChargePointCertificate) otherwise."""
        if self.security is None:
            return call_result.CertificateSigned(status="Rejected")
        return call_result.CertificateSigned(status=certificate_signed(self.security, certificate_chain).status)

    # ---- end client certificate

    # ---- log upload (§5.9 GetDiagnostics, §4.4 DiagnosticsStatusNotification; security whitepaper N01 GetLog,
    # LogStatusNotification, ExtendedTriggerMessage): station/logupload/ does the work, these translate.

    @on(Action.get_diagnostics)
    def on_get_diagnostics(
        self,
        location: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        start_time: str | None = None,
        stop_time: str | None = None,
        **_: Any,
    ) -> call_result.GetDiagnostics:
        """§5.9: the name of the file that will be uploaded, none when there is nothing to upload (a location the
        station cannot upload to, a period that ends before it starts); then DiagnosticsStatusNotifications."""
        if self.log_uploads is None:
            return call_result.GetDiagnostics()
        request = log_upload.LogRequest(
            log_upload.DIAGNOSTICS_REQUEST,
            "1.6",
            DIAGNOSTICS,
            location,
            Window(parse_time(start_time), parse_time(stop_time)),
            retries=retries,
            retry_interval=retry_interval,
        )
        answer = self.log_uploads.request(request)
        return call_result.GetDiagnostics(file_name=answer.file_name if answer.status != "Rejected" else None)

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
        """Whitepaper N01.FR.01-04, N01.FR.11: Accepted (or AcceptedCanceled, the running upload canceled) with the
        file name; Rejected for a location the station cannot upload to."""
        if self.log_uploads is None:
            return call_result.GetLog(status="Rejected")
        request = log_upload.LogRequest(
            log_upload.LOG_REQUEST,
            "1.6",
            log_type,
            str(log.get("remote_location", "")),
            Window(parse_time(log.get("oldest_timestamp")), parse_time(log.get("latest_timestamp"))),
            request_id=request_id,
            retries=retries,
            retry_interval=retry_interval,
        )
        answer = self.log_uploads.request(request)
        return call_result.GetLog(status=answer.status, filename=answer.file_name)

    @on(Action.extended_trigger_message)
    def on_extended_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.ExtendedTriggerMessage:
        """Whitepaper F06 (ExtendedTriggerMessage): LogStatusNotification here; the messages plain TriggerMessage
        also sends (FirmwareStatusNotification among them: the signed form after a SignedUpdateFirmware) are sent
        the same way; SignChargePointCertificate starts a renewal of the client certificate (A02.FR.02)."""
        if requested_message == "LogStatusNotification" and self.log_uploads is not None:
            queued = self.follow_ups.later(
                self._triggered_log_status(log_upload.LOG_REQUEST), "triggered LogStatusNotification"
            )
            return call_result.ExtendedTriggerMessage(status="Accepted" if queued else "Rejected")
        if requested_message == "SignChargePointCertificate" and self.security is not None:
            loop_time = asyncio.get_running_loop().time()
            accepted = renew_client_certificate(self.security, loop_time)
            return call_result.ExtendedTriggerMessage(status="Accepted" if accepted else "Rejected")
        plain = ("BootNotification", "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StatusNotification")
        if requested_message in plain:
            answer = self.on_trigger_message(requested_message, connector_id)
            return call_result.ExtendedTriggerMessage(status=answer.status)
        return call_result.ExtendedTriggerMessage(status="NotImplemented")

    async def _triggered_log_status(self, kind: str) -> None:
        """§4.4 / whitepaper N01.FR.12: Uploading (with its requestId) while an upload runs, else Idle."""
        assert self.log_uploads is not None
        running = self.log_uploads.uploading(kind)
        if kind == log_upload.DIAGNOSTICS_REQUEST:
            status = "Uploading" if running is not None else "Idle"
            await self.call(call.DiagnosticsStatusNotification(status=status), suppress=False)
            return
        request_id = running.request_id if running is not None else None
        await self.call(
            call.LogStatusNotification(status="Uploading" if running else "Idle", request_id=request_id),
            suppress=False,
        )

    async def _log_status(self, message: OutboxMessage) -> Delivery:
        """A queued log upload status (station/logupload/service.py)."""
        status = str(message.body["status"])
        payload: Any
        if message.kind == log_upload.OUTBOX_KINDS[log_upload.DIAGNOSTICS_REQUEST]:
            payload = call.DiagnosticsStatusNotification(status=status)
        else:
            payload = call.LogStatusNotification(status=status, request_id=message.body.get("request_id"))
        await self.call(payload, suppress=False, unique_id=message.call_id)
        return Delivery()


def id_tag_entry(id_tag: str, info: dict[str, Any]) -> IdTagEntry:
    """A 1.6 IdTagInfo (snake_case, as the library hands it over) as a list/cache entry."""
    expiry = info.get("expiry_date")
    return IdTagEntry(
        id_tag,
        str(info.get("status", "Invalid")),
        datetime.fromisoformat(expiry.replace("Z", "+00:00")) if expiry else None,
        info.get("parent_id_tag"),
    )


DECIMALS = {"Wh": 0, "W": 0, "V": 1, "A": 3}


def sampled_values(body: dict[str, Any], measurands: list[str], context: str | None = None) -> list[dict[str, Any]]:
    """A reading as 1.6 SampledValues of exactly the `measurands` (each with its phases), context as queued."""
    context = context or str(body["context"])
    values = []
    for measurand, phase, value, unit in measured(body, measurands):
        sampled = {
            "value": f"{value:.{DECIMALS[unit]}f}",
            "context": context,
            "measurand": measurand,
            "location": "Outlet",
            "unit": unit,
        }
        if phase is not None:
            sampled["phase"] = phase
        values.append(sampled)
    return values
