"""A small local CSMS (OCPP 1.6J central system) on loopback, built on the `ocpp` library.

The demo drives a session with it, and the tests use it as the real WebSocket peer: it records every CALL the station
sends exactly as it arrived on the wire (after the library's schema validation), answers like a well-behaved CSMS,
and can be told to answer CALLERROR to chosen actions. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import Server, ServerConnection, serve

log = structlog.get_logger("station.demo.csms")


@dataclass
class Received:
    station_id: str
    action: str
    payload: dict[str, Any]
    unique_id: str
    at: datetime


@dataclass
class CsmsBehaviour:
    boot_status: str = "Accepted"
    heartbeat_interval: int = 60
    call_errors: dict[str, int] = field(default_factory=dict)  # action -> how many of the next ones get a CALLERROR
    silent: dict[str, int] = field(default_factory=dict)  # action -> how many of the next ones get no answer


class _CentralSystemSide(ChargePoint):  # type: ignore[misc]
    """One connected station, seen from the CSMS."""

    def __init__(self, station_id: str, connection: ServerConnection, csms: LocalCsms) -> None:
        super().__init__(station_id, connection, response_timeout=30)
        self.csms = csms
        self._tx_ids = csms.transaction_ids

    async def route_message(self, raw_msg: str) -> None:
        try:
            msg = json.loads(raw_msg)
        except json.JSONDecodeError:
            msg = None
        if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2:
            action = str(msg[2])
            self.csms.record(Received(self.id, action, msg[3], str(msg[1]), datetime.now(UTC)))
            b = self.csms.behaviour
            if b.silent.get(action, 0) > 0:
                b.silent[action] -= 1
                return
            if b.call_errors.get(action, 0) > 0:
                b.call_errors[action] -= 1
                await self._send(json.dumps([4, msg[1], "InternalError", "injected failure", {}]))
                return
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> call_result.BootNotification:
        return call_result.BootNotification(
            current_time=datetime.now(UTC).isoformat(),
            interval=self.csms.behaviour.heartbeat_interval,
            status=RegistrationStatus(self.csms.behaviour.boot_status),
        )

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())

    @on(Action.status_notification)
    def on_status(self, **_: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start_transaction(self, call_unique_id: str, **_: Any) -> call_result.StartTransaction:
        # A repeat of a message we already answered (same message id, e.g. resent after the station restarted
        # before it saw our answer) is the same transaction: answer it the same way.
        known = self.csms.transaction_by_message_id.get(call_unique_id)
        if known is not None:
            return call_result.StartTransaction(
                transaction_id=known, id_tag_info={"status": AuthorizationStatus.accepted}
            )
        transaction_id = next(self._tx_ids)
        self.csms.transaction_by_message_id[call_unique_id] = transaction_id
        self.csms.assigned_transaction_ids.append(transaction_id)
        self.csms.notify_soon()
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(self, **_: Any) -> call_result.StopTransaction:
        return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")


class LocalCsms:
    def __init__(self, behaviour: CsmsBehaviour | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = behaviour or CsmsBehaviour()
        self.host = host
        self.port = port
        self.received: list[Received] = []
        self.stations: dict[str, _CentralSystemSide] = {}
        self.transaction_ids = itertools.count(1001)
        self.assigned_transaction_ids: list[int] = []
        self.transaction_by_message_id: dict[str, int] = {}
        self.listeners: list[Callable[[Received], None]] = []
        self.connections = 0
        self._server: Server | None = None
        self._changed = asyncio.Condition()
        self._pending: set[asyncio.Future[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ocpp"

    async def start(self) -> LocalCsms:
        self._server = await serve(self._handle, self.host, self.port, subprotocols=["ocpp1.6"])  # type: ignore[list-item]
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def drop_connections(self) -> None:
        for side in list(self.stations.values()):
            await side._connection.close()

    def record(self, item: Received) -> None:
        self.received.append(item)
        for listener in self.listeners:
            listener(item)
        self.notify_soon()

    def notify_soon(self) -> None:
        task = asyncio.ensure_future(self._notify())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request else "/"
        station_id = path.rstrip("/").rsplit("/", 1)[-1]
        if connection.subprotocol is None:
            await connection.close(code=1002, reason="OCPP 1.6 only")
            return
        side = _CentralSystemSide(station_id, connection, self)
        self.stations[station_id] = side
        self.connections += 1
        await self._notify()
        try:
            await side.start()
        except Exception:  # the station went away; that is its right
            pass
        finally:
            if self.stations.get(station_id) is side:
                del self.stations[station_id]

    # ------------------------------------------------------------------ what tests and the demo ask

    def messages(self, action: str) -> list[Received]:
        return [r for r in self.received if r.action == action]

    async def wait_for(
        self,
        action: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float = 30,
        after: int = 0,
    ) -> Received:
        """The first `action` message (from index `after` on) that satisfies `predicate`."""

        def find() -> Received | None:
            for r in self.received[after:]:
                if r.action == action and (predicate is None or predicate(r.payload)):
                    return r
            return None

        async with asyncio.timeout(timeout):
            async with self._changed:
                while (found := find()) is None:
                    await self._changed.wait()
                return found

    async def wait_until(self, condition: Callable[[], object], timeout: float = 30) -> None:
        """Wait for a condition on anything (also the station's side): re-checked on every message and every 50 ms."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while not condition():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.05)

    async def wait_connected(self, station_id: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                while station_id not in self.stations:
                    await self._changed.wait()

    async def remote_start(self, station_id: str, id_tag: str, connector_id: int | None = 1) -> str:
        result = await self.stations[station_id].call(
            call.RemoteStartTransaction(id_tag=id_tag, connector_id=connector_id), suppress=False
        )
        return str(result.status)

    async def remote_stop(self, station_id: str, transaction_id: int) -> str:
        result = await self.stations[station_id].call(
            call.RemoteStopTransaction(transaction_id=transaction_id), suppress=False
        )
        return str(result.status)

    async def get_configuration(self, station_id: str, keys: list[str] | None = None) -> dict[str, str]:
        result = await self.stations[station_id].call(call.GetConfiguration(key=keys), suppress=False)
        return {item["key"]: item.get("value", "") for item in (result.configuration_key or [])}

    async def change_configuration(self, station_id: str, key: str, value: str) -> str:
        result = await self.stations[station_id].call(call.ChangeConfiguration(key=key, value=value), suppress=False)
        return str(result.status)
