"""What the bench's parts share: the station's id, the simulated meter's signing time, the wire time of a minimal
session's frames (derived from the register map, never hard-coded), and what `/proc` says about a process."""

from __future__ import annotations

import os
from pathlib import Path

from station.bus import LineSettings, read_frame_sizes, write_frame_sizes
from station.meter.smartme import STATUS_BLOCK_REGS, SmartMeRegisters

STATION = "BENCH-1"
SIGNING_TIME = 0.5


def minimal_session_bytes(record_bytes: int, metadata_regs: int) -> tuple[int, int]:
    """Bytes the register map makes unavoidable for (start, stop): every frame the procedure needs, reads in the
    largest blocks, one status poll after each command."""

    def read(n: int) -> int:
        total = 0
        while n > 0:
            total += sum(read_frame_sizes(min(n, 125)))
            n -= 125
        return total

    def write(n: int) -> int:
        total = 0
        while n > 0:
            total += sum(write_frame_sizes(min(n, 123)))
            n -= 123
        return total

    status = read(STATUS_BLOCK_REGS)
    start = status + write(metadata_regs) + 8 + 8 + 8 + 8 + status  # idle check, metadata, length, command, poll
    stop = status + 8 + 8 + status + read((record_bytes + 1) // 2) + 8 + 8 + status  # check, end, poll, record, ack
    return start, stop


def minimal_session_frames(record_bytes: int, metadata_regs: int) -> tuple[int, int]:
    """Frames of the same procedures as `minimal_session_bytes`: each one owes the line the RTU inter-frame silence
    (3.5 characters) before it, which is wire time too."""
    start = 1 + -(-metadata_regs // 123) + 1 + 1 + 1  # idle check, metadata, length, command, poll
    stop = 1 + 1 + 1 + -(-((record_bytes + 1) // 2) // 125) + 1 + 1  # check, end, poll, record, ack, poll
    return start, stop


def startup_wire_time(baud: int) -> float:
    """Wire time of what the daemon reads from a smart-me meter before its BootNotification (MeterWorker.open, the
    recovery check): identity (20 registers), public key (its length and 64 registers), a first reading (12), the
    status block; each frame with the silence before it. The import floor has no meter: this part of the start-up
    is the line's, at any machine's speed."""
    settings = LineSettings("bench", baudrate=baud)
    reads = (20, 1 + SmartMeRegisters.public_key_regs, 12, STATUS_BLOCK_REGS)
    wire = sum(settings.wire_time(sum(read_frame_sizes(n))) for n in reads)
    return wire + len(reads) * settings.inter_frame_silence


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
