"""`driver = "simulated"`: a charge controller with a simulated car behind it, for tests, demos and trying by hand.

It behaves as a real controller would: the relay closes only when power is allowed (`allow_power(True)`) and the car
asks for it (pilot C or D), and opens on its own when the car stops asking, is unplugged, or a tripping fault (RCD,
diode, over-current, over-temperature, no ground) occurs; a trip also withdraws the permission, so the relay stays open
after the fault is cleared until power is allowed again. Its relay state is reported as from a feedback contact: a
welded relay (`relay_welded`) stays closed when told to open, and says so. The car draws power only while the relay is
closed, it asks, and the current limit is at least 6 A (0 A pauses it: PWM off, the car keeps asking and draws
nothing). A silent controller (`controller_silent`) is reported once as that fault, then reports nothing more and
takes no commands (ControllerError) until cleared, when it reports everything that changed meanwhile.

Events go to the listener soon after the change (`loop.call_soon`, in order), never from inside the call that caused
them, as a real controller's feedback would; the power listeners are called at once (the simulated meter's load).

The car, the faults and the card reader are driven through the methods below, from a test, or at run time through the
control socket (`control_socket`, see `station.ev.sim.control`) by `station sim ev`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from station.cards.interface import normalise_uid
from station.ev.interface import (
    AmpacityChanged,
    Capabilities,
    ChargeController,
    ControllerError,
    ControllerEvent,
    Fault,
    FaultChanged,
    LockChanged,
    LockState,
    Pilot,
    PilotChanged,
    RelayChanged,
)
from station.ev.pilot import MAX_CURRENT_A, duty_for_current
from station.ev.sim.car import CarState, Refused, SimulatedCar

log = structlog.get_logger("station.ev.simulated")

# Faults after which the controller's own protection opens the relay (and withdraws the permission to close it).
TRIPPING = frozenset({Fault.RCD, Fault.DIODE, Fault.OVERCURRENT, Fault.OVERTEMPERATURE, Fault.NO_GROUND})


class CardSink(Protocol):
    """Where a card presented at this EVSE goes: the simulated card reader (station/cards/simulated.py)."""

    def present(self, uid: str) -> None: ...


def parse_fault(name: Fault | str) -> Fault:
    """A fault by its name (`rcd`, `relay_welded`, ...); Refused naming the known ones otherwise."""
    if isinstance(name, Fault):
        return name
    try:
        return Fault(str(name).strip().lower())
    except ValueError:
        known = ", ".join(f.value for f in Fault)
        raise Refused(f"unknown fault {str(name)[:40]!r}; known: {known}") from None


class SimulatedController(ChargeController):
    def __init__(
        self,
        name: str = "simulated",
        *,
        has_lock: bool = True,
        control_socket: str = "",
        max_current_a: float = 32.0,
        car: SimulatedCar | None = None,
    ) -> None:
        if not math.isfinite(max_current_a) or not 6.0 <= max_current_a <= MAX_CURRENT_A:
            raise ValueError(f"max_current_a must be 6..{MAX_CURRENT_A:g} A, got {max_current_a!r}")
        self.name = name
        self.car = car or SimulatedCar()
        self.capabilities = Capabilities(
            senses_plug=True,
            has_lock=has_lock,  # a socket with a lock (and a PP contact); False: a fixed cable
            relay_feedback=True,
            max_current_a=max_current_a,
            phases=self.car.phases,
        )
        self.control_socket = control_socket
        self.card_reader: CardSink | None = None  # set by whoever wires the EVSE's simulated reader
        self._listener: Callable[[ControllerEvent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._allowed = False
        self._relay = False
        self._limit_a = 0.0
        self._lock_wanted = False
        self._faults: dict[Fault, str] = {}
        self._power_w = 0.0
        self._power_listeners: list[Callable[[float], None]] = []
        self._seen: dict[str, Any] = {}  # what the listener was last told
        self._seen_faults: dict[Fault, str] = {}
        self._server: Any = None  # station.ev.sim.control.ControlServer while open with a control socket

    # ------------------------------------------------------------------ what it reports

    @property
    def pilot(self) -> Pilot:
        return self.car.pilot

    @property
    def relay_closed(self) -> bool:
        return self._relay

    @property
    def lock_state(self) -> LockState:
        if not self.capabilities.has_lock:
            return LockState.NONE
        if Fault.LOCK_FAILURE in self._faults:
            return LockState.FAILED
        return LockState.LOCKED if self._lock_wanted else LockState.UNLOCKED

    @property
    def current_limit_a(self) -> float:
        return self._limit_a

    @property
    def power_w(self) -> float:
        """What the car draws now: 0 unless the relay is closed, the pilot is C/D and the limit is at least 6 A."""
        return self._power_w

    @property
    def faults(self) -> dict[Fault, str]:
        return dict(self._faults)

    @property
    def silent(self) -> bool:
        return Fault.CONTROLLER_SILENT in self._faults

    def snapshot(self) -> dict[str, Any]:
        """The whole simulated state, JSON-ready (what `station sim ev state --json` prints)."""
        return {
            "name": self.name,
            "car": self.car.state.value,
            "pilot": self.pilot.value,
            "relay": "closed" if self._relay else "open",
            "power_allowed": self._allowed,
            "lock": self.lock_state.value,
            "current_limit_a": self._limit_a,
            "duty_cycle_pct": round(duty_for_current(self._limit_a), 1),
            "power_w": self._power_w,
            "faults": {fault.value: detail for fault, detail in self._faults.items()},
            "online": self._listener is not None and not self.silent,
        }

    def add_power_listener(self, callback: Callable[[float], None]) -> None:
        """`callback(power_w)` now and at every change of what the car draws (e.g. the simulated meter's
        `SimulatedMeter.set_load`)."""
        self._power_listeners.append(callback)
        callback(self._power_w)

    # ------------------------------------------------------------------ ChargeController

    async def open(self, listener: Callable[[ControllerEvent], None]) -> None:
        self._loop = asyncio.get_running_loop()
        if self.control_socket and self._server is None:
            from station.ev.sim.control import ControlServer

            server = ControlServer(self, self.control_socket)
            try:
                await server.start()
            except OSError as exc:
                raise ControllerError(f"simulated controller {self.name}: control socket: {exc}") from None
            self._server = server
        self._listener = listener
        self._seen = {}
        self._seen_faults = {}
        log.info("ev sim open", controller=self.name, control_socket=self.control_socket or None)
        self._sync()

    async def close(self) -> None:
        self._allowed = False
        self._sync()
        self._listener = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
        log.info("ev sim closed", controller=self.name, relay_closed=self._relay)

    async def allow_power(self, on: bool) -> None:
        self._check_online()
        if on:
            tripped = sorted(f.value for f in self._faults if f in TRIPPING)
            if tripped:
                raise ControllerError(f"the relay cannot close: fault {', '.join(tripped)} active (clear it first)")
        self._allowed = on
        log.info("ev sim allow power", controller=self.name, on=on)
        self._sync()

    async def set_max_current(self, amps: float) -> None:
        self._check_online()
        if not isinstance(amps, int | float) or not math.isfinite(amps) or amps < 0:
            raise ControllerError(f"max current must be a number of amperes >= 0, got {amps!r}")
        self._limit_a = min(float(amps), self.capabilities.max_current_a)
        self._sync()

    async def lock(self, locked: bool) -> None:
        self._check_online()
        if not self.capabilities.has_lock:
            return
        self._lock_wanted = locked
        self._sync(lock_moved=True)

    def _check_online(self) -> None:
        if self._listener is None:
            raise ControllerError(f"simulated controller {self.name} is not open")
        if self.silent:
            raise ControllerError(f"simulated controller {self.name} does not answer (controller_silent)")

    # ------------------------------------------------------------------ the car, the faults, the card reader

    def plug(self) -> None:
        self.car.plug()
        self._sync()

    def unplug(self) -> None:
        self.car.unplug()
        self._sync()

    def ready(self) -> None:
        """The car asks for power (state C)."""
        self.car.ready()
        self._sync()

    def suspend(self) -> None:
        """The car pauses (state B)."""
        self.car.suspend()
        self._sync()

    def inject(self, fault: Fault | str, detail: str = "") -> Fault:
        """Make the controller report `fault` (by value or name); Refused when it is active already, or a lock failure
        without a lock."""
        fault = parse_fault(fault)
        if fault in self._faults:
            raise Refused(f"fault {fault.value} is already active")
        if fault is Fault.LOCK_FAILURE and not self.capabilities.has_lock:
            raise Refused("this controller has no lock (a fixed cable): no lock_failure")
        self._faults[fault] = detail[:200] or "injected"
        if fault in TRIPPING:
            self._allowed = False
        log.warning("ev sim fault injected", controller=self.name, fault=fault.value)
        self._sync()
        return fault

    def clear(self, fault: Fault | str | None = None) -> list[Fault]:
        """Clear one fault, or every active one (None); what was cleared. Refused for a named fault not active."""
        if fault is None:
            cleared = list(self._faults)
        else:
            one = parse_fault(fault)
            if one not in self._faults:
                raise Refused(f"fault {one.value} is not active")
            cleared = [one]
        for f in cleared:
            del self._faults[f]
        if cleared:
            log.info("ev sim faults cleared", controller=self.name, faults=[f.value for f in cleared])
        self._sync()
        return cleared

    def present_card(self, uid: str) -> str:
        """A card presented at this EVSE's reader; the UID as the reader reports it (upper-case hex)."""
        try:
            normalised = normalise_uid(uid)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        if self.card_reader is None:
            raise Refused(f"no card reader is attached to {self.name}")
        self.card_reader.present(normalised)
        return normalised

    # ------------------------------------------------------------------ the hardware, and what it reports

    def _sync(self, *, lock_moved: bool = False) -> None:
        """Let the hardware follow (relay, the car's draw), then tell the listener what changed."""
        want = self._allowed and self.car.pilot.wants_power and not any(f in TRIPPING for f in self._faults)
        if not (self._relay and not want and Fault.RELAY_WELDED in self._faults):
            if want != self._relay:
                log.info("ev sim relay", controller=self.name, closed=want)
            self._relay = want
        power = self.car.power_w(self._limit_a, self._relay)
        if power != self._power_w:
            self._power_w = power
            for callback in list(self._power_listeners):
                callback(power)
        if self._listener is not None:
            self._report(lock_moved)

    def _report(self, lock_moved: bool) -> None:
        if self.silent:
            if Fault.CONTROLLER_SILENT not in self._seen_faults:
                self._seen_faults[Fault.CONTROLLER_SILENT] = self._faults[Fault.CONTROLLER_SILENT]
                self._emit(FaultChanged(Fault.CONTROLLER_SILENT, True, self._faults[Fault.CONTROLLER_SILENT]))
            return
        if Fault.CONTROLLER_SILENT in self._seen_faults:
            del self._seen_faults[Fault.CONTROLLER_SILENT]
            self._emit(FaultChanged(Fault.CONTROLLER_SILENT, False))
        for fault in [f for f in self._seen_faults if f not in self._faults]:
            del self._seen_faults[fault]
            self._emit(FaultChanged(fault, False))
        for fault, detail in self._faults.items():
            if fault not in self._seen_faults:
                self._seen_faults[fault] = detail
                self._emit(FaultChanged(fault, True, detail))
        now: dict[str, Any] = {"pilot": self.pilot, "relay": self._relay}
        if self.capabilities.has_lock:
            now["lock"] = self.lock_state
            now["ampacity"] = self.car.cable_a if self.car.state is not CarState.UNPLUGGED else 0.0
        make: dict[str, Callable[[Any], ControllerEvent]] = {
            "pilot": PilotChanged,
            "relay": RelayChanged,
            "lock": LockChanged,
            "ampacity": AmpacityChanged,
        }
        for key, value in now.items():
            if key not in self._seen or self._seen[key] != value or (key == "lock" and lock_moved):
                self._seen[key] = value
                self._emit(make[key](value))

    def _emit(self, event: ControllerEvent) -> None:
        listener, loop = self._listener, self._loop
        if listener is not None and loop is not None:
            loop.call_soon(listener, event)
