"""Shared fixtures: a real local CSMS, a real virtual serial cable, the simulator and the daemon as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from station.demo.csms import LocalCsms
from station.meter.nullmodem import VirtualNullModem

SHARED = Path(__file__).resolve().parents[2] / "shared"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        nested = {k: v for k, v in keys.items() if isinstance(v, dict)}
        for key, value in keys.items():
            if not isinstance(value, dict):
                lines.append(f"{key} = {toml_value(value)}")
        for name, table in nested.items():
            lines.append(f"[{section}.{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Process:
    """A `python -m station ...` child with its output in a log file, for post-mortems in assertion messages."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "station", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"process did not exit within {timeout} s after signal {sig}:\n{self.log()}") from None


@pytest_asyncio.fixture
async def csms() -> AsyncIterator[LocalCsms]:
    server = await LocalCsms().start()
    yield server
    await server.stop()
    # Every frame the station sent passed the official JSON schemas (the library validates them on this side).
    assert server.violations == [], server.violations


@pytest_asyncio.fixture
async def cable() -> AsyncIterator[VirtualNullModem]:
    modem = await VirtualNullModem().start()
    yield modem
    await modem.stop()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def station_config(tmp_path: Path, csms_url: str, port: str, **overrides: dict[str, Any]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "station": {"id": "CP-TEST-1"},
        "csms": {"url": csms_url, "ocpp_version": "1.6", "reconnect_min": 0.2, "reconnect_max": 1.0},
        "meter": {"model": "smartme", "transport": "rtu", "port": port, "baudrate": 9600, "device_id": 1},
        "storage": {"path": str(tmp_path / "station.db")},
    }
    for section, keys in overrides.items():
        sections.setdefault(section, {}).update(keys)
    return write_config(tmp_path / "station.toml", sections)
