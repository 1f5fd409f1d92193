"""The card reader contract: a reader reports each card presented to it, as an identifier OCPP can carry."""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_UID_BYTES = 10  # ISO/IEC 14443-3: UIDs are 4, 7 or 10 bytes
UID_HEX = re.compile(r"^[0-9A-F]{8}$|^[0-9A-F]{14}$|^[0-9A-F]{20}$")


class CardReaderError(Exception):
    """The reader cannot be used (absent, refused); the message says which and what to check."""


@dataclass(frozen=True)
class CardPresented:
    uid: str  # upper-case hex, as OCPP idTag / idToken ISO14443 carries it
    reader: str  # the reader's name in the config


def normalise_uid(raw: str | bytes) -> str:
    """A card UID as upper-case hex (the form 1.6 idTag and 2.0.1 idToken type ISO14443 use); ValueError for
    anything that is not a 4, 7 or 10 byte UID."""
    text = raw.hex() if isinstance(raw, bytes) else raw.strip().replace(":", "").replace(" ", "")
    text = text.upper()
    if not UID_HEX.match(text):
        raise ValueError(f"not a card UID (4, 7 or 10 bytes in hex): {text[:40]!r}")
    return text


class CardReader(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    async def run(self, presented: Callable[[CardPresented], None]) -> None:
        """Read cards until cancelled; each card presented goes to `presented` once per presentation. Raises
        CardReaderError when the reader cannot be used (the runtime logs it and tries again later)."""
