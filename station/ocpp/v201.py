"""The OCPP 2.0.1 adapter: translates 2.0.1 messages to runtime requests and outbox entries to TransactionEvents.

Same shape as the 1.6 adapter (boot, heartbeat, status, deliver, thin handlers that never await the meter or another
CALL); work a request asks for after its answer (a NotifyReport, a triggered message) runs in a task. The station
generates the transactionId (our transaction ref). Signed records go into TransactionEvent(Ended) as
`signedMeterValue` beside the numeric value. This module knows nothing about Modbus.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from station.core.model import ConnectorStatus, ReportStatus, SignedMeterRecord, StopReason, Transaction
from station.meter.records import reading_wh
from station.ocpp.adapter import BootRefused, Delivery, FollowUps, iso, security_event_fields
from station.ocpp.settings import Settings
from station.ocpp.signed_value import PUBLIC_KEY_NEVER, signed_meter_value
from station.runtime import StationRuntime
from station.store import IdTagEntry, OutboxMessage, Store

log = structlog.get_logger("station.ocpp.v201")

SUBPROTOCOL = "ocpp2.0.1"
SIGNED_DATA_LIMIT = 2500  # SignedMeterValueType.signedMeterData maxLength

CONNECTOR_STATUS = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.PREPARING: "Occupied",
    ConnectorStatus.CHARGING: "Occupied",
    ConnectorStatus.FINISHING: "Occupied",
    ConnectorStatus.FAULTED: "Faulted",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
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
}

ENERGY = "Energy.Active.Import.Register"


def _energy_value(value_wh: int | None, context: str) -> dict[str, Any]:
    return {
        "value": float(value_wh or 0),
        "context": context,
        "measurand": ENERGY,
        "location": "Outlet",
        "unit_of_measure": {"unit": "Wh"},
    }


def _readings(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A queued reading as 2.0.1 SampledValues (energy register and power)."""
    context = str(body["context"])
    return [
        {**_energy_value(int(body["energy_wh"]), context)},
        {
            "value": float(body["power_w"]),
            "context": context,
            "measurand": "Power.Active.Import",
            "location": "Outlet",
            "unit_of_measure": {"unit": "W"},
        },
    ]


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


