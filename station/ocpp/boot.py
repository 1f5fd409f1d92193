"""What a boot tells the CSMS about the run before it (2.0.1 BootReasonEnumType; the 1.6 connection keeps it too):
outside the version modules, so that the connection imports only the OCPP version it speaks."""

from __future__ import annotations

from pathlib import Path

import station
from station.store import PreviousRun


def os_boot_id() -> str:
    """The operating system's boot (Linux: a new random id at every boot); "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def software_version() -> str:
    return station.__version__


def boot_reason(previous: PreviousRun, boot_id: str, software: str) -> str:
    """B01.FR.09 BootReasonEnumType from how the previous run ended: a new software version is a FirmwareUpdate; a
    reset the CSMS asked for is RemoteReset (ScheduledReset when it waited for the transactions: B12); a new
    operating-system boot (or no previous run) is a PowerUp; a run that never said it stopped, within the same
    operating-system boot, was killed by the watchdog (systemd WatchdogSec kills a hung daemon; a crash that still
    runs the shutdown counts as a clean stop); a clean stop and start in the same boot is a LocalReset (the
    technician restarted the service)."""
    if previous.state is None:
        return "PowerUp"
    if previous.software and previous.software != software:
        return "FirmwareUpdate"
    if previous.state == "ended" and previous.restart:
        return previous.restart
    if previous.boot_id != boot_id:
        return "PowerUp"
    if previous.state == "running":
        return "Watchdog"
    return "LocalReset"
