"""The composite schedule (issue 19 part 2): the leading profile per purpose and instant, TxProfile over
TxDefaultProfile, the station maximum and the hardware as caps, recurring and relative schedules, validity windows,
W <-> A, sharing the station cap; against the worked examples of 1.6 §3.13 and 2.0.1 part 2 §3 / part 6 TC_K_4x, and
against a naive reference with hypothesis."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.smart.composite import (
    ActiveTransaction,
    CompositePeriod,
    Site,
    allocate,
    composite_schedule,
    limits_at,
    next_boundary,
)
from station.smart.profiles import ChargingProfile, Kind, Period, Purpose, RateUnit, Recurrency, Schedule

T0 = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)  # a Monday
ONE = Site(evse_ids=(1,), max_current_a={1: 32.0})
TWO = Site(evse_ids=(1, 2), max_current_a={1: 32.0, 2: 32.0})


def profile(
    id: int,
    periods: list[tuple[int, float]] | list[tuple[int, float, int | None]],
    *,
    purpose: Purpose = Purpose.TX_DEFAULT,
    kind: Kind = Kind.ABSOLUTE,
    evse: int = 1,
    stack: int = 0,
    unit: RateUnit = RateUnit.A,
    start: datetime | None = T0,
    duration: int | None = None,
    recurrency: Recurrency | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    tx: str | None = None,
    min_rate: float | None = None,
) -> ChargingProfile:
    ps = tuple(Period(p[0], p[1], p[2] if len(p) > 2 else None) for p in periods)  # type: ignore[misc]
    return ChargingProfile(
        id=id,
        evse_id=evse,
        stack_level=stack,
        purpose=purpose,
        kind=kind,
        schedule=Schedule(unit, ps, duration, None if kind is Kind.RELATIVE else start, min_rate),
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        transaction_ref=tx,
    )


def pairs(schedule_periods: tuple[CompositePeriod, ...]) -> list[tuple[int, float]]:
    return [(p.start, p.limit) for p in schedule_periods]


# --- the worked examples -----------------------------------------------------------------------------------------


def test_tc_k_40_stacking_falls_back_to_the_lower_stack_level_when_the_higher_schedule_ends() -> None:
    """2.0.1 part 6 TC_K_40_CS (K08.FR.02, K08.FR.06; 2.0.1 §3.5, K01.FR.11): TxDefault stack 0 (6, 8, 10 A at 0,
    100, 200 s, 400 s) under stack 1 (7, 9 A at 0, 100 s, 150 s). No transaction: composed as if one were running.
    Expected as printed with x = 0: 7 @0, 9 @100, 8 @150, 10 @200."""
    base = profile(1, [(0, 6), (100, 8), (200, 10)], stack=0, duration=400, valid_to=T0 + timedelta(seconds=401))
    top = profile(2, [(0, 7), (100, 9)], stack=1, duration=150, valid_to=T0 + timedelta(seconds=401))
    got = composite_schedule([base, top], 1, T0, 350, RateUnit.A, ONE)
    assert got.duration == 350 and got.unit is RateUnit.A and got.start == T0
    assert pairs(got.periods) == [(0, 7), (100, 9), (150, 8), (200, 10)]
    # In W (the "limit multiplied by 1000" variant of the test case): the same shape.
    w = [profile(p.id, [(q.start, q.limit * 1000) for q in p.schedule.periods], stack=p.stack_level,
                 duration=p.schedule.duration, unit=RateUnit.W) for p in (base, top)]  # fmt: skip
    assert pairs(composite_schedule(w, 1, T0, 350, RateUnit.W, ONE).periods) == [
        (0, 7000), (100, 9000), (150, 8000), (200, 10000)]  # fmt: skip
    # A query that starts x = 30 s later moves every start by -x (the printed "(100 - x)").
    later = composite_schedule([base, top], 1, T0 + timedelta(seconds=30), 320, RateUnit.A, ONE)
    assert pairs(later.periods) == [(0, 7), (70, 9), (120, 8), (170, 10)]


def test_tc_k_41_txprofile_overrules_txdefault_and_the_station_maximum_caps_both() -> None:
    """2.0.1 part 6 TC_K_41_CS (K08.FR.04, 2.0.1 §3.5, K02.FR.04, K02.FR.08): ChargingStationMaxProfile 10 A; a
    TxDefaultProfile 6/10/8/15/8 A at 0/60/120/180/260 s for 300 s; a TxProfile 8/11/16/6/12 A at 0/50/140/200/240 s
    for 260 s. The printed expectation is 8 @0, 10 @50, 6 @200, 10 @240 and stops there; but the TxProfile ends at
    260 s, and K02.FR.08 says the station then falls back to the TxDefaultProfile (8 A from 260 s) until it ends at
    300 s, after which only the station maximum (10 A) is left. We test the normative text: the printed list plus
    those two periods."""
    window = T0 + timedelta(seconds=401)
    station = profile(1, [(0, 10)], purpose=Purpose.STATION_MAX, evse=0, duration=86400)
    default = profile(2, [(0, 6), (60, 10), (120, 8), (180, 15), (260, 8)], duration=300, valid_to=window)
    tx = profile(3, [(0, 8), (50, 11), (140, 16), (200, 6), (240, 12)], purpose=Purpose.TX, duration=260,
                 valid_to=window, tx="T1")  # fmt: skip
    site = Site((1,), {1: 32.0}, transactions={1: ActiveTransaction("T1", T0 - timedelta(minutes=5))})
    got = composite_schedule([station, default, tx], 1, T0, 400, RateUnit.A, site)
    assert pairs(got.periods) == [(0, 8), (50, 10), (200, 6), (240, 10), (260, 8), (300, 10)]
    # Without the transaction its TxProfile does not apply (1.6 §3.13.1): the TxDefaultProfile under the cap.
    alone = composite_schedule([station, default, tx], 1, T0, 400, RateUnit.A, ONE)
    assert pairs(alone.periods) == [(0, 6), (60, 10), (120, 8), (180, 10), (260, 8), (300, 10)]


def test_the_daily_example_profile_of_1_6_section_3_13_7_and_2_0_1_section_3_6() -> None:
    """1.6 §3.13.7 / 2.0.1 §3.6: TxDefaultProfile 100, Recurring Daily from 2013-01-01T00:00Z, 11 kW, 6 kW from
    08:00, 11 kW from 20:00 (3 phases). Any later day looks the same; in A it is W / (230 V × 3) (K01.FR.50)."""
    p = profile(100, [(0, 11000, 3), (28800, 6000, 3), (72000, 11000, 3)], kind=Kind.RECURRING,
                recurrency=Recurrency.DAILY, duration=86400, unit=RateUnit.W,
                start=datetime(2013, 1, 1, tzinfo=UTC))  # fmt: skip
    day = datetime(2024, 7, 19, tzinfo=UTC)
    got = composite_schedule([p], 1, day, 86400, RateUnit.W, ONE)
    assert pairs(got.periods) == [(0, 11000), (28800, 6000), (72000, 11000)]
    assert {q.phases for q in got.periods} == {3}
    amps = composite_schedule([p], 1, day + timedelta(hours=6), 6 * 3600, RateUnit.A, ONE)
    assert pairs(amps.periods) == [(0, 15.942), (7200, 8.695)]  # 11000/690, 6000/690, rounded down to 1 mA


def test_the_stacked_example_of_2_0_1_section_3_6_1_peak_hours_sundays_and_christmas() -> None:
    """2.0.1 §3.6.1: stack 1 limits 17:00–20:00 to 2 kW every day; stack 2 lifts it on Sundays (weekly from Sunday
    2020-01-05, 999999 W for a day); stack 3 lifts it on Christmas Day 2020 (Absolute, valid in 2020 only). The printed
    duration 1080 of stack 1 is an OCR slip for 10800 (17:00 to 20:00, as the text says); we test the intent. Times
    are taken as UTC. The lifted limit is the EVSE's own maximum (32 A × 230 V × 3 = 22080 W)."""
    peak = profile(10, [(0, 2000)], stack=1, kind=Kind.RECURRING, recurrency=Recurrency.DAILY, unit=RateUnit.W,
                   start=datetime(2020, 1, 9, 17, tzinfo=UTC), duration=10800)  # fmt: skip
    sunday = profile(11, [(0, 999999)], stack=2, kind=Kind.RECURRING, recurrency=Recurrency.WEEKLY, unit=RateUnit.W,
                     start=datetime(2020, 1, 5, tzinfo=UTC), duration=86400)  # fmt: skip
    xmas = profile(12, [(0, 999999)], stack=3, unit=RateUnit.W, start=datetime(2020, 12, 25, tzinfo=UTC),
                   duration=86400, valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                   valid_to=datetime(2021, 1, 1, tzinfo=UTC))  # fmt: skip
    book = [peak, sunday, xmas]

    def day(y: int, m: int, d: int) -> list[tuple[int, float]]:
        return pairs(composite_schedule(book, 1, datetime(y, m, d, tzinfo=UTC), 86400, RateUnit.W, ONE).periods)

    limited = [(0, 22080), (17 * 3600, 2000), (20 * 3600, 22080)]
    assert day(2020, 1, 14) == limited  # a Tuesday
    assert day(2020, 1, 12) == [(0, 22080)]  # a Sunday
    assert day(2020, 12, 25) == [(0, 22080)]  # Christmas 2020, a Friday
    assert day(2021, 12, 25) == limited  # Christmas 2021, a Saturday: stack 3 is no longer valid
    assert day(2020, 1, 8) == [(0, 22080)]  # before the daily schedule's startSchedule (K01.FR.30)


