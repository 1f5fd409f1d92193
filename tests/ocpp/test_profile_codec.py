"""Charging profiles between the wire and the station's shape (issue 19): what a CSMS sends comes back the same in
ReportChargingProfiles (TC_K_01_CS / TC_K_13_CS post-scenario validation: "the same profile is reported as sent"),
and what a schema cannot refuse is refused here without a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from station.ocpp import profile_codec
from station.ocpp.profile_codec import ProfileFormatError
from station.smart.composite import CompositePeriod, CompositeSchedule
from station.smart.profiles import Kind, Purpose, RateUnit, Recurrency

SENT_201: dict[str, Any] = {
    "id": 7,
    "stack_level": 2,
    "charging_profile_purpose": "TxDefaultProfile",
    "charging_profile_kind": "Recurring",
    "recurrency_kind": "Daily",
    "valid_from": "2026-12-02T00:00:00.000Z",
    "valid_to": "2027-01-01T00:00:00.000Z",
    "charging_schedule": [
        {
            "id": 3,
            "start_schedule": "2026-12-02T06:00:00.000Z",
            "duration": 43200,
            "charging_rate_unit": "W",
            "charging_schedule_period": [
                {"start_period": 0, "limit": 11000.0, "number_phases": 3},
                {"start_period": 3600, "limit": 6250.5, "number_phases": 1, "phase_to_use": 2},
            ],
            "min_charging_rate": 1380.0,
        }
    ],
}


def test_a_201_profile_is_reported_as_it_was_sent() -> None:
    """K09 / TC_K_13_CS: every field the CSMS set comes back, limits as given (2.0.1 takes any decimal)."""
    profile = profile_codec.from_v201(SENT_201, evse_id=1)
    assert profile.purpose is Purpose.TX_DEFAULT and profile.kind is Kind.RECURRING
    assert profile.recurrency is Recurrency.DAILY and profile.schedule.unit is RateUnit.W
    assert profile.schedule.start == datetime(2026, 12, 2, 6, tzinfo=UTC)
    assert profile_codec.to_v201_profile(profile) == SENT_201


def test_a_16_profile_with_decimals_reads_and_names_the_charge_point_max() -> None:
    """1.6 §7.8 csChargingProfiles; the library hands SetChargingProfile's decimals over as Decimal."""
    sent = {
        "charging_profile_id": 1,
        "stack_level": 0,
        "charging_profile_purpose": "ChargePointMaxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": {
            "charging_rate_unit": "A",
            "start_schedule": "2026-12-02T06:00:00Z",
            "charging_schedule_period": [{"start_period": 0, "limit": Decimal("16.1")}],
        },
    }
    profile = profile_codec.from_v16(sent, evse_id=0)
    assert profile.purpose is Purpose.STATION_MAX and profile.schedule.periods[0].limit == 16.1


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"charging_schedule": []}, "InvalidSchedule"),  # K01.FR.34: one schedule
        ({"charging_schedule": [SENT_201["charging_schedule"][0]] * 2}, "InvalidSchedule"),
        ({"charging_profile_purpose": "ChargingStationExternalConstraints"}, "InvalidProfile"),  # K01.FR.22
        ({"valid_from": "yesterday"}, "InvalidValue"),
    ],
)
def test_what_a_schema_lets_through_is_refused_with_a_reason(change: dict[str, Any], code: str) -> None:
    with pytest.raises(ProfileFormatError) as refused:
        profile_codec.from_v201({**SENT_201, **change}, evse_id=1)
    assert refused.value.reason_code == code


def test_a_non_finite_limit_or_too_many_periods_is_refused() -> None:
    schedule = dict(SENT_201["charging_schedule"][0])
    for periods in (
        [{"start_period": 0, "limit": float("nan")}],
        [{"start_period": i, "limit": 1} for i in range(1025)],
    ):
        with pytest.raises(ProfileFormatError):
            profile_codec.from_v201(
                {**SENT_201, "charging_schedule": [{**schedule, "charging_schedule_period": periods}]}, 1
            )


def test_a_16_composite_keeps_to_its_schema_multiple_of_a_tenth() -> None:
    """1.6 §7.13: limits in the GetCompositeSchedule.conf schedule are multiples of 0.1."""
    composite = CompositeSchedule(
        1, datetime(2026, 12, 2, tzinfo=UTC), 600, RateUnit.A, (CompositePeriod(0, 13.043, 3),), min_rate=6.0
    )
    schedule = profile_codec.to_v16_schedule(composite)
    assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 13.0, "number_phases": 3}]
    assert schedule["start_schedule"] == "2026-12-02T00:00:00.000Z" and schedule["duration"] == 600
