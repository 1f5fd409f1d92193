"""The simulated charge controller and its car: the pilot follows the car, the relay closes only with power allowed and
the car asking, faults trip it, a welded relay stays closed, a failed lock says so, a silent controller takes no
commands, and what the car draws goes to the power listeners (and into the simulated meter's register)."""

from __future__ import annotations

import asyncio
import time
import types

import pytest

from station.ev.interface import (
    AmpacityChanged,
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
from station.ev.sim.car import Refused, SimulatedCar
from station.ev.simulated import SimulatedController
from station.meter.sim.smartme import SmartMeSimulator


class Recorder:
    def __init__(self) -> None:
        self.events: list[ControllerEvent] = []
        self.power: list[float] = []

    def __call__(self, event: ControllerEvent) -> None:
        self.events.append(event)

    def take(self) -> list[ControllerEvent]:
        taken, self.events = self.events, []
        return taken


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def opened(**kwargs: object) -> tuple[SimulatedController, Recorder]:
    controller = SimulatedController(**kwargs)  # type: ignore[arg-type]
    rec = Recorder()
    controller.add_power_listener(rec.power.append)
    await controller.open(rec)
    await settle()
    return controller, rec


async def charging(**kwargs: object) -> tuple[SimulatedController, Recorder]:
    controller, rec = await opened(**kwargs)
    controller.plug()
    await controller.allow_power(True)
    await controller.set_max_current(16)
    controller.ready()
    await settle()
    rec.take()
    return controller, rec


async def test_open_reports_the_initial_state() -> None:
    _, rec = await opened()
    assert rec.take() == [
        PilotChanged(Pilot.A),
        RelayChanged(False),
        LockChanged(LockState.UNLOCKED),
        AmpacityChanged(0.0),
    ]
    assert rec.power == [0.0]


async def test_a_fixed_cable_has_no_lock_and_no_ampacity() -> None:
    controller, rec = await opened(has_lock=False)
    assert rec.take() == [PilotChanged(Pilot.A), RelayChanged(False)]
    assert not controller.capabilities.has_lock
    await controller.lock(True)
    assert controller.lock_state is LockState.NONE
    with pytest.raises(Refused, match="no lock"):
        controller.inject("lock_failure")


async def test_the_car_state_machine_drives_the_pilot() -> None:
    controller, rec = await opened()
    rec.take()
    controller.plug()
    controller.ready()
    controller.suspend()
    controller.ready()
    controller.unplug()
    await settle()
    pilots = [e.pilot for e in rec.take() if isinstance(e, PilotChanged)]
    assert pilots == [Pilot.B, Pilot.C, Pilot.B, Pilot.C, Pilot.A]


async def test_impossible_car_requests_are_refused_and_change_nothing() -> None:
    controller, _ = await opened()
    with pytest.raises(Refused, match="not plugged in"):
        controller.ready()
    with pytest.raises(Refused, match="not plugged in"):
        controller.suspend()
    with pytest.raises(Refused, match="not plugged in"):
        controller.unplug()
    controller.plug()
    with pytest.raises(Refused, match="already plugged"):
        controller.plug()
    with pytest.raises(Refused, match="not asking"):
        controller.suspend()
    controller.ready()
    with pytest.raises(Refused, match="already asking"):
        controller.ready()
    assert controller.pilot is Pilot.C


async def test_a_car_that_needs_ventilation_asks_with_d() -> None:
    controller, _ = await opened(car=SimulatedCar(ventilation=True))
    controller.plug()
    controller.ready()
    assert controller.pilot is Pilot.D
    await controller.allow_power(True)
    assert controller.relay_closed


async def test_the_relay_closes_only_with_power_allowed_and_the_car_asking() -> None:
    controller, rec = await opened()
    await controller.allow_power(True)  # no car: nothing closes
    assert not controller.relay_closed
    controller.plug()  # B: connected, not asking
    assert not controller.relay_closed
    await controller.allow_power(False)
    controller.ready()  # asking, but power not allowed
    assert not controller.relay_closed
    await settle()
    rec.take()
    await controller.allow_power(True)
    assert controller.relay_closed
    await settle()
    assert rec.take() == [RelayChanged(True)]  # delivered after the command, as feedback


async def test_the_relay_opens_when_the_car_pauses_unplugs_or_power_is_withdrawn() -> None:
    controller, rec = await charging()
    controller.suspend()
    assert not controller.relay_closed
    controller.ready()  # power still allowed: closes again
    assert controller.relay_closed
    controller.unplug()
    assert not controller.relay_closed
    await settle()
    assert rec.take() == [
        PilotChanged(Pilot.B),
        RelayChanged(False),
        PilotChanged(Pilot.C),
        RelayChanged(True),
        PilotChanged(Pilot.A),
        RelayChanged(False),
        AmpacityChanged(0.0),
    ]
    controller.plug()
    controller.ready()
    await controller.allow_power(False)
    assert not controller.relay_closed


async def test_events_are_never_delivered_inside_the_call() -> None:
    controller, rec = await opened()
    rec.take()
    controller.plug()
    assert rec.events == []
    await settle()
    assert rec.take() == [PilotChanged(Pilot.B), AmpacityChanged(32.0)]


async def test_power_flows_only_with_relay_closed_car_asking_and_at_least_6_a() -> None:
    controller, rec = await opened()
    controller.plug()
    await controller.allow_power(True)
    await controller.set_max_current(16)
    assert controller.power_w == 0.0  # relay open (B)
    controller.ready()
    assert controller.power_w == pytest.approx(16 * 3 * 230)
    await controller.set_max_current(0)  # 0 A pauses the car: it keeps asking, draws nothing, relay stays
    assert controller.power_w == 0.0
    assert controller.pilot is Pilot.C and controller.relay_closed
    assert controller.snapshot()["duty_cycle_pct"] == 100.0
    await controller.set_max_current(5.5)  # below 6 A: no charging allowed either
    assert controller.power_w == 0.0
    await controller.set_max_current(10)
    assert controller.power_w == pytest.approx(10 * 3 * 230)
    controller.suspend()
    assert controller.power_w == 0.0
    assert rec.power == [0.0, 16 * 3 * 230, 0.0, 10 * 3 * 230, 0.0]


async def test_the_car_draws_at_most_its_own_charger_and_the_controller_at_most_its_rating() -> None:
    controller, _ = await opened(car=SimulatedCar(phases=1, max_current_a=20), max_current_a=25)
    controller.plug()
    controller.ready()
    await controller.allow_power(True)
    await controller.set_max_current(32)
    assert controller.current_limit_a == 25.0  # clamped to the controller's rating
    assert controller.power_w == pytest.approx(20 * 230)  # one phase, its own 20 A


async def test_a_bad_current_is_a_controller_error() -> None:
    controller, _ = await opened()
    for amps in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ControllerError, match="max current"):
            await controller.set_max_current(amps)


