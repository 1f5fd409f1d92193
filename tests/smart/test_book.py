"""The book of installed charging profiles: every check of SetChargingProfile with the requirement it comes from,
what installing replaces in each version, ClearChargingProfile, a transaction's profiles ending with it,
GetChargingProfiles' selection, and the store's form of a profile."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from station.smart.book import ProfileBook, ProfileRules, Refusal, StationView
from station.smart.profiles import ChargingProfile, Kind, Period, Purpose, RateUnit, Recurrency, Schedule

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
RULES = ProfileRules()
# EVSEs 1 and 2, both with a controller that sets a current; tx-1 runs on EVSE 1 (the CSMS knows it as "1001").
VIEW = StationView(
    evse_ids=frozenset({1, 2}),
    running={1: "tx-1"},
    transaction_ids={"1001": "tx-1"},
    controllable=frozenset({1, 2}),
)
VERSIONS = pytest.mark.parametrize("ocpp16", [True, False], ids=["1.6", "2.0.1"])


def schedule(*periods: Period, unit: RateUnit = RateUnit.A, start: datetime | None = None, **kw: Any) -> Schedule:
    return Schedule(unit, periods or (Period(0, 16.0),), start=start, **kw)


def default(profile_id: int = 1, evse_id: int = 1, stack_level: int = 0, **changes: Any) -> ChargingProfile:
    """An absolute TxDefaultProfile, valid for ever."""
    p = ChargingProfile(profile_id, evse_id, stack_level, Purpose.TX_DEFAULT, Kind.ABSOLUTE, schedule(start=T0))
    return replace(p, **changes)


def tx_profile(profile_id: int = 10, evse_id: int = 1, stack_level: int = 0, **changes: Any) -> ChargingProfile:
    p = ChargingProfile(profile_id, evse_id, stack_level, Purpose.TX, Kind.RELATIVE, schedule())
    return replace(p, **changes)


def station_max(profile_id: int = 20, stack_level: int = 0, **changes: Any) -> ChargingProfile:
    p = ChargingProfile(profile_id, 0, stack_level, Purpose.STATION_MAX, Kind.ABSOLUTE, schedule(start=T0))
    return replace(p, **changes)


def refused(result: ChargingProfile | Refusal, reason: str) -> bool:
    assert isinstance(result, Refusal), result
    assert result.reason_code == reason, result
    assert result.text
    return True


def accepted(result: ChargingProfile | Refusal) -> ChargingProfile:
    assert isinstance(result, ChargingProfile), result
    return result


def installed(*profiles: ChargingProfile, ocpp16: bool) -> ProfileBook:
    book = ProfileBook()
    for p in profiles:
        book.install(accepted(book.check(p, VIEW, RULES, ocpp16=ocpp16)), ocpp16=ocpp16)
    return book


# ---------------------------------------------------------------- which EVSE


@VERSIONS
def test_an_unknown_evse_is_refused(ocpp16: bool) -> None:
    """K01.FR.28: an evseId that does not exist is Rejected (1.6: an unknown connector, Rejected)."""
    assert refused(ProfileBook().check(default(evse_id=3), VIEW, RULES, ocpp16=ocpp16), "UnknownEVSE")
    assert refused(ProfileBook().check(default(evse_id=-1), VIEW, RULES, ocpp16=ocpp16), "UnknownEVSE")


@VERSIONS
def test_a_station_max_profile_is_for_evse_0_only(ocpp16: bool) -> None:
    """1.6 §3.13.1 "ChargePointMaxProfile can only be set at Charge Point ConnectorId 0"; 2.0.1 K (charging profile
    purposes) "ChargingStationMaxProfile can only be set at Charging Station evseId 0"."""
    assert refused(ProfileBook().check(station_max(evse_id=1), VIEW, RULES, ocpp16=ocpp16), "InvalidProfile")
    accepted(ProfileBook().check(station_max(), VIEW, RULES, ocpp16=ocpp16))


@VERSIONS
def test_a_station_max_profile_cannot_be_relative(ocpp16: bool) -> None:
    """K01.FR.38: a ChargingStationMaxProfile's kind SHALL NOT be Relative (1.6 has no rule: a station-wide profile
    relative to "the start of charging" of no transaction means nothing; refused there too)."""
    p = station_max(kind=Kind.RELATIVE, schedule=schedule())
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidProfile")


@VERSIONS
def test_a_tx_profile_on_evse_0_is_refused(ocpp16: bool) -> None:
    """K01.FR.16 "TxProfile SHALL only be used with evseId >0"; 1.6 §3.13.1 "TxProfile SHALL only be set at Charge
    Point ConnectorId >0"."""
    assert refused(ProfileBook().check(tx_profile(evse_id=0), VIEW, RULES, ocpp16=ocpp16), "InvalidProfile")


