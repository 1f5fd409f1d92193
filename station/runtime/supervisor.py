"""Owns every task the runtime starts: what kind of work each is, what happens when one fails, and shutdown.

Tasks are told apart by their kind (`Work`), never by a name prefix. A one-shot task that fails is logged; a loop
(`keep_running`) that fails is logged and started again after a pause, so no background job is ever silently gone.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("station.runtime.supervisor")

LOOP_RESTART_DELAY = 1.0


class Work(enum.Enum):
    METER_START = "meter start"
    METER_STOP = "meter stop"
    METER_RELEASE = "meter release"
    STORE_PROBE = "store probe"
    TIMER = "timer"  # ConnectionTimeOut watches
    CARD = "card"  # a card presented at a reader, being authorized
    LOOP = "loop"  # long-lived: monitors and sampling
    LOG_UPLOAD = "log upload"  # a CSMS's GetLog / GetDiagnostics (station/logupload/)


BACKGROUND = {Work.LOOP, Work.STORE_PROBE, Work.TIMER, Work.LOG_UPLOAD}  # not "work in flight" for idle()


class Supervisor:
    def __init__(self, restart_delay: float = LOOP_RESTART_DELAY) -> None:
        self.restart_delay = restart_delay
        self._tasks: dict[asyncio.Task[None], Work] = {}
        self._closing = False

    def spawn(self, coro: Coroutine[Any, Any, None], work: Work, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks[task] = work
        task.add_done_callback(self._done)
        return task

    def keep_running(self, factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run a loop for the runtime's whole life; should it fail (or return), log it and start it again."""
        self.spawn(self._restarting(factory, name), Work.LOOP, name)

    async def _restarting(self, factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        while True:
            try:
                await factory()
                log.error("background loop returned; starting it again", task=name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("background loop failed; starting it again", task=name, error=repr(exc))
            await asyncio.sleep(self.restart_delay)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", task=task.get_name(), error=repr(task.exception()))

    def running(self, *kinds: Work) -> list[asyncio.Task[None]]:
        return [t for t, w in self._tasks.items() if w in kinds and not t.done()]

    async def idle(self) -> None:
        """Until no meter work is in flight (tests and the demo use it)."""
        while busy := [t for t, w in self._tasks.items() if w not in BACKGROUND]:
            await asyncio.wait(busy)

    async def close(self, grace: float = 10.0) -> None:
        """Let meter stops in flight finish (their records get stored), then cancel everything."""
        stops = self.running(Work.METER_STOP)
        if stops:
            _, still = await asyncio.wait(stops, timeout=grace)
            if still:
                log.warning("meter stop still running at shutdown; it is resumed at the next start")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
