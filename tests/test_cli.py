"""The `station` command as a person or a script uses it, through the real command line (`python -m station ...` in
a child process) against a running daemon (in-process, simulated meter on a real pty pair, real CSMS on loopback,
real diagnostics socket): habits from git, systemctl and journalctl (issue 16, items 1-7)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from station.app import Station, running_station
from station.cli import build_parser
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.diag import client

STATION = "CP-CLI"
ENV = {k: v for k, v in os.environ.items() if k != "STATION_CONFIG"}


def config_for(tmp_path: Path, url: str, **meter: Any) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.2, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.2, "state": str(tmp_path / "m.json")},
            **meter,
        },
        "storage": {"path": str(tmp_path / "s.db")},
        "diagnostics": {"socket": str(tmp_path / "run" / "diag.sock")},
    }


async def cli(
    *args: str, env: dict[str, str] | None = None, stdout: int = -1, timeout: float = 30
) -> tuple[int, str, str]:
    """`python -m station ARGS`: exit status, standard output, standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "station",
        *args,
        stdout=asyncio.subprocess.PIPE if stdout == -1 else stdout,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env={**ENV, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"`station {' '.join(args)}` did not exit within {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, (out or b"").decode(), err.decode()


async def status_of(sock: str) -> dict[str, Any]:
    answer = await asyncio.to_thread(client.ask, sock, {"command": "status"})
    return answer["status"]  # type: ignore[no-any-return]


async def one_session(station: Station, csms: LocalCsms) -> str:
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
    assert await csms.remote_start(STATION, "TAG-CLI") == "Accepted"
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
    await csms.wait_until(lambda: csms.assigned_transaction_ids)
    return str(csms.assigned_transaction_ids[-1])


# ---------------------------------------------------------------------- item 5: the command list, help, version


async def test_station_alone_and_diag_alone_list_the_commands_one_line_each() -> None:
    code, out, _ = await cli()
    assert code == 0
    lines = out.splitlines()
    for command in ("run", "demo", "diag", "export", "config", "verify", "sim", "meter-sim", "nullmodem"):
        [line] = [x for x in lines if x.startswith(f"  {command} ")]
        assert len(line.split(None, 1)[1]) > 10, line  # a line of help each
    assert "config_command" not in out and "{" not in out
    code, out, _ = await cli("diag")
    assert code == 0
    for command in ("status", "meter", "meter-test", "transactions", "transaction", "log", "security-log", "schedule"):
        assert any(x.startswith(f"  {command} ") for x in out.splitlines()), command
    code, out, err = await cli("config")
    assert code == 0 and "check" in out and "config_command" not in out + err
    code, out, _ = await cli("sim")
    assert code == 0 and all(f"  {c} " in out for c in ("csms", "meter", "nullmodem"))


async def test_version() -> None:
    for flag in ("--version", "-V"):
        code, out, _ = await cli(flag)
        assert code == 0 and out.strip() == "station 0.1.0"


def _parsers(parser: argparse.ArgumentParser, path: str = "station") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_parsers(sub, f"{path} {name}"))
    return found


async def test_every_option_has_help_text_and_every_help_works() -> None:
    parsers = _parsers(build_parser())
    assert len(parsers) > 20
    for path, parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help is not argparse.SUPPRESS, f"{path}: {action.option_strings}"
    for path, _ in parsers:
        code, out, err = await cli(*path.split()[1:], "--help")
        assert code == 0 and out.startswith("usage: "), (path, err)


async def test_a_wrong_option_says_where_the_options_are() -> None:
    code, _, err = await cli("diag", "status", "--no-such-option")
    assert code == 2 and "station diag status --help" in err


# ---------------------------------------------------------------------- items 1, 3, 4, 6, 7 against a daemon