@VERSIONS
def test_an_evse_whose_controller_cannot_set_a_current_refuses_profiles(ocpp16: bool) -> None:
    """An EVSE whose car side is a driver's meter output (no charge controller) cannot follow a limit: profiles for
    it are refused, and EVSE 0's when no EVSE can."""
    only_1 = replace(VIEW, controllable=frozenset({1}))
    assert refused(ProfileBook().check(default(evse_id=2), only_1, RULES, ocpp16=ocpp16), "NoCurrentControl")
    accepted(ProfileBook().check(default(evse_id=1), only_1, RULES, ocpp16=ocpp16))
    accepted(ProfileBook().check(default(evse_id=0), only_1, RULES, ocpp16=ocpp16))
    accepted(ProfileBook().check(station_max(), only_1, RULES, ocpp16=ocpp16))
    none = replace(VIEW, controllable=frozenset())
    assert refused(ProfileBook().check(default(evse_id=0), none, RULES, ocpp16=ocpp16), "NoCurrentControl")
    assert refused(ProfileBook().check(station_max(), none, RULES, ocpp16=ocpp16), "NoCurrentControl")
    ghost = replace(VIEW, controllable=frozenset({7}))  # a controller of no EVSE of the station controls nothing
    assert refused(ProfileBook().check(station_max(), ghost, RULES, ocpp16=ocpp16), "NoCurrentControl")


# ---------------------------------------------------------------- TxProfile and its transaction


@VERSIONS
def test_a_tx_profile_without_a_running_transaction_is_refused(ocpp16: bool) -> None:
    """K01.FR.09: a TxProfile with no transaction active on the EVSE is Rejected; 1.6 §3.13.1 "If there is no
    transaction active on the connector ... the Charge Point SHALL discard it and return an error status", §5.16.4
    "not possible to set a ChargingProfile with purpose set to TxProfile without presence of an active
    transaction"."""
    p = tx_profile(evse_id=2, transaction_id=None if ocpp16 else "1001")
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "TxNotFound")


def test_a_1_6_tx_profile_without_transaction_id_is_for_the_running_transaction() -> None:
    """1.6 §7.8: transactionId "MAY be used to match the profile to a specific transaction"; without it the profile
    is for the transaction on the connector (§5.16.3). The book fills in the station's reference of it."""
    p = accepted(ProfileBook().check(tx_profile(), VIEW, RULES, ocpp16=True))
    assert p.transaction_ref == "tx-1" and p.transaction_id is None


@VERSIONS
def test_a_tx_profile_with_the_transaction_id_gets_its_reference(ocpp16: bool) -> None:
    """K01.FR.04: the TxProfile applies to the transaction with the given transactionId."""
    p = accepted(ProfileBook().check(tx_profile(transaction_id="1001"), VIEW, RULES, ocpp16=ocpp16))
    assert p.transaction_ref == "tx-1" and p.transaction_id == "1001"


@VERSIONS
def test_a_tx_profile_with_an_unknown_transaction_id_is_refused(ocpp16: bool) -> None:
    """K01.FR.33: a transactionId that is not known: the request is rejected (1.6: it matches no transaction)."""
    assert refused(ProfileBook().check(tx_profile(transaction_id="999"), VIEW, RULES, ocpp16=ocpp16), "TxNotFound")


@VERSIONS
def test_a_tx_profile_for_a_transaction_on_another_evse_is_refused(ocpp16: bool) -> None:
    """K01.FR.09: the transaction must be active on the EVSE the profile names."""
    view = replace(VIEW, running={1: "tx-1", 2: "tx-2"}, transaction_ids={"1001": "tx-1", "1002": "tx-2"})
    p = tx_profile(evse_id=2, transaction_id="1001")
    assert refused(ProfileBook().check(p, view, RULES, ocpp16=ocpp16), "TxNotFound")
    assert accepted(ProfileBook().check(replace(p, transaction_id="1002"), view, RULES, ocpp16=ocpp16))


def test_a_2_0_1_tx_profile_needs_the_transaction_id() -> None:
    """K01.FR.03: the CSMS SHALL include the transactionId when setting a TxProfile."""
    assert refused(ProfileBook().check(tx_profile(), VIEW, RULES, ocpp16=False), "InvalidProfile")


@VERSIONS
def test_a_tx_profile_the_runtime_matched_itself_is_taken_as_it_is(ocpp16: bool) -> None:
    """A RemoteStart/RequestStart profile (1.6 §5.16.2, K05) has no transactionId; the runtime gives it the ref of the
    transaction it started, which must be the one running on the EVSE."""
    p = accepted(ProfileBook().check(tx_profile(transaction_ref="tx-1"), VIEW, RULES, ocpp16=ocpp16))
    assert p.transaction_ref == "tx-1"
    assert refused(ProfileBook().check(tx_profile(transaction_ref="old"), VIEW, RULES, ocpp16=ocpp16), "TxNotFound")


