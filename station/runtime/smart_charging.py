"""Smart charging at run time: the book of installed charging profiles, kept in the store, and the limits it sets.

Owns the station's `ProfileBook` (nothing else changes it) and its rows in the store: every change is checked by the
book's rules, written to the store in one commit, and only then made in memory, so a profile the store did not take
is Rejected and nothing changed. After every change, every transaction start or end, and at every boundary of the
composite schedule (`next_boundary`, slept on by one supervised loop) it works out each EVSE's limit now
(`limits_at`), shares the station's maximum between the EVSEs that charge (`allocate`), and hands each EVSE's limit to
the core (`CurrentLimitChanged`), which tells the charge controller and pauses a car held below its minimum.

Offline nothing changes: the installed profiles keep applying (1.6 §3.13.5, 2.0.1 K01 and the offline behaviour of
K08), including a TxDefaultProfile for transactions started offline. TxProfiles end with their transaction
(1.6 §3.13.1 "for the duration of a transaction"; 2.0.1 K01 TxProfile) and are removed from the store then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from station.core.station import ChargingStation
from station.smart.book import ProfileBook, ProfileRules, Refusal, StationView
from station.smart.composite import (
    ActiveTransaction,
    CompositeSchedule,
    Limits,
    Site,
    allocate,
    composite_schedule,
    limits_at,
    next_boundary,
)
from station.smart.profiles import ChargingProfile, Purpose, RateUnit
from station.store import Store, StoreError
from station.tasks import wait_event

log = structlog.get_logger("station.runtime.smart_charging")

LONGEST_SLEEP = 3600.0  # s: the loop looks again at least this often (a clock step, a missed wake-up)


@dataclass(frozen=True)
class EvseShape:
    """What smart charging needs to know of one EVSE's hardware."""

    controllable: bool  # its charge controller sets the car's current (not "meter-output")
    max_current_a: float = 32.0
    min_current_a: float = 6.0  # IEC 61851-1: less pauses the car
    phases: int = 3


