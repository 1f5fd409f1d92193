"""Charging profiles as the station keeps them, the same for OCPP 1.6 and 2.0.1 (1.6 §7.8, 2.0.1 ChargingProfileType).

A profile is a schedule of limits (amperes per phase, or watts in total) with a purpose, a stack level and a
validity. The adapters turn each version's JSON into these objects and back (`station/ocpp/profile_codec.py`); the
rest of the station (the book of installed profiles, the composite schedule, the store, diagnostics) knows only this
shape. Times are aware UTC datetimes; offsets and durations are whole seconds.

`ChargingProfile.to_dict()` / `ChargingProfile.from_dict()` are the store's form of a profile: plain JSON types, times
as ISO 8601 in UTC, the field names of these classes (not either version's message names). `from_dict` checks every
field's type and bounds and raises ValueError naming the field; it reads a fixed shape (no recursion).

Names follow 2.0.1 (`ChargingStationMaxProfile`, EVSE); in 1.6 that purpose is `ChargePointMaxProfile` and an EVSE is
the EVSE of a connector (`Layout.locate`). EVSE 0 is the station itself.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

__all__ = [
    "ChargingProfile",
    "Kind",
    "Period",
    "Purpose",
    "RateUnit",
    "Recurrency",
    "Schedule",
]


class Purpose(enum.StrEnum):
    STATION_MAX = "ChargingStationMaxProfile"  # 1.6 ChargePointMaxProfile; EVSE 0 only; caps the EVSEs' sum
    TX_DEFAULT = "TxDefaultProfile"  # EVSE 0 (every EVSE) or one EVSE
    TX = "TxProfile"  # one running transaction; overrules TxDefaultProfile while it is valid

    @property
    def ocpp16(self) -> str:
        return "ChargePointMaxProfile" if self is Purpose.STATION_MAX else self.value

    @classmethod
    def parse(cls, text: str) -> Purpose:
        """Either version's name (ValueError for anything else, e.g. ChargingStationExternalConstraints)."""
        return cls.STATION_MAX if text == "ChargePointMaxProfile" else cls(text)


class Kind(enum.StrEnum):
    ABSOLUTE = "Absolute"  # periods from startSchedule
    RECURRING = "Recurring"  # periods from startSchedule, restarting every day or week
    RELATIVE = "Relative"  # periods from the start of the transaction (no startSchedule)


class Recurrency(enum.StrEnum):
    DAILY = "Daily"
    WEEKLY = "Weekly"

    @property
    def seconds(self) -> int:
        return 86400 if self is Recurrency.DAILY else 7 * 86400


class RateUnit(enum.StrEnum):
    A = "A"  # amperes per phase (1.6 §7.12, K01.FR.51)
    W = "W"  # watts in total: per phase current = W / (nominal voltage × numberPhases) (K01.FR.50)


@dataclass(frozen=True)
class Period:
    start: int  # seconds from the schedule's start; the first is 0 (K01.FR.31), increasing (K01.FR.35)
    limit: float  # in the schedule's unit, >= 0
    phases: int | None = None  # numberPhases; absent means 3 (1.6 §7.14, K01.FR.49)
    phase_to_use: int | None = None  # 2.0.1 only, with phases == 1


@dataclass(frozen=True)
class Schedule:
    unit: RateUnit
    periods: tuple[Period, ...]
    duration: int | None = None  # seconds; absent: the last period goes on (until the transaction ends)
    start: datetime | None = None  # startSchedule: required for Absolute and Recurring, absent for Relative
    min_rate: float | None = None  # minChargingRate, in `unit`: below it the car charges inefficiently
    id: int = 0  # 2.0.1 ChargingScheduleType.id (1.6 has none)


