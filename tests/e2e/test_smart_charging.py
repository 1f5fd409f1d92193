"""Smart charging end to end (issue 19): a real LocalCsms on loopback sends charging profiles; the station stores them,
works out the composite schedule and carries the limit out as the simulated charge controller's maximum current,
both OCPP versions. The car behind the controller is driven through its control socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from ocpp.v201 import call as call201

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from tests.e2e.test_ev_side import car, status

pytestmark = pytest.mark.slow  # a car charging, a boundary of a schedule passing, a restart

STATION = "CP-SMART"


def config(tmp_path: Path, csms: LocalCsms, version: str, driver: str = "simulated") -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": csms.url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "baudrate": 115200,
            "simulator": {"state": str(tmp_path / "m.json"), "signing_time": 0.1},
        },
        "charge_controller": {"driver": driver, "control_socket": str(tmp_path / "car.sock")},
        "storage": {"path": str(tmp_path / "s.db")},
    }


@asynccontextmanager
async def smart_station(
    tmp_path: Path, version: str, csms: LocalCsms, driver: str = "simulated"
) -> AsyncIterator[None]:
    mark = len(csms.received)
    async with running_station(parse_config(config(tmp_path, csms, version, driver))):
        await csms.wait_for("StatusNotification", lambda p: status(p) == "Available", after=mark)
        yield


def at(seconds: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds").replace("+00:00", "Z")


def profile(
    version: str,
    profile_id: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    stack_level: int = 0,
    transaction_id: str | None = None,
    kind: str = "Absolute",
    start: str | None = None,
    unit: str = "A",
) -> dict[str, Any]:
    """A charging profile as the CSMS sends it, in the library's snake_case (it sends camelCase)."""
    schedule: dict[str, Any] = {
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": s, "limit": limit} for s, limit in periods],
    }
    if kind != "Relative":
        schedule["start_schedule"] = start or at(-1)
    if version == "1.6":
        purpose = "ChargePointMaxProfile" if purpose == "ChargingStationMaxProfile" else purpose
        body: dict[str, Any] = {"charging_profile_id": profile_id, "charging_schedule": schedule}
    else:
        body = {"id": profile_id, "charging_schedule": [{"id": profile_id, **schedule}]}
    body |= {"stack_level": stack_level, "charging_profile_purpose": purpose, "charging_profile_kind": kind}
    if transaction_id is not None:
        body["transaction_id"] = int(transaction_id) if version == "1.6" else transaction_id
    return body


def with_start(body: dict[str, Any]) -> dict[str, Any]:
    """A Relative profile with a startSchedule (K01.FR.41: it must have none)."""
    schedule = body["charging_schedule"]
    (schedule if isinstance(schedule, dict) else schedule[0])["start_schedule"] = at()
    return body


async def set_profile(csms: LocalCsms, version: str, evse: int, body: dict[str, Any], *, validate: bool = True) -> Any:
    side = csms.stations[STATION]
    if version == "1.6":
        message: Any = call.SetChargingProfile(connector_id=evse, cs_charging_profiles=body)
    else:
        message = call201.SetChargingProfile(evse_id=evse, charging_profile=body)
    return await side.call(message, suppress=False, skip_schema_validation=not validate)


async def clear_profile(csms: LocalCsms, version: str, profile_id: int) -> str:
    side = csms.stations[STATION]
    if version == "1.6":
        result: Any = await side.call(call.ClearChargingProfile(id=profile_id), suppress=False)
    else:
        result = await side.call(call201.ClearChargingProfile(charging_profile_id=profile_id), suppress=False)
    return str(result.status)


async def composite(csms: LocalCsms, version: str, evse: int, duration: int = 600) -> Any:
    side = csms.stations[STATION]
    if version == "1.6":
        return await side.call(call.GetCompositeSchedule(connector_id=evse, duration=duration), suppress=False)
    return await side.call(call201.GetCompositeSchedule(evse_id=evse, duration=duration), suppress=False)


def periods_of(result: Any, version: str) -> list[tuple[int, float]]:
    schedule = result.charging_schedule if version == "1.6" else result.schedule
    return [(p["start_period"], float(p["limit"])) for p in schedule["charging_schedule_period"]]


