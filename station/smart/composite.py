"""The composite schedule: what the installed charging profiles allow, per EVSE and for the station, at one instant
or over a window (1.6 §3.13.2–3.13.3 and §5.7; 2.0.1 part 2 §3.4–3.5, K01, K02.FR.08, K08).

Pure: no I/O and no clock reads. Every time is passed in as an aware UTC datetime; durations and offsets are whole
seconds. Internally times are whole microseconds since the epoch (integer arithmetic, so a boundary is never missed
by a rounding error), and each profile's periods are compiled once into sorted lists that are bisected.

The rules, per EVSE and instant:

- within a purpose, the leading schedule is the one of the highest stack level whose profile is valid (validFrom <=
  t < validTo, K01.FR.36/37) and whose schedule has a period at t (2.0.1 §3.5): before its startSchedule
  (K01.FR.30) or after its duration (K01.FR.11/13, K02.FR.08) a profile has none, and the next stack level down
  leads;
- TxDefaultProfile: one for the EVSE and one for EVSE 0 (every EVSE) are both candidates; at the same stack level the
  EVSE's own wins (1.6 §3.13.1: the connector's profile replaces the connector-0 one for that connector; 2.0.1
  K01.FR.52/53 forbid the tie altogether);
- a TxProfile of the EVSE's running transaction (`transaction_ref` == the transaction's ref) that leads overrules
  the TxDefaultProfile (1.6 §3.13.1, 2.0.1 §3.5, K02.FR.04); when it has no period at t, the TxDefaultProfile
  leads again (K02.FR.08);
- the result is the lowest of that limit, the leading ChargingStationMaxProfile (an EVSE can never use more than
  the whole station) and the EVSE's hardware maximum (the local limit when no profile applies, K02.FR.08);
  1.6 §3.13.3, K08.FR.04, SC.01.

Relative profiles count from the start of the EVSE's transaction; with no transaction running, from the start of the
query, as if one started then (K08.FR.06). Recurring profiles restart every day or week from startSchedule and do
nothing before it. W and A: per phase current = W / (nominal voltage × phases) (K01.FR.50), where phases is the
period's numberPhases (3 when absent, K01.FR.49) but never more than the EVSE has. EVSE 0 is the station: the sum
of its EVSEs, capped by the ChargingStationMaxProfile (1.6 §3.13.3 last paragraph, K08.FR.03).

Malformed profiles (no periods, a first period after 0, periods out of order, negative or non-finite limits, an
Absolute or Recurring schedule without startSchedule, naive datetimes, a Relative ChargingStationMaxProfile,
K01.FR.38) are ignored: the book should never hold one, and a limit must never crash the runtime.
"""

from __future__ import annotations

import math
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from station.smart.profiles import ChargingProfile, Kind, Purpose, RateUnit