@VERSIONS
def test_only_a_tx_profile_names_a_transaction(ocpp16: bool) -> None:
    """1.6 §7.8 transactionId "Only valid if ChargingProfilePurpose is set to TxProfile"; 2.0.1 ChargingProfileType
    transactionId "SHALL only be included when ChargingProfilePurpose is set to TxProfile"."""
    assert refused(ProfileBook().check(default(transaction_id="1001"), VIEW, RULES, ocpp16=ocpp16), "InvalidProfile")


# ---------------------------------------------------------------- stack level, validity, kind


@VERSIONS
def test_the_stack_level_is_0_to_the_maximum(ocpp16: bool) -> None:
    """1.6 §7.8 stackLevel "integer >=0 ... Lowest level is 0", §9.4.1 ChargeProfileMaxStackLevel; 2.0.1
    SmartChargingCtrlr.ProfileStackLevel "Maximum acceptable value for stackLevel"."""
    rules = ProfileRules(max_stack_level=3)
    accepted(ProfileBook().check(default(stack_level=0), VIEW, rules, ocpp16=ocpp16))
    accepted(ProfileBook().check(default(stack_level=3), VIEW, rules, ocpp16=ocpp16))
    assert refused(ProfileBook().check(default(stack_level=4), VIEW, rules, ocpp16=ocpp16), "InvalidStackLevel")
    assert refused(ProfileBook().check(default(stack_level=-1), VIEW, rules, ocpp16=ocpp16), "InvalidStackLevel")


@VERSIONS
def test_a_profile_that_would_never_be_valid_is_refused(ocpp16: bool) -> None:
    """K01.FR.36/37: valid when now >= validFrom and now < validTo; validFrom >= validTo is valid at no moment."""
    book = ProfileBook()
    assert refused(book.check(default(valid_from=T0, valid_to=T0), VIEW, RULES, ocpp16=ocpp16), "InvalidProfile")
    assert refused(book.check(default(valid_from=T0 + HOUR, valid_to=T0), VIEW, RULES, ocpp16=ocpp16), "InvalidProfile")
    accepted(book.check(default(valid_from=T0, valid_to=T0 + HOUR), VIEW, RULES, ocpp16=ocpp16))


@VERSIONS
@pytest.mark.parametrize("kind", [Kind.ABSOLUTE, Kind.RECURRING])
def test_absolute_and_recurring_profiles_need_a_start_schedule(ocpp16: bool, kind: Kind) -> None:
    """K01.FR.40: Absolute or Recurring: startSchedule SHALL exist (1.6 §7.9 Absolute: "relative to a fixed point in
    time defined in the schedule"; §7.13: without startSchedule a schedule is relative)."""
    p = default(kind=kind, recurrency=Recurrency.DAILY, schedule=schedule())
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidSchedule")


def test_a_2_0_1_relative_profile_has_no_start_schedule() -> None:
    """K01.FR.41: Relative: startSchedule SHALL be absent."""
    p = default(kind=Kind.RELATIVE, schedule=schedule(start=T0))
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=False), "InvalidSchedule")
    accepted(ProfileBook().check(replace(p, schedule=schedule()), VIEW, RULES, ocpp16=False))


def test_a_1_6_relative_profile_loses_a_start_schedule_it_came_with() -> None:
    """1.6 has no K01.FR.41; §7.13 "If absent the schedule will be relative to start of charging": a Relative
    profile's startSchedule means nothing and is dropped."""
    p = accepted(ProfileBook().check(default(kind=Kind.RELATIVE), VIEW, RULES, ocpp16=True))
    assert p.schedule.start is None


@VERSIONS
def test_a_recurring_profile_needs_its_recurrency(ocpp16: bool) -> None:
    """1.6 §7.8 / 2.0.1 ChargingProfileType recurrencyKind "Indicates the start point of a recurrence": a Recurring
    profile without one does not say when it restarts."""
    p = default(kind=Kind.RECURRING)
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidProfile")
    assert accepted(ProfileBook().check(replace(p, recurrency=Recurrency.WEEKLY), VIEW, RULES, ocpp16=ocpp16))
    # recurrencyKind on a profile that does not recur is dropped
    assert (
        accepted(ProfileBook().check(default(recurrency=Recurrency.DAILY), VIEW, RULES, ocpp16=ocpp16)).recurrency
        is None
    )


# ---------------------------------------------------------------- the schedule


