"""The technician's OCPP trace: the recent frames in and out, secrets masked, for `station diag log [--follow]`.

Owns a bounded ring of frames and the followers that want each new one. Written only by the connection's socket
wrapper; read by the diagnostics socket. A follower that cannot keep up loses frames rather than growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from station.logs import redact_text

KEEP = 500  # frames kept for `diag log`
FOLLOWER_BACKLOG = 1000  # frames a slow follower may lag behind before it loses some


@dataclass(frozen=True)
class Frame:
    at: datetime
    direction: str  # "in" (from the CSMS) or "out" (to the CSMS)
    text: str  # as on the wire, secrets masked

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "direction": self.direction, "frame": self.text}


class FrameTrace:
    def __init__(self, keep: int = KEEP) -> None:
        self._frames: deque[Frame] = deque(maxlen=keep)
        self._followers: set[asyncio.Queue[Frame]] = set()

    def record(self, direction: str, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else repr(frame)
        item = Frame(datetime.now(UTC), direction, redact_text(text))
        self._frames.append(item)
        for queue in self._followers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(item)

    def recent(self, last: int) -> list[Frame]:
        return list(self._frames)[-last:] if last > 0 else []

    @contextlib.contextmanager
    def follow(self) -> Iterator[asyncio.Queue[Frame]]:
        queue: asyncio.Queue[Frame] = asyncio.Queue(FOLLOWER_BACKLOG)
        self._followers.add(queue)
        try:
            yield queue
        finally:
            self._followers.discard(queue)