async def test_options_after_the_subcommand_log_exits_and_a_closed_pipe_is_quiet(
    tmp_path: Path, csms: LocalCsms
) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == "StartupOfTheDevice")
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)

        # Item 4: options after the subcommand (and still before it).
        for args in (
            ["diag", "status", "--json", "--socket", sock],
            ["diag", "--socket", sock, "status", "--json"],
            ["diag", "--json", "--socket", sock, "status"],
        ):
            code, out, err = await cli(*args)
            assert code == 0, err
            assert json.loads(out)["station_id"] == STATION
        code, out, _ = await cli("diag", "meter", "--socket", sock, "--json")
        assert code == 0 and set(json.loads(out)["readings"]) == {"1-b:1.8.0", "1-b:2.8.0"}
        code, out, _ = await cli("diag", "transactions", "--last", "5", "--json", "--socket", sock)
        assert code == 0 and json.loads(out) == []
        code, out, _ = await cli("diag", "transactions", "--socket", sock)
        assert code == 0 and out.strip() == "no transactions yet"  # item 6: an empty list says so

        # Item 1: `diag log` prints the recent frames and exits, like `journalctl -n`.
        code, out, _ = await cli("diag", "log", "--last", "5", "--socket", sock, timeout=20)
        assert code == 0 and len(out.splitlines()) == 5
        code, out, _ = await cli("diag", "log", "--socket", sock, "--json", timeout=20)
        frames = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and '"BootNotification"' in frames[0]["frame"]

        # ... and `--follow` keeps streaming until Ctrl-C, which ends it quietly.
        follower = await asyncio.create_subprocess_exec(
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
            env=ENV,
        )
        assert follower.stdout is not None and follower.stderr is not None
        await csms.wait_until(lambda: station.connection.trace._followers)
        await csms.change_configuration(STATION, "HeartbeatInterval", "77")
        line = await asyncio.wait_for(follower.stdout.readline(), 10)
        assert "ChangeConfiguration" in line.decode()
        follower.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(follower.wait(), 10) == 130
        assert b"Traceback" not in await follower.stderr.read()

        # Item 6: a running transaction; item 3: a closed pipe.
        csms_id = await one_session(station, csms)
        [report] = (await asyncio.to_thread(client.ask, sock, {"command": "transactions"}))["transactions"]
        short = report["ref"][:8]  # what the web page shows
        code, out, _ = await cli("diag", "transaction", short, "--socket", sock)
        assert code == 0 and report["ref"] in out
        assert "-> running" in out and "None" not in out
        assert "signed record verified: not signed yet" in out and "delivered: running" in out
        read_end, write_end = os.pipe()
        os.close(read_end)  # `| head` that has already gone
        code, _, err = await cli("diag", "transaction", csms_id, "--socket", sock, stdout=write_end)
        os.close(write_end)
        assert code == 141 and err == ""
        read_end, write_end = os.pipe()
        os.close(read_end)
        code, _, err = await cli("diag", "log", "--socket", sock, stdout=write_end)
        os.close(write_end)
        assert code == 141 and err == ""

        await csms.remote_stop(STATION, int(csms_id))
        await csms.wait_for("StopTransaction")
        await station.runtime.idle()
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        code, out, _ = await cli("diag", "transaction", short, "--socket", sock)
        assert code == 0 and "signed record verified: yes" in out and "running" not in out.splitlines()[0]
        code, _, err = await cli("diag", "transaction", "ffffffff", "--socket", sock)
        assert code == 1 and "no transaction ffffffff" in err

        # Item 7: found without --config or --socket, through $STATION_CONFIG (the default config path on a station),
        # reading only the socket key: a config with an unrelated mistake still leads to the daemon.
        toml = tmp_path / "station.toml"
        toml.write_text(f'[station]\nid = "X"\nbogus = 1\n[diagnostics]\nsocket = "{sock}"\n')
        code, out, err = await cli("diag", "status", env={"STATION_CONFIG": str(toml)})
        assert code == 0 and out.startswith(f"station {STATION}"), err
        code, out, err = await cli("diag", "status", "--config", str(toml))
        assert code == 0, err


