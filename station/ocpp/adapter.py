"""What the connection needs from a protocol adapter (one per OCPP version), and what both adapters share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from station.core.model import ReportStatus
from station.store import IdTagEntry, OutboxMessage

log = structlog.get_logger("station.ocpp")


class BootRefused(Exception):
    """BootNotification answered Pending or Rejected: retry after `interval`, no charging before Accepted."""

    def __init__(self, status: str, interval: int) -> None:
        self.status = status
        self.interval = interval
        super().__init__(f"BootNotification {status}, retry in {interval} s")


@dataclass(frozen=True)
class Delivery:
    """What the CSMS's answer to an outbox message taught, stored with the message's removal in one commit."""

    csms_transaction: tuple[str, str] | None = None  # (our ref, the CSMS's transaction id)
    transaction_done: str | None = None  # our ref: its last message is through


class CsmsAdapter(Protocol):
    version: str

    async def start(self) -> None:
        """Read and route frames until the connection closes."""

    async def boot(self) -> int:
        """BootNotification; the heartbeat interval when Accepted, BootRefused otherwise."""

    async def heartbeat(self) -> None: ...

    async def authorize(self, id_tag: str) -> IdTagEntry | None:
        """Ask the CSMS about an identifier; None when it cannot answer."""

    async def status(self, report: ReportStatus) -> None: ...

    async def deliver(self, message: OutboxMessage) -> Delivery:
        """Send one outbox entry; returns when the CSMS answered with a CALLRESULT (raises on CALLERROR/timeout)."""


def iso(at: datetime | None) -> str:
    """OCPP timestamps: UTC with a Z."""
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def security_event_fields(body: dict[str, Any], version: str) -> dict[str, Any]:
    """SecurityEventNotification from a queued security event (station/store.py). The 1.6 Security Whitepaper names
    the CSMS "CentralSystem" where 2.0.1 says "Csms" (InvalidCentralSystemCertificate / InvalidCsmsCertificate)."""
    kind = str(body["type"])
    return {
        "type": kind.replace("Csms", "CentralSystem") if version == "1.6" else kind,
        "timestamp": str(body["timestamp"]).replace("+00:00", "Z"),
        "tech_info": body.get("techInfo") or None,
    }


class FollowUps:
    """Work a CSMS request asks for after its answer has gone out (a triggered message, a report): run in tasks,
    because a handler that awaits a CALL deadlocks the `ocpp` library's receive loop.

    Bounded, because the CSMS decides how often it asks: work with the same name (one kind of triggered message for
    one connector, one report) that is still pending is not queued again (5,000 TriggerMessages once queued 1,250
    BootNotifications and held up the next session for 12 s), and at most `MAX_PENDING` pieces of work wait at a
    time; beyond that the request is refused (`later` returns False) so the adapter can answer Rejected."""

    MAX_PENDING = 32

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.coalesced = 0  # requests that found the same work already pending
        self.refused = 0  # requests refused because too much work was pending

    def later(self, coro: Coroutine[Any, Any, Any], what: str) -> bool:
        """Run `coro` once the answer is out. False when it was not queued: the same work is already pending (it
        will do what this request asks) or too much is pending."""
        if what in self._tasks:
            coro.close()
            self.coalesced += 1
            return True
        if len(self._tasks) >= self.MAX_PENDING:
            coro.close()
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("follow-up work refused: too much pending", what=what, refused=self.refused)
            return False

        async def run() -> None:
            await asyncio.sleep(0)  # let the answer go out first
            try:
                await coro
            except Exception as exc:
                log.warning("follow-up message failed", what=what, error=repr(exc)[:300])

        task = asyncio.create_task(run(), name=what)
        self._tasks[what] = task
        task.add_done_callback(lambda done: self._tasks.pop(what, None) if self._tasks.get(what) is done else None)
        return True

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def send_statuses(
        self, reports: list[ReportStatus], send: Callable[[ReportStatus], Awaitable[None]], what: str
    ) -> bool:
        """StatusNotifications the CSMS asked for (TriggerMessage), one after another."""

        async def run() -> None:
            for report in reports:
                await send(report)

        return self.later(run(), what)
