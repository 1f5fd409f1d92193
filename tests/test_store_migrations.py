"""Store migrations on real SQLite files: every released schema version, with the data its own code wrote
(tests/data/stores/vN.sql, made by make_released_store.py), migrates to the latest with every row keeping its
meaning; a migration is all or nothing; a newer store is refused; an up-to-date store is left as it is."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from station.core.model import MeterStamp, SignedMeterRecord, StartSource, StopReason, Transaction
from station.store import SCHEMA_VERSION, IdTagEntry, Store, StoreError, migrations

DUMPS = Path(__file__).resolve().parent / "data" / "stores"
VECTORS = json.loads((Path(__file__).resolve().parent / "data" / "ocmf-vectors-sample.json").read_text())
RELEASED = (1, 2)
DONE, QUEUED, OPEN = "a1" * 16, "b2" * 16, "c3" * 16  # as make_released_store.py wrote them
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def released_store(tmp_path: Path, version: int) -> Path:
    """The released store as a file on disk, in WAL mode as the releases kept it."""
    path = tmp_path / f"v{version}.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript((DUMPS / f"v{version}.sql").read_text(encoding="utf-8"))
    db.close()
    return path


def raw(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return [tuple(r) for r in db.execute(sql, params).fetchall()]
    finally:
        db.close()


def fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """The main file's bytes, its user_version and its content."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    db = sqlite3.connect(path)
    try:
        return digest, db.execute("PRAGMA user_version").fetchone()[0], list(db.iterdump())
    finally:
        db.close()


