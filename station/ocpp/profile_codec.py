"""Charging profiles and composite schedules between each version's messages and the station's own shape.

1.6 `csChargingProfiles` (§7.8) and 2.0.1 `ChargingProfileType` (part 2 §2.10) become `station.smart.ChargingProfile`;
composite schedules go back as 1.6 `ChargingSchedule` (§7.13) or 2.0.1 `CompositeScheduleType`, and installed profiles
as 2.0.1 `ChargingProfileType` for ReportChargingProfiles. The `ocpp` library hands handlers snake_case keys (and,
for 1.6 SetChargingProfile, decimals as `Decimal`) and turns snake_case answers back into camelCase. The payload has
passed its JSON schema (the adapter checks it first), so only what a schema cannot say is checked here; what is
wrong raises `ProfileFormatError`, which the adapter answers with Rejected. Nothing here recurses on peer data: the
shapes are fixed and the lists bounded by the schema (and `MAX_PERIODS`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from station.ocpp.adapter import iso
from station.smart.composite import CompositeSchedule
from station.smart.profiles import ChargingProfile, Kind, Period, Purpose, RateUnit, Recurrency, Schedule

MAX_PERIODS = 1024  # 2.0.1 schema: chargingSchedulePeriod maxItems; 1.6 has none, this bounds it before any check
UNITS_16 = {"A": RateUnit.A, "W": RateUnit.W}


class ProfileFormatError(ValueError):
    """A profile the station cannot read (the reason code for 2.0.1 statusInfo, and why)."""

    def __init__(self, reason_code: str, text: str) -> None:
        self.reason_code = reason_code
        super().__init__(text)


def _time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ProfileFormatError("InvalidValue", f"{what} is not a date-time") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProfileFormatError("InvalidValue", f"{what} is not a number") from None
    if not math.isfinite(number):
        raise ProfileFormatError("InvalidValue", f"{what} is not a finite number")
    return number


def _schedule(data: dict[str, Any]) -> Schedule:
    periods_in = data.get("charging_schedule_period") or []
    if not isinstance(periods_in, list) or len(periods_in) > MAX_PERIODS:
        raise ProfileFormatError("InvalidSchedule", f"a schedule has at most {MAX_PERIODS} periods")
    unit = UNITS_16.get(str(data.get("charging_rate_unit")))
    if unit is None:
        raise ProfileFormatError("InvalidSchedule", "chargingRateUnit must be A or W")
    periods = tuple(
        Period(
            start=int(p["start_period"]),
            limit=_number(p["limit"], "limit"),
            phases=None if p.get("number_phases") is None else int(p["number_phases"]),
            phase_to_use=None if p.get("phase_to_use") is None else int(p["phase_to_use"]),
        )
        for p in periods_in
    )
    min_rate = data.get("min_charging_rate")
    duration = data.get("duration")
    return Schedule(
        unit=unit,
        periods=periods,
        duration=None if duration is None else int(duration),
        start=_time(data.get("start_schedule"), "startSchedule"),
        min_rate=None if min_rate is None else _number(min_rate, "minChargingRate"),
        id=int(data.get("id", 0)),
    )


def _profile(data: dict[str, Any], evse_id: int, profile_id: int, schedule: dict[str, Any]) -> ChargingProfile:
    try:
        purpose = Purpose.parse(str(data["charging_profile_purpose"]))
    except ValueError:
        raise ProfileFormatError("InvalidProfile", "the station takes no profile of this purpose") from None
    recurrency = data.get("recurrency_kind")
    transaction_id = data.get("transaction_id")
    return ChargingProfile(
        id=profile_id,
        evse_id=evse_id,
        stack_level=int(data["stack_level"]),
        purpose=purpose,
        kind=Kind(str(data["charging_profile_kind"])),
        schedule=_schedule(schedule),
        recurrency=None if recurrency is None else Recurrency(str(recurrency)),
        valid_from=_time(data.get("valid_from"), "validFrom"),
        valid_to=_time(data.get("valid_to"), "validTo"),
        transaction_id=None if transaction_id is None else str(transaction_id),
    )


def from_v16(data: dict[str, Any], evse_id: int) -> ChargingProfile:
    """1.6 csChargingProfiles (SetChargingProfile, RemoteStartTransaction) for the EVSE of its connector."""
    try:
        return _profile(data, evse_id, int(data["charging_profile_id"]), dict(data["charging_schedule"]))
    except (KeyError, TypeError) as exc:
        raise ProfileFormatError("InvalidProfile", f"missing or malformed field {exc}") from None


def from_v201(data: dict[str, Any], evse_id: int) -> ChargingProfile:
    """2.0.1 ChargingProfileType (SetChargingProfile, RequestStartTransaction): one schedule only (K01.FR.34: more
    are for ISO 15118 sessions, which this station does not have)."""
    schedules = data.get("charging_schedule")
    if not isinstance(schedules, list) or len(schedules) != 1:
        raise ProfileFormatError("InvalidSchedule", "exactly one chargingSchedule without ISO 15118 (K01.FR.34)")
    try:
        return _profile(data, evse_id, int(data["id"]), dict(schedules[0]))
    except (KeyError, TypeError) as exc:
        raise ProfileFormatError("InvalidProfile", f"missing or malformed field {exc}") from None


def _limit16(value: float) -> float:
    """1.6 limits are multiples of 0.1 (its schema: multipleOf 0.1); 2.0.1 takes any decimal, as given."""
    return round(value, 1)


def to_v16_schedule(composite: CompositeSchedule) -> dict[str, Any]:
    """GetCompositeSchedule.conf's chargingSchedule (1.6 §7.13)."""
    schedule: dict[str, Any] = {
        "duration": composite.duration,
        "start_schedule": iso(composite.start),
        "charging_rate_unit": composite.unit.value,
        "charging_schedule_period": [_period(p.start, _limit16(p.limit), p.phases) for p in composite.periods],
    }
    if composite.min_rate is not None:
        schedule["min_charging_rate"] = _limit16(composite.min_rate)
    return schedule