async def limit_becomes(socket: str, amps: float, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while (await car(socket, "state"))["state"]["current_limit_a"] != amps:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.1)


async def charging_state(csms: LocalCsms, version: str, state: str, after: int) -> None:
    """1.6 StatusNotification (§7.7 ChargePointStatus), 2.0.1 TransactionEvent chargingState (E02)."""
    if version == "1.6":
        await csms.wait_for("StatusNotification", lambda p: p["status"] == state, after=after)
    else:
        await csms.wait_for(
            "TransactionEvent", lambda p: p["transactionInfo"].get("chargingState") == state, after=after
        )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_profiles_limit_the_car_suspend_it_at_zero_and_clearing_resumes(tmp_path: Path, version: str) -> None:
    """1.6 §3.13 / §5.16, 2.0.1 K01 / K08 / K10 (TC_K_01_CS, TC_K_10_CS style): a ChargePointMax of 16 A and a
    TxDefault of 10 A give the car 10 A; a TxProfile that drops to 0 A at a boundary suspends it (SuspendedEVSE);
    clearing the TxProfile (K10.FR.05: recalculated at once) gives it its 10 A back. GetCompositeSchedule shows the
    same limits (K08.FR.02/04). 2.0.1: a change beyond SmartChargingCtrlr.LimitChangeSignificance is a
    TransactionEvent Updated with triggerReason ChargingRateChanged."""
    socket = str(tmp_path / "car.sock")
    csms = await LocalCsms().start()
    try:
        async with smart_station(tmp_path, version, csms):
            side_max = profile(version, 1, "ChargingStationMaxProfile", [(0, 16)])
            assert str((await set_profile(csms, version, 0, side_max)).status) == "Accepted"
            tx_default = profile(version, 2, "TxDefaultProfile", [(0, 10)])
            assert str((await set_profile(csms, version, 0, tx_default)).status) == "Accepted"
            await limit_becomes(socket, 10)  # offered before any car: the next one starts at 10 A
            await car(socket, "plug")
            await car(socket, "ready")
            await csms.start_session(STATION, "TAG-1")
            _start, tx_id = await csms.wait_session_started(STATION)
            await charging_state(csms, version, "Charging", 0)
            assert (await car(socket, "state"))["state"]["current_limit_a"] == 10
            assert periods_of(await composite(csms, version, 1), version)[0][1] == 10

            mark = len(csms.received)
            tx_profile = profile(version, 3, "TxProfile", [(0, 8), (3, 0)], stack_level=1, transaction_id=tx_id)
            assert str((await set_profile(csms, version, 1, tx_profile)).status) == "Accepted"
            await limit_becomes(socket, 8)
            if version == "2.0.1":  # 10 A -> 8 A is more than LimitChangeSignificance (10 %): TriggerReasonEnumType
                await csms.wait_for(
                    "TransactionEvent", lambda p: p["triggerReason"] == "ChargingRateChanged", after=mark
                )
            await charging_state(csms, version, "SuspendedEVSE", mark)  # the boundary at 3 s: 0 A
            assert (await car(socket, "state"))["state"]["current_limit_a"] == 0

            mark = len(csms.received)
            assert await clear_profile(csms, version, 3) == "Accepted"
            await charging_state(csms, version, "Charging", mark)
            await limit_becomes(socket, 10)
            assert await clear_profile(csms, version, 3) == "Unknown"  # K10.FR.01, 1.6 §6.14
            mark = len(csms.received)
            await csms.stop_session(STATION, tx_id)
            await csms.wait_session_ended(STATION, after=mark)
    finally:
        await csms.stop()
    assert csms.violations == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_bad_profiles_are_rejected_and_change_nothing(tmp_path: Path, version: str) -> None:
    """1.6 §5.16 / §9.4 and 2.0.1 K01.FR.09 (TxProfile without a transaction), K01.FR.26 (unknown unit: the
    schema's enum refuses it first), K01.FR.31 / FR.35 (first period not at 0, periods out of order: overlapping),
    validFrom after validTo, more periods than ChargingScheduleMaxPeriods / PeriodsPerSchedule, a stackLevel beyond
    ChargeProfileMaxStackLevel / ProfileStackLevel: each is Rejected and the composite schedule is unchanged."""
    csms = await LocalCsms().start()
    try:
        async with smart_station(tmp_path, version, csms):
            good = profile(version, 1, "TxDefaultProfile", [(0, 12)])
            assert str((await set_profile(csms, version, 0, good)).status) == "Accepted"
            before = periods_of(await composite(csms, version, 1), version)
            bad = [  # (EVSE / connector, profile)
                (1, profile(version, 5, "TxProfile", [(0, 6)], transaction_id="1" if version == "1.6" else "none")),
                (0, profile(version, 6, "TxDefaultProfile", [(10, 6)], stack_level=1)),
                (0, profile(version, 7, "TxDefaultProfile", [(0, 6), (600, 8), (300, 7)], stack_level=1)),
                (0, {**profile(version, 8, "TxDefaultProfile", [(0, 6)]), "valid_from": at(3600), "valid_to": at(60)}),
                (0, profile(version, 10, "TxDefaultProfile", [(0, 6)], stack_level=99)),
                (1, profile(version, 12, "ChargingStationMaxProfile", [(0, 6)], stack_level=4)),
            ]
            if version == "2.0.1":  # K01.FR.41; 1.6 §7.13 lets a Relative schedule have a startSchedule
                relative = profile(version, 11, "TxDefaultProfile", [(0, 6)], kind="Relative", stack_level=3)
                bad.append((0, with_start(relative)))
            for evse, body in bad:
                result = await set_profile(csms, version, evse, body)
                assert str(result.status) == "Rejected", body
                if version == "2.0.1":
                    assert result.status_info and result.status_info["reason_code"]
            too_many = profile(version, 9, "TxDefaultProfile", [(i * 60, 10) for i in range(1025)], stack_level=2)
            if version == "1.6":  # 1.6's schema has no bound: ChargingScheduleMaxPeriods (§9.4.3) refuses it
                assert str((await set_profile(csms, version, 0, too_many)).status) == "Rejected"
            else:  # 2.0.1's schema bounds chargingSchedulePeriod at 1024 (= PeriodsPerSchedule): a CALLERROR
                with pytest.raises(OCPPError):
                    await set_profile(csms, version, 0, too_many, validate=False)
            assert periods_of(await composite(csms, version, 1), version) == before
            if version == "1.6":
                keys = await csms.get_configuration(STATION, ["SupportedFeatureProfiles", "ChargeProfileMaxStackLevel"])
                assert "SmartCharging" in keys["SupportedFeatureProfiles"]
                assert keys["ChargeProfileMaxStackLevel"] == "8"
            else:
                side = csms.stations[STATION]
                report = await side.call(
                    call201.GetChargingProfiles(
                        request_id=7, charging_profile={"charging_profile_purpose": "TxDefaultProfile"}
                    ),
                    suppress=False,
                )
                assert str(report.status) == "Accepted"
                sent = await csms.wait_for("ReportChargingProfiles", lambda p: p["requestId"] == 7)
                assert [p["id"] for p in sent.payload["chargingProfile"]] == [1]  # K09.FR.01, only the good one
                assert sent.payload["tbc"] is False and sent.payload["evseId"] == 0
                none = await side.call(
                    call201.GetChargingProfiles(request_id=8, charging_profile={"charging_profile_id": [42]}),
                    suppress=False,
                )
                assert str(none.status) == "NoProfiles"
    finally:
        await csms.stop()
    assert csms.violations == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_profiles_survive_a_restart_and_the_same_limit_applies(tmp_path: Path, version: str) -> None:
    """1.6 §3.13 (profiles are kept), 2.0.1 K01.FR.27 (persistent across reboots): the daemon stopped in the middle
    of a profile and started again offers the car the limit in force, before the CSMS says anything."""
    socket = str(tmp_path / "car.sock")
    csms = await LocalCsms().start()
    try:
        async with smart_station(tmp_path, version, csms):
            body = profile(version, 4, "TxDefaultProfile", [(0, 13), (3600, 7)], start=at(-60))
            assert str((await set_profile(csms, version, 0, body)).status) == "Accepted"
            await limit_becomes(socket, 13)
        async with smart_station(tmp_path, version, csms):
            await limit_becomes(socket, 13)
            periods = periods_of(await composite(csms, version, 1, duration=7200), version)
            assert [limit for _, limit in periods][:2] == [13, 7]
    finally:
        await csms.stop()
    assert csms.violations == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_remote_start_with_a_profile_charges_by_it(tmp_path: Path, version: str) -> None:
    """1.6 §5.16.2 (RemoteStartTransaction with a TxProfile, no transactionId), 2.0.1 K05.FR.02/03
    (RequestStartTransaction with a TxProfile): the transaction charges by that profile; it goes when the
    transaction ends (1.6 §3.13.1, K01: a TxProfile is for its transaction only)."""
    socket = str(tmp_path / "car.sock")
    csms = await LocalCsms().start()
    try:
        async with smart_station(tmp_path, version, csms):
            await car(socket, "plug")
            await car(socket, "ready")
            body = profile(version, 21, "TxProfile", [(0, 9)], kind="Relative")
            side = csms.stations[STATION]
            if version == "1.6":
                answer: Any = await side.call(
                    call.RemoteStartTransaction(id_tag="TAG-2", connector_id=1, charging_profile=body), suppress=False
                )
            else:
                answer = await side.call(
                    call201.RequestStartTransaction(
                        id_token={"id_token": "TAG-2", "type": "Central"},
                        remote_start_id=5,
                        evse_id=1,
                        charging_profile=body,
                    ),
                    suppress=False,
                )
            assert str(answer.status) == "Accepted"
            _start, tx_id = await csms.wait_session_started(STATION)
            await limit_becomes(socket, 9)
            mark = len(csms.received)
            await csms.stop_session(STATION, tx_id)
            await csms.wait_session_ended(STATION, after=mark)
            assert str((await composite(csms, version, 1)).status) == "Accepted"
            assert periods_of(await composite(csms, version, 1), version)[0][1] == 32  # the controller's maximum
    finally:
        await csms.stop()
    assert csms.violations == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_without_current_control_profiles_are_refused_honestly(tmp_path: Path, version: str) -> None:
    """driver = "meter-output" cannot limit the car: 1.6 SetChargingProfile NotSupported (§6.44) and no SmartCharging
    in SupportedFeatureProfiles (§9.1.33); 2.0.1 K01.FR.29 CALLERROR NotSupported and SmartChargingCtrlr.Available
    false."""
    from ocpp.exceptions import NotSupportedError

    csms = await LocalCsms().start()
    try:
        async with smart_station(tmp_path, version, csms, driver="meter-output"):
            body = profile(version, 1, "TxDefaultProfile", [(0, 10)])
            if version == "1.6":
                assert str((await set_profile(csms, version, 0, body)).status) == "NotSupported"
                keys = await csms.get_configuration(STATION, ["SupportedFeatureProfiles"])
                assert "SmartCharging" not in keys["SupportedFeatureProfiles"]
            else:
                with pytest.raises(NotSupportedError):
                    await set_profile(csms, version, 0, body)
                results = await csms.get_variables(
                    STATION, [{"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "Available"}}]
                )
                assert results[0]["attribute_value"] == "false"
    finally:
        await csms.stop()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_profiles_keep_applying_while_the_csms_is_unreachable(tmp_path: Path, version: str) -> None:
    """Issue 19 item 3, offline: the installed profiles are the station's own and keep applying without the CSMS
    (1.6 §3.13: the Charge Point composes its own schedule; 2.0.1 K01.FR.27 and K08.FR.06: the TxDefaultProfile
    applies to a transaction started offline too). A boundary that passes while offline changes the limit."""
    socket = str(tmp_path / "car.sock")
    csms = await LocalCsms().start()
    try:
        async with smart_station(tmp_path, version, csms):
            body = profile(version, 1, "TxDefaultProfile", [(0, 13), (4, 7)], start=at(0))
            assert str((await set_profile(csms, version, 0, body)).status) == "Accepted"
            await limit_becomes(socket, 13)
            await csms.stop()  # no CSMS from here on
            await csms.drop_connections()
            await limit_becomes(socket, 7)
    finally:
        await csms.stop()