class SmartCharging:
    def __init__(
        self,
        core: ChargingStation,
        store: Store,
        evses: dict[int, EvseShape],
        *,
        nominal_voltage: float = 230.0,
        rules: ProfileRules | None = None,
        clock: Callable[[], datetime],
        on_limit: Callable[[int, float | None], None],
    ) -> None:
        self.core = core
        self.store = store
        self.evses = evses
        self.nominal_voltage = nominal_voltage
        self.rules = rules or ProfileRules(phases=max((e.phases for e in evses.values()), default=3))
        self.clock = clock
        self.on_limit = on_limit
        self.book = ProfileBook(store.charging_profiles())
        self.applied: dict[int, float | None] = {}  # the limit last handed to the core, per EVSE
        self._wake = asyncio.Event()
        self._known_refs: set[str] = set()

    # ------------------------------------------------------------------ what the adapters read

    @property
    def available(self) -> bool:
        """Whether any EVSE's current can be controlled (else profiles are refused, and not claimed as supported)."""
        return any(e.controllable for e in self.evses.values())

    def view(self) -> StationView:
        running = {tx.evse_id: tx.ref for tx in self.core.running_transactions()}
        ids: dict[str, str] = {}
        for ref in running.values():
            ids[ref] = ref  # 2.0.1: the transactionId is the station's own
            stored = self.store.transaction(ref)
            if stored is not None and stored.csms_transaction_id is not None:
                ids[str(stored.csms_transaction_id)] = ref  # 1.6: the CSMS's transactionId
        controllable = frozenset(e for e, shape in self.evses.items() if shape.controllable)
        return StationView(frozenset(self.evses), running, ids, controllable)

    def site(self) -> Site:
        transactions = {
            tx.evse_id: ActiveTransaction(tx.ref, tx.started_at or tx.requested_at)
            for tx in self.core.running_transactions()
        }
        return Site(
            tuple(sorted(self.evses)),
            {e: s.max_current_a for e, s in self.evses.items()},
            {e: s.phases for e, s in self.evses.items()},
            self.nominal_voltage,
            transactions,
        )

    def composite(self, evse_id: int, duration: int, unit: RateUnit | None = None) -> CompositeSchedule:
        """GetCompositeSchedule from now (1.6 §5.7, K08): ValueError for an unknown EVSE."""
        return composite_schedule(self.book.all, evse_id, self.clock(), duration, unit or RateUnit.A, self.site())

    def limits(self) -> Limits:
        return limits_at(self.book.all, self.clock(), self.site())

    # ------------------------------------------------------------------ what the adapters change

    def install(self, profile: ChargingProfile, *, ocpp16: bool) -> Refusal | None:
        """SetChargingProfile (1.6 §5.16, K01): None when installed, else why not (nothing changed)."""
        checked = self.book.check(profile, self.view(), self.rules, ocpp16=ocpp16)
        if isinstance(checked, Refusal):
            log.info("charging profile refused", profile_id=profile.id, reason=checked.reason_code, why=checked.text)
            return checked
        return self._install(checked, ocpp16=ocpp16)

    def check_for_start(self, profile: ChargingProfile, evse_id: int, *, ocpp16: bool) -> ChargingProfile | Refusal:
        """The chargingProfile of a remote start (1.6 §5.11, K05): a TxProfile for the transaction about to start on
        `evse_id`, checked as if it ran there already."""
        if profile.purpose is not Purpose.TX:
            return Refusal("InvalidProfile", "a remote start's charging profile must be a TxProfile (K05.FR.02)")
        if profile.transaction_id is not None:
            return Refusal("InvalidProfile", "a remote start's charging profile has no transactionId yet")
        view = self.view()
        pending = "pending-start"
        hypothetical = StationView(
            view.evse_ids,
            {**view.running, evse_id: pending},
            {**view.transaction_ids, pending: pending},
            view.controllable,
        )
        placed = replace(profile, evse_id=evse_id, transaction_ref=pending)
        return self.book.check(placed, hypothetical, self.rules, ocpp16=ocpp16)

    def attach(self, profile: ChargingProfile, tx_ref: str, *, ocpp16: bool) -> None:
        """Install a checked remote-start profile as its transaction's TxProfile (the transaction now exists)."""
        bound = replace(profile, transaction_ref=tx_ref, transaction_id=None)
        refusal = self._install(bound, ocpp16=ocpp16)
        if refusal is not None:
            log.error("remote start profile not installed", profile_id=profile.id, tx_ref=tx_ref, why=refusal.text)

    def _install(self, profile: ChargingProfile, *, ocpp16: bool) -> Refusal | None:
        trial = ProfileBook(self.book.all)  # the change is worked out on a copy, stored, then kept
        replaced = trial.install(profile, ocpp16=ocpp16)
        try:
            self.store.install_charging_profile(profile, replaced)
        except StoreError as exc:
            log.error("charging profile not stored", profile_id=profile.id, error=str(exc))
            return Refusal("InternalError", f"the station could not store the profile: {exc}"[:512])
        self.book = trial
        log.info(
            "charging profile installed",
            profile_id=profile.id,
            evse_id=profile.evse_id,
            purpose=profile.purpose.value,
            stack_level=profile.stack_level,
            replaced=list(replaced),
        )
        self.refresh()
        return None

    def clear(
        self,
        profile_id: int | None = None,
        evse_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> tuple[int, ...]:
        """ClearChargingProfile (1.6 §5.5, K10): the ids removed (none: the adapter answers Unknown). Raises
        StoreError when the store cannot remove them; then none is removed."""
        trial = ProfileBook(self.book.all)
        ids = trial.clear(profile_id, evse_id, purpose, stack_level)
        if not ids:
            return ()
        self.store.remove_charging_profiles(ids)
        self.book = trial
        log.info("charging profiles cleared", profile_ids=list(ids))
        self.refresh()
        return ids

    # ------------------------------------------------------------------ the limits

    def transactions_changed(self) -> None:
        """A transaction started or ended (the runtime calls this): its TxProfiles go with it, and the station's
        maximum is shared again. Cheap when nothing changed: the runtime calls it after every core event."""
        running = {tx.ref for tx in self.core.running_transactions()}
        if running == self._known_refs:
            return
        for ref in self._known_refs - running:
            self._end(ref)
        self._known_refs = running
        self.refresh()

    def purge_ended(self) -> None:
        """At start-up: TxProfiles of transactions that are no longer running (ended while the daemon was down)."""
        running = {tx.ref for tx in self.core.running_transactions()}
        self._known_refs = running
        stale = {p.transaction_ref for p in self.book.all if p.purpose is Purpose.TX} - running
        for ref in stale:
            if ref is not None:
                self._end(ref)

    def _end(self, tx_ref: str) -> None:
        trial = ProfileBook(self.book.all)
        ids = trial.end_transaction(tx_ref)
        if not ids:
            return
        try:
            self.store.remove_charging_profiles(ids)
        except StoreError as exc:
            log.error("ended transaction's profiles not removed", tx_ref=tx_ref, error=str(exc))
            return  # kept: they no longer apply (no transaction), and the next start-up removes them
        self.book = trial
        log.info("transaction profiles removed", tx_ref=tx_ref, profile_ids=list(ids))

    def refresh(self) -> None:
        """Work out each EVSE's limit now and hand the changed ones to the core; wakes the boundary loop. Without
        any profile an EVSE has no limit (None: its controller's maximum)."""
        self._wake.set()
        amps: dict[int, float | None] = dict.fromkeys(self.evses)
        if self.book.all:
            limits = self.limits()
            amps.update(limits.per_evse_a)
            charging = {tx.evse_id for tx in self.core.running_transactions()}
            wanted = {e: limits.per_evse_a[e] for e in charging if e in limits.per_evse_a}
            minimum = {e: max(self.evses[e].min_current_a, limits.min_rate_a.get(e) or 0.0) for e in wanted}
            amps.update(allocate(wanted, limits.station_cap_a, minimum))
        for evse_id, shape in self.evses.items():
            limit = amps[evse_id]
            if not shape.controllable or (evse_id in self.applied and self.applied[evse_id] == limit):
                continue
            self.applied[evse_id] = limit
            log.info("charging limit", evse_id=evse_id, limit_a=limit)
            self.on_limit(evse_id, limit)

    async def run(self) -> None:
        """Apply the limits at every boundary of the composite schedule, for the runtime's whole life."""
        self.refresh()  # also after a restart of this loop: a boundary may have passed meanwhile
        while True:
            self._wake.clear()
            now = self.clock()
            boundary = next_boundary(self.book.all, now, self.site())
            wait = LONGEST_SLEEP if boundary is None else min(LONGEST_SLEEP, (boundary - now).total_seconds())
            if not await wait_event(self._wake, max(0.0, wait)):
                self.refresh()  # a boundary passed; a wake-up came from a refresh already done: only look again