def test_1_6_stacking_highest_valid_stack_level_prevails_and_future_valid_from_reverts_to_default() -> None:
    """1.6 §3.13.2: the prevailing profile is the one with the highest stackLevel among those valid (validFrom /
    validTo); a replacing profile valid from a future time leaves the default in force until then; and stacking
    without a duration on the highest level never falls back to a lower one."""
    default = profile(1, [(0, 16)], stack=0)
    later = profile(2, [(0, 8)], stack=1, valid_from=T0 + timedelta(hours=1))
    got = composite_schedule([default, later], 1, T0, 7200, RateUnit.A, ONE)
    assert pairs(got.periods) == [(0, 16), (3600, 8)]
    no_duration = profile(3, [(0, 20), (600, 12)], stack=5)
    got = composite_schedule([default, later, no_duration], 1, T0, 86400, RateUnit.A, ONE)
    assert pairs(got.periods) == [(0, 20), (600, 12)]


# --- purposes, EVSEs, caps ---------------------------------------------------------------------------------------


def test_an_evse_txdefault_wins_a_tie_with_the_evse_0_one_but_a_higher_stack_level_wins_anyway() -> None:
    """1.6 §3.13.1: a TxDefaultProfile for connector 0 applies to all connectors; one for a connector replaces it for
    that connector (we read: at the same stack level). 2.0.1 §3.4: a profile on EVSE #0 is active on all EVSEs;
    K01.FR.52/53 make the tie impossible there; across stack levels the higher one leads (K01.FR.17)."""
    everywhere = profile(1, [(0, 20)], evse=0, stack=1)
    mine = profile(2, [(0, 10)], evse=1, stack=1)
    limits = limits_at([everywhere, mine], T0, TWO)
    assert limits.per_evse_a == {1: 10, 2: 20}
    higher = profile(3, [(0, 25)], evse=0, stack=2)
    assert limits_at([everywhere, mine, higher], T0, TWO).per_evse_a == {1: 25, 2: 25}


