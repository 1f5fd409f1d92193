"""The store on a real SQLite file: atomic transaction+outbox writes, FIFO outbox, nothing deleted unanswered."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from station.core.model import SignedMeterRecord, StartSource, StopReason, Transaction
from station.smart.profiles import ChargingProfile, Kind, Period, Purpose, RateUnit, Recurrency, Schedule
from station.store import IdTagEntry, Store, StoreError
from tests.conftest import write_config

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


def test_delivered_is_not_synced_alone_but_survives_the_daemon_and_every_other_write_is(tmp_path: Path) -> None:
    """That the CSMS answered is written without a sync of its own (a power loss can only make the message go again),
    yet it is in the WAL at once: a second connection (the daemon restarted after SIGKILL) sees it. Every other write
    commits with synchronous=FULL, also right after a delivered() and after one that failed."""
    store = Store(tmp_path / "s.db")
    store.transaction_started(tx(), offline=False)
    store.enqueue("security_event", None, {"type": "x"})
    commits: list[tuple[int, str]] = []

    def trace(sql: str) -> None:
        if sql.startswith("BEGIN"):
            commits.append((store._db.execute("PRAGMA synchronous").fetchone()[0], sql))

    first = store.next_message()
    assert first is not None
    store._db.set_trace_callback(trace)
    store.delivered(first.id, csms_transaction=("tx1", "1001"))
    second = store.next_message()
    assert second is not None
    store.delivered(second.id)
    store.set_setting("x", "1")
    store._db.set_trace_callback(None)
    assert [level for level, _ in commits] == [1, 1, 2]  # NORMAL, NORMAL (no switch between them), FULL
    other = sqlite3.connect(tmp_path / "s.db")  # not closed: the store is still "running"
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    assert other.execute("SELECT csms_transaction_id FROM transactions").fetchone()[0] == "1001"
    other.close()
    store._db.execute("DROP TABLE tx_samples")  # a delivered() whose write fails
    with pytest.raises(StoreError):
        store.delivered(1, transaction_done="tx1")
    store._db.set_trace_callback(trace)
    store.set_setting("y", "1")
    store._db.set_trace_callback(None)
    assert commits[-1][0] == 2
    store.close()


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"s\.db"):
        Store(path)


@pytest.fixture
def unwritable_directory(tmp_path: Path) -> Iterator[Path]:
    """A store directory the daemon cannot write: read-only for the user (chmod) where the test runs as a user, a
    read-only file system where it runs as root (whom permission bits do not stop; CI runs as root)."""
    directory = tmp_path / "state"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("STATION_CI"):
            pytest.fail(f"cannot mount a read-only tmpfs in CI: {mounted.stderr.decode()}")
        pytest.skip(f"cannot mount a read-only file system: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_an_unwritable_store_directory_stops_the_daemon_with_one_clear_line(
    tmp_path: Path, unwritable_directory: Path
) -> None:
    """Issue 14.10: a read-only or unwritable store directory made `station run` exit with a traceback and the
    misleading "cannot create store directory" (the directory exists). Now: one line naming the file and the cause,
    and exit status 73 (EX_CANTCREAT)."""
    config = write_config(
        tmp_path / "station.toml",
        {
            "station": {"id": "CP-RO"},
            "csms": {"url": "ws://127.0.0.1:9/ocpp"},
            "meter": {"transport": "simulated", "simulator": {"state": str(tmp_path / "m.json")}},
            "storage": {"path": str(unwritable_directory / "station.db")},
        },
    )
    result = subprocess.run(
        [sys.executable, "-m", "station", "run", "--config", str(config), "--log-format", "console"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 73, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # (The daemon's own log file, beside the store, says once that it is off: a line of its own.)
    lines = [line for line in result.stderr.splitlines() if "store" in line and "log file" not in line]
    assert len(lines) == 1, result.stderr
    assert str(unwritable_directory / "station.db") in lines[0]
    assert "read-only file system" in lines[0] or "permission denied" in lines[0], lines[0]
    assert "cannot create store directory" not in result.stderr


def test_a_store_that_cannot_write_its_journal_names_the_directory(tmp_path: Path) -> None:
    """Issue 14.10: a store file that exists in a directory SQLite cannot write its journal (-wal) into."""
    directory = tmp_path / "state"
    directory.mkdir()
    Store(directory / "s.db").close()
    (directory / "s.db-wal").unlink(missing_ok=True)
    (directory / "s.db-shm").unlink(missing_ok=True)
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(directory), str(directory)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot bind-mount read-only: {mounted.stderr.decode().strip()}")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True)
    else:
        directory.chmod(0o555)
    try:
        with pytest.raises(StoreError) as raised:
            Store(directory / "s.db")
        message = str(raised.value)
        assert str(directory / "s.db") in message and "not writable" in message, message
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(directory)], check=False)
        else:
            directory.chmod(0o755)


def test_a_transaction_keeps_its_evse_and_connector(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.transaction_started(Transaction("t2", 2, "TAG", StartSource.REMOTE, T0, connector_id=3), offline=False)
    stored = store.transaction("t2")
    assert stored is not None and (stored.transaction.evse_id, stored.transaction.connector_id) == (2, 3)
    assert stored.transaction.meter is None
    store.close()


def test_availability_is_kept_per_connector_of_an_evse(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.availability(1, 1) is None
    store.set_availability(1, 1, "Inoperative")
    store.set_availabilities([(2, 1, "Inoperative"), (2, 2, "Operative")])
    store.set_availability(1, 1, "Operative")
    with pytest.raises(ValueError, match="EVSE 2 connector 1: 'Maybe'"):
        store.set_availabilities([(2, 2, "Inoperative"), (2, 1, "Maybe")])  # nothing of it is written
    store.close()
    again = Store(tmp_path / "s.db")
    assert [again.availability(1, 1), again.availability(2, 1), again.availability(2, 2)] == [
        "Operative",
        "Inoperative",
        "Operative",
    ]
    assert again.availability(1, 2) is None and again.setting("availability.1") is None
    again.close()


def test_counters_are_kept_and_the_list_version_is_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.counter("list_version") is None
    store.replace_id_tags("list", [IdTagEntry("TAG", "Accepted")], full=True, version=4)
    assert store.counter("list_version") == 4 and store.setting("list_version") is None
    store.set_counter("something", 7)
    msg = store.enqueue("transaction_started", "tx1")
    assert store.assign_seq_no(msg, "tx.tx1") == 0 and store.assign_seq_no(msg, "tx.tx1") == 0  # once per message
    assert store.counter("seq_no.tx.tx1") == 1
    store.delivered(msg, transaction_done="tx1")
    assert store.counter("seq_no.tx.tx1") is None  # the transaction is through: its counter goes
    store.close()
    again = Store(tmp_path / "s.db")
    assert again.counter("something") == 7 and again.counter("list_version") == 4
    again.close()


def test_the_identifier_of_a_start_that_never_reached_the_meter_is_forgotten(tmp_path: Path) -> None:
    """A 2.0.1 RequestStartTransaction that times out waiting for the car leaves no row behind (a CSMS repeating
    such starts must not grow the store)."""
    store = Store(tmp_path / "s.db")
    store.set_id_token("ref-1", {"id_token": "T", "type": "Central"})
    assert store.id_token("ref-1") == {"id_token": "T", "type": "Central"}
    store.forget_id_token("ref-1")
    assert store.id_token("ref-1") is None
    store.close()


# ---------------------------------------------------------------- installed charging profiles


def profile(profile_id: int, evse_id: int = 1, stack_level: int = 0, **changes: object) -> ChargingProfile:
    fields: dict[str, object] = {
        "id": profile_id,
        "evse_id": evse_id,
        "stack_level": stack_level,
        "purpose": Purpose.TX_DEFAULT,
        "kind": Kind.ABSOLUTE,
        "schedule": Schedule(RateUnit.A, (Period(0, 16.0), Period(3600, 6.0, phases=1)), start=T0, duration=7200),
    }
    fields.update(changes)
    return ChargingProfile(**fields)  # type: ignore[arg-type]


def test_charging_profiles_survive_reopening_with_every_field(tmp_path: Path) -> None:
    """K01.FR.27: profiles set by the CSMS persist across reboots; the store keeps every field, times in UTC."""
    store = Store(tmp_path / "s.db")
    assert store.charging_profiles() == []
    full = ChargingProfile(
        7, 2, 3, Purpose.TX, Kind.RECURRING,
        Schedule(RateUnit.W, (Period(0, 11000.0, phases=3), Period(60, 1380.5, phases=1, phase_to_use=2)),
                 duration=86400, start=T0, min_rate=1380.0, id=4),
        recurrency=Recurrency.DAILY, valid_from=T0, valid_to=datetime(2026, 12, 24, tzinfo=UTC),
        transaction_id="csms-tx-9", transaction_ref="ref-9", source="EMS",
    )  # fmt: skip
    store.install_charging_profile(profile(1, evse_id=0), ())
    store.install_charging_profile(full, ())
    store.close()
    again = Store(tmp_path / "s.db")
    assert again.charging_profiles() == [profile(1, evse_id=0), full]
    assert raw_rows(
        tmp_path / "s.db", "SELECT id, evse_id, purpose, stack_level, transaction_ref FROM charging_profiles"
    ) == [
        (1, 0, "TxDefaultProfile", 0, None),
        (7, 2, "TxProfile", 3, "ref-9"),
    ]
    again.close()


def test_installing_a_profile_removes_the_ones_it_replaced_in_one_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    for n in (1, 2, 3):
        store.install_charging_profile(profile(n, stack_level=n), ())
    store.install_charging_profile(profile(2, stack_level=5), [1, 2])  # its own id among the replaced
    assert [(p.id, p.stack_level) for p in store.charging_profiles()] == [(2, 5), (3, 3)]
    store.install_charging_profile(profile(3, stack_level=6), ())  # the same id replaces without being named
    assert [(p.id, p.stack_level) for p in store.charging_profiles()] == [(2, 5), (3, 6)]
    store.close()


def test_a_failed_profile_install_keeps_the_replaced_ones(tmp_path: Path) -> None:
    """Removing the replaced profiles and adding the new one is one SQLite transaction: all or nothing."""
    path = tmp_path / "s.db"
    store = Store(path)
    store.install_charging_profile(profile(1), ())
    blocker = sqlite3.connect(path)
    blocker.execute("CREATE TRIGGER no_more BEFORE INSERT ON charging_profiles BEGIN SELECT RAISE(ABORT, 'full'); END")
    blocker.commit()
    with pytest.raises(StoreError, match="write failed: full"):
        store.install_charging_profile(profile(2), [1])
    assert store.charging_profiles() == [profile(1)]
    blocker.close()
    store.close()


def test_profiles_are_removed_by_id(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    for n in (1, 2, 3):
        store.install_charging_profile(profile(n, stack_level=n), ())
    store.remove_charging_profiles([1, 3, 99])
    store.remove_charging_profiles([])
    assert [p.id for p in store.charging_profiles()] == [2]
    store.close()


def test_an_unreadable_profile_row_is_logged_and_left_out(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store(path)
    store.install_charging_profile(profile(1), ())
    store.install_charging_profile(profile(3), ())
    db = sqlite3.connect(path)
    db.execute("INSERT INTO charging_profiles VALUES (2, 1, 'TxDefaultProfile', 0, NULL, '{\"id\": 2}')")
    db.execute("INSERT INTO charging_profiles VALUES (4, 1, 'TxDefaultProfile', 0, NULL, 'not json')")
    db.commit()
    db.close()
    with structlog.testing.capture_logs() as logs:
        assert [p.id for p in store.charging_profiles()] == [1, 3]
    unreadable = [e for e in logs if e["event"] == "charging profile unreadable"]
    assert [e["id"] for e in unreadable] == [2, 4] and all(e["log_level"] == "warning" for e in unreadable)
    assert "schedule" in unreadable[0]["error"]
    store.close()


def raw_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return [tuple(r) for r in db.execute(sql).fetchall()]
    finally:
        db.close()
