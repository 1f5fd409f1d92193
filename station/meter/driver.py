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

    async def command(
        self, register: int, value: int, took_effect: Callable[[], Awaitable[bool]], *, fc16: bool = False
    ) -> None:
        """Write `value` to the command `register` (FC06, or FC16 of one register where the meter takes only that): a
        command the meter carries out once (start or end a transaction), written without the bus's retry (`once`).
        When its answer is lost (or refused), whether it took effect is read from the meter rather than taken from
        the error: the meter may have carried out the first copy, and a repeat is refused (a start: "already
        running") or worse (a stop to an idle Iskra hides its signed record). A start taken for refused leaves the
        meter running a transaction that nobody ends. Not carried out after a lost answer: sent once more."""
        for attempt in (1, 2):
            try:
                if fc16:
                    await self.device.write_registers(register, [value], once=True)
                else:
                    await self.device.write_register(register, value, once=True)
                return
            except MeterError as exc:
                done = await self._read_back(took_effect)
                if done is None:
                    raise exc from None
                if done:
                    log.warning("the meter's answer to a command was lost; it took effect", error=str(exc)[:200])
                    return
                if attempt == 2 or isinstance(exc, MeterRefused):
                    raise

    async def _read_back(self, took_effect: Callable[[], Awaitable[bool]], attempts: int = 3) -> bool | None:
        """Whether a command took effect; None when the meter does not say. A meter whose answer was late may still
        be busy with the command: asked a few times, `poll_interval` apart (each read with the bus's retries)."""
        for attempt in range(attempts):
            try:
                return await took_effect()
            except MeterError:
                if attempt + 1 < attempts:
                    await asyncio.sleep(self.poll_interval)
        return None

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