async def test_without_a_config_the_message_says_what_to_give(tmp_path: Path) -> None:
    # This machine has no /etc/station/station.toml and no /run/station/diag.sock.
    assert not Path("/etc/station/station.toml").exists() and not Path("/run/station/diag.sock").exists()
    code, _, err = await cli("diag", "status")
    assert code == 2 and "--config" in err and "--socket" in err and "Traceback" not in err
    code, _, err = await cli("diag", "status", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read" in err


# ---------------------------------------------------------------------- items 2 and 6: what is down, in plain words


async def test_status_exit_codes_and_plain_words_and_a_missing_port_in_one_line(
    tmp_path: Path, csms: LocalCsms
) -> None:
    """Exit 0 when all is up (above), 3 CSMS down, 4 meter down, 5 both; the errors in words a technician reads."""
    missing_port = str(tmp_path / "ttyUSB9")
    # Both down: nothing listens on the CSMS port, and the serial port does not exist.
    closed = LocalCsms()
    await closed.start()
    closed_url = closed.url
    await closed.stop()
    config = parse_config(config_for(tmp_path, closed_url, transport="rtu", port=missing_port))
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_until(lambda: station.connection.state.last_error != "")
        code, out, _ = await cli("diag", "status", "--socket", sock)
        assert code == 5, out
        port = closed_url.split(":")[2].split("/")[0]
        assert f"last error: the CSMS refused the connection: nothing listens on 127.0.0.1:{port}" in out
        assert "Errno" not in out and "ConnectionRefusedError" not in out

        # Item 2: the cause first, one line, the same length each time, and advice that fits a missing port.
        outputs = []
        for _ in range(3):
            code, out, _ = await cli("diag", "meter-test", "--socket", sock)
            assert code == 1
            outputs.append(re.sub(r"\(\d+ ms\)", "(N ms)", out))  # the round trips may differ
        assert outputs[0] == outputs[1] == outputs[2]
        steps = [line for line in outputs[0].splitlines() if "[FAIL]" in line]
        assert len(steps) == 3
        for line in steps:
            error = line.split("): ", 1)[1]
            assert error.startswith(f"cannot open serial port {missing_port}: no such device"), line
            assert len(error) < 200 and "no valid answer" not in error
        verdict = outputs[0].splitlines()[-1]
        assert verdict.startswith("FAIL: cannot open serial port") and "A/B" not in verdict and "plugged in" in verdict
        status = await status_of(sock)
        assert status["meter"]["last_error"].startswith(f"cannot open serial port {missing_port}")
        assert "\n" not in status["meter"]["last_error"] and len(status["meter"]["last_error"]) < 200

    # Meter down only.
    config = parse_config(config_for(tmp_path, csms.url, transport="rtu", port=missing_port))
    async with running_station(config):
        await csms.wait_for("BootNotification")
        code, out, _ = await cli("diag", "status", "--socket", sock)
        assert code == 4, out

    # CSMS down only: a host name that does not resolve (.invalid never does, RFC 2606).
    config = parse_config(config_for(tmp_path, "ws://csms.invalid:9000/ocpp"))
    async with running_station(config) as station:
        await csms.wait_until(lambda: station.connection.state.last_error != "")
        code, out, _ = await cli("diag", "status", "--socket", sock)
        assert code == 3, out
        assert "last error: CSMS host name not found: csms.invalid" in out and "gaierror" not in out
        code, out, _ = await cli("diag", "status", "--json", "--socket", sock)
        assert code == 3 and json.loads(out)["ocpp"]["last_error_detail"].startswith("gaierror")


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("gaierror: [Errno -3] Temporary failure in name resolution", "cannot look up the CSMS host name csms.x"),
        ("TimeoutError: timed out during opening handshake", "the CSMS at csms.x:9000 did not answer in time"),
        ("OSError: [Errno 113] No route to host", "no network route to the CSMS at csms.x:9000"),
        ("InvalidStatus: server rejected WebSocket connection: HTTP 404", "the CSMS answered HTTP 404"),
        ("InvalidStatus: server rejected WebSocket connection: HTTP 401", "the CSMS refused this station"),
        ("InvalidMessage: did not receive a valid HTTP response", "the server at csms.x:9000 does not speak WebSocket"),
    ],
)
def test_other_connection_errors_in_plain_words(raw: str, plain: str) -> None:
    from station.diag.server import plain_csms_error

    assert plain_csms_error(raw, "ws://csms.x:9000/ocpp/CP").startswith(plain)


