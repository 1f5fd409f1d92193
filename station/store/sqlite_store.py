"""The station's durable memory in SQLite: transactions, the outbox of messages owed to the CSMS, counters, connector
state, settings, id tags, the security log and the installed charging profiles. The schema is migrations.py's;
opening a store migrates it.

This module owns every byte the daemon must not lose: a transaction and the message announcing it are written in one
SQLite transaction, before anything is sent; a signed record is on disk before the meter is told it may forget it;
an outbox message is deleted only when the CSMS has answered it. WAL journal with synchronous=FULL, so a write that
returned survives SIGKILL and power loss. It knows no OCPP version and no Modbus: the outbox holds version-neutral
entries ("transaction_started", "transaction_ended", ...) that the OCPP adapter of the moment turns into messages, in
two lanes (transaction messages in order; the rest beside them). It also keeps what a transaction's end message needs
later (its periodic samples, bounded; the idToken as the CSMS gave it) and how the daemon's previous run ended.
A transaction runs on a connector of an EVSE and is stored with the stamp of the meter that metered and signed it
(model, serial, firmware, public key) in the commit that stores it, so its bill stays verifiable after a meter swap.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from station.core.model import MeterStamp, Reservation, SignedMeterRecord, StartSource, StopReason, Transaction
from station.smart.profiles import ChargingProfile
from station.store.errors import StoreError
from station.store.migrations import AVAILABILITY, migrate

log = structlog.get_logger("station.store")

PROBE_BYTES = 16384  # about what one transaction with its signed records takes
SECURITY_LOG_KEEP = 1000  # the rolling security log keeps this many newest events (OCPP A04.FR.04)
# Periodic readings kept per transaction and series for its end message (1.6 StopTransaction.transactionData, 2.0.1
# TransactionEvent(Ended)). Beyond it every other one is dropped, first ones first (2.0.1 E06.FR.13, 1.6 errata
# StopTransactionMaxMeterValues): a long transaction at a short interval must not grow the store or the message.
MAX_SAMPLES_PER_TRANSACTION = 100
# Outbox lanes: transaction-related messages (1.6 §3.7; 2.0.1 TransactionEvent) keep their order among themselves;
# everything else (security events) is delivered beside them, so that a message the CSMS refuses holds nothing up.
TRANSACTION_KINDS = ("transaction_started", "transaction_ended", "meter_values", "signed_begin", "charging_state")


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    kind: str
    tx_ref: str | None
    body: dict[str, Any]
    created_at: datetime
    offline: bool
    attempts: int
    message_id: str  # stable across resends after a reconnect or restart, so the CSMS can recognise a repeat

    @property
    def call_id(self) -> str:
        """The OCPP-J message id of this send: the stable id, or a fresh one per retry after a CALLERROR."""
        return self.message_id if self.attempts == 0 else f"{self.message_id}.{self.attempts}"


@dataclass(frozen=True)
class PreviousRun:
    """What the previous run of the daemon left about how it ended (for the next BootNotification's reason)."""

    state: str | None  # "running" (it never said it stopped: killed, hung, crashed), "ended" (stopped cleanly), None
    boot_id: str  # the operating system's boot it ran in
    software: str  # the version it ran
    restart: str | None  # why it restarted itself, where it said so before (e.g. a reset the CSMS asked for)


@dataclass(frozen=True)
class IdTagEntry:
    id_tag: str
    status: str | None  # 1.6 AuthorizationStatus / 2.0.1 AuthorizationStatusEnumType; None: remove (differential)
    expiry: datetime | None = None
    parent: str | None = None


@dataclass(frozen=True)
class StoredTransaction:
    transaction: Transaction
    state: str
    csms_transaction_id: str | None
    verified: bool | None
    delivered_at: str | None


def _ts(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _records_json(records: tuple[SignedMeterRecord, ...]) -> str:
    return json.dumps(
        [
            {
                "data": r.data,
                "encoding": r.encoding,
                "signing_method": r.signing_method,
                "context": r.context,
                "verified": r.verified,
                "problems": list(r.problems),
            }
            for r in records
        ]
    )


def _records_from(text: str) -> tuple[SignedMeterRecord, ...]:
    return tuple(
        SignedMeterRecord(
            data=r["data"],
            encoding=r["encoding"],
            signing_method=r["signing_method"],
            context=r["context"],
            verified=bool(r["verified"]),
            problems=tuple(r["problems"]),
        )
        for r in json.loads(text)
    )


def _meter_columns(meter: MeterStamp | None) -> tuple[str | None, str | None, str | None, str | None]:
    """meter_model, meter_serial, meter_firmware, meter_public_key."""
    if meter is None:
        return None, None, None, None
    return meter.model, meter.serial, meter.firmware, meter.public_key


def _meter_from(row: sqlite3.Row) -> MeterStamp | None:
    """The stamp, or None for a transaction stored before transactions remembered their meter (schema 3)."""
    columns = (row["meter_model"], row["meter_serial"], row["meter_firmware"], row["meter_public_key"])
    if all(c is None for c in columns):
        return None
    model, serial, firmware, public_key = (c or "" for c in columns)
    return MeterStamp(model, serial, firmware, public_key)


def _cause(exc: OSError) -> str:
    """An OSError in plain words: "permission denied", "read-only file system", "no space left on device"."""
    return (exc.strerror or str(exc)).lower()


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # Told after a security event was queued (its SecurityEventNotification should go now). Called in the thread
        # that recorded it: a listener hands over to its own loop itself.
        self.security_event_listeners: list[Callable[[], None]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store's directory {self.path.parent}: {_cause(exc)}") from None
        try:
            # It holds the Basic-auth password and the transactions: readable by the service user only. SQLite gives
            # its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot open the store {self.path}: {_cause(exc)}{self._access_hint()}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}{self._access_hint()}") from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA synchronous=FULL")
            self._synced = True  # synchronous=FULL; NORMAL only for the commits `_transaction(durable=False)` makes
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            # The page cache is the store's only memory that grows with it: it fills with the pages of new transactions
            # until it reaches this cap, then the daemon's RSS stays flat (README, memory). What the daemon reads back
            # (the outbox head, the newest transactions, settings) fits in 512 KiB many times over. SQLite's default
            # of 2 MiB cost 1.5 MB more RSS for about 5 % more backlog drain rate (1,190 vs 1,120 msg/s, 3 runs each).
            self._db.execute("PRAGMA cache_size=-512")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"store {self.path} is corrupt ({check}); move it aside and restore from backup")
            migrate(self._db, self.path)
            self._db.execute("PRAGMA journal_mode=WAL")  # after: a file that cannot be migrated is left as it was
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"cannot open the store {self.path}: {exc}{self._access_hint()}") from None
        except StoreError as exc:
            self._db.close()
            raise StoreError(f"{exc}{self._access_hint()}") from None

    def _access_hint(self) -> str:
        """Why the store cannot be written, where the file system can tell: SQLite needs to write the file and, for its
        journal (-wal, -shm), the directory."""
        directory = self.path.parent
        user = _user_name()
        if not os.access(directory, os.W_OK | os.X_OK):
            return f" (the directory {directory} is not writable by user {user}; the store needs it for its journal)"
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            return f" (the file is not readable and writable by user {user})"
        return ""

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError:
                pass
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any failure; durable when it ends.

        `durable=False` is for what a power loss may only undo into a resend (that the CSMS answered a message): the
        commit is not synced to disk by itself (synchronous=NORMAL for it) but it is in the WAL, which the operating
        system holds, so it survives the daemon's own death (SIGKILL, a crash); it becomes durable with the next
        durable commit, which syncs the whole WAL, or the next checkpoint. The WAL is replayed as a prefix, so a power
        loss can take only the newest such commits, never one made before a durable commit that followed it."""
        with self._lock:
            try:
                if durable != self._synced:  # switched only when it changes: a backlog's answers come in a row
                    self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
                    self._synced = durable
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite has already rolled back after e.g. SQLITE_FULL
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: write failed: {exc}") from None

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]], *, durable: bool = True) -> list[int]:
        """Run statements in one transaction; returns lastrowids. Durable when this returns (see `_transaction` for
        `durable=False`)."""
        with self._transaction(durable=durable) as db:
            return [db.execute(sql, params).lastrowid or 0 for sql, params in statements]

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: read failed: {exc}") from None

    # ------------------------------------------------------------------ transactions

    @staticmethod
    def _enqueue_sql(kind: str, tx_ref: str | None, body: dict[str, Any], offline: bool) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO outbox (kind, tx_ref, body, created_at, message_id, offline) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, tx_ref, json.dumps(body), _ts(datetime.now(UTC)), uuid.uuid4().hex, int(offline)),
        )

    @staticmethod
    def _started_sql(tx: Transaction) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO transactions (ref, evse_id, connector_id, id_tag, source, remote_start_id, requested_at,"
            " started_at, meter_start_wh, state, records, meter_model, meter_serial, meter_firmware, meter_public_key,"
            " reservation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'started', ?, ?, ?, ?, ?, ?)",
            (
                tx.ref,
                tx.evse_id,
                tx.connector_id,
                tx.id_tag,
                tx.source.value,
                tx.remote_start_id,
                _ts(tx.requested_at),
                _ts(tx.started_at),
                tx.meter_start_wh,
                _records_json(tx.signed_records),  # a signed begin record, where the meter makes one at the start
                *_meter_columns(tx.meter),
                tx.reservation_id,
            ),
        )

    @staticmethod
    def _ended_sql(tx: Transaction) -> tuple[str, tuple[Any, ...]]:
        verified = all(r.verified for r in tx.signed_records) if tx.signed_records else None
        return (
            "UPDATE transactions SET stopped_at=?, meter_stop_wh=?, stop_reason=?, state='ended', records=?,"
            " verified=?, meter_model=coalesce(?, meter_model), meter_serial=coalesce(?, meter_serial),"
            " meter_firmware=coalesce(?, meter_firmware), meter_public_key=coalesce(?, meter_public_key) WHERE ref=?",
            (
                _ts(tx.stopped_at),
                tx.meter_stop_wh,
                tx.stop_reason.value if tx.stop_reason else None,
                _records_json(tx.signed_records),
                None if verified is None else int(verified),
                *_meter_columns(tx.meter),  # the meter that signed the records, in their commit
                tx.ref,
            ),
        )

    def transaction_started(self, tx: Transaction, *, offline: bool) -> None:
        """Store a started transaction and queue its announcement, atomically; and, where the meter signed a begin
        record at the start, the message that carries it (1.6: MeterValues right after StartTransaction)."""
        body = {"trigger": tx.start_trigger} if tx.start_trigger else {}
        statements = [self._started_sql(tx), self._enqueue_sql("transaction_started", tx.ref, body, offline)]
        if any(r.context == "Transaction.Begin" for r in tx.signed_records):
            statements.append(self._enqueue_sql("signed_begin", tx.ref, {}, offline))
        self._write(statements)

    def transaction_ended(self, tx: Transaction, *, offline: bool) -> None:
        """Store the signed end of a transaction and queue its announcement, atomically."""
        self._write([self._ended_sql(tx), self._enqueue_sql("transaction_ended", tx.ref, {}, offline)])

    def transaction_recovered(self, tx: Transaction, *, offline: bool) -> None:
        """Store a transaction known only from the meter's signed record (the daemon died between the meter's start
        and storing it) as started and ended, and queue both announcements in order, atomically."""
        self._write(
            [
                self._started_sql(tx),
                self._ended_sql(tx),
                self._enqueue_sql("transaction_started", tx.ref, {}, offline),
                self._enqueue_sql("transaction_ended", tx.ref, {}, offline),
            ]
        )

    def set_stop_reason(self, ref: str, reason: StopReason) -> None:
        self._write([("UPDATE transactions SET stop_reason=? WHERE ref=? AND state='started'", (reason.value, ref))])

    def set_csms_transaction_id(self, ref: str, csms_id: str) -> None:
        self._write([("UPDATE transactions SET csms_transaction_id=? WHERE ref=?", (csms_id, ref))])

    def _row_to_tx(self, row: sqlite3.Row) -> StoredTransaction:
        tx = Transaction(
            ref=row["ref"],
            evse_id=row["evse_id"],
            connector_id=row["connector_id"],
            id_tag=row["id_tag"],
            source=StartSource(row["source"]),
            requested_at=_dt(row["requested_at"]) or datetime.now(UTC),
            remote_start_id=row["remote_start_id"],
            started_at=_dt(row["started_at"]),
            meter_start_wh=row["meter_start_wh"],
            stopped_at=_dt(row["stopped_at"]),
            meter_stop_wh=row["meter_stop_wh"],
            stop_reason=StopReason(row["stop_reason"]) if row["stop_reason"] else None,
            signed_records=_records_from(row["records"]),
            meter=_meter_from(row),
            reservation_id=row["reservation_id"],
        )
        verified = row["verified"]
        return StoredTransaction(
            tx,
            row["state"],
            row["csms_transaction_id"],
            None if verified is None else bool(verified),
            row["delivered_at"],
        )

    def transaction(self, ref: str) -> StoredTransaction | None:
        rows = self._read("SELECT * FROM transactions WHERE ref=?", (ref,))
        return self._row_to_tx(rows[0]) if rows else None

    def open_transactions(self) -> list[StoredTransaction]:
        return [self._row_to_tx(r) for r in self._read("SELECT * FROM transactions WHERE state='started'")]

    def transactions_of(self, id_tag: str, limit: int = 20) -> tuple[int, list[StoredTransaction]]:
        """How many transactions an identifier started, and the newest `limit` of them."""
        count = int(self._read("SELECT COUNT(*) AS n FROM transactions WHERE id_tag=?", (id_tag,))[0]["n"])
        rows = self._read(
            "SELECT * FROM transactions WHERE id_tag=? ORDER BY requested_at DESC LIMIT ?", (id_tag, limit)
        )
        return count, [self._row_to_tx(r) for r in rows]

    def recent_transactions(self, limit: int = 20) -> list[StoredTransaction]:
        rows = self._read("SELECT * FROM transactions ORDER BY requested_at DESC LIMIT ?", (limit,))
        return [self._row_to_tx(r) for r in rows]

    # ------------------------------------------------------------------ outbox

    def enqueue(
        self,
        kind: str,
        tx_ref: str | None = None,
        body: dict[str, Any] | None = None,
        *,
        offline: bool = False,
        sample: str | None = None,
    ) -> int:
        """Queue a message; with `sample`, its reading is also kept in that series of the transaction's samples, in
        the same commit."""
        statements = [self._enqueue_sql(kind, tx_ref, body or {}, offline)]
        if sample is not None and tx_ref is not None:
            statements.extend(self._sample_sql(tx_ref, sample, body or {}))
        return self._write(statements)[0]

    def next_message(self, lane: str | None = None) -> OutboxMessage | None:
        """The oldest message (of the lane "transaction" or "other", or of all)."""
        kinds = ",".join(f"'{k}'" for k in TRANSACTION_KINDS)
        where = {None: "", "transaction": f"WHERE kind IN ({kinds})", "other": f"WHERE kind NOT IN ({kinds})"}[lane]
        rows = self._read(f"SELECT * FROM outbox {where} ORDER BY id LIMIT 1")
        if not rows:
            return None
        r = rows[0]
        return OutboxMessage(
            r["id"],
            r["kind"],
            r["tx_ref"],
            json.loads(r["body"]),
            _dt(r["created_at"]) or datetime.now(UTC),
            bool(r["offline"]),
            r["attempts"],
            r["message_id"],
        )

    def assign_seq_no(self, message_id: int, counter: str) -> int:
        """The message's sequence number from the named persistent counter (2.0.1: one per EVSE), assigned once, at
        its first send, and kept in the message so that a resend carries the same number."""
        name = f"seq_no.{counter}"
        with self._transaction() as db:
            row = db.execute("SELECT body FROM outbox WHERE id=?", (message_id,)).fetchone()
            body = json.loads(row["body"]) if row else {}
            if "seq_no" not in body:
                current = db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
                body["seq_no"] = int(current["value"]) if current else 0
                db.execute("UPDATE outbox SET body=? WHERE id=?", (json.dumps(body), message_id))
                db.execute(*self._set_counter_sql(name, body["seq_no"] + 1))
        return int(body["seq_no"])

    def delivered(
        self, message_id: int, *, csms_transaction: tuple[str, str] | None = None, transaction_done: str | None = None
    ) -> None:
        """The CSMS answered: drop the message and record what the answer taught (the CSMS's transaction id, or that
        the transaction's last message is through) in one commit.

        Not synced by itself (`_transaction(durable=False)`): it survives the daemon's death, and a power loss before
        the next durable commit can only make the message go again (under its message id, which at-least-once
        delivery allows), never lose anything: the message was answered, and what it carried is in the store."""
        statements: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM outbox WHERE id=?", (message_id,))]
        if csms_transaction is not None:
            ref, csms_id = csms_transaction
            statements.append(("UPDATE transactions SET csms_transaction_id=? WHERE ref=?", (csms_id, ref)))
        if transaction_done is not None:
            statements.append(
                ("UPDATE transactions SET delivered_at=? WHERE ref=?", (_ts(datetime.now(UTC)), transaction_done))
            )
            # Its last message is through: its sequence counter and periodic samples are needed no more.
            statements.append(("DELETE FROM counters WHERE name=?", (f"seq_no.tx.{transaction_done}",)))
            statements.append(("DELETE FROM tx_samples WHERE tx_ref=?", (transaction_done,)))
        self._write(statements, durable=False)

    def attempt_failed(self, message_id: int, error: str) -> int:
        self._write([("UPDATE outbox SET attempts=attempts+1, last_error=? WHERE id=?", (error[:500], message_id))])
        rows = self._read("SELECT attempts FROM outbox WHERE id=?", (message_id,))
        return int(rows[0]["attempts"]) if rows else 0

    def give_up(self, message_id: int, error: str) -> None:
        """Move a message the CSMS repeatedly failed to process out of the queue. Kept, never deleted."""
        self._write(
            [
                (
                    "INSERT INTO outbox_failed (id, kind, tx_ref, body, created_at, attempts, last_error, failed_at)"
                    " SELECT id, kind, tx_ref, body, created_at, attempts, ?, ? FROM outbox WHERE id=?",
                    (error[:500], _ts(datetime.now(UTC)), message_id),
                ),
                ("DELETE FROM outbox WHERE id=?", (message_id,)),
            ]
        )

    def outbox_depth(self, kind: str | None = None) -> int:
        """Messages waiting for the CSMS (of one kind, or all)."""
        if kind is None:
            return int(self._read("SELECT COUNT(*) AS n FROM outbox")[0]["n"])
        return int(self._read("SELECT COUNT(*) AS n FROM outbox WHERE kind=?", (kind,))[0]["n"])

    def transaction_messages_queued(self, tx_ref: str | None = None) -> bool:
        """Whether transaction messages (of one transaction, or of any) wait for the CSMS (2.0.1 E14)."""
        kinds: tuple[str, ...] = ("transaction_started", "transaction_ended", "meter_values")
        marks = ",".join("?" * len(kinds))
        if tx_ref is None:
            return bool(
                self._read(f"SELECT 1 FROM outbox WHERE tx_ref IS NOT NULL AND kind IN ({marks}) LIMIT 1", kinds)
            )
        return bool(self._read(f"SELECT 1 FROM outbox WHERE tx_ref=? AND kind IN ({marks}) LIMIT 1", (tx_ref, *kinds)))

    def failed_messages(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._read("SELECT * FROM outbox_failed ORDER BY id")]

    # ------------------------------------------------------------------ periodic samples of a transaction

    @staticmethod
    def _sample_sql(tx_ref: str, series: str, body: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
        at = str(body.get("at") or _ts(datetime.now(UTC)))
        return [
            (
                "INSERT INTO tx_samples (tx_ref, series, at, body) VALUES (?, ?, ?, ?)",
                (tx_ref, series, at, json.dumps(body)),
            ),
            # Over the bound: drop the 1st, 3rd, 5th, ... kept sample (2.0.1 E06.FR.13), halving the series.
            (
                "DELETE FROM tx_samples WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n"
                " FROM tx_samples WHERE tx_ref=? AND series=?) WHERE n % 2 = 1 AND (SELECT COUNT(*) FROM tx_samples"
                " WHERE tx_ref=? AND series=?) > ?)",
                (tx_ref, series, tx_ref, series, MAX_SAMPLES_PER_TRANSACTION),
            ),
        ]

    def add_sample(self, tx_ref: str, series: str, body: dict[str, Any]) -> None:
        """Keep a periodic reading of a running transaction for its end message."""
        self._write(self._sample_sql(tx_ref, series, body))

    def samples(self, tx_ref: str, series: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT body FROM tx_samples WHERE tx_ref=? AND series=? ORDER BY id", (tx_ref, series))
        return [json.loads(r["body"]) for r in rows]

    # ------------------------------------------------------------------ the identifier a transaction started with

    def set_id_token(self, tx_ref: str, token: dict[str, Any]) -> None:
        """The identifier exactly as the CSMS gave it (2.0.1 IdTokenType: idToken, type, additionalInfo)."""
        statement = (
            "INSERT INTO tx_tokens (tx_ref, token) VALUES (?, ?) ON CONFLICT(tx_ref) DO UPDATE SET token=excluded.token"
        )
        self._write([(statement, (tx_ref, json.dumps(token)))])

    def id_token(self, tx_ref: str) -> dict[str, Any] | None:
        rows = self._read("SELECT token FROM tx_tokens WHERE tx_ref=?", (tx_ref,))
        return dict(json.loads(rows[0]["token"])) if rows else None

    def forget_id_token(self, tx_ref: str) -> None:
        """A start that never reached the meter keeps no identifier (a CSMS's starts that time out must not pile
        up rows)."""
        self._write([("DELETE FROM tx_tokens WHERE tx_ref=?", (tx_ref,))])

    # ------------------------------------------------------------------ how the daemon's runs end

    def begin_run(self, boot_id: str, software: str) -> PreviousRun:
        """What the previous run left, and this run marked as running, in one commit."""
        keys = ("run.state", "run.boot_id", "run.software", "run.restart")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    rows = self._db.execute(
                        f"SELECT key, value FROM settings WHERE key IN ({','.join('?' * len(keys))})", keys
                    ).fetchall()
                    found = {r["key"]: r["value"] for r in rows}
                    for key, value in (("run.state", "running"), ("run.boot_id", boot_id), ("run.software", software)):
                        self._db.execute(
                            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                            " value=excluded.value",
                            (key, value),
                        )
                    self._db.execute("DELETE FROM settings WHERE key='run.restart'")
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: write failed: {exc}") from None
        return PreviousRun(
            found.get("run.state"),
            found.get("run.boot_id", ""),
            found.get("run.software", ""),
            found.get("run.restart"),
        )

    def end_run(self) -> None:
        """This run stops cleanly (SIGTERM, or a restart it carries out itself)."""
        self.set_setting("run.state", "ended")

    def restart_reason(self, reason: str) -> None:
        """Why the next run will start, said before this one restarts itself (a reset the CSMS asked for)."""
        self.set_setting("run.restart", reason)

    # ------------------------------------------------------------------ settings

    def setting(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE key=?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self._write(
            [
                (
                    "INSERT INTO settings (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, value),
                )
            ]
        )

    # ------------------------------------------------------------------ counters

    @staticmethod
    def _set_counter_sql(name: str, value: int) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, value),
        )

    def counter(self, name: str) -> int | None:
        """A persistent counter ("list_version": the local authorization list's version; "seq_no.tx.REF": the next
        2.0.1 seqNo of a transaction), None when never set."""
        rows = self._read("SELECT value FROM counters WHERE name=?", (name,))
        return int(rows[0]["value"]) if rows else None

    def set_counter(self, name: str, value: int) -> None:
        self._write([self._set_counter_sql(name, value)])

    # ------------------------------------------------------------------ connector state

    def availability(self, evse_id: int, connector_id: int) -> str | None:
        """What the CSMS last made a connector of an EVSE (ChangeAvailability): "Operative", "Inoperative", or None
        when it never said."""
        rows = self._read(
            "SELECT availability FROM connector_state WHERE evse_id=? AND connector_id=?", (evse_id, connector_id)
        )
        return rows[0]["availability"] if rows else None

    def set_availability(self, evse_id: int, connector_id: int, value: str) -> None:
        self.set_availabilities([(evse_id, connector_id, value)])

    def set_availabilities(self, changes: list[tuple[int, int, str]]) -> None:
        """(evse_id, connector_id, availability) for several connectors (a whole EVSE or station), in one commit."""
        for evse_id, connector_id, value in changes:
            if value not in AVAILABILITY:
                raise ValueError(
                    f"availability of EVSE {evse_id} connector {connector_id}: {value!r} is not one of {AVAILABILITY}"
                )
        self._write(
            [
                (
                    "INSERT INTO connector_state (evse_id, connector_id, availability) VALUES (?, ?, ?)"
                    " ON CONFLICT(evse_id, connector_id) DO UPDATE SET availability=excluded.availability",
                    change,
                )
                for change in changes
            ]
        )

    def probe(self) -> None:
        """Can the store take a transaction now? A write of a transaction's size (its rows and signed records),
        removed in the same commit. Raises StoreError when it cannot (disk full, read-only, broken). Not synced:
        SQLite writes the commit into the WAL file either way, which is where a full disk or a read-only file
        fails, and nothing of it needs to survive a power loss; a start waits for it (the start's own commit is
        synced, and fails on its own if only the sync would have failed)."""
        self._write(
            [
                ("INSERT INTO settings (key, value) VALUES ('store.probe', ?)", ("x" * PROBE_BYTES,)),
                ("DELETE FROM settings WHERE key='store.probe'", ()),
            ],
            durable=False,
        )

    # ------------------------------------------------------------------ security events

    def security_event(self, type_: str, tech_info: str = "", *, at: datetime | None = None) -> None:
        """Log a security event in the rolling security log and queue its SecurityEventNotification, in one commit
        (guaranteed delivery, OCPP A04.FR.02)."""
        when = _ts(at or datetime.now(UTC))
        tech_info = tech_info[:255]  # SecurityEventNotification.techInfo is a string of at most 255 characters
        body = {"type": type_, "timestamp": when, "techInfo": tech_info}
        self._write(
            [
                ("INSERT INTO security_log (at, type, tech_info) VALUES (?, ?, ?)", (when, type_, tech_info)),
                (
                    "DELETE FROM security_log WHERE id <= (SELECT MAX(id) FROM security_log) - ?",
                    (SECURITY_LOG_KEEP,),
                ),
                self._enqueue_sql("security_event", None, body, False),
            ]
        )
        for listener in self.security_event_listeners:
            listener()

    def security_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._read("SELECT at, type, tech_info FROM security_log ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ authorization: local list and cache

    def id_tag_entry(self, source: str, id_tag: str) -> IdTagEntry | None:
        rows = self._read("SELECT * FROM id_tags WHERE source=? AND id_tag=?", (source, id_tag))
        if not rows:
            return None
        r = rows[0]
        return IdTagEntry(r["id_tag"], r["status"], _dt(r["expiry"]), r["parent"])

    def replace_id_tags(self, source: str, entries: list[IdTagEntry], *, full: bool, version: int | None) -> None:
        """Write list entries (a Full update replaces the list) and its version, atomically. An entry whose status
        is None in a differential update is removed."""
        now = _ts(datetime.now(UTC))
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if full:
            statements.append(("DELETE FROM id_tags WHERE source=?", (source,)))
        for e in entries:
            if e.status is None:
                statements.append(("DELETE FROM id_tags WHERE source=? AND id_tag=?", (source, e.id_tag)))
            else:
                statements.append(
                    (
                        "INSERT INTO id_tags (source, id_tag, status, expiry, parent, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(source, id_tag) DO UPDATE SET status=excluded.status,"
                        " expiry=excluded.expiry, parent=excluded.parent, updated_at=excluded.updated_at",
                        (source, e.id_tag, e.status, _ts(e.expiry), e.parent, now),
                    )
                )
        if version is not None:
            statements.append(self._set_counter_sql(f"{source}_version", version))
        self._write(statements)

    def clear_id_tags(self, source: str) -> None:
        self._write([("DELETE FROM id_tags WHERE source=?", (source,))])

    def id_tag_count(self, source: str) -> int:
        return int(self._read("SELECT COUNT(*) AS n FROM id_tags WHERE source=?", (source,))[0]["n"])

    # ------------------------------------------------------------------ installed charging profiles

    def charging_profiles(self) -> list[ChargingProfile]:
        """The installed charging profiles (K01.FR.27: they outlive a reboot), by id. A row that does not read back
        as a profile is logged and left out, never fatal: the station then charges without it."""
        profiles = []
        for row in self._read("SELECT id, body FROM charging_profiles ORDER BY id"):
            try:
                profiles.append(ChargingProfile.from_dict(json.loads(row["body"])))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                log.warning("charging profile unreadable", path=str(self.path), id=row["id"], error=str(exc)[:200])
        return profiles

    def install_charging_profile(self, profile: ChargingProfile, replaced: Iterable[int] = ()) -> None:
        """Store a profile and remove the ones it replaced (ProfileBook.install's answer), in one commit."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM charging_profiles WHERE id=?", (profile_id,)) for profile_id in replaced
        ]
        statements.append(
            (
                "INSERT INTO charging_profiles (id, evse_id, purpose, stack_level, transaction_ref, body)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET evse_id=excluded.evse_id,"
                " purpose=excluded.purpose, stack_level=excluded.stack_level,"
                " transaction_ref=excluded.transaction_ref, body=excluded.body",
                (
                    profile.id,
                    profile.evse_id,
                    profile.purpose.value,
                    profile.stack_level,
                    profile.transaction_ref,
                    json.dumps(profile.to_dict()),
                ),
            )
        )
        self._write(statements)

    def remove_charging_profiles(self, ids: Iterable[int]) -> None:
        """Remove profiles (cleared, or their transaction ended), in one commit."""
        statements = [("DELETE FROM charging_profiles WHERE id=?", (profile_id,)) for profile_id in ids]
        if statements:
            self._write(statements)

    # ------------------------------------------------------------------ log upload: its statuses, what the store holds

    def enqueue_and_note(self, kind: str, body: dict[str, Any], note: tuple[str, str], *, offline: bool) -> None:
        """Queue a message and set a setting (`note`: key, value; "" removes it) in one commit: a log upload's status
        and whether an upload is still running (station/logupload/service.py) never disagree after a power loss."""
        key, value = note
        statement = (
            ("DELETE FROM settings WHERE key=?", (key,))
            if value == ""
            else (
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
        )
        self._write([self._enqueue_sql(kind, None, body, offline), statement])

    def summary(self) -> dict[str, Any]:
        """Counts for a diagnostics archive (station/logupload/): transactions by state and delivery, the outbox and
        the set-aside messages by kind with their age and attempts, the security log's size. No identifier, token,
        record or setting value: nothing here is a secret or personal data."""
        transactions = {
            f"{r['state']}{'' if r['delivered'] else ' (not all delivered)'}": int(r["n"])
            for r in self._read(
                "SELECT state, delivered_at IS NOT NULL AS delivered, COUNT(*) AS n FROM transactions"
                " GROUP BY state, delivered"
            )
        }
        outbox = {
            str(r["kind"]): {
                "queued": int(r["n"]),
                "oldest": r["oldest"],
                "most_attempts": int(r["attempts"] or 0),
                "queued_offline": int(r["offline"] or 0),
            }
            for r in self._read(
                "SELECT kind, COUNT(*) AS n, MIN(created_at) AS oldest, MAX(attempts) AS attempts,"
                " SUM(offline) AS offline FROM outbox GROUP BY kind"
            )
        }
        failed = {
            str(r["kind"]): int(r["n"])
            for r in self._read("SELECT kind, COUNT(*) AS n FROM outbox_failed GROUP BY kind")
        }
        security = int(self._read("SELECT COUNT(*) AS n FROM security_log")[0]["n"])
        return {
            "transactions": transactions,
            "outbox": outbox,
            "outbox_set_aside": failed,
            "security_log_events": security,
        }

    # ---- reservations (1.6 §5.13, 2.0.1 H01-H04)

    def reservations(self) -> list[Reservation]:
        """The reservations held (they outlive a restart), by id."""
        return [
            Reservation(
                r["id"],
                r["evse_id"],
                r["id_tag"],
                _dt(r["expires_at"]) or datetime.now(UTC),
                r["group_id"],
                r["connector_type"],
            )
            for r in self._read("SELECT * FROM reservations ORDER BY id")
        ]

    def save_reservation(self, reservation: Reservation) -> None:
        """Keep a placed reservation (one with the same id is replaced)."""
        r = reservation
        self._write(
            [
                (
                    "INSERT INTO reservations (id, evse_id, id_tag, group_id, connector_type, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET evse_id=excluded.evse_id,"
                    " id_tag=excluded.id_tag, group_id=excluded.group_id, connector_type=excluded.connector_type,"
                    " expires_at=excluded.expires_at",
                    (r.id, r.evse_id, r.id_tag, r.group_id, r.connector_type, _ts(r.expires_at)),
                )
            ]
        )

    def reservation_ended(self, reservation_id: int, status: str | None = None, *, offline: bool = False) -> None:
        """Forget a reservation; with `status` (Expired, Removed), queue the CSMS's news of it (2.0.1
        ReservationStatusUpdate) in the same commit."""
        statements = [("DELETE FROM reservations WHERE id=?", (reservation_id,))]
        if status is not None:
            body = {"reservation_id": reservation_id, "status": status}
            statements.append(self._enqueue_sql("reservation_status", None, body, offline))
        self._write(statements)