def schema(path: Path) -> set[tuple[object, ...]]:
    return set(raw(path, "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))


def count(path: Path, table: str) -> int:
    return int(raw(path, f"SELECT COUNT(*) FROM {table}")[0][0])  # type: ignore[call-overload]


@pytest.mark.parametrize("version", RELEASED)
def test_a_released_store_migrates_to_the_latest_with_every_row_keeping_its_meaning(
    tmp_path: Path, version: int
) -> None:
    path = released_store(tmp_path, version)
    rows_before = {t: count(path, t) for t in ("transactions", "outbox", "outbox_failed", "id_tags", "security_log")}
    settings_before = dict(raw(path, "SELECT key, value FROM settings"))
    store = Store(path)
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    for table, n in rows_before.items():
        assert count(path, table) == n, table

    # The delivered transaction: ended, its signed record and everything the CSMS taught; no meter stamp (old row).
    done = store.transaction(DONE)
    assert done is not None and done.state == "ended" and done.csms_transaction_id == DONE
    assert done.delivered_at is not None and done.verified is True
    keba = next(v for v in VECTORS if v["source"].endswith("test_ocmf_keba_kcp30.xml"))
    assert [r.data for r in done.transaction.signed_records] == [keba["ocmf"]]
    assert (done.transaction.evse_id, done.transaction.connector_id, done.transaction.meter) == (1, 1, None)
    assert done.transaction.stop_reason is StopReason.REMOTE and done.transaction.meter_stop_wh == 260

    # The ended transaction whose end is still queued: its begin and end records, undelivered.
    queued = store.transaction(QUEUED)
    assert queued is not None and queued.state == "ended" and queued.delivered_at is None
    assert [r.context for r in queued.transaction.signed_records] == ["Transaction.Begin", "Transaction.End"]
    assert queued.transaction.source is StartSource.LOCAL

    # The open transaction is still open and restorable as the runtime restores it.
    [open_tx] = store.open_transactions()
    tx = open_tx.transaction
    assert (tx.ref, tx.evse_id, tx.connector_id, tx.id_tag, tx.meter_start_wh) == (OPEN, 1, 1, "TAG-C", 1420)
    assert tx.remote_start_id == 33 and tx.stop_reason is None and tx.meter is None
    store.set_stop_reason(OPEN, StopReason.POWER_LOSS)
    assert store.transaction(OPEN).transaction.stop_reason is StopReason.POWER_LOSS  # type: ignore[union-attr]

    # The queued outbox is delivered in order, each message with its stable id and, for the refused end, the seqNo
    # it was first sent with; the transaction whose numbering began goes on without a gap, the unsent one from 0.
    ids_before = dict(raw(path, "SELECT id, message_id FROM outbox"))
    first_number = {1: 3, 2: 1}[version]  # v1 numbered per EVSE (1 and 2 went to the delivered one), v2 per tx
    ended = store.next_message("transaction")
    assert ended is not None and (ended.kind, ended.tx_ref, ended.attempts) == ("transaction_ended", QUEUED, 1)
    assert ended.message_id == ids_before[ended.id] and ended.call_id == f"{ended.message_id}.1"
    assert store.assign_seq_no(ended.id, f"tx.{QUEUED}") == first_number
    assert store.counter(f"seq_no.tx.{QUEUED}") == first_number + 1
    store.delivered(ended.id, transaction_done=QUEUED)
    assert store.transaction(QUEUED).delivered_at is not None  # type: ignore[union-attr]
    assert store.counter(f"seq_no.tx.{QUEUED}") is None
    started = store.next_message("transaction")
    assert started is not None and (started.kind, started.tx_ref, started.offline) == (
        "transaction_started",
        OPEN,
        True,
    )
    assert store.assign_seq_no(started.id, f"tx.{OPEN}") == 0
    store.delivered(started.id, csms_transaction=(OPEN, OPEN))
    reading = store.next_message("transaction")
    assert reading is not None and reading.kind == "meter_values" and reading.body["energy_wh"] == 1431
    assert store.assign_seq_no(reading.id, f"tx.{OPEN}") == 1
    store.delivered(reading.id)
    assert store.next_message("transaction") is None
    event = store.next_message("other")
    assert event is not None and event.kind == "security_event" and event.body["type"] == "InvalidCsmsCertificate"
    [failed] = store.failed_messages()
    assert failed["kind"] == "security_event" and failed["last_error"] == "CALLERROR FormationViolation"

    # Availability is in connector_state, the list version in counters; both gone from settings.
    assert store.availability(1, 1) == "Inoperative" and store.availability(2, 1) is None
    assert store.counter("list_version") == 8
    assert store.setting("availability.1") is None and store.setting("list_version") is None
    assert raw(path, "SELECT key FROM settings WHERE key LIKE 'seq_no.%'") == []
    moved = {"availability.1", "list_version"}
    kept = {k: v for k, v in settings_before.items() if k not in moved and not k.startswith("seq_no.")}
    assert kept == dict(raw(path, "SELECT key, value FROM settings"))
    assert store.setting("accepted_once") == "1" and store.setting("ocpp16.MeterValueSampleInterval") == "60"

    # The local list (version 8 removed TAG-B), the cache, the security log.
    assert store.id_tag_entry("list", "TAG-A") == IdTagEntry("TAG-A", "Accepted")
    assert store.id_tag_entry("list", "TAG-B") is None
    assert store.id_tag_entry("list", "TAG-X") == IdTagEntry("TAG-X", "Blocked")
    cached = store.id_tag_entry("cache", "TAG-C")
    assert cached is not None and cached.expiry == datetime(2026, 12, 20, 8, tzinfo=UTC)
    assert [e["type"] for e in store.security_log()] == ["InvalidCsmsCertificate", "SettingSystemTime"]
    if version >= 2:  # what only version 2 kept
        assert [s["energy_wh"] for s in store.samples(OPEN, "periodic")] == [1431]
        assert store.id_token(OPEN) == {"idToken": "TAG-C", "type": "ISO14443"}
        assert store.begin_run("boot-2", "0.2.0").state == "running"  # killed while the transaction ran
    store.close()


@pytest.mark.parametrize("version", RELEASED)
def test_a_migrated_store_has_the_schema_of_a_fresh_one(tmp_path: Path, version: int) -> None:
    migrated = released_store(tmp_path, version)
    Store(migrated).close()
    fresh = tmp_path / "fresh.db"
    Store(fresh).close()
    assert raw(fresh, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert schema(migrated) == schema(fresh)
    assert {"counters", "connector_state", "charging_profiles"} <= {row[1] for row in schema(fresh)}


def test_a_failing_migration_leaves_the_file_untouched(tmp_path: Path) -> None:
    """A row the migration cannot move (an availability no release wrote) fails migration 3 after it has altered
    the transactions table: everything is rolled back, the file is byte for byte what it was."""
    path = released_store(tmp_path, 2)
    raw_db = sqlite3.connect(path)
    raw_db.execute("INSERT INTO settings (key, value) VALUES ('availability.2', 'Maybe')")
    raw_db.commit()
    raw_db.close()
    before = fingerprint(path)
    with pytest.raises(StoreError) as error:
        Store(path)
    message = str(error.value)
    assert str(path) in message and "version 2" in message and "migration 3" in message
    assert "'availability.2'" in message and "'Maybe'" in message and "unchanged" in message
    assert fingerprint(path) == before


def test_a_failure_after_the_last_migration_step_leaves_the_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every migration from version 1 has run when the failure comes (as a full disk at the end would): nothing of
    any of them stays."""
    path = released_store(tmp_path, 1)
    before = fingerprint(path)
    last = migrations.MIGRATIONS[-1]

    def then_fail(db: sqlite3.Connection) -> None:
        last.apply(db)
        assert db.execute("SELECT COUNT(*) FROM connector_state").fetchone()[0] == 1  # it did its work
        raise sqlite3.OperationalError("database or disk is full")

    failing = migrations.Migration(last.version, last.summary, then_fail)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:-1], failing))
    latest = SCHEMA_VERSION
    with pytest.raises(
        StoreError, match=rf"from schema version 1 to {latest} failed at migration {latest} \(database or disk is full"
    ):
        Store(path)
    assert fingerprint(path) == before
    monkeypatch.undo()
    store = Store(path)  # and the real migration still goes through afterwards
    assert store.availability(1, 1) == "Inoperative"
    store.close()


def test_a_store_newer_than_the_code_is_refused_and_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    before = fingerprint(path)
    with pytest.raises(StoreError, match=rf"s\.db has schema version {SCHEMA_VERSION + 1}, newer .*never downgraded"):
        Store(path)
    assert fingerprint(path) == before


def test_reopening_an_up_to_date_store_changes_nothing(tmp_path: Path) -> None:
    path = released_store(tmp_path, 2)
    Store(path).close()
    before = fingerprint(path)
    Store(path).close()
    assert fingerprint(path) == before


def test_an_interrupted_first_start_is_completed(tmp_path: Path) -> None:
    """The releases wrote their tables, then user_version, in separate commits: a first start killed in between left
    a version-0 file with some (empty) tables. It becomes a complete store."""
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    v1 = (DUMPS / "v1.sql").read_text(encoding="utf-8")
    first_tables = v1[v1.index("CREATE TABLE id_tags") : v1.index("INSERT INTO")]
    db.executescript(first_tables)
    db.close()
    assert raw(path, "PRAGMA user_version") == [(0,)]
    store = Store(path)
    store.transaction_started(Transaction("t", 1, "TAG", StartSource.REMOTE, T0), offline=False)
    assert store.outbox_depth() == 1 and raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    store.close()


def test_a_version_0_file_with_foreign_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.close()
    before = fingerprint(path)
    with pytest.raises(StoreError, match=r"other\.db.*not a station store.*invoices"):
        Store(path)
    assert fingerprint(path) == before


# ---------------------------------------------------------------- version 4: installed charging profiles


def _v3_started_sql(tx: Transaction) -> tuple[str, tuple[object, ...]]:
    """A started transaction as versions 3 and 4 wrote it (before migration 5's reservation_id)."""
    sql, params = _CURRENT_STARTED_SQL(tx)
    return sql.replace(", reservation_id)", ")").replace(", ?)", ")"), params[:-1]


_CURRENT_STARTED_SQL = Store._started_sql


def version_3_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store of schema version 3 (issue 17's release) made by migrations 1..3, with rows of every kind that
    version's code wrote."""
    path = tmp_path / "v3.db"
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        patch.setattr(Store, "_started_sql", staticmethod(_v3_started_sql))
        store = Store(path)
        stamp = MeterStamp("Model-1", "SN-1", "1.2.3", "KEY")
        started = Transaction("t3", 2, "TAG", StartSource.REMOTE, T0, started_at=T0, connector_id=1, meter=stamp)
        store.transaction_started(started, offline=True)
        store.set_counter("list_version", 5)
        store.set_availability(2, 1, "Inoperative")
        store.set_setting("ocpp16.HeartbeatInterval", "90")
        store.close()
    assert raw(path, "PRAGMA user_version") == [(3,)]
    assert "charging_profiles" not in {row[1] for row in schema(path)}
    return path


def test_a_version_3_store_migrates_to_4_keeping_its_rows_and_gets_an_empty_profile_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 4 only adds the table of installed charging profiles (K01.FR.27: they persist across reboots)."""
    from station.smart.profiles import ChargingProfile, Kind, Period, Purpose, RateUnit, Schedule

    path = version_3_store(tmp_path, monkeypatch)
    outbox_before = raw(path, "SELECT * FROM outbox")
    store = Store(path)
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION >= 4
    [open_tx] = store.open_transactions()
    tx, meter = open_tx.transaction, open_tx.transaction.meter
    assert (tx.ref, tx.evse_id, meter.serial if meter else None) == ("t3", 2, "SN-1")
    assert raw(path, "SELECT * FROM outbox") == outbox_before
    assert store.counter("list_version") == 5 and store.availability(2, 1) == "Inoperative"
    assert store.setting("ocpp16.HeartbeatInterval") == "90"
    assert store.charging_profiles() == []
    assert store.reservations() == [] and tx.reservation_id is None  # migration 5
    profile = ChargingProfile(1, 0, 0, Purpose.TX_DEFAULT, Kind.RELATIVE, Schedule(RateUnit.A, (Period(0, 16.0),)))
    store.install_charging_profile(profile, ())
    store.close()
    assert Store(path).charging_profiles() == [profile]


def test_a_failing_migration_4_leaves_a_version_3_store_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = version_3_store(tmp_path, monkeypatch)
    before = fingerprint(path)
    v4 = next(m for m in migrations.MIGRATIONS if m.version == 4)

    def then_fail(db: sqlite3.Connection) -> None:
        v4.apply(db)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(
        migrations,
        "MIGRATIONS",
        tuple(replace(m, apply=then_fail) if m.version == 4 else m for m in migrations.MIGRATIONS),
    )
    with pytest.raises(StoreError, match=r"from schema version 3 to .* failed at migration 4 \(disk I/O error"):
        Store(path)
    assert fingerprint(path) == before


# ---------------------------------------------------------------- a transaction remembers its meter


def vector(source_end: str) -> dict[str, str]:
    return next(v for v in VECTORS if v["source"].endswith(source_end))


def stamped(ref: str, evse_id: int, v: dict[str, str], serial: str) -> tuple[Transaction, Transaction]:
    """(started, ended) on connector 2 of the EVSE, metered and signed by the meter of the vector's key."""
    meter = MeterStamp("Model-" + serial, serial, "1.2.3", v["public_key"])
    started = Transaction(ref, evse_id, "TAG", StartSource.REMOTE, T0, started_at=T0, connector_id=2, meter=meter)
    record = SignedMeterRecord(v["ocmf"], signing_method=v["signature_algorithm"], verified=True)
    ended = Transaction(
        ref, evse_id, "TAG", StartSource.REMOTE, T0, started_at=T0, meter_start_wh=0, stopped_at=T0,
        meter_stop_wh=1, stop_reason=StopReason.LOCAL, signed_records=(record,), connector_id=2,
    )  # fmt: skip  # the end as the core hands it over: the stamp came with the start
    return started, ended


def test_a_transaction_stored_with_its_meter_reads_back_with_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    started, ended = stamped("t1", 2, vector("test_ocmf_keba_kcp30.xml"), "SN-1")
    store.transaction_started(started, offline=False)
    assert store.transaction("t1").transaction.meter == started.meter  # type: ignore[union-attr]
    store.transaction_ended(ended, offline=False)
    store.close()
    again = Store(tmp_path / "s.db")
    stored = again.transaction("t1")
    assert stored is not None and stored.transaction.meter == started.meter
    assert (stored.transaction.evse_id, stored.transaction.connector_id) == (2, 2)
    again.close()


def test_a_recovered_transaction_is_stored_with_its_meter(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    started, ended = stamped("t1", 1, vector("test_ocmf_keba_kcp30.xml"), "SN-1")
    store.transaction_recovered(replace(ended, meter=started.meter), offline=False)
    stored = store.transaction("t1")
    assert stored is not None and stored.state == "ended" and stored.transaction.meter == started.meter
    store.close()


def test_two_transactions_with_different_meters_keep_their_own_keys(tmp_path: Path) -> None:
    """A meter swap (or two EVSEs): each bill stays verifiable with the key of the meter that signed it."""
    store = Store(tmp_path / "s.db")
    keba, other = vector("test_ocmf_keba_kcp30.xml"), vector("test.xml (value 2)")
    for ref, v, serial in (("old", keba, "SN-OLD"), ("new", other, "SN-NEW")):
        started, ended = stamped(ref, 1, v, serial)
        store.transaction_started(started, offline=False)
        store.transaction_ended(ended, offline=False)
    keys = {}
    for ref, v in (("old", keba), ("new", other)):
        stored = store.transaction(ref)
        assert stored is not None and stored.transaction.meter is not None
        assert stored.transaction.meter.public_key == v["public_key"]
        keys[ref] = stored.transaction.meter.public_key
    assert keys["old"] != keys["new"]
    assert store.transaction("old").transaction.meter.serial == "SN-OLD"  # type: ignore[union-attr]
    store.close()


# ---------------------------------------------------------------- a migrated store in a running station


@pytest.mark.parametrize("version", RELEASED)
async def test_a_running_station_delivers_what_a_released_store_queued(tmp_path: Path, version: int) -> None:
    """The release's 2.0.1 station was killed with an end refused once and a start and a reading queued: on the
    migrated store the station delivers them in order, the refused end under the message id and seqNo it was first
    sent with, the start with seqNo 0 and the reading with 1; the transaction left open is restored (being ended on
    the meter, which here never heard of it)."""
    from station.app import running_station
    from station.config import parse_config
    from station.demo.csms import LocalCsms

    path = released_store(tmp_path, version)
    stored_ids = dict(raw(path, "SELECT tx_ref || kind, message_id FROM outbox WHERE tx_ref IS NOT NULL"))
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    config = {
        "station": {"id": "CP-MIGRATED"},
        "csms": {"url": csms.url, "ocpp_version": "2.0.1", "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(path)},
    }
    try:
        async with running_station(parse_config(config)) as station:
            await csms.wait_until(lambda: len(csms.messages("TransactionEvent")) >= 3, timeout=30)
            await csms.wait_until(lambda: station.store.outbox_depth() == 0, timeout=30)
            restored = station.runtime.core.evses[1].transaction
            assert restored is not None and restored.ref == OPEN and restored.stop_reason is StopReason.POWER_LOSS
    finally:
        await csms.stop()
    events = [
        (m.payload["transactionInfo"]["transactionId"], m.payload["eventType"], m.payload["seqNo"], m.unique_id)
        for m in csms.messages("TransactionEvent")
    ]
    assert events == [
        (QUEUED, "Ended", {1: 3, 2: 1}[version], stored_ids[QUEUED + "transaction_ended"] + ".1"),
        (OPEN, "Started", 0, stored_ids[OPEN + "transaction_started"]),
        (OPEN, "Updated", 1, stored_ids[OPEN + "meter_values"]),
    ]
    assert csms.violations == []
