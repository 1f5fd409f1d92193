"""Reset (§5.14), firmware update (§5.19 UpdateFirmware, whitepaper L01 SignedUpdateFirmware) and log upload
(§5.9 GetDiagnostics, whitepaper N01 GetLog): station/firmware/ and station/logupload/ do the work.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
)

from station.core.model import (
    StopReason,
)
from station.firmware.update import UpdateRequest
from station.firmware.update import parse_time as firmware_time
from station.logupload import service as log_upload
from station.logupload.archive import DIAGNOSTICS, Window, parse_time
from station.ocpp.v16.base import (
    V16Base,
    log,
)


class Maintenance(V16Base):
    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        reason = StopReason.HARD_RESET if type == "Hard" else StopReason.SOFT_RESET
        self.store.restart_reason("RemoteReset")  # the next run knows why it started
        self.runtime.reset(immediate=True, reason=reason)
        log.warning("Reset", type=type)
        return call_result.Reset(status="Accepted")

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
