"""The technician's OCPP trace: the recent frames in and out, secrets masked, for `station diag log [--follow]`.

Owns a ring of recent frames bounded by bytes as well as by count, and the followers that want each new one. A frame
is stored cut to `FRAME_LIMIT` characters (a CSMS may send a megabyte per frame; the trace shows its beginning and
its size), and cut before it is redacted, so that masking costs the same whatever the peer sends. Written only by the
connection's socket wrapper; read by the diagnostics socket. A follower that does not keep up is dropped rather than
allowed to hold frames without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from station.logs import loggable

KEEP = 500  # frames kept for `diag log`
KEEP_CHARS = 512 * 1024  # ... and at most this many characters of them in all
FRAME_LIMIT = 4096  # characters of one frame kept (the rest is counted, not kept)
FOLLOWER_BACKLOG = 256  # frames a follower may lag behind before it is dropped


@dataclass(frozen=True)
class Frame:
    at: datetime
    direction: str  # "in" (from the CSMS) or "out" (to the CSMS)
    text: str  # as on the wire (cut to FRAME_LIMIT), secrets masked
    note: str = ""  # why the station dropped it, for a frame it did not accept

    def as_json(self) -> dict[str, Any]:
        item = {"at": self.at.isoformat(), "direction": self.direction, "frame": self.text}
        if self.note:
            item["dropped"] = self.note
        return item


class FollowerLagged(ConnectionError):
    """The follower did not read its frames fast enough and was dropped (the diagnostics client is told so)."""


class Follower:
    """One `diag log --follow` reader: its own bounded queue of new frames."""

    def __init__(self, backlog: int) -> None:
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(backlog)
        self.lagged = False

    def offer(self, frame: Frame) -> None:
        if self.lagged:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.lagged = True
            while not self._queue.empty():  # free what it held at once
                self._queue.get_nowait()
            self._queue.put_nowait(frame)  # wakes a reader waiting in get(), which then sees `lagged`

    async def get(self) -> Frame:
        frame = await self._queue.get()
        if self.lagged:
            raise FollowerLagged(f"more than {self._queue.maxsize} frames behind; dropped")
        return frame


class FrameTrace:
    def __init__(
        self, keep: int = KEEP, keep_chars: int = KEEP_CHARS, follower_backlog: int = FOLLOWER_BACKLOG
    ) -> None:
        self._frames: deque[Frame] = deque(maxlen=keep)
        self._chars = 0
        self._keep_chars = keep_chars
        self._follower_backlog = follower_backlog
        self._followers: set[Follower] = set()

    def record(self, direction: str, frame: str | bytes, note: str = "") -> None:
        text = frame if isinstance(frame, str) else repr(frame[:FRAME_LIMIT])
        item = Frame(datetime.now(UTC), direction, loggable(text, FRAME_LIMIT), note)
        if len(self._frames) == self._frames.maxlen:
            self._chars -= len(self._frames[0].text)
        self._frames.append(item)
        self._chars += len(item.text)
        while self._chars > self._keep_chars and len(self._frames) > 1:
            self._chars -= len(self._frames.popleft().text)
        for follower in self._followers:
            follower.offer(item)

    @property
    def chars(self) -> int:
        return self._chars

    def recent(self, last: int) -> list[Frame]:
        return list(self._frames)[-last:] if last > 0 else []

    @contextlib.contextmanager
    def follow(self) -> Iterator[Follower]:
        follower = Follower(self._follower_backlog)
        self._followers.add(follower)
        try:
            yield follower
        finally:
            self._followers.discard(follower)
