"""Reservations end to end (issue 21 item 6), both OCPP versions, with the real LocalCsms on loopback: ReserveNow,
the Reserved status, another identifier refused, the reserved one starting with the reservationId, expiry (2.0.1:
ReservationStatusUpdate Expired), CancelReservation, Removed when the EVSE goes Unavailable, and a restart while
reserved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call
from ocpp.v201 import call as call201

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("version", ["1.6", "2.0.1"])]

STATION = "CP-RESV"


def config(tmp_path: Path, csms: LocalCsms, version: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": csms.url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def status(p: dict[str, Any]) -> Any:
    return p.get("status") or p.get("connectorStatus")


@asynccontextmanager
async def station(tmp_path: Path, csms: LocalCsms, version: str, first: str = "Available") -> AsyncIterator[None]:
    mark = len(csms.received)
    async with running_station(parse_config(config(tmp_path, csms, version))):
        await csms.wait_for("StatusNotification", lambda p: status(p) == first, after=mark)
        yield


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_reserved_then_used_by_its_identifier(tmp_path: Path, csms: LocalCsms, version: str) -> None:
    """1.6 §5.13 (A7 Reserved; other idTags refused; StartTransaction.reservationId); H01.FR.23 (Reserved),
    H03.FR.01, H01.FR.15 / E02.FR.03 (TransactionEvent reservationId), H03.FR.09 (used: the reservation ends)."""
    async with station(tmp_path, csms, version):
        mark = len(csms.received)
        assert await csms.reserve_now(STATION, 7, "ALICE", soon(120), 1) == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Reserved", after=mark)
        assert await csms.start_session(STATION, "BOB", 1) == "Rejected"
        mark = len(csms.received)
        assert await csms.start_session(STATION, "ALICE", 1) == "Accepted"
        started, transaction_id = await csms.wait_session_started(STATION, after=mark)
        assert started.payload["reservationId"] == 7
        assert await csms.cancel_reservation(STATION, 7) == "Rejected"  # used: gone
        assert await csms.stop_session(STATION, transaction_id) == "Accepted"
        await csms.wait_session_ended(STATION, after=mark)
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Available", after=mark)


async def test_expiry_makes_it_available_again(tmp_path: Path, csms: LocalCsms, version: str) -> None:
    """1.6 §5.13 "When a reservation expires ... SHALL send a status notification"; H04.FR.01 (Expired), H04.FR.03."""
    async with station(tmp_path, csms, version):
        mark = len(csms.received)
        assert await csms.reserve_now(STATION, 8, "ALICE", soon(2), 1) == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Reserved", after=mark)
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Available", after=mark, timeout=15)
        if version == "2.0.1":
            update = await csms.wait_for("ReservationStatusUpdate", after=mark)
            assert update.payload == {"reservationId": 8, "reservationUpdateStatus": "Expired"}
        assert await csms.cancel_reservation(STATION, 8) == "Rejected"


async def test_cancel_and_unavailable(tmp_path: Path, csms: LocalCsms, version: str) -> None:
    """1.6 §5.1 (Accepted / Rejected), §5.13 (3); H02.FR.01/02 (no ReservationStatusUpdate for a cancel), H01.FR.17
    (Unavailable: Removed, TC_H_21_CS), H01.FR.14 (Unavailable answer); reservation of any EVSE (connector 0 with
    ReserveConnectorZeroSupported, NonEvseSpecific) Accepted, H01.FR.04."""
    async with station(tmp_path, csms, version):
        mark = len(csms.received)
        assert await csms.reserve_now(STATION, 9, "ALICE", soon(120), 1) == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Reserved", after=mark)
        assert await csms.reserve_now(STATION, 10, "BOB", soon(120), 1) == "Occupied"
        assert await csms.cancel_reservation(STATION, 9) == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Available", after=mark)
        assert await csms.cancel_reservation(STATION, 9) == "Rejected"
        assert await csms.reserve_now(STATION, 11, "ALICE", soon(120), 1) == "Accepted"
        side = csms.stations[STATION]
        mark = len(csms.received)
        if version == "2.0.1":
            await side.call(call201.ChangeAvailability(operational_status="Inoperative", evse={"id": 1}))
            update = await csms.wait_for("ReservationStatusUpdate", after=mark)
            assert update.payload == {"reservationId": 11, "reservationUpdateStatus": "Removed"}
        else:
            await side.call(call.ChangeAvailability(connector_id=1, type="Inoperative"))
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Unavailable", after=mark)
        assert await csms.cancel_reservation(STATION, 11) == "Rejected"
        assert await csms.reserve_now(STATION, 12, "ALICE", soon(120), 1) == "Unavailable"
        assert await csms.reserve_now(STATION, 13, "ALICE", soon(120), None) == "Unavailable"
        if version == "2.0.1":
            await side.call(call201.ChangeAvailability(operational_status="Operative", evse={"id": 1}))
        else:
            await side.call(call.ChangeAvailability(connector_id=1, type="Operative"))
        mark = len(csms.received)
        assert await csms.reserve_now(STATION, 14, "ALICE", soon(120), None) == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Reserved", after=mark)  # H01.FR.20
    assert not csms.messages("ReservationStatusUpdate")[1:], "a cancel sends no ReservationStatusUpdate"


async def test_a_restart_keeps_the_reservation(tmp_path: Path, csms: LocalCsms, version: str) -> None:
    """Kept across restarts: the EVSE is Reserved again after the restart and still refuses another identifier."""
    async with station(tmp_path, csms, version):
        assert await csms.reserve_now(STATION, 15, "ALICE", soon(300), 1) == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Reserved")
    async with station(tmp_path, csms, version, first="Reserved"):
        assert await csms.start_session(STATION, "BOB", 1) == "Rejected"
        assert await csms.cancel_reservation(STATION, 15) == "Accepted"


async def test_a_group_reservation_is_used_by_another_card_of_the_group(
    tmp_path: Path, csms: LocalCsms, version: str
) -> None:
    """1.6 §5.13 (the parent idTag, looked up in the Local Authorization List); H03.FR.04 / FR.07 (groupIdToken from
    the local list), TC_H_19_CS. 2.0.1 also H01.FR.01 (ReservationCtrlr.Enabled false: Rejected, TC_H_22_CS)."""
    async with station(tmp_path, csms, version):
        side = csms.stations[STATION]
        if version == "2.0.1":
            entry = {
                "id_token": {"id_token": "BOB", "type": "Central"},
                "id_token_info": {"status": "Accepted", "group_id_token": {"id_token": "FLEET", "type": "Central"}},
            }
            request: Any = call201.SendLocalList(version_number=1, update_type="Full", local_authorization_list=[entry])
        else:
            entry = {"id_tag": "BOB", "id_tag_info": {"status": "Accepted", "parent_id_tag": "FLEET"}}
            request = call.SendLocalList(list_version=1, update_type="Full", local_authorization_list=[entry])
        assert (await side.call(request, suppress=False)).status == "Accepted"
        assert await csms.reserve_now(STATION, 21, "ALICE", soon(120), 1, group="FLEET") == "Accepted"
        assert await csms.start_session(STATION, "CAROL", 1) == "Rejected"
        mark = len(csms.received)
        assert await csms.start_session(STATION, "BOB", 1) == "Accepted"
        started, transaction_id = await csms.wait_session_started(STATION, after=mark)
        assert started.payload["reservationId"] == 21
        assert await csms.stop_session(STATION, transaction_id) == "Accepted"
        await csms.wait_session_ended(STATION, after=mark)
        if version == "2.0.1":
            enabled = {"component": {"name": "ReservationCtrlr"}, "variable": {"name": "Enabled"}}
            [result] = await csms.set_variables(STATION, [{**enabled, "attribute_value": "false"}])
            assert result["attribute_status"] == "Accepted"
            assert await csms.reserve_now(STATION, 22, "ALICE", soon(120), 1) == "Rejected"
