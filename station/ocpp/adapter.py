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
    because a handler that awaits a CALL deadlocks the `ocpp` library's receive loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def later(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        async def run() -> None:
            await asyncio.sleep(0)  # let the answer go out first
            try:
                await coro
            except Exception as exc:
                log.warning("follow-up message failed", what=what, error=repr(exc))

        task = asyncio.create_task(run(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_statuses(self, reports: list[ReportStatus], send: Callable[[ReportStatus], Awaitable[None]]) -> None:
        """StatusNotifications the CSMS asked for (TriggerMessage), one after another."""

        async def run() -> None:
            for report in reports:
                await send(report)

        self.later(run(), "triggered StatusNotification")
