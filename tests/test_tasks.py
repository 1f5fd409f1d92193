"""station.tasks: waiting on an event without losing a cancellation (found in the chaos soak: a delivery lane waiting
with asyncio.wait_for outlived its session when its wake-up and its cancellation came together, so the transaction
lane never ran again and the station stayed stuck in a transaction the CSMS never heard of)."""

from __future__ import annotations

import asyncio

import pytest

from station.tasks import wait_event


async def test_a_cancellation_that_comes_with_the_wake_up_is_not_lost() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(wait_event(event, 30))
    await asyncio.sleep(0)  # the task now waits on the event
    event.set()
    task.cancel()  # in the same turn of the loop as the wake-up
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_it_says_whether_the_event_came_or_the_time_ran_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True
    assert await wait_event(event, None) is True
