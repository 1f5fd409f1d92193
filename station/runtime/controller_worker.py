"""One EVSE's charge controller as the runtime uses it: its state for diagnostics, and its commands in order.

A worker owns its EVSE's `ControllerState` (nothing else writes it). Commands (relay, lock, current) are carried out
one after another in the order the core gave them, by one loop; a command the controller does not take is retried
while it matters (opening the relay and a new current limit are retried until they work) and reported. Events the
controller reports go to the runtime, which turns them into core events.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import structlog

from station.core.model import AllowPower, Fault, LockConnector, OfferCurrent
from station.ev.interface import (
    AmpacityChanged,
    ChargeController,
    ControllerError,
    ControllerEvent,
    ControllerState,
    FaultChanged,
    LockChanged,
    PilotChanged,
    RelayChanged,
)

log = structlog.get_logger("station.runtime.controller")

ControllerCommand = AllowPower | LockConnector | OfferCurrent
MAX_PENDING = 64  # commands waiting; the core gives at most a few per event
RETRY_DELAY = 1.0


class ControllerWorker:
    def __init__(
        self,
        evse_id: int,
        controller: ChargeController,
        state: ControllerState | None = None,
        *,
        max_current_a: float = 0,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self.evse_id = evse_id
        self.controller = controller
        self.state = state if state is not None else ControllerState()
        self.max_current_a = max_current_a or controller.capabilities.max_current_a
        self.retry_delay = retry_delay
        self.offered_a: float | None = None  # smart charging's limit (OfferCurrent); None: the maximum
        self._pending: collections.deque[ControllerCommand] = collections.deque()
        self._wake = asyncio.Event()
        self._log = log.bind(evse_id=evse_id, controller=controller.name)

    async def open(self, on_event: Callable[[int, ControllerEvent], None]) -> None:
        def heard(event: ControllerEvent) -> None:
            self._note(event)
            on_event(self.evse_id, event)

        await self.controller.open(heard)
        self.state.online = True

    async def close(self) -> None:
        try:
            await self.controller.close()
        except ControllerError as exc:
            self._log.warning("controller did not close cleanly", error=str(exc))

    @property
    def offer_a(self) -> float:
        """What the car is offered: smart charging's limit, never above the EVSE's maximum."""
        return self.max_current_a if self.offered_a is None else min(self.offered_a, self.max_current_a)

    def command(self, command: ControllerCommand) -> None:
        """Queue a command; the loop carries it out. Commands that pile up (a stuck controller) are cut down to
        what is wanted now: the newest relay command first, then the newest lock and current commands."""
        if len(self._pending) >= MAX_PENDING:
            newest = [
                next((c for c in reversed(self._pending) if isinstance(c, kind)), None)
                for kind in (AllowPower, LockConnector, OfferCurrent)
            ]
            self._log.error("controller commands pile up; keeping the newest", dropped=len(self._pending))
            self._pending = collections.deque(c for c in newest if c is not None)
        self._pending.append(command)
        self._wake.set()

    async def run(self) -> None:
        """Carry out the commands in order, for the runtime's whole life."""
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await self._carry_out(self._pending.popleft())

    async def _carry_out(self, command: ControllerCommand) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                match command:
                    case AllowPower(on=True):
                        await self.controller.set_max_current(self.offer_a)
                        await self.controller.allow_power(True)
                        self.state.current_limit_a = self.offer_a
                    case OfferCurrent(amps=amps):
                        self.offered_a = amps
                        await self.controller.set_max_current(self.offer_a)
                        self.state.current_limit_a = self.offer_a
                        self._log.info("controller.current_offered", limit_a=self.offer_a)
                    case AllowPower(on=False):
                        await self.controller.allow_power(False)
                    case LockConnector(locked=locked):
                        await self.controller.lock(locked)
                return
            except ControllerError as exc:
                self.state.last_error = str(exc)
                # Opening the relay is never given up, nor is a new current limit (the site's connection may depend
                # on it); a later relay command supersedes the opening, any later command the limit (which stays
                # in `offered_a` and goes with the next AllowPower).
                opening = isinstance(command, AllowPower) and not command.on
                limiting = isinstance(command, OfferCurrent)
                level = self._log.error if opening or limiting else self._log.warning
                level("controller command failed", command=repr(command), attempt=attempt, error=str(exc))
                later_relay = any(isinstance(c, AllowPower) for c in self._pending)
                superseded = (opening and later_relay) or (limiting and bool(self._pending))
                if not (opening or limiting) or superseded:
                    return
                await asyncio.sleep(min(self.retry_delay * attempt, 10.0))

    def _note(self, event: ControllerEvent) -> None:
        match event:
            case PilotChanged(pilot=pilot):
                self.state.pilot = pilot
            case RelayChanged(closed=closed):
                self.state.relay_closed = closed
            case LockChanged(state=lock):
                self.state.lock = lock
            case AmpacityChanged(amps=amps):
                self.state.ampacity_a = amps
            case FaultChanged(fault=fault, active=active, detail=detail):
                if active:
                    self.state.faults[fault] = detail
                else:
                    self.state.faults.pop(fault, None)
                if fault is Fault.CONTROLLER_SILENT:
                    self.state.online = not active