def test_a_txprofile_applies_only_to_its_own_running_transaction() -> None:
    """1.6 §3.13.1, K01.FR.04, K02.FR.04: the TxProfile of transaction T1 on EVSE 1 overrules the TxDefaultProfile
    there only; another transaction (or none) does not see it."""
    default = profile(1, [(0, 16)], evse=0)
    tx = profile(2, [(0, 6)], purpose=Purpose.TX, evse=1, stack=0, tx="T1")
    running = {1: ActiveTransaction("T1", T0), 2: ActiveTransaction("T2", T0)}
    site = Site((1, 2), {1: 32, 2: 32}, transactions=running)
    assert limits_at([default, tx], T0, site).per_evse_a == {1: 6, 2: 16}
    other = Site((1, 2), {1: 32, 2: 32}, transactions={1: ActiveTransaction("T9", T0)})
    assert limits_at([default, tx], T0, other).per_evse_a == {1: 16, 2: 16}


def test_the_station_maximum_caps_every_evse_and_the_station_total() -> None:
    """1.6 §3.13.3 (the ChargePointMaxProfile is the limit for all connectors combined), K08.FR.03 (EVSE 0 reports
    the station's total), K08.FR.04: each EVSE at most the station's cap; the station: the sum of its EVSEs, capped."""
    cap = profile(1, [(0, 40), (600, 20)], purpose=Purpose.STATION_MAX, evse=0)
    default = profile(2, [(0, 16)], evse=0)
    assert pairs(composite_schedule([cap, default], 1, T0, 1200, RateUnit.A, TWO).periods) == [(0, 16)]
    assert pairs(composite_schedule([cap, default], 0, T0, 1200, RateUnit.A, TWO).periods) == [(0, 32), (600, 20)]
    big = Site((1, 2), {1: 32, 2: 16})
    assert pairs(composite_schedule([cap], 1, T0, 1200, RateUnit.A, big).periods) == [(0, 32), (600, 20)]
    assert pairs(composite_schedule([cap], 0, T0, 1200, RateUnit.A, big).periods) == [(0, 40), (600, 20)]
    assert pairs(composite_schedule([], 0, T0, 60, RateUnit.A, big).periods) == [(0, 48)]  # the hardware: 32 + 16
    limits = limits_at([cap, default], T0 + timedelta(seconds=600), TWO)
    assert limits.station_cap_a == 20 and limits.per_evse_a == {1: 16, 2: 16}
    assert limits_at([default], T0, TWO).station_cap_a is None


