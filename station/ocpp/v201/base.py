"""What every part of the 2.0.1 adapter stands on (station/ocpp/v201/): the session's state (connection, runtime,
store, settings, follow-up work), the messages every session sends (BootNotification, Heartbeat, StatusNotification
with its NotifyEvent for a fault, Authorize), and the vocabulary the parts share (connector statuses, stop reasons,
reading helpers). The parts add one functional block each; `V201Adapter` in __init__.py puts them together.
"""

from __future__ import annotations

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
    StopReason,
)
from station.ocpp.adapter import (
    AdapterBase,
    BootRefused,
    iso,
    measured,
)
from station.smart.book import Refusal
from station.store import IdTagEntry

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


def _status_info(refusal: Refusal) -> dict[str, str]:
    """StatusInfoType: reasonCode (CiString20) and additionalInfo (CiString512)."""
    return {"reason_code": refusal.reason_code[:20], "additional_info": refusal.text[:512]}


class V201Base(AdapterBase, ChargePoint):  # type: ignore[misc]
    """What every part of the adapter stands on: the connection, the runtime, the store and the settings, and
    the messages every session sends (boot, heartbeat, status, authorize)."""

    version = "2.0.1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._told: dict[tuple[int, int], str] = {}  # (EVSE, connector) -> the connectorStatus last sent
        self._event_ids = 0

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

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")
