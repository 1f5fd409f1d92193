"""Small asyncio helpers with cancellation semantics we can reason about."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def until_first_exits(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run coroutines side by side until the first one returns or raises; cancel and await the rest.

    Raises what the first one raised. Cancelling the caller cancels them all. (asyncio.TaskGroup is avoided here:
    nested groups on Python 3.11 could leave a cancelled parent waiting on children that were never cancelled.)
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and (exc := task.exception()) is not None:
            raise exc


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds have passed (None: no limit); True when it was set.

    `asyncio.wait_for(event.wait(), timeout)` on Python 3.11 returns normally when the event is set at the moment the
    waiter is cancelled, and the cancellation is lost (a loop around it then runs on after its task was told to stop:
    a delivery lane outlived its session, and the daemon's shutdown hung). Here a cancellation that came meanwhile is
    raised after all."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return True
