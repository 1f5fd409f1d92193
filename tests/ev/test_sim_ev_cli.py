"""The simulated controller's control socket and `station sim ev`, for real: a Unix socket the controller makes when it
opens, the command line as a child process and through main(), garbage and over-long requests, too many clients and
idle ones."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from station.cli import main
from station.ev.interface import ControllerError, ControllerEvent, Fault, FaultChanged
from station.ev.sim import control
from station.ev.simulated import SimulatedController


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Unix socket paths are short (108 bytes): not under pytest's long tmp_path.
    path = Path(tempfile.mkdtemp(prefix="ev-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def started(path: Path, **kwargs: Any) -> tuple[SimulatedController, list[ControllerEvent]]:
    events: list[ControllerEvent] = []
    controller = SimulatedController("evse-1", control_socket=str(path), **kwargs)
    await controller.open(events.append)
    return controller, events


async def cli(*argv: str) -> tuple[int, str, str]:
    """`python -m station ARGV` as a child process: exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "station",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main(ARGV) in a thread (the socket's server runs on this loop): exit status, stdout, stderr."""

    def run() -> int:
        try:
            return main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            return int(exc.code or 0)

    code = await asyncio.to_thread(run)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_json(out: str) -> Any:
    """The JSON document the command printed (the controller's own log lines share this process's stdout)."""
    lines = out.splitlines()
    start, end = lines.index("{"), len(lines) - lines[::-1].index("}")
    return json.loads("\n".join(lines[start:end]))


class Client:
    """A raw control connection: lines in, answers out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> dict[str, Any] | None:
        self.writer.write(raw)
        await self.writer.drain()
        line = await asyncio.wait_for(self.reader.readline(), 10)
        return json.loads(line) if line else None

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


async def test_the_socket_is_user_only_and_goes_away_with_the_controller(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    controller, _ = await started(path)
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    await controller.close()
    assert not path.exists()


async def test_a_session_through_the_command_line(sock_dir: Path) -> None:
    path = str(sock_dir / "ev.sock")
    controller, events = await started(Path(path))
    await controller.allow_power(True)
    await controller.set_max_current(16)

    code, out, err = await cli("sim", "ev", "--socket", path, "ready")
    assert code == 1 and "not plugged in" in err

    code, out, _ = await cli("sim", "ev", "--socket", path, "plug")
    assert code == 0 and "pilot    B" in out
    code, out, _ = await cli("sim", "ev", "ready", "--socket", path)  # --socket after the command works too
    assert code == 0
    assert controller.relay_closed and controller.power_w == pytest.approx(16 * 3 * 230)

    code, out, _ = await cli("sim", "ev", "--socket", path, "state", "--json")
    assert code == 0
    state = json.loads(out)
    assert {k: state[k] for k in ("pilot", "relay", "lock", "current_limit_a", "faults")} == {
        "pilot": "C",
        "relay": "closed",
        "lock": "unlocked",
        "current_limit_a": 16.0,
        "faults": {},
    }
    code, out, _ = await cli("sim", "ev", "--socket", path, "state")
    assert code == 0
    assert "pilot    C (vehicle asks for power)" in out and "relay    closed" in out
    assert "current  16 A (PWM 26.7 %)" in out and "power    11040 W" in out and "faults   none" in out

    code, out, _ = await cli("sim", "ev", "--socket", path, "fault", "rcd", "--detail", "30 mA")
    assert code == 0 and "fault rcd injected" in out and "rcd (30 mA)" in out
    assert not controller.relay_closed
    assert FaultChanged(Fault.RCD, True, "30 mA") in events
    code, _, err = await cli("sim", "ev", "--socket", path, "fault", "rcd")
    assert code == 1 and "already active" in err
    code, _, err = await cli("sim", "ev", "--socket", path, "fault", "meltdown")
    assert code == 1 and "unknown fault" in err and "relay_welded" in err
    code, out, _ = await cli("sim", "ev", "--socket", path, "clear")
    assert code == 0 and "cleared rcd" in out
    code, out, _ = await cli("sim", "ev", "--socket", path, "suspend")
    code, out, _ = await cli("sim", "ev", "--socket", path, "unplug")
    assert code == 0 and "pilot    A" in out
    await controller.close()


async def test_cards_and_exit_codes_through_main(sock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(sock_dir / "ev.sock")
    controller, _ = await started(Path(path))
    code, _, err = await in_process(capsys, "sim", "ev", "--socket", path, "card", "04A1B2C3")
    assert code == 1 and "no card reader" in err

    presented: list[str] = []

    class Reader:
        def present(self, uid: str) -> None:
            presented.append(uid)

    controller.card_reader = Reader()
    code, out, _ = await in_process(capsys, "sim", "ev", "--socket", path, "card", "04:a1:b2:c3")
    assert code == 0 and "card 04A1B2C3 presented" in out
    assert presented == ["04A1B2C3"]
    code, _, err = await in_process(capsys, "sim", "ev", "--socket", path, "card", "not-a-card")
    assert code == 1 and "not a card UID" in err

    code, out, _ = await in_process(capsys, "sim", "ev", "--socket", path, "fault", "lock_failure", "--json")
    assert code == 0 and printed_json(out)["state"]["lock"] == "failed"
    code, _, err = await in_process(capsys, "sim", "ev", "--socket", path, "clear", "diode")
    assert code == 1 and "fault diode is not active" in err
    code, out, _ = await in_process(capsys, "sim", "ev", "--socket", path, "clear", "lock_failure")
    assert code == 0 and "cleared lock_failure" in out

    code, _, err = await in_process(capsys, "sim", "ev", "--socket", path, "fault")  # no NAME
    assert code == 2 and "fault" in err
    code, _, err = await in_process(capsys, "sim", "ev", "--socket", path, "fly")
    assert code == 2
    code, _, err = await in_process(capsys, "sim", "ev", "state")
    assert code == 2 and "--socket" in err
    code, _, err = await in_process(capsys, "sim", "ev", "--socket", str(sock_dir / "none.sock"), "state")
    assert code == 2 and "no simulated charge controller listens" in err
    await controller.close()


async def test_garbage_gets_an_error_answer_and_the_connection_goes_on(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    controller, _ = await started(path)
    client = await Client.connect(path)
    garbage = {
        b"garbage\n": "not JSON",
        b"\xff\xfe\x00\n": "not JSON",
        b"[1, 2]\n": "not a JSON object",
        b'"plug"\n': "not a JSON object",
        b'{"cmd": "nope"}\n': "key 'cmd' must be one of plug, unplug",
        b'{"command": "plug"}\n': "key 'cmd' must be one of",
        b'{"cmd": 7}\n': "key 'cmd' must be one of",
        b'{"cmd": "card"}\n': "card needs key 'uid'",
        b'{"cmd": "card", "uid": 5}\n': "key 'uid' must be a string",
        b'{"cmd": "plug", "force": true}\n': "plug takes no key(s) force",
        b'{"cmd": "fault", "name": "rcd", "detail": "' + b"x" * 300 + b'"}\n': "key 'detail' must be a string",
        b'{"cmd": {"a": {"b": 1}}}\n': "one flat JSON object",
        b"[" * 400 + b"\n": "one flat JSON object",
    }
    for raw, error in garbage.items():
        answer = await client.send(raw)
        assert answer is not None and answer["ok"] is False, raw
        assert error in answer["error"], (raw, answer)
    assert controller.snapshot()["faults"] == {} and controller.snapshot()["car"] == "unplugged"
    answer = await client.send(b'\n{"cmd": "plug"}\n')  # blank lines are skipped
    assert answer is not None and answer["ok"] is True and answer["state"]["pilot"] == "B"
    answer = await client.send(b'{"cmd": "state"}\n')  # several requests on one connection
    assert answer is not None and answer["state"]["car"] == "connected"
    client.close()
    await controller.close()


async def test_an_over_long_request_is_answered_and_the_connection_closed(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    controller, _ = await started(path)
    client = await Client.connect(path)
    answer = await client.send(b'{"cmd": "plug", "x": "' + b"y" * (control.MAX_REQUEST_BYTES * 4) + b'"}\n')
    assert answer == {"ok": False, "error": f"request longer than {control.MAX_REQUEST_BYTES} bytes"}
    assert await client.closed()
    client.close()
    assert controller.snapshot()["car"] == "unplugged"
    other = await Client.connect(path)  # the server goes on
    answer = await other.send(b'{"cmd": "state"}\n')
    assert answer is not None and answer["ok"]
    other.close()
    await controller.close()


async def test_clients_are_bounded(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    controller, _ = await started(path)
    held = [await Client.connect(path) for _ in range(control.MAX_CLIENTS)]
    for client in held:  # each is being served
        assert (await client.send(b'{"cmd": "state"}\n') or {}).get("ok")
    extra = await Client.connect(path)
    answer = await extra.send(b'{"cmd": "state"}\n')
    assert answer == {"ok": False, "error": f"too many control clients (at most {control.MAX_CLIENTS})"}
    extra.close()
    held.pop().close()
    for _ in range(100):  # the server notices the hang-up soon
        again = await Client.connect(path)
        answer = await again.send(b'{"cmd": "state"}\n')
        again.close()
        if answer and answer["ok"]:
            break
        await asyncio.sleep(0.05)
    assert answer is not None and answer["ok"]
    for client in held:
        client.close()
    await controller.close()


async def test_an_idle_client_is_disconnected(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "IDLE_TIMEOUT_S", 0.2)
    path = sock_dir / "ev.sock"
    controller, _ = await started(path)
    client = await Client.connect(path)
    assert await client.closed()  # sent nothing: closed by the server
    client.close()
    await controller.close()


async def test_the_socket_path_is_checked(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    path.write_text("someone's file")
    with pytest.raises(ControllerError, match="exists and is not a socket"):
        await started(path)
    assert path.read_text() == "someone's file"
    path.unlink()

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket nobody listens on (a crashed run): replaced
    stale.close()
    first, _ = await started(path)
    with pytest.raises(ControllerError, match="in use"):  # a live one is not taken over
        await started(path)
    assert (await asyncio.to_thread(_ask_state, str(path)))["ok"]
    await first.close()


def _ask_state(path: str) -> dict[str, Any]:
    from station.sim.ev import ask

    return ask(path, {"cmd": "state"})


async def test_the_controller_survives_a_client_that_hangs_up_mid_request(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    controller, _ = await started(path)
    for raw in (b"", b'{"cmd": "pl', b'{"cmd": "plug"}'):  # no newline: never answered, no harm
        _, writer = await asyncio.open_unix_connection(str(path))
        writer.write(raw)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    client = await Client.connect(path)
    answer = await client.send(b'{"cmd": "state"}\n')
    assert answer is not None and answer["ok"]
    client.close()
    await controller.close()
