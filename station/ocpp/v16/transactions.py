"""The outbox's messages in 1.6: StartTransaction / StopTransaction (built from the store at send time, so a
transaction started offline gets its real transactionId; the signed records as SignedData), MeterValues, the
queued firmware and log statuses; RemoteStart/RemoteStopTransaction (§5.11, §5.12).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    Action,
    RemoteStartStopStatus,
)

from station.core.model import (
    Outcome,
    SignedMeterRecord,
    StopReason,
    Transaction,
)
from station.logupload import service as log_upload
from station.ocpp import profile_codec
from station.ocpp.adapter import (
    Delivery,
    body_evse,
    iso,
    let_started_work_begin,
    security_event_fields,
    signing_key,
)
from station.ocpp.signed_value import PUBLIC_KEY_NEVER, v16_signed_sampled_value
from station.ocpp.v16.base import (
    FIRMWARE_STATUS_16,
    FIRMWARE_STATUSES_16,
    V16Base,
    id_tag_entry,
    log,
    sampled_values,
)
from station.store import OutboxMessage


class Transactions(V16Base):
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
    async def on_remote_start(
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
        if outcome.accepted:
            await let_started_work_begin()
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
    async def on_remote_stop(self, transaction_id: int, **_: Any) -> call_result.RemoteStopTransaction:
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
        if accepted:
            await let_started_work_begin()
        log.info("RemoteStopTransaction", transaction_id=transaction_id, accepted=accepted, pending=ref is None)
        return call_result.RemoteStopTransaction(
            status=RemoteStartStopStatus.accepted if accepted else RemoteStartStopStatus.rejected
        )

    def _start_in_flight(self) -> bool:
        return any(
            (stored := self.store.transaction(tx.ref)) is not None and stored.csms_transaction_id is None
            for tx in self.runtime.core.running_transactions()
        )

    async def _firmware_status(self, message: OutboxMessage) -> None:
        status, signed = str(message.body["status"]), bool(message.body.get("signed"))
        if signed:
            signed_call = call.SignedFirmwareStatusNotification(status=status, request_id=message.body["requestId"])
            await self.call(signed_call, suppress=False, unique_id=message.call_id)
            return
        status = FIRMWARE_STATUS_16.get(status, status)
        if status in FIRMWARE_STATUSES_16:  # the rest has no 1.6 word: not sent
            await self.call(call.FirmwareStatusNotification(status=status), suppress=False, unique_id=message.call_id)

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
