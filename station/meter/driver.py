"""What the Modbus drivers share: the device they talk to on its bus, and register tables overridable from config."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import structlog

from station.bus import ModbusDevice, urgent
from station.meter.interface import Meter, MeterError, MeterRefused

log = structlog.get_logger("station.meter")


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


T = TypeVar("T")


MAX_SCALE_EXPONENT = 12  # SunSpec scale factors are -10..10; a meter's decimal exponent beyond this is garbage


def scaled(value: float, exponent: int, what: str) -> float:
    """`value` times ten to the `exponent` a meter reports beside it (SunSpec sf, Iskra energy exponent); a refusal,
    not an overflow, when the exponent cannot be real (wrong register map, a corrupted read)."""
    if not -MAX_SCALE_EXPONENT <= exponent <= MAX_SCALE_EXPONENT:
        raise MeterRefused(f"{what}: scale exponent {exponent} is out of range; wrong register map or model?")
    return value * 10.0**exponent


def _no_failure(_: object) -> str | None:
    return None


class ModbusMeter(Meter):
    """A meter reached as a `ModbusDevice` on a (possibly shared) bus."""

    poll_interval: float = 0.1

    def __init__(self, device: ModbusDevice, **_: Any) -> None:
        self.device = device

    def set_link_listener(self, listener: Callable[[bool, str], None]) -> None:
        self.device.on_link_change = listener

    async def open(self) -> None:
        await self.device.open()

    async def close(self) -> None:
        await self.device.close()

    def transaction_work(self) -> contextlib.AbstractContextManager[None]:
        """Every frame of the block goes onto the bus ahead of the neighbours' sampling (station.bus.urgent)."""
        return urgent()

    async def start_command(self, send: Callable[[], Awaitable[object]]) -> None:
        """Send the command that starts a transaction (the meter was seen idle just before). The meter starts on the
        first copy it gets; when that copy's answer is lost, the bus sends it again and the meter, running now,
        refuses the repeat (or the line gives out). Whether it started is then read from the meter rather than taken
        from the refusal: a start taken for refused leaves the meter running a transaction that nobody ends, and
        every later start refused because the meter is not idle."""
        try:
            await send()
        except MeterError as exc:
            try:
                running = await self.transaction_running()
            except MeterError:
                raise exc from None
            if not running:
                raise
            log.warning("the meter's answer to the start command was lost; it started", error=str(exc)[:200])

    async def poll_until(
        self,
        read: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        *,
        timeout: float,
        what: str,
        failure: Callable[[T], str | None] = _no_failure,
        describe: Callable[[T], str] = str,
    ) -> T:
        """Read every `poll_interval` until `done`. A value `failure` explains raises at once; past `timeout` the
        last value, as `describe` puts it, goes into the error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await read()
            if done(value):
                return value
            problem = failure(value)
            if problem is not None:
                raise MeterRefused(problem)
            if loop.time() > deadline:
                raise MeterRefused(f"meter did not {what} within {timeout:.0f} s ({describe(value)})")
            await asyncio.sleep(self.poll_interval)