def test_w_and_a_convert_with_the_nominal_voltage_and_the_phases_in_use() -> None:
    """K01.FR.50 (current per phase = W / (voltage × phases)), K01.FR.49 (numberPhases absent: 3), K01.FR.51 (A is
    per phase): a 1-phase EVSE uses one phase whatever the profile says."""
    w = profile(1, [(0, 6900), (60, 2300, 1)], unit=RateUnit.W)
    three = Site((1,), {1: 32.0})
    one = Site((1,), {1: 32.0}, phases={1: 1}, nominal_voltage=230.0)
    assert pairs(composite_schedule([w], 1, T0, 120, RateUnit.A, three).periods) == [(0, 10), (60, 10)]
    assert [q.phases for q in composite_schedule([w], 1, T0, 120, RateUnit.A, three).periods] == [3, 1]
    assert pairs(composite_schedule([w], 1, T0, 120, RateUnit.A, one).periods) == [(0, 30), (60, 10)]
    a = profile(2, [(0, 10)], unit=RateUnit.A)
    assert pairs(composite_schedule([a], 1, T0, 60, RateUnit.W, three).periods) == [(0, 6900)]
    assert pairs(composite_schedule([a], 1, T0, 60, RateUnit.W, one).periods) == [(0, 2300)]
    us = Site((1,), {1: 32.0}, phases=1, nominal_voltage=120.0)
    assert pairs(composite_schedule([a], 1, T0, 60, RateUnit.W, us).periods) == [(0, 1200)]
    cap_w = profile(3, [(0, 13800)], purpose=Purpose.STATION_MAX, evse=0, unit=RateUnit.W)
    assert limits_at([cap_w], T0, TWO).station_cap_a == 20  # 13800 / (230 × 3)


def test_the_station_composite_in_w_adds_the_evses_watts_and_caps_them_with_the_station_maximum() -> None:
    """K08.FR.03: EVSE 0 reports the total the station expects to draw: a 3-phase EVSE at 16 A (11040 W) and a
    1-phase one at 16 A (3680 W), under a ChargingStationMaxProfile of 12 kW from 600 s. No phases for EVSE 0."""
    mixed = Site((1, 2), {1: 16.0, 2: 16.0}, phases={1: 3, 2: 1})
    cap = profile(1, [(0, 12000)], purpose=Purpose.STATION_MAX, evse=0, unit=RateUnit.W,
                  start=T0 + timedelta(seconds=600))  # fmt: skip
    got = composite_schedule([cap], 0, T0, 1200, RateUnit.W, mixed)
    assert pairs(got.periods) == [(0, 14720), (600, 12000)]
    assert {q.phases for q in got.periods} == {None} and got.min_rate is None
    per_evse = composite_schedule([cap], 2, T0, 1200, RateUnit.W, mixed)
    assert pairs(per_evse.periods) == [(0, 3680)]  # 12 kW on one phase would be 52 A: the EVSE's 16 A is lower


def test_min_rate_is_reported_in_the_unit_asked() -> None:
    """K01.FR.21: minChargingRate of the leading profile, for sharing the cap; in the composite's unit."""
    p = profile(1, [(0, 16)], min_rate=6)
    assert composite_schedule([p], 1, T0, 60, RateUnit.W, ONE).min_rate == 4140
    assert limits_at([p], T0, ONE).min_rate_a == {1: 6}
    assert limits_at([], T0, ONE).min_rate_a == {1: None}


def test_an_unknown_evse_is_a_value_error_and_the_adapter_answers_rejected() -> None:
    """K08.FR.05, TC_K_47_CS: the composite of an EVSE that does not exist cannot be reported."""
    with pytest.raises(ValueError, match="unknown EVSE 3"):
        composite_schedule([], 3, T0, 300, RateUnit.A, TWO)
    with pytest.raises(ValueError):
        composite_schedule([], 1, T0, -1, RateUnit.A, TWO)


def test_no_profile_at_all_is_the_hardware_maximum_from_period_0() -> None:
    """TC_K_39_CS (K08.FR.02/03/06): nothing installed, EVSE 0, 300 s: one period from 0."""
    got = composite_schedule([], 0, T0, 300, RateUnit.A, TWO)
    assert got.duration == 300 and pairs(got.periods) == [(0, 64)]
    assert next_boundary([], T0, TWO) is None


