"""The control pilot's PWM duty cycle and the current it offers the car, per IEC 61851-1 Annex A.

The EVSE's side (the duty cycle it sends for a current, Annex A's "pilot duty cycle provided by the EVSE" table):
6 A..51 A: duty = I / 0.6 (10 %..85 %); 51 A..80 A: duty = I / 2.5 + 64 (up to 96 %); 5 %: digital communication
(ISO 15118) required; no charging allowed: the PWM is off, the pilot a constant +12 V (x1, reported as 100 %).

The car's side (the current it reads from a duty cycle, Annex A's "maximum current to be drawn by the vehicle"
table): below 3 %: no charging; 3 %..7 %: digital communication; above 7 % and below 8 %: no charging; 8 %..10 %: 6 A;
10 %..85 %: duty x 0.6 A; above 85 % up to 96 %: (duty - 64) x 2.5 A; above 96 % up to 97 %: 80 A; above 97 %: no
charging. Pure functions, no hardware: a driver that sets a PWM uses `duty_for_current`, a simulated car
`current_for_duty`.
"""

from __future__ import annotations

import math

MIN_CURRENT_A = 6.0  # below this a car cannot charge: pause it (PWM off) instead
MAX_CURRENT_A = 80.0  # the most Annex A can express
DIGITAL_COMMUNICATION_PCT = 5.0  # "high-level (ISO 15118) communication required"
PWM_OFF_PCT = 100.0  # x1: constant +12 V, no charging allowed
_BREAK_A = 51.0  # where the EVSE's table changes formula (85 %)


def duty_for_current(amps: float) -> float:
    """The duty cycle (percent) the EVSE sends to offer `amps`: 100 (PWM off, no charging allowed) for 0 and for
    anything below 6 A; ValueError for a negative, non-finite or above-80 A value (Annex A cannot express it)."""
    if not math.isfinite(amps) or amps < 0:
        raise ValueError(f"current limit must be a finite number of amperes >= 0, got {amps!r}")
    if amps > MAX_CURRENT_A:
        raise ValueError(f"current limit {amps:g} A is above the {MAX_CURRENT_A:g} A IEC 61851-1 Annex A can signal")
    if amps < MIN_CURRENT_A:
        return PWM_OFF_PCT
    if amps <= _BREAK_A:
        return amps / 0.6
    return amps / 2.5 + 64.0


def current_for_duty(duty_pct: float) -> float | None:
    """The most a car may draw for a duty cycle (percent): amperes, 0.0 where charging is not allowed, or None for
    5 % territory (3..7 %: digital communication required, the current comes from ISO 15118, not the PWM).
    ValueError outside 0..100."""
    if not math.isfinite(duty_pct) or not 0.0 <= duty_pct <= 100.0:
        raise ValueError(f"duty cycle must be 0..100 %, got {duty_pct!r}")
    if duty_pct < 3.0:
        return 0.0
    if duty_pct <= 7.0:
        return None
    if duty_pct < 8.0:
        return 0.0
    if duty_pct < 10.0:
        return MIN_CURRENT_A
    if duty_pct <= 85.0:
        return duty_pct * 0.6
    if duty_pct <= 96.0:
        return (duty_pct - 64.0) * 2.5
    if duty_pct <= 97.0:
        return MAX_CURRENT_A
    return 0.0
