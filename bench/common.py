"""What the bench's parts share: the station's id, the simulated meter's signing time, the wire time of a minimal
session's frames (derived from the register map, never hard-coded), and what `/proc` says about a process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.bus import LineSettings, read_frame_sizes, write_frame_sizes
from station.bus.codec import MAX_READ_REGISTERS, MAX_WRITE_REGISTERS
from station.meter.smartme import STATUS_BLOCK_REGS, SmartMeRegisters

STATION = "BENCH-1"
SIGNING_TIME = 0.5


def _blocks(n: int, most: int, sizes: Callable[[int], tuple[int, int]]) -> list[int]:
    """The frames (request, answer, ...) of `n` registers in blocks of at most `most`, as the device splits them."""
    frames: list[int] = []
    for first in range(0, n, most):
        frames += sizes(min(most, n - first))
    return frames


def _reads(n: int) -> list[int]:
    return _blocks(n, MAX_READ_REGISTERS, read_frame_sizes)


def _writes(n: int) -> list[int]:
    return _blocks(n, MAX_WRITE_REGISTERS, write_frame_sizes)


FC06 = [8, 8]  # one register written: request and echo
STATUS_REQUEST = [read_frame_sizes(STATUS_BLOCK_REGS)[0]]


@dataclass(frozen=True)
class SessionFrames:
    """Every RTU frame (its size in bytes, in the order on the line) a smart-me session needs at the least, derived
    from the register map: reads in the largest blocks, one status poll after each command.

    - `start`: RemoteStart -> StartTransaction: idle check, metadata, its length, the start command, the poll;
    - `stop_to_signing`: RemoteStop until the meter signs: the check, the end command's request (the meter starts
      signing when it has it, so the command's answer and the silences around it pass while it signs);
    - `stop_after_signing`: from the signed record on until StopTransaction: the poll's answer that shows it signed
      (its request can be on the line while the meter signs), the record's reads;
    - `release`: after StopTransaction went (the record is stored first): the check and the ack that frees the
      meter's record. Bytes on the line, not latency.
    """

    start: list[int]
    stop_to_signing: list[int]
    stop_after_signing: list[int]
    release: list[int]

    @classmethod
    def of(cls, record_bytes: int, metadata_regs: int) -> SessionFrames:
        status = _reads(STATUS_BLOCK_REGS)
        return cls(
            start=status + _writes(metadata_regs) + FC06 + FC06 + status,
            stop_to_signing=status + FC06[:1],
            stop_after_signing=status[1:] + _reads((record_bytes + 1) // 2),
            release=status + FC06,
        )

    def bytes(self) -> tuple[int, int]:
        """(start, stop) bytes on the line, the stop with the end command's answer, the poll's request and the
        release: what `wire_efficiency` divides by."""
        stop = self.stop_to_signing + FC06[1:] + STATUS_REQUEST + self.stop_after_signing + self.release
        return sum(self.start), sum(stop)


def wire_time(frames: list[int], settings: LineSettings) -> float:
    """The frames' bytes and the RTU silence (t3.5) between each two of them, request and answer alike (Modbus over
    Serial Line v1.02 §2.5.1.1: frames are separated by at least 3.5 characters of silence; a slave knows a request
    has ended only from it). The first frame's silence is the idle line's."""
    return settings.wire_time(sum(frames)) + max(0, len(frames) - 1) * settings.inter_frame_silence


def start_wire_time(frames: SessionFrames, settings: LineSettings) -> float:
    return wire_time(frames.start, settings)


def stop_wire_time(frames: SessionFrames, settings: LineSettings, signing_time: float = SIGNING_TIME) -> float:
    """RemoteStop -> StopTransaction at the least: the frames up to the end command's request, the meter's signing
    time, then the poll's answer (t3.5 after the signing at the earliest) and the record's reads."""
    before = wire_time(frames.stop_to_signing, settings)
    return before + signing_time + settings.inter_frame_silence + wire_time(frames.stop_after_signing, settings)


def startup_wire_time(baud: int) -> float:
    """Wire time of what the daemon reads from a smart-me meter before its BootNotification (MeterWorker.open, the
    recovery check): identity (20 registers), public key (its length and 64 registers), a first reading (12), the
    status block. The import floor has no meter: this part of the start-up is the line's, at any machine's speed."""
    settings = LineSettings("bench", baudrate=baud)
    reads = (20, 1 + SmartMeRegisters.public_key_regs, 12, STATUS_BLOCK_REGS)
    return wire_time([size for n in reads for size in read_frame_sizes(n)], settings)


def station_toml(workdir: Path, url: str, evses: int, port: str, baud: int = 9600) -> str:
    """`station run`'s config: EVSEs 1..`evses` on one `rtu` bus on `port` (the daemon's end of the meters' line,
    bench/meterline.py), a meter each (device id = EVSE id)."""
    lines = [
        f'[station]\nid = "{STATION}"\n',
        f'[csms]\nurl = "{url}"\nreconnect_min = 0.1\n',
        f'[bus.rs485]\ntransport = "rtu"\nport = "{port}"\nbaudrate = {baud}\n',
    ]
    for n in range(1, evses + 1):
        lines.append(f'[[evse]]\nid = {n}\n[evse.meter]\nmodel = "smartme"\nbus = "rs485"\ndevice_id = {n}\n')
    lines.append(f'[storage]\npath = "{workdir / "s.db"}"\n')
    return "\n".join(lines)


@contextlib.contextmanager
def station_process(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`station run --config config` as a process of its own, as on a station; terminated when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "station", "run", "--config", str(config), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        end_process(proc, 30)


def end_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, and SIGKILL when it has not ended within `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
