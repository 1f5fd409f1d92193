"""The charging station's state machine: its connectors, their transactions, and every allowed transition.

This module owns the live state of each connector (phase, fault, running transaction). It is a plain object: no I/O,
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
    """An event arrived that the connector's current phase does not allow."""

    def __init__(self, connector_id: int, phase: Phase, event: object, detail: str = "") -> None:
        self.connector_id = connector_id
        self.phase = phase
        self.event = event
        name = type(event).__name__
        super().__init__(
            f"connector {connector_id}: {name} is not possible while {phase.value}" + (f" ({detail})" if detail else "")
        )


@dataclass
class Connector:
    id: int
    phase: Phase = Phase.AVAILABLE
    transaction: Transaction | None = None
    reported: ConnectorStatus | None = None
    operative: bool = True
    scheduled_operative: bool | None = None  # an availability change waiting for the transaction to end


class ChargingStation:
    """All connectors of one station and the rules that move them."""

    def __init__(self, connector_ids: tuple[int, ...] = (1,)) -> None:
        if not connector_ids or any(c < 1 for c in connector_ids):
            raise ValueError("connector ids start at 1")
        self.connectors: dict[int, Connector] = {c: Connector(c) for c in connector_ids}
        self.meter_link_up = True
        self.meter_link_reason = ""
        self.store_ok = True
        self.store_reason = ""
        self.accepted_by_csms = False

    # ------------------------------------------------------------------ queries

    def status_of(self, connector_id: int) -> ConnectorStatus:
        connector = self.connectors[connector_id]
        if not self.meter_link_up or not self.store_ok:
            return ConnectorStatus.FAULTED
        if connector.phase is Phase.AVAILABLE and not connector.operative:
            return ConnectorStatus.UNAVAILABLE
        return PHASE_STATUS[connector.phase]

    def find(self, tx_ref: str) -> Connector | None:
        for connector in self.connectors.values():
            if connector.transaction is not None and connector.transaction.ref == tx_ref:
                return connector
        return None

    def running_transactions(self) -> list[Transaction]:
        return [c.transaction for c in self.connectors.values() if c.transaction is not None]

    # ------------------------------------------------------------------ restore

    def restore(self, transaction: Transaction) -> list[Command]:
        """Put back a transaction the store had open when the daemon stopped.

        A transaction that never reached the meter is forgotten by the caller; one the meter started (or may have
        started) is brought to STOPPING and ended on the meter, so its signed record is collected and delivered.
        """
        connector = self.connectors.get(transaction.evse_id)
        if connector is None:
            raise ValueError(f"stored transaction {transaction.ref} names unknown connector {transaction.evse_id}")
        if connector.transaction is not None:
            raise ValueError(f"connector {connector.id} already holds transaction {connector.transaction.ref}")
        connector.transaction = transaction
        if transaction.stopped_at is not None and transaction.signed_records:
            # Already ended and signed; only delivery is left, which the outbox owns.
            connector.transaction = None
            return []
        connector.phase = Phase.STOPPING
        return [StopMeterTransaction(connector.id, transaction), *self._status_change(connector)]

    # ------------------------------------------------------------------ events

    def handle(self, event: Event) -> Outcome:
        """Apply one event. Returns the decision and the commands to carry out; raises InvalidTransition."""
        match event:
            case StationAccepted():
                self.accepted_by_csms = True
                return Outcome(True, tuple(self._all_status_changes()))
            case MeterLinkChanged(up=up, reason=reason):
                self.meter_link_up = up
                self.meter_link_reason = reason
                return Outcome(True, tuple(self._all_status_changes()))
            case StoreHealthChanged(ok=ok, reason=reason):
                self.store_ok = ok
                self.store_reason = reason
                return Outcome(True, tuple(self._all_status_changes()))
            case AvailabilityChanged():
                return self._availability(event)
            case StartRequested():
                return self._start(event)
            case MeterStarted():
                connector = self._connector_for(event.tx_ref, event)
                self._advance(connector, event)
                assert connector.transaction is not None
                tx = replace(
                    connector.transaction,
                    started_at=event.at,
                    meter_start_wh=event.meter_start_wh,
                    signed_records=(event.begin_record,) if event.begin_record else (),
                )
                connector.transaction = tx
                return Outcome(True, (RecordTransactionStarted(tx), *self._status_change(connector)), transaction=tx)
            case MeterStartFailed():
                connector = self._connector_for(event.tx_ref, event)
                self._advance(connector, event)
                assert connector.transaction is not None
                tx = connector.transaction
                connector.transaction = None
                self._apply_scheduled(connector)
                return Outcome(
                    True,
                    (RecordTransactionAborted(tx, event.reason), *self._status_change(connector)),
                    reason=event.reason,
                    transaction=tx,
                )
            case StopRequested():
                connector = self._connector_for(event.tx_ref, event)
                if connector.phase is Phase.STOPPING:
                    # Asking twice is harmless: the meter is already ending it.
                    return Outcome(True, (), reason="already stopping", transaction=connector.transaction)
                self._advance(connector, event)
                assert connector.transaction is not None
                tx = replace(connector.transaction, stop_reason=event.reason)
                connector.transaction = tx
                return Outcome(
                    True, (StopMeterTransaction(connector.id, tx), *self._status_change(connector)), transaction=tx
                )
            case MeterStopped():
                connector = self._connector_for(event.tx_ref, event)
                self._advance(connector, event)
                assert connector.transaction is not None
                tx = replace(
                    connector.transaction,
                    stopped_at=event.at,
                    meter_stop_wh=event.meter_stop_wh,
                    signed_records=event.signed_records,
                )
                connector.transaction = None
                self._apply_scheduled(connector)
                return Outcome(True, (RecordTransactionEnded(tx), *self._status_change(connector)), transaction=tx)
        raise TypeError(f"not a core event: {event!r}")  # pragma: no cover - the match above is exhaustive

    # ------------------------------------------------------------------ internals

    def _availability(self, event: AvailabilityChanged) -> Outcome:
        if event.connector_id == 0:
            targets = list(self.connectors.values())
        elif event.connector_id in self.connectors:
            targets = [self.connectors[event.connector_id]]
        else:
            return Outcome(False, reason=f"unknown connector {event.connector_id}")
        scheduled = False
        for connector in targets:
            if connector.phase is Phase.AVAILABLE:
                connector.operative = event.operative
                connector.scheduled_operative = None
            else:
                connector.scheduled_operative = event.operative
                scheduled = True
        changes = [r for c in targets for r in self._status_change(c)]
        return Outcome(True, tuple(changes), reason="scheduled" if scheduled else "")

    @staticmethod
    def _apply_scheduled(connector: Connector) -> None:
        if connector.scheduled_operative is not None:
            connector.operative = connector.scheduled_operative
            connector.scheduled_operative = None

    def _start(self, event: StartRequested) -> Outcome:
        connector = self.connectors.get(event.connector_id)
        if connector is None:
            return Outcome(False, reason=f"unknown connector {event.connector_id}")
        if not self.accepted_by_csms:
            return Outcome(False, reason="the CSMS has not accepted this station yet")
        if not self.meter_link_up:
            return Outcome(False, reason=f"meter unavailable: {self.meter_link_reason or 'link down'}")
        if not self.store_ok:
            return Outcome(False, reason=f"the station cannot record transactions: {self.store_reason}")
        if connector.phase is not Phase.AVAILABLE:
            return Outcome(False, reason=f"connector {connector.id} is {connector.phase.value}")
        if not connector.operative:
            return Outcome(False, reason=f"connector {connector.id} is inoperative (ChangeAvailability)")
        self._advance(connector, event)
        tx = Transaction(
            ref=event.tx_ref,
            evse_id=connector.id,
            id_tag=event.id_tag,
            source=event.source,
            requested_at=event.at,
            remote_start_id=event.remote_start_id,
        )
        connector.transaction = tx
        return Outcome(True, (StartMeterTransaction(connector.id, tx), *self._status_change(connector)), transaction=tx)

    def _connector_for(self, tx_ref: str, event: object) -> Connector:
        connector = self.find(tx_ref)
        if connector is None:
            raise InvalidTransition(0, Phase.AVAILABLE, event, f"no running transaction {tx_ref}")
        return connector

    def _advance(self, connector: Connector, event: object) -> None:
        nxt = TRANSITIONS.get((connector.phase, type(event)))
        if nxt is None:
            raise InvalidTransition(connector.id, connector.phase, event)
        connector.phase = nxt

    def _status_change(self, connector: Connector) -> list[ReportStatus]:
        status = self.status_of(connector.id)
        if status is connector.reported:
            return []
        connector.reported = status
        if status is ConnectorStatus.FAULTED and not self.meter_link_up:
            return [ReportStatus(connector.id, status, "PowerMeterFailure", self.meter_link_reason)]
        if status is ConnectorStatus.FAULTED:
            return [ReportStatus(connector.id, status, "InternalError", f"store: {self.store_reason}"[:50])]
        return [ReportStatus(connector.id, status)]

    def _all_status_changes(self) -> list[ReportStatus]:
        return [r for c in self.connectors.values() for r in self._status_change(c)]

    def report_all(self, connector_id: int | None = None) -> list[ReportStatus]:
        """Every connector's current status (or one connector's; None or 0 means all), e.g. after a (re)connect or a
        TriggerMessage, where the CSMS must hear it again."""
        targets = [c for c in self.connectors.values() if connector_id in (None, 0) or c.id == connector_id]
        for connector in targets:
            connector.reported = None
        return [r for c in targets for r in self._status_change(c)]


def transition_diagram() -> str:
    """The transition table as Mermaid text (docs/ prints it)."""
    lines = ["stateDiagram-v2"]
    for (phase, event), nxt in TRANSITIONS.items():
        lines.append(f"    {phase.value} --> {nxt.value}: {event.__name__}")
    return "\n".join(lines)
