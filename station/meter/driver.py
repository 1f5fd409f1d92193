"""What the Modbus drivers share: the link they talk through, and register tables overridable from config."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Self

from station.meter.interface import Meter
from station.meter.link import ModbusLink


class RegisterTable:
    """Mixin for a frozen dataclass of register addresses: `with_overrides` applies `[meter.registers]`."""

    VENDOR = "meter"

    @classmethod
    def with_overrides(cls, overrides: dict[str, int]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.VENDOR} register name(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(cls(), **overrides)  # type: ignore[type-var]


class ModbusMeter(Meter):
    """A meter reached through a checked `ModbusLink`."""

    def __init__(self, link: ModbusLink, **_: Any) -> None:
        self.link = link

    def set_link_listener(self, listener: Callable[[bool, str], None]) -> None:
        self.link.on_link_change = listener

    async def open(self) -> None:
        await self.link.open()

    async def close(self) -> None:
        await self.link.close()
