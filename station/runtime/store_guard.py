"""When the store cannot record: no charging, and what it missed is recorded once it can again.

A store that cannot write means no charging rather than charging nobody can bill. A transaction the store could not
take is kept here (its signed record stays in the meter, not released); a probe every few seconds writes it once the
store works again, and only then is charging offered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from station.core.model import Transaction
from station.runtime.presence import CsmsPresence
from station.runtime.supervisor import Supervisor, Work
from station.store import Store, StoreError

log = structlog.get_logger("station.runtime.store")


class StoreGuard:
    def __init__(
        self,
        store: Store,
        supervisor: Supervisor,
        presence: CsmsPresence,
        *,
        on_health: Callable[[bool, str], None],
        on_recorded_late: Callable[[Transaction], None],
        probe_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.presence = presence
        self.on_health = on_health  # the runtime tells the core (StoreHealthChanged)
        self.on_recorded_late = on_recorded_late  # an ended transaction written late: the runtime releases its record
        self.probe_interval = probe_interval
        self.ok = True
        self.unrecorded: dict[str, Transaction] = {}

    def record(self, tx: Transaction, write: Callable[..., None]) -> bool:
        """Write a transaction's state; on a store failure keep it for later and stop offering charging."""
        try:
            write(tx, offline=not self.presence.online)
        except StoreError as exc:
            self.unrecorded[tx.ref] = tx
            # After the current event's status reports have gone out, so that Faulted is the last word.
            asyncio.get_running_loop().call_soon(self.failed, exc)
            return False
        self.unrecorded.pop(tx.ref, None)
        return True

    def check(self) -> None:
        """Before a start: probe the store, so that a start is refused rather than unrecorded."""
        if not self.ok:
            return
        try:
            self.store.probe()
        except StoreError as exc:
            self.failed(exc)

    def failed(self, exc: StoreError) -> None:
        if not self.ok:
            return
        self.ok = False
        log.error("the store cannot record; charging is off until it can", error=str(exc))
        self.on_health(False, str(exc))
        self.supervisor.spawn(self._probe(), Work.STORE_PROBE, "store probe")

    async def _probe(self) -> None:
        """Try again every few seconds; once the store writes, record what it missed and offer charging again."""
        while True:
            await asyncio.sleep(self.probe_interval)
            offline = not self.presence.online
            try:
                self.store.probe()
                for ref, tx in list(self.unrecorded.items()):
                    ended = tx.stopped_at is not None
                    if not ended:
                        self.store.transaction_started(tx, offline=offline)
                    elif self.store.transaction(ref) is None:
                        self.store.transaction_recovered(tx, offline=offline)
                    else:
                        self.store.transaction_ended(tx, offline=offline)
                    del self.unrecorded[ref]
                    log.info("transaction recorded after the store came back", tx_ref=ref, ended=ended)
                    self.presence.outbox_changed()
                    if ended:
                        self.on_recorded_late(tx)
            except StoreError:
                continue
            log.info("the store records again; charging is offered again")
            self.ok = True
            self.on_health(True, "")
            return
