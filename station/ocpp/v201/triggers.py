"""TriggerMessage (F06): one pending trigger per message type and EVSE, the triggered messages themselves."""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from station.logupload import service as log_upload
from station.ocpp.adapter import iso
from station.ocpp.security import (  # ---- certificates
    renew_client_certificate,
)
from station.ocpp.v201.base import (
    ENERGY,
    V201Base,
    _readings,
)
from station.runtime.sampling import values_of


class Triggers(V201Base):
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

    async def _triggered_firmware_status(self) -> None:
        assert self.firmware is not None
        status, request_id = self.firmware.triggered()
        await self.call(call.FirmwareStatusNotification(status=status, request_id=request_id))

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
