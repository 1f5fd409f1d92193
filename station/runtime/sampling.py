"""Meter values for the CSMS: periodic readings of charging transactions, clock-aligned readings of every EVSE,
readings kept for the end message, and a reading on demand (TriggerMessage). Each EVSE is read on its own meter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from station.core.model import Phase
from station.core.station import ChargingStation
from station.meter.interface import LiveValues, MeterError
from station.runtime.meter_worker import MeterWorker
from station.runtime.policy import RuntimePolicy
from station.runtime.presence import CsmsPresence
from station.runtime.supervisor import Supervisor
from station.store import Store
from station.tasks import wait_event

log = structlog.get_logger("station.runtime.sampling")


def values_of(live: LiveValues) -> dict[str, Any]:
    """Every value the meter gives, as readings keep them (the adapter picks the configured measurands)."""
    return {
        "energy_wh": live.energy_import_wh,
        "export_wh": live.energy_export_wh,
        "power_w": live.power_w,
        "voltage_v": list(live.voltage_v),
        "current_a": list(live.current_a),
    }


def reading(live: LiveValues, context: str, at: datetime) -> dict[str, Any]:
    """A reading as the outbox and the samples keep it: its context, its time and every value the meter gives."""
    return {"context": context, "at": at.isoformat(), **values_of(live)}


class Sampler:
    def __init__(
        self,
        core: ChargingStation,
        store: Store,
        meters: Mapping[int, MeterWorker],
        policy: RuntimePolicy,
        presence: CsmsPresence,
        clock: Callable[[], datetime],
    ) -> None:
        self.core = core
        self.store = store
        self.meters = meters
        self.policy = policy
        self.presence = presence
        self.clock = clock
        self._wakeups: list[asyncio.Event] = []

    def start(self, supervisor: Supervisor) -> None:
        supervisor.keep_running(self._periodic, "sampling: periodic")
        supervisor.keep_running(self._aligned, "sampling: clock-aligned")
        supervisor.keep_running(self._for_end, "sampling: readings for the end message")

    def changed(self) -> None:
        """A sampling setting changed: the loops look again at once."""
        for wakeup in self._wakeups:
            wakeup.set()

    def targets(self, transactions_only: bool) -> list[tuple[int, str | None]]:
        """(EVSE id, ref of its charging transaction or None) of each EVSE a reading is queued for."""
        out: list[tuple[int, str | None]] = []
        for evse in self.core.evses.values():
            tx = evse.transaction
            # Only while charging: once the stop is asked for, the meter's signed end reading is the last word (a
            # reading taken meanwhile would follow the CSMS's refusal of the transaction, 1.6 §9.1.24).
            charging = tx is not None and evse.phase is Phase.CHARGING
            if charging or not transactions_only:
                out.append((evse.id, tx.ref if charging and tx is not None else None))
        return out

    def queue_triggered(self, evse_id: int) -> bool:
        """The latest reading of an EVSE's charging transaction as a transaction message with context Trigger
        (2.0.1 TriggerMessage TransactionEvent, F06.FR.07); False when there is none to send."""
        worker = self.meters.get(evse_id)
        live = worker.state.live if worker is not None else None
        refs = [ref for e, ref in self.targets(transactions_only=True) if e == evse_id]
        if live is None or not refs or refs[0] is None:
            return False
        body = {**reading(live, "Trigger", self.clock()), "evse_id": evse_id}
        self.store.enqueue("meter_values", refs[0], body, offline=not self.presence.online)
        self.presence.outbox_changed()
        return True

    async def _off(self, wakeup: asyncio.Event) -> None:
        """Sleep, without waking every second, until a sampling setting changes (or a minute has passed)."""
        wakeup.clear()
        await wait_event(wakeup, 60)

    def _wakeup(self) -> asyncio.Event:
        wakeup = asyncio.Event()
        self._wakeups.append(wakeup)
        return wakeup

    async def _periodic(self) -> None:
        """MeterValueSampleInterval / SampledDataCtrlr.TxUpdatedInterval: readings of each charging transaction."""
        wakeup = self._wakeup()
        loop = asyncio.get_running_loop()
        due: float | None = None  # on a fixed grid: reading N EVSEs' meters must not stretch the interval
        while True:
            interval = self.policy.sample_interval()
            if interval <= 0:
                due = None
                await self._off(wakeup)
                continue
            now = loop.time()
            due = now + interval if due is None or due < now - interval else due + interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            if self.policy.sample_interval() > 0:
                await self._queue("Sample.Periodic", transactions_only=True)

    async def _for_end(self) -> None:
        """SampledDataCtrlr.TxEndedInterval (2.0.1): readings of each charging transaction kept for its
        TransactionEvent(Ended), one per interval from the start (E06.FR.11), sent with nothing else."""
        wakeup = self._wakeup()
        while True:
            interval = self.policy.ended_interval()
            if interval <= 0:
                await self._off(wakeup)
                continue
            await asyncio.sleep(interval)
            if self.policy.ended_interval() <= 0:
                continue
            for evse_id, _ in self.targets(transactions_only=True):
                try:
                    live = await self.meters[evse_id].live_values()
                except MeterError as exc:
                    log.warning("reading for the end message not read", evse_id=evse_id, error=str(exc))
                    continue
                # Asked again after the read: the transaction may have ended meanwhile.
                ref = dict(self.targets(transactions_only=True)).get(evse_id)
                if ref is not None:
                    body = {**reading(live, "Sample.Periodic", self.clock()), "evse_id": evse_id}
                    self.store.add_sample(ref, "ended", body)

    async def _aligned(self) -> None:
        """ClockAlignedDataInterval / AlignedDataCtrlr.Interval: readings at whole multiples of the interval after
        midnight UTC, with or without a transaction."""
        wakeup = self._wakeup()
        while True:
            interval = self.policy.aligned_interval()
            if interval <= 0:
                await self._off(wakeup)
                continue
            now = self.clock()
            since_midnight = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
            await asyncio.sleep(interval - since_midnight % interval)
            if self.policy.aligned_interval() > 0:
                await self._queue("Sample.Clock", transactions_only=False)

    async def _queue(self, context: str, *, transactions_only: bool) -> None:
        """One reading per target EVSE, each from its own meter; none for a transaction that is not there."""
        queued = False
        for evse_id, _ in self.targets(transactions_only):
            worker = self.meters[evse_id]
            try:
                live = await worker.live_values()
            except MeterError as exc:
                log.warning("meter values not read", evse_id=evse_id, context=context, error=str(exc))
                continue
            body = {**reading(live, context, self.clock()), "evse_id": evse_id}
            if context == "Sample.Clock" and self.policy.sign_aligned():
                # Signed aligned data: the meter's own latest signed reading, where it makes them (smart-me: 15 min).
                try:
                    fiscal = await worker.fiscal_reading()
                except MeterError as exc:
                    log.warning("signed reading not read", evse_id=evse_id, error=str(exc))
                    fiscal = None
                if fiscal is not None:
                    body["signed"] = fiscal.data
            # Asked again after the reads: a transaction may have ended meanwhile, and its readings must not follow
            # its end. Periodic readings of a transaction are also kept for its StopTransaction (1.6
            # StopTxnSampledData, §9.1.27: "every MeterValueSampleInterval seconds from the start"), in one commit.
            still = dict(self.targets(transactions_only))
            if evse_id in still:
                ref = still[evse_id]
                sample = "periodic" if context == "Sample.Periodic" and ref is not None else None
                self.store.enqueue("meter_values", ref, body, offline=not self.presence.online, sample=sample)
                queued = True
        if queued:
            self.presence.outbox_changed()