def test_malformed_profiles_are_ignored_never_a_crash() -> None:
    good = profile(1, [(0, 10)])
    bad = [
        profile(2, [], stack=5),  # no periods
        profile(3, [(10, 1)], stack=5),  # the first period is not at 0 (K01.FR.31)
        profile(4, [(0, 1), (0, 2)], stack=5),  # not increasing (K01.FR.35)
        profile(5, [(0, -1)], stack=5),  # negative
        profile(6, [(0, math.nan)], stack=5),
        profile(7, [(0, 1)], stack=5, start=None),  # Absolute without startSchedule (K01.FR.40)
        profile(8, [(0, 1)], stack=5, kind=Kind.RECURRING),  # Recurring without a recurrency
        profile(9, [(0, 1)], stack=5, start=datetime(2024, 3, 4, 12)),  # naive
        profile(10, [(0, 1)], purpose=Purpose.STATION_MAX, evse=0, kind=Kind.RELATIVE),  # K01.FR.38
        profile(11, [(0, 1)], purpose=Purpose.STATION_MAX, evse=1),  # a station maximum not on EVSE 0
        profile(12, [(0, 1, 7)], stack=5),  # 7 phases
    ]
    assert pairs(composite_schedule([good, *bad], 1, T0, 60, RateUnit.A, ONE).periods) == [(0, 10)]
    assert limits_at([good, *bad], T0, ONE).per_evse_a == {1: 10}
    assert next_boundary([good, *bad], T0, ONE) is None


# --- recurring, relative, validity -------------------------------------------------------------------------------


def test_a_weekly_profile_repeats_every_week_and_a_short_duration_falls_back() -> None:
    """2.0.1 §3.3 Recurring (restarts at the first period), K01.FR.13 (a duration shorter than the recurrence: default
    behaviour after it), K01.FR.30 (nothing before startSchedule)."""
    monday = datetime(2024, 3, 4, tzinfo=UTC)
    weekly = profile(1, [(0, 6), (3600, 12)], kind=Kind.RECURRING, recurrency=Recurrency.WEEKLY, start=monday,
                     duration=7200)  # fmt: skip
    for week in range(3):
        got = composite_schedule([weekly], 1, monday + timedelta(weeks=week), 86400, RateUnit.A, ONE)
        assert pairs(got.periods) == [(0, 6), (3600, 12), (7200, 32)]
    tuesday = composite_schedule([weekly], 1, monday + timedelta(days=8), 86400, RateUnit.A, ONE)
    assert pairs(tuesday.periods) == [(0, 32)]
    before = composite_schedule([weekly], 1, monday - timedelta(weeks=1), 86400, RateUnit.A, ONE)
    assert pairs(before.periods) == [(0, 32)]
    # Across a week boundary: Sunday 23:00 to Monday 03:00.
    got = composite_schedule([weekly], 1, monday + timedelta(days=13, hours=23), 4 * 3600, RateUnit.A, ONE)
    assert pairs(got.periods) == [(0, 32), (3600, 6), (7200, 12), (10800, 32)]


def test_a_daily_profile_without_duration_runs_until_it_restarts() -> None:
    daily = profile(1, [(0, 10), (43200, 20)], kind=Kind.RECURRING, recurrency=Recurrency.DAILY,
                    start=datetime(2024, 1, 1, 6, tzinfo=UTC))  # fmt: skip
    got = composite_schedule([daily], 1, datetime(2024, 3, 4, tzinfo=UTC), 2 * 86400, RateUnit.A, ONE)
    assert pairs(got.periods) == [(0, 20), (6 * 3600, 10), (18 * 3600, 20), (30 * 3600, 10), (42 * 3600, 20)]


def test_relative_profiles_count_from_the_transaction_start_or_from_the_query() -> None:
    """2.0.1 §3.3 Relative, K01.FR.41/42: periods from the start of the transaction; 1.6 §7.10 Relative: from the
    start of the transaction. With no transaction, K08.FR.06: as if one were ongoing, from the query's start."""
    rel = profile(1, [(0, 16), (600, 10), (1200, 6)], kind=Kind.RELATIVE, duration=1800)
    site = Site((1,), {1: 32}, transactions={1: ActiveTransaction("T1", T0 - timedelta(seconds=700))})
    assert pairs(composite_schedule([rel], 1, T0, 3600, RateUnit.A, site).periods) == [(0, 10), (500, 6), (1100, 32)]
    assert pairs(composite_schedule([rel], 1, T0, 3600, RateUnit.A, ONE).periods) == [(0, 16), (600, 10), (1200, 6),
                                                                                      (1800, 32)]  # fmt: skip
    assert limits_at([rel], T0, site).per_evse_a == {1: 10}
    assert limits_at([rel], T0, ONE).per_evse_a == {1: 16}  # no transaction: its first period
    assert next_boundary([rel], T0, site) == T0 + timedelta(seconds=500)
    assert next_boundary([rel], T0, ONE) is None  # nothing changes until a transaction starts


