"""The store's schema as numbered migrations, keyed on SQLite's `PRAGMA user_version`.

A file at version N holds the schema that migrations 1..N made. At start-up a store at version N gets migrations
N+1..LATEST in ONE SQLite transaction, user_version included: all or nothing, so a failure leaves the file as it was
(and the error names the file, the version and the cause). A fresh file is version 0 and gets them all. A file newer
than this code is refused, never downgraded. A migration moves rows into their new home and deletes them from the
old one, so every row keeps its meaning.

Released versions: 1 (until commit 4a8eac3, e.g. c06a680), 2 (issue 15: b1dc571 .. 6ce05c9), 3 (issue 17). Both
released versions wrote their tables (CREATE TABLE IF NOT EXISTS, each committed on its own) and then user_version in
a separate commit; a first start that died in between left a version-0 file with some of those (still empty) tables,
or a version-1 file with some of version 2's. Migrations 1 and 2 therefore create with IF NOT EXISTS and complete such
a file; a version-0 file with a table no release made is not a station store and is refused.

Version 4 (issue 19) adds the installed charging profiles (smart charging).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from station.store.errors import StoreError

log = structlog.get_logger("station.store")

AVAILABILITY = ("Operative", "Inoperative")


class MigrationDataError(Exception):
    """A row a migration must move does not hold what the old code wrote (names the table, row and value)."""


@dataclass(frozen=True)
class Migration:
    version: int  # user_version after it
    summary: str
    apply: Callable[[sqlite3.Connection], None]


def _run(db: sqlite3.Connection, script: str) -> None:
    """Statements one by one (sqlite3's executescript would commit the migration's transaction first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _whole_number(table: str, key: str, value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise MigrationDataError(f"{table} row {key!r} holds {str(value)[:40]!r}, not a whole number") from None


def _suffix_number(table: str, key: str, prefix: str) -> int:
    number = _whole_number(table, key, key.removeprefix(prefix))
    if number < 1:
        raise MigrationDataError(f"{table} row {key!r}: {number} is not a connector number (1 or more)")
    return number


def _body(row_id: int, text: str) -> dict[str, object]:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise MigrationDataError(f"outbox row {row_id}: its body is not a JSON object") from None
    return body


# ---------------------------------------------------------------- 1: the first release's schema


def _v1(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
CREATE TABLE IF NOT EXISTS transactions (
    ref TEXT PRIMARY KEY,
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    source TEXT NOT NULL,
    remote_start_id INTEGER,
    requested_at TEXT NOT NULL,
    started_at TEXT,
    meter_start_wh INTEGER,
    stopped_at TEXT,
    meter_stop_wh INTEGER,
    stop_reason TEXT,
    state TEXT NOT NULL CHECK (state IN ('started', 'ended')),
    csms_transaction_id TEXT,
    records TEXT NOT NULL DEFAULT '[]',
    verified INTEGER,
    delivered_at TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    tx_ref TEXT,
    body TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    message_id TEXT NOT NULL,
    offline INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS outbox_failed (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    tx_ref TEXT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    failed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS id_tags (
    source TEXT NOT NULL CHECK (source IN ('list', 'cache')),
    id_tag TEXT NOT NULL,
    status TEXT NOT NULL,
    expiry TEXT,
    parent TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, id_tag)
);
CREATE TABLE IF NOT EXISTS security_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    type TEXT NOT NULL,
    tech_info TEXT NOT NULL DEFAULT ''
)
""",
    )


# ---------------------------------------------------------------- 2: samples and tokens kept for the end message


def _v2(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
CREATE TABLE IF NOT EXISTS tx_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_ref TEXT NOT NULL,
    series TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_samples_by_tx ON tx_samples (tx_ref, series, id);
CREATE TABLE IF NOT EXISTS tx_tokens (
    tx_ref TEXT PRIMARY KEY,
    token TEXT NOT NULL
)
""",
    )
    # Version 1 numbered 2.0.1 TransactionEvents per EVSE (settings seq_no.evse.N), version 2 per transaction from 0
    # (seq_no.tx.REF). A transaction whose numbering began under version 1 (its transaction_started is no longer
    # queued, or a queued message of it carries its number) goes on from its EVSE's counter, so its numbers keep
    # rising without a gap; one with nothing sent yet starts at 0.
    prefix = "seq_no.evse."
    rows = db.execute("SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).fetchall()
    following = {_suffix_number("settings", k, prefix): _whole_number("settings", k, v) for k, v in rows}
    if following:
        for ref, evse in db.execute("SELECT ref, connector_id FROM transactions WHERE delivered_at IS NULL").fetchall():
            if evse not in following:
                continue
            queued = db.execute("SELECT id, kind, body FROM outbox WHERE tx_ref=? ORDER BY id", (ref,)).fetchall()
            begun = all(kind != "transaction_started" for _, kind, _ in queued) or any(
                "seq_no" in _body(row_id, body) for row_id, _, body in queued
            )
            if begun:
                db.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?)", (f"seq_no.tx.{ref}", str(following[evse]))
                )
    db.execute("DELETE FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))


# ---------------------------------------------------------------- 3: EVSEs, the meter stamp, counters, connector state


def _v3(db: sqlite3.Connection) -> None:
    # The column connector_id held the 1.6 connector, which on these single-meter stations was the EVSE: connector
    # N = EVSE N with its connector 1.
    _run(
        db,
        """
ALTER TABLE transactions RENAME COLUMN connector_id TO evse_id;
ALTER TABLE transactions ADD COLUMN connector_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE transactions ADD COLUMN meter_model TEXT;
ALTER TABLE transactions ADD COLUMN meter_serial TEXT;
ALTER TABLE transactions ADD COLUMN meter_firmware TEXT;
ALTER TABLE transactions ADD COLUMN meter_public_key TEXT;
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE connector_state (
    evse_id INTEGER NOT NULL,
    connector_id INTEGER NOT NULL,
    availability TEXT CHECK (availability IN ('Operative', 'Inoperative')),
    PRIMARY KEY (evse_id, connector_id)
)
""",
    )
    counters = db.execute(
        "SELECT key, value FROM settings WHERE key = 'list_version' OR substr(key, 1, 10) = 'seq_no.tx.'"
    ).fetchall()
    for key, value in counters:
        db.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (key, _whole_number("settings", key, value)))
    # seq_no.evse.N: version 1's counters, which version 2 no longer read (a store migrated by version 2 itself,
    # which had no migrations, still holds them).
    db.execute("DELETE FROM settings WHERE key = 'list_version' OR substr(key, 1, 7) = 'seq_no.'")
    prefix = "availability."
    rows = db.execute("SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).fetchall()
    for key, value in rows:
        if value not in AVAILABILITY:
            raise MigrationDataError(f"settings row {key!r} holds {str(value)[:40]!r}, not one of {AVAILABILITY}")
        evse = _suffix_number("settings", key, prefix)
        db.execute("INSERT INTO connector_state (evse_id, connector_id, availability) VALUES (?, 1, ?)", (evse, value))
    db.execute("DELETE FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))


# ---------------------------------------------------------------- 4: installed charging profiles


def _v4(db: sqlite3.Connection) -> None:
    # body: ChargingProfile.to_dict() as JSON; the columns beside it are what the book and a reader select on.
    _run(
        db,
        """
CREATE TABLE charging_profiles (
    id INTEGER PRIMARY KEY,
    evse_id INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    stack_level INTEGER NOT NULL,
    transaction_ref TEXT,
    body TEXT NOT NULL
)
""",
    )


# ---------------------------------------------------------------- 5: reservations


def _v5(db: sqlite3.Connection) -> None:
    # evse_id NULL: a reservation of any EVSE (1.6 connector 0, 2.0.1 no evseId). reservation_id on a transaction: the
    # reservation it used, for StartTransaction / TransactionEvent, built at send time.
    _run(
        db,
        """
CREATE TABLE reservations (
    id INTEGER PRIMARY KEY,
    evse_id INTEGER,
    id_tag TEXT NOT NULL,
    group_id TEXT,
    connector_type TEXT,
    expires_at TEXT NOT NULL
);
ALTER TABLE transactions ADD COLUMN reservation_id INTEGER
""",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "transactions, outbox, settings, id tags, security log", _v1),
    Migration(2, "samples and idTokens kept for a transaction's end message; seqNo per transaction", _v2),
    Migration(3, "transactions on an EVSE's connector with their meter; counters and connector state tables", _v3),
    Migration(4, "installed charging profiles (smart charging)", _v4),
    Migration(5, "reservations, and the reservation a transaction used", _v5),
)
LATEST = MIGRATIONS[-1].version
# Every table a released version made (with SQLite's own): a version-0 file with any other is not a station store.
RELEASED_TABLES = frozenset(
    {"transactions", "outbox", "outbox_failed", "settings", "id_tags", "security_log", "tx_samples", "tx_tokens"}
    | {"sqlite_sequence"}
)


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _refuse_newer(path: Path, found: int, latest: int) -> None:
    if found > latest:
        raise StoreError(
            f"store {path} has schema version {found}, newer than this station software knows (up to {latest}): "
            "it was written by a newer release; run that release or restore a backup (a store is never downgraded)"
        )


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the open store (autocommit connection) to the latest version, in one transaction; nothing when it is
    there already. Raises StoreError naming the file, the version and the cause; the file is then unchanged."""
    migrations = MIGRATIONS  # read at the call: a test may put a failing migration in
    latest = migrations[-1].version
    found = user_version(db)
    if found == latest:
        return
    _refuse_newer(path, found, latest)
    step = found
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = step = user_version(db)  # another process may have migrated it meanwhile
            _refuse_newer(path, found, latest)
            if found == 0:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if strange := sorted(tables - RELEASED_TABLES):
                    raise StoreError(
                        f"store {path} is not a station store: it has no schema version and table(s) "
                        f"{', '.join(strange)} that no station release made"
                    )
            for migration in migrations:
                if migration.version > found:
                    step = migration.version
                    migration.apply(db)
            db.execute(f"PRAGMA user_version={latest}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except (sqlite3.DatabaseError, MigrationDataError) as exc:
        raise StoreError(
            f"store {path}: migration from schema version {found} to {latest} failed at migration {step} ({exc}); "
            "the file is unchanged"
        ) from None
    if found:  # a fresh file (version 0) is not news
        log.info("store migrated", path=str(path), from_version=found, to_version=latest)
