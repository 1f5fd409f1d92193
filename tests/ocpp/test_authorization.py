"""Local authorization over a real WebSocket: the local list (SendLocalList / GetLocalListVersion), the cache of the
CSMS's answers, and what a start presented at the station is decided by when the CSMS is reachable and when not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocpp.v16 import call
from ocpp.v201 import call as call201

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.store import IdTagEntry

STATION = "CP-AUTH"


def config_for(tmp_path: Path, url: str, version: str = "1.6") -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def entry(tag: str, status: str | None) -> dict[str, Any]:
    return {"id_tag": tag} if status is None else {"id_tag": tag, "id_tag_info": {"status": status}}


async def test_local_list_cache_and_offline_start_16(tmp_path: Path) -> None:
    csms = await LocalCsms().start()
    port = csms.port
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        side = csms.stations[STATION]

        async def send_list(version: int, kind: str, items: list[dict[str, Any]]) -> str:
            answer = await side.call(
                call.SendLocalList(list_version=version, update_type=kind, local_authorization_list=items),
                suppress=False,
            )
            return str(answer.status)

        assert await send_list(1, "Full", [entry("CARD-A", "Accepted"), entry("CARD-B", "Blocked")]) == "Accepted"
        assert (await side.call(call.GetLocalListVersion(), suppress=False)).list_version == 1
        assert await send_list(1, "Differential", [entry("CARD-C", "Accepted")]) == "VersionMismatch"
        assert await send_list(2, "Differential", [entry("CARD-C", "Accepted"), entry("CARD-A", None)]) == "Accepted"
        assert station.runtime.authorizer is not None
        assert station.runtime.authorizer.local_status("CARD-A") is None  # removed by the differential update

        # Online: the CSMS decides (Authorize), and its answer is cached.
        started = await station.runtime.local_start(1, "CARD-X")
        assert started.accepted, started.reason
        assert (await csms.wait_for("Authorize")).payload == {"idTag": "CARD-X"}
        _, tx_id = await csms.wait_session_started(STATION)
        await csms.remote_stop(STATION, int(tx_id))
        await csms.wait_session_ended(STATION)
        await station.runtime.idle()
        assert station.runtime.authorizer.local_status("CARD-X") == "Accepted"

        # Offline: the list, then the cache, decide; unknown and blocked identifiers are refused.
        await csms.stop()
        await csms.drop_connections()
        await csms.wait_until(lambda: not station.connection.state.connected)
        blocked = await station.runtime.local_start(1, "CARD-B")
        assert not blocked.accepted and "Blocked" in blocked.reason
        unknown = await station.runtime.local_start(1, "CARD-UNKNOWN")
        assert not unknown.accepted and "neither" in unknown.reason
        offline = await station.runtime.local_start(1, "CARD-C")
        assert offline.accepted, offline.reason
        await csms.wait_until(lambda: station.runtime.core.evses[1].phase.value == "charging")

        # Back online: the offline start is delivered.
        csms.port = port
        await csms.start()
        await csms.wait_connected(STATION)
        start = await csms.wait_for("StartTransaction", lambda p: p["idTag"] == "CARD-C", timeout=30)
        assert start.payload["connectorId"] == 1
        assert (await side_of(csms).call(call.ClearCache(), suppress=False)).status == "Accepted"
        assert station.runtime.authorizer.local_status("CARD-X") is None
        assert station.runtime.authorizer.local_status("CARD-C") == "Accepted"  # the list is not the cache
    await csms.stop()


def side_of(csms: LocalCsms) -> Any:
    return csms.stations[STATION]


async def test_local_list_201(tmp_path: Path) -> None:
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))) as station:
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            side = side_of(csms)
            answer = await side.call(
                call201.SendLocalList(
                    version_number=3,
                    update_type="Full",
                    local_authorization_list=[
                        {
                            "id_token": {"id_token": "CARD-1", "type": "ISO14443"},
                            "id_token_info": {"status": "Accepted"},
                        }
                    ],
                ),
                suppress=False,
            )
            assert answer.status == "Accepted"
            assert (await side.call(call201.GetLocalListVersion(), suppress=False)).version_number == 3
            started = await station.runtime.local_start(1, "CARD-9")
            assert started.accepted
            authorize = await csms.wait_for("Authorize")
            assert authorize.payload["idToken"] == {"idToken": "CARD-9", "type": "ISO14443"}
            event, _ = await csms.wait_session_started(STATION)
            assert event.payload["triggerReason"] == "Authorized"
            assert (await side.call(call201.ClearCache(), suppress=False)).status == "Accepted"
            assert csms.violations == []
    finally:
        await csms.stop()


async def test_restart_while_offline_delivers_start_then_stop_once(tmp_path: Path) -> None:
    """Started offline (local list), the daemon restarted while still offline: the transaction is ended on the meter
    (PowerLoss) and, when the CSMS is back, it hears StartTransaction then StopTransaction, once each, in order."""
    csms = await LocalCsms().start()
    port = csms.port
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        assert station.runtime.authorizer is not None
        station.runtime.authorizer.update_list(1, [IdTagEntry("CARD-R", "Accepted")], full=True)
        await csms.stop()
        await csms.drop_connections()
        await csms.wait_until(lambda: not station.connection.state.connected)
        assert (await station.runtime.local_start(1, "CARD-R")).accepted
        await csms.wait_until(lambda: station.store.outbox_depth("transaction_started") == 1)
    async with running_station(config) as station:  # restarted, still offline: Start and the PowerLoss Stop queued
        await csms.wait_until(lambda: station.store.outbox_depth("transaction_ended") == 1, timeout=30)
        assert station.store.outbox_depth("transaction_started") == 1
        csms.port = port
        await csms.start()
        await csms.wait_until(lambda: station.store.outbox_depth() == 0, timeout=30)
    await csms.stop()
    starts, stops = csms.messages("StartTransaction"), csms.messages("StopTransaction")
    assert len(starts) == 1 and len(stops) == 1
    assert csms.received.index(starts[0]) < csms.received.index(stops[0])
    assert stops[0].payload["reason"] == "PowerLoss" and stops[0].payload["transactionData"]
    assert stops[0].payload["transactionId"] == csms.assigned_transaction_ids[0]
    assert csms.violations == []


async def test_card_at_the_station_pre_authorize_unknown_offline_and_the_group_stops_16(tmp_path: Path) -> None:
    """1.6 §3.5.1 LocalPreAuthorize: a card the local list holds as Accepted starts without asking the CSMS (no
    Authorize.req); §9.1 AllowOfflineTxForUnknownId: offline, a card neither list nor cache knows starts only with it
    true; §3.4 / §4.10: a card with the same parentIdTag stops the transaction, reason Local."""
    csms = await LocalCsms().start()
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        side = csms.stations[STATION]
        family = [
            {"id_tag": "CARD-MUM", "id_tag_info": {"status": "Accepted", "parent_id_tag": "FAMILY"}},
            {"id_tag": "CARD-DAD", "id_tag_info": {"status": "Accepted", "parent_id_tag": "FAMILY"}},
        ]
        result = await side.call(
            call.SendLocalList(list_version=1, update_type="Full", local_authorization_list=family), suppress=False
        )
        assert result.status == "Accepted"
        assert await csms.change_configuration(STATION, "LocalPreAuthorize", "true") == "Accepted"
        assert (await station.runtime.present_card("CARD-MUM")).accepted
        await csms.wait_for("StartTransaction", lambda p: p["idTag"] == "CARD-MUM")
        assert csms.messages("Authorize") == []  # pre-authorized from the list
        assert (await station.runtime.present_card("CARD-DAD")).accepted  # the same group: stops it
        stop = await csms.wait_for("StopTransaction")
        assert stop.payload["reason"] == "Local"
        await station.runtime.idle()

        await csms.stop()  # offline from here on
        await csms.wait_until(lambda: not station.runtime.csms.online, timeout=10)
        assert not (await station.runtime.present_card("CARD-STRANGER")).accepted
        assert station.settings.change("AllowOfflineTxForUnknownId", "true") == "Accepted"
        assert (await station.runtime.present_card("CARD-STRANGER")).accepted
        await station.runtime.idle()
