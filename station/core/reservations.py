"""Reservations (1.6 Reservation profile §5.13 ReserveNow, §5.1 CancelReservation; 2.0.1 H01-H04): which reservation
may be placed where, which EVSEs show Reserved, which start a reservation refuses or is used by, and when one ends.

A plain part of the core's state machine (station/core/station.py owns the EVSEs and hands them in): no I/O, no
clock reads (every event carries its time). A reservation names one EVSE or none ("any EVSE": 1.6 connectorId 0,
2.0.1 without evseId); the reservations of any EVSE share the free EVSEs that no reservation names, and each holds one
of them (H01.FR.20: as many available EVSEs as reservations).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from station.core.model import (
    Command,
    ConnectorStatus,
    Outcome,
    Phase,
    RecordReservation,
    RecordReservationEnded,
    Reservation,
    ReserveRequested,
    StartRequested,
    WatchReservation,
)

if TYPE_CHECKING:
    from station.core.station import Evse


class Reservations:
    def __init__(self, evses: Mapping[int, Evse], base_status: Callable[[int, int], ConnectorStatus]) -> None:
        self._evses = evses
        self._base_status = base_status  # a connector's status, reservations aside
        self.held: dict[int, Reservation] = {}  # by id

    def reserved_for(self, id_tag: str, group_id: str | None, evse_ids: tuple[int, ...] | None = None) -> int | None:
        """The EVSE (of `evse_ids`, or any) a reservation holds for this identifier: where its start goes when it
        names none (a reservation of any EVSE: a free one)."""
        for reservation in self.held.values():
            if not reservation.matches(id_tag, group_id):
                continue
            if reservation.evse_id is not None:
                if evse_ids is None or reservation.evse_id in evse_ids:
                    return reservation.evse_id
                continue
            for evse in self.free_evses():
                if evse_ids is None or evse.id in evse_ids:
                    return evse.id
        return None

    def restore(self, reservations: list[Reservation], at: datetime) -> list[Command]:
        """Put back the reservations the store kept; those whose expiry passed while the station was down end as
        Expired (H04.FR.01)."""
        commands: list[Command] = []
        for reservation in reservations:
            if reservation.evse_id is not None and reservation.evse_id not in self._evses:
                commands.append(RecordReservationEnded(reservation, "Removed"))
            elif reservation.expires_at <= at:
                commands.append(RecordReservationEnded(reservation, "Expired"))
            else:
                self.held[reservation.id] = reservation
                commands.append(WatchReservation(reservation))
        return commands

    def specific(self, evse_id: int) -> Reservation | None:
        return next((r for r in self.held.values() if r.evse_id == evse_id), None)

    def unspecified(self) -> list[Reservation]:
        return [r for r in self.held.values() if r.evse_id is None]

    def evse_state(self, evse: Evse) -> str:
        """An EVSE as a reservation sees it, reservations aside: Available, Occupied, Faulted or Unavailable."""
        statuses = [self._base_status(evse.id, c) for c in evse.connectors]
        if ConnectorStatus.FAULTED in statuses:
            return "Faulted"
        if evse.phase is Phase.AVAILABLE and ConnectorStatus.AVAILABLE in statuses:
            return "Available"
        if all(s is ConnectorStatus.UNAVAILABLE for s in statuses):
            return "Unavailable"
        return "Occupied"

    def free_evses(self) -> list[Evse]:
        """Available EVSEs no reservation names: what reservations of any EVSE share."""
        return [e for e in self._evses.values() if self.specific(e.id) is None and self.evse_state(e) == "Available"]

    def holds(self, evse_id: int) -> bool:
        """Whether the EVSE shows Reserved: a reservation names it, or it is among the last free EVSEs that the
        reservations of any EVSE need (H01.FR.20: as many available EVSEs as reservations)."""
        if self.specific(evse_id) is not None:
            return True
        unspecified = len(self.unspecified())
        if not unspecified:
            return False
        free = self.free_evses()
        return len(free) <= unspecified and any(e.id == evse_id for e in free)

    def expire_due(self, at: datetime) -> list[Command]:
        """Reservations whose expiry has passed by `at` (the watch may not have fired yet)."""
        due = [r for r in self.held.values() if r.expires_at <= at]
        for reservation in due:
            del self.held[reservation.id]
        return [RecordReservationEnded(r, "Expired") for r in due]

    def cancel(self, reservation_id: int) -> Outcome:
        gone = self.held.pop(reservation_id, None)
        if gone is None:
            return Outcome(False, reason=f"no reservation {reservation_id}", answer="Rejected")  # H02.FR.01
        return Outcome(True, (RecordReservationEnded(gone, "Cancelled"),), answer="Accepted")  # H02.FR.02

    def expired(self, reservation_id: int, expires_at: datetime) -> Outcome:
        """The watch of one reservation fired (a reservation replaced since has another expiry: a stale watch)."""
        held = self.held.get(reservation_id)
        if held is None or held.expires_at != expires_at:
            return Outcome(True, (), reason="stale reservation watch")
        del self.held[reservation_id]
        return Outcome(True, (RecordReservationEnded(held, "Expired"),))  # H04.FR.01, 1.6 §5.13 (2)

    def use(self, reservation: Reservation) -> Command:
        """A start used it: the reservation ends (1.6 §5.13 (1), H03.FR.09)."""
        del self.held[reservation.id]
        return RecordReservationEnded(reservation, "Used")

    def reserve(self, event: ReserveRequested) -> Outcome:
        reservation = event.reservation
        commands = self.expire_due(event.at)
        if reservation.expires_at <= event.at:
            return Outcome(False, tuple(commands), reason="the expiry has passed already", answer="Rejected")
        replaced = self.held.pop(reservation.id, None)  # 1.6 §5.13, H01.FR.02: the same id replaces it
        answer, why = self._place(reservation)
        if answer != "Accepted":
            if replaced is not None:
                self.held[replaced.id] = replaced  # a refused replacement leaves the reservation held
            return Outcome(False, tuple(commands), reason=why, answer=answer)
        self.held[reservation.id] = reservation
        commands.extend((RecordReservation(reservation), WatchReservation(reservation)))
        return Outcome(True, tuple(commands), reason="replaced" if replaced else "", answer="Accepted")

    def _place(self, reservation: Reservation) -> tuple[str, str]:
        """(ReservationStatus, why): 1.6 §5.13 / §7.40 and H01.FR.04, FR.11, FR.12, FR.14 (Occupied also for an EVSE
        reserved already, for the same or another identifier)."""
        unspecified = len(self.unspecified())
        free = self.free_evses()
        if reservation.evse_id is not None:
            evse = self._evses.get(reservation.evse_id)
            if evse is None:
                return "Rejected", f"unknown EVSE {reservation.evse_id}"
            if self.specific(evse.id) is not None:
                return "Occupied", f"EVSE {evse.id} is reserved already"
            state = self.evse_state(evse)
            if state != "Available":
                return state, f"EVSE {evse.id} is {state.lower()}"
            if len(free) - 1 < unspecified:  # H01.FR.07: one EVSE stays for each reservation of any EVSE
                return "Occupied", f"EVSE {evse.id} is held for a reservation of any EVSE"
            return "Accepted", ""
        if len(free) > unspecified:
            return "Accepted", ""
        states = {self.evse_state(e) for e in self._evses.values() if self.specific(e.id) is None}
        if states == {"Faulted"}:
            return "Faulted", "every EVSE is faulted"
        if states and states <= {"Faulted", "Unavailable"}:
            return "Unavailable", "every EVSE is unavailable"
        return "Occupied", "no EVSE is free for one more reservation"

    def for_start(self, evse: Evse, event: StartRequested) -> tuple[str, Reservation | None]:
        """(refusal, the reservation the start uses): an EVSE reserved for another identifier refuses it (1.6 §5.13:
        "refuse charging for all incoming idTags on the reserved connector, except ..."), and the last free EVSEs
        stay for reservations of any EVSE (H01.FR.07)."""
        specific = self.specific(evse.id)
        if specific is not None:
            if specific.matches(event.id_tag, event.group_id):
                return "", specific  # H03.FR.01 / FR.04
            return f"EVSE {evse.id} is reserved (reservation {specific.id}) for another identifier", None
        for reservation in self.unspecified():
            if reservation.matches(event.id_tag, event.group_id):
                return "", reservation  # H03.FR.03 / FR.06
        unspecified = len(self.unspecified())
        if unspecified:
            free = self.free_evses()
            after = len(free) - (1 if any(e.id == evse.id for e in free) else 0)
            if after < unspecified:
                return f"EVSE {evse.id} is held for a reservation of any EVSE", None
        return "", None

    def drop_unusable(self) -> list[Command]:
        """A reservation of an EVSE that went Faulted or Unavailable ends (1.6 §5.13 (3), H01.FR.16/17: Removed)."""
        gone = [
            r
            for r in self.held.values()
            if r.evse_id is not None and self.evse_state(self._evses[r.evse_id]) in ("Faulted", "Unavailable")
        ]
        for reservation in gone:
            del self.held[reservation.id]
        return [RecordReservationEnded(r, "Removed") for r in gone]
