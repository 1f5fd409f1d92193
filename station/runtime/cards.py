"""The card readers of the station: each one read for the runtime's whole life, its cards handed to the runtime.

One card at a time per reader: a card presented while the previous one of the same reader is still being
authorized is dropped (and logged), as a real terminal ignores taps while it shows "please wait". A reader that
cannot be used (absent, pcscd down) is tried again with a growing pause; its problem is shown in diagnostics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from station.cards.interface import CardPresented, CardReader, CardReaderError
from station.core.model import Outcome
from station.runtime.supervisor import Supervisor, Work

log = structlog.get_logger("station.runtime.cards")

MAX_RETRY_DELAY = 60.0


@dataclass(frozen=True)
class Desk:
    reader: CardReader
    evse_ids: tuple[int, ...] | None  # None: one reader for every EVSE


class CardDesk:
    def __init__(
        self,
        desks: list[Desk],
        present: Callable[[str, tuple[int, ...] | None], Awaitable[Outcome]],
        supervisor: Supervisor,
    ) -> None:
        self.desks = desks
        self.present = present  # the runtime's present_card
        self.supervisor = supervisor
        self.problems: dict[str, str] = {}  # reader name -> why it cannot be used now
        self.last: dict[str, str] = {}  # reader name -> what the last card did
        self._busy: set[str] = set()

    def start(self) -> None:
        for desk in self.desks:
            self.supervisor.spawn(self._read(desk), Work.LOOP, f"card reader {desk.reader.name}")

    async def _read(self, desk: Desk) -> None:
        name = desk.reader.name
        delay = 1.0
        while True:
            try:
                await desk.reader.run(lambda card: self._presented(card, desk))
                return
            except CardReaderError as exc:
                self.problems[name] = str(exc)
                log.warning("card reader cannot be used; trying again", reader=name, error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)

    def _presented(self, card: CardPresented, desk: Desk) -> None:
        name = desk.reader.name
        self.problems.pop(name, None)
        if name in self._busy:
            log.info("card ignored: the previous card of this reader is still being handled", reader=name)
            return
        self._busy.add(name)
        self.supervisor.spawn(self._handle(card, desk), Work.CARD, f"card at {name}")

    async def _handle(self, card: CardPresented, desk: Desk) -> None:
        name = desk.reader.name
        try:
            outcome = await self.present(card.uid, desk.evse_ids)
            self.last[name] = "accepted" if outcome.accepted else f"refused: {outcome.reason}"
            log.info("card handled", reader=name, accepted=outcome.accepted, reason=outcome.reason)
        finally:
            self._busy.discard(name)
