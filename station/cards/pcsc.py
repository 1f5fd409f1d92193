"""PC/SC card readers (USB contactless readers: ACR122U, Identiv, HID Omnikey, ...) through pcscd and pyscard.

A thread of its own watches the reader with SCardGetStatusChange (each wait at most `poll_interval`, so it notices a
stop soon), never the event loop. When a card arrives it connects, sends the PC/SC part 3 pseudo-APDU GET DATA
(`FF CA 00 00 00`: the card's UID, answered by the reader itself), normalises the UID and hands it to the loop. A card
is reported once per presentation: not again while it stays on the reader (pcsc-lite's event counter in the upper
16 bits of the reader state tells a card taken off and put back between two waits from one that stayed).

pyscard is an optional dependency (`pip install 'station[pcsc]'`, which builds against libpcsclite-dev with swig);
this module is imported only when a `[[card_reader]]` says `driver = "pcsc"` (station/cards/drivers.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import structlog
from smartcard import scard

from station.cards.interface import CardPresented, CardReader, CardReaderError, normalise_uid

log = structlog.get_logger("station.cards.pcsc")

GET_UID = [0xFF, 0xCA, 0x00, 0x00, 0x00]  # PC/SC part 3, 3.2.2.1.3 GET DATA, P1 = 00: the UID; Le = 00: all of it
SW_OK = b"\x90\x00"
SW_NOT_SUPPORTED = (b"\x6a\x81", b"\x6d\x00", b"\x6e\x00")  # function / instruction / class not supported
MAX_NAME_SHOWN = 80  # a reader name from pcscd, cut in messages


def _code(hresult: int) -> int:
    return hresult & 0xFFFFFFFF  # pyscard returns PC/SC codes as signed or unsigned ints, depending on the platform


SUCCESS = _code(scard.SCARD_S_SUCCESS)
TIMEOUT = _code(scard.SCARD_E_TIMEOUT)
CANCELLED = _code(scard.SCARD_E_CANCELLED)
SERVICE_GONE = {_code(scard.SCARD_E_NO_SERVICE), _code(scard.SCARD_E_SERVICE_STOPPED)}
READER_GONE = {
    _code(scard.SCARD_E_UNKNOWN_READER),
    _code(scard.SCARD_E_READER_UNAVAILABLE),
    _code(scard.SCARD_E_NO_READERS_AVAILABLE),
}
NO_READERS = _code(scard.SCARD_E_NO_READERS_AVAILABLE)
STATE_GONE = scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE | scard.SCARD_STATE_IGNORE


def _message(hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult)} (0x{_code(hresult):08X})"


def _shown(name: str) -> str:
    return repr(name[:MAX_NAME_SHOWN] + ("..." if len(name) > MAX_NAME_SHOWN else ""))


class PcscCardReader(CardReader):
    def __init__(self, name: str, reader: str = "", *, poll_interval: float = 0.25) -> None:
        """`reader`: part of the PC/SC reader's name as pcsc_scan shows it (case-insensitive; "" = the first reader
        pcscd lists). `poll_interval`: the longest wait for a reader event, in seconds; a stop takes at most this."""
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.name = name
        self.reader = reader
        self.poll_interval = poll_interval

    async def run(self, presented: Callable[[CardPresented], None]) -> None:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        stop = threading.Event()

        def deliver(uid: str) -> None:  # on the loop
            if stop.is_set() or finished.done():
                return
            try:
                presented(CardPresented(uid=uid, reader=self.name))
            except Exception as exc:
                finished.set_exception(exc)

        def finish(exc: BaseException | None) -> None:  # on the loop
            if finished.done():
                return
            if exc is None:
                finished.set_result(None)
            else:
                finished.set_exception(exc)

        def post(callback: Callable[..., None], *args: Any) -> None:  # from the thread
            if stop.is_set():
                return
            try:
                loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                stop.set()

        def work() -> None:
            try:
                self._watch(stop, lambda uid: post(deliver, uid))
            except CardReaderError as exc:
                post(finish, exc)
            except Exception as exc:  # pyscard or pcscd surprised us: a clear error, never a dead thread unnoticed
                post(finish, CardReaderError(f"card reader {self.name}: unexpected PC/SC failure: {exc!r}"))
            else:
                post(finish, None)

        thread = threading.Thread(target=work, name=f"pcsc-{self.name}", daemon=True)
        thread.start()
        try:
            await finished
        finally:
            stop.set()  # the thread sees it within poll_interval and releases its PC/SC context

    # ------------------------------------------------------------------ the thread

    def _watch(self, stop: threading.Event, found: Callable[[str], None]) -> None:
        hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if _code(hresult) != SUCCESS:
            raise CardReaderError(
                f"card reader {self.name}: the PC/SC service is not reachable: {_message(hresult)}; is pcscd "
                "running? (systemctl status pcscd.socket pcscd; it comes with the pcscd package)"
            )
        try:
            reader = self._choose(context)
            log.info("card_reader_opened", reader=self.name, pcsc_reader=reader)
            self._wait_for_cards(context, reader, stop, found)
        finally:
            scard.SCardReleaseContext(context)

    def _choose(self, context: Any) -> str:
        hresult, readers = scard.SCardListReaders(context, [])
        if _code(hresult) == NO_READERS or (_code(hresult) == SUCCESS and not readers):
            raise CardReaderError(
                f"card reader {self.name}: pcscd sees no reader; is it plugged in? (a USB reader needs the CCID "
                "driver, package libccid; pcsc_scan lists the readers pcscd sees)"
            )
        if _code(hresult) in SERVICE_GONE:
            raise self._service_gone(hresult)
        if _code(hresult) != SUCCESS:
            raise CardReaderError(f"card reader {self.name}: cannot list the PC/SC readers: {_message(hresult)}")
        names = [str(r) for r in readers]
        for candidate in names:
            if self.reader.lower() in candidate.lower():
                return candidate
        listed = ", ".join(_shown(n) for n in names[:8]) + (" ..." if len(names) > 8 else "")
        raise CardReaderError(
            f"card reader {self.name}: no PC/SC reader's name contains {self.reader!r}; pcscd sees {listed} "
            "(pcsc_scan lists them; set the card reader's device to part of one, or check the reader is plugged in)"
        )

    def _wait_for_cards(self, context: Any, reader: str, stop: threading.Event, found: Callable[[str], None]) -> None:
        timeout_ms = max(1, round(self.poll_interval * 1000))
        current = scard.SCARD_STATE_UNAWARE
        handled: int | None = None  # the reader's event counter when the card on it was read; None: no card
        while not stop.is_set():
            hresult, states = scard.SCardGetStatusChange(context, timeout_ms, [(reader, current)])
            code = _code(hresult)
            if code == TIMEOUT:
                continue
            if code == CANCELLED:
                return
            if code in SERVICE_GONE:
                raise self._service_gone(hresult)
            if code in READER_GONE:
                raise self._unplugged(reader, _message(hresult))
            if code != SUCCESS:
                raise self._failure(context, reader, hresult, stop)
            event = int(states[0][1])
            current = event & ~scard.SCARD_STATE_CHANGED
            if event & STATE_GONE:
                raise self._unplugged(reader, f"reader state 0x{event & 0xFFFF:04X}")
            counter = (event >> 16) & 0xFFFF  # pcsc-lite: card insertions and removals so far
            if event & scard.SCARD_STATE_PRESENT and not event & scard.SCARD_STATE_MUTE:
                if handled is None or counter != handled:
                    handled = counter
                    uid = self._read_uid(context, reader)
                    if uid is not None:
                        found(uid)
            else:
                handled = None

    def _failure(self, context: Any, reader: str, hresult: int, stop: threading.Event) -> CardReaderError:
        """What an unexpected answer to a wait means: pcscd shutting down answers its waiting clients with all sorts
        of codes (Access denied, ...), so ask again after a moment whether pcscd and the reader are still there."""
        stop.wait(self.poll_interval)
        probe, readers = scard.SCardListReaders(context, [])
        if _code(probe) in SERVICE_GONE:
            return self._service_gone(probe)
        if _code(probe) == NO_READERS or (_code(probe) == SUCCESS and reader not in readers):
            return self._unplugged(reader, _message(hresult))
        return CardReaderError(f"card reader {self.name}: waiting for a card failed: {_message(hresult)}")

    def _service_gone(self, hresult: int) -> CardReaderError:
        return CardReaderError(
            f"card reader {self.name}: pcscd went away: {_message(hresult)}; is pcscd running? (systemctl status pcscd)"
        )

    def _unplugged(self, reader: str, why: str) -> CardReaderError:
        return CardReaderError(
            f"card reader {self.name}: PC/SC reader {_shown(reader)} is gone ({why}); unplugged? Plug it in again "
            "(pcsc_scan shows whether pcscd sees it; check the card reader's device names it)"
        )

    def _read_uid(self, context: Any, reader: str) -> str | None:
        """The UID of the card on the reader, or None (logged) when the card cannot be read: taken off too soon, a
        reader without GET DATA, an answer that is not a UID."""
        hresult, card, protocol = scard.SCardConnect(
            context, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        if _code(hresult) != SUCCESS:
            log.warning("card_read_failed", reader=self.name, step="connect", error=_message(hresult))
            return None
        try:
            hresult, response = scard.SCardTransmit(card, protocol, GET_UID)
            if _code(hresult) != SUCCESS:
                log.warning("card_read_failed", reader=self.name, step="get_uid", error=_message(hresult))
                return None
            answer = bytes(response)
            if answer[-2:] != SW_OK:
                advice = (
                    "the reader does not implement PC/SC GET DATA (FF CA); it is not a PC/SC part 3 reader"
                    if answer[-2:] in SW_NOT_SUPPORTED
                    else "the card did not give its UID"
                )
                log.warning("card_read_failed", reader=self.name, step="get_uid", sw=answer[-2:].hex(), advice=advice)
                return None
            try:
                return normalise_uid(answer[:-2])
            except ValueError as exc:
                log.warning("card_read_failed", reader=self.name, step="uid", error=str(exc))
                return None
        finally:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
