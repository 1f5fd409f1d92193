"""What a previous run left behind: transactions the store has open, and transactions only a meter knows.

A transaction the store has open is ended on its EVSE's meter (stop reason PowerLoss unless one was asked for), so
its signed record is collected and delivered. A transaction only the meter knows (the daemon died after the meter
started it and before storing it) is adopted: ended on the meter, and its signed record tells who charged and from
which reading; the CSMS gets its start and its end, in that order. So is one that a start which failed while the
daemon ran left on the meter (the meter began, and then its answers were lost): stop reason Other. A record the
store already holds (killed after storing it and before releasing it) is only released, never recorded twice.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

import structlog

from station.core.model import StartSource, StopReason, Transaction
from station.meter.records import record_facts
from station.store import Store

log = structlog.get_logger("station.runtime.recovery")

RECENT = 64  # newest stored transactions searched for a record a meter still holds (a few per EVSE)


class Recovery:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.orphans: set[str] = set()  # refs of transactions known only from a meter

    def left_open(self) -> list[Transaction]:
        """The store's open transactions, each with the stop reason it is ended with (stored at once)."""
        out = []
        for stored in self.store.open_transactions():
            tx = stored.transaction
            reason = tx.stop_reason or StopReason.POWER_LOSS
            if tx.stop_reason is None:
                self.store.set_stop_reason(tx.ref, reason)
            log.warning(
                "ending transaction left open by the previous run",
                tx_ref=tx.ref,
                evse_id=tx.evse_id,
                stop_reason=reason.value,
            )
            out.append(replace(tx, stop_reason=reason))
        return out

    def orphan(self, evse_id: int, now: datetime, reason: StopReason = StopReason.POWER_LOSS) -> Transaction:
        """A transaction for what the meter of `evse_id` has open and the store never heard of (or forgot: a start
        that failed after the meter began)."""
        tx = Transaction(
            ref=uuid.uuid4().hex,
            evse_id=evse_id,
            id_tag="",
            source=StartSource.REMOTE,
            requested_at=now,
            stop_reason=reason,
        )
        log.warning("the meter has a transaction the store does not know; ending it", tx_ref=tx.ref, evse_id=evse_id)
        self.orphans.add(tx.ref)
        return tx

    def already_stored(self, tx: Transaction) -> str | None:
        """The stored transaction whose signed record the meter still holds, if any (the newest ones are enough:
        a meter holds at most its last one)."""
        held = {r.data for r in tx.signed_records}
        for stored in self.store.recent_transactions(RECENT):
            if held & {r.data for r in stored.transaction.signed_records}:
                return stored.transaction.ref
        return None

    @staticmethod
    def from_record(tx: Transaction) -> Transaction:
        """Fill in what only the signed record knows: the identification, the start time and the begin reading."""
        id_tag, started_at, meter_start = tx.id_tag, tx.stopped_at, tx.meter_stop_wh
        for record in tx.signed_records:
            facts = record_facts(record.data)
            if facts is None:
                continue
            id_tag = facts.id_tag or id_tag
            if facts.begin_wh is not None:
                meter_start = facts.begin_wh
                started_at = facts.begin_at or started_at
        return replace(
            tx,
            id_tag=id_tag[:20] or "UNKNOWN",
            started_at=started_at,
            requested_at=started_at or tx.requested_at,
            meter_start_wh=meter_start,
        )