@pytest.mark.parametrize("fault", [Fault.RCD, Fault.DIODE, Fault.OVERCURRENT, Fault.OVERTEMPERATURE, Fault.NO_GROUND])
async def test_a_tripping_fault_opens_the_relay_and_keeps_it_open_until_allowed_again(fault: Fault) -> None:
    controller, rec = await charging()
    controller.inject(fault.value, "test trip")
    assert not controller.relay_closed and controller.power_w == 0.0
    await settle()
    assert rec.take() == [FaultChanged(fault, True, "test trip"), RelayChanged(False)]
    with pytest.raises(ControllerError, match=f"fault {fault.value} active"):
        await controller.allow_power(True)
    assert controller.clear() == [fault]
    assert not controller.relay_closed  # the trip withdrew the permission
    await controller.allow_power(True)
    assert controller.relay_closed
    await settle()
    assert rec.take() == [FaultChanged(fault, False), RelayChanged(True)]


async def test_fault_names_are_checked() -> None:
    controller, _ = await opened()
    with pytest.raises(Refused, match="unknown fault 'meltdown'; known: rcd, diode"):
        controller.inject("meltdown")
    controller.inject("rcd")
    with pytest.raises(Refused, match="already active"):
        controller.inject("rcd")
    with pytest.raises(Refused, match="not active"):
        controller.clear("diode")
    assert controller.clear("RCD") == [Fault.RCD]
    assert controller.clear() == []