def test_validity_windows_are_from_inclusive_to_exclusive() -> None:
    """K01.FR.36 (valid when now >= validFrom), K01.FR.37 (valid when now < validTo), K01.FR.10 (no window: always)."""
    p = profile(1, [(0, 8)], stack=1, valid_from=T0 + timedelta(seconds=60), valid_to=T0 + timedelta(seconds=120))
    base = profile(2, [(0, 16)])
    got = composite_schedule([p, base], 1, T0, 180, RateUnit.A, ONE)
    assert pairs(got.periods) == [(0, 16), (60, 8), (120, 16)]
    assert limits_at([p, base], T0 + timedelta(seconds=60), ONE).per_evse_a == {1: 8}
    assert limits_at([p, base], T0 + timedelta(seconds=120), ONE).per_evse_a == {1: 16}
    assert limits_at([p, base], T0 + timedelta(seconds=119, microseconds=999999), ONE).per_evse_a == {1: 8}


def test_next_boundary_walks_period_starts_ends_validity_and_recurrences() -> None:
    p = profile(1, [(0, 8), (100, 9)], duration=300, valid_to=T0 + timedelta(seconds=250))
    daily = profile(2, [(0, 5)], kind=Kind.RECURRING, recurrency=Recurrency.DAILY, start=T0 + timedelta(hours=1),
                    duration=60, stack=1)  # fmt: skip
    walk = []
    t = T0 - timedelta(seconds=10)
    for _ in range(7):
        nb = next_boundary([p, daily], t, ONE)
        assert nb is not None and nb > t
        walk.append(int((nb - T0).total_seconds()))
        t = nb
    assert walk == [0, 100, 250, 300, 3600, 3660, 86400 + 3600]


def test_a_sub_second_boundary_takes_effect_at_the_next_whole_second_of_the_composite() -> None:
    p = profile(1, [(0, 8)], stack=1, valid_from=T0 + timedelta(seconds=10, milliseconds=300))
    got = composite_schedule([p, profile(2, [(0, 16)])], 1, T0, 60, RateUnit.A, ONE)
    assert pairs(got.periods) == [(0, 16), (11, 8)]


# --- sharing the station cap -------------------------------------------------------------------------------------


def test_allocate_gives_everyone_what_they_want_under_the_cap_or_without_one() -> None:
    assert allocate({1: 16, 2: 10}, None, {}) == {1: 16, 2: 10}
    assert allocate({1: 16, 2: 10}, 40, {}) == {1: 16, 2: 10}
    assert allocate({}, 40, {}) == {}


def test_allocate_shares_fairly_and_never_more_than_wanted() -> None:
    """1.6 §3.13.3: the sum never exceeds the station maximum."""
    assert allocate({1: 16, 2: 16}, 20, {}) == {1: 10, 2: 10}
    got = allocate({1: 4, 2: 16, 3: 16}, 20, {})
    assert got[1] == 4 and got[2] == pytest.approx(8) and got[3] == pytest.approx(8)
    assert sum(got.values()) <= 20


def test_allocate_pauses_who_the_cap_cannot_give_its_minimum_lowest_evse_id_first() -> None:
    """K01.FR.21 / 1.6 §3.13.4 Load Balancing: below minChargingRate charging is inefficient, so that EVSE is
    paused (0) and the rest shared among the others."""
    assert allocate({1: 16, 2: 16, 3: 16}, 14, {1: 6, 2: 6, 3: 6}) == {1: 7, 2: 7, 3: 0}
    assert allocate({3: 16, 1: 16, 2: 16}, 5, {1: 6, 2: 6, 3: 6}) == {1: 0, 2: 0, 3: 0}
    assert allocate({1: 16, 2: 16}, 12, {1: 10, 2: 1}) == {1: 10, 2: 2}  # EVSE 1 keeps its minimum
    assert allocate({1: 16, 2: 16}, 9, {1: 10, 2: 1}) == {1: 0, 2: 9}  # EVSE 1 cannot have it: paused
    assert allocate({1: 3, 2: 16}, 10, {1: 6, 2: 6}) == {1: 3, 2: 7}  # a minimum above the want is the want
    assert allocate({1: 16, 2: 16}, 0, {}) == {1: 0, 2: 0}
    assert allocate({1: 16, 2: 0}, 10, {}) == {1: 10, 2: 0}
    assert allocate({1: math.inf, 2: 16}, 20, {1: None, 2: 6}) == {1: 10, 2: 10}
    assert allocate({1: math.nan, 2: -3}, 20, {}) == {1: 0, 2: 0}


def test_allocate_takes_the_limits_of_an_instant_as_they_are() -> None:
    """What the runtime does: the limits of the EVSEs with a transaction, shared under the station cap."""
    cap = profile(1, [(0, 20)], purpose=Purpose.STATION_MAX, evse=0)
    default = profile(2, [(0, 16)], evse=0, min_rate=8)
    limits = limits_at([cap, default], T0, TWO)
    assert limits.per_evse_a == {1: 16, 2: 16} and limits.station_cap_a == 20
    assert allocate(limits.per_evse_a, limits.station_cap_a, limits.min_rate_a) == {1: 10, 2: 10}
    assert allocate({1: 16, 2: 16}, 15, limits.min_rate_a) == {1: 15, 2: 0}


