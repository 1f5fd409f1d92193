"""The EV side end to end (issue 18): a simulated car behind a simulated charge controller, driven through its
control socket as `station sim ev` drives it, a simulated meter that counts only what the car draws, a real
LocalCsms on loopback, both OCPP versions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.sim.ev import ask
from tests.e2e.signed import signed_end_record

pytestmark = pytest.mark.slow  # a meter signing, a car charging, timeouts run out

STATION = "CP-EV"


def status(p: dict[str, Any]) -> Any:
    return p.get("status") or p.get("connectorStatus")


@asynccontextmanager
async def ev_station(
    tmp_path: Path, version: str, *, lock: bool = True, **csms_keys: Any
) -> AsyncIterator[tuple[LocalCsms, str]]:
    csms = await LocalCsms().start()
    socket = str(tmp_path / "car.sock")
    raw = {
        "station": {"id": STATION},
        "csms": {"url": csms.url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1, **csms_keys},
        "meter": {
            "transport": "simulated",
            "baudrate": 115200,
            "simulator": {
                "state": str(tmp_path / "m.json"),
                "ledger": str(tmp_path / "ledger.jsonl"),
                "signing_time": 0.1,
            },
        },
        "charge_controller": {"driver": "simulated", "control_socket": socket, "lock": lock},
        "storage": {"path": str(tmp_path / "s.db")},
    }
    try:
        async with running_station(parse_config(raw)):
            await csms.wait_for("StatusNotification", lambda p: status(p) == "Available")
            yield csms, socket
    finally:
        await csms.stop()
    assert csms.violations == []


async def car(socket: str, cmd: str, **args: Any) -> dict[str, Any]:
    """What `station sim ev --socket PATH CMD` sends."""
    answer = await asyncio.to_thread(ask, socket, {"cmd": cmd, **args})
    assert answer["ok"], answer
    return answer


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_cable_first_card_start_pause_resume_and_the_same_card_stops(tmp_path: Path, version: str) -> None:
    """1.6: Preparing on plug-in (§4.9), a card at the station authorized by the CSMS (§4.1, Authorize), Charging /
    SuspendedEV from the car's pilot, the same card stops it with reason Local (§4.10), Finishing until the cable
    is removed. 2.0.1: Occupied; TransactionEvent Updated ChargingStateChanged with chargingState SuspendedEV /
    Charging (E02, E03); Ended stoppedReason Local, triggerReason StopAuthorized (E06, C01). The signed record covers
    exactly what the car drew."""
    async with ev_station(tmp_path, version) as (csms, socket):
        await car(socket, "plug")
        await csms.wait_for("StatusNotification", lambda p: status(p) in ("Preparing", "Occupied"))
        await car(socket, "card", uid="04A2B3C4")
        start, tx_id = await csms.wait_session_started(STATION)
        assert await csms.wait_for("Authorize")
        if version == "1.6":
            assert start.payload["idTag"] == "04A2B3C4" and start.payload["connectorId"] == 1
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "SuspendedEV")
        else:
            assert start.payload["idToken"] == {"idToken": "04A2B3C4", "type": "ISO14443"}
        await car(socket, "ready")
        if version == "1.6":
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        else:
            await csms.wait_for(
                "TransactionEvent",
                lambda p: (
                    p["triggerReason"] == "ChargingStateChanged"
                    and p["transactionInfo"].get("chargingState") == "Charging"
                ),
            )
        assert (await car(socket, "state"))["state"]["relay"] == "closed"
        await asyncio.sleep(1.0)  # the car draws
        mark = len(csms.received)
        await car(socket, "suspend")
        if version == "1.6":
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "SuspendedEV", after=mark)
        else:
            await csms.wait_for(
                "TransactionEvent",
                lambda p: p["transactionInfo"].get("chargingState") == "SuspendedEV",
                after=mark,
            )
        await car(socket, "ready")
        mark = len(csms.received)
        await car(socket, "card", uid="04A2B3C4")  # the same card: stop
        end = await csms.wait_session_ended(STATION, after=mark)
        if version == "1.6":
            assert end.payload["reason"] == "Local" and str(end.payload["transactionId"]) == tx_id
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "Finishing", after=mark)
        else:
            info = end.payload["transactionInfo"]
            assert info["stoppedReason"] == "Local" and end.payload["triggerReason"] == "StopAuthorized"
        assert (await car(socket, "state"))["state"]["relay"] == "open"
        text, key = signed_end_record(end, version)
        assert ocmf.verify(text, key).valid
        signed = ocmf.parse(text)
        energy = [r.value for r in signed.readings]
        assert energy[-1] > energy[0]  # energy flowed while the relay was closed
        # The meter signed how the identifier was obtained: a card read at the station, checked by the CSMS (OCMF
        # IT / IF), not a remote start's CENTRAL / OCPP_RS.
        assert signed.payload["ID"] == "04A2B3C4" and signed.payload["IT"] == "ISO14443"
        assert signed.payload["IF"] == ["RFID_PLAIN", "OCPP_AUTH"]
        mark = len(csms.received)
        await car(socket, "unplug")
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Available", after=mark)


async def test_authorize_first_without_a_plug_in_time_drops_the_start_16(tmp_path: Path) -> None:
    """1.6 ConnectionTimeOut (§9.1.5): a remote start with no cable plugged in within the timeout is dropped; the
    CSMS hears no StartTransaction; with the car plugged in in time the transaction starts (§5.11 authorize
    first)."""
    async with ev_station(tmp_path, "1.6") as (csms, socket):
        assert await csms.change_configuration(STATION, "ConnectionTimeOut", "2") == "Accepted"
        assert await csms.remote_start(STATION, "TAG-LATE") == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Preparing")
        mark = len(csms.received)
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available", after=mark, timeout=10)
        assert csms.messages("StartTransaction") == []
        assert await csms.remote_start(STATION, "TAG-ON-TIME") == "Accepted"
        await car(socket, "plug")
        start = await csms.wait_for("StartTransaction")
        assert start.payload["idTag"] == "TAG-ON-TIME"


async def test_a_plug_never_authorized_goes_back_to_available_16(tmp_path: Path) -> None:
    """1.6 ConnectionTimeOut: "The Charge Point SHALL go back to the original state, probably: Available"."""
    async with ev_station(tmp_path, "1.6") as (csms, socket):
        assert await csms.change_configuration(STATION, "ConnectionTimeOut", "1") == "Accepted"
        await car(socket, "plug")
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Preparing")
        mark = len(csms.received)
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available", after=mark, timeout=10)


@pytest.mark.parametrize("stop_on_disconnect", ["true", "false"])
async def test_ev_side_disconnect_16(tmp_path: Path, stop_on_disconnect: str) -> None:
    """1.6 StopTransactionOnEVSideDisconnect (§9.1.33), read-write on a station that sees the car: true ends the
    transaction with reason EVDisconnected when the cable is pulled from the car; false lets it go on
    (SuspendedEV)."""
    async with ev_station(tmp_path, "1.6") as (csms, socket):
        key = "StopTransactionOnEVSideDisconnect"
        assert await csms.change_configuration(STATION, key, stop_on_disconnect) == "Accepted"
        await car(socket, "plug")
        assert await csms.remote_start(STATION, "TAG-DISC") == "Accepted"
        await csms.wait_for("StartTransaction")
        await car(socket, "ready")
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        mark = len(csms.received)
        await car(socket, "unplug")
        if stop_on_disconnect == "true":
            stop = await csms.wait_for("StopTransaction", after=mark)
            assert stop.payload["reason"] == "EVDisconnected"
        else:
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "SuspendedEV", after=mark)
            await asyncio.sleep(0.5)
            assert csms.messages("StopTransaction") == []


async def test_unlock_connector_16(tmp_path: Path) -> None:
    """1.6 §5.18: UnlockConnector during a transaction ends it first (reason UnlockCommand) and answers Unlocked;
    with the lock reporting failure, UnlockFailed."""
    async with ev_station(tmp_path, "1.6") as (csms, socket):
        await car(socket, "plug")
        assert await csms.remote_start(STATION, "TAG-UNLOCK") == "Accepted"
        await csms.wait_for("StartTransaction")
        side = csms.stations[STATION]
        from ocpp.v16 import call

        result = await side.call(call.UnlockConnector(connector_id=1), suppress=False)
        assert result.status == "Unlocked"
        stop = await csms.wait_for("StopTransaction")
        assert stop.payload["reason"] == "UnlockCommand"
        await car(socket, "fault", name="lock_failure")
        result = await side.call(call.UnlockConnector(connector_id=1), suppress=False)
        assert result.status == "UnlockFailed"


async def test_unlock_connector_201_refuses_while_a_transaction_runs(tmp_path: Path) -> None:
    """2.0.1 F05.FR.02: OngoingAuthorizedTransaction while a transaction runs on the connector; Unlocked after."""
    async with ev_station(tmp_path, "2.0.1") as (csms, socket):
        from ocpp.v201 import call as call201

        await car(socket, "plug")
        assert await csms.request_start(STATION, "TAG-F05") == "Accepted"
        _, tx_id = await csms.wait_session_started(STATION)
        side = csms.stations[STATION]
        result = await side.call(call201.UnlockConnector(evse_id=1, connector_id=1), suppress=False)
        assert result.status == "OngoingAuthorizedTransaction"
        assert await csms.request_stop(STATION, tx_id) == "Accepted"
        await csms.wait_session_ended(STATION)
        result = await side.call(call201.UnlockConnector(evse_id=1, connector_id=1), suppress=False)
        assert result.status == "Unlocked"


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_an_rcd_trip_faults_the_connector_and_ends_the_transaction_with_its_record(
    tmp_path: Path, version: str
) -> None:
    """A controller fault: StatusNotification Faulted with the matching ChargePointErrorCode (1.6 GroundFailure,
    §7.6) and the transaction ended with its signed record (1.6 reason Other; 2.0.1 stoppedReason GroundFault and a
    NotifyEvent on the RCD component)."""
    async with ev_station(tmp_path, version) as (csms, socket):
        await car(socket, "plug")
        assert await csms.start_session(STATION, "TAG-RCD") == "Accepted"
        await csms.wait_session_started(STATION)
        await car(socket, "ready")
        await asyncio.sleep(0.5)
        mark = len(csms.received)
        await car(socket, "fault", name="rcd", detail="30 mA")
        faulted = await csms.wait_for("StatusNotification", lambda p: status(p) == "Faulted", after=mark)
        end = await csms.wait_session_ended(STATION, after=mark)
        if version == "1.6":
            assert faulted.payload["errorCode"] == "GroundFailure" and end.payload["reason"] == "Other"
        else:
            assert end.payload["transactionInfo"]["stoppedReason"] == "GroundFault"
            event = await csms.wait_for("NotifyEvent", after=mark)
            assert event.payload["eventData"][0]["component"]["name"] == "RCD"
        text, key = signed_end_record(end, version)
        assert ocmf.verify(text, key).valid
        assert await csms.start_session(STATION, "TAG-AGAIN") == "Rejected"  # faulted: no start
        await car(socket, "clear")
        await csms.wait_for("StatusNotification", lambda p: status(p) != "Faulted", after=len(csms.received) - 1)


async def test_station_sim_ev_cli_drives_the_car(tmp_path: Path) -> None:
    """`station sim ev --socket PATH plug|state --json` as a technician types it, in a process of its own."""

    async def sim_ev(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station", "sim", "ev", "--socket", socket, *args, stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    async with ev_station(tmp_path, "1.6") as (csms, socket):
        assert (await sim_ev("plug"))[0] == 0
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Preparing")
        code, out = await sim_ev("state", "--json")
        state = json.loads(out)
        assert code == 0 and state["pilot"] == "B" and state["relay"] == "open"
        assert (await sim_ev("plug"))[0] == 1  # already plugged in: refused


async def test_authorize_first_201_starts_on_the_plug_with_cable_plugged_in(tmp_path: Path) -> None:
    """2.0.1 E03 (authorization first, TxStartPoint PowerPathClosed): the transaction starts when the cable is
    plugged in: TransactionEvent Started with triggerReason CablePluggedIn and chargingState EVConnected; an
    EVConnectionTimeOut that runs out first drops the start (E03.FR.05) and the CSMS hears nothing."""
    async with ev_station(tmp_path, "2.0.1") as (csms, socket):
        variable = {"component": {"name": "TxCtrlr"}, "variable": {"name": "EVConnectionTimeOut"}}
        [result] = await csms.set_variables(STATION, [{**variable, "attribute_value": "2"}])
        assert result["attribute_status"] == "Accepted"
        assert await csms.request_start(STATION, "TAG-GONE", remote_start_id=1) == "Accepted"
        await asyncio.sleep(3.0)
        assert not [m for m in csms.messages("TransactionEvent") if m.payload["eventType"] == "Started"]
        assert await csms.request_start(STATION, "TAG-E03", remote_start_id=2) == "Accepted"
        await car(socket, "plug")
        started, _ = await csms.wait_session_started(STATION)
        assert started.payload["triggerReason"] == "CablePluggedIn"
        assert started.payload["transactionInfo"]["chargingState"] == "EVConnected"


async def test_tx_start_and_stop_points_are_read_write_and_honoured_201(tmp_path: Path) -> None:
    """2.0.1 TxCtrlr.TxStartPoint / TxStopPoint (E01, E06), read-write where the station sees the car: with
    TxStartPoint Authorized the transaction starts at the authorization, before the plug, and EVConnectionTimeOut
    ends it with stoppedReason Timeout (E03.FR.05); with TxStopPoint EnergyTransfer it ends when the car pauses
    (StoppedByEV). A value the station cannot honour (EnergyTransfer as a start point) is Rejected."""
    async with ev_station(tmp_path, "2.0.1") as (csms, socket):

        def var(name: str, value: str) -> dict[str, Any]:
            return {"component": {"name": "TxCtrlr"}, "variable": {"name": name}, "attribute_value": value}

        results = await csms.set_variables(
            STATION,
            [var("TxStartPoint", "Authorized"), var("TxStopPoint", "EnergyTransfer"), var("EVConnectionTimeOut", "2")],
        )
        assert [r["attribute_status"] for r in results] == ["Accepted"] * 3
        [bad] = await csms.set_variables(STATION, [var("TxStartPoint", "EnergyTransfer")])
        assert bad["attribute_status"] == "Rejected"
        assert await csms.request_start(STATION, "TAG-EARLY", remote_start_id=5) == "Accepted"
        await csms.wait_session_started(STATION)  # no car yet: started at the authorization
        end = await csms.wait_session_ended(STATION, timeout=20)
        assert end.payload["transactionInfo"]["stoppedReason"] == "Timeout"
        assert end.payload["triggerReason"] == "EVConnectTimeout"
        mark = len(csms.received)
        await car(socket, "plug")
        assert await csms.request_start(STATION, "TAG-PAUSE", remote_start_id=6) == "Accepted"
        await csms.wait_session_started(STATION, after=mark)
        await car(socket, "ready")
        await csms.wait_for(
            "TransactionEvent", lambda p: p["transactionInfo"].get("chargingState") == "Charging", after=mark
        )
        await car(socket, "suspend")
        end = await csms.wait_session_ended(STATION, after=mark)
        assert end.payload["transactionInfo"]["stoppedReason"] == "StoppedByEV"
        text, key = signed_end_record(end, "2.0.1")
        assert ocmf.verify(text, key).valid


async def test_a_silent_controller_is_a_fault_and_the_record_follows_when_it_answers_16(tmp_path: Path) -> None:
    """A controller that stops answering is a clear fault (Faulted, InternalError), never a crash: the transaction
    is stopped, but the meter ends it only once the controller reports the relay open again (feedback, not a guess),
    and then the signed record is delivered."""
    async with ev_station(tmp_path, "1.6") as (csms, socket):
        await car(socket, "plug")
        assert await csms.remote_start(STATION, "TAG-QUIET") == "Accepted"
        await csms.wait_for("StartTransaction")
        await car(socket, "ready")
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        mark = len(csms.received)
        await car(socket, "fault", name="controller_silent")
        faulted = await csms.wait_for("StatusNotification", lambda p: p["status"] == "Faulted", after=mark)
        assert faulted.payload["errorCode"] == "InternalError"
        await asyncio.sleep(1.0)
        assert csms.messages("StopTransaction") == []  # the relay's state is unknown: the meter keeps metering
        await car(socket, "clear")
        stop = await csms.wait_for("StopTransaction", after=mark, timeout=30)
        assert stop.payload["reason"] == "Other"
        text, key = signed_end_record(stop, "1.6")
        assert ocmf.verify(text, key).valid
