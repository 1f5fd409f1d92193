"""The WebSocket connection to the CSMS: connect, negotiate the OCPP version, boot, and keep delivering.

Owns the connection's life: it dials `<url>/<station id>` with the subprotocols of the configured version, refuses a
CSMS that picks none, reconnects with a growing randomised back-off, sends BootNotification once per process run (not on
every reconnect), heartbeats at the CSMS's interval, forwards connector status changes, and drains the store's outbox in
order, one message at a time, deleting an entry only when the CSMS has answered it. A CALLERROR counts as one failed
attempt (TransactionMessageAttempts / RetryInterval); a message the CSMS repeatedly fails to process is moved aside,
never deleted. A timeout drops the connection: after it nothing on the socket can be trusted to be in order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import structlog
from ocpp import messages as ocpp_messages
from ocpp.exceptions import NotImplementedError as CallNotImplemented
from ocpp.exceptions import NotSupportedError, OCPPError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from station.config import Config
from station.core.model import ReportStatus
from station.firmware.update import FirmwareUpdater
from station.logs import loggable
from station.logupload.service import LogUploads
from station.ocpp import wire
from station.ocpp.adapter import BootRefused, CsmsAdapter
from station.ocpp.boot import boot_reason, os_boot_id, software_version
from station.ocpp.certificates import CertificateStore
from station.ocpp.liblog import LibraryLog
from station.ocpp.network import NetworkProfile, NetworkProfiles
from station.ocpp.security import Security, TlsOffer, probe_tls, signing_request, tls_failure_worth_probing
from station.ocpp.settings import Settings
from station.ocpp.trace import FrameTrace
from station.runtime import StationRuntime
from station.store import Store, StoreError
from station.tasks import until_first_exits, wait_event

if TYPE_CHECKING:
    from station.ocpp.v16 import V16Adapter
    from station.ocpp.v201 import V201Adapter

DELIVERY_SLACK = 10.0  # seconds beyond two response timeouts that one outbox delivery may take
log = structlog.get_logger("station.ocpp")

# The `ocpp` library validates every message against its JSON schema in a thread-pool hop by default. For messages of
# our size the hop costs more than the validation (the GIL serialises it anyway): inline, the offline backlog drains
# 1.5x faster (bench: 785 -> 1225 msg/s). It is a process-wide switch of the library.
ocpp_messages.ASYNC_VALIDATION = False

V16_SUBPROTOCOL = "ocpp1.6"  # station.ocpp.v16.SUBPROTOCOL
V201_SUBPROTOCOL = "ocpp2.0.1"  # station.ocpp.v201.SUBPROTOCOL

# What we offer per configured version, in order of preference; the CSMS picks one (or none, and is refused).
SUBPROTOCOLS = {
    "1.6": [V16_SUBPROTOCOL],
    "2.0.1": [V201_SUBPROTOCOL],
    "auto": [V201_SUBPROTOCOL, V16_SUBPROTOCOL],
}


def adapter_class(subprotocol: str) -> type[V16Adapter] | type[V201Adapter]:
    """The adapter of the version the CSMS picked, imported then: a station that speaks one version never loads the
    other's adapter or the `ocpp` library's message classes for it."""
    if subprotocol == V16_SUBPROTOCOL:
        from station.ocpp.v16 import V16Adapter

        return V16Adapter
    from station.ocpp.v201 import V201Adapter

    return V201Adapter


@dataclass
class ConnectionState:
    """What the diagnostics show about the CSMS link. Written only by CsmsConnection."""

    url: str
    connected: bool = False
    version: str | None = None
    booted: str | None = None  # the OCPP version this process has booted with
    registration: str | None = None  # the status of the last BootNotification answer (Accepted, Pending, Rejected)
    last_connected: datetime | None = None
    last_error: str = ""
    failures: int = 0  # connection attempts that failed since the last good connection
    messages_sent: int = 0
    frames_dropped: int = 0  # frames from the CSMS refused at the wire (station/ocpp/wire.py), since start


class NoSubprotocol(Exception):
    pass


class _LoggedConnection:
    """The socket as the `ocpp` library sees it: every frame in is checked at the wire first (station/ocpp/wire.py)
    and dropped, with its CALLERROR where OCPP asks for one, when it is unsafe to hand on; every frame in and out goes
    into the technician's trace and is counted."""

    DROP_LOG_FIRST = 10  # dropped frames logged one by one, then one line per DROP_LOG_EVERY

    DROP_LOG_EVERY = 1000

    def __init__(self, ws: ClientConnection, state: ConnectionState, trace: FrameTrace, version: str) -> None:
        self.ws = ws
        self.state = state
        self.trace = trace
        self.version = version
        self.awaiting: str | None = None  # the message id of our outstanding CALL (the library sends one at a time)
        self.rejected: Callable[[], bool] = lambda: False  # whether the CSMS rejected our boot (set by the owner)
        self.dropped = 0
        # Clear while the library handles a CSMS CALL: our own CALLs wait for its answer (see send).
        self._answered = asyncio.Event()
        self._answered.set()

    async def recv(self) -> str:
        self._answered.set()  # the library asks for the next frame: it is done with the last one
        while True:
            frame = await self.ws.recv()
            verdict = wire.inspect(frame, version=self.version, awaiting=self.awaiting)
            if verdict.accept:
                assert isinstance(frame, str)
                if verdict.message_type == wire.CALL:
                    self._answered.clear()
                if verdict.message_type in (wire.CALLRESULT, wire.CALLERROR):
                    self.awaiting = None  # answered; a repeat of the answer is stale
                log.debug("ocpp frame in", frame=frame)
                self.trace.record("in", frame)
                return frame
            self._dropped(frame, verdict)
            reply = verdict.reply
            if reply is not None and self.rejected():
                reply = wire.while_rejected(reply, self.version)
            if reply is not None:
                await self.send(reply)

    def _dropped(self, frame: str | bytes, verdict: wire.Verdict) -> None:
        self.dropped += 1
        self.state.frames_dropped += 1
        self.trace.record("in", frame, note=verdict.reason)
        if self.dropped <= self.DROP_LOG_FIRST or self.dropped % self.DROP_LOG_EVERY == 0:
            log.warning(
                "CSMS frame dropped",
                reason=verdict.reason,
                message_id=loggable(verdict.message_id, 40) if verdict.message_id else None,
                length=len(frame),
                dropped=self.dropped,
                answered=verdict.reply is not None,
            )

    async def send(self, frame: str) -> None:
        """Our CALLs go after the answer to the CSMS CALL being handled: what a request set off (a remote start's
        StatusNotification, its StartTransaction) never reaches the CSMS before the request's answer, also when the
        handler lets that work begin before it answers (adapter.let_started_work_begin). The library reads no frame
        while it handles one, so it answers, or asks for the next frame, before it could take any answer of ours."""
        frame = wire.outgoing(frame)
        call_id = wire.call_id_of(frame)
        if call_id is not None:
            await self._answered.wait()
            self.awaiting = call_id
        else:
            self._answered.set()  # the answer (a CALLRESULT or CALLERROR) goes now
        log.debug("ocpp frame out", frame=frame)
        self.trace.record("out", frame)
        self.state.messages_sent += 1
        await self.ws.send(frame)