@settings(max_examples=150, deadline=None)
@given(
    wanted=st.dictionaries(st.integers(1, 6), st.floats(0, 63, allow_nan=False), max_size=6),
    cap=st.none() | st.floats(0, 200, allow_nan=False),
    minimum=st.dictionaries(st.integers(1, 6), st.floats(0, 20, allow_nan=False), max_size=6),
)
def test_allocate_properties(wanted: dict[int, float], cap: float | None, minimum: dict[int, float]) -> None:
    got = allocate(wanted, cap, minimum)
    assert set(got) == set(wanted)
    for e, a in got.items():
        assert 0 <= a <= wanted[e]
        if a > 0:
            assert a >= min(wanted[e], minimum.get(e, 0)) - 1e-9
    if cap is not None:
        assert sum(got.values()) <= cap
        if sum(wanted.values()) <= cap:
            assert got == wanted
    assert allocate(dict(reversed(list(wanted.items()))), cap, minimum) == got  # deterministic


# --- properties against a naive reference ------------------------------------------------------------------------

W0 = datetime(2024, 3, 4, tzinfo=UTC)


@st.composite
def profiles(draw: st.DrawFn) -> ChargingProfile:
    purpose = draw(st.sampled_from([Purpose.TX_DEFAULT, Purpose.TX_DEFAULT, Purpose.STATION_MAX, Purpose.TX]))
    kind = draw(st.sampled_from([Kind.ABSOLUTE, Kind.RECURRING, Kind.RELATIVE]))
    if purpose is Purpose.STATION_MAX and kind is Kind.RELATIVE:
        kind = Kind.ABSOLUTE
    gaps = draw(st.lists(st.integers(1, 120), max_size=4))
    starts = [0]
    for g in gaps:
        starts.append(starts[-1] + g)
    unit = draw(st.sampled_from(list(RateUnit)))
    limits = draw(st.lists(st.integers(0, 40), min_size=len(starts), max_size=len(starts)))
    periods = [(s, float(x * (690 if unit is RateUnit.W else 1)), draw(st.sampled_from([None, 1, 3])))
               for s, x in zip(starts, limits, strict=True)]  # fmt: skip
    choices = [0] if purpose is Purpose.STATION_MAX else [1, 2] if purpose is Purpose.TX else [0, 1, 2]
    evse = draw(st.sampled_from(choices))
    offset = lambda: W0 + timedelta(seconds=draw(st.integers(-200, 400)))  # noqa: E731
    return profile(
        draw(st.integers(1, 10**6)),
        periods,
        purpose=purpose,
        kind=kind,
        evse=evse,
        stack=draw(st.integers(0, 3)),
        unit=unit,
        start=offset(),
        duration=draw(st.none() | st.integers(0, 600)),
        recurrency=Recurrency.DAILY if kind is Kind.RECURRING else None,
        valid_from=draw(st.none() | st.builds(offset)),
        valid_to=draw(st.none() | st.builds(offset)),
        tx=draw(st.sampled_from(["T1", "T2", None])) if purpose is Purpose.TX else None,
    )


SITE = Site((1, 2), {1: 32.0, 2: 16.0}, phases={1: 3, 2: 1},
            transactions={1: ActiveTransaction("T1", W0 - timedelta(seconds=50))})  # fmt: skip


def naive_period(p: ChargingProfile, at: datetime, tx_start: datetime) -> Period | None:
    """The period of `p` in force at `at`, by the spec's words and a linear scan."""
    if not p.valid_at(at):
        return None
    origin = tx_start if p.kind is Kind.RELATIVE else p.schedule.start
    assert origin is not None
    offset = (at - origin).total_seconds()
    if offset < 0:
        return None
    if p.kind is Kind.RECURRING:
        offset %= 86400
    if p.schedule.duration is not None and offset >= p.schedule.duration:
        return None
    return [q for q in p.schedule.periods if q.start <= offset][-1]


