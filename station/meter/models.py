"""Which meter models exist: model name -> driver, its register table, and its simulator. The one place to add a
model; config validation, the daemon and `station meter-sim` all look here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.bus import ModbusDevice
from station.meter.bauer import BauerMeter, BauerRegisters
from station.meter.em580 import Em580Meter, Em580Registers
from station.meter.interface import Meter
from station.meter.iskra import IskraMeter, IskraRegisters
from station.meter.sim.base import SimulatedMeter
from station.meter.sim.bauer import BauerSimulator
from station.meter.sim.em580 import Em580Simulator
from station.meter.sim.iskra import IskraSimulator
from station.meter.sim.smartme import SmartMeSimulator
from station.meter.smartme import SmartMeMeter, SmartMeRegisters


@dataclass(frozen=True)
class MeterModel:
    name: str
    registers: Callable[[dict[str, int]], Any]  # with_overrides: raises ValueError on unknown names
    driver: Callable[[ModbusDevice, Any, float], Meter]
    simulator: Callable[..., SimulatedMeter]


MODELS: dict[str, MeterModel] = {
    "smartme": MeterModel(
        "smartme",
        SmartMeRegisters.with_overrides,
        lambda device, regs, poll: SmartMeMeter(device, regs, poll_interval=poll),
        SmartMeSimulator,
    ),
    "iskra-wm3m4c": MeterModel(
        "iskra-wm3m4c",
        IskraRegisters.with_overrides,
        lambda device, regs, poll: IskraMeter(device, regs, poll_interval=poll),
        IskraSimulator,
    ),
    "carlo-gavazzi-em580": MeterModel(
        "carlo-gavazzi-em580",
        Em580Registers.with_overrides,
        lambda device, regs, poll: Em580Meter(device, regs, poll_interval=poll),
        Em580Simulator,
    ),
    "bauer-bsm-ws36a": MeterModel(
        "bauer-bsm-ws36a",
        BauerRegisters.with_overrides,
        lambda device, regs, poll: BauerMeter(device, regs, poll_interval=poll),
        BauerSimulator,
    ),
}


def build_driver(model: str, device: ModbusDevice, overrides: dict[str, int], poll_interval: float) -> Meter:
    spec = MODELS[model]
    return spec.driver(device, spec.registers(overrides), poll_interval)


def build_simulator_for(
    model: str,
    *,
    state: Path | None,
    ledger: Path | None,
    device_id: int,
    power_w: float,
    signing_time: float,
    registers: dict[str, int] | None = None,
) -> SimulatedMeter:
    if model not in MODELS:
        raise ValueError(f"no simulator for meter model {model!r}; simulated models: {', '.join(MODELS)}")
    spec = MODELS[model]
    return spec.simulator(
        state_path=state,
        ledger_path=ledger,
        registers=spec.registers(registers or {}),
        device_id=device_id,
        power_w=power_w,
        signing_time=signing_time,
    )