async def test_a_welded_relay_stays_closed_when_told_to_open() -> None:
    controller, rec = await charging()
    controller.inject(Fault.RELAY_WELDED)
    await controller.allow_power(False)
    assert controller.relay_closed  # the feedback says closed
    controller.unplug()
    controller.plug()
    controller.ready()
    assert controller.relay_closed
    assert controller.power_w > 0  # physics: a car behind a welded relay draws ...
    await controller.set_max_current(0)
    assert controller.power_w == 0.0  # ... until the pilot tells it to stop
    await settle()
    events = rec.take()
    assert events[0] == FaultChanged(Fault.RELAY_WELDED, True, "injected")
    assert RelayChanged(False) not in events
    controller.clear(Fault.RELAY_WELDED)
    assert not controller.relay_closed  # repaired: it follows the last command (open)
    await settle()
    assert rec.take() == [FaultChanged(Fault.RELAY_WELDED, False), RelayChanged(False)]


async def test_a_welded_open_relay_closes_normally_then_sticks() -> None:
    controller, _ = await opened()
    controller.inject("relay_welded")
    controller.plug()
    controller.ready()
    assert not controller.relay_closed
    await controller.allow_power(True)
    assert controller.relay_closed
    controller.suspend()
    assert controller.relay_closed


async def test_the_lock_locks_and_a_failed_lock_reports_failed() -> None:
    controller, rec = await opened()
    rec.take()
    await controller.lock(True)
    assert controller.lock_state is LockState.LOCKED
    controller.inject(Fault.LOCK_FAILURE, "motor stalled")
    assert controller.lock_state is LockState.FAILED
    await controller.lock(False)  # the lock is asked again: it reports its state, still failed
    assert controller.lock_state is LockState.FAILED
    controller.clear()
    assert controller.lock_state is LockState.UNLOCKED  # the state last asked for
    await controller.lock(False)  # asked again: reported again
    await settle()
    assert rec.take() == [
        LockChanged(LockState.LOCKED),
        FaultChanged(Fault.LOCK_FAILURE, True, "motor stalled"),
        LockChanged(LockState.FAILED),
        LockChanged(LockState.FAILED),
        FaultChanged(Fault.LOCK_FAILURE, False),
        LockChanged(LockState.UNLOCKED),
        LockChanged(LockState.UNLOCKED),
    ]


async def test_a_silent_controller_reports_that_once_then_nothing_and_takes_no_commands() -> None:
    controller, rec = await charging()
    controller.inject(Fault.CONTROLLER_SILENT)
    await settle()
    assert rec.take() == [FaultChanged(Fault.CONTROLLER_SILENT, True, "injected")]
    for command in (controller.allow_power(False), controller.set_max_current(6), controller.lock(True)):
        with pytest.raises(ControllerError, match="does not answer"):
            await command
    assert controller.relay_closed  # the command never reached it
    controller.unplug()  # the hardware still acts on its own: the relay opens on state A ...
    assert not controller.relay_closed and controller.power_w == 0.0
    await settle()
    assert rec.take() == []  # ... but says nothing
    assert controller.snapshot()["online"] is False
    controller.clear()
    await settle()
    assert rec.take() == [
        FaultChanged(Fault.CONTROLLER_SILENT, False),
        PilotChanged(Pilot.A),
        RelayChanged(False),
        AmpacityChanged(0.0),
    ]
    await controller.allow_power(False)