def naive_amps(book: list[ChargingProfile], evse: int, at: datetime, query_start: datetime) -> float:
    phases_own = SITE.phases_of(evse)
    running = SITE.transactions.get(evse)
    tx_start = running.started if running else query_start
    best: tuple[tuple[int, bool], Period, ChargingProfile] | None = None
    for purpose in (Purpose.TX, Purpose.TX_DEFAULT):
        for p in book:
            if p.purpose is not purpose or p.evse_id not in ((evse,) if purpose is Purpose.TX else (0, evse)):
                continue
            if purpose is Purpose.TX and (running is None or p.transaction_ref != running.ref):
                continue
            q = naive_period(p, at, tx_start)
            rank = (p.stack_level, p.evse_id != 0)
            if q is not None and (best is None or rank > best[0]):
                best = (rank, q, p)
        if best is not None:
            break
    amps, phases = SITE.max_current_a[evse], phases_own
    if best is not None:
        _, q, p = best
        phases = min(q.phases or 3, phases_own)
        amps = min(amps, q.limit if p.schedule.unit is RateUnit.A else q.limit / (230 * phases))
    station = [(p.stack_level, naive_period(p, at, tx_start), p) for p in book if p.purpose is Purpose.STATION_MAX]
    leading = sorted(((s, q, p) for s, q, p in station if q is not None), key=lambda x: -x[0])
    if leading:
        _, q, p = leading[0]
        assert q is not None
        amps = min(amps, q.limit if p.schedule.unit is RateUnit.A else q.limit / (230 * phases))
    return amps


def limit_at_offset(periods: tuple[CompositePeriod, ...], second: int) -> float:
    return [p.limit for p in periods if p.start <= second][-1]


def profile_edges(p: ChargingProfile, query_start: datetime, horizon: int) -> set[int]:
    """Every whole second of the query window at which `p` might change anything."""
    running = SITE.transactions.get(1)
    anchors = [query_start, running.started] if p.kind is Kind.RELATIVE and running else [query_start]
    if p.kind is not Kind.RELATIVE:
        assert p.schedule.start is not None
        anchors = [p.schedule.start + timedelta(days=k) for k in range(-2, 3)] if p.kind is Kind.RECURRING else [
            p.schedule.start]  # fmt: skip
    out = set()
    for origin in anchors:
        for x in [q.start for q in p.schedule.periods] + [p.schedule.duration or 0]:
            out.add(int((origin + timedelta(seconds=x) - query_start).total_seconds()))
    for edge in (p.valid_from, p.valid_to):
        if edge is not None:
            out.add(int((edge - query_start).total_seconds()))
    return {x for x in out if 0 < x < horizon}


@settings(max_examples=40, deadline=None)
@given(book=st.lists(profiles(), max_size=5), evse=st.sampled_from([1, 2]), shift=st.integers(0, 300))
def test_the_composite_is_the_naive_minimum_at_every_second_and_changes_only_at_profile_edges(
    book: list[ChargingProfile], evse: int, shift: int
) -> None:
    """K08.FR.04 / 1.6 §3.13.3 / SC.01: at every instant the composite is <= every leading schedule's limit (here:
    equal to the minimum, computed naively); it is piecewise constant and steps only where some profile has an edge."""
    start = W0 + timedelta(seconds=shift)
    horizon = 900
    got = composite_schedule(book, evse, start, horizon, RateUnit.A, SITE)
    assert got.periods[0].start == 0
    assert all(a.start < b.start for a, b in zip(got.periods, got.periods[1:], strict=False))
    for second in range(0, horizon, 3):
        expected = naive_amps(book, evse, start + timedelta(seconds=second), start)
        assert limit_at_offset(got.periods, second) == pytest.approx(expected, abs=1e-3), second
        assert limit_at_offset(got.periods, second) <= expected + 1e-9
    edges = set().union(*(profile_edges(p, start, horizon) for p in book)) if book else set()
    assert {p.start for p in got.periods[1:]} <= edges
    # limits_at agrees with the composite (running transaction on EVSE 1; none on EVSE 2 counts from `at`)
    if evse == 1:
        assert limits_at(book, start, SITE).per_evse_a[1] == got.periods[0].limit


@settings(max_examples=40, deadline=None)
@given(p=profiles(), recurrency=st.sampled_from(list(Recurrency)), at=st.integers(0, 3 * 86400), k=st.integers(1, 3))
def test_recurring_profiles_repeat_exactly(p: ChargingProfile, recurrency: Recurrency, at: int, k: int) -> None:
    """2.0.1 §3.3 Recurring / 1.6 §7.11: the limit at t equals the limit at t + k periods (once started)."""
    assert p.schedule.start is not None or p.kind is Kind.RELATIVE
    rec = ChargingProfile(p.id, 1, 0, Purpose.TX_DEFAULT, Kind.RECURRING,
                          Schedule(p.schedule.unit, p.schedule.periods, p.schedule.duration, W0),
                          recurrency)  # fmt: skip
    t = W0 + timedelta(seconds=at)
    later = t + timedelta(seconds=k * recurrency.seconds)
    assert limits_at([rec], t, ONE).per_evse_a == limits_at([rec], later, ONE).per_evse_a
    nb = next_boundary([rec], t, ONE)
    nb_later = next_boundary([rec], later, ONE)
    assert nb is not None and nb_later is not None
    assert nb_later - nb == timedelta(seconds=k * recurrency.seconds)
