"""The one contract every charge controller fulfils, after EVerest's `evse_board_support` and `connector_lock`
interfaces (the idea, not the code).

Events in: the IEC 61851-1 control pilot state (A..F), the relay (contactor) state as its feedback contact reports
it, the lock state, the cable's ampacity (PP) where the socket has one, and faults. Commands out: allow power (close
or open the relay), the maximum current the car may draw (PWM duty per IEC 61851-1 Annex A; 0 A pauses the car),
lock / unlock. A driver knows its hardware's protocol and nothing about OCPP; the runtime knows this interface and
nothing about protocols. A driver never closes the relay on its own.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

from station.core.model import Fault, LockState, Pilot

__all__ = [
    "AmpacityChanged",
    "Capabilities",
    "ChargeController",
    "ControllerError",
    "ControllerEvent",
    "ControllerState",
    "Fault",
    "FaultChanged",
    "LockChanged",
    "LockState",
    "Pilot",
    "PilotChanged",
    "RelayChanged",
]


class ControllerError(Exception):
    """The controller could not do what was asked (no answer, refused, not supported); the message says which."""


@dataclass(frozen=True)
class PilotChanged:
    pilot: Pilot


@dataclass(frozen=True)
class RelayChanged:
    closed: bool  # from the relay's feedback contact where there is one


@dataclass(frozen=True)
class LockChanged:
    state: LockState


@dataclass(frozen=True)
class AmpacityChanged:
    amps: float  # the cable's current rating from the proximity pilot (PP); 0 = no cable


@dataclass(frozen=True)
class FaultChanged:
    fault: Fault
    active: bool
    detail: str = ""


ControllerEvent = PilotChanged | RelayChanged | LockChanged | AmpacityChanged | FaultChanged


@dataclass(frozen=True)
class Capabilities:
    senses_plug: bool = True  # False: the station has no view of the plug (meter-output)
    has_lock: bool = False  # False: a fixed cable, or a socket without a lock
    relay_feedback: bool = True  # the relay state is reported by a feedback contact (not assumed from the command)
    min_current_a: float = 6.0  # IEC 61851-1: below 6 A the car must not charge
    max_current_a: float = 32.0
    phases: int = 3


@dataclass
class ControllerState:
    """What the controller last reported, for diagnostics. Written only by its worker in the runtime."""

    pilot: Pilot = Pilot.A
    relay_closed: bool = False
    lock: LockState = LockState.NONE
    current_limit_a: float = 0.0
    ampacity_a: float | None = None
    faults: dict[Fault, str] = field(default_factory=dict)
    online: bool = False
    last_error: str = ""


class ChargeController(abc.ABC):
    """One EVSE's charge controller."""

    name: str = ""
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    async def open(self, listener: Callable[[ControllerEvent], None]) -> None:
        """Start talking to the controller; every change it reports goes to `listener` (also the initial state).
        Does not fail when the controller is silent: that is reported as FaultChanged(CONTROLLER_SILENT)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop talking; the relay is left open (a driver opens it if it can)."""

    @abc.abstractmethod
    async def allow_power(self, on: bool) -> None:
        """Close (on) or open the relay. Raises ControllerError when the controller does not take the command."""

    @abc.abstractmethod
    async def set_max_current(self, amps: float) -> None:
        """The most the car may draw (PWM duty per IEC 61851-1 Annex A); 0 pauses the car."""

    async def lock(self, locked: bool) -> None:
        """Lock or unlock the connector; a controller without a lock does nothing."""
        return None
