"""The station's durable memory in SQLite (sqlite_store.Store), its schema as numbered migrations (migrations) and
its one error (errors.StoreError)."""

from station.store.errors import StoreError
from station.store.migrations import LATEST as SCHEMA_VERSION
from station.store.sqlite_store import (
    MAX_SAMPLES_PER_TRANSACTION,
    TRANSACTION_KINDS,
    IdTagEntry,
    OutboxMessage,
    PreviousRun,
    Store,
    StoredTransaction,
)

__all__ = [
    "MAX_SAMPLES_PER_TRANSACTION",
    "SCHEMA_VERSION",
    "TRANSACTION_KINDS",
    "IdTagEntry",
    "OutboxMessage",
    "PreviousRun",
    "Store",
    "StoreError",
    "StoredTransaction",
]
