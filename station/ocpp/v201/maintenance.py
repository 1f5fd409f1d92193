"""Firmware update (L01), log upload (N01) and Reset (B11/B12): station/firmware/ and station/logupload/ do the
work, these translate.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from station.core.model import StopReason
from station.firmware.update import UpdateRequest
from station.logupload import service as log_upload
from station.logupload.archive import Window, parse_time
from station.ocpp.v201.base import (
    V201Base,
    log,
)


class Maintenance(V201Base):
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
