"""Carries out the core's decisions: feeds it events, runs its meter commands, writes its records to the store.

The runtime is the only caller of `ChargingStation.handle()`, so the core's state changes in one place, always on the
event loop thread. OCPP handlers call `remote_start` / `remote_stop`, which decide synchronously and never await the
meter: the meter work runs in tasks that feed their result back as events. A stop is retried until the meter has
produced its signed record (a lost record is lost money); the record is stored before the meter may forget it.
Status changes go to whoever listens (the OCPP connection); transaction messages go to the store's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from station.auth import Authorizer
from station.core.model import (
    AvailabilityChanged,
    Command,
    Event,
    MeterLinkChanged,
    MeterStarted,
    MeterStartFailed,
    MeterStopped,
    Outcome,
    Phase,
    RecordTransactionAborted,
    RecordTransactionEnded,
    RecordTransactionStarted,
    ReportStatus,
    StartMeterTransaction,
    StartRequested,
    StartSource,
    StationAccepted,
    StopMeterTransaction,
    StopReason,
    StopRequested,
    StoreHealthChanged,
    Transaction,
)
from station.core.station import ChargingStation, InvalidTransition
from station.meter.interface import (
    LiveValues,
    Meter,
    MeterError,
    MeterLinkError,
    MeterRefused,
    MeterState,
    MeterTransactionRequest,
)
from station.meter.records import record_facts
from station.store import Store, StoreError

log = structlog.get_logger("station.runtime")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class StationRuntime:
    def __init__(
        self,
        core: ChargingStation,
        store: Store,
        meter: Meter,
        *,
        station_id: str,
        clock: Clock = utc_now,
        stop_retry_delay: float = 1.0,
        monitor_interval: float = 5.0,
    ) -> None:
        self.core = core
        self.store = store
        self.meter = meter
        self.station_id = station_id
        self.clock = clock
        self.stop_retry_delay = stop_retry_delay
        self.monitor_interval = monitor_interval
        self.meter_state = MeterState()
        self.status_listeners: list[Callable[[ReportStatus], None]] = []
        self.outbox_listeners: list[Callable[[], None]] = []
        self.csms_online: Callable[[], bool] = lambda: False
        self.authorizer: Authorizer | None = None
        self.pending_remote_stops: set[str] = set()  # 1.6: stops for a transactionId whose StartTransaction.conf is due
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._orphans: set[str] = set()  # refs of transactions known only from the meter (see _adopt_orphan)
        self._unrecorded: dict[str, Transaction] = {}  # what the store failed to take; the meter keeps the record
        self._sampling_wakeups: list[asyncio.Event] = []  # set when a sampling setting changes
        self.store_probe_interval = 5.0
        # Meter value intervals in seconds (0: off), read at every round so a change by the CSMS takes effect at once.
        self.sample_interval: Callable[[], int] = lambda: 0
        self.aligned_interval: Callable[[], int] = lambda: 0
        self.sign_aligned: Callable[[], bool] = lambda: False  # AlignedDataSignReadings
        # 2.0.1 SampledDataCtrlr.TxEndedInterval: readings kept for TransactionEvent(Ended) only (0: none). 1.6 keeps
        # the MeterValueSampleInterval readings for StopTransaction instead (series "periodic").
        self.ended_interval: Callable[[], int] = lambda: 0
        # 1.6 StopTransactionOnInvalidId / 2.0.1 TxCtrlr.StopTxOnInvalidId
        self.stop_on_invalid_id: Callable[[], bool] = lambda: True
        self.reset_requested = asyncio.Event()  # app.run_daemon restarts the process once the station is idle
        self._reset_when_idle = False  # a Reset waits for the running transactions to end

    # ------------------------------------------------------------------ the OCPP side asks

    def remote_start(self, connector_id: int, id_tag: str, remote_start_id: int | None = None) -> Outcome:
        """Decide at once whether a remote start is accepted; the meter work follows in a task."""
        if self._closing:
            return Outcome(False, reason="the station is shutting down")
        self._check_store()
        event = StartRequested(connector_id, id_tag, self.clock(), uuid.uuid4().hex, remote_start_id=remote_start_id)
        return self._apply(event)

    async def local_start(self, connector_id: int, id_tag: str) -> Outcome:
        """A start from an identifier presented at the station (a card reader driver calls this): authorized by the
        CSMS when reachable, else by the local list or cache (LocalAuthorizeOffline)."""
        if self._closing:
            return Outcome(False, reason="the station is shutting down")
        if self.authorizer is None:
            return Outcome(False, reason="no authorization available")
        allowed, why = await self.authorizer.authorize(id_tag)
        log.info("local start authorization", connector_id=connector_id, allowed=allowed, why=why)
        if not allowed:
            return Outcome(False, reason=why)
        self._check_store()
        event = StartRequested(connector_id, id_tag, self.clock(), uuid.uuid4().hex, source=StartSource.LOCAL)
        return self._apply(event)

    def remote_stop(self, tx_ref: str, reason: StopReason = StopReason.REMOTE) -> Outcome:
        try:
            return self._apply(StopRequested(tx_ref, reason, self.clock()))
        except InvalidTransition as exc:
            return Outcome(False, reason=str(exc))

    def csms_refused_id(self, tx_ref: str, status: str) -> Outcome | None:
        """The CSMS answered a transaction's start with an identifier status other than Accepted (1.6 §4.8 with
        errata §3.17, §9.1.24; 2.0.1 E05.FR.10): with StopTransactionOnInvalidId the transaction ends at once with
        reason DeAuthorized. Without it the station would have to stop only the energy, which it cannot: it has no
        contactor of its own, so the key only takes "true"."""
        log.warning("the CSMS refused the identifier of a running transaction", tx_ref=tx_ref, status=status)
        if not self.stop_on_invalid_id():
            return None
        return self.remote_stop(tx_ref, StopReason.DE_AUTHORIZED)

    def queue_triggered_reading(self, connector_id: int) -> bool:
        """The most recent reading of a connector's charging transaction as a transaction message with context
        Trigger (2.0.1 TriggerMessage TransactionEvent, F06.FR.07); False when there is none to send."""
        live = self.meter_state.live
        targets = [ref for cid, ref in self._sample_targets(transactions_only=True) if cid == connector_id]
        if live is None or not targets or targets[0] is None:
            return False
        body = {**self._reading(live, "Trigger"), "connector_id": connector_id}
        self.store.enqueue("meter_values", targets[0], body, offline=not self.csms_online())
        self._outbox_changed()
        return True

    def change_availability(self, connector_id: int, operative: bool) -> Outcome:
        """Make connector(s) (0: all) operative or not; kept in the store so it survives a restart."""
        outcome = self._apply(AvailabilityChanged(connector_id, operative))
        if outcome.accepted:
            targets = self.core.connectors if connector_id == 0 else [connector_id]
            for cid in targets:
                self.store.set_availability(cid, 1, "Operative" if operative else "Inoperative")
        return outcome

    def reset(self, *, immediate: bool, reason: StopReason) -> str:
        """A Reset from the CSMS: end running transactions properly (immediate) or wait for them (on idle), then
        restart the process. Returns "Accepted" or "Scheduled" (on idle while a transaction runs)."""
        running = self.core.running_transactions()
        if running and not immediate:
            self._reset_when_idle = True
            log.info("reset scheduled for when the transactions have ended", transactions=len(running))
            return "Scheduled"
        for tx in running:
            self.remote_stop(tx.ref, reason)
        self._reset_when_idle = True
        self._check_reset()
        return "Accepted"

    def _check_reset(self) -> None:
        if self._reset_when_idle and not self.core.running_transactions():
            log.warning("reset: no transaction running; restarting")
            self.reset_requested.set()

    def csms_accepted(self) -> None:
        self.store.set_setting("accepted_once", "1")
        self._apply(StationAccepted())

    def transaction_for_csms_id(self, csms_id: str) -> str | None:
        for tx in self.core.running_transactions():
            stored = self.store.transaction(tx.ref)
            if stored is not None and stored.csms_transaction_id == csms_id:
                return tx.ref
        return None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the meter, learn who it is, and pick up whatever a previous run left open."""
        self.meter.set_link_listener(self._on_link_change)
        await self.meter.open()
        await self.refresh_meter_info()
        if self.store.setting("accepted_once") == "1":
            # Accepted in an earlier run: the station may charge while the CSMS is unreachable (offline start).
            self.core.accepted_by_csms = True
        for cid in self.core.connectors:
            if self.store.availability(cid, 1) == "Inoperative":
                self._apply(AvailabilityChanged(cid, False))
        open_transactions = self.store.open_transactions()
        if not open_transactions and await self._meter_reports_running():
            self._adopt_orphan()
        for stored in open_transactions:
            tx = stored.transaction
            reason = tx.stop_reason or StopReason.POWER_LOSS
            if tx.stop_reason is None:
                self.store.set_stop_reason(tx.ref, reason)
            log.warning("ending transaction left open by the previous run", tx_ref=tx.ref, stop_reason=reason.value)
            for command in self.core.restore(replace(tx, stop_reason=reason)):
                self._execute(command)
        self._spawn(self._monitor_meter(), "meter monitor")
        self._spawn(self._sample_periodic(), "meter monitor: sampled values")
        self._spawn(self._sample_aligned(), "meter monitor: clock-aligned values")
        self._spawn(self._sample_for_end(), "meter monitor: readings for the end message")

    async def _meter_reports_running(self) -> bool:
        try:
            return await self.meter.transaction_running()
        except MeterError as exc:
            log.warning(
                "cannot ask the meter whether a transaction is open; asking again at the next start", error=str(exc)
            )
            return False

    def _adopt_orphan(self) -> None:
        """The meter has a transaction the store never heard of: the daemon died after the meter started it and before
        storing it. End it on the meter (stop reason PowerLoss); its signed record tells who charged and from which
        reading, and the CSMS gets StartTransaction and StopTransaction for it, in that order."""
        connector_id = min(self.core.connectors)
        now = self.clock()
        tx = Transaction(
            ref=uuid.uuid4().hex,
            evse_id=connector_id,
            id_tag="",
            source=StartSource.REMOTE,
            requested_at=now,
            stop_reason=StopReason.POWER_LOSS,
        )
        log.warning("the meter has a transaction the store does not know; ending it", tx_ref=tx.ref)
        self._orphans.add(tx.ref)
        for command in self.core.restore(tx):
            self._execute(command)

    def _already_stored(self, tx: Transaction) -> str | None:
        """The stored transaction whose signed record the meter still holds, if any (the newest ones are enough:
        the meter holds at most the last one)."""
        held = {r.data for r in tx.signed_records}
        for stored in self.store.recent_transactions(10):
            if held & {r.data for r in stored.transaction.signed_records}:
                return stored.transaction.ref
        return None

    def _orphan_from_record(self, tx: Transaction) -> Transaction:
        """Fill in what only the signed record knows: the identification, the start time and the begin reading."""
        id_tag, started_at, meter_start = tx.id_tag, tx.stopped_at, tx.meter_stop_wh
        for record in tx.signed_records:
            facts = record_facts(record.data)
            if facts is None:
                continue
            id_tag = facts.id_tag or id_tag
            if facts.begin_wh is not None:
                meter_start = facts.begin_wh
                started_at = facts.begin_at or started_at
        return replace(
            tx,
            id_tag=id_tag[:20] or "UNKNOWN",
            started_at=started_at,
            requested_at=started_at or tx.requested_at,
            meter_start_wh=meter_start,
        )

    async def refresh_meter_info(self) -> None:
        try:
            self.meter_state.identity = await self.meter.identity()
            self.meter_state.public_key_hex = await self.meter.public_key()
            self.meter_state.live = await self.meter.live_values()
            self.meter_state.link_up = True
            self.meter_state.last_error = ""
        except MeterError as exc:
            self.meter_state.last_error = str(exc)
            log.warning("meter not readable", error=str(exc))

    async def close(self) -> None:
        """Stop taking work; let a meter stop in flight finish so its record is stored, then close the meter."""
        self._closing = True
        pending = [t for t in self._tasks if t.get_name().startswith("meter stop")]
        if pending:
            _, still = await asyncio.wait(pending, timeout=10)
            if still:
                log.warning("meter stop still running at shutdown; it is resumed at the next start")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.meter.close()

    async def idle(self) -> None:
        """Wait until no meter work is in flight (tests and the demo use it)."""
        while busy := [t for t in self._tasks if not t.get_name().startswith(("meter monitor", "store probe"))]:
            await asyncio.wait(busy)

    # ------------------------------------------------------------------ core plumbing

    def _apply(self, event: Event) -> Outcome:
        outcome = self.core.handle(event)
        if not outcome.accepted:
            log.info("request refused", request=type(event).__name__, reason=outcome.reason)
        for command in outcome.commands:
            self._execute(command)
        return outcome

    def _execute(self, command: Command) -> None:
        match command:
            case StartMeterTransaction(transaction=tx):
                self._spawn(self._start_on_meter(tx), f"meter start {tx.ref}")
            case StopMeterTransaction(transaction=tx):
                self._spawn(self._stop_on_meter(tx), f"meter stop {tx.ref}")
            case RecordTransactionStarted(transaction=tx):
                if not self._record(tx, self.store.transaction_started):
                    # Not charging unrecorded: end it on the meter (its record waits there until the store takes it).
                    asyncio.get_running_loop().call_soon(self.remote_stop, tx.ref, StopReason.OTHER)
                    return
                log.info("transaction started", tx_ref=tx.ref, meter_start_wh=tx.meter_start_wh)
                self._outbox_changed()
            case RecordTransactionEnded(transaction=tx) if tx.ref in self._orphans:
                self._orphans.discard(tx.ref)
                known = self._already_stored(tx)
                if known is not None:
                    # Killed after storing the record and before telling the meter: it is delivered (or queued)
                    # already. Only the release is left; recording it again would send it twice.
                    log.warning("the meter's record is already stored; releasing it", tx_ref=known)
                    self._spawn(self._release(tx.ref), f"meter release {tx.ref}")
                    return
                tx = self._orphan_from_record(tx)
                if not self._record(tx, self.store.transaction_recovered):
                    return
                log.info("transaction recovered from the meter", tx_ref=tx.ref, id_tag=tx.id_tag)
                self._outbox_changed()
                self._spawn(self._release(tx.ref), f"meter release {tx.ref}")
            case RecordTransactionEnded(transaction=tx):
                write = self.store.transaction_recovered if tx.ref in self._unrecorded else self.store.transaction_ended
                if not self._record(tx, write):
                    return  # no release: the meter keeps the signed record until the store has it
                log.info(
                    "transaction ended",
                    tx_ref=tx.ref,
                    meter_stop_wh=tx.meter_stop_wh,
                    verified=all(r.verified for r in tx.signed_records),
                )
                self._outbox_changed()
                self._spawn(self._release(tx.ref), f"meter release {tx.ref}")
                self._check_reset()
            case RecordTransactionAborted(transaction=tx, reason=reason):
                log.warning("transaction not started on the meter", tx_ref=tx.ref, reason=reason)
                self._check_reset()
            case ReportStatus():
                for listener in self.status_listeners:
                    listener(command)

    # ------------------------------------------------------------------ when the store cannot record

    def _record(self, tx: Transaction, write: Callable[..., None]) -> bool:
        """Write a transaction's state; on a store failure keep it for later and stop offering charging."""
        try:
            write(tx, offline=not self.csms_online())
        except StoreError as exc:
            self._unrecorded[tx.ref] = tx
            # After the current event's status reports have gone out, so that Faulted is the last word.
            asyncio.get_running_loop().call_soon(self._store_failed, exc)
            return False
        self._unrecorded.pop(tx.ref, None)
        return True

    def _check_store(self) -> None:
        """Before a start: a store that cannot write means no charging, rather than charging nobody can bill."""
        if not self.core.store_ok:
            return
        try:
            self.store.probe()
        except StoreError as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: StoreError) -> None:
        if not self.core.store_ok:
            return
        log.error("the store cannot record; charging is off until it can", error=str(exc))
        self._apply(StoreHealthChanged(False, str(exc)))
        self._spawn(self._probe_store(), "store probe")

    async def _probe_store(self) -> None:
        """Try again every few seconds; once the store writes, record what it missed and offer charging again."""
        while True:
            await asyncio.sleep(self.store_probe_interval)
            try:
                self.store.probe()
                for ref, tx in list(self._unrecorded.items()):
                    ended = tx.stopped_at is not None
                    if not ended:
                        self.store.transaction_started(tx, offline=not self.csms_online())
                    elif self.store.transaction(ref) is None:
                        self.store.transaction_recovered(tx, offline=not self.csms_online())
                    else:
                        self.store.transaction_ended(tx, offline=not self.csms_online())
                    del self._unrecorded[ref]
                    log.info("transaction recorded after the store came back", tx_ref=ref, ended=ended)
                    self._outbox_changed()
                    if ended:
                        self._spawn(self._release(ref), f"meter release {ref}")
            except StoreError:
                continue
            log.info("the store records again; charging is offered again")
            self._apply(StoreHealthChanged(True))
            return

    def _outbox_changed(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", task=task.get_name(), error=repr(task.exception()))

    # ------------------------------------------------------------------ meter work

    async def _start_on_meter(self, tx: Transaction) -> None:
        # The meter accepts a new transaction only once the previous record is acknowledged: let a release finish.
        releases = [t for t in self._tasks if t.get_name().startswith("meter release")]
        if releases:
            await asyncio.wait(releases)
        request = MeterTransactionRequest(tx.ref, tx.evse_id, tx.id_tag, self.station_id, tx.requested_at)
        try:
            started = await self.meter.start_transaction(request)
        except MeterError as exc:
            log.error("meter refused to start", tx_ref=tx.ref, error=str(exc))
            self._apply(MeterStartFailed(tx.ref, str(exc)))
            return
        self._apply(MeterStarted(tx.ref, started.meter_start_wh, self.clock(), started.begin_record))

    async def _stop_on_meter(self, tx: Transaction) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                ended = await self.meter.stop_transaction(tx.ref)
                break
            except MeterError as exc:
                delay = self._retry_delay(attempt)
                level = log.warning if isinstance(exc, MeterLinkError) else log.error
                level("meter stop failed; retrying", tx_ref=tx.ref, attempt=attempt, error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
        self._apply(MeterStopped(tx.ref, ended.meter_stop_wh, self.clock(), ended.records))

    def _retry_delay(self, attempt: int) -> float:
        """How long to wait before asking the meter again (a stop, a release): growing, at most 30 s."""
        return min(self.stop_retry_delay * attempt, 30.0)

    async def _release(self, tx_ref: str) -> None:
        """Tell the meter it may forget a record the store now holds. Retried until it works: a meter that keeps a
        signed record refuses the next transaction (the chaos soak found a station stuck that way)."""
        attempt = 0
        while True:
            try:
                await self.meter.release_record(tx_ref)
                return
            except MeterRefused as exc:
                log.warning("meter refused to release the record; it stays in the meter", tx_ref=tx_ref, error=str(exc))
                return
            except MeterError as exc:
                attempt += 1
                delay = self._retry_delay(attempt)
                log.warning("meter record not released yet; retrying", tx_ref=tx_ref, error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)

    def sampling_changed(self) -> None:
        """A sampling setting changed (the settings call this): the sampling loops look again at once."""
        for wakeup in self._sampling_wakeups:
            wakeup.set()

    async def _sampling_off(self, wakeup: asyncio.Event) -> None:
        """Sleep, without waking every second, until a sampling setting changes (or a minute has passed)."""
        wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), 60)

    async def _sample_periodic(self) -> None:
        """MeterValueSampleInterval / SampledDataCtrlr.TxUpdatedInterval: readings of each charging transaction."""
        wakeup = asyncio.Event()
        self._sampling_wakeups.append(wakeup)
        while True:
            interval = self.sample_interval()
            if interval <= 0:
                await self._sampling_off(wakeup)
                continue
            await asyncio.sleep(interval)
            if self.sample_interval() > 0:
                await self._queue_meter_values("Sample.Periodic", transactions_only=True)

    async def _sample_for_end(self) -> None:
        """SampledDataCtrlr.TxEndedInterval (2.0.1): readings of each charging transaction kept for its
        TransactionEvent(Ended), one per interval from the start (E06.FR.11), sent with nothing else."""
        wakeup = asyncio.Event()
        self._sampling_wakeups.append(wakeup)
        while True:
            interval = self.ended_interval()
            if interval <= 0:
                await self._sampling_off(wakeup)
                continue
            await asyncio.sleep(interval)
            if self.ended_interval() <= 0 or not self._sample_targets(transactions_only=True):
                continue
            try:
                live = await self.meter.live_values()
            except MeterError as exc:
                log.warning("reading for the end message not read", error=str(exc))
                continue
            self.meter_state.live = live
            for connector_id, ref in self._sample_targets(transactions_only=True):
                if ref is not None:
                    self.store.add_sample(
                        ref, "ended", {**self._reading(live, "Sample.Periodic"), "connector_id": connector_id}
                    )

    async def _sample_aligned(self) -> None:
        """ClockAlignedDataInterval / AlignedDataCtrlr.Interval: readings at whole multiples of the interval after
        midnight UTC, with or without a transaction."""
        wakeup = asyncio.Event()
        self._sampling_wakeups.append(wakeup)
        while True:
            interval = self.aligned_interval()
            if interval <= 0:
                await self._sampling_off(wakeup)
                continue
            now = self.clock()
            since_midnight = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
            await asyncio.sleep(interval - since_midnight % interval)
            if self.aligned_interval() > 0:
                await self._queue_meter_values("Sample.Clock", transactions_only=False)

    def _sample_targets(self, transactions_only: bool) -> list[tuple[int, str | None]]:
        """(connector id, ref of its charging transaction or None) of each connector a reading is queued for."""
        targets: list[tuple[int, str | None]] = []
        for connector in self.core.connectors.values():
            tx = connector.transaction
            # Only while charging: once the stop is asked for, the meter's signed end reading is the last word (a
            # reading taken meanwhile would follow the CSMS's refusal of the transaction, 1.6 §9.1.24).
            charging = tx is not None and connector.phase is Phase.CHARGING
            if charging or not transactions_only:
                targets.append((connector.id, tx.ref if charging and tx is not None else None))
        return targets

    async def _queue_meter_values(self, context: str, *, transactions_only: bool) -> None:
        if not self._sample_targets(transactions_only):
            return  # no meter read for a transaction that is not there
        try:
            live = await self.meter.live_values()
        except MeterError as exc:
            log.warning("meter values not read", context=context, error=str(exc))
            return
        self.meter_state.live = live
        body = self._reading(live, context)
        if context == "Sample.Clock" and self.sign_aligned():
            # Signed aligned data: the meter's own latest signed reading, where it makes them (smart-me: 15 min).
            try:
                fiscal = await self.meter.fiscal_reading()
            except MeterError as exc:
                log.warning("signed reading not read", error=str(exc))
                fiscal = None
            if fiscal is not None:
                body["signed"] = fiscal.data
        # Asked again after the reads: a transaction may have ended meanwhile, and its readings must not follow its end.
        # Periodic readings of a transaction are also kept for its StopTransaction (1.6 StopTxnSampledData, §9.1.27:
        # "every MeterValueSampleInterval seconds from the start"), in the same commit.
        sample = "periodic" if context == "Sample.Periodic" else None
        for connector_id, ref in self._sample_targets(transactions_only):
            self.store.enqueue(
                "meter_values",
                ref,
                {**body, "connector_id": connector_id},
                offline=not self.csms_online(),
                sample=sample if ref is not None else None,
            )
        self._outbox_changed()

    def _reading(self, live: LiveValues, context: str) -> dict[str, Any]:
        """A reading as the outbox and the samples keep it: every value the meter gives, whatever is configured (the
        adapter picks the configured measurands when it builds the message)."""
        return {
            "context": context,
            "at": self.clock().isoformat(),
            "energy_wh": live.energy_import_wh,
            "export_wh": live.energy_export_wh,
            "power_w": live.power_w,
            "voltage_v": list(live.voltage_v),
            "current_a": list(live.current_a),
        }

    async def _monitor_meter(self) -> None:
        """Live readings for diagnostics, and the link check: every `monitor_interval` while charging, three times
        less often while idle (idle CPU, bench: idle_cpu_s_per_h)."""
        while True:
            charging = bool(self.core.running_transactions())
            await asyncio.sleep(self.monitor_interval if charging else 3 * self.monitor_interval)
            try:
                self.meter_state.live = await self.meter.live_values()
            except MeterError as exc:
                self.meter_state.last_error = str(exc)

    def _on_link_change(self, up: bool, reason: str) -> None:
        self.meter_state.link_up = up
        if not up:
            self.meter_state.last_error = reason
        if self.core.meter_link_up != up:
            self._apply(MeterLinkChanged(up, reason))
