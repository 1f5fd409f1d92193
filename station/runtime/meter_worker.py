"""One EVSE's meter as the runtime uses it: its state for diagnostics, and the meter procedures with their retries.

A worker owns its EVSE's `MeterState` (nothing else writes it). A stop is retried until the meter delivers the signed
record (a lost record is lost money); a release is retried until the meter has freed the record (a meter that keeps
one refuses the next transaction); a start waits for the previous release of the same meter, never for a neighbour's.
Transaction procedures run as transaction work (`Meter.transaction_work`), so on a shared bus they go before the
neighbours' sampling reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from station.core.model import MeterStamp, SignedMeterRecord
from station.meter.interface import (
    LiveValues,
    Meter,
    MeterError,
    MeterLinkError,
    MeterRefused,
    MeterState,
    MeterTransactionEnded,
    MeterTransactionRequest,
    MeterTransactionStarted,
)

log = structlog.get_logger("station.runtime.meter")

MAX_RETRY_DELAY = 30.0


class MeterWorker:
    def __init__(
        self,
        evse_id: int,
        meter: Meter,
        state: MeterState | None = None,
        *,
        retry_delay: float = 1.0,
        monitor_interval: float = 5.0,
    ) -> None:
        self.evse_id = evse_id
        self.meter = meter
        self.state = state if state is not None else MeterState()
        self.retry_delay = retry_delay
        self.monitor_interval = monitor_interval
        self._releases: set[asyncio.Task[None]] = set()
        self._log = log.bind(evse_id=evse_id)

    # ------------------------------------------------------------------ lifecycle

    async def open(self, on_link_change: Callable[[int, bool, str], None]) -> None:
        """Open the meter and learn who it is; `on_link_change(evse_id, up, reason)` hears of every link change."""

        def changed(up: bool, reason: str) -> None:
            self.state.link_up = up
            if not up:
                self.state.last_error = reason
            on_link_change(self.evse_id, up, reason)

        self.meter.set_link_listener(changed)
        await self.meter.open()
        await self._identify()

    async def learn_key(self) -> None:
        """After open(): the public key and a first reading. A meter that did not say who it is is left to the
        monitor, which learns all of it once the meter answers."""
        if self.state.identity is None:
            return
        try:
            self.state.public_key_hex = await self.meter.public_key()
            self.state.live = await self.meter.live_values()
            self.state.link_up = True
            self.state.last_error = ""
        except MeterError as exc:
            self._unreadable(exc)

    async def close(self) -> None:
        await self.meter.close()

    async def refresh_info(self) -> None:
        """Identity, key and a first reading; a meter swapped while the daemon was down shows its new identity."""
        if await self._identify():
            await self.learn_key()

    async def _identify(self) -> bool:
        try:
            self.state.identity = await self.meter.identity()
        except MeterError as exc:
            self._unreadable(exc)
            return False
        return True

    def _unreadable(self, exc: MeterError) -> None:
        self.state.last_error = str(exc)
        self._log.warning("meter not readable", error=str(exc))

    def stamp(self) -> MeterStamp | None:
        """Which meter this is, for the transaction it starts (None until the meter has told who it is)."""
        identity = self.state.identity
        if identity is None:
            return None
        return MeterStamp(identity.model, identity.serial_number, identity.firmware_version, self.state.public_key_hex)

    # ------------------------------------------------------------------ transactions

    async def start(self, request: MeterTransactionRequest) -> MeterTransactionStarted:
        """Start on the meter (raises MeterError). The meter takes a new transaction only once the previous record
        is released, so a release of this meter in flight is waited for first."""
        if self._releases:
            await asyncio.wait(list(self._releases))
        if self.state.identity is None:
            await self.refresh_info()  # a meter powered late: learn its key before it signs anything
        with self.meter.transaction_work():
            return await self.meter.start_transaction(request)

    async def stop(self, tx_ref: str) -> MeterTransactionEnded:
        """End the transaction on the meter and collect its signed record, retrying until the meter delivers."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.meter.transaction_work():
                    return await self.meter.stop_transaction(tx_ref)
            except MeterError as exc:
                delay = self._retry_delay(attempt)
                level = self._log.warning if isinstance(exc, MeterLinkError) else self._log.error
                level("meter stop failed; retrying", tx_ref=tx_ref, attempt=attempt, error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)

    async def release(self, tx_ref: str) -> None:
        """Tell the meter it may forget a record the store now holds; retried until it works."""
        task = asyncio.current_task()
        if task is not None:
            self._releases.add(task)
        try:
            attempt = 0
            while True:
                try:
                    with self.meter.transaction_work():
                        await self.meter.release_record(tx_ref)
                    return
                except MeterRefused as exc:
                    self._log.warning(
                        "meter refused to release the record; it stays in the meter", tx_ref=tx_ref, error=str(exc)
                    )
                    return
                except MeterError as exc:
                    attempt += 1
                    delay = self._retry_delay(attempt)
                    self._log.warning(
                        "meter record not released yet; retrying", tx_ref=tx_ref, error=str(exc), retry_in=delay
                    )
                    await asyncio.sleep(delay)
        finally:
            if task is not None:
                self._releases.discard(task)

    async def transaction_running(self, attempts: int = 1) -> bool:
        """Whether the meter reports an open transaction, asked up to `attempts` times with growing delays; False
        (with a warning) when it cannot be asked. At start-up once; after a failed start (the meter may have begun,
        and then its answers were lost) a few times, and a meter silent longer is asked again at the next start,
        which it refuses, and at the next run."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.meter.transaction_work():
                    return await self.meter.transaction_running()
            except MeterError as exc:
                if attempt >= attempts:
                    self._log.warning(
                        "cannot ask the meter whether a transaction is open; asking again at the next start",
                        error=str(exc),
                    )
                    return False
                await asyncio.sleep(self._retry_delay(attempt))

    def _retry_delay(self, attempt: int) -> float:
        """How long to wait before asking the meter again (a stop, a release): growing, at most 30 s."""
        return min(self.retry_delay * attempt, MAX_RETRY_DELAY)

    # ------------------------------------------------------------------ readings

    async def live_values(self) -> LiveValues:
        """A reading (raises MeterError); kept as the latest for diagnostics."""
        live = await self.meter.live_values()
        self.state.live = live
        return live

    async def fiscal_reading(self) -> SignedMeterRecord | None:
        return await self.meter.fiscal_reading()

    async def monitor(self, charging: Callable[[], bool]) -> None:
        """Live readings for diagnostics, and the link check: every `monitor_interval` while this EVSE charges, three
        times less often while idle (idle CPU, bench: idle_cpu_s_per_h)."""
        while True:
            await asyncio.sleep(self.monitor_interval if charging() else 3 * self.monitor_interval)
            try:
                await self.live_values()
                if self.state.identity is None:
                    await self.refresh_info()
            except MeterError as exc:
                self.state.last_error = str(exc)