async def test_on_a_station_diag_needs_no_option(
    tmp_path: Path, csms: LocalCsms, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 7 on the paths of a real station (/etc/station/station.toml, /run/station/diag.sock), moved into the
    test's directory: the socket named in the default config; without a readable config, the unit's socket."""
    from station.cli import main

    config = parse_config(config_for(tmp_path, csms.url))
    sock = config.diagnostics.socket
    default_config = tmp_path / "etc" / "station.toml"
    default_config.parent.mkdir()
    default_config.write_text(f'[diagnostics]\nsocket = "{sock}"\n')
    monkeypatch.delenv("STATION_CONFIG", raising=False)
    monkeypatch.setattr(client, "DEFAULT_CONFIG", str(default_config))
    monkeypatch.setattr(client, "DEFAULT_SOCKET", str(tmp_path / "run" / "diag.sock"))
    async with running_station(config):
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        capsys.readouterr()  # the in-process daemon logs on the same stdout
        assert await asyncio.to_thread(main, ["diag", "status"]) == 0
        assert f"station {STATION}" in capsys.readouterr().out.splitlines()
        default_config.unlink()  # not readable to this technician: the unit's socket
        assert await asyncio.to_thread(main, ["diag", "status", "--json"]) == 0
        assert f'"station_id": "{STATION}"' in capsys.readouterr().out


async def test_diag_schedule_plain_and_json(tmp_path: Path, csms: LocalCsms) -> None:
    """Issue 19 part 5: `station diag schedule` says each EVSE's limit now and which profile sets it, lists the
    profiles that apply and prints the next 24 h as a table (local time and UTC); --json prints the report; an
    unknown EVSE exits 1 with the reason."""
    from tests.diag.test_diag_socket import profiles_for_the_schedule

    raw = config_for(tmp_path, csms.url)
    raw["charge_controller"] = {"driver": "simulated", "control_socket": str(tmp_path / "car.sock")}
    config = parse_config(raw)
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        code, out, err = await cli("diag", "schedule", "--socket", sock)
        hardware = station.runtime.smart.evses[1].max_current_a
        assert code == 0, err
        assert (
            out == f"EVSE 1 (simulated, {hardware:g} A max, 3 phases): no charging profiles: the controller's "
            f"maximum {hardware:g} A\n"
        )

        for profile in profiles_for_the_schedule():
            assert station.runtime.smart.install(profile, ocpp16=True) is None
        code, out, err = await cli("diag", "schedule", "--evse", "1", "--socket", sock)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].endswith("limit now: 10 A (profile 2 TxDefaultProfile, stack level 0)"), out
        assert lines[1] == "  profiles that apply:"
        assert lines[2].startswith("    profile 5 ChargingStationMaxProfile, stack level 1, EVSE 0, Absolute, in A, ")
        assert re.search(r"valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC$", lines[2])
        assert lines[3].startswith("    profile 2 TxDefaultProfile, stack level 0, every EVSE, Absolute, in A, ")
        assert lines[3].endswith(", 2 period(s), valid always")
        assert re.fullmatch(r"  next 24 h from \w{3} \d\d:\d\d local \(\d\d:\d\d UTC\):", lines[4])
        assert lines[5].split() == ["from", "(local)", "from", "(UTC)", "limit"]
        rows = [line.split() for line in lines[6:]]
        assert [row[4:] for row in rows] == [["10", "A,", "3", "phases"], ["16", "A,", "3", "phases"]], out
        assert all(re.fullmatch(r"\d\d:\d\d", row[1]) and re.fullmatch(r"\d\d:\d\d", row[3]) for row in rows)

        code, out, err = await cli("diag", "schedule", "--json", "--socket", sock)
        report = json.loads(out)
        assert code == 0 and report["evses"][0]["set_by"] == [2] and report["station"]["station_cap_a"] == 25.0
        code, out, err = await cli("diag", "schedule", "--evse", "0", "--socket", sock)
        assert code == 0 and out.startswith("station (all EVSEs): the station maximum caps the sum at 25 A now\n")
        code, out, err = await cli("diag", "schedule", "--evse", "7", "--socket", sock)
        assert code == 1 and out == "" and '"evse" must be one of the EVSE ids 1' in err