class V201Adapter(ChargePoint):  # type: ignore[misc]
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
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout)
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.vendor = vendor
        self.model = model
        self.follow_ups = FollowUps()
        self._event_ids = 0

    # ------------------------------------------------------------------ outgoing

    async def boot(self) -> int:
        """BootNotification; returns the heartbeat interval when Accepted, raises BootRefused otherwise."""
        station = {"model": self.model[:20], "vendor_name": self.vendor[:50]}
        result = await self.call(call.BootNotification(charging_station=station, reason="PowerUp"), suppress=False)
        interval = int(result.interval)
        if result.status != "Accepted":
            raise BootRefused(str(result.status), interval)
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
        await self.call(
            call.StatusNotification(
                timestamp=iso(None),
                connector_status=CONNECTOR_STATUS[report.status],
                evse_id=report.connector_id,
                connector_id=1,
            ),
            suppress=False,
        )
        if report.status == ConnectorStatus.FAULTED or report.error_code != "NoError":
            await self._notify_problem(report)

    async def _notify_problem(self, report: ReportStatus) -> None:
        """A fault is also a NotifyEvent (G05/N07): which component, what the problem is."""
        self._event_ids += 1
        component = "FiscalMetering" if report.error_code == "PowerMeterFailure" else "EVSE"
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
                        "component": {"name": component, "evse": {"id": report.connector_id}},
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
        if message.kind == "security_event":
            event = call.SecurityEventNotification(**security_event_fields(message.body, "2.0.1"))
            await self.call(event, suppress=False, unique_id=message.call_id)
            return Delivery()
        if message.kind not in ("transaction_started", "transaction_ended", "meter_values"):
            raise ValueError(f"2.0.1 adapter cannot send outbox entry of kind {message.kind!r}")
        assert message.tx_ref is not None
        stored = self.store.transaction(message.tx_ref)
        if stored is None:
            raise ValueError(f"outbox entry {message.id} names unknown transaction {message.tx_ref}")
        tx = stored.transaction
        seq_no = self.store.assign_seq_no(message.id, f"evse.{tx.connector_id}")
        if message.kind == "transaction_started":
            payload = self._started(tx, seq_no, message.offline)
        elif message.kind == "meter_values":
            payload = self._updated(tx, seq_no, message)
        else:
            payload = self._ended(tx, seq_no, message.offline)
        result = await self.call(payload, suppress=False, unique_id=message.call_id)
        if message.kind == "meter_values":
            return Delivery()
        if message.kind == "transaction_started":
            if self.runtime.authorizer is not None and result.id_token_info:
                self.runtime.authorizer.remember(id_token_entry(tx.id_tag, result.id_token_info))
            status = (result.id_token_info or {}).get("status")
            log.info("TransactionEvent Started confirmed", tx_ref=tx.ref, seq_no=seq_no, id_token_status=status)
            return Delivery(csms_transaction=(tx.ref, tx.ref))
        log.info("TransactionEvent Ended confirmed", tx_ref=tx.ref, seq_no=seq_no)
        return Delivery(transaction_done=tx.ref)

    def _started(self, tx: Transaction, seq_no: int, offline: bool) -> call.TransactionEvent:
        info: dict[str, Any] = {"transaction_id": tx.ref, "charging_state": "Charging"}
        if tx.remote_start_id is not None:
            info["remote_start_id"] = tx.remote_start_id
        return call.TransactionEvent(
            event_type="Started",
            timestamp=iso(tx.started_at),
            trigger_reason="RemoteStart" if tx.remote_start_id is not None else "Authorized",
            seq_no=seq_no,
            transaction_info=info,
            offline=offline or None,
            id_token={"id_token": tx.id_tag, "type": "Central"},
            meter_value=[{"timestamp": iso(tx.started_at), "sampled_value": [self._begin_sample(tx)]}],
            evse={"id": tx.connector_id, "connector_id": 1},
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
        return call.TransactionEvent(
            event_type="Updated",
            timestamp=iso(datetime.fromisoformat(body["at"])),
            trigger_reason="MeterValueClock" if body["context"] == "Sample.Clock" else "MeterValuePeriodic",
            seq_no=seq_no,
            transaction_info={"transaction_id": tx.ref, "charging_state": "Charging"},
            offline=message.offline or None,
            meter_value=[{"timestamp": iso(datetime.fromisoformat(body["at"])), "sampled_value": self._readings(body)}],
        )

    def _readings(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """A queued reading; with the meter's signed reading on the energy value where there is one."""
        sampled = _readings(body)
        if body.get("signed"):
            record = SignedMeterRecord(str(body["signed"]), context=str(body["context"]))
            sampled[0] = self._with_signature(sampled[0], record, None)
        return sampled

    async def _meter_values(self, message: OutboxMessage) -> None:
        body = message.body
        await self.call(
            call.MeterValues(
                evse_id=int(body["connector_id"]),
                meter_value=[
                    {"timestamp": iso(datetime.fromisoformat(body["at"])), "sampled_value": self._readings(body)}
                ],
            ),
            suppress=False,
            unique_id=message.call_id,
        )

    def _ended(self, tx: Transaction, seq_no: int, offline: bool) -> call.TransactionEvent:
        stopped_reason, trigger = STOPPED[tx.stop_reason or StopReason.OTHER]
        sampled = [self._signed_sample(tx, record) for record in tx.signed_records]
        if not sampled:
            sampled = [_energy_value(tx.meter_stop_wh, "Transaction.End")]
        info: dict[str, Any] = {"transaction_id": tx.ref, "charging_state": "Idle", "stopped_reason": stopped_reason}
        if tx.remote_start_id is not None:
            info["remote_start_id"] = tx.remote_start_id
        return call.TransactionEvent(
            event_type="Ended",
            timestamp=iso(tx.stopped_at),
            trigger_reason=trigger,
            seq_no=seq_no,
            transaction_info=info,
            offline=offline or None,
            id_token={"id_token": tx.id_tag, "type": "Central"},
            meter_value=[{"timestamp": iso(tx.stopped_at), "sampled_value": sampled}],
            evse={"id": tx.connector_id, "connector_id": 1},
        )

    def _signed_sample(self, tx: Transaction, record: SignedMeterRecord) -> dict[str, Any]:
        begin = record.context == "Transaction.Begin"
        value_wh = reading_wh(record.data, "B" if begin else "E")
        if value_wh is None:
            value_wh = tx.meter_start_wh if begin else tx.meter_stop_wh
        return self._with_signature(_energy_value(value_wh, record.context), record, tx.ref)

    def _with_signature(self, sample: dict[str, Any], record: SignedMeterRecord, tx_ref: str | None) -> dict[str, Any]:
        """`sample` with the record as its signedMeterValue, within the 2.0.1 limit of 2500 characters."""
        with_key = self.settings.value("PublicKeyWithSignedMeterValue") != PUBLIC_KEY_NEVER
        signed = signed_meter_value(record, self.runtime.meter_state.public_key_hex, with_key)
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
        self, id_token: dict[str, Any], remote_start_id: int, evse_id: int | None = None, **_: Any
    ) -> call_result.RequestStartTransaction:
        # Without an evseId, EVSE 1 is the one we have (F01.FR.07 allows rejecting; we have one metered EVSE).
        outcome = self.runtime.remote_start(evse_id or 1, str(id_token.get("id_token", "")), remote_start_id)
        log.info(
            "RequestStartTransaction",
            evse_id=evse_id,
            remote_start_id=remote_start_id,
            accepted=outcome.accepted,
            reason=outcome.reason,
        )
        if not outcome.accepted:
            return call_result.RequestStartTransaction(
                status="Rejected", status_info={"reason_code": "Occupied", "additional_info": outcome.reason[:512]}
            )
        return call_result.RequestStartTransaction(status="Accepted")

    @on(Action.request_stop_transaction)
    def on_request_stop(self, transaction_id: str, **_: Any) -> call_result.RequestStopTransaction:
        running = {tx.ref for tx in self.runtime.core.running_transactions()}
        accepted = transaction_id in running and self.runtime.remote_stop(transaction_id, StopReason.REMOTE).accepted
        log.info("RequestStopTransaction", transaction_id=transaction_id, accepted=accepted)
        return call_result.RequestStopTransaction(status="Accepted" if accepted else "Rejected")

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> call_result.GetVariables:
        results = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            attribute = item.get("attribute_type") or "Actual"
            got = self.settings.get_variable(
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

    @on(Action.get_base_report)
    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> call_result.GetBaseReport:
        if report_base not in ("ConfigurationInventory", "FullInventory"):
            return call_result.GetBaseReport(status="NotSupported")
        items = self.settings.report(configuration_only=report_base == "ConfigurationInventory")
        if not self.follow_ups.later(self._notify_report(request_id, items), f"NotifyReport {request_id}"):
            return call_result.GetBaseReport(status="Rejected")
        return call_result.GetBaseReport(status="Accepted")

    async def _notify_report(self, request_id: int, items: list[dict[str, Any]]) -> None:
        per_message = 20
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

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        # One pending trigger per message type and EVSE (station/ocpp/adapter.py FollowUps).
        what = f"triggered {requested_message} {(evse or {}).get('id', 0)}"
        if requested_message == "Heartbeat":
            queued = self.follow_ups.later(self.heartbeat(), what)
        elif requested_message == "StatusNotification":
            reports = self.runtime.core.report_all((evse or {}).get("id"))
            if not reports:
                return call_result.TriggerMessage(status="Rejected")
            queued = self.follow_ups.send_statuses(reports, self.status, what)
        elif requested_message == "BootNotification":
            queued = self.follow_ups.later(self.boot(), what)
        else:
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Accepted" if queued else "Rejected")

    @on(Action.change_availability)
    def on_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.ChangeAvailability:
        evse_id = int((evse or {}).get("id", 0))
        if (evse or {}).get("connector_id", 1) != 1:
            return call_result.ChangeAvailability(status="Rejected", status_info={"reason_code": "UnknownConnector"})
        outcome = self.runtime.change_availability(evse_id, operational_status == "Operative")
        log.info("ChangeAvailability", evse_id=evse_id, to=operational_status, accepted=outcome.accepted)
        if not outcome.accepted:
            return call_result.ChangeAvailability(status="Rejected")
        return call_result.ChangeAvailability(status="Scheduled" if outcome.reason == "scheduled" else "Accepted")

    @on(Action.unlock_connector)
    def on_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        if evse_id not in self.runtime.core.connectors or connector_id != 1:
            return call_result.UnlockConnector(status="UnknownConnector")
        if any(tx.connector_id == evse_id for tx in self.runtime.core.running_transactions()):
            return call_result.UnlockConnector(status="OngoingAuthorizedTransaction")
        # A fixed cable has no lock to open: nothing holds the plug.
        return call_result.UnlockConnector(status="Unlocked")

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
        log.warning("Reset", type=type, status=status)
        return call_result.Reset(status=status)
