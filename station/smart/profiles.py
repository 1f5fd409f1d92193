"""Charging profiles as the station keeps them, the same for OCPP 1.6 and 2.0.1 (1.6 §7.8, 2.0.1 ChargingProfileType).

A profile is a schedule of limits (amperes per phase, or watts in total) with a purpose, a stack level and a
validity. The adapters turn each version's JSON into these objects and back (`station/ocpp/profile_codec.py`); the
rest of the station (the book of installed profiles, the composite schedule, the store, diagnostics) knows only this
shape. Times are aware UTC datetimes; offsets and durations are whole seconds.

Names follow 2.0.1 (`ChargingStationMaxProfile`, EVSE); in 1.6 that purpose is `ChargePointMaxProfile` and an EVSE is
the EVSE of a connector (`Layout.locate`). EVSE 0 is the station itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

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
