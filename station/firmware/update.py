"""One firmware update from UpdateFirmware to the restart, and the report of it after the restart.

Version-neutral: the adapters hand in an `UpdateRequest` and get the answer word (2.0.1 UpdateFirmwareStatusEnumType;
the 1.6 adapters map it), and every status is queued in the store's outbox as kind `firmware_status` with the 2.0.1
word (L01.FR.01, L01.FR.10: with the request's requestId), which each adapter translates when delivering. Steps:
DownloadScheduled (retrieveDateTime in the future, L01.FR.13), Downloading, Downloaded or DownloadFailed (after all
retries, L01.FR.30), SignatureVerified or InvalidSignature (+ security event InvalidFirmwareSignature, L01.FR.03/04),
InstallScheduled (installDateTime in the future, L01.FR.16, or transactions running, L01.FR.34; idle EVSEs are made
Unavailable meanwhile, L01.FR.06/07), Installing, InstallationFailed or InstallRebooting (L01.FR.15) and the exit; the
new release reports Installed (L01.FR.28/32a) with security event FirmwareUpdated (L01.FR.31) once its boot is
Accepted, else it is rolled back and the previous release reports InstallVerificationFailed (L01.FR.29) or
InstallationFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import structlog

import station
from station.config import Config
from station.firmware import signature
from station.firmware.download import DownloadFailed, check_location, download, where
from station.firmware.release import NotARelease, release_version
from station.firmware.releases import (
    InstallFailed,
    Pending,
    Releases,
    clear_pending,
    copy_store,
    load_pending,
    restore_store,
    roll_back,
    save_pending,
)
from station.ocpp.certificates import MANUFACTURER_ROOT, CertificateStore, https_context  # ---- certificates
from station.store import Store

log = structlog.get_logger("station.firmware")

INVALID_SIGNATURE = "InvalidFirmwareSignature"  # security events (2.0.1 Part 2 appendix; 1.6 security whitepaper)
INVALID_SIGNING_CERTIFICATE = "InvalidFirmwareSigningCertificate"
FIRMWARE_UPDATED = "FirmwareUpdated"
# What the last status of an update that never finished can be (the process stopped before the restart it planned).
IN_PROGRESS = ("DownloadScheduled", "Downloading", "Downloaded", "SignatureVerified", "InstallScheduled", "Installing")


@dataclass(frozen=True)
class UpdateRequest:
    location: str
    retrieve_at: datetime | None = None
    install_at: datetime | None = None
    request_id: int | None = None  # 1.6 UpdateFirmware has none
    signing_certificate: str | None = None  # None: unsigned (1.6 UpdateFirmware only)
    signature: str | None = None
    retries: int | None = None
    retry_interval: int | None = None

    @classmethod
    def signed(
        cls, request_id: int, firmware: dict[str, Any], retries: int | None, retry_interval: int | None
    ) -> UpdateRequest:
        """2.0.1 UpdateFirmware / 1.6 security SignedUpdateFirmware: the same FirmwareType (snake_case keys, as the
        `ocpp` library hands them over); a missing certificate or signature is "" and fails the check (L01.FR.11)."""
        return cls(
            str(firmware["location"]),
            _utc(firmware.get("retrieve_date_time")),
            _utc(firmware.get("install_date_time")),
            request_id,
            str(firmware.get("signing_certificate") or ""),
            str(firmware.get("signature") or ""),
            retries,
            retry_interval,
        )


def _utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


parse_time = _utc


class FirmwareUpdater:
    DEFAULT_RETRIES = 2
    DEFAULT_RETRY_INTERVAL = 30

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        busy: Callable[[], bool],
        wake: Callable[[], None],
        hold: Callable[[bool], None] = lambda _on: None,
    ) -> None:
        """`busy`: whether a transaction runs; `wake`: tell the outbox something was queued; `hold(True)`: make the
        free EVSEs Unavailable for new starts until `hold(False)` (L01.FR.07)."""
        self.config = config.firmware
        self.csms_ca = config.csms.ca_file
        # ---- certificates: ManufacturerRootCertificates from the store (seeded from [firmware] manufacturer_root)
        self.certificates = CertificateStore.for_config(config)
        self.store = store
        self.store_path = Path(config.storage.path)
        self.state_dir = self.store_path.parent
        self.releases = Releases(Path(self.config.releases))
        self.busy = busy
        self.wake = wake
        self.restart_requested = asyncio.Event()  # app.run_daemon exits with the code the unit restarts on
        self.hold_evses = hold
        self._job: asyncio.Task[None] | None = None
        self._committed = False  # past the point where the update can be cancelled
        self._verifier: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ what the CSMS sees

    def notify(self, status: str, request_id: int | None, signed: bool) -> None:
        """Queue a FirmwareStatusNotification (durable: the outbox), and remember it for TriggerMessage."""
        self.store.enqueue("firmware_status", None, {"status": status, "requestId": request_id, "signed": signed})
        self.store.set_setting("firmware.last_status", status)
        self.store.set_setting("firmware.last_request", "" if request_id is None else str(request_id))
        self.store.set_setting("firmware.last_signed", "1" if signed else "0")
        log.info("firmware status", status=status, request_id=request_id)
        self.wake()

    def triggered(self) -> tuple[str, int | None]:
        """L01.FR.25/26: the last status sent, Idle after Installed (or when there was none)."""
        status = self.store.setting("firmware.last_status") or "Idle"
        request = self.store.setting("firmware.last_request")
        if status in ("Installed", "Idle"):
            return "Idle", None
        return status, int(request) if request else None

    # ------------------------------------------------------------------ a request

    def request(self, req: UpdateRequest) -> str:
        """Accepted, AcceptedCanceled, Rejected or InvalidCertificate (2.0.1 L01); the work runs in a task."""
        signed = req.signing_certificate is not None
        if not signed and not self.config.allow_unsigned_16:
            log.warning("unsigned firmware update refused ([firmware] allow_unsigned_16 = false)")
            return "Rejected"
        problem = check_location(req.location)
        if problem is None:
            try:
                release_version(Path(unquote(urlparse(req.location).path)))
            except NotARelease as exc:
                problem = str(exc)
        if problem is not None:
            log.warning("firmware update refused", problem=problem)
            return "Rejected"
        if signed:
            try:
                roots = self.certificates.roots(MANUFACTURER_ROOT)
                signature.check_certificate(req.signing_certificate or "", roots, datetime.now(UTC))
            except (OSError, signature.InvalidCertificate) as exc:
                log.warning("firmware signing certificate refused", error=str(exc)[:200])
                self.store.security_event(INVALID_SIGNING_CERTIFICATE, str(exc)[:200])  # L01.FR.02
                self.wake()
                return "InvalidCertificate"  # L01.FR.22
        answer = "Accepted"
        if self._job is not None and not self._job.done():
            if self._committed:
                return "Rejected"  # L01.FR.27: the install is under way
            self._job.cancel()
            answer = "AcceptedCanceled"  # L01.FR.24
        self._job = asyncio.create_task(self._run(req), name="firmware update")
        return answer

    async def _sleep_until(self, at: datetime) -> None:
        while (left := (at - datetime.now(UTC)).total_seconds()) > 0:  # noqa: ASYNC110 -- a wall-clock time
            await asyncio.sleep(min(left, 60))

    def _ssl(self) -> ssl.SSLContext:
        """[firmware] ca_file when set; else the CSMS roots of the certificate store (seeded from [csms] ca_file,
        changed by InstallCertificate), and the system's CAs only when the CSMS itself uses them (no ca_file)."""
        if self.config.ca_file:
            context = ssl.create_default_context(cafile=self.config.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            return context
        return https_context(self.certificates, system=not self.csms_ca)

    async def _run(self, req: UpdateRequest) -> None:
        rid, signed = req.request_id, req.signing_certificate is not None
        self._committed = False
        try:
            await self._carry_out(req, rid, signed)
        except asyncio.CancelledError:
            log.info("firmware update cancelled by a new one", request_id=rid)
            self.hold_evses(False)
            raise
        except Exception as exc:
            log.error("firmware update failed", request_id=rid, error=repr(exc)[:300])
            self.hold_evses(False)
            self.notify("InstallationFailed", rid, signed)

    async def _carry_out(self, req: UpdateRequest, rid: int | None, signed: bool) -> None:
        if req.retrieve_at is not None and req.retrieve_at > datetime.now(UTC):
            self.notify("DownloadScheduled", rid, signed)
            await self._sleep_until(req.retrieve_at)
        name = Path(unquote(urlparse(req.location).path)).name
        version = release_version(Path(name))
        downloads = self.releases.root / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        wheel = downloads / name
        self.notify("Downloading", rid, signed)
        try:
            await download(
                req.location,
                wheel,
                retries=self.DEFAULT_RETRIES if req.retries is None else req.retries,
                retry_interval=self.DEFAULT_RETRY_INTERVAL if req.retry_interval is None else req.retry_interval,
                max_bytes=self.config.max_size_mb << 20,
                timeout=self.config.download_timeout,
                ssl_context=self._ssl() if req.location.startswith("https:") else None,
            )
        except DownloadFailed as exc:
            log.error("firmware download failed", source=where(req.location), error=str(exc))
            self.notify("DownloadFailed", rid, signed)
            return
        self.notify("Downloaded", rid, signed)
        if signed:
            try:
                roots = await asyncio.to_thread(self.certificates.roots, MANUFACTURER_ROOT)
                signer = signature.check_certificate(req.signing_certificate or "", roots, datetime.now(UTC))
                digest = await asyncio.to_thread(signature.file_digest, str(wheel))
                signature.check_signature(digest, req.signature or "", signer)
            except (OSError, signature.InvalidCertificate, signature.InvalidSignature) as exc:
                log.error("firmware signature invalid; not installed", error=str(exc)[:200])
                wheel.unlink(missing_ok=True)
                self.store.security_event(INVALID_SIGNATURE, str(exc)[:200])  # L01.FR.03
                self.notify("InvalidSignature", rid, signed)
                return
            self.notify("SignatureVerified", rid, signed)
        if req.install_at is not None and req.install_at > datetime.now(UTC):
            self.notify("InstallScheduled", rid, signed)  # L01.FR.16
            await self._sleep_until(req.install_at)
        self.hold_evses(True)  # L01.FR.07: no new starts from here until the new release runs
        if self.busy():
            self.notify("InstallScheduled", rid, signed)  # L01.FR.34: waiting for the transactions (L01.FR.06)
            while self.busy():
                await asyncio.sleep(1.0)
                self.hold_evses(True)  # "any EVSE that becomes available SHALL be set to UNAVAILABLE"
        self._committed = True
        self.notify("Installing", rid, signed)
        try:
            target = await asyncio.to_thread(self.releases.install, wheel, version)
        except InstallFailed as exc:
            await asyncio.to_thread(wheel.unlink, missing_ok=True)
            log.error("firmware install failed", version=version, error=str(exc))
            self.hold_evses(False)
            self.notify("InstallationFailed", rid, signed)
            self._committed = False
            return
        await asyncio.to_thread(wheel.unlink, missing_ok=True)  # installed: the venv holds what it needs
        copy = self.store_path.with_name(f"{self.store_path.name}.before-{version}")
        schema = await asyncio.to_thread(copy_store, self.store_path, copy)
        pending = Pending(rid, signed, version, str(target), str(self.releases.current()), str(copy), schema)
        save_pending(self.state_dir, pending)  # before the switch: a power loss after it finds the record
        self.releases.switch(target)
        self.notify("InstallRebooting", rid, signed)  # L01.FR.15, L01.FR.32 (a); the EVSEs stay held meanwhile
        log.warning("firmware installed; restarting on the new release", version=version, release=str(target))
        self.restart_requested.set()

    # ------------------------------------------------------------------ after a restart

    def on_start(self, accepted: Callable[[], bool]) -> None:
        """What this run has to do about an earlier install: prove the new release (this one), or report the
        failure of the release that was rolled back. `accepted`: whether the CSMS has accepted this run's boot."""
        pending = load_pending(self.state_dir)
        if pending is None:
            self._interrupted()
            return
        if pending.state == "booting" and pending.version == station.__version__:
            self._verifier = asyncio.create_task(self._verify(pending, accepted), name="firmware boot check")
            return
        self.hold_evses(False)  # the EVSEs the install held (kept in the store across the restart)
        reason = pending.reason if pending.state == "rolled_back" else "InstallationFailed"
        log.error("the firmware update did not take; reporting it", version=pending.version, reason=reason)
        self.notify(reason or "InstallationFailed", pending.request_id, pending.signed)
        clear_pending(self.state_dir)

    def _interrupted(self) -> None:
        """The previous run stopped (power loss, SIGKILL) in the middle of an update before the switch: this release
        still runs; the CSMS hears that the update failed and the held EVSEs come back."""
        self.hold_evses(False)
        last = self.store.setting("firmware.last_status") or ""
        if last not in IN_PROGRESS:
            return
        request = self.store.setting("firmware.last_request")
        status = "DownloadFailed" if last in ("Downloading", "DownloadScheduled") else "InstallationFailed"
        log.error("a firmware update was interrupted by the stop of the previous run", last=last, reported=status)
        self.notify(status, int(request) if request else None, self.store.setting("firmware.last_signed") == "1")

    async def _verify(self, pending: Pending, accepted: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.boot_timeout
        while not accepted() and loop.time() < deadline:  # noqa: ASYNC110 -- the connection owns the boot
            await asyncio.sleep(0.5)
        if not accepted():
            roll_back(self.releases, self.state_dir, pending, "InstallVerificationFailed")
            self.restart_requested.set()
            return
        self.notify("Installed", pending.request_id, pending.signed)  # L01.FR.28, L01.FR.32 (a)
        self.hold_evses(False)
        self.store.security_event(FIRMWARE_UPDATED, f"release {pending.version}")  # L01.FR.31
        self.wake()
        clear_pending(self.state_dir)
        await asyncio.to_thread(Path(pending.store_copy).unlink, missing_ok=True)
        log.info("firmware release booted; update complete", version=pending.version)

    async def close(self) -> None:
        for task in (self._job, self._verifier):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def settle_before_store_opens(config: Config) -> None:
    """A rollback to this release may need the store as it was before the new release migrated it."""
    from station.store.migrations import LATEST

    store_path = Path(config.storage.path)
    pending = load_pending(store_path.parent)
    if pending is not None:
        restore_store(pending, store_path, LATEST)
