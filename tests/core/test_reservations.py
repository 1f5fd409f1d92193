"""Reservations in the core (issue 21 item 6): 1.6 §5.13 ReserveNow, §5.1 CancelReservation, §7.40 ReservationStatus;
2.0.1 H01-H04. The core holds the reservations, derives the Reserved status and decides who may start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from station.core.model import (
    AvailabilityChanged,
    ConnectorStatus,
    EvPilotChanged,
    Layout,
    MeterLinkChanged,
    MeterStarted,
    Outcome,
    Pilot,
    RecordReservation,
    RecordReservationEnded,
    ReportStatus,
    Reservation,
    ReservationCancelled,
    ReservationExpired,
    ReserveRequested,
    StartMeterTransaction,
    StartRequested,
    StationAccepted,
    WatchReservation,
)
from station.core.station import ChargingStation, EvSide

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


def station_of(n: int = 2) -> ChargingStation:
    station = ChargingStation(Layout.one_connector_each(n))
    station.handle(StationAccepted())
    return station


def reserve(
    station: ChargingStation, rid: int, evse: int | None, tag: str = "ALICE", group: str | None = None
) -> Outcome:
    return station.handle(ReserveRequested(Reservation(rid, evse, tag, LATER, group), T0))


def start(station: ChargingStation, evse: int, tag: str, group: str | None = None, ref: str = "tx1") -> Outcome:
    return station.handle(StartRequested(evse, tag, T0 + timedelta(minutes=1), ref, group_id=group))


def ended(outcome: Outcome, status: str) -> list[Reservation]:
    return [c.reservation for c in outcome.commands if isinstance(c, RecordReservationEnded) and c.status == status]


def test_a_reserved_evse_reports_reserved_and_the_reservation_is_stored_and_watched() -> None:
    """1.6 §5.13 (A7: Available -> Reserved); H01.FR.23: Accepted and StatusNotification Reserved."""
    station = station_of()
    outcome = reserve(station, 7, 1)
    assert outcome.accepted and outcome.answer == "Accepted"
    kinds = [type(c) for c in outcome.commands]
    assert RecordReservation in kinds and WatchReservation in kinds
    assert ReportStatus(1, ConnectorStatus.RESERVED) in outcome.commands
    assert station.status_of(1) is ConnectorStatus.RESERVED and station.status_of(2) is ConnectorStatus.AVAILABLE


def test_another_identifier_is_refused_and_the_reserved_one_uses_the_reservation() -> None:
    """1.6 §5.13: charging refused for other idTags; the start ends the reservation and carries its id
    (StartTransaction.reservationId, H01.FR.15, H03.FR.01, H03.FR.09)."""
    station = station_of()
    reserve(station, 7, 1)
    refused = start(station, 1, "BOB")
    assert not refused.accepted and "reserved" in refused.reason
    assert station.status_of(1) is ConnectorStatus.RESERVED
    used = start(station, 1, "ALICE")
    assert used.accepted and used.transaction is not None and used.transaction.reservation_id == 7
    assert [r.id for r in ended(used, "Used")] == [7]
    assert not station.reservations
    assert station.status_of(1) is ConnectorStatus.PREPARING


def test_the_parent_id_tag_or_group_id_token_may_use_it() -> None:
    """1.6 §5.13 "except when the incoming idTag or the parent idTag match"; H03.FR.04 (groupIdToken)."""
    station = station_of()
    reserve(station, 7, 1, group="FLEET")
    assert not start(station, 1, "BOB", group="OTHER").accepted
    outcome = start(station, 1, "BOB", group="FLEET")
    assert outcome.accepted and outcome.transaction is not None and outcome.transaction.reservation_id == 7


def test_expiry_makes_the_evse_available_again() -> None:
    """1.6 §5.13 (2) and G1; H04.FR.01-03: Expired, and Available for anyone."""
    station = station_of()
    reserve(station, 7, 1)
    stale = station.handle(ReservationExpired(7, LATER - timedelta(minutes=5)))  # a replaced reservation's watch
    assert stale.commands == () and station.reservations
    outcome = station.handle(ReservationExpired(7, LATER))
    assert [r.id for r in ended(outcome, "Expired")] == [7]
    assert ReportStatus(1, ConnectorStatus.AVAILABLE) in outcome.commands
    assert start(station, 1, "BOB").accepted


def test_a_start_after_the_expiry_does_not_wait_for_the_watch() -> None:
    station = station_of()
    reserve(station, 7, 1)
    outcome = station.handle(StartRequested(1, "BOB", LATER + timedelta(seconds=1), "tx1"))
    assert outcome.accepted and [r.id for r in ended(outcome, "Expired")] == [7]


def test_cancel_and_cancel_of_an_unknown_id() -> None:
    """1.6 §5.1 / §7.5; H02.FR.01 (Rejected), H02.FR.02 (cancelled, Available again, no status update)."""
    station = station_of()
    reserve(station, 7, 1)
    assert station.handle(ReservationCancelled(8)).answer == "Rejected"
    outcome = station.handle(ReservationCancelled(7))
    assert outcome.answer == "Accepted" and [r.id for r in ended(outcome, "Cancelled")] == [7]
    assert ReportStatus(1, ConnectorStatus.AVAILABLE) in outcome.commands


def test_the_answers_occupied_faulted_unavailable() -> None:
    """1.6 §5.13 / §7.40; H01.FR.11 (reserved or occupied), H01.FR.12 (Faulted), H01.FR.14 (Unavailable)."""
    station = station_of(3)
    reserve(station, 1, 1)
    assert reserve(station, 2, 1, "BOB").answer == "Occupied"  # reserved for another idTag
    assert reserve(station, 3, 1).answer == "Occupied"  # or for the same one
    station.handle(MeterLinkChanged(2, False, "silent"))
    assert reserve(station, 4, 2).answer == "Faulted"
    station.handle(AvailabilityChanged(3, False))
    assert reserve(station, 5, 3).answer == "Unavailable"
    assert reserve(station, 6, 9).answer == "Rejected"  # no such EVSE
    busy = station_of(1)
    start(busy, 1, "BOB")
    assert reserve(busy, 1, 1).answer == "Occupied"


def test_the_same_id_replaces_the_reservation() -> None:
    """1.6 §5.13 "replace that reservation"; H01.FR.02 (TC_H_23_CS)."""
    station = station_of()
    reserve(station, 7, 1)
    outcome = reserve(station, 7, 2, "BOB")
    assert outcome.answer == "Accepted" and outcome.reason == "replaced"
    assert station.status_of(1) is ConnectorStatus.AVAILABLE and station.status_of(2) is ConnectorStatus.RESERVED
    assert station.reservations[7].id_tag == "BOB"


def test_a_fault_or_unavailability_removes_the_reservation() -> None:
    """1.6 §5.13 (3); H01.FR.16 (Faulted) and H01.FR.17 (Unavailable): Removed."""
    station = station_of()
    reserve(station, 7, 1)
    reserve(station, 8, 2, "BOB")
    faulted = station.handle(MeterLinkChanged(1, False, "silent"))
    assert [r.id for r in ended(faulted, "Removed")] == [7]
    unavailable = station.handle(AvailabilityChanged(2, False))
    assert [r.id for r in ended(unavailable, "Removed")] == [8]
    station.handle(MeterLinkChanged(1, True))
    assert station.status_of(1) is ConnectorStatus.AVAILABLE


def test_a_reservation_of_any_evse_keeps_one_free() -> None:
    """1.6 §5.13 connector 0 "one connector remains available for the reserved idTag"; H01.FR.04, H01.FR.07,
    H01.FR.20 (as many reservations as available EVSEs: those report Reserved), H03.FR.03."""
    station = station_of(2)
    outcome = reserve(station, 7, None)
    assert outcome.answer == "Accepted"
    assert station.status_of(1) is ConnectorStatus.AVAILABLE  # two free EVSEs, one reservation
    assert start(station, 1, "BOB").accepted  # the other stays free
    assert station.status_of(2) is ConnectorStatus.RESERVED  # now the last one is held
    assert not start(station, 2, "CAROL", ref="tx2").accepted
    assert reserve(station, 8, 2, "CAROL").answer == "Occupied"
    assert reserve(station, 9, None, "CAROL").answer == "Occupied"
    used = start(station, 2, "ALICE", ref="tx3")
    assert used.accepted and used.transaction is not None and used.transaction.reservation_id == 7


def test_a_reservation_of_any_evse_goes_where_the_identifier_is_started() -> None:
    station = station_of(2)
    reserve(station, 7, None)
    reserve(station, 8, 2, "BOB")
    assert station.status_of(1) is ConnectorStatus.RESERVED  # the one free EVSE is held
    assert station.reserved_for("ALICE", None) == 1 and station.reserved_for("BOB", None) == 2
    assert station.reserved_for("CAROL", None) is None
    assert reserve(station, 9, None, "CAROL").answer == "Occupied"


def test_refused_replacement_keeps_the_old_reservation() -> None:
    station = station_of(2)
    reserve(station, 7, 1)
    station.handle(MeterLinkChanged(2, False, "silent"))
    assert reserve(station, 7, 2).answer == "Faulted"
    assert station.reservations[7].evse_id == 1


def test_a_car_plugged_in_on_a_reserved_evse_keeps_it_reserved() -> None:
    """1.6 G2 (Reserved -> Preparing when the reservation's identity is presented); H03.FR.10."""
    station = ChargingStation(Layout.one_connector_each(1), {1: EvSide(senses_plug=True)})
    station.handle(StationAccepted())
    reserve(station, 7, 1)
    station.handle(EvPilotChanged(1, Pilot.B))
    assert station.status_of(1) is ConnectorStatus.RESERVED
    outcome = start(station, 1, "ALICE")
    assert any(isinstance(c, StartMeterTransaction) for c in outcome.commands)
    assert station.status_of(1) is ConnectorStatus.PREPARING
    station.handle(MeterStarted("tx1", 0, T0))


def test_restored_reservations_and_expired_ones() -> None:
    """Kept across restarts; one whose expiry passed while the station was down ends Expired (H04.FR.01)."""
    station = station_of(2)
    kept = Reservation(7, 1, "ALICE", LATER)
    gone = Reservation(8, 2, "BOB", T0 - timedelta(minutes=1))
    commands = station.restore_reservations([kept, gone], T0)
    assert WatchReservation(kept) in commands and RecordReservationEnded(gone, "Expired") in commands
    assert ReportStatus(1, ConnectorStatus.RESERVED) in commands
    assert list(station.reservations) == [7]


def test_an_expiry_in_the_past_is_rejected() -> None:
    station = station_of()
    outcome = station.handle(ReserveRequested(Reservation(1, 1, "A", T0 - timedelta(seconds=1)), T0))
    assert outcome.answer == "Rejected" and not station.reservations
