"""Which meter models exist: model name -> where its driver, its register table and its simulator live. The one place
to add a model; config validation, the daemon and `station meter-sim` all look here.

A registry of names and dotted paths: importing it imports no driver and no simulator. A model's driver module is
imported when that model is asked for (its register table, its driver), its simulator module only when a simulator
is built, so checking a config loads at most the register table of the models it overrides registers of, and the
production daemon never imports a simulator it does not run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from station.bus import ModbusDevice
    from station.meter.driver import RegisterTable
    from station.meter.interface import Meter
    from station.meter.sim.base import SimulatedMeter


def _load(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MeterModel:
    name: str
    module: str  # the driver's module, which also holds the register table
    registers_class: str
    driver_class: str
    simulator_module: str
    simulator_class: str

    def register_table(self) -> type[RegisterTable]:
        """The model's register table class (imports the driver module, nothing else)."""
        table: type[RegisterTable] = _load(self.module, self.registers_class)
        return table

    def registers(self, overrides: dict[str, int]) -> Any:
        """The register table with `overrides` applied; ValueError names unknown register names."""
        return self.register_table().with_overrides(overrides)

    def driver(self, device: ModbusDevice, registers: Any, poll_interval: float) -> Meter:
        meter: Meter = _load(self.module, self.driver_class)(device, registers, poll_interval=poll_interval)
        return meter

    def simulator(self, **settings: Any) -> SimulatedMeter:
        sim: SimulatedMeter = _load(self.simulator_module, self.simulator_class)(**settings)
        return sim


MODELS: dict[str, MeterModel] = {
    model.name: model
    for model in (
        MeterModel(
            "smartme",
            "station.meter.smartme",
            "SmartMeRegisters",
            "SmartMeMeter",
            "station.meter.sim.smartme",
            "SmartMeSimulator",
        ),
        MeterModel(
            "iskra-wm3m4c",
            "station.meter.iskra",
            "IskraRegisters",
            "IskraMeter",
            "station.meter.sim.iskra",
            "IskraSimulator",
        ),
        MeterModel(
            "carlo-gavazzi-em580",
            "station.meter.em580",
            "Em580Registers",
            "Em580Meter",
            "station.meter.sim.em580",
            "Em580Simulator",
        ),
        MeterModel(
            "bauer-bsm-ws36a",
            "station.meter.bauer",
            "BauerRegisters",
            "BauerMeter",
            "station.meter.sim.bauer",
            "BauerSimulator",
        ),
    )
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
        registers=registers,  # config overrides by the driver's names: each simulator maps them onto its own table
        device_id=device_id,
        power_w=power_w,
        signing_time=signing_time,
    )
