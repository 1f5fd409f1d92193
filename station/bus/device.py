"""One Modbus device (a meter) on a shared bus: its unit id, its own health and counters, and the request API the
drivers use.

Health is per device, not per line: a device that does not answer is marked down by its own timeouts while its
neighbour on the same line keeps answering and stays up. Only a port that cannot be opened at all marks every
device of the bus down, since then none of them can be reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from station.bus.codec import MAX_READ_REGISTERS, MAX_WRITE_REGISTERS
from station.bus.line import ModbusBus

log = structlog.get_logger("station.bus")

MIN_UNIT_ID = 1  # 0 is broadcast: nobody answers it
MAX_UNIT_ID = 247  # 248-255 are reserved (Modbus over serial line V1.02 §2.2)


class ModbusDevice:
    """A checked, serialised Modbus client for one device id on `bus`.

    `latency` is the device's worst-case time to answer beyond the wire time; it sets this device's timeouts and
    how long the line stays quiet after it missed an answer.
    """

    def __init__(
        self,
        bus: ModbusBus,
        unit_id: int,
        *,
        latency: float = 0.3,
        on_link_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        if not MIN_UNIT_ID <= unit_id <= MAX_UNIT_ID:
            raise ValueError(f"Modbus device id {unit_id} is out of range {MIN_UNIT_ID}..{MAX_UNIT_ID}")
        if latency < 0:
            raise ValueError(f"device latency {latency} s is negative")
        self.bus = bus
        self.unit_id = unit_id
        self.latency = latency
        self.on_link_change = on_link_change
        self.up: bool | None = None
        self.last_error = ""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0
        self.failures = 0
        bus.attach(self)

    def __repr__(self) -> str:
        return f"ModbusDevice({self.bus.settings.port!r}, unit_id={self.unit_id})"

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Hold the bus open for this device (idempotent). Does not fail when the port is absent: the device is
        marked down and its first request says why."""
        await self.bus.open(self)

    async def close(self) -> None:
        """Let go of the bus (idempotent); the port stays open while a neighbour still holds it."""
        await self.bus.close(self)

    def mark(self, up: bool, reason: str) -> None:
        """Record this device's health; `on_link_change` hears only changes."""
        if self.up is up:
            return
        self.up = up
        log.info(
            "meter link up" if up else "meter link down",
            reason=reason,
            port=self.bus.settings.port,
            device_id=self.unit_id,
        )
        if self.on_link_change is not None:
            self.on_link_change(up, reason)

    # ------------------------------------------------------------------ requests

    async def read_holding(self, address: int, count: int) -> list[int]:
        return await self._read(3, address, count)

    async def read_input(self, address: int, count: int) -> list[int]:
        return await self._read(4, address, count)

    async def _read(self, fc: int, address: int, count: int) -> list[int]:
        """Read any number of registers in the largest blocks the protocol allows; each block is its own frame, so
        more urgent work of a neighbour may go between two blocks."""
        out: list[int] = []
        pos = address
        while pos < address + count:
            n = min(MAX_READ_REGISTERS, address + count - pos)
            out.extend(await self.bus.exchange(self, fc, pos, n, None))
            pos += n
        return out

    async def write_registers(self, address: int, values: Sequence[int], *, once: bool = False) -> None:
        """`once`: a command the device carries out on receipt, sent without the bus's retry after a lost answer (a
        repeat could be refused, or done twice); the driver reads back whether it took effect (ModbusMeter.command)."""
        pos = 0
        while pos < len(values):
            chunk = list(values[pos : pos + MAX_WRITE_REGISTERS])
            await self.bus.exchange(self, 16, address + pos, len(chunk), chunk, once=once)
            pos += len(chunk)

    async def write_register(self, address: int, value: int, *, once: bool = False) -> None:
        await self.bus.exchange(self, 6, address, 1, [value], once=once)
