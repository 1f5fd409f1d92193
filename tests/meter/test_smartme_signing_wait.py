"""smart-me's stop waits out the signing time it has seen before (issue 22: the stop's wire time): once a signing has
been seen to complete, the next stop polls where the last one completed, back to back, instead of every
poll_interval from the end command on.

The tests run on an event loop with virtual time (each wait advances the clock by exactly its length; there is no
I/O): what is checked is the poll schedule, which a loaded CI machine's late timers would otherwise blur."""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from station.meter.interface import MeterRefused
from station.meter.smartme import STATUS_SIGNED, STATUS_SIGNING, SmartMeMeter, StatusBlock

POLL = 0.05  # poll_interval
READ = 0.02  # one status read on the line


class _Clock(selectors.DefaultSelector):
    """A selector that advances the loop's virtual clock by the timeout it is asked to wait, instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout:
            self.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._clock = _Clock()
        super().__init__(self._clock)

    def time(self) -> float:
        return self._clock.now


def virtual_time(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        loop = VirtualTimeLoop()
        try:
            loop.run_until_complete(test())
        finally:
            loop.close()

    return run


class SigningMeter(SmartMeMeter):
    """The status of a meter that signs in `signing_time` after the end command, each read taking READ."""

    def __init__(self) -> None:
        super().__init__(device=None, poll_interval=POLL, signing_timeout=2.0)  # type: ignore[arg-type]
        self.signing_time = 0.3
        self.ended_at = 0.0
        self.reads: list[float] = []

    async def status(self) -> StatusBlock:
        loop = asyncio.get_running_loop()
        self.reads.append(loop.time() - self.ended_at)
        await asyncio.sleep(READ / 2)
        signed = loop.time() - self.ended_at >= self.signing_time
        await asyncio.sleep(READ / 2)
        return StatusBlock(STATUS_SIGNED if signed else STATUS_SIGNING, 7, 0, 300, 0, 1000)

    async def stop(self) -> tuple[int, float]:
        """(status reads, seconds from the end command until the signed status was read)."""
        loop = asyncio.get_running_loop()
        self.reads.clear()
        self.ended_at = loop.time()
        await self._await_signed(self.ended_at)
        return len(self.reads), loop.time() - self.ended_at


@virtual_time
async def test_the_second_stop_reads_the_record_within_one_poll_of_its_signing_with_fewer_polls() -> None:
    meter = SigningMeter()
    first_reads, first = await meter.stop()
    assert first_reads >= 0.3 / (POLL + READ)  # a poll every poll_interval, as always
    for _ in range(3):
        reads, took = await meter.stop()
    assert reads <= 3
    assert took <= meter.signing_time + 2 * READ + 0.02  # within a poll of the signing, not a poll_interval later
    assert took <= first + 0.01


@virtual_time
async def test_a_meter_that_signs_faster_or_slower_is_still_read_and_learnt() -> None:
    meter = SigningMeter()
    for _ in range(3):
        await meter.stop()
    meter.signing_time = 0.1  # faster: the first poll comes too late once; the next wait is halved
    _, took = await meter.stop()
    assert took < 0.35
    for _ in range(4):
        _, took = await meter.stop()
    assert took <= 0.1 + 2 * READ + POLL + 0.03
    meter.signing_time = 0.5  # slower: polled every poll_interval past the old window, and learnt
    _, took = await meter.stop()
    assert 0.5 <= took <= 0.5 + POLL + 2 * READ + 0.03
    for _ in range(3):
        reads, took = await meter.stop()
    assert reads <= 3 and took <= 0.5 + 2 * READ + 0.02


@virtual_time
async def test_a_meter_that_never_signs_still_times_out() -> None:
    meter = SigningMeter()
    await meter.stop()
    meter.signing_time = 99.0
    meter.signing_timeout = 0.4
    with pytest.raises(MeterRefused, match="did not sign the transaction within"):
        await meter.stop()
