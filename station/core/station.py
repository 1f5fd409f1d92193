"""The charging station's state machine: its EVSEs, their connectors and transactions, and every allowed transition.

The EVSE is the unit: it has the fiscal meter, so it has the phase, the running transaction (at most one, on one of
its connectors) and the meter's health; one silent meter faults only its own EVSE. Connectors carry availability and
what the CSMS was last told. This module owns that live state. It is a plain object: no I/O,
no asyncio, no clock reads (every event carries its time). The phase transitions are one table, `TRANSITIONS`, that
can be printed as a diagram; an event that is impossible in the current phase raises `InvalidTransition` instead of
being ignored. Adapters feed events in with `handle()` and carry out the commands of the `Outcome` in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from station.core.model import (
    AllowPower,
    AvailabilityChanged,
    Command,
    ConnectionTimedOut,
    ConnectorStatus,
    CurrentLimitChanged,
    Event,
    EvFaultChanged,
    EvLockChanged,
    EvPilotChanged,
    EvRelayChanged,
    Fault,
    Layout,
    LockConnector,
    LockState,
    MeterLinkChanged,
    MeterStarted,
    MeterStartFailed,
    MeterStopped,
    OfferCurrent,
    Outcome,
    Phase,
    Pilot,
    RecordChargingState,
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
    StationAccepted,
    StopMeterTransaction,
    StopReason,
    StopRequested,
    StoreHealthChanged,
    Transaction,
    UnlockRequested,
    WatchConnection,
)
from station.core.reservations import Reservations

# (phase, event type) -> the phases it may lead to. Anything not listed is impossible and raises InvalidTransition.
# Events about the car (pilot, relay, lock, faults) are taken in every phase; these are the ones that move a phase.
TRANSITIONS: dict[tuple[Phase, type], tuple[Phase, ...]] = {
    (Phase.AVAILABLE, StartRequested): (Phase.STARTING, Phase.WAITING),  # WAITING: no car plugged in yet
    (Phase.WAITING, EvPilotChanged): (Phase.STARTING,),  # the car is plugged in: the meter starts
    (Phase.WAITING, ConnectionTimedOut): (Phase.AVAILABLE,),  # no car within ConnectionTimeOut: start dropped
    (Phase.WAITING, StopRequested): (Phase.AVAILABLE,),
    (Phase.WAITING, EvFaultChanged): (Phase.AVAILABLE,),
    (Phase.STARTING, MeterStarted): (Phase.CHARGING,),
    (Phase.STARTING, MeterStartFailed): (Phase.AVAILABLE,),
    (Phase.CHARGING, StopRequested): (Phase.OPENING, Phase.STOPPING),  # OPENING: the relay opens first
    (Phase.OPENING, EvRelayChanged): (Phase.STOPPING,),  # the relay reports open: now the meter ends
    (Phase.OPENING, EvFaultChanged): (Phase.STOPPING,),  # a welded relay cannot open: end the meter anyway
    (Phase.STOPPING, MeterStopped): (Phase.AVAILABLE,),
}

PHASE_STATUS: dict[Phase, ConnectorStatus] = {
    Phase.AVAILABLE: ConnectorStatus.AVAILABLE,
    Phase.WAITING: ConnectorStatus.PREPARING,
    Phase.STARTING: ConnectorStatus.PREPARING,
    Phase.CHARGING: ConnectorStatus.CHARGING,
    Phase.OPENING: ConnectorStatus.FINISHING,
    Phase.STOPPING: ConnectorStatus.FINISHING,
}

# A controller fault -> the 1.6 ChargePointErrorCode (§7.6) it is reported with (2.0.1: NotifyEvent's techCode).
FAULT_CODES: dict[Fault, str] = {
    Fault.RCD: "GroundFailure",
    Fault.NO_GROUND: "GroundFailure",
    Fault.DIODE: "EVCommunicationError",
    Fault.OVERCURRENT: "OverCurrentFailure",
    Fault.OVERTEMPERATURE: "HighTemperature",
    Fault.RELAY_WELDED: "OtherError",
    Fault.LOCK_FAILURE: "ConnectorLockFailure",
    Fault.CONTROLLER_SILENT: "InternalError",
}

# A controller fault during a transaction -> why the transaction ends.
FAULT_STOP: dict[Fault, StopReason] = {
    Fault.RCD: StopReason.GROUND_FAULT,
    Fault.NO_GROUND: StopReason.GROUND_FAULT,
    Fault.OVERCURRENT: StopReason.OVERCURRENT_FAULT,
}


class InvalidTransition(Exception):
    """An event arrived that the EVSE's current phase does not allow."""

    def __init__(self, evse_id: int, phase: Phase, event: object, detail: str = "") -> None:
        self.evse_id = evse_id
        self.phase = phase
        self.event = event
        name = type(event).__name__
        super().__init__(
            f"EVSE {evse_id}: {name} is not possible while {phase.value}" + (f" ({detail})" if detail else "")
        )


