"""A card reader from its `[[card_reader]]` table. The PC/SC driver (and pyscard) is imported only when configured."""

from __future__ import annotations

from station.cards.interface import CardReader, CardReaderError
from station.config import CardReaderConfig


def build_card_reader(config: CardReaderConfig) -> CardReader:
    """The reader `config` describes. CardReaderError when its driver cannot be loaded (pyscard not installed)."""
    if config.driver == "simulated":
        from station.cards.simulated import SimulatedCardReader

        return SimulatedCardReader(config.name)
    if config.driver == "pcsc":
        try:
            from station.cards.pcsc import PcscCardReader
        except ImportError as exc:
            raise CardReaderError(
                f"card reader {config.name}: the PC/SC driver needs pyscard ({exc}); install it with "
                "pip install 'station[pcsc]' (building it needs swig and libpcsclite-dev; running it needs pcscd)"
            ) from None
        return PcscCardReader(config.name, config.device)
    raise CardReaderError(f"card reader {config.name}: unknown driver {config.driver!r}")