@VERSIONS
def test_the_rate_unit_must_be_supported(ocpp16: bool) -> None:
    """K01.FR.26: a chargingRateUnit not configured in RateUnit is Rejected; 1.6 §9.4.2
    ChargingScheduleAllowedChargingRateUnit "A list of supported quantities"."""
    amps_only = ProfileRules(allowed_units=frozenset({RateUnit.A}))
    p = default(schedule=schedule(unit=RateUnit.W, start=T0))
    assert refused(ProfileBook().check(p, VIEW, amps_only, ocpp16=ocpp16), "UnsupportedRateUnit")
    accepted(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16))


@VERSIONS
def test_periods_at_most_the_maximum(ocpp16: bool) -> None:
    """1.6 §9.4.3 ChargingScheduleMaxPeriods, 2.0.1 PeriodsPerSchedule: "Maximum number of periods that may be
    defined per ChargingSchedule"."""
    rules = ProfileRules(max_periods=2)
    two = default(schedule=schedule(Period(0, 16), Period(60, 8), start=T0))
    three = default(schedule=schedule(Period(0, 16), Period(60, 8), Period(120, 6), start=T0))
    accepted(ProfileBook().check(two, VIEW, rules, ocpp16=ocpp16))
    assert refused(ProfileBook().check(three, VIEW, rules, ocpp16=ocpp16), "TooManyPeriods")


@VERSIONS
def test_a_schedule_has_periods(ocpp16: bool) -> None:
    """1.6 §7.13 chargingSchedulePeriod 1..*; 2.0.1 ChargingScheduleType 1..1024."""
    p = default(schedule=Schedule(RateUnit.A, (), start=T0))
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidSchedule")


@VERSIONS
def test_the_first_period_starts_at_0(ocpp16: bool) -> None:
    """K01.FR.31 "The startPeriod of the first chargingSchedulePeriod ... SHALL always be 0"; 1.6 §7.13 "The
    startSchedule of the first ChargingSchedulePeriod SHALL always be 0"."""
    p = default(schedule=schedule(Period(10, 16), start=T0))
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidSchedule")


@VERSIONS
@pytest.mark.parametrize("second", [0, 600], ids=["same start", "earlier start"])
def test_periods_start_in_increasing_order(ocpp16: bool, second: int) -> None:
    """K01.FR.35: periods ordered by increasing startPeriod. Two periods starting at once overlap: refused."""
    p = default(schedule=schedule(Period(0, 16), Period(1200, 8), Period(second, 6), start=T0))
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidSchedule")


@VERSIONS
@pytest.mark.parametrize("limit", [-1.0, float("nan"), float("inf")])
def test_a_limit_is_a_rate(ocpp16: bool, limit: float) -> None:
    """1.6 §7.14 / 2.0.1 §2.11 limit: "Charging rate limit" in the schedule's unit; below 0 is no limit of charging
    (discharging is not in 1.6 or 2.0.1)."""
    p = default(schedule=schedule(Period(0, limit), start=T0))
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidSchedule")
    assert refused(
        ProfileBook().check(default(schedule=schedule(start=T0, min_rate=-1.0)), VIEW, RULES, ocpp16=ocpp16),
        "InvalidSchedule",
    )
    assert refused(
        ProfileBook().check(default(schedule=schedule(start=T0, duration=-1)), VIEW, RULES, ocpp16=ocpp16),
        "InvalidSchedule",
    )
    accepted(ProfileBook().check(default(schedule=schedule(Period(0, 0.0), start=T0)), VIEW, RULES, ocpp16=ocpp16))


@VERSIONS
@pytest.mark.parametrize("phases", [0, 4])
def test_number_phases_is_1_to_3(ocpp16: bool, phases: int) -> None:
    """1.6 §7.14 / 2.0.1 §2.11 numberPhases: the phases an AC EVSE may use (3 when absent, K01.FR.49)."""
    p = default(schedule=schedule(Period(0, 16, phases=phases), start=T0))
    assert refused(ProfileBook().check(p, VIEW, RULES, ocpp16=ocpp16), "InvalidSchedule")


def test_2_0_1_number_phases_the_station_cannot_keep_is_refused() -> None:
    """K01.FR.43: numberPhases the station cannot ensure (a 3-phase station without 3-to-1 switching, Phases3to1,
    asked for 1 phase) is Rejected; K01.FR.45: more phases than the station has MAY be accepted, here Rejected."""
    one = default(schedule=schedule(Period(0, 16, phases=1), start=T0))
    assert refused(ProfileBook().check(one, VIEW, RULES, ocpp16=False), "InvalidSchedule")
    accepted(ProfileBook().check(one, VIEW, ProfileRules(phases_3to1=True), ocpp16=False))
    three = default(schedule=schedule(Period(0, 16, phases=3), start=T0))
    accepted(ProfileBook().check(three, VIEW, RULES, ocpp16=False))
    assert refused(ProfileBook().check(three, VIEW, ProfileRules(phases=1), ocpp16=False), "InvalidSchedule")
    accepted(ProfileBook().check(one, VIEW, ProfileRules(phases=1), ocpp16=False))


