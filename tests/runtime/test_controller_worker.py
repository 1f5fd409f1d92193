"""The charge controller's worker: commands in the order the core gave them, and opening the relay is never given
up (found in review of the EV soak: a failed open was dropped when a lock command was queued behind it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from station.core.model import AllowPower, LockConnector, OfferCurrent
from station.ev.interface import Capabilities, ChargeController, ControllerError, ControllerEvent
from station.runtime.controller_worker import ControllerWorker


class Flaky(ChargeController):
    """A controller whose first `failures` relay commands fail, recording what it carried out."""

    name = "flaky"
    capabilities = Capabilities(has_lock=True)

    def __init__(self, failures: int, current_failures: int = 0) -> None:
        self.failures = failures
        self.current_failures = current_failures
        self.done: list[str] = []
        self.changed = asyncio.Event()

    def _did(self, what: str) -> None:
        self.done.append(what)
        self.changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def open(self, listener: Callable[[ControllerEvent], None]) -> None:
        return None

    async def close(self) -> None:
        return None

    async def allow_power(self, on: bool) -> None:
        if self.failures:
            self.failures -= 1
            raise ControllerError("no answer")
        self._did(f"power {on}")

    async def set_max_current(self, amps: float) -> None:
        if self.current_failures:
            self.current_failures -= 1
            raise ControllerError("no answer")
        self._did(f"current {amps:g}")

    async def lock(self, locked: bool) -> None:
        self._did(f"lock {locked}")


async def test_opening_the_relay_is_retried_even_with_a_lock_command_behind_it() -> None:
    controller = Flaky(failures=2)
    worker = ControllerWorker(1, controller, max_current_a=16, retry_delay=0.01)
    task = asyncio.create_task(worker.run())
    try:
        worker.command(AllowPower(1, False))
        worker.command(LockConnector(1, False))
        await controller.until(lambda: len(controller.done) >= 2)
        assert controller.done == ["power False", "lock False"]
    finally:
        task.cancel()


async def test_a_failed_close_is_not_retried_and_a_pile_keeps_the_newest_commands() -> None:
    controller = Flaky(failures=1)
    worker = ControllerWorker(1, controller, max_current_a=16, retry_delay=0.01)
    for _ in range(100):  # a stuck controller: the pile is cut down to what is wanted now
        worker.command(LockConnector(1, True))
        worker.command(AllowPower(1, True))
    worker.command(AllowPower(1, False))
    task = asyncio.create_task(worker.run())
    try:
        await controller.until(lambda: bool(controller.done) and controller.done[-1] == "power False")
        assert "power False" in controller.done and len(controller.done) < 40
    finally:
        task.cancel()


async def test_smart_charging_limit_is_offered_capped_at_the_maximum_and_kept_for_the_next_power_on() -> None:
    """Issue 19: the composite schedule's limit is the controller's maximum current (PWM); it never exceeds the
    EVSE's own maximum, None gives the maximum back, and a later AllowPower(True) offers the limit, not the maximum."""
    controller = Flaky(failures=0)
    worker = ControllerWorker(1, controller, max_current_a=16, retry_delay=0.01)
    task = asyncio.create_task(worker.run())
    try:
        worker.command(OfferCurrent(1, 10.0))
        worker.command(OfferCurrent(1, 40.0))
        worker.command(OfferCurrent(1, 0.0))
        worker.command(AllowPower(1, True))
        worker.command(OfferCurrent(1, None))
        await controller.until(lambda: len(controller.done) >= 6)
        assert controller.done == ["current 10", "current 16", "current 0", "current 0", "power True", "current 16"]
        assert worker.state.current_limit_a == 16
    finally:
        task.cancel()


async def test_a_lowered_limit_is_retried_until_the_controller_takes_it() -> None:
    """A new limit is not dropped when the controller fails to take it (the site's connection may depend on it)."""
    controller = Flaky(failures=0, current_failures=3)
    worker = ControllerWorker(1, controller, max_current_a=16, retry_delay=0.01)
    task = asyncio.create_task(worker.run())
    try:
        worker.command(OfferCurrent(1, 6.0))
        await controller.until(lambda: bool(controller.done))
        assert controller.done == ["current 6"] and worker.state.current_limit_a == 6
    finally:
        task.cancel()
