"""The technician's diagnostics socket against a running station (in-process daemon, simulated meter on a real pty
pair, real CSMS on loopback): status answers the three questions — is the meter OK, is the CSMS reachable, did the
last session get signed and delivered — and nothing on the socket changes state."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.app import running_station
from station.cli import main
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.diag import client
from station.diag.server import MAX_SCHEDULE_PERIODS
from station.meter import ocmf
from station.meter.transparency import read_transparency_xml
from station.smart.profiles import ChargingProfile, Kind, Period, Purpose, RateUnit, Schedule

STATION = "CP-DIAG"


def config_for(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.2, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.2, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
        "diagnostics": {"socket": str(tmp_path / "run" / "diag.sock")},
    }


async def ask(path: str, request: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(client.ask, path, request)


async def test_status_meter_and_transactions_over_the_socket(tmp_path: Path, csms: LocalCsms) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == "StartupOfTheDevice")
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660

        status = (await ask(sock, {"command": "status"}))["status"]
        assert status["ocpp"]["connected"] is True and status["ocpp"]["version"] == "1.6"
        assert status["ocpp"]["queue_depth"] == 0
        assert status["meter"]["link"] == "up" and status["meter"]["model"] == "smartme"
        assert status["meter"]["public_key"].startswith("3059")
        assert status["connectors"] == [
            {"id": 1, "evse_id": 1, "connector_id": 1, "state": "Available", "phase": "available", "transaction": None}
        ]

        test = (await ask(sock, {"command": "meter-test"}))["meter_test"]
        assert test["ok"] is True and len(test["steps"]) == 3

        meter = (await ask(sock, {"command": "meter"}))["meter"]
        assert set(meter["readings"]) == {"1-b:1.8.0", "1-b:2.8.0"}

        assert await csms.remote_start(STATION, "TAG-D") == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        status = (await ask(sock, {"command": "status"}))["status"]
        assert status["connectors"][0]["state"] == "Charging"
        assert status["connectors"][0]["transaction"]["id_tag"] == "TAG-D"
        await csms.wait_until(lambda: csms.assigned_transaction_ids)
        await csms.remote_stop(STATION, csms.assigned_transaction_ids[-1])
        await csms.wait_for("StopTransaction")
        await station.runtime.idle()
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)

        txs = (await ask(sock, {"command": "transactions", "last": 5}))["transactions"]
        assert len(txs) == 1 and txs[0]["verified"] is True and txs[0]["delivered_at"]
        assert txs[0]["records"][0]["data"].startswith("OCMF|")
        one = await ask(sock, {"command": "transaction", "id": str(csms.assigned_transaction_ids[-1])})
        assert one["transaction"]["ref"] == txs[0]["ref"]

        # `station export`: the Transparenzsoftware's container, with a record that verifies with the key in it.
        out = tmp_path / "bill.xml"
        csms_id = str(csms.assigned_transaction_ids[-1])
        argv = ["export", "--socket", sock, "--transaction", csms_id, "--out", str(out)]
        assert await asyncio.to_thread(main, argv) == 0
        [entry] = read_transparency_xml(out.read_text())
        assert entry.ocmf == txs[0]["records"][0]["data"] and entry.public_key
        assert ocmf.verify(ocmf.parse(entry.ocmf), entry.public_key).valid
        assert await asyncio.to_thread(main, ["export", "--socket", sock, "--transaction", "nope"]) == 1


async def test_ocpp_log_shows_recent_frames_and_follows_new_ones(tmp_path: Path, csms: LocalCsms) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        recent = (await ask(sock, {"command": "log", "last": 500}))["log"]
        assert recent[0]["direction"] == "out" and '"BootNotification"' in recent[0]["frame"]
        assert client.format_frame(recent[0]).split()[1:3] == ["->", "CALL"]

        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        lines: list[dict[str, Any]] = []

        def read_until_answered() -> None:
            call_id = None
            for line in client.follow(sock, {"command": "log", "last": 0, "follow": True}):
                lines.append(line)
                frame = json.loads(line["frame"]["frame"]) if "frame" in line else None
                if frame and frame[0] == 2 and frame[2] == "ChangeConfiguration":
                    call_id = frame[1]
                if frame and frame[0] == 3 and frame[1] == call_id:
                    return

        follower = asyncio.create_task(asyncio.to_thread(read_until_answered))
        await csms.wait_until(lambda: len(lines) >= 1)  # the first answer: no old frames asked for
        assert lines[0]["log"] == []
        await csms.change_configuration(STATION, "AuthorizationKey", "a-new-secret-0123456789")
        await asyncio.wait_for(follower, 10)
        frames = [x["frame"] for x in lines[1:]]
        [call] = [f for f in frames if '"ChangeConfiguration"' in f["frame"]]
        assert call["direction"] == "in" and "a-new-secret" not in call["frame"]  # secrets masked in the trace too
        assert frames[-1]["direction"] == "out" and client.format_frame(frames[-1]).split()[2] == "RESULT"

        events = (await ask(sock, {"command": "security-log"}))["security_log"]
        assert [e["type"] for e in events][:2] == ["ReconfigurationOfSecurityParameters", "StartupOfTheDevice"]


async def test_bad_requests_get_errors_and_change_nothing(tmp_path: Path, csms: LocalCsms) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == "StartupOfTheDevice")
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)  # so that nothing changes by itself
        before = station.store.outbox_depth()
        reader, writer = await asyncio.open_unix_connection(sock)
        for line in (
            b"not json\n",
            b"[1,2]\n",
            b'{"command": 5}\n',
            b'{"command": "start"}\n',
            b'{"command": "transactions", "last": "x"}\n',
            b'{"command": "transaction"}\n',
        ):
            writer.write(line)
            await writer.drain()
            answer = json.loads(await reader.readline())
            assert answer["ok"] is False and answer["error"]
        writer.close()
        assert station.store.outbox_depth() == before
        assert station.runtime.core.evses[1].transaction is None
        # Issue 19 part 5: without a charge controller (meter-output) the schedule says the current is not controlled.
        [evse] = (await ask(sock, {"command": "schedule"}))["schedule"]["evses"]
        assert evse["controllable"] is False and evse["applied_a"] is None
        assert client.limit_text(evse).startswith("its current cannot be controlled (charge controller meter-output)")
        with pytest.raises(client.DiagError, match="no transaction"):
            await ask(sock, {"command": "transaction", "id": "nope"})
    assert not Path(sock).exists()


async def test_hostile_clients_get_an_answer_and_are_bounded(tmp_path: Path, csms: LocalCsms) -> None:
    """Issue 14.9 through the real Unix socket: a request nested 2,000 deep (4 KB) gets an error answer, not a
    RecursionError; an over-long line gets an error answer, not a silent drop; a client that says nothing is timed
    out; a client more than the cap is told so and closed."""
    from station.diag.server import MAX_DEPTH, MAX_REQUEST, DiagnosticsServer

    config = parse_config(config_for(tmp_path, csms.url))
    async with running_station(config) as station:
        sock = str(tmp_path / "hostile.sock")
        server = DiagnosticsServer(station, sock, idle_timeout=0.5, max_clients=3)
        await server.start()
        try:

            async def exchange(line: bytes) -> tuple[dict[str, Any], bytes]:
                reader, writer = await asyncio.open_unix_connection(sock)
                writer.write(line)
                await writer.drain()
                answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
                rest = await asyncio.wait_for(reader.read(), 5)  # b"" once the server has hung up
                writer.close()
                return answer, rest

            deep = b"[" * 2000 + b"]" * 2000 + b"\n"
            assert len(deep) < MAX_REQUEST
            answer, _ = await exchange(deep)
            assert answer == {"ok": False, "error": f"request nested deeper than {MAX_DEPTH} levels"}
            deep_object = b'{"command": "status", "x": ' + b'{"a": ' * 500 + b"1" + b"}" * 500 + b"}\n"
            answer, _ = await exchange(deep_object)
            assert answer["ok"] is False and "nested" in answer["error"]
            # Brackets inside strings are not nesting: a normal request with them still works.
            answer, _ = await exchange(b'{"command": "transaction", "id": "[[[[[[[[[[[[{{{{{{{{{{"}\n')
            assert answer == {"ok": False, "error": "no transaction [[[[[[[[[[[[{{{{{{{{{{"}

            answer, rest = await exchange(b'{"command": "' + b"x" * (2 * MAX_REQUEST) + b'"}\n')
            assert answer == {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"} and rest == b""

            # Idle: the server says why and hangs up.
            reader, writer = await asyncio.open_unix_connection(sock)
            answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert answer["ok"] is False and "no request" in answer["error"]
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

            # Cap: three clients at once are served; the fourth is told so and closed; the slots come back.
            held = [await asyncio.open_unix_connection(sock) for _ in range(3)]
            await csms.wait_until(lambda: server.clients == 3)
            answer, rest = await exchange(b'{"command": "status"}\n')
            assert answer == {"ok": False, "error": "too many clients at once (3)"} and rest == b""
            for _, w in held:
                w.close()
            await csms.wait_until(lambda: server.clients == 0)
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(b'{"command": "status"}\n')
            assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
            writer.close()
        finally:
            await server.close()


async def test_a_follower_dropped_for_lagging_is_told_why(tmp_path: Path, csms: LocalCsms) -> None:
    """The trace drops a follower that falls behind (issue 14.3); the diagnostics socket then tells `diag log -f` why
    instead of just hanging up, and the command exits 1 with the reason."""
    config = parse_config(config_for(tmp_path, csms.url))
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        trace = station.connection.trace
        trace._follower_backlog = 4
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "station",
            "diag",
            "log",
            "-f",
            "--last",
            "0",
            "--socket",
            sock,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await csms.wait_until(lambda: trace._followers)
        for i in range(10):  # in one go: the server's loop cannot take them out in between
            trace.record("in", json.dumps([2, str(i), "DataTransfer", {"vendorId": "x"}]))
        _, err = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 1
        assert "log --follow: more than 4 frames behind; dropped" in err.decode(), err
        assert not trace._followers


def smart_config(tmp_path: Path, url: str) -> dict[str, Any]:
    """A station whose EVSE's current can be controlled (a simulated charge controller, no car plugged in)."""
    return config_for(tmp_path, url) | {
        "charge_controller": {"driver": "simulated", "control_socket": str(tmp_path / "car.sock")}
    }