__all__ = [
    "ActiveTransaction",
    "CompositePeriod",
    "CompositeSchedule",
    "Limits",
    "Site",
    "allocate",
    "composite_schedule",
    "limits_at",
    "next_boundary",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000
_ONE_US = timedelta(microseconds=1)


def _us(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r}: times are aware UTC datetimes")
    return (at - _EPOCH) // _ONE_US


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class ActiveTransaction:
    """A transaction running on an EVSE: Relative profiles count from `started`; a TxProfile applies when its
    `transaction_ref` is `ref`."""

    ref: str
    started: datetime


@dataclass(frozen=True)
class Site:
    """What the composite needs of the station: its EVSEs, each one's hardware maximum (amperes per phase) and
    phases, the nominal voltage for W <-> A, and the transactions running now."""

    evse_ids: tuple[int, ...]
    max_current_a: Mapping[int, float]
    phases: Mapping[int, int] | int = 3
    nominal_voltage: float = 230.0
    transactions: Mapping[int, ActiveTransaction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if 0 in self.evse_ids or len(set(self.evse_ids)) != len(self.evse_ids):
            raise ValueError(f"EVSE ids are distinct and > 0, not {self.evse_ids!r}")
        missing = [e for e in self.evse_ids if e not in self.max_current_a]
        if missing:
            raise ValueError(f"no hardware maximum for EVSE(s) {missing}")
        if not self.nominal_voltage > 0:
            raise ValueError(f"nominal voltage must be > 0, not {self.nominal_voltage!r}")
        for e in self.evse_ids:
            if self.phases_of(e) not in (1, 2, 3):
                raise ValueError(f"EVSE {e} has 1, 2 or 3 phases, not {self.phases_of(e)!r}")

    def phases_of(self, evse_id: int) -> int:
        return self.phases if isinstance(self.phases, int) else self.phases.get(evse_id, 3)

    @property
    def station_phases(self) -> int:
        return max((self.phases_of(e) for e in self.evse_ids), default=3)


@dataclass(frozen=True)
class CompositePeriod:
    start: int  # seconds from CompositeSchedule.start
    limit: float  # in CompositeSchedule.unit
    phases: int | None = None  # the phases the EVSE uses in this period; None for EVSE 0 (the station)


@dataclass(frozen=True)
class CompositeSchedule:
    evse_id: int
    start: datetime
    duration: int
    unit: RateUnit
    periods: tuple[CompositePeriod, ...]
    min_rate: float | None = None  # of the leading Tx/TxDefault profile at `start`, in `unit`


@dataclass(frozen=True)
class Limits:
    """What is in force at one instant: each EVSE's limit (amperes per phase, already capped by the station maximum
    and the hardware), the station's cap to share between them (None: no ChargingStationMaxProfile leads) and each
    EVSE's minimum efficient rate (minChargingRate of its leading profile, in amperes)."""

    per_evse_a: dict[int, float]
    station_cap_a: float | None
    min_rate_a: dict[int, float | None]


# --- profiles compiled for bisecting ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    purpose: Purpose
    kind: Kind
    evse_id: int
    stack_level: int
    transaction_ref: str | None
    unit: RateUnit
    starts: list[int]  # µs from the schedule's start
    limits: list[float]
    phases: list[int | None]
    duration: int | None  # µs
    anchor: int | None  # startSchedule in µs (Absolute, Recurring)
    cycle: int | None  # µs (Recurring)
    valid_from: int | None
    valid_to: int | None
    min_rate: float | None


_CACHE: dict[int, tuple[weakref.ref[ChargingProfile], _Compiled | None]] = {}


def _compile(profile: ChargingProfile) -> _Compiled | None:
    """The profile in bisectable form, None when it is malformed. Memoised per profile object (profiles are frozen)."""
    key = id(profile)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is profile:
        return hit[1]
    compiled = _build(profile)

    def forget(ref: weakref.ref[ChargingProfile], key: int = key) -> None:
        entry = _CACHE.get(key)
        if entry is not None and entry[0] is ref:
            del _CACHE[key]

    try:
        _CACHE[key] = (weakref.ref(profile, forget), compiled)
    except TypeError:  # not weak-referenceable (a subclass with __slots__): just do not memoise
        pass
    return compiled


def _build(p: ChargingProfile) -> _Compiled | None:
    try:
        s = p.schedule
        periods = s.periods
        if not periods or periods[0].start != 0:  # K01.FR.31
            return None
        starts = [int(q.start) * _US for q in periods]
        if any(b <= a for a, b in pairwise(starts)):  # K01.FR.35
            return None
        limits = [float(q.limit) for q in periods]
        if any(not math.isfinite(x) or x < 0 for x in limits):
            return None
        if any(q.phases is not None and q.phases not in (1, 2, 3) for q in periods):
            return None
        duration = None if s.duration is None else int(s.duration) * _US
        if duration is not None and duration < 0:
            return None
        anchor = cycle = None
        if p.kind is Kind.RELATIVE:
            if p.purpose is Purpose.STATION_MAX:  # K01.FR.38
                return None
        else:
            if s.start is None:  # K01.FR.40
                return None
            anchor = _us(s.start)
            if p.kind is Kind.RECURRING:
                if p.recurrency is None:
                    return None
                cycle = p.recurrency.seconds * _US
        min_rate = None
        if s.min_rate is not None and math.isfinite(s.min_rate) and s.min_rate >= 0:
            min_rate = float(s.min_rate)
        return _Compiled(
            purpose=p.purpose,
            kind=p.kind,
            evse_id=p.evse_id,
            stack_level=p.stack_level,
            transaction_ref=p.transaction_ref,
            unit=s.unit,
            starts=starts,
            limits=limits,
            phases=[q.phases for q in periods],
            duration=duration,
            anchor=anchor,
            cycle=cycle,
            valid_from=None if p.valid_from is None else _us(p.valid_from),
            valid_to=None if p.valid_to is None else _us(p.valid_to),
            min_rate=min_rate,
        )
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _period_at(c: _Compiled, t: int, relative_anchor: int | None) -> int:
    """Index of `c`'s period in force at `t` (µs), -1 for none."""
    if (c.valid_from is not None and t < c.valid_from) or (c.valid_to is not None and t >= c.valid_to):
        return -1
    anchor = relative_anchor if c.anchor is None else c.anchor
    if anchor is None:
        return -1
    offset = t - anchor
    if offset < 0:
        return -1
    if c.cycle is not None:
        offset %= c.cycle
    if c.duration is not None and offset >= c.duration:
        return -1
    return bisect_right(c.starts, offset) - 1


def _boundaries(c: _Compiled, relative_anchor: int | None, lo: int, hi: int) -> Iterable[int]:
    """Every instant in (lo, hi) at which `c`'s limit may change (µs)."""
    for edge in (c.valid_from, c.valid_to):
        if edge is not None and lo < edge < hi:
            yield edge
    anchor = relative_anchor if c.anchor is None else c.anchor
    if anchor is None:
        return
    ends = [*c.starts] if c.duration is None else [*c.starts, c.duration]
    if c.cycle is None:
        i0, i1 = bisect_right(c.starts, lo - anchor), bisect_left(c.starts, hi - anchor)
        for s in c.starts[i0:i1]:
            yield anchor + s
        if c.duration is not None and lo < anchor + c.duration < hi:
            yield anchor + c.duration
        return
    in_cycle = sorted({s for s in ends if s < c.cycle})
    k = max(0, (lo - anchor) // c.cycle)
    while True:
        base = anchor + k * c.cycle
        if base >= hi:
            return
        for s in in_cycle[bisect_right(in_cycle, lo - base) :]:
            x = base + s
            if x >= hi:
                break
            yield x
        k += 1


def _next_after(c: _Compiled, relative_anchor: int | None, after: int) -> int | None:
    """The first instant > `after` at which `c`'s limit may change (µs)."""
    best: int | None = None
    for edge in (c.valid_from, c.valid_to):
        if edge is not None and edge > after and (best is None or edge < best):
            best = edge
    anchor = relative_anchor if c.anchor is None else c.anchor
    if anchor is None:
        return best
    offset = after - anchor
    base = anchor
    if c.cycle is not None and offset >= 0:
        k = offset // c.cycle
        base = anchor + k * c.cycle
        offset -= k * c.cycle
    candidates: list[int] = []
    i = bisect_right(c.starts, offset)
    if i < len(c.starts):
        candidates.append(c.starts[i])
    if c.duration is not None and c.duration > offset:
        candidates.append(c.duration)
    if c.cycle is not None:
        candidates = [x for x in candidates if x < c.cycle]
        candidates.append(c.cycle if offset >= 0 else 0)
    for x in candidates:
        if base + x > after and (best is None or base + x < best):
            best = base + x
    return best


# --- evaluation -------------------------------------------------------------------------------------------------


def _amps(limit: float, unit: RateUnit, phases: int, voltage: float) -> float:
    return limit if unit is RateUnit.A else limit / (voltage * phases)


def _tidy(x: float) -> float:
    """Float noise of unit conversions off (5999.999999 -> 6000.0), never upwards by more than a nanounit."""
    return math.floor(x * 1000 + 1e-6) / 1000


class _Evaluator:
    """The profiles sorted per purpose (highest stack level first) for one site."""

    def __init__(self, profiles: Iterable[ChargingProfile], site: Site, default_relative_start: int | None) -> None:
        self.site = site
        self.voltage = site.nominal_voltage
        self.default_start = default_relative_start
        station: list[_Compiled] = []
        tx_default: list[_Compiled] = []
        tx: list[_Compiled] = []
        for p in profiles:
            c = _compile(p)
            if c is None:
                continue
            if c.purpose is Purpose.STATION_MAX:
                if c.evse_id == 0:
                    station.append(c)
            elif c.purpose is Purpose.TX_DEFAULT:
                tx_default.append(c)
            elif c.purpose is Purpose.TX:
                tx.append(c)
        station.sort(key=lambda c: -c.stack_level)
        self.station = station
        self.per_evse: dict[int, tuple[list[_Compiled], list[_Compiled], int | None]] = {}
        for e in site.evse_ids:
            running = site.transactions.get(e)
            anchor = _us(running.started) if running is not None else default_relative_start
            mine = [c for c in tx if running is not None and c.evse_id == e and c.transaction_ref == running.ref]
            mine.sort(key=lambda c: -c.stack_level)
            defaults = [c for c in tx_default if c.evse_id in (0, e)]
            defaults.sort(key=lambda c: (-c.stack_level, c.evse_id == 0))  # the EVSE's own first at a tie
            self.per_evse[e] = (mine, defaults, anchor)

    def relevant(self, evse_id: int) -> Iterable[tuple[_Compiled, int | None]]:
        yield from ((c, None) for c in self.station)
        evses = self.site.evse_ids if evse_id == 0 else (evse_id,)
        for e in evses:
            mine, defaults, anchor = self.per_evse[e]
            yield from ((c, anchor) for c in mine)
            yield from ((c, anchor) for c in defaults)

    @staticmethod
    def _lead(candidates: Sequence[_Compiled], t: int, anchor: int | None) -> tuple[_Compiled, int] | None:
        for c in candidates:
            i = _period_at(c, t, anchor)
            if i >= 0:
                return c, i
        return None

    def station_at(self, t: int) -> tuple[_Compiled, int] | None:
        return self._lead(self.station, t, None)

    def evse_at(self, e: int, t: int, station: tuple[_Compiled, int] | None) -> tuple[float, int, float | None]:
        """(amperes per phase, phases used, minimum rate in amperes) of EVSE `e` at `t`."""
        mine, defaults, anchor = self.per_evse[e]
        own = self.site.phases_of(e)
        amps = float(self.site.max_current_a[e])
        phases = own
        min_rate = None
        lead = self._lead(mine, t, anchor) or self._lead(defaults, t, anchor)
        if lead is not None:
            c, i = lead
            phases = min(c.phases[i] or 3, own)
            amps = min(amps, _amps(c.limits[i], c.unit, phases, self.voltage))
            if c.min_rate is not None:
                min_rate = _amps(c.min_rate, c.unit, phases, self.voltage)
        if station is not None:
            s, j = station
            amps = min(amps, _amps(s.limits[j], s.unit, phases, self.voltage))
        return max(amps, 0.0), phases, min_rate

    def station_cap(self, station: tuple[_Compiled, int] | None, unit: RateUnit) -> float | None:
        if station is None:
            return None
        s, j = station
        limit = s.limits[j]
        if s.unit is unit:
            return limit
        phases = min(s.phases[j] or 3, self.site.station_phases)
        if unit is RateUnit.A:
            return limit / (self.voltage * phases)
        return limit * self.voltage * phases

    def value_at(self, evse_id: int, t: int, unit: RateUnit) -> tuple[float, int | None, float | None]:
        """(limit in `unit`, phases, minimum rate in `unit`) of `evse_id` (0: the station) at `t`."""
        station = self.station_at(t)
        if evse_id != 0:
            amps, phases, min_a = self.evse_at(evse_id, t, station)
            if unit is RateUnit.A:
                return amps, phases, min_a
            factor = self.voltage * phases
            return amps * factor, phases, None if min_a is None else min_a * factor
        total = 0.0
        for e in self.site.evse_ids:
            amps, phases, _ = self.evse_at(e, t, station)
            total += amps if unit is RateUnit.A else amps * self.voltage * phases
        cap = self.station_cap(station, unit)
        return (total if cap is None else min(total, cap)), None, None


def _check_evse(evse_id: int, site: Site) -> None:
    if evse_id != 0 and evse_id not in site.evse_ids:
        raise ValueError(f"unknown EVSE {evse_id}")  # K08.FR.05: the adapter answers Rejected


def composite_schedule(
    profiles: Iterable[ChargingProfile], evse_id: int, start: datetime, duration: int, unit: RateUnit, site: Site
) -> CompositeSchedule:
    """The composite schedule of `evse_id` (0: the station) from `start` for `duration` seconds in `unit` (K08.FR.02,
    1.6 §5.7). Periods start at whole seconds from `start`; a profile boundary between two whole seconds takes effect
    in the composite at the later one. Consecutive periods with the same limit and phases are merged.
    ValueError for an unknown EVSE (K08.FR.05) or a negative duration."""
    _check_evse(evse_id, site)
    if duration < 0 or int(duration) != duration:
        raise ValueError(f"duration is whole seconds >= 0, not {duration!r}")
    duration = int(duration)
    t0 = _us(start)
    t1 = t0 + duration * _US
    ev = _Evaluator(profiles, site, default_relative_start=t0)
    offsets = {0}
    for c, anchor in ev.relevant(evse_id):
        for b in _boundaries(c, anchor, t0, t1):
            offsets.add(-((t0 - b) // _US))  # ceil to whole seconds
    periods: list[CompositePeriod] = []
    min_rate: float | None = None
    for off in sorted(o for o in offsets if o < max(duration, 1)):
        limit, phases, rate = ev.value_at(evse_id, t0 + off * _US, unit)
        if off == 0:
            min_rate = None if rate is None else _tidy(rate)
        limit = _tidy(limit)
        if periods and periods[-1].limit == limit and periods[-1].phases == phases:
            continue
        periods.append(CompositePeriod(off, limit, phases))
    return CompositeSchedule(evse_id, start, duration, unit, tuple(periods), min_rate)


def limits_at(profiles: Iterable[ChargingProfile], at: datetime, site: Site) -> Limits:
    """What is in force at `at`: per EVSE (amperes per phase), the station's cap, the minimum rates. An EVSE with no
    transaction is evaluated as if one started at `at` (K08.FR.06)."""
    t = _us(at)
    ev = _Evaluator(profiles, site, default_relative_start=t)
    station = ev.station_at(t)
    per_evse: dict[int, float] = {}
    min_rate: dict[int, float | None] = {}
    for e in site.evse_ids:
        amps, _, rate = ev.evse_at(e, t, station)
        per_evse[e] = _tidy(amps)
        min_rate[e] = None if rate is None else _tidy(rate)
    cap = ev.station_cap(station, RateUnit.A)
    return Limits(per_evse, None if cap is None else _tidy(cap), min_rate)


def next_boundary(profiles: Iterable[ChargingProfile], after: datetime, site: Site) -> datetime | None:
    """The first instant after `after` at which any limit of `limits_at` may change (a period starts, a schedule
    ends, a profile becomes valid or stops being valid, a recurring schedule restarts); None when none will. Relative
    profiles of EVSEs without a transaction have no boundaries (they count from whenever one starts)."""
    t = _us(after)
    ev = _Evaluator(profiles, site, default_relative_start=None)
    best: int | None = None
    for c, anchor in ev.relevant(0):
        if c.anchor is None and anchor is None and c.valid_from is None and c.valid_to is None:
            continue
        b = _next_after(c, anchor, t)
        if b is not None and (best is None or b < best):
            best = b
    return None if best is None else _dt(best)


def _rate(x: float | None) -> float:
    return 0.0 if x is None or not math.isfinite(x) else max(0.0, float(x))


def allocate(
    wanted_a: Mapping[int, float], cap_a: float | None, minimum_a: Mapping[int, float | None]
) -> dict[int, float]:
    """Share the station's cap between the EVSEs with a running transaction (1.6 §3.13.3: the sum never exceeds the
    ChargePointMaxProfile; K01.FR.21 minChargingRate). Each EVSE gets at most what it wants. In order of EVSE id, an
    EVSE is admitted when the cap still covers its minimum (capped at what it wants) on top of the minimums of those
    admitted before it; the others get 0 (paused). The admitted share the cap fairly: each gets
    clamp(level, its minimum, what it wants) for the one level that uses the cap up (or all want). A minimum of None
    (no minChargingRate, as `Limits.min_rate_a` has it) is 0."""
    ids = sorted(wanted_a)
    want = {e: 0.0 if math.isnan(wanted_a[e]) else max(0.0, float(wanted_a[e])) for e in ids}
    if cap_a is None:
        return want
    cap = max(0.0, float(cap_a)) if not math.isnan(cap_a) else 0.0
    floor = {e: min(want[e], _rate(minimum_a.get(e))) for e in ids}
    out = dict.fromkeys(ids, 0.0)
    admitted: list[int] = []
    reserved = 0.0
    for e in ids:
        if want[e] > 0 and reserved + floor[e] <= cap:
            admitted.append(e)
            reserved += floor[e]
    if sum(want[e] for e in admitted) <= cap:
        for e in admitted:
            out[e] = want[e]
        return out

    def used(level: float) -> float:
        return sum(min(want[e], max(floor[e], level)) for e in admitted)

    # used() is piecewise linear between the floors and wants: find the piece where it reaches the cap, solve there.
    points = sorted({floor[e] for e in admitted} | {want[e] for e in admitted})
    level = points[-1]
    for lo, hi in pairwise(points):
        if used(hi) >= cap:
            slope = sum(1 for e in admitted if floor[e] <= lo and want[e] >= hi)
            level = lo + (cap - used(lo)) / slope if slope else lo
            break
    for e in admitted:
        out[e] = min(want[e], max(floor[e], level))
    # Float rounding: the sum never exceeds the cap. A cut is itself rounded, so the sum is measured again after each
    # (bounded: a few ulps per EVSE), and the last step goes one float below what the subtraction gave.
    for _ in range(4 * len(admitted)):
        excess = sum(out.values()) - cap
        if excess <= 0:
            break
        e = next((e for e in reversed(admitted) if out[e] > floor[e]), None) or next(
            e for e in reversed(admitted) if out[e] > 0
        )
        out[e] = max(0.0, math.nextafter(out[e] - min(excess, out[e]), -math.inf))
    return out
