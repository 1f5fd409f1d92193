"""The simulated card reader: each card put on it is delivered once, a bad UID is refused, a flood is bounded."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from station.cards.interface import CardPresented
from station.cards.simulated import MAX_PENDING, SimulatedCardReader


async def collect(reader: SimulatedCardReader, count: int) -> list[CardPresented]:
    seen: list[CardPresented] = []
    done = asyncio.Event()

    def presented(card: CardPresented) -> None:
        seen.append(card)
        if len(seen) >= count:
            done.set()

    task = asyncio.create_task(reader.run(presented))
    try:
        await asyncio.wait_for(done.wait(), 5)
        for _ in range(10):  # give run() the chance to deliver anything it should not
            await asyncio.sleep(0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return seen


async def test_each_presentation_is_delivered_once_with_the_normalised_uid() -> None:
    reader = SimulatedCardReader("front")
    assert reader.present("04:a1:b2:c3:d4:e5:f6") == "04A1B2C3D4E5F6"
    reader.present("deadbeef")
    reader.present("DEADBEEF")  # the same card again: a second presentation
    seen = await collect(reader, 3)
    assert seen == [
        CardPresented(uid="04A1B2C3D4E5F6", reader="front"),
        CardPresented(uid="DEADBEEF", reader="front"),
        CardPresented(uid="DEADBEEF", reader="front"),
    ]
    assert reader.pending == 0


async def test_a_card_presented_while_running_is_delivered() -> None:
    reader = SimulatedCardReader("sim")
    seen: list[CardPresented] = []
    got = asyncio.Event()
    task = asyncio.create_task(reader.run(lambda card: (seen.append(card), got.set())))
    await asyncio.sleep(0)
    reader.present("0102030405060708090A")
    await asyncio.wait_for(got.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [CardPresented(uid="0102030405060708090A", reader="sim")]


@pytest.mark.parametrize("bad", ["", "12345", "0102030405", "GHIJKLMN", "01 02 03", "00" * 11, "x" * 10_000])
def test_a_bad_uid_is_refused(bad: str) -> None:
    reader = SimulatedCardReader("front")
    with pytest.raises(ValueError, match="not a card UID"):
        reader.present(bad)
    assert reader.pending == 0


async def test_a_flood_of_presentations_is_capped_and_the_excess_logged() -> None:
    reader = SimulatedCardReader("front")
    with structlog.testing.capture_logs() as logs:
        for i in range(MAX_PENDING + 5):
            reader.present(f"{i:08X}")
    assert reader.pending == MAX_PENDING and reader.dropped == 5
    drops = [e for e in logs if e["event"] == "card_presentation_dropped"]
    assert [e["uid"] for e in drops] == [f"{i:08X}" for i in range(MAX_PENDING, MAX_PENDING + 5)]
    assert all(e["reader"] == "front" and e["log_level"] == "warning" for e in drops)
    seen = await collect(reader, MAX_PENDING)
    assert [c.uid for c in seen] == [f"{i:08X}" for i in range(MAX_PENDING)]  # the first ones, in order, once each
