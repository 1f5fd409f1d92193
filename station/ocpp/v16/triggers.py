"""TriggerMessage (§5.17) and the security extension's ExtendedTriggerMessage (whitepaper F06), and the
triggered messages themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    Action,
)

from station.logupload import service as log_upload
from station.ocpp.adapter import (
    iso,
)
from station.ocpp.security import (  # ---- certificates
    renew_client_certificate,
)
from station.ocpp.v16.base import (
    FIRMWARE_STATUS_16,
    FIRMWARE_STATUSES_16,
    V16Base,
    sampled_values,
)
from station.runtime.sampling import values_of


class Triggers(V16Base):
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

    async def _triggered_firmware_status(self) -> None:
        """§4.5: Idle when not busy with a firmware update; else the status of the one under way."""
        assert self.firmware is not None
        status, request_id = self.firmware.triggered()
        if self.store.setting("firmware.last_signed") == "1" and request_id is not None:
            await self.call(call.SignedFirmwareStatusNotification(status=status, request_id=request_id))
            return
        status = FIRMWARE_STATUS_16.get(status, status)
        await self.call(call.FirmwareStatusNotification(status=status if status in FIRMWARE_STATUSES_16 else "Idle"))

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
