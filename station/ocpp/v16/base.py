"""What every part of the 1.6 adapter stands on (station/ocpp/v16/): the session's state (connection, runtime,
store, settings, follow-up work), the messages every session sends (BootNotification, Heartbeat, StatusNotification,
Authorize), connector numbering, and the vocabulary the parts share (IdTagInfo entries, SampledValues, the firmware
status words). The parts add one functional block each; `V16Adapter` in __init__.py puts them together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    ChargePointErrorCode,
    ChargePointStatus,
    DataTransferStatus,
    RegistrationStatus,
)

from station.core.model import (
    ConnectorStatus,
    ReportStatus,
)
from station.meter.interface import LiveValues
from station.ocpp.adapter import (
    AdapterBase,
    BootRefused,
    iso,
    measured,
)
from station.store import IdTagEntry

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


class V16Base(AdapterBase, ChargePoint):  # type: ignore[misc]
    version = "1.6"

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

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

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