async def test_commands_before_open_are_errors_and_close_opens_the_relay() -> None:
    controller = SimulatedController()
    with pytest.raises(ControllerError, match="not open"):
        await controller.allow_power(True)
    controller, rec = await charging()
    await controller.close()
    assert not controller.relay_closed
    await settle()
    assert rec.take() == [RelayChanged(False)]
    controller.unplug()
    await settle()
    assert rec.take() == []  # closed: nobody is told


async def test_a_card_goes_to_the_card_reader_hook() -> None:
    controller, _ = await opened()
    with pytest.raises(Refused, match="no card reader"):
        controller.present_card("04a1b2c3")

    class Reader:
        def __init__(self) -> None:
            self.uids: list[str] = []

        def present(self, uid: str) -> None:
            self.uids.append(uid)

    reader = Reader()
    controller.card_reader = reader
    assert controller.present_card("04:a1:b2:c3") == "04A1B2C3"
    with pytest.raises(Refused, match="not a card UID"):
        controller.present_card("hello")
    assert reader.uids == ["04A1B2C3"]


async def test_snapshot() -> None:
    controller, _ = await charging()
    controller.inject("overtemperature", "82 C")
    assert controller.snapshot() == {
        "name": "simulated",
        "car": "ready",
        "pilot": "C",
        "relay": "open",
        "power_allowed": False,
        "lock": "unlocked",
        "current_limit_a": 16.0,
        "duty_cycle_pct": 26.7,
        "power_w": 0.0,
        "faults": {"overtemperature": "82 C"},
        "online": True,
    }


class Clock:
    """The meter simulator's monotonic clock, moved by the test: energy is power x the time the test says passed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    import station.meter.sim.base as base

    fake = Clock()
    monkeypatch.setattr(base, "time", types.SimpleNamespace(monotonic=fake.monotonic, time=time.time))
    return fake


async def test_the_simulated_meter_counts_only_what_the_car_draws(clock: Clock) -> None:
    meter = SmartMeSimulator()
    controller, _ = await opened()
    controller.add_power_listener(meter.set_load)
    assert meter.load_w == 0.0
    meter.open_transaction({"ID": "T1"})  # a transaction runs, but nothing flows yet
    begin = meter.mem.energy_wh
    clock.now += 60
    meter.tick()
    assert meter.mem.energy_wh == begin
    controller.plug()
    controller.ready()
    await controller.allow_power(True)
    await controller.set_max_current(32)  # 32 A x 3 x 230 V = 22080 W
    clock.now += 900  # a quarter of an hour
    await controller.set_max_current(16)  # counted up to this moment at 22080 W, then 11040 W
    clock.now += 1800
    controller.suspend()  # then nothing
    clock.now += 600
    meter.tick()
    assert meter.mem.energy_wh - begin == pytest.approx(22080 / 4 + 11040 / 2)
    assert meter.drawn_w == 0.0


def test_a_meter_without_a_load_counts_its_own_power_while_a_transaction_runs(clock: Clock) -> None:
    meter = SmartMeSimulator(power_w=36000.0)
    assert meter.load_w is None and meter.drawn_w == 0.0
    clock.now += 3600
    meter.tick()
    assert meter.mem.energy_wh == 0.0  # no transaction: nothing
    meter.open_transaction({"ID": "T1"})
    assert meter.drawn_w == 36000.0
    clock.now += 360
    meter.tick()
    assert meter.mem.energy_wh == pytest.approx(3600.0)
    meter.set_load(0.0)  # a car takes over: counted whether a transaction runs or not, as a real meter
    clock.now += 360
    meter.tick()
    assert meter.mem.energy_wh == pytest.approx(3600.0)
    meter.set_load(None)
    assert meter.drawn_w == 36000.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="load"):
            meter.set_load(bad)
