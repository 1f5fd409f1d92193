"""Delivery rules of transaction messages over a real WebSocket: CALLERROR retries per TransactionMessageAttempts /
TransactionMessageRetryInterval, give-up keeps the message aside, and a dropped connection loses nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

STATION = "CP-DELIVERY"


def config_for(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


async def start_session(csms: LocalCsms, tag: str) -> int:
    assert await csms.remote_start(STATION, tag) == "Accepted"
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
    await csms.wait_until(lambda: len(csms.assigned_transaction_ids) > 0)
    return csms.assigned_transaction_ids[-1]


async def test_stop_transaction_is_retried_after_callerror(tmp_path: Path, csms: LocalCsms) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        assert await csms.change_configuration(STATION, "TransactionMessageRetryInterval", "1") == "Accepted"
        tx_id = await start_session(csms, "TAG-R")
        csms.behaviour.call_errors["StopTransaction"] = 2
        await csms.remote_stop(STATION, tx_id)
        await csms.wait_until(lambda: len(csms.messages("StopTransaction")) == 3, timeout=30)
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        stops = csms.messages("StopTransaction")
        assert len({s.unique_id for s in stops}) == 3  # each attempt is a new CALL
        assert len({str(s.payload) for s in stops}) == 1  # ... of the same message
        assert station.store.failed_messages() == []


async def test_a_message_the_csms_keeps_refusing_is_set_aside_not_lost(tmp_path: Path, csms: LocalCsms) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        await csms.change_configuration(STATION, "TransactionMessageRetryInterval", "1")
        await csms.change_configuration(STATION, "TransactionMessageAttempts", "2")
        tx_id = await start_session(csms, "TAG-X")
        csms.behaviour.call_errors["StopTransaction"] = 5
        await csms.remote_stop(STATION, tx_id)
        await csms.wait_until(lambda: len(station.store.failed_messages()) == 1, timeout=30)
        assert len(csms.messages("StopTransaction")) == 2
        failed = station.store.failed_messages()[0]
        assert failed["kind"] == "transaction_ended" and failed["attempts"] == 2
        stored = station.store.transaction(failed["tx_ref"])
        assert stored is not None and stored.transaction.signed_records  # the signed record is still here


async def test_stop_while_the_csms_is_away_is_delivered_after_reconnect(tmp_path: Path, csms: LocalCsms) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        tx_id = await start_session(csms, "TAG-O")
        await csms.wait_until(lambda: station.runtime.transaction_for_csms_id(str(tx_id)) is not None)
        ref = station.runtime.transaction_for_csms_id(str(tx_id))
        assert ref is not None
        # The CSMS goes away; the stop comes from the station side (here: the runtime, as a local stop would).
        await csms.stop()
        await csms.drop_connections()
        station.runtime.remote_stop(ref)
        await station.runtime.idle()
        assert station.store.outbox_depth() == 1
        stored = station.store.transaction(ref)
        assert stored is not None and stored.state == "ended"
        await csms.start()  # same port: the station reconnects by itself
        stop = await csms.wait_for("StopTransaction", timeout=30)
        assert stop.payload["transactionId"] == tx_id
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        # No second BootNotification on reconnect: nothing about the station changed.
        assert len(csms.messages("BootNotification")) == 1


async def test_remote_stop_before_the_start_answer_is_carried_out(tmp_path: Path, csms: LocalCsms) -> None:
    """The CSMS sends RemoteStopTransaction for the id it is assigning before its StartTransaction answer: the
    station cannot know the id yet (the answer is behind the stop frame), accepts, and stops once the answer names
    it."""
    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config):
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        csms.behaviour.stop_before_start_answer = True
        assert await csms.remote_start(STATION, "TAG-RACE") == "Accepted"
        stop = await csms.wait_for("StopTransaction", timeout=30)
        tx_id = csms.assigned_transaction_ids[0]
        assert csms.raw_results[f"raw-stop-{tx_id}"] == {"status": "Accepted"}
        assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Remote"


async def test_unanswered_start_is_resent_under_the_same_message_id(tmp_path: Path, csms: LocalCsms) -> None:
    """A CSMS that does not answer: the station gives up waiting, drops the connection (nothing after a timeout can be
    trusted to be in order), reconnects without a new boot and sends the same message again, recognisable by its id."""
    raw = config_for(tmp_path, csms.url)
    raw["csms"]["response_timeout"] = 1
    async with running_station(parse_config(raw)) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        csms.behaviour.silent["StartTransaction"] = 1
        assert await csms.remote_start(STATION, "TAG-LATE") == "Accepted"
        await csms.wait_until(lambda: len(csms.messages("StartTransaction")) == 2, timeout=30)
        first, second = csms.messages("StartTransaction")
        assert first.unique_id == second.unique_id and first.payload == second.payload
        assert len(csms.messages("BootNotification")) == 1
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        assert csms.connections == 2 and len(csms.assigned_transaction_ids) == 1