@dataclass
class Connector:
    id: int  # within its EVSE
    operative: bool = True
    scheduled_operative: bool | None = None  # an availability change waiting for the EVSE's transaction to end
    reported: ConnectorStatus | None = None


@dataclass
class EvSide:
    """What the EVSE's charge controller reported about the car, and what was commanded. An EVSE that does not see
    the plug (the meter's digital output switches the controller) has `senses_plug` False and behaves as a station
    without a car view: no Preparing, no relay commands."""

    senses_plug: bool = False
    has_lock: bool = False
    pilot: Pilot = Pilot.A
    relay_closed: bool = False
    power_on: bool = False  # what was last commanded (AllowPower)
    lock: LockState = LockState.NONE
    faults: dict[Fault, str] = field(default_factory=dict)
    needs_unplug: bool = False  # a transaction ended with the cable in: Finishing until it is removed
    plug_token: str = ""  # the watch of a plug-in not (yet) authorized
    plug_timed_out: bool = False  # that watch ran out: Available again although the cable is in
    plugs: int = 0  # plug-ins so far (watch tokens)
    charging_state: str = ""  # the 2.0.1 charging state last recorded for the running transaction
    stop_when_energy_stops: bool = False  # the running transaction's TxStopPoint is EnergyTransfer
    stop_after_start: StopReason | None = None  # ConnectionTimeOut ran out while the meter was starting
    min_current_a: float = 6.0  # the least a car can charge with (IEC 61851-1); a lower limit pauses it
    limit_a: float | None = None  # smart charging's limit now (None: none, the controller's maximum)

    @property
    def paused(self) -> bool:
        """Smart charging holds the car below what it can charge with: SuspendedEVSE while it asks for power."""
        return self.limit_a is not None and self.limit_a < self.min_current_a


@dataclass
class Evse:
    id: int
    connectors: dict[int, Connector]
    phase: Phase = Phase.AVAILABLE
    transaction: Transaction | None = None
    meter_link_up: bool = True
    meter_link_reason: str = ""
    ev: EvSide = field(default_factory=EvSide)


