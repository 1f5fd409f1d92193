"""The charging station's state machine: its EVSEs, their connectors and transactions, and every allowed transition.

The EVSE is the unit: it has the fiscal meter, so it has the phase, the running transaction (at most one, on one of
its connectors) and the meter's health; one silent meter faults only its own EVSE. Connectors carry availability and
what the CSMS was last told. This module owns that live state. It is a plain object: no I/O,
no asyncio, no clock reads (every event carries its time). The phase transitions are one table, `TRANSITIONS`, that
can be printed as a diagram; an event that is impossible in the current phase raises `InvalidTransition` instead of
being ignored. Adapters feed events in with `handle()` and carry out the commands of the `Outcome` in order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from station.core.model import (
    AvailabilityChanged,
    Command,
    ConnectorStatus,
    Event,
    Layout,
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
    StationAccepted,
    StopMeterTransaction,
    StopRequested,
    StoreHealthChanged,
    Transaction,
)

# (phase, event type) -> next phase. Anything not listed is impossible and raises InvalidTransition.
TRANSITIONS: dict[tuple[Phase, type], Phase] = {
    (Phase.AVAILABLE, StartRequested): Phase.STARTING,
    (Phase.STARTING, MeterStarted): Phase.CHARGING,
    (Phase.STARTING, MeterStartFailed): Phase.AVAILABLE,
    (Phase.CHARGING, StopRequested): Phase.STOPPING,
    (Phase.STOPPING, MeterStopped): Phase.AVAILABLE,
}

PHASE_STATUS: dict[Phase, ConnectorStatus] = {
    Phase.AVAILABLE: ConnectorStatus.AVAILABLE,
    Phase.STARTING: ConnectorStatus.PREPARING,
    Phase.CHARGING: ConnectorStatus.CHARGING,
    Phase.STOPPING: ConnectorStatus.FINISHING,
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
class Evse:
    id: int
    connectors: dict[int, Connector]
    phase: Phase = Phase.AVAILABLE
    transaction: Transaction | None = None
    meter_link_up: bool = True
    meter_link_reason: str = ""


class ChargingStation:
    """All EVSEs of one station and the rules that move them."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.evses: dict[int, Evse] = {
            e: Evse(e, {c: Connector(c) for c in connectors}) for e, connectors in layout.evses
        }
        self.store_ok = True
        self.store_reason = ""
        self.accepted_by_csms = False

    # ------------------------------------------------------------------ queries

    def status_of(self, evse_id: int, connector_id: int = 1) -> ConnectorStatus:
        evse = self.evses[evse_id]
        connector = evse.connectors[connector_id]
        if not evse.meter_link_up or not self.store_ok:
            return ConnectorStatus.FAULTED
        if evse.transaction is not None and evse.transaction.connector_id != connector_id:
            return ConnectorStatus.UNAVAILABLE  # the EVSE (its one meter) is in use on another of its connectors
        if evse.phase is Phase.AVAILABLE and not connector.operative:
            return ConnectorStatus.UNAVAILABLE
        return PHASE_STATUS[evse.phase]

    def find(self, tx_ref: str) -> Evse | None:
        for evse in self.evses.values():
            if evse.transaction is not None and evse.transaction.ref == tx_ref:
                return evse
        return None

    def running_transactions(self) -> list[Transaction]:
        return [e.transaction for e in self.evses.values() if e.transaction is not None]

    def transaction_on(self, evse_id: int) -> Transaction | None:
        evse = self.evses.get(evse_id)
        return None if evse is None else evse.transaction

    def first_available(self) -> tuple[int, int] | None:
        """(EVSE, connector) where a start without a named connector goes: the first that is Available."""
        for evse in self.evses.values():
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
        return [StopMeterTransaction(evse.id, transaction), *self._status_changes(evse)]

    # ------------------------------------------------------------------ events

    def handle(self, event: Event) -> Outcome:
        """Apply one event. Returns the decision and the commands to carry out; raises InvalidTransition."""
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
                return Outcome(True, (RecordTransactionStarted(tx), *self._status_changes(evse)), transaction=tx)
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
                evse = self._evse_for(event.tx_ref, event)
                if evse.phase is Phase.STOPPING:
                    # Asking twice is harmless: the meter is already ending it.
                    return Outcome(True, (), reason="already stopping", transaction=evse.transaction)
                self._advance(evse, event)
                assert evse.transaction is not None
                tx = replace(evse.transaction, stop_reason=event.reason)
                evse.transaction = tx
                return Outcome(True, (StopMeterTransaction(evse.id, tx), *self._status_changes(evse)), transaction=tx)
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
                return Outcome(True, (RecordTransactionEnded(tx), *self._status_changes(evse)), transaction=tx)
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
        self._advance(evse, event)
        tx = Transaction(
            ref=event.tx_ref,
            evse_id=evse.id,
            connector_id=connector.id,
            id_tag=event.id_tag,
            source=event.source,
            requested_at=event.at,
            remote_start_id=event.remote_start_id,
        )
        evse.transaction = tx
        return Outcome(True, (StartMeterTransaction(evse.id, tx), *self._status_changes(evse)), transaction=tx)

    def _evse_for(self, tx_ref: str, event: object) -> Evse:
        evse = self.find(tx_ref)
        if evse is None:
            raise InvalidTransition(0, Phase.AVAILABLE, event, f"no running transaction {tx_ref}")
        return evse

    def _advance(self, evse: Evse, event: object) -> None:
        nxt = TRANSITIONS.get((evse.phase, type(event)))
        if nxt is None:
            raise InvalidTransition(evse.id, evse.phase, event)
        evse.phase = nxt

    def _status_changes(self, evse: Evse) -> list[ReportStatus]:
        reports: list[ReportStatus] = []
        for connector in evse.connectors.values():
            status = self.status_of(evse.id, connector.id)
            if status is connector.reported:
                continue
            connector.reported = status
            if status is ConnectorStatus.FAULTED and not evse.meter_link_up:
                reports.append(ReportStatus(evse.id, status, "PowerMeterFailure", evse.meter_link_reason, connector.id))
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


def transition_diagram() -> str:
    """The transition table as Mermaid text (docs/ prints it)."""
    lines = ["stateDiagram-v2"]
    for (phase, event), nxt in TRANSITIONS.items():
        lines.append(f"    {phase.value} --> {nxt.value}: {event.__name__}")
    return "\n".join(lines)
