"""The outbox's messages: TransactionEvent (E01-E07, E13: seqNo from 0 per transaction, offline flag, the signed
record in Ended), MeterValues, and the other queued messages (firmware and log status, security events,
reservation updates); RequestStart/StopTransaction (F01-F03) and GetTransactionStatus (E14).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from station.core.model import (
    SignedMeterRecord,
    StartSource,
    StopReason,
    Transaction,
)
from station.logupload import service as log_upload
from station.meter.records import begin_wh, end_wh
from station.ocpp import profile_codec
from station.ocpp.adapter import (
    Delivery,
    body_evse,
    iso,
    let_started_work_begin,
    security_event_fields,
    signing_key,
)
from station.ocpp.signed_value import PUBLIC_KEY_NEVER, signed_meter_value
from station.ocpp.v201.base import (
    ENERGY,
    SIGNED_DATA_LIMIT,
    STOPPED,
    UPDATED,
    V201Base,
    _energy_value,
    _readings,
    _status_info,
    id_token_entry,
    log,
)
from station.smart.book import Refusal
from station.store import OutboxMessage


class Transactions(V201Base):
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
    async def on_request_start(
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
        await let_started_work_begin()  # the meter's first answer comes long after the id token is stored
        # E01.FR.10: the TransactionEvent carries the idToken as given here, its type and additional info too.
        self.store.set_id_token(outcome.transaction.ref, id_token)
        return call_result.RequestStartTransaction(status="Accepted")

    @on(Action.request_stop_transaction)
    async def on_request_stop(self, transaction_id: str, **_: Any) -> call_result.RequestStopTransaction:
        running = {tx.ref for tx in self.runtime.core.running_transactions()}
        accepted = (
            self.registration != "Pending"  # B02.FR.05
            and transaction_id in running
            and self.runtime.remote_stop(transaction_id, StopReason.REMOTE).accepted
        )
        if accepted:
            await let_started_work_begin()
        log.info("RequestStopTransaction", transaction_id=transaction_id, accepted=accepted)
        return call_result.RequestStopTransaction(status="Accepted" if accepted else "Rejected")

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

    async def _log_status(self, message: OutboxMessage) -> Delivery:
        """A queued log upload status. 1.6 DiagnosticsStatusNotification (a GetDiagnostics before the station
        switched to 2.0.1) has no 2.0.1 counterpart: dropped."""
        if message.kind != log_upload.OUTBOX_KINDS[log_upload.LOG_REQUEST]:
            return Delivery()
        status = str(message.body["status"])
        payload = call.LogStatusNotification(status=status, request_id=message.body.get("request_id"))
        await self.call(payload, suppress=False, unique_id=message.call_id)
        return Delivery()