def profiles_for_the_schedule() -> list[ChargingProfile]:
    """A TxDefaultProfile for every EVSE (10 A now, 16 A in two hours) and a ChargingStationMaxProfile of 25 A."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        ChargingProfile(
            2,
            0,
            0,
            Purpose.TX_DEFAULT,
            Kind.ABSOLUTE,
            Schedule(RateUnit.A, (Period(0, 10.0), Period(60 + 7200, 16.0)), start=now - timedelta(seconds=60)),
        ),
        ChargingProfile(
            5,
            0,
            1,
            Purpose.STATION_MAX,
            Kind.ABSOLUTE,
            Schedule(RateUnit.A, (Period(0, 25.0),), start=now - timedelta(seconds=60)),
            valid_to=now + timedelta(days=2),
        ),
    ]


async def test_schedule_shows_the_limit_now_the_profiles_and_the_next_24_hours(tmp_path: Path, csms: LocalCsms) -> None:
    """Issue 19 part 5: `schedule` answers, per EVSE, the limit handed to the charge controller, the profile that
    sets it, the profiles installed (in the store, through the runtime), and the composite schedule of the next 24 h;
    bad "evse" values get an error and change nothing."""
    config = parse_config(smart_config(tmp_path, csms.url))
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        report = (await ask(sock, {"command": "schedule"}))["schedule"]
        [evse] = report["evses"]
        assert report["available"] is True and report["installed"] == 0
        assert evse["controllable"] is True and evse["controller"] == "simulated" and evse["profiles"] == []
        assert evse["applied_a"] is None  # no profile: the controller's maximum
        assert [(p["start"], p["limit"]) for p in evse["schedule"]["periods"]] == [(0, evse["max_current_a"])]
        assert client.limit_text(evse) == f"no charging profiles: the controller's maximum {evse['max_current_a']:g} A"

        for profile in profiles_for_the_schedule():
            assert station.runtime.smart.install(profile, ocpp16=True) is None
        assert sorted(p.id for p in station.store.charging_profiles()) == [2, 5]

        report = (await ask(sock, {"command": "schedule", "evse": 1}))["schedule"]
        [evse] = report["evses"]
        assert report["station"] is None and report["installed"] == 2
        assert evse["applied_a"] == 10.0 and evse["profile_limit_a"] == 10.0 and evse["set_by"] == [2]
        assert [(p["id"], p["purpose"]) for p in evse["profiles"]] == [
            (5, "ChargingStationMaxProfile"),
            (2, "TxDefaultProfile"),
        ]
        station_max = evse["profiles"][0]
        assert station_max["stack_level"] == 1 and station_max["kind"] == "Absolute" and station_max["valid_now"]
        assert station_max["valid_to"] is not None and station_max["valid_from"] is None
        schedule = evse["schedule"]
        assert schedule["duration"] == 86400 and schedule["unit"] == "A" and not schedule["truncated"]
        [(first, ten), (later, sixteen)] = [(p["start"], p["limit"]) for p in schedule["periods"]]
        assert first == 0 and ten == 10.0 and 7190 <= later <= 7200 and sixteen == 16.0
        at = datetime.fromisoformat(schedule["periods"][1]["at"])
        assert at - datetime.fromisoformat(schedule["start"]) == timedelta(seconds=later)
        assert client.limit_text(evse) == "limit now: 10 A (profile 2 TxDefaultProfile, stack level 0)"

        whole = (await ask(sock, {"command": "schedule", "evse": 0}))["schedule"]
        assert whole["evses"] == [] and whole["station"]["station_cap_a"] == 25.0
        assert [p["id"] for p in whole["station"]["profiles"]] == [5]
        assert whole["station"]["schedule"]["periods"][0]["limit"] == 10.0  # the one EVSE's limit, under the cap

        for bad in ('"1"', "9", "-1", "true", "1.0", "[1]", "null"):
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(b'{"command": "schedule", "evse": ' + bad.encode() + b"}\n")
            await writer.drain()
            answer = json.loads(await reader.readline())
            writer.close()
            if bad == "null":  # the same as not asking for one EVSE
                assert answer["ok"] is True and len(answer["schedule"]["evses"]) == 1
            else:
                assert answer == {"ok": False, "error": '"evse" must be one of the EVSE ids 1 (0: the station)'}, bad
        assert sorted(p.id for p in station.store.charging_profiles()) == [2, 5]
        assert station.runtime.smart.applied == {1: 10.0}

        # Bounded: a schedule of 1024 periods a minute apart (alternating 8 A and 12 A) is cut at 1000 periods.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        periods = tuple(Period(60 * i, 8.0 + 4 * (i % 2)) for i in range(1024))
        busy = ChargingProfile(7, 1, 3, Purpose.TX_DEFAULT, Kind.ABSOLUTE, Schedule(RateUnit.A, periods, start=start))
        assert station.runtime.smart.install(busy, ocpp16=True) is None
        [evse] = (await ask(sock, {"command": "schedule", "evse": 1}))["schedule"]["evses"]
        assert evse["schedule"]["truncated"] is True and len(evse["schedule"]["periods"]) == MAX_SCHEDULE_PERIODS
        assert evse["set_by"] == [7] and evse["profiles"][1]["periods"] == 1024
