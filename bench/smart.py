"""The composite schedule's cost (issue 19 part 6): a worst-case book and a day of evaluations, pure CPU.

The book: 10 stacked profiles for one EVSE, each with 1024 periods (the 2.0.1 schema's maxItems of
chargingSchedulePeriod, the most ChargingScheduleMaxPeriods / PeriodsPerSchedule can allow): a
ChargingStationMaxProfile in W, a TxProfile of the running transaction (Relative, ending 5.5 h into the day) and 8
TxDefaultProfiles (stack levels 0..7, half of them in W, one of them Recurring Daily). The higher stack levels end
earlier in the day, so the leading schedule falls back level by level (K02.FR.08) and an evaluation has to look past
the expired ones.

Figures:

- composite_schedule_us: microseconds per evaluation of the limits in force (`limits_at`, what the runtime calls at
  each boundary), for each second of a day (every tenth second with --quick);
- composite_day_ms: milliseconds for one GetCompositeSchedule of 24 h (`composite_schedule`, K08) of that book;
- composite_periods: the periods of that composite (after merging equal neighbours);
- composite_consistent: the composite's limit equals `limits_at` at every evaluated second (a sanity check, not a
  speed figure).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from station.smart.composite import ActiveTransaction, Site, composite_schedule, limits_at
from station.smart.profiles import ChargingProfile, Kind, Period, Purpose, RateUnit, Recurrency, Schedule

PERIODS = 1024  # 2.0.1 ChargingScheduleType.chargingSchedulePeriod maxItems
PROFILES = 10
DAY = datetime(2024, 6, 3, tzinfo=UTC)
SITE = Site(
    evse_ids=(1,),
    max_current_a={1: 32.0},
    transactions={1: ActiveTransaction("BENCH-TX", DAY - timedelta(minutes=30))},
)

TARGETS = {
    "composite_schedule_us": "<= 100",
    "composite_day_ms": "<= 250",
}


def _periods(k: int, unit: RateUnit, spacing: int) -> tuple[Period, ...]:
    scale = 690.0 if unit is RateUnit.W else 1.0  # W = A × 230 V × 3
    return tuple(Period(i * spacing, scale * (6 + (i * 7 + k * 3) % 26), None) for i in range(PERIODS))


def book() -> list[ChargingProfile]:
    """The worst-case book described above."""
    out: list[ChargingProfile] = []
    for k in range(PROFILES - 2):
        unit = RateUnit.W if k % 2 else RateUnit.A
        recurring = k == 0
        spacing = 84 - k  # 1024 periods spread over (most of) a day
        schedule = Schedule(
            unit,
            _periods(k, unit, spacing),
            duration=86400 - k * 3600,  # the higher the level, the earlier it ends
            start=DAY - timedelta(days=7) if recurring else DAY + timedelta(seconds=k * 97),
        )
        out.append(
            ChargingProfile(
                id=100 + k,
                evse_id=0 if k % 3 == 0 else 1,
                stack_level=k,
                purpose=Purpose.TX_DEFAULT,
                kind=Kind.RECURRING if recurring else Kind.ABSOLUTE,
                schedule=schedule,
                recurrency=Recurrency.DAILY if recurring else None,
            )
        )
    out.append(
        ChargingProfile(
            id=200,
            evse_id=1,
            stack_level=0,
            purpose=Purpose.TX,
            kind=Kind.RELATIVE,
            schedule=Schedule(RateUnit.A, _periods(8, RateUnit.A, 20), duration=6 * 3600),
            transaction_ref="BENCH-TX",
        )
    )
    out.append(
        ChargingProfile(
            id=300,
            evse_id=0,
            stack_level=0,
            purpose=Purpose.STATION_MAX,
            kind=Kind.ABSOLUTE,
            schedule=Schedule(RateUnit.W, _periods(9, RateUnit.W, 84), start=DAY),
        )
    )
    return out


def measure_smart(quick: bool) -> dict[str, Any]:
    profiles = book()
    step = 10 if quick else 1
    composite_schedule(profiles, 1, DAY, 60, RateUnit.A, SITE)  # compile (memoised per profile) outside the timing
    instants = [DAY + timedelta(seconds=s) for s in range(0, 86400, step)]
    t0 = time.perf_counter()
    values = [limits_at(profiles, at, SITE).per_evse_a[1] for at in instants]
    per_evaluation = (time.perf_counter() - t0) / len(instants)
    runs: list[float] = []
    for _ in range(1 if quick else 5):
        t1 = time.perf_counter()
        day = composite_schedule(profiles, 1, DAY, 86400, RateUnit.A, SITE)
        runs.append(time.perf_counter() - t1)
    starts = [p.start for p in day.periods]
    consistent = True
    j = 0
    for s, value in zip(range(0, 86400, step), values, strict=True):
        while j + 1 < len(starts) and starts[j + 1] <= s:
            j += 1
        consistent = consistent and day.periods[j].limit == value
    return {
        "composite_schedule_us": round(per_evaluation * 1e6, 2),
        "composite_day_ms": round(sorted(runs)[len(runs) // 2] * 1e3, 1),
        "composite_periods": len(day.periods),
        "composite_evaluations": len(instants),
        "composite_consistent": consistent,
    }