def test_1_6_number_phases_is_an_upper_bound() -> None:
    """1.6 §7.14 "The number of phases that can be used for charging": no rule refuses fewer or more phases than the
    station has (the station uses no more than it has anyway)."""
    for phases, rules in ((1, RULES), (3, ProfileRules(phases=1))):
        p = default(schedule=schedule(Period(0, 16, phases=phases), start=T0))
        accepted(ProfileBook().check(p, VIEW, rules, ocpp16=True))


@VERSIONS
def test_phase_to_use_only_with_one_phase_and_phase_switching(ocpp16: bool) -> None:
    """K01.FR.19: no phaseToUse when numberPhases is other than 1; K01.FR.20 / K01.FR.48: none unless
    ACPhaseSwitchingSupported is true; 2.0.1 §2.11 phaseToUse "Values: 1..3"."""
    switching = ProfileRules(phase_switching=True, phases_3to1=True)

    def one_phase(phases: int | None, phase_to_use: int) -> ChargingProfile:
        return default(schedule=schedule(Period(0, 16, phases=phases, phase_to_use=phase_to_use), start=T0))

    accepted(ProfileBook().check(one_phase(1, 2), VIEW, switching, ocpp16=ocpp16))
    assert refused(
        ProfileBook().check(one_phase(1, 2), VIEW, ProfileRules(phases_3to1=True), ocpp16=ocpp16), "InvalidSchedule"
    )
    assert refused(ProfileBook().check(one_phase(3, 2), VIEW, switching, ocpp16=ocpp16), "InvalidSchedule")
    assert refused(ProfileBook().check(one_phase(None, 2), VIEW, switching, ocpp16=ocpp16), "InvalidSchedule")
    assert refused(ProfileBook().check(one_phase(1, 4), VIEW, switching, ocpp16=ocpp16), "InvalidSchedule")


# ---------------------------------------------------------------- a profile beside the installed ones


def test_2_0_1_same_stack_level_purpose_and_evse_with_overlapping_validity_is_refused() -> None:
    """K01.FR.06: no two profiles (different ids) with the same stackLevel, purpose and evseId and overlapping
    validity."""
    book = installed(default(1, valid_from=T0, valid_to=T0 + 2 * HOUR), ocpp16=False)
    overlapping = default(2, valid_from=T0 + HOUR, valid_to=T0 + 3 * HOUR)
    assert refused(book.check(overlapping, VIEW, RULES, ocpp16=False), "DuplicateProfile")
    assert refused(book.check(default(2), VIEW, RULES, ocpp16=False), "DuplicateProfile")  # valid for ever
    after = default(2, valid_from=T0 + 2 * HOUR)  # validTo is exclusive (K01.FR.37)
    accepted(book.check(after, VIEW, RULES, ocpp16=False))
    for other in (default(2, stack_level=1), default(2, evse_id=2), station_max(2), default(1, stack_level=0)):
        accepted(book.check(other, VIEW, RULES, ocpp16=False))  # another level, EVSE, purpose; or the same id


def test_2_0_1_a_second_tx_profile_of_a_transaction_at_its_stack_level_is_refused() -> None:
    """K01.FR.39: no two TxProfiles (different ids) with the same stackLevel and transactionId."""
    book = installed(tx_profile(10, transaction_id="1001"), ocpp16=False)
    assert refused(book.check(tx_profile(11, transaction_id="1001"), VIEW, RULES, ocpp16=False), "DuplicateProfile")
    accepted(book.check(tx_profile(11, stack_level=1, transaction_id="1001"), VIEW, RULES, ocpp16=False))
    accepted(book.check(tx_profile(10, transaction_id="1001"), VIEW, RULES, ocpp16=False))  # K01.FR.05


def test_2_0_1_tx_default_on_evse_0_and_on_an_evse_at_one_stack_level_is_refused() -> None:
    """K01.FR.52: a TxDefaultProfile on EVSE 0 while one with the same stackLevel is on an EVSE (another id):
    Rejected, DuplicateProfile; K01.FR.53 the other way round."""
    on_evse = installed(default(1, evse_id=1), ocpp16=False)
    assert refused(on_evse.check(default(2, evse_id=0), VIEW, RULES, ocpp16=False), "DuplicateProfile")
    accepted(on_evse.check(default(2, evse_id=0, stack_level=1), VIEW, RULES, ocpp16=False))
    accepted(on_evse.check(default(2, evse_id=2), VIEW, RULES, ocpp16=False))  # two EVSEs: each its own
    on_station = installed(default(1, evse_id=0), ocpp16=False)
    assert refused(on_station.check(default(2, evse_id=2), VIEW, RULES, ocpp16=False), "DuplicateProfile")
    accepted(on_station.check(default(1, evse_id=2), VIEW, RULES, ocpp16=False))  # the same id moves


