"""A CSMS that speaks raw frames over a real WebSocket on loopback, so that tests can send what no OCPP library
would: it answers the station's CALLs politely and hands everything else to the test."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

BOOT_ANSWER = {"currentTime": "2026-11-24T12:00:00Z", "interval": 300, "status": "Accepted"}


# What a polite CSMS answers to each CALL of the station (both versions; a payload valid for each).
ANSWERS: dict[str, dict[str, Any]] = {
    "BootNotification": BOOT_ANSWER,
    "Heartbeat": {"currentTime": "2026-11-24T12:00:00Z"},
    "Authorize": {"idTagInfo": {"status": "Accepted"}},
    "StopTransaction": {"idTagInfo": {"status": "Accepted"}},
}


class RawCsms:
    """A CSMS that speaks raw frames: it answers the station's CALLs politely (and keeps them in `calls`), and hands
    every other frame from the station (answers to what the test sent) to `inbox`."""

    def __init__(self) -> None:
        self.connection: ServerConnection | None = None
        self.inbox: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.connections = 0
        self.calls: list[list[Any]] = []
        self.answers = dict(ANSWERS)  # a test may change what the CSMS answers
        self.transaction_ids: list[int] = []  # assigned in answers to StartTransaction, in order
        self._transaction_ids = iter(range(5001, 10**9))

    async def handler(self, ws: ServerConnection) -> None:
        self.connection = ws
        self.connections += 1
        self.connected.set()
        with contextlib.suppress(ConnectionClosed):
            await self._serve(ws)

    async def _serve(self, ws: ServerConnection) -> None:
        async for frame in ws:
            msg = json.loads(frame)
            if msg[0] == 2:  # answer the station's CALLs like a polite CSMS
                self.calls.append(msg)
                answer = self.answers.get(msg[2], {})
                if msg[2] == "StartTransaction":
                    self.transaction_ids.append(next(self._transaction_ids))
                    answer = {"transactionId": self.transaction_ids[-1], "idTagInfo": {"status": "Accepted"}}
                await ws.send(json.dumps([3, msg[1], answer]))
            else:
                await self.inbox.put(msg)

    def called(self, action: str) -> list[list[Any]]:
        return [c for c in self.calls if c[2] == action]

    async def send_raw(self, frame: str) -> list[Any]:
        assert self.connection is not None
        await self.connection.send(frame)
        return await asyncio.wait_for(self.inbox.get(), 10)
