"""IEC 61851-1 Annex A: the duty cycle the EVSE sends for a current, and the current a car reads from a duty cycle.
The expected values are the tables' own (the EVSE's "pilot duty cycle provided by the EVSE" and the car's "maximum
current to be drawn by the vehicle"), not recomputed from the code's formulas."""

from __future__ import annotations

import math

import pytest

from station.ev.pilot import DIGITAL_COMMUNICATION_PCT, PWM_OFF_PCT, current_for_duty, duty_for_current


@pytest.mark.parametrize(
    ("amps", "duty"),
    [
        (6, 10.0),  # the table's lowest current: 10 %
        (10, 16.667),
        (16, 26.667),
        (30, 50.0),
        (32, 53.333),
        (51, 85.0),  # the top of "duty = I / 0.6"
        (60, 88.0),  # "duty = I / 2.5 + 64"
        (80, 96.0),  # the most Annex A can signal
    ],
)
def test_evse_table_duty_for_current(amps: float, duty: float) -> None:
    assert duty_for_current(amps) == pytest.approx(duty, abs=0.001)


@pytest.mark.parametrize("amps", [0, 0.5, 5.99])
def test_below_6_a_no_charging_allowed_pwm_off(amps: float) -> None:
    assert duty_for_current(amps) == PWM_OFF_PCT == 100.0


@pytest.mark.parametrize("amps", [-1, 80.01, math.nan, math.inf])
def test_a_current_annex_a_cannot_signal_is_an_error(amps: float) -> None:
    with pytest.raises(ValueError, match="current limit"):
        duty_for_current(amps)


@pytest.mark.parametrize(
    ("duty", "amps"),
    [
        (0.0, 0.0),  # below 3 %: charging not allowed
        (2.9, 0.0),
        (7.5, 0.0),  # between 7 % and 8 %: charging not allowed
        (8.0, 6.0),  # 8 % <= duty < 10 %: 6 A
        (9.9, 6.0),
        (10.0, 6.0),  # 10 %..85 %: duty x 0.6 A
        (25.0, 15.0),
        (50.0, 30.0),
        (85.0, 51.0),
        (90.0, 65.0),  # 85 %..96 %: (duty - 64) x 2.5 A
        (96.0, 80.0),
        (96.5, 80.0),  # 96 %..97 %: 80 A
        (97.5, 0.0),  # above 97 %: charging not allowed
        (100.0, 0.0),  # PWM off
    ],
)
def test_vehicle_table_current_for_duty(duty: float, amps: float) -> None:
    assert current_for_duty(duty) == pytest.approx(amps)


@pytest.mark.parametrize("duty", [3.0, DIGITAL_COMMUNICATION_PCT, 7.0])
def test_5_percent_means_digital_communication(duty: float) -> None:
    assert current_for_duty(duty) is None


@pytest.mark.parametrize("amps", [6, 13, 16, 20, 32, 40, 51, 63, 80])
def test_a_car_reads_back_what_the_evse_offers(amps: float) -> None:
    assert current_for_duty(duty_for_current(amps)) == pytest.approx(amps)


def test_a_current_between_the_two_formulas_is_never_read_as_more() -> None:
    # 51..52.5 A has no exact duty (85 % reads 51 A, just above it 52.5 A): the car must never read more than offered
    for tenth in range(510, 526):
        offered = tenth / 10
        read = current_for_duty(duty_for_current(offered))
        assert read is not None and read <= offered + 1e-9


@pytest.mark.parametrize("duty", [-0.1, 100.1, math.nan])
def test_a_duty_cycle_outside_0_100_is_an_error(duty: float) -> None:
    with pytest.raises(ValueError, match="duty cycle"):
        current_for_duty(duty)
