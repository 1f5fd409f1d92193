"""The book of installed charging profiles: which profile may be installed (`ProfileBook.check`), what installing it
replaces (`install`), clearing (`clear`), a transaction's profiles going with it (`end_transaction`) and the
profiles a GetChargingProfiles asks for (`select`). OCPP 1.6 §3.13, §5.5, §5.16, §6.13, §7.8–7.14, §9.4; 2.0.1 K01,
K09, K10.

Pure: no I/O, no clock. The runtime stores each change (`Store.install_charging_profile`, with the ids it replaced,
in one commit) and builds the book again from the store at start-up (K01.FR.27: profiles persist across reboots).
What the station is at the moment of a check (its EVSEs, their running transactions, which EVSEs can set a current)
comes in as a `StationView`; its limits (the 1.6 configuration keys, the 2.0.1 SmartChargingCtrlr variables) as
`ProfileRules`.

The two versions differ in what a second profile at the same stack level does: 1.6 replaces the one with the same
stackLevel and purpose on the same connector (§3.13.2, §5.16.3–4; a connector's TxDefaultProfile does not replace
connector 0's, §3.13.1), 2.0.1 refuses it when their validity overlaps (K01.FR.06, K01.FR.39, K01.FR.52–53) and only
the same id replaces (K01.FR.05).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from station.smart.profiles import ChargingProfile, Kind, Purpose, RateUnit

__all__ = ["ProfileBook", "ProfileRules", "Refusal", "StationView"]


@dataclass(frozen=True)
class ProfileRules:
    """What the station accepts (1.6 §9.4 keys; 2.0.1 SmartChargingCtrlr variables, dm.csv)."""

    max_stack_level: int = 8  # 1.6 ChargeProfileMaxStackLevel; 2.0.1 ProfileStackLevel (the highest stackLevel)
    allowed_units: frozenset[RateUnit] = frozenset({RateUnit.A, RateUnit.W})  # ChargingScheduleAllowedChargingRateUnit
    max_periods: int = 1024  # 1.6 ChargingScheduleMaxPeriods; 2.0.1 PeriodsPerSchedule
    max_installed: int = 64  # 1.6 MaxChargingProfilesInstalled; 2.0.1 Entries(ChargingProfiles) maxLimit
    phases: int = 3  # the phases the EVSEs are wired with
    phase_switching: bool = False  # 2.0.1 ACPhaseSwitchingSupported: can pick the phase of 1-phase charging
    phases_3to1: bool = False  # 2.0.1 Phases3to1, 1.6 ConnectorSwitch3to1PhaseSupported


@dataclass(frozen=True)
class Refusal:
    """Why a profile is not installed: the 2.0.1 statusInfo (reasonCode, additionalInfo); 1.6 says Rejected."""

    reason_code: str
    text: str


@dataclass(frozen=True)
class StationView:
    evse_ids: frozenset[int]  # the EVSEs (1.6: the connectors' EVSEs), without 0
    running: Mapping[int, str] = field(default_factory=dict)  # EVSE -> ref of the transaction running on it
    transaction_ids: Mapping[str, str] = field(default_factory=dict)  # the CSMS's transaction id -> ref
    controllable: frozenset[int] = frozenset()  # EVSEs whose charge controller can set a current


@dataclass(frozen=True)
class _Span:
    start: datetime | None  # None: since ever
    end: datetime | None  # None: for ever

    def overlaps(self, other: _Span) -> bool:
        return (self.end is None or other.start is None or other.start < self.end) and (
            other.end is None or self.start is None or self.start < other.end
        )


def _span(p: ChargingProfile) -> _Span:
    return _Span(p.valid_from, p.valid_to)


class ProfileBook:
    """The installed profiles, by id (ids are unique: K01.FR.05, 1.6 §7.8 "Unique identifier")."""

    def __init__(self, profiles: Iterable[ChargingProfile] = ()) -> None:
        self._profiles: dict[int, ChargingProfile] = {}
        for p in profiles:
            self._profiles[p.id] = p

    @property
    def all(self) -> tuple[ChargingProfile, ...]:
        return tuple(self._profiles.values())

    def __len__(self) -> int:
        return len(self._profiles)

    def get(self, profile_id: int) -> ChargingProfile | None:
        return self._profiles.get(profile_id)

    # ------------------------------------------------------------------ installing

    def check(
        self, profile: ChargingProfile, view: StationView, rules: ProfileRules, *, ocpp16: bool
    ) -> ChargingProfile | Refusal:
        """The profile as it would be installed (a TxProfile with its transaction's ref; for 1.6 a Relative one's
        startSchedule dropped), or why not. Changes nothing."""
        evse = profile.evse_id
        if evse != 0 and evse not in view.evse_ids:
            return Refusal("UnknownEVSE", f"EVSE {evse} does not exist")  # K01.FR.28
        if profile.purpose is Purpose.STATION_MAX and evse != 0:
            # 1.6 §3.13.1 "can only be set at Charge Point ConnectorId 0"; 2.0.1 K (purposes) "only ... evseId 0"
            return Refusal("InvalidProfile", f"{profile.purpose.value} is for EVSE 0 only, not EVSE {evse}")
        if profile.purpose is Purpose.TX and evse == 0:
            return Refusal("InvalidProfile", "a TxProfile is for one EVSE, not EVSE 0")  # K01.FR.16, 1.6 §3.13.1
        if profile.purpose is Purpose.STATION_MAX and profile.kind is Kind.RELATIVE:
            return Refusal("InvalidProfile", f"{profile.purpose.value} cannot be Relative")  # K01.FR.38
        if profile.purpose is not Purpose.TX and profile.transaction_id is not None:
            return Refusal("InvalidProfile", "only a TxProfile names a transaction")  # 1.6 §7.8, 2.0.1 §2.10
        if not 0 <= profile.stack_level <= rules.max_stack_level:  # 1.6 §7.8, §9.4.1; dm ProfileStackLevel
            return Refusal("InvalidStackLevel", f"stackLevel {profile.stack_level} is not 0 to {rules.max_stack_level}")
        if profile.valid_from is not None and profile.valid_to is not None and profile.valid_from >= profile.valid_to:
            return Refusal("InvalidProfile", "validFrom is not before validTo: the profile would never be valid")
        if (refusal := self._check_schedule(profile, rules, ocpp16=ocpp16)) is not None:
            return refusal
        if evse == 0:
            if not view.controllable & view.evse_ids:
                return Refusal("NoCurrentControl", "no EVSE of the station can limit its current")
        elif evse not in view.controllable:
            return Refusal("NoCurrentControl", f"EVSE {evse} cannot limit its current")
        completed = profile
        if profile.purpose is Purpose.TX:
            found = self._transaction_of(profile, view, ocpp16=ocpp16)
            if isinstance(found, Refusal):
                return found
            completed = replace(completed, transaction_ref=found)
        if ocpp16 and profile.kind is Kind.RELATIVE and profile.schedule.start is not None:
            # 1.6 §7.13: without startSchedule a schedule is relative; a Relative one's start means nothing.
            completed = replace(completed, schedule=replace(profile.schedule, start=None))
        if profile.kind is not Kind.RECURRING and profile.recurrency is not None:
            completed = replace(completed, recurrency=None)  # recurrencyKind belongs to Recurring profiles
        if not ocpp16 and (refusal := self._duplicate(completed)) is not None:
            return refusal
        replaced = self._replaced(completed, ocpp16=ocpp16)
        if len(self._profiles) - len(replaced) + 1 > rules.max_installed:
            return Refusal("NoCapacity", f"the station holds at most {rules.max_installed} charging profiles")
        return completed

    @staticmethod
    def _check_schedule(profile: ChargingProfile, rules: ProfileRules, *, ocpp16: bool) -> Refusal | None:
        schedule = profile.schedule
        if profile.kind in (Kind.ABSOLUTE, Kind.RECURRING) and schedule.start is None:
            return Refusal("InvalidSchedule", f"a {profile.kind.value} profile needs startSchedule")  # K01.FR.40
        if not ocpp16 and profile.kind is Kind.RELATIVE and schedule.start is not None:
            return Refusal("InvalidSchedule", "a Relative profile has no startSchedule")  # K01.FR.41
        if profile.kind is Kind.RECURRING and profile.recurrency is None:
            return Refusal("InvalidProfile", "a Recurring profile needs recurrencyKind")
        if schedule.unit not in rules.allowed_units:
            allowed = ", ".join(sorted(u.value for u in rules.allowed_units))
            return Refusal("UnsupportedRateUnit", f"chargingRateUnit {schedule.unit.value} is not one of {allowed}")
        periods = schedule.periods
        if not periods:
            return Refusal("InvalidSchedule", "the schedule has no periods")  # 1.6 §7.13 1..*, 2.0.1 1..1024
        if len(periods) > rules.max_periods:
            return Refusal("TooManyPeriods", f"{len(periods)} periods, more than the {rules.max_periods} supported")
        if periods[0].start != 0:
            return Refusal("InvalidSchedule", f"the first period starts at {periods[0].start}, not 0")  # K01.FR.31
        for before, after in itertools.pairwise(periods):
            if after.start <= before.start:  # K01.FR.35
                return Refusal("InvalidSchedule", f"period at {after.start} s does not start after {before.start} s")
        if schedule.duration is not None and schedule.duration < 0:
            return Refusal("InvalidSchedule", f"duration {schedule.duration} is negative")
        if schedule.min_rate is not None and not (math.isfinite(schedule.min_rate) and schedule.min_rate >= 0):
            return Refusal("InvalidSchedule", f"minChargingRate {schedule.min_rate} is not a rate")
        for p in periods:
            if not (math.isfinite(p.limit) and p.limit >= 0):
                return Refusal("InvalidSchedule", f"period at {p.start} s: limit {p.limit} is not a rate")
            if (refusal := _check_phases(p.start, p.phases, p.phase_to_use, rules, ocpp16=ocpp16)) is not None:
                return refusal
        return None

    def _transaction_of(self, profile: ChargingProfile, view: StationView, *, ocpp16: bool) -> str | Refusal:
        """The ref of the running transaction a TxProfile is for."""
        running = view.running.get(profile.evse_id)
        if running is None:  # K01.FR.09, 1.6 §3.13.1 / §5.16.4
            return Refusal("TxNotFound", f"no transaction runs on EVSE {profile.evse_id}")
        if profile.transaction_ref is not None:  # the runtime's own (a RemoteStart/RequestStart profile, K05)
            ref: str | None = profile.transaction_ref
        elif profile.transaction_id is not None:
            ref = view.transaction_ids.get(profile.transaction_id)
            if ref is None:  # K01.FR.33
                return Refusal("TxNotFound", f"transaction {profile.transaction_id!r} is not known")
        elif ocpp16:  # 1.6 §7.8: transactionId MAY be used; without it the profile is for the running transaction
            ref = running
        else:  # K01.FR.03: the CSMS SHALL include the transactionId with a TxProfile
            return Refusal("InvalidProfile", "a TxProfile needs transactionId")
        if ref != running:  # K01.FR.09: it is not active on the EVSE the profile names
            return Refusal("TxNotFound", f"that transaction does not run on EVSE {profile.evse_id}")
        return ref

    def _duplicate(self, profile: ChargingProfile) -> Refusal | None:
        """2.0.1: another profile (a different id) the new one may not stand beside."""
        for other in self._profiles.values():
            if other.id == profile.id or other.stack_level != profile.stack_level or other.purpose != profile.purpose:
                continue
            if profile.purpose is Purpose.TX:
                if other.transaction_ref == profile.transaction_ref:  # K01.FR.39
                    return Refusal(
                        "DuplicateProfile",
                        f"profile {other.id} is a TxProfile of that transaction at stackLevel {other.stack_level}",
                    )
            elif other.evse_id == profile.evse_id:
                if _span(other).overlaps(_span(profile)):  # K01.FR.06
                    return Refusal(
                        "DuplicateProfile",
                        f"profile {other.id} has the same stackLevel, purpose and EVSE and overlapping validity",
                    )
            elif profile.purpose is Purpose.TX_DEFAULT and 0 in (other.evse_id, profile.evse_id):  # K01.FR.52, 53
                return Refusal(
                    "DuplicateProfile",
                    f"profile {other.id} is a TxDefaultProfile on EVSE {other.evse_id} at stackLevel "
                    f"{other.stack_level}",
                )
        return None

    def _replaced(self, profile: ChargingProfile, *, ocpp16: bool) -> tuple[int, ...]:
        def replaces(other: ChargingProfile) -> bool:
            if other.id == profile.id:  # K01.FR.05; 1.6 §5.16.3–4
                return True
            if not ocpp16 or other.stack_level != profile.stack_level or other.purpose != profile.purpose:
                return False
            # 1.6 §3.13.2, §5.16.3–4: the same stackLevel and purpose, on the same connector (§3.13.1: a connector's
            # TxDefaultProfile replaces connector 0's only for that connector, i.e. beside it).
            return other.evse_id == profile.evse_id

        return tuple(other.id for other in self._profiles.values() if replaces(other))

    def install(self, profile: ChargingProfile, *, ocpp16: bool) -> tuple[int, ...]:
        """Install a profile `check` returned; the ids of the profiles it replaced (its own id among them when it was
        installed before)."""
        replaced = self._replaced(profile, ocpp16=ocpp16)
        for profile_id in replaced:
            del self._profiles[profile_id]
        self._profiles[profile.id] = profile
        return replaced

    # ------------------------------------------------------------------ removing

    def clear(
        self,
        profile_id: int | None = None,
        evse_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> tuple[int, ...]:
        """ClearChargingProfile (1.6 §6.13, 2.0.1 K10): with an id that profile alone, whatever the other criteria
        (1.6 §6.13 "either a specific charging profile (denoted by id) or a selection", K10.FR.02–03); otherwise
        every profile matching all the criteria given (K10.FR.04), evse_id 0 meaning the station's own, and with none
        given every profile. The ids removed; none is the adapter's Unknown (K10.FR.01)."""
        if profile_id is not None:
            removed: tuple[int, ...] = (profile_id,) if profile_id in self._profiles else ()
        else:
            removed = tuple(
                p.id
                for p in self._profiles.values()
                if (evse_id is None or p.evse_id == evse_id)
                and (purpose is None or p.purpose is purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )
        return self._remove(removed)

    def end_transaction(self, tx_ref: str) -> tuple[int, ...]:
        """The transaction ended: its TxProfiles go (1.6 §3.13.1 "After the transaction is stopped, the profile
        SHOULD be deleted", §7.10 "SHALL cease to be valid when the transaction terminates"; 2.0.1 K (purposes):
        "for the duration of the current transaction only"). The ids removed."""
        return self._remove(
            tuple(p.id for p in self._profiles.values() if p.purpose is Purpose.TX and p.transaction_ref == tx_ref)
        )

    def _remove(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        for profile_id in ids:
            del self._profiles[profile_id]
        return ids

    # ------------------------------------------------------------------ reporting

    def select(
        self,
        evse_id: int | None = None,
        ids: Collection[int] | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
        source: str | Collection[str] | None = None,
    ) -> tuple[ChargingProfile, ...]:
        """GetChargingProfiles (2.0.1 K09): the profiles matching every criterion given. evse_id > 0: that EVSE's
        (K09.FR.04); 0: only those installed on the station itself, not the EVSEs' (K09.FR.05); None: all
        (K09.FR.06). ids: any of them (ChargingProfileCriterionType.chargingProfileId); source: one
        chargingLimitSource or several."""
        sources = {source} if isinstance(source, str) else None if source is None else set(source)
        wanted = None if ids is None else set(ids)
        return tuple(
            p
            for p in self._profiles.values()
            if (evse_id is None or p.evse_id == evse_id)
            and (wanted is None or p.id in wanted)
            and (purpose is None or p.purpose is purpose)
            and (stack_level is None or p.stack_level == stack_level)
            and (sources is None or p.source in sources)
        )


def _check_phases(
    start: int, phases: int | None, phase_to_use: int | None, rules: ProfileRules, *, ocpp16: bool
) -> Refusal | None:
    where = f"period at {start} s"
    if phases is not None:
        if not 1 <= phases <= 3:
            return Refusal("InvalidSchedule", f"{where}: numberPhases {phases} is not 1 to 3")
        # 1.6 §7.14: "the number of phases that can be used" (an upper bound the station keeps anyway); 2.0.1 asks
        # that the station can ensure it: rejected when it cannot use that many (K01.FR.45 allows accepting it
        # instead) or cannot keep a car to fewer phases than it is wired with (K01.FR.43).
        if not ocpp16 and phases > rules.phases:
            return Refusal("InvalidSchedule", f"{where}: numberPhases {phases}, the EVSEs have {rules.phases}")
        if not ocpp16 and phases < rules.phases and not rules.phases_3to1:
            return Refusal(
                "InvalidSchedule", f"{where}: numberPhases {phases}: the station cannot switch from {rules.phases}"
            )
    if phase_to_use is not None:
        if not 1 <= phase_to_use <= 3:
            return Refusal("InvalidSchedule", f"{where}: phaseToUse {phase_to_use} is not 1 to 3")  # 2.0.1 §2.11
        if phases != 1:
            return Refusal("InvalidSchedule", f"{where}: phaseToUse needs numberPhases 1")  # K01.FR.19
        if not rules.phase_switching:  # K01.FR.20, K01.FR.48
            return Refusal("InvalidSchedule", f"{where}: the station cannot choose the phase (phaseToUse)")
    return None