@VERSIONS
def test_a_full_book_refuses_a_new_profile_but_takes_a_replacement(ocpp16: bool) -> None:
    """1.6 §9.4.5 MaxChargingProfilesInstalled "Maximum number of Charging profiles installed at a time"; 2.0.1
    Entries(ChargingProfiles). A profile that replaces one takes its place."""
    rules = ProfileRules(max_installed=2)
    book = installed(default(1, stack_level=0), default(2, stack_level=1), ocpp16=ocpp16)
    assert refused(book.check(default(3, stack_level=2), VIEW, rules, ocpp16=ocpp16), "NoCapacity")
    accepted(
        book.check(default(2, stack_level=1, schedule=schedule(Period(0, 6), start=T0)), VIEW, rules, ocpp16=ocpp16)
    )
    if ocpp16:  # the same stackLevel and purpose on the connector replaces (1.6 §5.16.4)
        accepted(book.check(default(3, stack_level=1), VIEW, rules, ocpp16=True))


@VERSIONS
def test_check_changes_nothing(ocpp16: bool) -> None:
    book = installed(default(1), ocpp16=ocpp16)
    before = book.all
    accepted(book.check(default(2, evse_id=2), VIEW, RULES, ocpp16=ocpp16))
    refused(book.check(default(3, evse_id=9), VIEW, RULES, ocpp16=ocpp16), "UnknownEVSE")
    assert book.all == before and len(book) == 1


# ---------------------------------------------------------------- installing: what it replaces


@VERSIONS
def test_the_same_id_replaces(ocpp16: bool) -> None:
    """K01.FR.05: an already known ChargingProfile.id is replaced; 1.6 §5.16.3–4 "a charging profile with the same
    chargingProfileId ... SHALL replace the existing charging profile"."""
    book = installed(default(1), default(2, evse_id=2), ocpp16=ocpp16)
    moved = default(1, evse_id=2, stack_level=4)
    assert book.install(moved, ocpp16=ocpp16) == (1,)
    assert book.all == (default(2, evse_id=2), moved) and book.get(1) == moved


def test_1_6_the_same_stack_level_and_purpose_on_a_connector_replaces() -> None:
    """1.6 §3.13.2 "Whenever a Charge Point receives a Charging Profile with a stackLevel and Purpose that already
    exists in the Charge Point, the Charge Point SHALL replace the existing profile"; §5.16.3–4 "or the same
    combination of stackLevel / ChargingProfilePurpose"."""
    book = installed(default(1), default(2, stack_level=1), station_max(20), ocpp16=True)
    assert book.install(default(3), ocpp16=True) == (1,)
    assert book.install(station_max(21), ocpp16=True) == (20,)
    assert [p.id for p in book.all] == [2, 3, 21]


def test_1_6_a_connectors_tx_default_profile_stands_beside_connector_0s() -> None:
    """1.6 §3.13.1: with a TxDefaultProfile on connector 0, one for a connector > 0 "SHALL be replaced only for that
    specific connector": both stay installed, each on its own connector."""
    book = installed(default(1, evse_id=0), ocpp16=True)
    assert book.install(default(2, evse_id=1), ocpp16=True) == ()
    assert book.install(default(3, evse_id=1), ocpp16=True) == (2,)
    assert [p.id for p in book.all] == [1, 3]


def test_1_6_a_tx_profile_at_the_same_stack_level_of_the_transaction_replaces() -> None:
    """1.6 §5.16.2: a SetChargingProfile for the transaction with the same StackLevel as the RemoteStart's profile
    SHALL replace it, "otherwise it SHALL install/stack the profile next to" it."""
    book = ProfileBook()
    remote = accepted(book.check(tx_profile(10, transaction_ref="tx-1"), VIEW, RULES, ocpp16=True))
    book.install(remote, ocpp16=True)
    stacked = accepted(book.check(tx_profile(11, stack_level=1), VIEW, RULES, ocpp16=True))
    assert book.install(stacked, ocpp16=True) == ()
    same_level = accepted(book.check(tx_profile(12, transaction_id="1001"), VIEW, RULES, ocpp16=True))
    assert book.install(same_level, ocpp16=True) == (10,)
    assert [p.id for p in book.all] == [11, 12]


