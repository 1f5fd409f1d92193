"""The OpenEVSE driver (station/ev/openevse.py) against the RAPI simulator (station/ev/sim/openevse.py, written
from the protocol document on its own) over a real pty pair: state mapping, allow power, the current limit with
its 0 A pause, notifications, faults, a silent controller and its return, garbage, and never a relay closed without
power allowed."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from station.ev.interface import (
    ControllerError,
    ControllerEvent,
    Fault,
    FaultChanged,
    LockChanged,
    LockState,
    Pilot,
    PilotChanged,
    RelayChanged,
)
from station.ev.openevse import OpenEvseController
from station.ev.sim.openevse import OpenEvseSimulator, by_hand_command
from station.meter.nullmodem import VirtualNullModem


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {timeout} s: {what}")


@dataclass
class Rig:
    sim: OpenEvseSimulator
    ctl: OpenEvseController
    events: list[ControllerEvent] = field(default_factory=list)

    def pilot(self) -> Pilot | None:
        return next((e.pilot for e in reversed(self.events) if isinstance(e, PilotChanged)), None)

    def relay(self) -> bool | None:
        return next((e.closed for e in reversed(self.events) if isinstance(e, RelayChanged)), None)

    def faults(self) -> set[Fault]:
        active: set[Fault] = set()
        for e in self.events:
            if isinstance(e, FaultChanged):
                (active.add if e.active else active.discard)(e.fault)
        return active

    def lock(self) -> LockState | None:
        return next((e.state for e in reversed(self.events) if isinstance(e, LockChanged)), None)

    def relay_closed_events(self) -> int:
        return sum(1 for e in self.events if isinstance(e, RelayChanged) and e.closed)


@contextlib.asynccontextmanager
async def make_rig(sim: OpenEvseSimulator, **kw: object) -> AsyncIterator[Rig]:
    cable = await VirtualNullModem().start()
    await sim.start(cable.path_b)
    ctl = OpenEvseController(cable.path_a, poll_interval=0.1, command_timeout=0.3, **kw)  # type: ignore[arg-type]
    rig = Rig(sim, ctl)
    await ctl.open(rig.events.append)
    try:
        yield rig
    finally:
        await ctl.close()
        await sim.stop()
        await cable.stop()


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    async with make_rig(OpenEvseSimulator(configured_max_amps=16)) as r:
        yield r


async def test_open_reports_the_initial_state_learns_the_range_and_puts_the_evse_to_sleep(rig: Rig) -> None:
    assert rig.events[:2] == [RelayChanged(closed=False), PilotChanged(pilot=Pilot.A)]
    assert rig.faults() == set()
    caps = rig.ctl.capabilities
    assert (caps.min_current_a, caps.max_current_a) == (6.0, 16.0)  # from $GC: minamps, cmaxamps
    assert (caps.relay_feedback, caps.senses_plug, caps.has_lock) == (False, True, False)
    # The firmware boots enabled; power is not allowed yet, so the driver puts it to sleep.
    await until(lambda: rig.sim.mode == "sleeping", "EVSE put to sleep")


async def test_a_car_plugged_and_ready_gets_no_power_until_allowed(rig: Rig) -> None:
    rig.sim.plug()
    await until(lambda: rig.pilot() is Pilot.B, "plug seen in sleep through the EV-connected flag")
    rig.sim.ready()
    await asyncio.sleep(0.5)  # several polls
    assert rig.relay() is False and not rig.sim.relay_closed_ever and rig.relay_closed_events() == 0

    await rig.ctl.allow_power(True)
    await until(lambda: rig.relay() is True, "relay closed once power is allowed and the car asks")
    assert rig.pilot() is Pilot.C and rig.sim.evse_state == 0x03

    rig.sim.suspend()  # the car pauses
    await until(lambda: rig.pilot() is Pilot.B and rig.relay() is False, "car paused: B, relay open")
    rig.sim.ready()
    await until(lambda: rig.pilot() is Pilot.C and rig.relay() is True, "car resumes")

    await rig.ctl.allow_power(False)
    await until(lambda: rig.relay() is False, "relay open after allow_power(False)")
    assert rig.sim.mode == "sleeping" and "FS" in rig.sim.commands
    rig.sim.unplug()
    await until(lambda: rig.pilot() is Pilot.A, "unplugged")


async def test_current_limit_volatile_clamped_and_0_a_pauses(rig: Rig) -> None:
    rig.sim.ready()
    await rig.ctl.set_max_current(10)
    assert rig.sim.capacity == 10 and rig.sim.commands[-1] == "SC 10 V"
    await rig.ctl.allow_power(True)
    await until(lambda: rig.relay() is True, "charging")

    await rig.ctl.set_max_current(7.9)  # never more than asked: whole amps down
    assert rig.sim.capacity == 7
    await rig.ctl.set_max_current(40)  # over the controller's maximum: its maximum
    assert rig.sim.capacity == 16

    await rig.ctl.set_max_current(0)
    await until(lambda: rig.relay() is False, "0 A pauses the car")
    assert rig.sim.mode == "sleeping"
    await asyncio.sleep(0.4)
    assert rig.relay() is False, "the paused EVSE stays asleep although power is allowed"

    await rig.ctl.set_max_current(12)
    await until(lambda: rig.relay() is True, "resumes at 12 A")
    assert rig.sim.capacity == 12

    await rig.ctl.set_max_current(3)  # below the 6 A minimum: a pause, not the firmware's 6 A
    await until(lambda: rig.relay() is False, "below the minimum pauses")
    assert rig.sim.capacity == 12
    with pytest.raises(ValueError, match="finite"):
        await rig.ctl.set_max_current(float("nan"))


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("diode", Fault.DIODE),
        ("gfci", Fault.RCD),
        ("gfi_self_test", Fault.RCD),
        ("no_ground", Fault.NO_GROUND),
        ("stuck_relay", Fault.RELAY_WELDED),
        ("relay_closure", Fault.RELAY_WELDED),
        ("over_temperature", Fault.OVERTEMPERATURE),
        ("over_current", Fault.OVERCURRENT),
    ],
)
async def test_fault_states_map_onto_faults_and_clear(rig: Rig, name: str, fault: Fault) -> None:
    rig.sim.ready()
    await rig.ctl.allow_power(True)
    await until(lambda: rig.relay() is True, "charging")
    rig.sim.fault(name)
    await until(lambda: rig.faults() == {fault}, f"{name} -> {fault}")
    assert rig.relay() is False
    detail = next(e.detail for e in rig.events if isinstance(e, FaultChanged) and e.active)
    assert "EVSE state" in detail
    rig.sim.clear()
    await until(lambda: rig.faults() == set(), "fault cleared")
    await until(lambda: rig.relay() is True, "charging again: power is still allowed")


async def test_a_silent_controller_is_a_fault_and_its_return_clears_it(rig: Rig) -> None:
    rig.sim.silent = True
    await until(lambda: Fault.CONTROLLER_SILENT in rig.faults(), "CONTROLLER_SILENT")
    with pytest.raises(ControllerError, match="no answer"):
        await rig.ctl.allow_power(True)
    gc_before = rig.sim.commands.count("GC")
    rig.sim.reboot()  # it comes back from a reboot: enabled, as the firmware boots, but unheard ($AB lost)
    rig.sim.silent = False
    await until(lambda: Fault.CONTROLLER_SILENT not in rig.faults(), "answering again")
    await until(lambda: rig.sim.commands.count("GC") > gc_before, "the range is read again after silence")
    # Power was asked for while it was away: the wish stands, so it is enabled (not left to its boot state).
    rig.sim.ready()
    await until(lambda: rig.relay() is True, "charging after the return")


async def test_garbage_and_bad_checksums_never_crash_and_never_close_the_relay(rig: Rig) -> None:
    rig.sim.ready()
    await until(lambda: rig.sim.mode == "sleeping", "asleep")
    for _ in range(20):
        rig.sim.send_raw(b"\x00\xff\xfe junk \n" + b"$" + b"X" * 500 + b"\r" + b"$AT 03 03 32 0140^00\r")
        rig.sim.corrupt_checksums = 3
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert rig.relay_closed_events() == 0 and not rig.sim.relay_closed_ever
    assert {"garbage", "too_long", "checksum"} <= set(rig.ctl.bad.counts)
    rig.sim.corrupt_checksums = 0
    await rig.ctl.allow_power(True)  # still works
    await until(lambda: rig.relay() is True, "charging after all that")


async def test_an_evse_enabled_behind_the_drivers_back_is_put_back_to_sleep(rig: Rig) -> None:
    rig.sim.plug()
    await until(lambda: rig.sim.mode == "sleeping" and rig.pilot() is Pilot.B, "asleep, plugged")
    rig.sim.mode = "enabled"  # a front-panel button press
    rig.sim.ready()
    await until(lambda: rig.sim.mode == "sleeping", "put back to sleep")
    await until(lambda: rig.relay() is False, "relay reported open")
    # Had the firmware closed the relay meanwhile, the driver reported it (the truth), then opened it.
    assert rig.sim.relay_closed is False


async def test_a_reboot_notification_makes_the_driver_assert_its_state_again(rig: Rig) -> None:
    await rig.ctl.set_max_current(10)
    await rig.ctl.allow_power(True)
    rig.sim.reboot()  # $AB; volatile settings lost (capacity back to 16)
    await until(lambda: rig.sim.capacity == 10, "the limit is sent again after $AB")
    await rig.ctl.allow_power(False)
    rig.sim.reboot()
    await until(lambda: rig.sim.mode == "sleeping", "put back to sleep after $AB")


async def test_unknown_states_and_notifications_are_ignored_safely(rig: Rig) -> None:
    rig.sim._send("AT 0c 00 16 0000")  # reserved state
    rig.sim._send("WF 02")
    rig.sim._send("AN 1")
    rig.sim._send("AT zz")  # malformed
    rig.sim.plug()
    await until(lambda: rig.pilot() is Pilot.B, "still working")
    assert rig.ctl.bad.counts.get("malformed", 0) >= 2
    assert rig.faults() == set()


async def test_a_port_that_cannot_be_opened_is_a_silent_controller() -> None:
    ctl = OpenEvseController("/dev/nonexistent-openevse", poll_interval=0.1, command_timeout=0.2)
    events: list[ControllerEvent] = []
    await ctl.open(events.append)
    try:
        assert events and isinstance(events[0], FaultChanged) and events[0].fault is Fault.CONTROLLER_SILENT
        assert "cannot open" in events[0].detail
        with pytest.raises(ControllerError):
            await ctl.allow_power(True)
    finally:
        await ctl.close()


async def test_close_leaves_the_evse_asleep() -> None:
    sim = OpenEvseSimulator()
    async with make_rig(sim) as rig:
        rig.sim.ready()
        await rig.ctl.allow_power(True)
        await until(lambda: sim.relay_closed, "charging")
    assert sim.mode == "sleeping" and not sim.relay_closed


async def test_boot_lock_is_cleared_when_power_is_allowed() -> None:
    async with make_rig(OpenEvseSimulator(boot_lock=True)) as rig:
        rig.sim.ready()
        await asyncio.sleep(0.3)
        await rig.ctl.allow_power(True)
        await until(lambda: rig.relay() is True, "charging once the boot lock is cleared")
        assert "SB" in rig.sim.commands


async def test_the_lock_in_manual_mode() -> None:
    async with make_rig(OpenEvseSimulator(has_lock=True), has_lock=True) as rig:
        assert rig.ctl.capabilities.has_lock and rig.sim.lock_manual
        assert rig.lock() is LockState.UNLOCKED
        await rig.ctl.lock(True)
        assert rig.lock() is LockState.LOCKED and rig.sim.locked
        await rig.ctl.lock(False)
        assert rig.lock() is LockState.UNLOCKED
        rig.sim.lock_jammed = True
        with pytest.raises(ControllerError, match="did not lock"):
            await rig.ctl.lock(True)
        assert rig.lock() is LockState.FAILED and Fault.LOCK_FAILURE in rig.faults()
        rig.sim.lock_jammed = False
        await rig.ctl.lock(True)
        assert rig.lock() is LockState.LOCKED and Fault.LOCK_FAILURE not in rig.faults()


async def test_station_sim_openevse_by_hand_drives_the_car_from_stdin() -> None:
    cable = await VirtualNullModem().start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "sim", "openevse", "--port", cable.path_b,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    ctl = OpenEvseController(cable.path_a, poll_interval=0.1, command_timeout=0.5)
    events: list[ControllerEvent] = []
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"simulated OpenEVSE on" in first
        await ctl.open(events.append)
        assert PilotChanged(Pilot.A) in events
        proc.stdin.write(b"plug\n")
        await proc.stdin.drain()
        await until(lambda: PilotChanged(Pilot.B) in events, "plugged by hand")
        proc.stdin.write(b"fault gfci\nnonsense\n")
        await proc.stdin.drain()
        await until(lambda: FaultChanged(Fault.RCD, True, "EVSE state 06: GFCI fault") in events, "fault by hand")
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
        out = await asyncio.wait_for(proc.stdout.read(), 30)
        assert await proc.wait() == 0
        assert b"mode=sleeping" in out and b"unknown command 'nonsense'" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await ctl.close()
        await cable.stop()


def test_by_hand_commands_are_checked() -> None:
    sim = OpenEvseSimulator()
    assert "plugged=True" in by_hand_command(sim, "plug")
    assert "ready=True" in by_hand_command(sim, "ready")
    for bad in ("fault nosuch", "silent maybe", "badsum x", "plug now"):
        with pytest.raises(ValueError):
            by_hand_command(sim, bad)
    by_hand_command(sim, "badsum 99999")
    assert sim.corrupt_checksums == 1000


async def test_a_failing_setup_still_puts_the_evse_to_sleep_and_keeps_the_heartbeat() -> None:
    # has_lock=True against a firmware built without the Mennekes lock: $S5 is refused at every setup.
    sim = OpenEvseSimulator(has_lock=False)
    sim.ready()  # a car plugged in and asking before the station starts; the firmware boots enabled and charges
    async with make_rig(sim, has_lock=True) as rig:
        await until(lambda: sim.mode == "sleeping", "put to sleep although the setup fails")
        await until(lambda: rig.relay() is False, "relay reported open")
        sim.unplug()
        await until(lambda: rig.pilot() is Pilot.A, "the heartbeat goes on")
        assert rig.sim.commands.count("S5 M") >= 2, "the setup is tried again"
        assert Fault.CONTROLLER_SILENT not in rig.faults()
