"""The PC/SC card reader through the real stack: pyscard -> libpcsclite -> our pcscd -> vpcd -> a virtual card.

The virtual card is served by this test's event loop, so each test also shows the reader never blocks the loop: if it
did, the card could not answer pcscd and nothing would be read.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from station.cards.interface import CardPresented, CardReaderError
from tests.cards.pcsc_stack import SLOT_NAMES, Pcscd, VirtualCard, missing

UID = bytes.fromhex("04A1B2C3D4E5F6")


@pytest.fixture(scope="session")
def pcsc_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per test process for pcscd's socket: the client library reads PCSCLITE_CSOCK_NAME once."""
    why = missing()
    if why:
        if os.environ.get("STATION_CI"):
            pytest.fail(f"the PC/SC stack is missing but STATION_CI is set (.ci/run installs it): {why}")
        pytest.skip(f"PC/SC test stack: {why}")
    home = tmp_path_factory.mktemp("pcsc")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(home / "run" / "pcscd.comm")
    return home


@pytest.fixture
def pcscd(pcsc_home: Path) -> Iterator[Pcscd]:
    daemon = Pcscd(pcsc_home)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


class Seen:
    """What the reader reported, and the error it ended with."""

    def __init__(self) -> None:
        self.cards: list[CardPresented] = []
        self.changed = asyncio.Event()

    def __call__(self, card: CardPresented) -> None:
        self.cards.append(card)
        self.changed.set()

    async def until(self, count: int, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while len(self.cards) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Reader tasks the test starts; cancelled at its end, and their threads must end too."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await threads_gone()


async def threads_gone() -> None:
    """Every reader thread has ended (each notices its stop within its poll interval)."""
    for thread in [t for t in threading.enumerate() if t.name.startswith("pcsc-")]:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive(), f"{thread.name} still runs"


async def test_a_card_is_reported_once_per_presentation(pcscd: Pcscd, running: list[asyncio.Task[None]]) -> None:
    from station.cards.pcsc import PcscCardReader

    seen = Seen()
    running.append(asyncio.create_task(PcscCardReader("front", "00 00", poll_interval=0.05).run(seen)))
    card = VirtualCard(UID)
    await card.insert(pcscd.port)
    await seen.until(1)
    assert seen.cards == [CardPresented(uid="04A1B2C3D4E5F6", reader="front")]
    assert card.apdus == [bytes.fromhex("FFCA000000")]
    # The card stays on the reader while pcscd polls it several more times: no second report, no second read.
    polled = card.atr_requests
    await card.wait_for(lambda c: c.atr_requests >= polled + 4)
    assert len(seen.cards) == 1 and len(card.apdus) == 1
    # Taken off and put back: a new presentation of the same card.
    await card.remove()
    await asyncio.to_thread(pcscd.wait_card, 0, present=False)
    await card.insert(pcscd.port)
    await seen.until(2)
    assert seen.cards[1] == CardPresented(uid="04A1B2C3D4E5F6", reader="front")
    await card.remove()
    await asyncio.to_thread(pcscd.wait_card, 0, present=False)
    other = VirtualCard(bytes.fromhex("DEADBEEF"))
    await other.insert(pcscd.port)
    await seen.until(3)
    assert seen.cards[2] == CardPresented(uid="DEADBEEF", reader="front")
    await other.remove()


async def test_the_device_picks_the_reader_and_empty_is_the_first(
    pcscd: Pcscd, running: list[asyncio.Task[None]]
) -> None:
    from station.cards.pcsc import PcscCardReader

    first, second = Seen(), Seen()
    running.append(asyncio.create_task(PcscCardReader("first", "").run(first)))
    running.append(asyncio.create_task(PcscCardReader("second", "virtual pcd 00 01", poll_interval=0.05).run(second)))
    on_second = VirtualCard(bytes.fromhex("0102030405060708090A"))
    await on_second.insert(pcscd.port + 1)
    await second.until(1)
    assert second.cards == [CardPresented(uid="0102030405060708090A", reader="second")]
    on_first = VirtualCard(UID)
    await on_first.insert(pcscd.port)
    await first.until(1)
    assert first.cards == [CardPresented(uid="04A1B2C3D4E5F6", reader="first")]
    assert len(second.cards) == 1  # each reader reports only its own cards
    await on_first.remove()
    await on_second.remove()


async def test_an_unknown_reader_name_says_which_readers_there_are(pcscd: Pcscd) -> None:
    from station.cards.pcsc import PcscCardReader

    with pytest.raises(CardReaderError) as caught:
        await asyncio.wait_for(PcscCardReader("front", "ACR122").run(Seen()), 15)
    text = str(caught.value)
    assert "card reader front: no PC/SC reader's name contains 'ACR122'" in text
    assert all(repr(name) in text for name in SLOT_NAMES) and "pcsc_scan" in text
    await threads_gone()


async def test_without_pcscd_the_error_asks_whether_it_runs(pcsc_home: Path) -> None:
    from station.cards.pcsc import PcscCardReader

    assert not (pcsc_home / "run" / "pcscd.comm").exists()  # the per-test pcscd of an earlier test has gone
    with pytest.raises(
        CardReaderError, match=r"card reader front: the PC/SC service is not reachable.*is pcscd running"
    ):
        await asyncio.wait_for(PcscCardReader("front").run(Seen()), 15)
    await threads_gone()


async def test_pcscd_going_away_ends_the_reader_with_advice(pcscd: Pcscd) -> None:
    from station.cards.pcsc import PcscCardReader

    task = asyncio.create_task(PcscCardReader("front", poll_interval=0.05).run(Seen()))
    card = VirtualCard(UID)
    await card.insert(pcscd.port)
    await card.wait_for(lambda c: len(c.apdus) == 1)  # the reader is up and has read the card
    await asyncio.to_thread(pcscd.stop)
    with pytest.raises(CardReaderError, match=r"card reader front: pcscd went away.*is pcscd running"):
        await asyncio.wait_for(task, 15)
    await card.remove()
    await threads_gone()


async def test_a_reader_pcscd_no_longer_knows_is_reported_unplugged(pcscd: Pcscd) -> None:
    """After a USB reader is pulled, pcsc-lite's client answers a wait on its name with SCARD_STATE_UNKNOWN |
    UNAVAILABLE (winscard_clnt.c: a reader name not in pcscd's list). vpcd's readers cannot be unplugged, so the wait is
    given a name pcscd does not know, through the real stack, which is what the client sees after an unplug."""
    from smartcard import scard

    from station.cards.pcsc import PcscCardReader

    front = PcscCardReader("front", poll_interval=0.05)
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hresult == scard.SCARD_S_SUCCESS
    try:
        with pytest.raises(CardReaderError) as caught:
            await asyncio.to_thread(front._wait_for_cards, context, "ACS ACR122U 00 00", threading.Event(), print)
    finally:
        scard.SCardReleaseContext(context)
    assert str(caught.value).startswith("card reader front: PC/SC reader 'ACS ACR122U 00 00' is gone")
    assert "unplugged? Plug it in again" in str(caught.value) and "pcsc_scan" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        (bytes.fromhex("6A81"), {"step": "get_uid", "sw": "6a81"}),  # a reader without GET DATA
        (bytes.fromhex("0102030405") + b"\x90\x00", {"step": "uid"}),  # 5 bytes: not an ISO 14443 UID
        (b"\x01" * 200 + b"\x90\x00", {"step": "uid"}),
    ],
)
async def test_a_card_that_gives_no_uid_is_logged_and_the_reader_goes_on(
    pcscd: Pcscd, running: list[asyncio.Task[None]], answer: bytes, logged: dict[str, str]
) -> None:
    from station.cards.pcsc import PcscCardReader

    seen = Seen()
    with structlog.testing.capture_logs() as logs:
        running.append(asyncio.create_task(PcscCardReader("front", poll_interval=0.05).run(seen)))
        bad = VirtualCard(UID, answer=answer)
        await bad.insert(pcscd.port)
        await bad.wait_for(lambda c: len(c.apdus) == 1)
        polled = bad.atr_requests
        await bad.wait_for(lambda c: c.atr_requests >= polled + 2)
        await bad.remove()
        await asyncio.to_thread(pcscd.wait_card, 0, present=False)
        good = VirtualCard(UID)
        await good.insert(pcscd.port)
        await seen.until(1)
        await good.remove()
    assert seen.cards == [CardPresented(uid="04A1B2C3D4E5F6", reader="front")]
    assert not any(t.done() for t in running)
    failures = [e for e in logs if e["event"] == "card_read_failed"]
    assert len(failures) == 1 and failures[0].items() >= (logged | {"reader": "front"}).items(), failures
    if logged.get("sw") == "6a81":
        assert "does not implement PC/SC GET DATA" in failures[0]["advice"]


async def test_cancelling_the_reader_ends_its_thread(pcscd: Pcscd) -> None:
    from station.cards.pcsc import PcscCardReader

    task = asyncio.create_task(PcscCardReader("front", poll_interval=0.05).run(Seen()))
    for _ in range(3):
        await asyncio.sleep(0)  # run() starts its thread before its first wait
    assert any(t.name == "pcsc-front" and t.is_alive() for t in threading.enumerate())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await threads_gone()


def test_poll_interval_must_be_positive(pcsc_home: Path) -> None:
    from station.cards.pcsc import PcscCardReader

    with pytest.raises(ValueError, match="poll_interval"):
        PcscCardReader("front", poll_interval=0)
