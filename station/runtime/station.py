"""Carries out the core's decisions: feeds it events, runs its meter commands, writes its records to the store.

The runtime is the only caller of `ChargingStation.handle()`, so the core's state changes in one place, always on the
event loop thread. OCPP handlers call `remote_start` / `remote_stop`, which decide synchronously and never await a
meter: the meter work runs in tasks (owned by the `Supervisor`) that feed their result back as events. Each EVSE has
its own `MeterWorker`; status changes go to whoever listens (the OCPP connection); transaction messages go to the
store's outbox. Sampling (`Sampler`), recovery of what a previous run left (`Recovery`) and the store's health
(`StoreGuard`) have homes of their own beside this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from station.auth import Authorizer
from station.core.model import (
    AllowPower,
    AvailabilityChanged,
    Command,
    ConnectionTimedOut,
    CurrentLimitChanged,
    Event,
    EvFaultChanged,
    EvLockChanged,
    EvPilotChanged,
    EvRelayChanged,
    LockConnector,
    LockState,
    MeterLinkChanged,
    MeterStarted,
    MeterStartFailed,
    MeterStopped,
    OfferCurrent,
    Outcome,
    Phase,
    RecordChargingState,
    RecordReservation,
    RecordReservationEnded,
    RecordTransactionAborted,
    RecordTransactionEnded,
    RecordTransactionStarted,
    ReportStatus,
    Reservation,
    ReservationCancelled,
    ReservationExpired,
    ReserveRequested,
    StartMeterTransaction,
    StartRequested,
    StartSource,
    StationAccepted,
    StopMeterTransaction,
    StopReason,
    StopRequested,
    StoreHealthChanged,
    Transaction,
    WatchConnection,
    WatchReservation,
)
from station.core.station import ChargingStation, InvalidTransition
from station.ev.interface import (
    ControllerError,
    ControllerEvent,
    ControllerState,
    FaultChanged,
    LockChanged,
    PilotChanged,
    RelayChanged,
)
from station.meter.interface import MeterError, MeterState, MeterTransactionRequest
from station.runtime.cards import CardDesk, Desk
from station.runtime.controller_worker import ControllerWorker
from station.runtime.meter_worker import MeterWorker
from station.runtime.policy import Fixed, RuntimePolicy
from station.runtime.presence import CsmsPresence
from station.runtime.recovery import Recovery
from station.runtime.sampling import Sampler
from station.runtime.smart_charging import EvseShape, SmartCharging
from station.runtime.store_guard import StoreGuard
from station.runtime.supervisor import Supervisor, Work
from station.smart.book import Refusal
from station.smart.profiles import ChargingProfile
from station.store import Store, StoreError

log = structlog.get_logger("station.runtime")

ASK_AFTER_FAILED_START = 6  # times the meter is asked whether a failed start left it running (about 15 s)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class StationRuntime:
    def __init__(
        self,
        core: ChargingStation,
        store: Store,
        meters: Mapping[int, MeterWorker],
        *,
        station_id: str,
        controllers: Mapping[int, ControllerWorker] | None = None,
        card_readers: list[Desk] | None = None,
        policy: RuntimePolicy | None = None,
        authorizer: Authorizer | None = None,
        clock: Clock = utc_now,
        store_probe_interval: float = 5.0,
        charging_shapes: Mapping[int, EvseShape] | None = None,
        nominal_voltage: float = 230.0,
    ) -> None:
        if set(meters) != set(core.evses):
            raise ValueError(f"one meter per EVSE: EVSEs {sorted(core.evses)}, meters {sorted(meters)}")
        self.core = core
        self.store = store
        self.meters = dict(meters)
        self.controllers = dict(controllers or {})  # EVSEs whose charge controller the station talks to
        self.station_id = station_id
        self.policy = policy or Fixed()
        self.authorizer = authorizer
        self.clock = clock
        self.csms = CsmsPresence()
        self.supervisor = Supervisor()
        self.recovery = Recovery(store)
        self.store_guard = StoreGuard(
            store,
            self.supervisor,
            self.csms,
            on_health=self._store_health,
            on_recorded_late=self._release,
            probe_interval=store_probe_interval,
        )
        self.sampler = Sampler(core, store, self.meters, self.policy, self.csms, clock)
        self.cards = CardDesk(card_readers or [], self.present_card, self.supervisor)
        # What smart charging knows of each EVSE (station/app.py charging_shapes, from the config and the
        # controllers); without it no EVSE can limit the car.
        shapes = dict(charging_shapes or {evse_id: EvseShape(controllable=False) for evse_id in core.evses})
        self.smart = SmartCharging(
            core,
            store,
            shapes,
            nominal_voltage=nominal_voltage,
            clock=clock,
            on_limit=self._limit_changed,
        )
        self.status_listeners: list[Callable[[ReportStatus], None]] = []
        self.pending_remote_stops: set[str] = set()  # 1.6: stops for a transactionId whose StartTransaction.conf is due
        self._closing = False
        self.reset_requested = asyncio.Event()  # app.run_daemon restarts the process once the station is idle
        self._reset_when_idle = False  # a Reset waits for the running transactions to end
        self._changed = asyncio.Event()  # set after every event the core took (until())
        self.identified = asyncio.Event()  # start(): every meter said who it is (or could not)
        self.ready = asyncio.Event()  # start() is done: transactions restored, statuses true

    def _limit_changed(self, evse_id: int, amps: float | None) -> None:
        """Smart charging's new limit for an EVSE. During a transaction a change beyond LimitChangeSignificance that
        is not already a change of the charging state is told to the CSMS (2.0.1 TriggerReasonEnumType
        ChargingRateChanged: "rate of charging changed by more than LimitChangeSignificance"; 1.6 has no message)."""
        evse = self.core.evses[evse_id]
        shape = self.smart.evses[evse_id]
        before = shape.max_current_a if evse.ev.limit_a is None else evse.ev.limit_a
        outcome = self._apply(CurrentLimitChanged(evse_id, amps))
        after = shape.max_current_a if amps is None else amps
        tx = evse.transaction
        if not outcome.accepted or tx is None or evse.phase is not Phase.CHARGING or not evse.ev.charging_state:
            return
        if any(isinstance(c, RecordChargingState) for c in outcome.commands):
            return  # the car paused or resumed: that message says it
        if abs(after - before) * 100 <= self.policy.limit_change_significance() * max(before, 1e-9):
            return
        self._execute(RecordChargingState(tx, evse.ev.charging_state, "ChargingRateChanged"))

    # ------------------------------------------------------------------ what the others read

    def meter_state(self, evse_id: int) -> MeterState:
        return self.meters[evse_id].state

    def controller_state(self, evse_id: int) -> ControllerState | None:
        worker = self.controllers.get(evse_id)
        return None if worker is None else worker.state

    def meter_key(self, evse_id: int) -> str:
        """The public key of an EVSE's meter as last read ("" while unknown)."""
        worker = self.meters.get(evse_id)
        return worker.state.public_key_hex if worker is not None else ""

    # ------------------------------------------------------------------ the OCPP side asks

    def remote_start(
        self, evse_id: int | None, id_tag: str, remote_start_id: int | None = None, connector_id: int = 1
    ) -> Outcome:
        """Decide at once whether a remote start is accepted; the meter work follows in a task. Without an EVSE the
        first available one is taken."""
        return self._start(evse_id, connector_id, id_tag, StartSource.REMOTE, remote_start_id)

    def remote_start_with_profile(
        self,
        evse_id: int | None,
        id_tag: str,
        profile: ChargingProfile,
        *,
        ocpp16: bool,
        remote_start_id: int | None = None,
        connector_id: int = 1,
    ) -> tuple[Outcome, Refusal | None]:
        """A remote start with a chargingProfile (1.6 §5.11, K05): the profile is checked as the TxProfile of the
        transaction about to start (a bad one refuses the start, K05.FR.05) and installed once it has. Where no EVSE
        can control the current the profile is ignored (K05.FR.04)."""
        if not self.smart.available:
            return self.remote_start(evse_id, id_tag, remote_start_id, connector_id), None
        if evse_id is None:
            free = self.core.first_available()
            if free is None:
                return Outcome(False, reason="no EVSE is available"), None
            evse_id, connector_id = free
        checked = self.smart.check_for_start(profile, evse_id, ocpp16=ocpp16)
        if isinstance(checked, Refusal):
            return Outcome(False, reason=checked.text), checked
        outcome = self.remote_start(evse_id, id_tag, remote_start_id, connector_id)
        if outcome.accepted and outcome.transaction is not None:
            self.smart.attach(checked, outcome.transaction.ref, ocpp16=ocpp16)
        return outcome, None

    async def local_start(self, evse_id: int | None, id_tag: str, connector_id: int = 1) -> Outcome:
        """A start from an identifier presented at the station (a card reader driver calls this): authorized by the
        CSMS when reachable, else by the local list or cache (LocalAuthorizeOffline)."""
        if self._closing:
            return Outcome(False, reason="the station is shutting down")
        if self.authorizer is None:
            return Outcome(False, reason="no authorization available")
        allowed, why = await self.authorizer.authorize(id_tag)
        log.info("local start authorization", evse_id=evse_id, allowed=allowed, why=why)
        if not allowed:
            return Outcome(False, reason=why)
        identification = ("ISO14443", self.authorizer.identification_flags(id_tag, why))  # a card at the station
        return self._start(evse_id, connector_id, id_tag, StartSource.LOCAL, None, identification)

    async def present_card(self, id_tag: str, evse_ids: tuple[int, ...] | None = None) -> Outcome:
        """A card at a reader for `evse_ids` (None: every EVSE, OCPP's one reader for several connectors). The card
        that started a running transaction there, or one with the same parentIdTag / groupIdToken, stops it (reason
        Local; 1.6 §3.4, 2.0.1 C01 / E07); else it starts one where a car waits (cable first), or on the first
        available EVSE (authorize first)."""
        running = [t for t in self.core.running_transactions() if evse_ids is None or t.evse_id in evse_ids]
        for tx in running:
            if tx.id_tag == id_tag:
                log.info("card stops its transaction", evse_id=tx.evse_id, tx_ref=tx.ref)
                return self.remote_stop(tx.ref, StopReason.LOCAL)
        if self.authorizer is not None and running:
            parent = self.authorizer.parent_of(id_tag)
            for tx in running:
                if parent is not None and parent == self.authorizer.parent_of(tx.id_tag):
                    log.info("card of the same group stops the transaction", evse_id=tx.evse_id, tx_ref=tx.ref)
                    return self.remote_stop(tx.ref, StopReason.LOCAL)
        waiting = self.core.waiting_for_card(evse_ids)
        reserved = self.core.reserved_for(id_tag, self._group_of(id_tag), evse_ids)  # H03: to its reserved EVSE
        if reserved is not None and waiting is None:
            waiting = reserved
        target = (waiting, 1) if waiting is not None else self.core.first_available(evse_ids)
        if target is None:
            return Outcome(False, reason="no EVSE for this card: all are busy, faulted or unavailable")
        return await self.local_start(target[0], id_tag, connector_id=target[1])

    def _start(
        self,
        evse_id: int | None,
        connector_id: int,
        id_tag: str,
        source: StartSource,
        remote_start_id: int | None,
        identification: tuple[str, tuple[str, ...]] = ("CENTRAL", ("OCPP_RS",)),  # the CSMS's remote start
    ) -> Outcome:
        if self._closing:
            return Outcome(False, reason="the station is shutting down")
        group_id = self._group_of(id_tag)
        if evse_id is None:
            reserved = self.core.reserved_for(id_tag, group_id)
            free = (reserved, 1) if reserved is not None else self.core.first_available()
            if free is None:
                return Outcome(False, reason="no EVSE is available")
            evse_id, connector_id = free
        self.store_guard.check()
        event = StartRequested(
            evse_id,
            id_tag,
            self.clock(),
            uuid.uuid4().hex,
            source,
            remote_start_id,
            connector_id=connector_id,
            start_on_authorization=self.policy.start_on_authorization(),
            stop_when_energy_stops=self.policy.stop_when_energy_stops(),
            identification=identification,
            group_id=group_id,
        )
        return self._apply(event)

    # ---- reservations (1.6 §5.13, §5.1; 2.0.1 H01-H04)

    def _group_of(self, id_tag: str) -> str | None:
        """The parentIdTag / groupIdToken the local list or cache knows (1.6 §5.13 "MAY look it up", H03.FR.07)."""
        return None if self.authorizer is None else self.authorizer.parent_of(id_tag)

    def reserve(self, reservation: Reservation) -> Outcome:
        """ReserveNow: the Outcome's `answer` is the ReservationStatus (Accepted, Occupied, Faulted, Unavailable,
        Rejected); an accepted one is stored and watched until its expiry."""
        if self._closing:
            return Outcome(False, reason="the station is shutting down", answer="Rejected")
        return self._apply(ReserveRequested(reservation, self.clock()))

    def cancel_reservation(self, reservation_id: int) -> Outcome:
        """CancelReservation: answer Accepted, or Rejected when no reservation has this id."""
        return self._apply(ReservationCancelled(reservation_id))

    async def _watch_reservation(self, reservation: Reservation) -> None:
        left = (reservation.expires_at - self.clock()).total_seconds()
        await asyncio.sleep(max(0.0, left))
        self._apply(ReservationExpired(reservation.id, reservation.expires_at))

    def _record_reservation(self, command: RecordReservation | RecordReservationEnded) -> None:
        try:
            if isinstance(command, RecordReservation):
                self.store.save_reservation(command.reservation)
                log.info("reservation held", reservation_id=command.reservation.id, evse_id=command.reservation.evse_id)
                return
            tell = command.status if command.status in ("Expired", "Removed") else None  # H04.FR.01, H01.FR.16/17
            self.store.reservation_ended(command.reservation.id, tell, offline=not self.csms.online)
        except StoreError as exc:
            log.warning("reservation not stored", reservation_id=command.reservation.id, error=str(exc))
            return
        log.info("reservation ended", reservation_id=command.reservation.id, status=command.status)
        if tell is not None:
            self.csms.outbox_changed()

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
        if not self.policy.stop_on_invalid_id():
            return None
        return self.remote_stop(tx_ref, StopReason.DE_AUTHORIZED)

    async def unlock(self, evse_id: int, connector_id: int = 1, *, end_transaction: bool, timeout: float = 5.0) -> str:
        """UnlockConnector (1.6 §5.18, 2.0.1 F05): "NotSupported" without a lock (a fixed cable); a running
        transaction there is ended first (1.6: reason UnlockCommand) or, when `end_transaction` is False (2.0.1
        F05.FR.02), refused with "OngoingAuthorizedTransaction"; then "Unlocked" once the lock reports it, or
        "UnlockFailed"."""
        evse = self.core.evses.get(evse_id)
        worker = self.controllers.get(evse_id)
        if evse is None or connector_id not in evse.connectors:
            return "UnknownConnector"
        if worker is None or not evse.ev.has_lock:
            return "NotSupported"
        tx = evse.transaction
        if tx is not None:
            if not end_transaction:
                return "OngoingAuthorizedTransaction"
            self.remote_stop(tx.ref, StopReason.UNLOCK_COMMAND)
            with contextlib.suppress(TimeoutError):
                await self.until(lambda: self.core.transaction_on(evse_id) is None, timeout)
            if self.core.transaction_on(evse_id) is not None:
                return "UnlockFailed"
        try:
            await asyncio.wait_for(worker.controller.lock(False), timeout)
        except (ControllerError, TimeoutError) as exc:
            log.warning("unlock failed", evse_id=evse_id, error=str(exc))
            return "UnlockFailed"
        with contextlib.suppress(TimeoutError):
            await self.until(lambda: worker.state.lock is not LockState.LOCKED, timeout)
        return "Unlocked" if worker.state.lock is LockState.UNLOCKED else "UnlockFailed"

    async def until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Until `condition()` holds after some event (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def queue_triggered_reading(self, evse_id: int) -> bool:
        return self.sampler.queue_triggered(evse_id)

    def change_availability(self, evse_id: int, operative: bool, connector_id: int = 0) -> Outcome:
        """Make the station (EVSE 0), an EVSE (connector 0: all of it) or one connector operative or not; kept in the
        store so it survives a restart."""
        outcome = self._apply(AvailabilityChanged(evse_id, operative, connector_id))
        if outcome.accepted:
            value = "Operative" if operative else "Inoperative"
            changed = [
                (evse.id, cid, value)
                for evse in self.core.evses.values()
                if evse_id in (0, evse.id)
                for cid in evse.connectors
                if connector_id in (0, cid)
            ]
            self.store.set_availabilities(changed)  # one commit
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

    def sampling_changed(self) -> None:
        """A sampling setting changed (the settings call this): the sampling loops look again at once."""
        self.sampler.changed()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the meters, learn who they are, and pick up whatever a previous run left open. `identified` is set
        once each meter has said who it is (what a BootNotification carries: the CSMS connection dials and boots
        meanwhile), `ready` at the end (statuses, CSMS requests and starts wait for it)."""
        try:
            await asyncio.gather(*(worker.open(self._on_link_change) for worker in self.meters.values()))
        finally:
            self.identified.set()  # also when a meter did not answer: the boot then goes without its serial
        await asyncio.gather(*(worker.learn_key() for worker in self.meters.values()))
        for controller in self.controllers.values():
            await controller.open(self._on_controller_event)
            self.supervisor.keep_running(controller.run, f"controller commands EVSE {controller.evse_id}")
        if self.store.setting("accepted_once") == "1":
            # Accepted in an earlier run: the station may charge while the CSMS is unreachable (offline start).
            self.core.accepted_by_csms = True
        for evse in self.core.evses.values():
            for cid in evse.connectors:
                if self.store.availability(evse.id, cid) == "Inoperative":
                    self._apply(AvailabilityChanged(evse.id, False, cid))
        for command in self.core.restore_reservations(self.store.reservations(), self.clock()):
            self._execute(command)  # ---- reservations: kept across restarts, expired ones end
        left_open = self.recovery.left_open()
        busy = {tx.evse_id for tx in left_open}
        for evse_id, worker in self.meters.items():
            if evse_id not in busy and await worker.transaction_running():
                self._restore(self.recovery.orphan(evse_id, self.clock()))
        for tx in left_open:
            self._restore(tx)
        self.smart.purge_ended()  # TxProfiles of transactions that ended while the daemon was down
        self.smart.refresh()  # the profiles kept in the store apply again, before any car draws
        self.supervisor.keep_running(self.smart.run, "smart charging limits")
        for evse_id in self.meters:
            self.supervisor.keep_running(self._monitor(evse_id), f"meter monitor EVSE {evse_id}")
        self.sampler.start(self.supervisor)
        self.cards.start()
        self.ready.set()

    def _monitor(self, evse_id: int) -> Callable[[], Coroutine[Any, Any, None]]:
        worker = self.meters[evse_id]
        return lambda: worker.monitor(lambda: self.core.transaction_on(evse_id) is not None)

    def _store_health(self, ok: bool, reason: str) -> None:
        self._apply(StoreHealthChanged(ok, reason))

    def _restore(self, tx: Transaction) -> None:
        for command in self.core.restore(tx):
            self._execute(command)

    async def close(self) -> None:
        """Stop taking work; let a meter stop in flight finish so its record is stored, then close the meters."""
        self._closing = True
        await self.supervisor.close()
        for controller in self.controllers.values():
            await controller.close()
        for worker in self.meters.values():
            try:
                await worker.close()
            except MeterError as exc:
                log.warning("meter did not close cleanly", evse_id=worker.evse_id, error=str(exc))

    async def idle(self) -> None:
        """Wait until no meter work is in flight (tests and the demo use it)."""
        await self.supervisor.idle()

    # ------------------------------------------------------------------ core plumbing

    def _apply(self, event: Event) -> Outcome:
        outcome = self.core.handle(event)
        self._changed.set()
        if not outcome.accepted:
            log.info("request refused", request=type(event).__name__, reason=outcome.reason)
        for command in outcome.commands:
            self._execute(command)
        self.smart.transactions_changed()  # TxProfiles end with their transaction; the maximum is shared again
        return outcome

    def _execute(self, command: Command) -> None:
        match command:
            case StartMeterTransaction(evse_id=evse_id, transaction=tx):
                self.supervisor.spawn(self._start_on_meter(evse_id, tx), Work.METER_START, f"meter start {tx.ref}")
            case StopMeterTransaction(evse_id=evse_id, transaction=tx):
                self.supervisor.spawn(self._stop_on_meter(evse_id, tx), Work.METER_STOP, f"meter stop {tx.ref}")
            case RecordTransactionStarted(transaction=tx):
                if not self.store_guard.record(tx, self.store.transaction_started):
                    # Not charging unrecorded: end it on the meter (its record waits there until the store takes it).
                    asyncio.get_running_loop().call_soon(self.remote_stop, tx.ref, StopReason.OTHER)
                    return
                log.info("transaction started", tx_ref=tx.ref, evse_id=tx.evse_id, meter_start_wh=tx.meter_start_wh)
                self.csms.outbox_changed()
            case RecordTransactionEnded(transaction=tx) if tx.ref in self.recovery.orphans:
                self.recovery.orphans.discard(tx.ref)
                known = self.recovery.already_stored(tx)
                if known is not None:
                    # Killed after storing the record and before telling the meter: it is delivered (or queued)
                    # already. Only the release is left; recording it again would send it twice.
                    log.warning("the meter's record is already stored; releasing it", tx_ref=known)
                    self._release(tx)
                    return
                tx = self.recovery.from_record(tx)
                if not self.store_guard.record(tx, self.store.transaction_recovered):
                    return
                log.info("transaction recovered from the meter", tx_ref=tx.ref, evse_id=tx.evse_id, id_tag=tx.id_tag)
                self.csms.outbox_changed()
                self._release(tx)
            case RecordTransactionEnded(transaction=tx):
                unrecorded = tx.ref in self.store_guard.unrecorded
                write = self.store.transaction_recovered if unrecorded else self.store.transaction_ended
                if not self.store_guard.record(tx, write):
                    return  # no release: the meter keeps the signed record until the store has it
                log.info(
                    "transaction ended",
                    tx_ref=tx.ref,
                    evse_id=tx.evse_id,
                    meter_stop_wh=tx.meter_stop_wh,
                    verified=all(r.verified for r in tx.signed_records),
                )
                self.csms.outbox_changed()
                self._release(tx)
                self._check_reset()
            case RecordTransactionAborted(transaction=tx, reason=reason):
                log.warning("transaction not started on the meter", tx_ref=tx.ref, evse_id=tx.evse_id, reason=reason)
                try:
                    self.store.forget_id_token(tx.ref)
                except StoreError as exc:
                    log.warning("identifier of a dropped start not forgotten", tx_ref=tx.ref, error=str(exc))
                self._check_reset()
            case ReportStatus():
                for listener in self.status_listeners:
                    listener(command)
            case AllowPower(evse_id=evse_id) | LockConnector(evse_id=evse_id) | OfferCurrent(evse_id=evse_id):
                if evse_id in self.controllers:
                    self.controllers[evse_id].command(command)
            case RecordReservation() | RecordReservationEnded():
                self._record_reservation(command)
            case WatchReservation(reservation=reservation):
                name = f"reservation {reservation.id} expiry"
                self.supervisor.spawn(self._watch_reservation(reservation), Work.TIMER, name)
            case WatchConnection(evse_id=evse_id, token=token):
                self.supervisor.spawn(self._watch(evse_id, token), Work.TIMER, f"connection timeout {token}")
            case RecordChargingState(transaction=tx, state=state, trigger=trigger):
                body = {"state": state, "trigger": trigger, "at": self.clock().isoformat(), "evse_id": tx.evse_id}
                try:
                    self.store.enqueue("charging_state", tx.ref, body, offline=not self.csms.online)
                except StoreError as exc:
                    log.warning("charging state not recorded", tx_ref=tx.ref, error=str(exc))
                    return
                self.csms.outbox_changed()

    def _release(self, tx: Transaction) -> None:
        worker = self.meters[tx.evse_id]
        self.supervisor.spawn(worker.release(tx.ref), Work.METER_RELEASE, f"meter release {tx.ref}")

    # ------------------------------------------------------------------ meter work

    async def _start_on_meter(self, evse_id: int, tx: Transaction) -> None:
        worker = self.meters[evse_id]
        it, flags = tx.identification
        request = MeterTransactionRequest(tx.ref, evse_id, tx.id_tag, self.station_id, tx.requested_at, it, flags)
        try:
            started = await worker.start(request)
        except MeterError as exc:
            log.error("meter refused to start", tx_ref=tx.ref, evse_id=evse_id, error=str(exc))
            self._apply(MeterStartFailed(tx.ref, str(exc)))
            await self._end_left_running(evse_id)
            return
        self._apply(MeterStarted(tx.ref, started.meter_start_wh, self.clock(), started.begin_record, worker.stamp()))

    async def _end_left_running(self, evse_id: int) -> None:
        """A start that failed after the meter began (its answer, or a later read, lost) leaves the meter running a
        transaction nobody owns, and the meter refuses every later start: the EVSE would be out of service. It is
        ended as one found at start-up is (Recovery.orphan), and its signed record delivered."""
        running = await self.meters[evse_id].transaction_running(attempts=ASK_AFTER_FAILED_START)
        if running and self.core.transaction_on(evse_id) is None:
            self._restore(self.recovery.orphan(evse_id, self.clock(), StopReason.OTHER))

    async def _stop_on_meter(self, evse_id: int, tx: Transaction) -> None:
        worker = self.meters[evse_id]
        ended = await worker.stop(tx.ref)
        # The meter that signed the end: a recovered transaction learns it here, in the same commit as its record.
        self._apply(MeterStopped(tx.ref, ended.meter_stop_wh, self.clock(), ended.records, worker.stamp()))

    async def _watch(self, evse_id: int, token: str) -> None:
        """ConnectionTimeOut: when it runs out the core decides whether the watch still matters."""
        await asyncio.sleep(max(0, self.policy.connection_timeout()))
        self._apply(ConnectionTimedOut(evse_id, token))

    def _on_controller_event(self, evse_id: int, event: ControllerEvent) -> None:
        """What the car and the controller did, as core events (with what the settings say about an unplug)."""
        match event:
            case PilotChanged(pilot=pilot):
                policy = self.policy
                core_event: Event = EvPilotChanged(
                    evse_id, pilot, policy.stop_on_ev_disconnect(), policy.unlock_on_ev_disconnect()
                )
            case RelayChanged(closed=closed):
                core_event = EvRelayChanged(evse_id, closed)
            case LockChanged(state=state):
                core_event = EvLockChanged(evse_id, state)
            case FaultChanged(fault=fault, active=active, detail=detail):
                log.warning("charge controller fault", evse_id=evse_id, fault=fault.value, active=active, detail=detail)
                core_event = EvFaultChanged(evse_id, fault, active, detail)
            case _:
                return  # ampacity: kept in the controller's state for diagnostics
        try:
            self._apply(core_event)
        except InvalidTransition as exc:
            log.warning("controller event not possible now", evse_id=evse_id, error=str(exc))

    def _on_link_change(self, evse_id: int, up: bool, reason: str) -> None:
        if self.core.evses[evse_id].meter_link_up != up:
            self._apply(MeterLinkChanged(evse_id, up, reason))
