"""The systemd side: the unit file passes systemd's own checks, and the daemon speaks sd_notify on a real socket."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.demo.csms import LocalCsms
from station.meter.nullmodem import VirtualNullModem
from station.service import Notifier, feed_watchdog
from tests.conftest import Process, station_config

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "station.service"
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def installed_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart (and the firmware update's ExecStartPre) pointing at this checkout's `station` (verify
    checks that the binary exists)."""
    station_bin = Path(sys.executable).with_name("station")
    text = UNIT.read_text()
    for release in ("current", "previous"):
        text = text.replace(f"/opt/station/releases/{release}/bin/station", str(station_bin))
    path = tmp_path / "station.service"
    path.write_text(text)
    return path


@needs_systemd
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(installed_unit(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "station.service" not in result.stderr, result.stderr  # no warnings about our unit either


@needs_systemd
def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(installed_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for station\.service: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= 2.0, result.stdout


def test_unit_has_what_the_service_needs() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=station",
        "RuntimeDirectory=station",
        "ConfigurationDirectory=station",
        "SupplementaryGroups=dialout",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "ProtectSystem=strict",
        "ReadWritePaths=-/opt/station/releases\n",  # issue 20: release venvs and the current/previous links
        "RestartForceExitStatus=75\n",  # the exit after a firmware install or rollback
        "ExecStartPre=-/opt/station/releases/previous/bin/station release preflight ",
    ):
        assert line in text, line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)


class NotifySocket:
    """What systemd's end of $NOTIFY_SOCKET receives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    async def wait_for(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.drain():
                if needle in message:
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {needle!r} in {self.messages}")


async def test_daemon_reports_ready_status_watchdog_and_stopping(
    tmp_path: Path, cable: VirtualNullModem, processes: list[Process]
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    meter = Process(["meter-sim", "--port", cable.path_b, "--state", str(tmp_path / "m.json")], tmp_path / "m.log")
    processes.append(meter)
    # No CSMS listens at this URL: READY must come anyway, since store and meter are up.
    config = station_config(tmp_path, "ws://127.0.0.1:9/ocpp", cable.path_a)
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "900000"}
    daemon = Process(["run", "--config", str(config)], tmp_path / "daemon.log", env=env)
    processes.append(daemon)

    ready = await notify.wait_for("READY=1")
    assert "EVSE 1 available, meter up" in ready, ready
    await notify.wait_for("WATCHDOG=1")
    await notify.wait_for("STATUS=CSMS unreachable")
    assert await daemon.terminate(signal.SIGTERM) == 0, daemon.log()
    await notify.wait_for("STOPPING=1", timeout=5)
    await meter.terminate()


async def test_daemon_status_follows_the_csms_connection(
    tmp_path: Path, csms: LocalCsms, cable: VirtualNullModem, processes: list[Process]
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    meter = Process(["meter-sim", "--port", cable.path_b, "--state", str(tmp_path / "m.json")], tmp_path / "m.log")
    processes.append(meter)
    config = station_config(tmp_path, csms.url, cable.path_a)
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "600000"}
    daemon = Process(["run", "--config", str(config)], tmp_path / "daemon.log", env=env)
    processes.append(daemon)
    await notify.wait_for("STATUS=CSMS connected (OCPP 1.6)")
    assert await daemon.terminate(signal.SIGTERM) == 0, daemon.log()
    await meter.terminate()


async def test_watchdog_is_withheld_while_the_loop_is_blocked(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "300000"})
    task = asyncio.create_task(feed_watchdog(notifier, lambda: "working"))
    try:
        await notify.wait_for("WATCHDOG=1", timeout=10)
        notify.drain()
        before = len(notify.messages)
        time.sleep(0.6)  # noqa: ASYNC251 -- a stuck call on the event loop: longer than half the watchdog interval
        await asyncio.sleep(0.01)  # the watchdog task wakes up late and must not ping for this round
        assert "WATCHDOG=1" not in notify.drain()[before:]
        await notify.wait_for("WATCHDOG=1", timeout=10)  # healthy again: pings resume
    finally:
        task.cancel()


def test_notifier_without_systemd_is_silent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_notifier_ignores_a_watchdog_meant_for_another_process(tmp_path: Path) -> None:
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
