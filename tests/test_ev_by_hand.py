"""The README's EV side as a user meets it: "Trying by hand: the car" run through the real command line (`station sim
csms`, `station run --config` a copy of config/dev-ev.toml whose paths point into the test's directory, `station sim
ev` for each step), and the README's configuration example read by the real config parser."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from station.config import parse_config
from tests.conftest import Process
from tests.test_cli import cli
from tests.test_cli_sim import free_port, until

ROOT = Path(__file__).resolve().parents[1]
DEV_EV = ROOT / "config" / "dev-ev.toml"
README = ROOT / "README.md"


def dev_ev_config(tmp_path: Path, port: int, ocpp: str) -> Path:
    """config/dev-ev.toml with its /tmp/station-dev paths moved into the test's directory and the CSMS port changed."""
    text = DEV_EV.read_text().replace("/tmp/station-dev", str(tmp_path / "dev")).replace(":9000/", f":{port}/")
    text = text.replace('ocpp_version = "1.6"', f'ocpp_version = "{ocpp}"')
    path = tmp_path / "dev-ev.toml"
    path.write_text(text)
    return path


def test_dev_ev_toml_is_the_car_of_the_walkthrough() -> None:
    config = parse_config(tomllib.loads(DEV_EV.read_text()), str(DEV_EV))
    assert config.legacy and [e.id for e in config.evses] == [1]
    cc = config.evse(1).charge_controller
    assert (cc.driver, cc.control_socket, cc.lock, cc.max_current) == (
        "simulated",
        "/tmp/station-dev/car.sock",
        True,
        16,
    )
    assert config.bus_of(config.evse(1)).transport == "simulated"  # the meter counts what the car draws


def readme_toml_after(marker: str) -> str:
    """The first ```toml block of the README after `marker`."""
    text = README.read_text()
    rest = text[text.index(marker) :]
    match = re.search(r"```toml\n(.*?)```", rest, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_ev_example_is_a_valid_config() -> None:
    """The EV side's example, with the twin column's bus (as the README says), is what the parser reads."""
    twin = tomllib.loads((ROOT / "config" / "station-twin.example.toml").read_text())
    example = tomllib.loads(readme_toml_after("**Configuration.** `[charge_controller]`"))
    raw: dict[str, Any] = {**{k: twin[k] for k in ("station", "csms", "bus", "storage")}, **example}
    config = parse_config(raw, "README")
    assert [e.id for e in config.evses] == [1, 2]
    for evse in config.evses:
        cc = evse.charge_controller
        assert cc.driver == "openevse" and cc.lock and cc.max_current == 16 and cc.port.startswith("/dev/serial/")
    assert [(r.driver, r.name, r.evse) for r in config.card_readers] == [("pcsc", "front", 0)]


@pytest.mark.parametrize("ocpp", ["1.6", pytest.param("2.0.1", marks=pytest.mark.slow)])
async def test_the_car_by_hand(tmp_path: Path, processes: list[Process], ocpp: str) -> None:
    port = free_port()
    control = str(tmp_path / "csms.sock")
    config = dev_ev_config(tmp_path, port, ocpp)
    car_socket = str(tmp_path / "dev" / "car.sock")
    # Terminal 1: the CSMS.
    csms = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "station",
        "sim",
        "csms",
        "--port",
        str(port),
        "--control",
        control,
        stdin=asyncio.subprocess.PIPE,
        stdout=(tmp_path / "csms.log").open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # Terminal 2: the daemon, its meter and the car.
        processes.append(Process(["run", "--config", str(config)], tmp_path / "daemon.log"))

        async def received(action: str) -> list[dict[str, Any]]:
            args = [
                "received",
                "--action",
                action,
                "--last",
                "100",
                "--json",
                "--port",
                str(port),
                "--control",
                control,
            ]
            code, out, _ = await cli("sim", "csms", *args)
            return list(json.loads(out)["received"]) if code == 0 else []

        async def statuses() -> list[str]:
            messages = await received("StatusNotification")
            return [m["payload"].get("status") or m["payload"]["connectorStatus"] for m in messages]

        async def status_seen(name: str, after: int) -> bool:
            return name in (await statuses())[after:]

        async def car(*args: str) -> dict[str, Any]:
            code, out, err = await cli("sim", "ev", "--socket", car_socket, "--json", *args)
            assert code == 0, (args, out, err)
            return dict(json.loads(out))

        await until(lambda: status_seen("Available", 0), "the station to connect and report Available")
        seen = len(await statuses())
        await car("plug")
        await until(lambda: status_seen("Occupied" if ocpp == "2.0.1" else "Preparing", seen), "the plug-in")
        start_action = "StartTransaction" if ocpp == "1.6" else "TransactionEvent"
        await car("card", "04A2B3C4")

        async def started() -> bool:
            return bool(await received("Authorize")) and bool(await received(start_action))

        await until(started, "Authorize and the start")
        authorize = (await received("Authorize"))[0]["payload"]
        assert authorize in ({"idTag": "04A2B3C4"}, {"idToken": {"idToken": "04A2B3C4", "type": "ISO14443"}})
        await car("ready")

        async def relay_closed() -> bool:
            state = await car("state")  # `state --json` prints the state itself
            return bool(state["relay"] == "closed" and state["power_w"] > 0)

        await until(relay_closed, "the relay to close and the car to draw")
        state = await car("state")
        assert state["lock"] == "locked" and state["current_limit_a"] == 16
        paused = await car("suspend")
        assert paused["state"]["pilot"] == "B"
        await car("ready")
        await until(relay_closed, "the relay to close again")
        await car("unplug")
        end_action = "StopTransaction" if ocpp == "1.6" else "TransactionEvent"

        async def ended() -> dict[str, Any] | None:
            for message in await received(end_action):
                payload = message["payload"]
                if payload.get("reason") == "EVDisconnected" or payload.get("eventType") == "Ended":
                    return dict(payload)
            return None

        end = await until(ended, "the transaction to end", timeout=60)
        if ocpp == "2.0.1":
            assert end["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            states = [m["payload"]["transactionInfo"].get("chargingState") for m in await received("TransactionEvent")]
            assert "SuspendedEV" in states and "Charging" in states
        else:
            seen_all = await statuses()
            for name in ("Charging", "SuspendedEV", "Finishing"):
                assert name in seen_all, seen_all
        code, out, _ = await cli("diag", "status", "--config", str(config))
        assert code == 0 and "EV side EVSE 1 (simulated): pilot A, relay open" in out, out
    finally:
        if csms.returncode is None:
            csms.terminate()
            await asyncio.wait_for(csms.wait(), 20)
