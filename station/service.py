"""systemd integration: READY/STATUS/WATCHDOG/STOPPING over $NOTIFY_SOCKET, with no dependency beyond the stdlib.

The watchdog is fed by a task on the main event loop, and only while the daemon is healthy: if the loop is blocked
(a stuck call, a busy loop), the task does not run, the pings stop and systemd restarts the service. A ping is also
withheld when the loop's own measured lag exceeds half the watchdog interval, and while `problem()` names one (a loop
the daemon cannot work without has ended).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("station.service")


class Notifier:
    """Sends sd_notify datagrams; a no-op when the daemon does not run under systemd (no $NOTIFY_SOCKET)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):  # abstract namespace
            path = "\0" + path[1:]
        self._address = path
        self._last_status = ""
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, message: str) -> bool:
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.warning("systemd notification failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        self._last_status = status
        self.send(f"STOPPING=1\nSTATUS={status}")


def _healthy() -> str | None:
    return None


async def feed_watchdog(
    notifier: Notifier, describe: Callable[[], str], problem: Callable[[], str | None] = _healthy
) -> None:
    """Ping the watchdog at a third of its interval while the loop keeps time and `problem()` is None, and keep
    STATUS= current."""
    interval = notifier.watchdog_interval
    period = interval / 3 if interval else 5.0
    reported: str | None = None
    while True:
        before = time.monotonic()
        await asyncio.sleep(period)
        lag = time.monotonic() - before - period
        notifier.status(describe())
        if interval is None:
            continue
        if lag > interval / 2:
            log.error("event loop lagging; withholding the watchdog ping", lag_s=round(lag, 3))
            continue
        trouble = problem()
        if trouble is not None:
            if trouble != reported:
                log.critical("daemon unhealthy; withholding the watchdog ping", problem=trouble)
                reported = trouble
            continue
        notifier.send("WATCHDOG=1")
