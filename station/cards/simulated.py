"""A simulated card reader: a call puts a card on it (`station sim ev ... card UID`, the tests); each is delivered once.

The queue between `present()` and `run()` is bounded: a flood of presentations (a script gone wrong, a hostile
control-socket client) keeps the first `MAX_PENDING` and drops the rest, each drop logged, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from station.cards.interface import CardPresented, CardReader, normalise_uid

log = structlog.get_logger("station.cards.simulated")

MAX_PENDING = 16  # presentations waiting for run() to deliver them


class SimulatedCardReader(CardReader):
    def __init__(self, name: str) -> None:
        self.name = name
        self._pending: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_PENDING)
        self.dropped = 0  # presentations dropped because MAX_PENDING were waiting

    def present(self, uid: str) -> str:
        """Puts a card on the reader; returns its UID as the CSMS will see it (upper-case hex). ValueError for
        anything that is not a 4, 7 or 10 byte UID. A presentation beyond MAX_PENDING waiting ones is dropped (logged,
        counted in `dropped`), as a real reader misses a card swiped while it is busy."""
        card = normalise_uid(uid)
        try:
            self._pending.put_nowait(card)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("card_presentation_dropped", reader=self.name, uid=card, pending=MAX_PENDING)
        return card

    @property
    def pending(self) -> int:
        return self._pending.qsize()

    async def run(self, presented: Callable[[CardPresented], None]) -> None:
        while True:
            uid = await self._pending.get()
            log.info("card_presented", reader=self.name, uid=uid)
            presented(CardPresented(uid=uid, reader=self.name))
