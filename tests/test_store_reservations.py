"""Reservations in the store (issue 21 item 6): kept across restarts, replaced by id, their end queued as the
2.0.1 ReservationStatusUpdate in the same commit, and the reservation a transaction used kept with it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from station.core.model import Reservation, StartSource, Transaction
from station.store import Store

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def test_reservations_outlive_the_store_and_are_replaced_by_id(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.save_reservation(Reservation(7, 1, "ALICE", T0, "FLEET"))
    store.save_reservation(Reservation(8, None, "BOB", T0, connector_type="cType2"))
    store.save_reservation(Reservation(7, 2, "CAROL", T0))  # the same id replaces it
    store.close()
    store = Store(tmp_path / "s.db")
    assert store.reservations() == [Reservation(7, 2, "CAROL", T0), Reservation(8, None, "BOB", T0, None, "cType2")]
    store.reservation_ended(7)  # used or cancelled: nothing to tell
    assert store.outbox_depth() == 0
    store.reservation_ended(8, "Expired")
    assert store.reservations() == []
    message = store.next_message("other")
    assert message is not None and message.kind == "reservation_status"
    assert message.body == {"reservation_id": 8, "status": "Expired"}


def test_a_transaction_keeps_the_reservation_it_used(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    tx = Transaction("tx1", 1, "ALICE", StartSource.LOCAL, T0, started_at=T0, meter_start_wh=0, reservation_id=7)
    store.transaction_started(tx, offline=False)
    stored = store.transaction("tx1")
    assert stored is not None and stored.transaction.reservation_id == 7
