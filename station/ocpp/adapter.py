"""What the connection needs from a protocol adapter (one per OCPP version), and what both adapters share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from station.core.model import ReportStatus
from station.store import OutboxMessage


class BootRefused(Exception):
    """BootNotification answered Pending or Rejected: retry after `interval`, no charging before Accepted."""

    def __init__(self, status: str, interval: int) -> None:
        self.status = status
        self.interval = interval
        super().__init__(f"BootNotification {status}, retry in {interval} s")


class CsmsAdapter(Protocol):
    version: str

    async def start(self) -> None:
        """Read and route frames until the connection closes."""

    async def boot(self) -> int:
        """BootNotification; the heartbeat interval when Accepted, BootRefused otherwise."""

    async def heartbeat(self) -> None: ...

    async def status(self, report: ReportStatus) -> None: ...

    async def deliver(self, message: OutboxMessage) -> None:
        """Send one outbox entry; returns when the CSMS answered with a CALLRESULT (raises on CALLERROR/timeout)."""


def iso(at: datetime | None) -> str:
    """OCPP timestamps: UTC with a Z."""
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