def to_v201_schedule(composite: CompositeSchedule) -> dict[str, Any]:
    """GetCompositeScheduleResponse's schedule (2.0.1 CompositeScheduleType, K08.FR.04)."""
    return {
        "evse_id": composite.evse_id,
        "duration": composite.duration,
        "schedule_start": iso(composite.start),
        "charging_rate_unit": composite.unit.value,
        "charging_schedule_period": [_period(p.start, p.limit, p.phases) for p in composite.periods],
    }


def _period(start: int, limit: float, phases: int | None, phase_to_use: int | None = None) -> dict[str, Any]:
    period: dict[str, Any] = {"start_period": start, "limit": limit}
    if phases is not None:
        period["number_phases"] = phases
    if phase_to_use is not None:
        period["phase_to_use"] = phase_to_use
    return period


def to_v201_profile(profile: ChargingProfile) -> dict[str, Any]:
    """An installed profile as 2.0.1 ChargingProfileType (ReportChargingProfiles, K09): as the CSMS sent it
    (TC_K_01_CS / TC_K_13_CS: "the same profile is reported as sent")."""
    s = profile.schedule
    schedule: dict[str, Any] = {
        "id": s.id,
        "charging_rate_unit": s.unit.value,
        "charging_schedule_period": [_period(p.start, p.limit, p.phases, p.phase_to_use) for p in s.periods],
    }
    if s.start is not None:
        schedule["start_schedule"] = iso(s.start)
    if s.duration is not None:
        schedule["duration"] = s.duration
    if s.min_rate is not None:
        schedule["min_charging_rate"] = s.min_rate
    out: dict[str, Any] = {
        "id": profile.id,
        "stack_level": profile.stack_level,
        "charging_profile_purpose": profile.purpose.value,
        "charging_profile_kind": profile.kind.value,
        "charging_schedule": [schedule],
    }
    if profile.recurrency is not None:
        out["recurrency_kind"] = profile.recurrency.value
    if profile.valid_from is not None:
        out["valid_from"] = iso(profile.valid_from)
    if profile.valid_to is not None:
        out["valid_to"] = iso(profile.valid_to)
    if profile.purpose is Purpose.TX:
        out["transaction_id"] = profile.transaction_id or profile.transaction_ref
    return out