class CsmsConnection:
    def __init__(
        self,
        config: Config,
        runtime: StationRuntime,
        store: Store,
        settings: Settings,
        *,
        firmware: FirmwareUpdater | None = None,
    ) -> None:
        self.config = config
        self.firmware = firmware  # ---- firmware update: handed to the adapters
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.url = f"{config.csms.endpoint}/{config.station.id}"
        self.state = ConnectionState(self.url)
        self.trace = FrameTrace()
        # ---- log upload (GetDiagnostics / GetLog, station/logupload/): one at a time, for every adapter
        self.log_uploads = LogUploads(
            config, store, self.trace, runtime.supervisor, runtime.csms, software=software_version()
        )
        self._wakeups = {"transaction": asyncio.Event(), "other": asyncio.Event()}  # one per outbox lane
        self._statuses: asyncio.Queue[ReportStatus] = asyncio.Queue()
        runtime.csms.outbox_listeners.append(self._wake_lanes)
        store.security_event_listeners.append(self._wake_for_security_event)
        runtime.status_listeners.append(self._statuses.put_nowait)
        self._ws: ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop run() runs in
        self._stopping = False
        self.security = Security(
            config.csms,
            config.station.id,
            settings,
            store,
            CertificateStore.for_config(config),  # ---- certificates
        )
        self.security.reconnect_listeners.append(self._reconnect_soon)
        self._renewal_wakeup = asyncio.Event()  # ---- client certificate: a SignCertificate may be due
        self.security.renewal_listeners.append(self._renewal_wakeup.set)
        # ---- network profiles (B09/B10, 1.6 SecurityProfile raise): which profile each attempt dials, the fallback
        self.network = NetworkProfiles(config, settings, store, self.security)
        self._response_timeout = config.csms.response_timeout  # the dialled profile's messageTimeout
        self._booted_url: str | None = None  # the CSMS this process booted with (another one gets a boot too)
        # Why this process runs, from what the previous run left in the store (2.0.1 BootNotification reason).
        try:
            previous = store.begin_run(os_boot_id(), software_version())
            self.boot_reason = boot_reason(previous, os_boot_id(), software_version())
        except StoreError as exc:
            log.error("the store cannot say how the previous run ended", error=str(exc))
            self.boot_reason = "Unknown"
        self._boot_not_before = 0.0  # loop time before which no BootNotification may go (the CSMS's interval)
        self._connected = False  # this attempt got a session going (the back-off starts over after it)
        # What the device model reports where the config decides (the back-off falls back to the config's values).
        # ---- network profiles: MessageTimeout[Default] is the messageTimeout of the profile in use
        settings.computed["MessageTimeout"] = lambda: str(int(self._response_timeout))
        settings.defaults["RetryBackOffWaitMinimum"] = str(max(int(config.csms.reconnect_min), 0))
        settings.defaults["RetryBackOffRandomRange"] = str(max(int(config.csms.reconnect_min), 0))
        settings.defaults["RetryBackOffRepeatTimes"] = "0"

    def _wake_lanes(self) -> None:
        for wakeup in self._wakeups.values():
            wakeup.set()

    def _wake_for_security_event(self) -> None:
        """A security event was queued (by the security side, the firmware updater, the network profiles, perhaps in
        a worker thread): the outbox's other lane looks at once, not at its next 30 s look."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeups["other"].set)

    def _reconnect_soon(self) -> None:
        """A new security profile takes effect on a new connection: close this one once the answer is out."""
        ws = self._ws
        if ws is not None:
            asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(ws.close()))

    def _backoff(self, failures: int) -> float:
        """OCPP 2.0.1 Part 4 §5.3 (also used for 1.6): RetryBackOffWaitMinimum doubled per failure up to
        RetryBackOffRepeatTimes doublings, plus a random part up to RetryBackOffRandomRange. Without values set by the
        CSMS, [csms] reconnect_min / reconnect_max of the config file give the minimum and the ceiling."""
        minimum = float(self.settings.stored("RetryBackOffWaitMinimum") or self.config.csms.reconnect_min)
        random_range = float(self.settings.stored("RetryBackOffRandomRange") or minimum)
        repeat = self.settings.stored("RetryBackOffRepeatTimes")
        doublings = min(failures - 1, int(repeat)) if repeat else failures - 1
        wait = minimum * 2 ** max(doublings, 0)
        if not repeat:
            wait = min(wait, self.config.csms.reconnect_max)
        return float(wait + random.uniform(0, random_range))

    async def run(self) -> None:
        """Connect, run the session, and after any failure at all reconnect with the back-off: this loop ends only
        when the connection is closed (close()). Whatever ends a session is logged and shown by `station diag`."""
        self._loop = asyncio.get_running_loop()
        failures = 0
        while True:
            self._connected = False
            profile = self.network.current()
            try:
                await self._connect_once(profile)
            except NoSubprotocol as exc:
                self.state.last_error = str(exc)
                log.error("CSMS refused every OCPP version we offered", error=str(exc), url=self.url)
            except StoreError as exc:
                self.state.last_error = str(exc)
                log.error("the store failed during the CSMS session; reconnecting", error=str(exc))
            except InvalidURI as exc:
                self.state.last_error = str(exc)
                log.error("CSMS url is invalid", error=str(exc))
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                offer = await self._probe_tls(exc, profile)
                security_problem = self.security.connection_failed(exc, offer)
                if security_problem is not None:
                    self.state.last_error = security_problem
                    log.error("CSMS connection refused for security", reason=security_problem, url=self.url)
                else:
                    log.warning("CSMS connection failed", error=self.state.last_error, url=self.url)
            except Exception as exc:
                # Anything else (a bug, a library failing on what the CSMS sent): never a silent end of the
                # connection. Logged with its traceback (redacted), shown in `station diag status`, and retried.
                self.state.last_error = f"unexpected {type(exc).__name__}: {loggable(str(exc), 200)}"
                log.error(
                    "CSMS connection failed unexpectedly; reconnecting", error=self.state.last_error, exc_info=exc
                )
            finally:
                self.state.connected = False
                self.runtime.csms.online = False
                self._ws = None
                if not self._connected:
                    self.network.failed()  # ---- network profiles: NetworkProfileConnectionAttempts per profile
                if self.runtime.authorizer is not None:
                    self.runtime.authorizer.ask_csms = None
            if self._stopping:
                return
            if self._connected:
                # Part 4 §5.3 (errata 2025-04): "After a successful connection the backoff wait timer SHALL be reset
                # to RetryBackOffWaitMinimum", however the connection ended.
                failures = 0
            failures += 1
            self.state.failures = failures
            wait = self._backoff(failures)
            log.info("reconnecting", in_s=round(wait, 2), failures=failures)
            await asyncio.sleep(wait)

    async def _probe_tls(self, exc: BaseException, profile: NetworkProfile) -> TlsOffer | None:
        """What the CSMS offers, when a TLS handshake failed in a way that may mean an old version or a weak suite."""
        if profile.security_profile < 2 or not tls_failure_worth_probing(exc):
            return None
        parsed = urlparse(self.url)
        if parsed.hostname is None:
            return None
        return await asyncio.to_thread(probe_tls, parsed.hostname, parsed.port or 443)

    async def close(self) -> None:
        """Close the WebSocket properly (close frame, handshake) and stop reconnecting."""
        self._stopping = True
        self.log_uploads.close()
        if self._ws is not None:
            await self._ws.close()
        try:
            self.store.end_run()  # the next run starts knowing this one ended cleanly
        except StoreError as exc:
            log.warning("could not record the clean end of this run", error=str(exc))

    async def _connect_once(self, profile: NetworkProfile) -> None:
        ping = self.settings.int_value("WebSocketPingInterval")
        offered = SUBPROTOCOLS[self.config.csms.ocpp_version]
        self.url = self.state.url = f"{profile.url}/{self.config.station.id}"
        self._response_timeout = float(profile.message_timeout)
        async with connect(
            self.url,
            **self.security.connect_options(profile.security_profile),
            subprotocols=offered,  # type: ignore[arg-type]
            open_timeout=10,
            ping_interval=ping or None,
            ping_timeout=ping or None,
            close_timeout=5,
            proxy=None,
            max_size=2**20,
        ) as ws:
            if ws.subprotocol not in offered:
                await ws.close(code=1002, reason="no OCPP subprotocol agreed")
                raise NoSubprotocol(f"offered {', '.join(offered)}, CSMS chose {ws.subprotocol or 'none'}")
            adapter = self._adapter(ws, ws.subprotocol)
            self._ws = ws
            self._connected = True
            self.network.connected(profile)
            self.state.connected = True
            self.runtime.csms.online = True
            self.state.version = adapter.version
            self.state.last_connected = datetime.now(UTC)
            self.state.last_error = ""
            self.state.failures = 0
            self.security.connected(ws)
            log.info(
                "connected to CSMS",
                url=self.url,
                subprotocol=ws.subprotocol,
                security_profile=profile.security_profile,
                network_slot=profile.slot,
            )
            if self.runtime.authorizer is not None:
                self.runtime.authorizer.ask_csms = adapter.authorize
            try:
                await until_first_exits(adapter.start(), self._drive(adapter))
            except TimeoutError as exc:
                log.warning("CSMS did not answer in time; dropping the connection", error=str(exc)[:160])
                raise

    def _adapter(self, ws: ClientConnection, subprotocol: str) -> CsmsAdapter:
        cls = adapter_class(subprotocol)
        link = _LoggedConnection(ws, self.state, self.trace, cls.version)
        adapter = cls(
            self.config.station.id,
            link,
            runtime=self.runtime,
            store=self.store,
            settings=self.settings,
            vendor=self.config.station.vendor,
            model=self.config.station.model,
            response_timeout=self._response_timeout,
            signed_value_format=self.config.csms.signed_value_format,
            firmware=self.firmware,
            log_uploads=self.log_uploads,
            security=self.security,  # ---- certificates
        )
        if cls.version == "2.0.1":  # ---- network profiles: SetNetworkProfile (B09)
            from station.ocpp.v201 import V201Adapter  # imported already, by adapter_class

            assert isinstance(adapter, V201Adapter)
            adapter.network = self.network
        adapter.logger = LibraryLog()  # the library's own log calls, without payloads or tracebacks
        link.rejected = lambda: adapter.registration == "Rejected"
        return adapter

    async def _drive(self, adapter: CsmsAdapter) -> None:
        # BootNotification once per process run, not on every reconnect (again only if the version changed).
        # ---- network profiles: and again when a profile took it to another CSMS
        # The connection dials while the runtime starts: the boot waits until the meters said who they are (1.6
        # BootNotification carries the meter's serial), the rest until the runtime is ready (statuses true).
        await self.runtime.identified.wait()
        if self.state.booted == adapter.version and self._booted_url == self.url:
            adapter.registration = "Accepted"
        else:
            self._heartbeat_from_boot(await self._boot(adapter))
            self.state.booted = adapter.version
            self._booted_url = self.url
            log.info("boot accepted", heartbeat_interval=self.settings.int_value("HeartbeatInterval"))
        await self.runtime.ready.wait()
        self.runtime.csms_accepted()
        while not self._statuses.empty():
            self._statuses.get_nowait()
        for report in self.runtime.core.report_all():
            self._statuses.put_nowait(report)
        await until_first_exits(
            self._heartbeats(adapter),
            self._forward_statuses(adapter),
            self._deliver_outbox(adapter),
            self._renew_certificate(adapter),
        )

    def _heartbeat_from_boot(self, interval: int) -> None:
        """The heartbeat interval an Accepted boot carries, checked like a ChangeConfiguration of it: a value out of
        the setting's range is clamped (and said once), 0 or less keeps the one in force (interval 0 once gave 24,635
        heartbeats in 25 s)."""
        if interval <= 0:
            log.warning("CSMS sent no usable heartbeat interval; keeping the current one", sent=interval)
            return
        used = self.settings.clamp("HeartbeatInterval", interval)
        if used != interval:
            log.warning("CSMS sent a heartbeat interval out of range; clamped", sent=interval, used=used)
        self.store.set_setting("ocpp16.HeartbeatInterval", str(used))

    async def _boot(self, adapter: CsmsAdapter) -> int:
        """BootNotification until Accepted; the heartbeat interval. After Pending or Rejected nothing else is sent
        and no BootNotification goes before the CSMS's interval is over, on this connection or the next one (1.6
        §4.2, 2.0.1 B02.FR.04, B03.FR.02); while Rejected no CSMS request is answered (the adapters' RpcRules). A
        BootNotification the CSMS triggers while Pending may be Accepted before that."""
        loop = asyncio.get_running_loop()
        while True:
            wait = self._boot_not_before - loop.time()
            if wait > 0:
                adapter.registration = self.state.registration
                await asyncio.sleep(wait)
            try:
                interval = await adapter.boot(self.boot_reason)
                self.state.registration, self._boot_not_before = "Accepted", 0.0
                return interval
            except BootRefused as refused:
                # 1.6 §4.2: with interval 0 the station chooses its own wait; a huge one waits at most a day.
                wait = self.settings.clamp("HeartbeatInterval", refused.interval) if refused.interval > 0 else 30
                self.state.registration, self._boot_not_before = refused.status, loop.time() + wait
                log.warning("CSMS did not accept the boot", status=refused.status, retry_in=wait)
            except OCPPError as exc:
                self._boot_not_before = loop.time() + 30
                log.warning("BootNotification got a CALLERROR", error=str(exc))
                continue
            if not await wait_event(adapter.accepted, wait):
                continue
            self.state.registration, self._boot_not_before = "Accepted", 0.0
            return adapter.boot_interval

    RENEWAL_LOOK_EVERY = 3600.0  # s: how often the client certificate's expiry is looked at

    async def _renew_certificate(self, adapter: CsmsAdapter) -> None:
        """The client certificate's renewal (station/ocpp/client_certificate.py Renewal): a SignCertificate when one
        is due (the CSMS triggered it, a resend of the back-off, or the certificate in use expires within
        `client_cert_renew_days`: A03.FR.02), and a new connection once the credential to present is another than
        the one this connection presents (A02.FR.08: a renewed certificate, also one whose validity began since)."""
        security, loop = self.security, asyncio.get_running_loop()
        margin = timedelta(days=self.config.csms.client_cert_renew_days)
        while True:
            self._renewal_wakeup.clear()
            active = security.client.active()
            if security.credential is not None and active is not None and active.name != security.credential.name:
                log.info("the client certificate to present changed; reconnecting with it")
                self._reconnect_soon()
            if (
                margin
                and active is not None
                and active.not_after - datetime.now(UTC) < margin
                and security.client.organization(self.settings.value("OrganizationName"))
                and security.renewal.expiring(loop.time())
            ):
                log.info("the client certificate expires soon; renewing it", valid_to=active.not_after.isoformat())
            wait = security.renewal.wait(loop.time())
            if wait is None or wait > 0:
                await wait_event(self._renewal_wakeup, min(self.RENEWAL_LOOK_EVERY, wait or self.RENEWAL_LOOK_EVERY))
                continue
            try:
                csr = await asyncio.to_thread(signing_request, security)
            except OSError as exc:  # the key cannot be stored: no request; the session goes on
                log.error("no certificate signing request: the new key cannot be stored", error=str(exc)[:200])
                security.renewal.stop()
                continue
            try:
                accepted = await adapter.sign_certificate(csr)
            except OCPPError as exc:  # a CSMS without the security extension: NotImplemented; asking again won't help
                log.warning("SignCertificate got a CALLERROR; the renewal ends", error=str(exc)[:200])
                security.renewal.stop()
                continue
            security.renewal.answered(
                accepted,
                loop.time(),
                wait_minimum=self.settings.int_value("CertSigningWaitMinimum"),
                repeat_times=self.settings.int_value("CertSigningRepeatTimes"),
            )
            log.info("SignCertificate answered", accepted=accepted, resend_in=security.renewal.wait(loop.time()))

    async def _heartbeats(self, adapter: CsmsAdapter) -> None:
        while True:
            await asyncio.sleep(self.settings.int_value("HeartbeatInterval"))
            await adapter.heartbeat()

    async def _forward_statuses(self, adapter: CsmsAdapter) -> None:
        while True:
            report = await self._statuses.get()
            try:
                await adapter.status(report)
            except OCPPError as exc:
                log.warning("StatusNotification refused by the CSMS", error=str(exc))

    async def _deliver_outbox(self, adapter: CsmsAdapter) -> None:
        """Two lanes side by side: transaction messages in their order (1.6 §3.7), and the rest (security events),
        so that a message the CSMS refuses and that waits for its retry holds up nothing of the other lane."""
        await until_first_exits(self._deliver_lane(adapter, "transaction"), self._deliver_lane(adapter, "other"))

    async def _deliver_lane(self, adapter: CsmsAdapter, lane: str) -> None:
        while True:
            try:
                await self._deliver_next(adapter, lane)
            except StoreError as exc:
                # The store cannot record that a message was answered: it is sent again later under the same
                # message id, which the CSMS recognises. Keep the connection; the runtime has stopped charging.
                log.error("outbox: the store failed; retrying in 5 s", error=str(exc))
                await asyncio.sleep(5)

    async def _deliver_next(self, adapter: CsmsAdapter, lane: str) -> None:
        """Deliver the lane's oldest outbox message, or wait until there is one."""
        message = self.store.next_message(lane)
        if message is None:
            wakeup = self._wakeups[lane]
            wakeup.clear()
            if self.store.next_message(lane) is None:
                # Security events are queued by station/ocpp/security.py without telling us: that lane looks again.
                await wait_event(wakeup, None if lane == "transaction" else 30)
            return
        try:
            # Bounded as a whole: the library's response timeout starts only once the frame is out, and a send that
            # never completes (a peer that stops reading) would hold the lane for good. Past the bound the session
            # ends like a missed answer and the message goes again after the reconnect, under the same id.
            async with asyncio.timeout(2 * self._response_timeout + DELIVERY_SLACK):
                delivery = await adapter.deliver(message)
        except TimeoutError:
            log.warning("outbox delivery did not complete in time; reconnecting", kind=message.kind, id=message.id)
            raise
        except OCPPError as exc:
            if message.kind == "security_event" and isinstance(exc, (CallNotImplemented, NotSupportedError)):
                # A 1.6 CSMS without the security extension: the event stays in the security log.
                log.info("CSMS does not take SecurityEventNotification", type=message.body.get("type"))
                self.store.give_up(message.id, f"{type(exc).__name__}: {exc}")
                return
            attempts = self.store.attempt_failed(message.id, f"{type(exc).__name__}: {exc}")
            limit = self.settings.int_value("TransactionMessageAttempts")
            if attempts >= limit:
                log.error(
                    "CSMS failed to process a transaction message; set aside",
                    kind=message.kind,
                    tx_ref=message.tx_ref,
                    attempts=attempts,
                    error=str(exc),
                )
                self.store.give_up(message.id, str(exc))
            else:
                wait = self.settings.int_value("TransactionMessageRetryInterval") * attempts
                log.warning(
                    "CSMS answered CALLERROR; will retry",
                    kind=message.kind,
                    attempts=attempts,
                    retry_in=wait,
                    error=str(exc),
                )
                await asyncio.sleep(wait)
            return
        except (ValueError, TypeError, KeyError) as exc:
            log.error(
                "outbox entry cannot be sent; set aside", kind=message.kind, tx_ref=message.tx_ref, error=str(exc)
            )
            self.store.give_up(message.id, f"cannot build message: {exc}")
            return
        self.store.delivered(
            message.id,
            csms_transaction=delivery.csms_transaction,
            transaction_done=delivery.transaction_done,
        )


def describe(state: ConnectionState, depth: int) -> dict[str, Any]:
    return {
        "url": state.url,
        "connected": state.connected,
        "version": state.version,
        "booted": state.booted,
        "last_connected": state.last_connected.isoformat() if state.last_connected else None,
        "last_error": state.last_error,
        "queue_depth": depth,
        "messages_sent": state.messages_sent,
        "frames_dropped": state.frames_dropped,
    }
