"""Carries out a CSMS's log request: one upload at a time, in a supervised task, its statuses queued in the outbox.

Version-neutral: the adapters (1.6 GetDiagnostics and GetLog, 2.0.1 GetLog) translate the request into a
`LogRequest`, get the answer from `request` at once (it never awaits: the `ocpp` library reads no frames while a
handler awaits), and turn the queued statuses back into their version's message at delivery
(DiagnosticsStatusNotification, LogStatusNotification). The archive is built in a thread; the upload is tried
1 + `retries` times, `retry_interval` seconds apart, and the failure status goes only after the last attempt
(N01.FR.10 note). A new request while one runs cancels it (N01.FR.12 / 1.6 whitepaper N01.FR.11); the canceled 2.0.1
upload is told AcceptedCanceled (N01.FR.20). Statuses are queued in the store's outbox ("other" lane, like security
events), so that they survive a reconnect or a restart and keep their order. It never logs a location's credentials.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from station.config import Config, log_file_path
from station.logs import LogFile
from station.logupload import transfer
from station.logupload.archive import LOG_TYPES, SECURITY, Archive, Sources, Window, build_archive, file_name
from station.ocpp.trace import KEEP as TRACE_KEEP
from station.ocpp.trace import FrameTrace
from station.runtime.presence import CsmsPresence
from station.runtime.supervisor import Supervisor, Work
from station.store import Store
from station.store.sqlite_store import SECURITY_LOG_KEEP

log = structlog.get_logger("station.logupload")

# How the request came, and so which message carries its statuses: 1.6 GetDiagnostics -> DiagnosticsStatusNotification
# (outbox kind "diagnostics_status"); GetLog in either version -> LogStatusNotification ("log_status").
DIAGNOSTICS_REQUEST = "diagnostics"
LOG_REQUEST = "log"
OUTBOX_KINDS = {DIAGNOSTICS_REQUEST: "diagnostics_status", LOG_REQUEST: "log_status"}
MAX_RETRIES = 10  # a CSMS's `retries` beyond this is clamped: the station does not retry for days
MAX_RETRY_INTERVAL = 3600
DEFAULT_RETRIES = 1  # absent `retries`: "left to the Charge Point to decide" (1.6 GetDiagnostics)
DEFAULT_RETRY_INTERVAL = 30
RUNNING_NOTE = "log_upload.running"  # store setting: the upload that has said Uploading and not yet its end


@dataclass(frozen=True)
class LogRequest:
    kind: str  # DIAGNOSTICS_REQUEST or LOG_REQUEST
    version: str  # the OCPP version it came in ("1.6" or "2.0.1")
    log_type: str  # archive.DIAGNOSTICS or archive.SECURITY
    location: str
    window: Window = field(default_factory=Window)
    request_id: int | None = None
    retries: int | None = None
    retry_interval: int | None = None


@dataclass
class _Job:
    request: LogRequest
    name: str
    task: asyncio.Task[None] | None = None
    uploading: bool = False
    attempts: int = 0
    statuses: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    status: str  # "Accepted", "AcceptedCanceled" or "Rejected" (2.0.1 LogStatusEnumType, 1.6 whitepaper 6.15)
    file_name: str | None = None
    reason: str = ""


class LogUploads:
    def __init__(
        self,
        config: Config,
        store: Store,
        trace: FrameTrace,
        supervisor: Supervisor,
        presence: CsmsPresence,
        *,
        software: str = "",
        timeout: float = transfer.UPLOAD_TIMEOUT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.store = store
        self.trace = trace
        self.supervisor = supervisor
        self.presence = presence
        self.software = software
        self.timeout = timeout
        self.clock = clock
        self._job: _Job | None = None
        self.log_file = LogFile(log_file_path(config), config.logging.max_bytes, config.logging.keep)
        # One archive built at a time, in a thread of its own: a CSMS that floods GetLog cancels each build it has
        # not started yet (a running one cannot be stopped, so at most one runs and one waits).
        self._builder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log archive")
        self._end_interrupted()

    def _end_interrupted(self) -> None:
        """An upload the previous run started and never finished (a restart, a power loss) gets its end now, so the
        CSMS does not wait for it for ever: UploadFailure (1.6 GetDiagnostics: UploadFailed)."""
        noted = self.store.setting(RUNNING_NOTE)
        if not noted:
            return
        try:
            request = json.loads(noted)
            kind = str(request["kind"])
            status = "UploadFailed" if kind == DIAGNOSTICS_REQUEST else transfer.UPLOAD_FAILURE
            body: dict[str, Any] = {"status": status}
            if kind == LOG_REQUEST:
                body["request_id"] = request.get("request_id")
            outbox_kind = OUTBOX_KINDS[kind]
        except (ValueError, KeyError, TypeError):
            self.store.set_setting(RUNNING_NOTE, "")
            return
        log.warning("a log upload was cut off by a restart; reporting it failed", request_id=body.get("request_id"))
        self.store.enqueue_and_note(outbox_kind, body, (RUNNING_NOTE, ""), offline=True)

    def close(self) -> None:
        self._builder.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ what the adapters ask

    def request(self, request: LogRequest) -> Answer:
        """Accept (start the upload) or refuse a request, at once. Rejected: a location the station cannot upload to
        (N01.FR.05 "requested log information is NOT available" also covers a period that cannot hold any)."""
        refusal = self._refusal(request)
        if refusal is not None:
            log.info("log request refused", kind=request.kind, log_type=request.log_type, reason=refusal)
            return Answer("Rejected", reason=refusal)
        name = file_name(self.config.station.id, request.log_type, self.clock())
        canceled = self._cancel_running()
        job = _Job(request, name)
        self._job = job
        job.task = self.supervisor.spawn(self._run(job), Work.LOG_UPLOAD, f"log upload {name}")
        target = transfer.parse_location(request.location)
        log.info(
            "log upload accepted",
            kind=request.kind,
            log_type=request.log_type,
            request_id=request.request_id,
            file=name,
            to=target.shown,
            canceled_previous=canceled,
        )
        return Answer("AcceptedCanceled" if canceled else "Accepted", name)

    def uploading(self, kind: str) -> LogRequest | None:
        """The request whose upload runs now, if it came as `kind` (for a triggered status notification)."""
        job = self._job
        if job is None or job.task is None or job.task.done() or job.request.kind != kind:
            return None
        return job.request

    # ------------------------------------------------------------------ the work

    def _refusal(self, request: LogRequest) -> str | None:
        if request.log_type not in LOG_TYPES:
            return f"unknown log type {request.log_type[:30]!r}"
        try:
            transfer.parse_location(request.location)
        except ValueError as exc:
            return str(exc)
        window = request.window
        if window.oldest is not None and window.latest is not None and window.oldest > window.latest:
            return "the period's oldest timestamp is after its latest"
        return None

    def _cancel_running(self) -> bool:
        job = self._job
        if job is None or job.task is None or job.task.done():
            return False
        job.task.cancel()
        log.info("log upload canceled by a new request", file=job.name, request_id=job.request.request_id)
        if job.request.kind == LOG_REQUEST and job.request.version != "1.6":
            # 2.0.1 N01.FR.20; the 1.6 whitepaper's UploadLogStatusEnumType has no AcceptedCanceled, and 1.6
            # DiagnosticsStatusNotification carries no request to tell apart: the next Uploading says it all.
            self._queue(job, "AcceptedCanceled")
        return True

    def _queue(self, job: _Job, status: str) -> None:
        """The status, durably queued for the CSMS (the outbox's "other" lane, in order), with the note of whether
        this upload still runs in the same commit (for `_end_interrupted` after a restart)."""
        request = job.request
        body: dict[str, Any] = {"status": status}
        if request.kind == LOG_REQUEST:
            body["request_id"] = request.request_id
        running = status == "Uploading"
        note = json.dumps({"kind": request.kind, "request_id": request.request_id}) if running else ""
        self.store.enqueue_and_note(
            OUTBOX_KINDS[request.kind], body, (RUNNING_NOTE, note), offline=not self.presence.online
        )
        job.statuses.append(status)
        self.presence.outbox_changed()

    def sources(self, log_type: str) -> Sources:
        """What an archive is made of, read now on the event loop (the store and the trace are not for threads)."""
        diagnostics = log_type != SECURITY
        return Sources(
            station_id=self.config.station.id,
            software=self.software,
            log_files=self.log_file.files() if diagnostics and self.config.logging.write_file else (),
            frames=self.trace.recent(TRACE_KEEP) if diagnostics else (),
            security_log=self.store.security_log(SECURITY_LOG_KEEP),
            config=self.config if diagnostics else None,
            store_summary=self.store.summary() if diagnostics else None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The CSMS's trust chain (N01.FR.15: the certificate store's CSMS roots, seeded from [csms] ca_file and
        changed by InstallCertificate) and the operating system's CAs (N01.FR.16)."""
        from station.ocpp.certificates import CertificateStore, https_context  # the store reads cryptography's x509

        return https_context(CertificateStore.for_config(self.config), system=True)

    async def build(self, log_type: str, window: Window) -> Archive:
        sources = self.sources(log_type)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._builder, build_archive, log_type, sources, window, self.clock())

    async def _run(self, job: _Job) -> None:
        request = job.request
        retries = min(max(request.retries if request.retries is not None else DEFAULT_RETRIES, 0), MAX_RETRIES)
        interval = request.retry_interval if request.retry_interval is not None else DEFAULT_RETRY_INTERVAL
        interval = min(max(interval, 0), MAX_RETRY_INTERVAL)
        target = transfer.parse_location(request.location)
        failure = transfer.UploadError(transfer.UPLOAD_FAILURE, "not tried")
        try:
            archive = await self.build(request.log_type, request.window)
        except (OSError, ValueError) as exc:
            log.error("log archive could not be built", file=job.name, error=str(exc)[:200])
            self._queue(job, "UploadFailed" if request.kind == DIAGNOSTICS_REQUEST else transfer.UPLOAD_FAILURE)
            return
        job.uploading = True
        self._queue(job, "Uploading")  # N01.FR.08
        for attempt in range(1 + retries):
            job.attempts = attempt + 1
            try:
                how = await transfer.upload(
                    request.location, job.name, archive.data, timeout=self.timeout, ssl_context=self.ssl_context()
                )
            except transfer.UploadError as exc:
                failure = exc
                log.warning(
                    "log upload attempt failed",
                    file=job.name,
                    to=target.shown,
                    attempt=attempt + 1,
                    of=1 + retries,
                    status=exc.status,
                    reason=exc.reason,
                )
                if attempt < retries:
                    await asyncio.sleep(interval)
                continue
            log.info("log uploaded", file=job.name, to=target.shown, bytes=len(archive.data), how=how)
            self._queue(job, "Uploaded")  # N01.FR.09
            return
        log.error("log upload failed", file=job.name, to=target.shown, attempts=1 + retries, status=failure.status)
        # N01.FR.10: the status that says why; 1.6 DiagnosticsStatusNotification has only UploadFailed.
        self._queue(job, "UploadFailed" if request.kind == DIAGNOSTICS_REQUEST else failure.status)