class ChargingStation:
    """All EVSEs of one station and the rules that move them."""

    def __init__(self, layout: Layout, ev_sides: Mapping[int, EvSide] | None = None) -> None:
        self.layout = layout
        sides = ev_sides or {}
        self.evses: dict[int, Evse] = {
            e: Evse(e, {c: Connector(c) for c in connectors}, ev=sides.get(e) or EvSide())
            for e, connectors in layout.evses
        }
        self.store_ok = True
        self.store_reason = ""
        self.accepted_by_csms = False
        self.book = Reservations(self.evses, self._base_status)  # the reservations held, by id

    # ------------------------------------------------------------------ queries

    def status_of(self, evse_id: int, connector_id: int = 1) -> ConnectorStatus:
        status = self._base_status(evse_id, connector_id)
        if self.reservations and status in (ConnectorStatus.AVAILABLE, ConnectorStatus.PREPARING):
            evse = self.evses[evse_id]
            if evse.phase is Phase.AVAILABLE and evse.connectors[connector_id].operative and self.book.holds(evse_id):
                return ConnectorStatus.RESERVED  # a car plugged in meanwhile does not end it (1.6 G2, H03.FR.10)
        return status

    def _base_status(self, evse_id: int, connector_id: int = 1) -> ConnectorStatus:
        """The status without reservations."""
        evse = self.evses[evse_id]
        connector = evse.connectors[connector_id]
        ev = evse.ev
        if not evse.meter_link_up or not self.store_ok or ev.faults:
            return ConnectorStatus.FAULTED
        if evse.transaction is not None and evse.transaction.connector_id != connector_id:
            return ConnectorStatus.UNAVAILABLE  # the EVSE (its one meter) is in use on another of its connectors
        if evse.phase is Phase.AVAILABLE:
            if ev.senses_plug and ev.pilot.plugged and not ev.plug_timed_out:
                return ConnectorStatus.FINISHING if ev.needs_unplug else ConnectorStatus.PREPARING
            return ConnectorStatus.AVAILABLE if connector.operative else ConnectorStatus.UNAVAILABLE
        if evse.phase is Phase.CHARGING and ev.senses_plug:
            if ev.relay_closed and ev.pilot.wants_power and not ev.paused:
                return ConnectorStatus.CHARGING
            return ConnectorStatus.SUSPENDED_EVSE if ev.pilot.wants_power else ConnectorStatus.SUSPENDED_EV
        return PHASE_STATUS[evse.phase]

    def find(self, tx_ref: str) -> Evse | None:
        for evse in self.evses.values():
            if evse.transaction is not None and evse.transaction.ref == tx_ref:
                return evse
        return None

    def waiting_for_card(self, evse_ids: tuple[int, ...] | None = None) -> int | None:
        """The EVSE (of `evse_ids`, or any) where a car is plugged in and no transaction runs: where a card presented
        at a reader for several EVSEs goes first (cable-first start)."""
        for evse in self.evses.values():
            ev = evse.ev
            if evse_ids is not None and evse.id not in evse_ids:
                continue
            if evse.phase is Phase.AVAILABLE and ev.senses_plug and ev.pilot.plugged and not ev.needs_unplug:
                return evse.id
        return None

    def running_transactions(self) -> list[Transaction]:
        return [e.transaction for e in self.evses.values() if e.transaction is not None]

    def transaction_on(self, evse_id: int) -> Transaction | None:
        evse = self.evses.get(evse_id)
        return None if evse is None else evse.transaction

    def first_available(self, evse_ids: tuple[int, ...] | None = None) -> tuple[int, int] | None:
        """(EVSE, connector) where a start without a named connector goes: the first that is Available (of
        `evse_ids`, or of all)."""
        for evse in self.evses.values():
            if evse_ids is not None and evse.id not in evse_ids:
                continue
            for connector in evse.connectors.values():
                if self.status_of(evse.id, connector.id) is ConnectorStatus.AVAILABLE:
                    return evse.id, connector.id
        return None

    def inoperative(self, evse_id: int | None = None) -> bool:
        """Whether every connector (of the station, or of one EVSE) is inoperative."""
        evses = self.evses.values() if evse_id is None else [self.evses[evse_id]]
        return all(not c.operative for e in evses for c in e.connectors.values())

    # ------------------------------------------------------------------ restore

    def restore(self, transaction: Transaction) -> list[Command]:
        """Put back a transaction the store had open when the daemon stopped.

        A transaction that never reached the meter is forgotten by the caller; one the meter started (or may have
        started) is brought to STOPPING and ended on the meter, so its signed record is collected and delivered.
        """
        evse = self.evses.get(transaction.evse_id)
        if evse is None or transaction.connector_id not in evse.connectors:
            raise ValueError(
                f"stored transaction {transaction.ref} names unknown EVSE {transaction.evse_id} "
                f"connector {transaction.connector_id}"
            )
        if evse.transaction is not None:
            raise ValueError(f"EVSE {evse.id} already holds transaction {evse.transaction.ref}")
        if transaction.stopped_at is not None and transaction.signed_records:
            # Already ended and signed; only delivery is left, which the outbox owns.
            return []
        evse.transaction = transaction
        evse.phase = Phase.STOPPING
        # The relay is opened before the meter ends (a controller starts with it open; this makes sure).
        power = [AllowPower(evse.id, False)] if evse.ev.senses_plug else []
        return [*power, StopMeterTransaction(evse.id, transaction), *self._status_changes(evse)]

    # ------------------------------------------------------------------ events

    def handle(self, event: Event) -> Outcome:
        """Apply one event. Returns the decision and the commands to carry out; raises InvalidTransition."""
        held = bool(self.reservations)
        outcome = self._handle(event)
        if not held and not self.reservations:
            return outcome
        # A reservation ends when its EVSE goes Faulted or Unavailable (1.6 §5.13 (3), H01.FR.16/17); and a change on
        # one EVSE may change another's status (the last free EVSE is held for a reservation of any EVSE).
        extra: list[Command] = self.book.drop_unusable()
        extra.extend(self._all_status_changes())
        return replace(outcome, commands=(*outcome.commands, *extra)) if extra else outcome

    def _handle(self, event: Event) -> Outcome:
        match event:
            case StationAccepted():
                self.accepted_by_csms = True
                return Outcome(True, tuple(self._all_status_changes()))
            case MeterLinkChanged(evse_id=evse_id, up=up, reason=reason):
                evse = self.evses.get(evse_id)
                if evse is None:
                    return Outcome(False, reason=f"unknown EVSE {evse_id}")
                evse.meter_link_up = up
                evse.meter_link_reason = reason
                return Outcome(True, tuple(self._status_changes(evse)))
            case StoreHealthChanged(ok=ok, reason=reason):
                self.store_ok = ok
                self.store_reason = reason
                return Outcome(True, tuple(self._all_status_changes()))
            case AvailabilityChanged():
                return self._availability(event)
            case StartRequested():
                return self._start(event)
            case EvPilotChanged():
                return self._pilot(event)
            case EvRelayChanged():
                return self._relay(event)
            case EvLockChanged(evse_id=evse_id, state=state):
                evse = self._evse(evse_id)
                evse.ev.lock = state
                return Outcome(True, tuple(self._follow_up(evse)))
            case EvFaultChanged():
                return self._fault(event)
            case ConnectionTimedOut():
                return self._timed_out(event)
            case CurrentLimitChanged():
                return self._limit(event)
            case ReserveRequested():
                return self.book.reserve(event)
            case ReservationCancelled(reservation_id=rid):
                return self.book.cancel(rid)
            case ReservationExpired(reservation_id=rid, expires_at=expires_at):
                return self.book.expired(rid, expires_at)
            case UnlockRequested(evse_id=evse_id):
                evse = self._evse(evse_id)
                if not evse.ev.has_lock:
                    return Outcome(False, reason=f"EVSE {evse_id} has no lock (fixed cable)")
                if evse.phase is not Phase.AVAILABLE:
                    return Outcome(False, reason=f"EVSE {evse_id} is {evse.phase.value}")
                return Outcome(True, (LockConnector(evse_id, False),))
            case MeterStarted():
                evse = self._evse_for(event.tx_ref, event)
                self._advance(evse, event)
                assert evse.transaction is not None
                tx = replace(
                    evse.transaction,
                    started_at=event.at,
                    meter_start_wh=event.meter_start_wh,
                    signed_records=(event.begin_record,) if event.begin_record else (),
                    meter=event.meter or evse.transaction.meter,
                )
                evse.transaction = tx
                evse.ev.charging_state = self._charging_state(evse)  # the start's own state; changes are recorded
                lock = [LockConnector(evse.id, True)] if evse.ev.has_lock and evse.ev.senses_plug else []
                commands = (RecordTransactionStarted(tx), *lock, *self._follow_up(evse))
                if evse.ev.stop_after_start is not None:
                    stop = self._stop(evse, StopRequested(tx.ref, evse.ev.stop_after_start, event.at))
                    evse.ev.stop_after_start = None
                    return Outcome(True, (*commands, *stop.commands), transaction=stop.transaction)
                return Outcome(True, commands, transaction=tx)
            case MeterStartFailed():
                evse = self._evse_for(event.tx_ref, event)
                self._advance(evse, event)
                assert evse.transaction is not None
                tx = evse.transaction
                evse.transaction = None
                self._apply_scheduled(evse)
                return Outcome(
                    True,
                    (RecordTransactionAborted(tx, event.reason), *self._status_changes(evse)),
                    reason=event.reason,
                    transaction=tx,
                )
            case StopRequested():
                return self._stop(self._evse_for(event.tx_ref, event), event)
            case MeterStopped():
                evse = self._evse_for(event.tx_ref, event)
                self._advance(evse, event)
                assert evse.transaction is not None
                tx = replace(
                    evse.transaction,
                    stopped_at=event.at,
                    meter_stop_wh=event.meter_stop_wh,
                    signed_records=event.signed_records,
                    meter=evse.transaction.meter or event.meter,
                )
                evse.transaction = None
                self._apply_scheduled(evse)
                ev = evse.ev
                ev.needs_unplug = ev.senses_plug and ev.pilot.plugged  # Finishing until the cable is removed
                ev.charging_state = ""
                unlock = [LockConnector(evse.id, False)] if ev.has_lock and ev.senses_plug else []
                commands = (RecordTransactionEnded(tx), *unlock, *self._follow_up(evse))
                return Outcome(True, commands, transaction=tx)
        raise TypeError(f"not a core event: {event!r}")  # pragma: no cover - the match above is exhaustive

    # ------------------------------------------------------------------ internals

    def _availability(self, event: AvailabilityChanged) -> Outcome:
        if event.evse_id == 0:
            targets = [(e, c) for e in self.evses.values() for c in e.connectors.values()]
        elif event.evse_id not in self.evses:
            return Outcome(False, reason=f"unknown EVSE {event.evse_id}")
        elif event.connector_id == 0:
            evse = self.evses[event.evse_id]
            targets = [(evse, c) for c in evse.connectors.values()]
        elif event.connector_id in self.evses[event.evse_id].connectors:
            evse = self.evses[event.evse_id]
            targets = [(evse, evse.connectors[event.connector_id])]
        else:
            return Outcome(False, reason=f"unknown connector {event.connector_id} on EVSE {event.evse_id}")
        scheduled = False
        for evse, connector in targets:
            if evse.phase is Phase.AVAILABLE:
                connector.operative = event.operative
                connector.scheduled_operative = None
            else:
                connector.scheduled_operative = event.operative
                scheduled = True
        changed = {e.id: e for e, _ in targets}
        reports = [r for e in changed.values() for r in self._status_changes(e)]
        return Outcome(True, tuple(reports), reason="scheduled" if scheduled else "")

    @staticmethod
    def _apply_scheduled(evse: Evse) -> None:
        for connector in evse.connectors.values():
            if connector.scheduled_operative is not None:
                connector.operative = connector.scheduled_operative
                connector.scheduled_operative = None

    def _start(self, event: StartRequested) -> Outcome:
        evse = self.evses.get(event.evse_id)
        if evse is None:
            return Outcome(False, reason=f"unknown EVSE {event.evse_id}")
        connector = evse.connectors.get(event.connector_id)
        if connector is None:
            return Outcome(False, reason=f"unknown connector {event.connector_id} on EVSE {evse.id}")
        if not self.accepted_by_csms:
            return Outcome(False, reason="the CSMS has not accepted this station yet")
        if not evse.meter_link_up:
            why = evse.meter_link_reason or "link down"
            return Outcome(False, reason=f"meter of EVSE {evse.id} unavailable: {why}")
        if not self.store_ok:
            return Outcome(False, reason=f"the station cannot record transactions: {self.store_reason}")
        if evse.phase is not Phase.AVAILABLE:
            return Outcome(False, reason=f"EVSE {evse.id} is {evse.phase.value}")
        if not connector.operative:
            return Outcome(False, reason=f"EVSE {evse.id} connector {connector.id} is inoperative (ChangeAvailability)")
        if evse.ev.faults:
            return Outcome(False, reason=f"EVSE {evse.id} is faulted: {', '.join(evse.ev.faults)}")
        expired = self.book.expire_due(event.at)
        refusal, used = self.book.for_start(evse, event)
        if refusal:
            return Outcome(False, tuple(expired), reason=refusal)
        ended: list[Command] = [*expired]
        if used is not None:
            ended.append(self.book.use(used))
        ev = evse.ev
        unplugged = ev.senses_plug and not ev.pilot.plugged
        waiting = unplugged and not event.start_on_authorization
        self._advance(evse, event, Phase.WAITING if waiting else Phase.STARTING)
        ev.needs_unplug = ev.plug_timed_out = False
        ev.plug_token = ""
        ev.stop_when_energy_stops = ev.senses_plug and event.stop_when_energy_stops
        ev.stop_after_start = None
        tx = Transaction(
            ref=event.tx_ref,
            evse_id=evse.id,
            connector_id=connector.id,
            id_tag=event.id_tag,
            source=event.source,
            requested_at=event.at,
            remote_start_id=event.remote_start_id,
            identification=event.identification,
            reservation_id=None if used is None else used.id,
        )
        evse.transaction = tx
        if waiting:  # authorize first: the car has ConnectionTimeOut to be plugged in
            watch = WatchConnection(evse.id, f"tx-{tx.ref}")
            return Outcome(True, (*ended, watch, *self._status_changes(evse)), transaction=tx)
        commands: list[Command] = [*ended, StartMeterTransaction(evse.id, tx)]
        if unplugged:  # TxStartPoint Authorized: the meter runs; the car has ConnectionTimeOut to come
            commands.append(WatchConnection(evse.id, f"tx-{tx.ref}"))
        return Outcome(True, (*commands, *self._status_changes(evse)), transaction=tx)

    def _evse_for(self, tx_ref: str, event: object) -> Evse:
        evse = self.find(tx_ref)
        if evse is None:
            raise InvalidTransition(0, Phase.AVAILABLE, event, f"no running transaction {tx_ref}")
        return evse

    def _advance(self, evse: Evse, event: object, to: Phase | None = None) -> None:
        allowed = TRANSITIONS.get((evse.phase, type(event)), ())
        nxt = to if to is not None else (allowed[0] if allowed else None)
        if nxt is None or nxt not in allowed:
            raise InvalidTransition(evse.id, evse.phase, event)
        evse.phase = nxt

    def _evse(self, evse_id: int) -> Evse:
        evse = self.evses.get(evse_id)
        if evse is None:
            raise InvalidTransition(evse_id, Phase.AVAILABLE, None, f"unknown EVSE {evse_id}")
        return evse

    # ---- reservations (1.6 §5.13, §5.1; 2.0.1 H01-H04): station/core/reservations.py holds the rules

    @property
    def reservations(self) -> dict[int, Reservation]:
        return self.book.held

    def reserved_for(self, id_tag: str, group_id: str | None, evse_ids: tuple[int, ...] | None = None) -> int | None:
        """The EVSE (of `evse_ids`, or any) a reservation holds for this identifier: where its start goes when it
        names none (a reservation of any EVSE: a free one)."""
        return self.book.reserved_for(id_tag, group_id, evse_ids)

    def restore_reservations(self, reservations: list[Reservation], at: datetime) -> list[Command]:
        """Put back the reservations the store kept; those whose expiry passed while the station was down end as
        Expired (H04.FR.01)."""
        return [*self.book.restore(reservations, at), *self.book.drop_unusable(), *self._all_status_changes()]

    # ------------------------------------------------------------------ the EV side

    def _stop(self, evse: Evse, event: StopRequested) -> Outcome:
        if evse.phase in (Phase.OPENING, Phase.STOPPING):
            # Asking twice is harmless: the relay is opening or the meter is already ending it.
            return Outcome(True, (), reason="already stopping", transaction=evse.transaction)
        if evse.phase is Phase.WAITING:
            # Authorized, never plugged in: nothing was metered; the meter never heard of it.
            self._advance(evse, event, Phase.AVAILABLE)
            tx = evse.transaction
            assert tx is not None
            evse.transaction = None
            why = f"stopped before a car was plugged in ({event.reason.value})"
            return Outcome(True, (RecordTransactionAborted(tx, why), *self._status_changes(evse)), transaction=tx)
        ev = evse.ev
        opening = ev.senses_plug and ev.relay_closed
        self._advance(evse, event, Phase.OPENING if opening else Phase.STOPPING)
        assert evse.transaction is not None
        tx = replace(evse.transaction, stop_reason=event.reason)
        evse.transaction = tx
        commands: list[Command] = self._power(evse)  # opens the relay (the phase no longer wants power)
        if not opening:
            commands.append(StopMeterTransaction(evse.id, tx))
        return Outcome(True, (*commands, *self._status_changes(evse)), transaction=tx)

    def _pilot(self, event: EvPilotChanged) -> Outcome:
        evse = self._evse(event.evse_id)
        ev = evse.ev
        was_plugged = ev.pilot.plugged
        ev.pilot = event.pilot
        commands: list[Command] = []
        plugged_in = ev.pilot.plugged and not was_plugged
        unplugged = was_plugged and not ev.pilot.plugged
        if unplugged:
            ev.needs_unplug = ev.plug_timed_out = False
            ev.plug_token = ""
            if ev.has_lock and event.unlock_on_ev_disconnect and evse.phase is not Phase.CHARGING:
                commands.append(LockConnector(evse.id, False))
        if evse.phase is Phase.WAITING and plugged_in:
            self._advance(evse, event, Phase.STARTING)
            assert evse.transaction is not None
            evse.transaction = replace(evse.transaction, start_trigger="CablePluggedIn")  # authorized first
            commands.append(StartMeterTransaction(evse.id, evse.transaction))
        elif evse.phase is Phase.AVAILABLE and plugged_in:
            ev.plugs += 1
            ev.plug_token = f"plug-{ev.plugs}"  # cable first: ConnectionTimeOut to authorize
            commands.append(WatchConnection(evse.id, ev.plug_token))
        elif evse.phase is Phase.STARTING and unplugged and event.stop_on_ev_disconnect:
            ev.stop_after_start = StopReason.EV_DISCONNECTED  # ended as soon as the meter confirmed its start
        elif evse.phase is Phase.STARTING and plugged_in and ev.stop_after_start is StopReason.EV_DISCONNECTED:
            ev.stop_after_start = None  # plugged in again before the meter answered
        elif evse.phase is Phase.CHARGING and unplugged and evse.transaction is not None:
            if event.unlock_on_ev_disconnect and ev.has_lock:
                commands.append(LockConnector(evse.id, False))
            if event.stop_on_ev_disconnect:
                stop = self._stop(evse, StopRequested(evse.transaction.ref, StopReason.EV_DISCONNECTED, _NO_TIME))
                return Outcome(True, (*commands, *stop.commands), transaction=stop.transaction)
        return Outcome(True, (*commands, *self._follow_up(evse)), transaction=evse.transaction)

    def _relay(self, event: EvRelayChanged) -> Outcome:
        evse = self._evse(event.evse_id)
        evse.ev.relay_closed = event.closed
        if evse.phase is Phase.OPENING and not event.closed:
            self._advance(evse, event, Phase.STOPPING)
            assert evse.transaction is not None
            commands: list[Command] = [StopMeterTransaction(evse.id, evse.transaction), *self._status_changes(evse)]
            return Outcome(True, tuple(commands), transaction=evse.transaction)
        if event.closed and not evse.ev.power_on and evse.ev.senses_plug:
            # Closed without being told to (a controller's own decision, a reboot, a welded relay): tell it again to
            # open; no energy may flow without a running meter transaction.
            commands = [AllowPower(evse.id, False), *self._follow_up(evse)]
            return Outcome(True, tuple(commands), reason="relay closed without being told to")
        return Outcome(True, tuple(self._follow_up(evse)), transaction=evse.transaction)

    def _fault(self, event: EvFaultChanged) -> Outcome:
        evse = self._evse(event.evse_id)
        ev = evse.ev
        if event.active:
            ev.faults[event.fault] = event.detail
        else:
            ev.faults.pop(event.fault, None)
        commands: list[Command] = []
        tx = evse.transaction
        if event.active and tx is not None:
            if evse.phase is Phase.WAITING:
                self._advance(evse, event, Phase.AVAILABLE)
                evse.transaction = None
                commands.append(RecordTransactionAborted(tx, f"controller fault {event.fault.value}"))
            elif evse.phase is Phase.CHARGING:
                reason = FAULT_STOP.get(event.fault, StopReason.OTHER)
                commands.extend(self._stop(evse, StopRequested(tx.ref, reason, _NO_TIME)).commands)
            elif evse.phase is Phase.OPENING and event.fault is Fault.RELAY_WELDED:
                self._advance(evse, event, Phase.STOPPING)  # it will not open: end the meter now
                commands.append(StopMeterTransaction(evse.id, tx))
        return Outcome(True, (*commands, *self._follow_up(evse)), transaction=evse.transaction)

    def _timed_out(self, event: ConnectionTimedOut) -> Outcome:
        evse = self._evse(event.evse_id)
        ev = evse.ev
        tx = evse.transaction
        if evse.phase is Phase.WAITING and tx is not None and event.token == f"tx-{tx.ref}":
            self._advance(evse, event, Phase.AVAILABLE)
            evse.transaction = None
            why = "no car plugged in within ConnectionTimeOut"
            return Outcome(True, (RecordTransactionAborted(tx, why), *self._status_changes(evse)), transaction=tx)
        if tx is not None and event.token == f"tx-{tx.ref}" and not ev.pilot.plugged:
            # TxStartPoint Authorized: the transaction runs on the meter, and no car came (E03.FR.05: Timeout).
            if evse.phase is Phase.STARTING:
                ev.stop_after_start = StopReason.TIMEOUT  # carried out once the meter confirmed its start
                return Outcome(True, (), reason="stop after the start")
            if evse.phase is Phase.CHARGING:
                return self._stop(evse, StopRequested(tx.ref, StopReason.TIMEOUT, _NO_TIME))
        if evse.phase is Phase.AVAILABLE and event.token and event.token == ev.plug_token and ev.pilot.plugged:
            ev.plug_token = ""
            ev.plug_timed_out = True  # 1.6 ConnectionTimeOut: back to the original state, Available
            return Outcome(True, tuple(self._status_changes(evse)))
        return Outcome(True, (), reason="stale watch")

    def _limit(self, event: CurrentLimitChanged) -> Outcome:
        """A new smart-charging limit: taken in every phase (no transition); the controller is told at once, and the
        status and charging state follow (a limit below the car's minimum pauses it, SuspendedEVSE)."""
        evse = self.evses.get(event.evse_id)
        if evse is None:
            return Outcome(False, reason=f"unknown EVSE {event.evse_id}")
        if event.amps is not None and not (event.amps >= 0 and event.amps < float("inf")):
            return Outcome(False, reason=f"a current limit must be a number of amperes >= 0, got {event.amps!r}")
        ev = evse.ev
        if event.amps == ev.limit_a:
            return Outcome(True, (), reason="unchanged", transaction=evse.transaction)
        ev.limit_a = event.amps
        offer = [OfferCurrent(evse.id, event.amps)] if ev.senses_plug else []
        return Outcome(True, (*offer, *self._follow_up(evse)), transaction=evse.transaction)

    def _power(self, evse: Evse) -> list[Command]:
        """Open or close the relay when what is allowed changed: closed only while the meter's transaction runs,
        the car asks for power, no fault is active and the lock (where there is one) holds."""
        ev = evse.ev
        if not ev.senses_plug:
            return []  # the meter's output switches the controller: nothing to command
        wanted = (
            evse.phase is Phase.CHARGING
            and ev.pilot.wants_power
            and not ev.faults
            and (not ev.has_lock or ev.lock is LockState.LOCKED)
        )
        if wanted == ev.power_on:
            return []
        ev.power_on = wanted
        return [AllowPower(evse.id, wanted)]

    def _charging_state(self, evse: Evse) -> str:
        ev = evse.ev
        if not ev.pilot.plugged:
            return "Idle"
        if ev.relay_closed and ev.pilot.wants_power and not ev.paused:
            return "Charging"
        return "SuspendedEVSE" if ev.pilot.wants_power else "SuspendedEV"

    def _follow_up(self, evse: Evse) -> list[Command]:
        """After any change: the relay, the charging state of a running transaction, the connectors' status."""
        commands = self._power(evse)
        tx = evse.transaction
        if evse.ev.senses_plug and tx is not None and evse.phase is Phase.CHARGING:
            state = self._charging_state(evse)
            was = evse.ev.charging_state
            if state != was:
                evse.ev.charging_state = state
                trigger = "ChargingStateChanged"
                if was == "Idle":
                    trigger = "CablePluggedIn"  # the car came after the transaction started (TxStartPoint Authorized)
                elif state == "Idle":
                    trigger = "EVCommunicationLost"  # unplugged, and the transaction goes on
                commands.append(RecordChargingState(tx, state, trigger))
            energy_stopped = was == "Charging" and state in ("SuspendedEV", "SuspendedEVSE")
            # A pause by smart charging is the station's own doing, not the end of the energy transfer.
            if evse.ev.stop_when_energy_stops and energy_stopped and not evse.ev.paused:
                # TxStopPoint EnergyTransfer: the transaction ends when the energy stops (2.0.1 E06).
                reason = StopReason.STOPPED_BY_EV if state == "SuspendedEV" else StopReason.OTHER
                stop = self._stop(evse, StopRequested(tx.ref, reason, _NO_TIME))
                return [*commands, *stop.commands]
        return [*commands, *self._status_changes(evse)]

    def _status_changes(self, evse: Evse) -> list[ReportStatus]:
        reports: list[ReportStatus] = []
        for connector in evse.connectors.values():
            status = self.status_of(evse.id, connector.id)
            if status is connector.reported:
                continue
            connector.reported = status
            if status is ConnectorStatus.FAULTED and not evse.meter_link_up:
                reports.append(ReportStatus(evse.id, status, "PowerMeterFailure", evse.meter_link_reason, connector.id))
            elif status is ConnectorStatus.FAULTED and evse.ev.faults:
                fault, detail = next(iter(evse.ev.faults.items()))
                info = (detail or fault.value)[:50]
                reports.append(ReportStatus(evse.id, status, FAULT_CODES[fault], info, connector.id))
            elif status is ConnectorStatus.FAULTED:
                reports.append(
                    ReportStatus(evse.id, status, "InternalError", f"store: {self.store_reason}"[:50], connector.id)
                )
            else:
                reports.append(ReportStatus(evse.id, status, connector_id=connector.id))
        return reports

    def _all_status_changes(self) -> list[ReportStatus]:
        return [r for e in self.evses.values() for r in self._status_changes(e)]

    def report_all(self, evse_id: int | None = None, connector_id: int | None = None) -> list[ReportStatus]:
        """The current status of every connector (of one EVSE, or one connector of it; None or 0 means all), e.g.
        after a (re)connect or a TriggerMessage, where the CSMS must hear it again."""
        for evse in self.evses.values():
            if evse_id not in (None, 0) and evse.id != evse_id:
                continue
            for connector in evse.connectors.values():
                if connector_id in (None, 0) or connector.id == connector_id:
                    connector.reported = None
        targets = [e for e in self.evses.values() if evse_id in (None, 0) or e.id == evse_id]
        return [r for e in targets for r in self._status_changes(e)]


_NO_TIME = datetime.min.replace(tzinfo=UTC)  # a stop the car caused: the runtime's clock is not read here


def transition_diagram() -> str:
    """The transition table as Mermaid text (docs/ prints it)."""
    lines = ["stateDiagram-v2"]
    for (phase, event), targets in TRANSITIONS.items():
        lines.extend(f"    {phase.value} --> {nxt.value}: {event.__name__}" for nxt in targets)
    return "\n".join(lines)
