"""A session by hand (issue 16 item 9), exactly as the README's "Trying by hand" runs it, through the real command
line: three processes (`station sim csms`, `station sim meter`, `station run --config` a copy of config/dev.toml
whose paths point into the test's directory), and the CSMS driven from a second invocation (`station sim csms
remote-start ...`) and from its own prompt. Everything is real: WebSocket on loopback, the meter on a pty pair, the
store, the control and diagnostics sockets."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Process, write_config
from tests.test_cli import cli

DEV = Path(__file__).resolve().parents[1] / "config" / "dev.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_config(tmp_path: Path, port: int, ocpp: str) -> Path:
    """config/dev.toml with its /tmp/station-dev paths moved into the test's directory and the CSMS port changed."""
    data: dict[str, Any] = tomllib.loads(DEV.read_text())
    text = json.dumps(data).replace("/tmp/station-dev", str(tmp_path / "dev")).replace(":9000/", f":{port}/")
    data = json.loads(text)
    data["csms"]["ocpp_version"] = ocpp
    return write_config(tmp_path / "dev.toml", data)


async def until(check: Any, what: str, timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("ocpp", ["1.6", pytest.param("2.0.1", marks=pytest.mark.slow)])
async def test_a_session_by_hand_in_three_terminals(tmp_path: Path, processes: list[Process], ocpp: str) -> None:
    port = free_port()
    control = str(tmp_path / "csms.sock")
    config = dev_config(tmp_path, port, ocpp)
    csms_log = tmp_path / "csms.log"
    # Terminal 1: the CSMS (its prompt reads commands from standard input).
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
        stdout=csms_log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # Terminal 2: the meter on its own virtual cable, linked where dev.toml's [meter] port says.
        processes.append(Process(["sim", "meter", "--state-dir", str(tmp_path / "dev")], tmp_path / "meter.log"))
        await until(lambda: _true((tmp_path / "dev" / "meter-tty").exists()), "the meter's link")
        # Terminal 3: the daemon.
        processes.append(Process(["run", "--config", str(config)], tmp_path / "daemon.log"))

        async def ask(*args: str) -> tuple[int, str, str]:
            return await cli("sim", "csms", *args, "--port", str(port), "--control", control, timeout=60)

        async def connected() -> bool:
            code, out, _ = await ask("stations")
            return code == 0 and out.startswith("CP-DEV")

        await until(connected, "the station to connect")
        code, out, err = await ask("stations", "--json")
        assert code == 0 and json.loads(out) == {"ok": True, "stations": [{"id": "CP-DEV", "ocpp": ocpp}]}, err

        code, out, err = await ask("remote-start", "--connector", "1", "--id-tag", "T1")
        assert code == 0 and out.strip().endswith("Accepted"), (out, err)
        started = "StartTransaction" if ocpp == "1.6" else "TransactionEvent"

        async def charging() -> bool:
            code, out, _ = await ask("received", "--action", started)
            return code == 0 and bool(re.search(rf"CP-DEV -> {started} \{{", out))

        await until(charging, f"{started} to arrive")

        if ocpp == "1.6":
            key, value = "HeartbeatInterval", "61"
        else:
            key, value = "OCPPCommCtrlr.HeartbeatInterval", "61"
        code, out, err = await ask("set", key, value)
        assert code == 0 and out.strip().endswith("Accepted"), (out, err)
        code, out, _ = await ask("get", key)
        assert code == 0 and out.strip() == f"{key} = 61"
        code, out, err = await ask("trigger", "StatusNotification", "--connector", "1")
        assert code == 0 and out.strip().endswith("Accepted"), (out, err)
        # Any other CSMS-initiated message, with its payload as on the wire.
        if ocpp == "1.6":
            code, out, err = await ask("call", "GetLocalListVersion", "{}")
            assert code == 0 and "listVersion" in out, (out, err)
        code, _, err = await ask("call", "NoSuchAction", "{}")
        assert code == 1 and "NoSuchAction" in err

        # The diagnostics socket of the same dev.toml, found through its config.
        code, out, _ = await cli("diag", "status", "--config", str(config))
        assert code == 0 and "connector 1: Charging" in out

        code, out, err = await ask("remote-stop")  # the last transaction started
        assert code == 0 and out.strip().endswith("Accepted"), (out, err)
        ended = "StopTransaction" if ocpp == "1.6" else "TransactionEvent"

        async def stopped() -> bool:
            code, out, _ = await ask("received", "--action", ended, "--last", "1")
            return code == 0 and ("StopTransaction" in out or '"Ended"' in out)

        await until(stopped, "the end of the transaction", timeout=60)

        # The CSMS's own prompt takes the same commands.
        assert csms.stdin is not None
        csms.stdin.write(b"stations\nhelp\nremote-stop --transaction\n")
        await csms.stdin.drain()

        async def prompt_answered() -> bool:
            text = csms_log.read_text()
            return "CP-DEV  OCPP" in text and "? " in text

        await until(prompt_answered, "the prompt's answers")
        printed = csms_log.read_text()
        assert "-- CP-DEV connected" in printed and "CP-DEV -> BootNotification {" in printed
        assert "remote-start" in printed  # `help` lists the commands
    finally:
        if csms.returncode is None:
            csms.terminate()
            await asyncio.wait_for(csms.wait(), 20)
    assert csms.returncode == 0
    assert not Path(control).exists()  # the control socket is removed at exit


async def _true(value: bool) -> bool:
    return value


async def test_sim_csms_without_a_running_csms_says_so(tmp_path: Path) -> None:
    code, _, err = await cli("sim", "csms", "stations", "--control", str(tmp_path / "none.sock"))
    assert code == 1 and "start `station sim csms`" in err and "Traceback" not in err


async def test_the_old_simulator_names_still_work(tmp_path: Path, processes: list[Process]) -> None:
    cable = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "nullmodem", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert cable.stdout is not None
        ends = json.loads(await asyncio.wait_for(cable.stdout.readline(), 20))
        meter = Process(["meter-sim", "--port", ends["b"], "--state", str(tmp_path / "m.json")], tmp_path / "m.log")
        processes.append(meter)
        await until(lambda: _true("meter simulator serving" in meter.log()), "meter-sim to serve")
        assert f"serving on {ends['b']}" in meter.log()
    finally:
        cable.terminate()
        await cable.wait()


async def test_sim_csms_stops_quietly_when_its_output_is_gone(tmp_path: Path) -> None:
    """`station sim csms | head -2` ends the CSMS like any command on a closed pipe: exit 141, no traceback, its
    control socket removed."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    control = tmp_path / "csms.sock"
    code, _, err = await cli("sim", "csms", "--port", str(free_port()), "--control", str(control), stdout=write_end)
    os.close(write_end)
    assert code == 141 and err == "" and not control.exists()