@dataclass(frozen=True)
class ChargingProfile:
    id: int
    evse_id: int  # 0: the station (STATION_MAX, or TX_DEFAULT for every EVSE)
    stack_level: int
    purpose: Purpose
    kind: Kind
    schedule: Schedule
    recurrency: Recurrency | None = None  # with Kind.RECURRING
    valid_from: datetime | None = None  # valid when now >= valid_from (K01.FR.36)
    valid_to: datetime | None = None  # valid when now < valid_to (K01.FR.37)
    transaction_id: str | None = None  # TX: the transaction's id as the CSMS knows it
    transaction_ref: str | None = None  # TX: the station's own reference of that transaction (Transaction.ref)
    source: str = "CSO"  # 2.0.1 ChargingLimitSourceEnumType: who set it (the CSMS: CSO)

    def valid_at(self, at: datetime) -> bool:
        return (self.valid_from is None or at >= self.valid_from) and (self.valid_to is None or at < self.valid_to)

    # ------------------------------------------------------------------ the store's form

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, times in ISO 8601 UTC; `from_dict(p.to_dict()) == p`."""
        s = self.schedule
        return {
            "id": self.id,
            "evse_id": self.evse_id,
            "stack_level": self.stack_level,
            "purpose": self.purpose.value,
            "kind": self.kind.value,
            "recurrency": self.recurrency.value if self.recurrency else None,
            "valid_from": _iso(self.valid_from),
            "valid_to": _iso(self.valid_to),
            "transaction_id": self.transaction_id,
            "transaction_ref": self.transaction_ref,
            "source": self.source,
            "schedule": {
                "id": s.id,
                "unit": s.unit.value,
                "start": _iso(s.start),
                "duration": s.duration,
                "min_rate": s.min_rate,
                "periods": [
                    {"start": p.start, "limit": p.limit, "phases": p.phases, "phase_to_use": p.phase_to_use}
                    for p in s.periods
                ],
            },
        }

    @classmethod
    def from_dict(cls, data: object) -> ChargingProfile:
        """The profile `to_dict` made; ValueError (naming the field) for anything else."""
        d = _mapping(data, "profile")
        sd = _mapping(d.get("schedule"), "schedule")
        raw_periods = sd.get("periods")
        if not isinstance(raw_periods, list) or not 1 <= len(raw_periods) <= MAX_STORED_PERIODS:
            raise ValueError(f"schedule.periods: not a list of 1 to {MAX_STORED_PERIODS} periods")
        periods = []
        for n, raw in enumerate(raw_periods):
            at = f"schedule.periods[{n}]."
            pd = _mapping(raw, at[:-1])
            periods.append(
                Period(
                    start=_int(pd, "start", at),
                    limit=_number(pd, "limit", at),
                    phases=_int(pd, "phases", at, optional=True),
                    phase_to_use=_int(pd, "phase_to_use", at, optional=True),
                )
            )
        schedule = Schedule(
            unit=_enum(RateUnit, sd, "unit", "schedule."),
            periods=tuple(periods),
            duration=_int(sd, "duration", "schedule.", optional=True),
            start=_time(sd, "start", "schedule."),
            min_rate=_number(sd, "min_rate", "schedule.", optional=True),
            id=_int(sd, "id", "schedule."),
        )
        recurrency = d.get("recurrency")
        return cls(
            id=_int(d, "id"),
            evse_id=_int(d, "evse_id"),
            stack_level=_int(d, "stack_level"),
            purpose=_enum(Purpose, d, "purpose"),
            kind=_enum(Kind, d, "kind"),
            schedule=schedule,
            recurrency=None if recurrency is None else _enum(Recurrency, d, "recurrency"),
            valid_from=_time(d, "valid_from"),
            valid_to=_time(d, "valid_to"),
            transaction_id=_text(d, "transaction_id", optional=True),
            transaction_ref=_text(d, "transaction_ref", optional=True),
            source=_text(d, "source"),
        )


MAX_STORED_PERIODS = 1024  # 2.0.1 ChargingScheduleType.chargingSchedulePeriod 1..1024
_MAX_TEXT = 255  # a transaction id (2.0.1: at most 36), a station reference, a limit source
_MAX_INT = 2**31 - 1  # OCPP integers are 32-bit signed


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _shown(value: object) -> str:
    """A value for an error message: a scalar's repr (cut short), else its type (str() of nested data recurses)."""
    if value is None or isinstance(value, str | int | float):
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _mapping(value: object, name: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: not an object")
    return value


def _int(d: Mapping[str, object], key: str, at: str = "", *, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not -_MAX_INT - 1 <= value <= _MAX_INT:
        raise ValueError(f"{at}{key}: {_shown(value)} is not a whole number")
    return value


def _number(d: Mapping[str, object], key: str, at: str = "", *, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{at}{key}: {_shown(value)} is not a finite number")
    return float(value)


def _text(d: Mapping[str, object], key: str, *, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError(f"{key}: {_shown(value)} is not a text of at most {_MAX_TEXT} characters")
    return value


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum(kind: type[_E], d: Mapping[str, object], key: str, at: str = "") -> _E:
    value = d.get(key)
    for member in kind:
        if member.value == value:
            return member
    raise ValueError(f"{at}{key}: {_shown(value)} is not one of {[e.value for e in kind]}")


def _time(d: Mapping[str, object], key: str, at: str = "") -> datetime | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"{at}{key}: {_shown(value)} is not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{at}{key}: {_shown(value)} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{at}{key}: {_shown(value)} has no UTC offset")
    return moment.astimezone(UTC)