def test_2_0_1_profiles_at_one_stack_level_with_separate_validity_stand_beside_each_other() -> None:
    """K01.FR.06 forbids only overlapping validity; K01.FR.05: only the same id replaces."""
    book = installed(default(1, valid_to=T0 + HOUR), ocpp16=False)
    assert (
        book.install(accepted(book.check(default(2, valid_from=T0 + HOUR), VIEW, RULES, ocpp16=False)), ocpp16=False)
        == ()
    )
    assert [p.id for p in book.all] == [1, 2]


# ---------------------------------------------------------------- clearing


def clearing_book() -> ProfileBook:
    return ProfileBook(
        [
            station_max(20),
            default(1, evse_id=0),
            default(2, evse_id=1, stack_level=1),
            default(3, evse_id=2, stack_level=1),
            replace(tx_profile(10), transaction_ref="tx-1"),
        ]
    )


def test_clear_by_id_removes_that_profile_whatever_the_other_criteria() -> None:
    """1.6 §6.13: "either a specific charging profile (denoted by id) or a selection"; K10.FR.02 "either ... a
    chargingProfile.id OR ... one or more of the fields", K10.FR.03 the profile with the matching id is cleared."""
    book = clearing_book()
    assert book.clear(profile_id=2, evse_id=2, purpose=Purpose.TX, stack_level=7) == (2,)
    assert book.clear(profile_id=2) == ()  # nothing matched: the adapter answers Unknown (K10.FR.01)
    assert book.clear(profile_id=99) == ()
    assert len(book) == 4


def test_clear_by_criteria_removes_every_profile_matching_all_of_them() -> None:
    """K10.FR.04: the profiles that match (as logical AND) evseId, chargingProfilePurpose, stackLevel; 1.6 §6.13
    connectorId 0 "specifies the charging profile for the overall Charge Point"."""
    book = clearing_book()
    assert book.clear(evse_id=0) == (20, 1)  # the station's own, not the EVSEs'
    assert book.clear(stack_level=1, purpose=Purpose.TX_DEFAULT, evse_id=2) == (3,)
    assert book.clear(purpose=Purpose.TX) == (10,)
    assert book.clear(stack_level=5) == ()
    assert [p.id for p in book.all] == [2]


def test_clear_without_criteria_removes_every_profile() -> None:
    """1.6 §5.5 "clear some or all of the charging profiles"; §6.13: an absent field does not restrict."""
    book = clearing_book()
    assert sorted(book.clear()) == [1, 2, 3, 10, 20]
    assert len(book) == 0 and book.all == ()


def test_a_transactions_tx_profiles_end_with_it() -> None:
    """1.6 §3.13.1 "After the transaction is stopped, the profile SHOULD be deleted", §7.10 TxProfile "SHALL cease to
    be valid when the transaction terminates"; 2.0.1 K (purposes): TxProfile "for the duration of the current
    transaction only"."""
    book = clearing_book()
    book.install(replace(tx_profile(11, evse_id=2, stack_level=2), transaction_ref="tx-2"), ocpp16=False)
    assert book.end_transaction("tx-1") == (10,)
    assert book.end_transaction("tx-1") == ()
    assert [p.id for p in book.all] == [20, 1, 2, 3, 11]


# ---------------------------------------------------------------- GetChargingProfiles


def test_select_by_evse() -> None:
    """K09.FR.04: evseId > 0, that EVSE's profiles; K09.FR.05: evseId 0, only those installed on the station itself
    (a TxDefaultProfile on EVSE 0 among them, not the EVSEs' own); K09.FR.06: evseId absent, all."""
    book = clearing_book()
    assert [p.id for p in book.select(evse_id=1)] == [2, 10]
    assert [p.id for p in book.select(evse_id=0)] == [20, 1]
    assert [p.id for p in book.select()] == [20, 1, 2, 3, 10]
    assert book.select(evse_id=5) == ()


def test_select_matches_every_criterion() -> None:
    """K09.FR.03–06: the profiles that match all fields of chargingProfile (ChargingProfileCriterionType): any of
    the chargingProfileIds, stackLevel, chargingProfilePurpose, one of the chargingLimitSources."""
    book = clearing_book()
    book.install(default(4, evse_id=2, stack_level=3, source="EMS"), ocpp16=False)
    assert [p.id for p in book.select(ids=[3, 10, 99])] == [3, 10]
    assert [p.id for p in book.select(ids=[3, 10], evse_id=2)] == [3]
    assert [p.id for p in book.select(purpose=Purpose.TX_DEFAULT, stack_level=1)] == [2, 3]
    assert [p.id for p in book.select(purpose=Purpose.STATION_MAX)] == [20]
    assert [p.id for p in book.select(source="EMS")] == [4]
    assert [p.id for p in book.select(source=["EMS", "CSO"], stack_level=3)] == [4]
    assert book.select(ids=[]) == ()


