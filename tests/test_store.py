"""The store on a real SQLite file: atomic transaction+outbox writes, FIFO outbox, nothing deleted unanswered."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from station.core.model import SignedMeterRecord, StartSource, StopReason, Transaction
from station.store import Store, StoreError

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def tx(ref: str = "tx1") -> Transaction:
    return Transaction(ref, 1, "TAG", StartSource.REMOTE, T0, started_at=T0, meter_start_wh=100)


def test_started_and_ended_transactions_queue_messages_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.transaction_started(tx(), offline=False)
    record = SignedMeterRecord("OCMF|{}|{}", verified=True, signing_method="ECDSA-secp256r1-SHA256")
    ended = Transaction(
        "tx1",
        1,
        "TAG",
        StartSource.REMOTE,
        T0,
        started_at=T0,
        meter_start_wh=100,
        stopped_at=T0,
        meter_stop_wh=200,
        stop_reason=StopReason.REMOTE,
        signed_records=(record,),
    )
    store.transaction_ended(ended, offline=True)
    first = store.next_message()
    assert first is not None and first.kind == "transaction_started" and not first.offline
    store.delivered(first.id)
    second = store.next_message()
    assert second is not None and second.kind == "transaction_ended" and second.offline
    assert store.outbox_depth() == 1
    stored = store.transaction("tx1")
    assert stored is not None and stored.state == "ended" and stored.verified is True
    assert stored.transaction.signed_records == (record,)
    store.close()


def test_everything_survives_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.transaction_started(tx(), offline=False)
    store.set_csms_transaction_id("tx1", "1001")
    store.set_setting("ocpp16.HeartbeatInterval", "120")
    store.close()
    again = Store(tmp_path / "s.db")
    assert [t.transaction.ref for t in again.open_transactions()] == ["tx1"]
    assert again.transaction("tx1").csms_transaction_id == "1001"  # type: ignore[union-attr]
    assert again.setting("ocpp16.HeartbeatInterval") == "120"
    assert again.outbox_depth() == 1
    again.close()


def test_given_up_messages_are_kept_aside_not_deleted(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    msg_id = store.enqueue("transaction_ended", "tx1")
    assert store.attempt_failed(msg_id, "CALLERROR InternalError") == 1
    store.give_up(msg_id, "CALLERROR InternalError")
    assert store.outbox_depth() == 0
    failed = store.failed_messages()
    assert len(failed) == 1 and failed[0]["tx_ref"] == "tx1" and failed[0]["attempts"] == 1
    store.close()


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.transaction_started(tx(), offline=False)
    with pytest.raises(StoreError):
        store.transaction_started(tx(), offline=False)  # same ref: the whole write is rolled back
    assert store.outbox_depth() == 1
    store.close()


def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    # synchronous is a property of the connection, so it is read on the store's own connection (2 = FULL).
    assert store._read("PRAGMA synchronous")[0][0] == 2
    store.close()
    db = sqlite3.connect(tmp_path / "s.db")  # WAL is a property of the file
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"s\.db"):
        Store(path)
