"""A simulated car behind a charge controller: plugged or not, asking for power or not, drawing power when the relay
is closed and the pilot offers at least 6 A.

Its own small state machine (IEC 61851-1 from the car's side):

    UNPLUGGED --plug--> CONNECTED (pilot B) --ready--> READY (pilot C, or D with `ventilation`)
    READY --suspend--> CONNECTED;  CONNECTED / READY --unplug--> UNPLUGGED (pilot A)

A request the car cannot follow in its state (ready while unplugged, plug when plugged, ...) raises `Refused` saying
why, and changes nothing. A 0 A limit (PWM off) pauses the car: it keeps asking (its pilot stays C) and draws nothing.
"""

from __future__ import annotations

import enum
import math

from station.core.model import Pilot
from station.ev.pilot import MIN_CURRENT_A

VOLTAGE_V = 230.0  # per phase


class Refused(Exception):
    """A simulation request that cannot be followed (impossible in the current state, or bad input); the message says
    why."""


class CarState(enum.StrEnum):
    UNPLUGGED = "unplugged"
    CONNECTED = "connected"  # plugged, not asking for power (pilot B)
    READY = "ready"  # asking for power (pilot C / D)


class SimulatedCar:
    def __init__(
        self,
        *,
        phases: int = 3,
        max_current_a: float = 32.0,
        ventilation: bool = False,
        cable_a: float = 32.0,
        voltage_v: float = VOLTAGE_V,
    ) -> None:
        if phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, got {phases!r}")
        for name, value in (("max_current_a", max_current_a), ("cable_a", cable_a), ("voltage_v", voltage_v)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.phases = phases
        self.max_current_a = max_current_a  # what its on-board charger takes at most
        self.ventilation = ventilation  # asks with D instead of C
        self.cable_a = cable_a  # its cable's rating (PP)
        self.voltage_v = voltage_v
        self.state = CarState.UNPLUGGED

    @property
    def pilot(self) -> Pilot:
        if self.state is CarState.UNPLUGGED:
            return Pilot.A
        if self.state is CarState.CONNECTED:
            return Pilot.B
        return Pilot.D if self.ventilation else Pilot.C

    @property
    def plugged(self) -> bool:
        return self.state is not CarState.UNPLUGGED

    def plug(self) -> None:
        if self.plugged:
            raise Refused("the car is already plugged in")
        self.state = CarState.CONNECTED

    def unplug(self) -> None:
        if not self.plugged:
            raise Refused("the car is not plugged in")
        self.state = CarState.UNPLUGGED

    def ready(self) -> None:
        """The car asks for power (state C)."""
        if not self.plugged:
            raise Refused("the car is not plugged in: plug it in first")
        if self.state is CarState.READY:
            raise Refused("the car is already asking for power")
        self.state = CarState.READY

    def suspend(self) -> None:
        """The car pauses (back to state B)."""
        if not self.plugged:
            raise Refused("the car is not plugged in")
        if self.state is CarState.CONNECTED:
            raise Refused("the car is not asking for power (already paused)")
        self.state = CarState.CONNECTED

    def current_a(self, limit_a: float, relay_closed: bool) -> float:
        """What it draws per phase: nothing unless the relay is closed, it asks, and the limit is at least 6 A."""
        if not relay_closed or not self.pilot.wants_power or limit_a < MIN_CURRENT_A:
            return 0.0
        return min(limit_a, self.max_current_a)

    def power_w(self, limit_a: float, relay_closed: bool) -> float:
        return self.current_a(limit_a, relay_closed) * self.phases * self.voltage_v