# ---------------------------------------------------------------- the store's form


FULL = ChargingProfile(
    7, 2, 3, Purpose.TX, Kind.RECURRING,
    Schedule(RateUnit.W, (Period(0, 11000.0, phases=3), Period(60, 1380.5, phases=1, phase_to_use=2)),
             duration=86400, start=T0, min_rate=1380.0, id=4),
    recurrency=Recurrency.WEEKLY, valid_from=T0, valid_to=T0 + HOUR,
    transaction_id="1001", transaction_ref="tx-1", source="EMS",
)  # fmt: skip


@pytest.mark.parametrize("p", [FULL, default(), tx_profile(), station_max()], ids=["full", "default", "tx", "max"])
def test_a_profile_goes_through_json_unchanged(p: ChargingProfile) -> None:
    d = p.to_dict()
    assert ChargingProfile.from_dict(json.loads(json.dumps(d))) == p
    assert json.loads(json.dumps(d)) == d  # plain JSON types


def test_the_store_form_is_stable() -> None:
    """The store keeps this form across releases: field names and ISO 8601 UTC times."""
    d = FULL.to_dict()
    assert d["valid_from"] == "2026-12-01T08:00:00+00:00" and d["schedule"]["start"] == "2026-12-01T08:00:00+00:00"
    assert d["purpose"] == "TxProfile" and d["kind"] == "Recurring" and d["recurrency"] == "Weekly"
    assert d["schedule"]["periods"][1] == {"start": 60, "limit": 1380.5, "phases": 1, "phase_to_use": 2}
    assert set(d) == {
        "id", "evse_id", "stack_level", "purpose", "kind", "recurrency", "valid_from", "valid_to",
        "transaction_id", "transaction_ref", "source", "schedule",
    }  # fmt: skip


def test_a_time_with_another_offset_reads_back_in_utc() -> None:
    d = FULL.to_dict()
    d["valid_from"] = "2026-12-01T09:00:00+01:00"
    p = ChargingProfile.from_dict(d)
    assert p.valid_from == T0 and p.valid_from.tzinfo is UTC  # type: ignore[union-attr]


def broken(path: str, value: object) -> dict[str, Any]:
    d = FULL.to_dict()
    *parents, last = path.split(".")
    target: Any = d
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    index: Any = int(last) if last.isdigit() else last
    if value is KeyError:
        del target[index]
    else:
        target[index] = value
    return d


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("id", "7"),
        ("id", True),
        ("id", 2**40),
        ("id", KeyError),
        ("evse_id", 1.5),
        ("purpose", "ChargingStationExternalConstraints"),
        ("kind", None),
        ("recurrency", "Monthly"),
        ("valid_from", "yesterday"),
        ("valid_from", "2026-12-01T08:00:00"),  # no offset
        ("valid_to", 1700000000),
        ("transaction_id", 1001),
        ("transaction_ref", "x" * 256),
        ("source", None),
        ("schedule", "none"),
        ("schedule", KeyError),
        ("schedule.unit", "kW"),
        ("schedule.id", None),
        ("schedule.duration", "1h"),
        ("schedule.min_rate", "NaN"),
        ("schedule.start", ["2026"]),
        ("schedule.periods", []),
        ("schedule.periods", {"0": {}}),
        ("schedule.periods", [{"start": 0, "limit": 1.0}] * 1025),
        ("schedule.periods.0", [0, 16]),
        ("schedule.periods.0.start", None),
        ("schedule.periods.0.limit", float("inf")),
        ("schedule.periods.0.limit", "16"),
        ("schedule.periods.1.phases", "1"),
        ("schedule.periods.1.phase_to_use", False),
    ],
)
def test_malformed_store_data_is_a_value_error(path: str, value: object) -> None:
    with pytest.raises(ValueError, match=path.split(".")[-1] if not path[-1].isdigit() else "periods"):
        ChargingProfile.from_dict(broken(path, value))


@pytest.mark.parametrize("data", [None, [], "profile", 7, {"schedule": {}}])
def test_what_is_not_a_profile_object_is_a_value_error(data: object) -> None:
    with pytest.raises(ValueError):
        ChargingProfile.from_dict(data)


def test_a_deeply_nested_value_is_refused_without_recursing() -> None:
    nested: Any = 0
    for _ in range(10000):
        nested = {"start": nested}
    with pytest.raises(ValueError, match="start"):
        ChargingProfile.from_dict(broken("schedule.periods.0.start", nested))
