"""Serves simulated meters on one serial line as one Modbus RTU server (pymodbus), each at its own device id, as
several meters share one RS-485 bus; and reads the `--meter MODEL:DEVICE_ID[:key=value,...]` specs of
`station meter-sim`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pymodbus import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer

from station.meter.models import MODELS, build_simulator_for
from station.meter.sim.base import SimulatedMeter

SIMULATED_MODELS = tuple(MODELS)

MAX_METERS_PER_LINE = 32  # an RS-485 segment carries 32 unit loads; also bounds what `station meter-sim` accepts
MIN_DEVICE_ID, MAX_DEVICE_ID = 1, 247  # Modbus RTU unicast addresses
MAX_SPEC_LENGTH = 1024
MAX_POWER_W = 1_000_000.0
MAX_SIGNING_TIME = 60.0


def check_line(sims: Sequence[SimulatedMeter]) -> None:
    """Several simulators can share a line only with distinct, valid device ids: ValueError naming the clash."""
    if not sims:
        raise ValueError("no simulated meter to serve")
    if len(sims) > MAX_METERS_PER_LINE:
        raise ValueError(f"{len(sims)} simulated meters on one line; at most {MAX_METERS_PER_LINE}")
    seen: dict[int, SimulatedMeter] = {}
    for sim in sims:
        if not MIN_DEVICE_ID <= sim.device_id <= MAX_DEVICE_ID:
            raise ValueError(f"device id {sim.device_id} of the {sim.MODEL} simulator is not 1..247")
        if sim.device_id in seen:
            raise ValueError(
                f"device id {sim.device_id} is given twice on one line ({seen[sim.device_id].MODEL} and {sim.MODEL}); "
                "each meter needs its own"
            )
        seen[sim.device_id] = sim


class _Dispatch:
    """The server's `trace_pdu`: a request to a mute meter, or to a device id nobody has, gets no answer at all, as
    on a real RS-485 bus (pymodbus itself would answer an unknown id with DEVICE_FAILURE)."""

    def __init__(self, sims: Sequence[SimulatedMeter]) -> None:
        self.by_id = {sim.device_id: sim for sim in sims}

    def __call__(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        sim = self.by_id.get(pdu.dev_id)
        if sim is None:
            return None
        return sim.trace_pdu(sending, pdu)


async def serve(
    sims: SimulatedMeter | Sequence[SimulatedMeter],
    port: str,
    *,
    baudrate: int = 9600,
    parity: str = "N",
    stopbits: int = 1,
) -> ModbusSerialServer:
    """Start serving one simulator or several (distinct device ids) on `port`; returns once the port is open. Stop
    with `await server.shutdown()`."""
    line = [sims] if isinstance(sims, SimulatedMeter) else list(sims)
    check_line(line)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    server = ModbusSerialServer(
        [sim.device() for sim in line],
        framer=FramerType.RTU,
        port=port,
        baudrate=baudrate,
        parity=parity,
        bytesize=8,
        stopbits=stopbits,
        trace_pdu=_Dispatch(line),  # type: ignore[arg-type]  # returning None drops the request: a mute meter
    )
    await server.serve_forever(background=True)
    await asyncio.sleep(0)  # let the serial transport set itself up before anyone can shut it down
    return server


def build_simulator(
    model: str,
    *,
    state: Path | None,
    ledger: Path | None,
    device_id: int = 1,
    power_w: float = 11000.0,
    signing_time: float = 0.5,
    registers: dict[str, int] | None = None,
) -> SimulatedMeter:
    return build_simulator_for(
        model,
        state=state,
        ledger=ledger,
        device_id=device_id,
        power_w=power_w,
        signing_time=signing_time,
        registers=registers,
    )


# ---------------------------------------------------------------------- `--meter` specs


@dataclass(frozen=True)
class MeterSpec:
    """One simulated meter of a line: `MODEL:DEVICE_ID[:key=value,...]`, keys state, ledger, power_w, signing_time.
    What is not given falls to the command's defaults."""

    model: str
    device_id: int
    state: Path | None = None
    ledger: Path | None = None
    power_w: float | None = None
    signing_time: float | None = None


SPEC_KEYS = ("state", "ledger", "power_w", "signing_time")


def parse_meter_spec(text: str) -> MeterSpec:
    """Parse one `--meter` value; ValueError saying which part is wrong."""
    if len(text) > MAX_SPEC_LENGTH:
        raise ValueError(f"--meter: {len(text)} characters; at most {MAX_SPEC_LENGTH}")
    model, sep, rest = text.partition(":")
    if model not in MODELS:
        raise ValueError(f"--meter {text!r}: unknown model {model!r}; simulated models: {', '.join(MODELS)}")
    if not sep:
        raise ValueError(f"--meter {text!r}: give MODEL:DEVICE_ID, e.g. {model}:1")
    id_text, _, options = rest.partition(":")
    try:
        device_id = int(id_text, 0)
    except ValueError:
        raise ValueError(f"--meter {text!r}: device id {id_text!r} is not a number") from None
    if not MIN_DEVICE_ID <= device_id <= MAX_DEVICE_ID:
        raise ValueError(f"--meter {text!r}: device id {device_id} is not 1..247")
    values: dict[str, str] = {}
    for item in options.split(",") if options else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in SPEC_KEYS:
            raise ValueError(f"--meter {text!r}: {item!r} is not one of {', '.join(k + '=...' for k in SPEC_KEYS)}")
        if key in values:
            raise ValueError(f"--meter {text!r}: {key} is given twice")
        if not value:
            raise ValueError(f"--meter {text!r}: {key} is empty")
        values[key] = value
    power_w = _number(text, values, "power_w", 0.0, MAX_POWER_W)
    signing_time = _number(text, values, "signing_time", 0.0, MAX_SIGNING_TIME)
    return MeterSpec(
        model,
        device_id,
        state=Path(values["state"]) if "state" in values else None,
        ledger=Path(values["ledger"]) if "ledger" in values else None,
        power_w=power_w,
        signing_time=signing_time,
    )


def _number(text: str, values: dict[str, str], key: str, low: float, high: float) -> float | None:
    if key not in values:
        return None
    try:
        number = float(values[key])
    except ValueError:
        raise ValueError(f"--meter {text!r}: {key} {values[key]!r} is not a number") from None
    if not low <= number <= high:
        raise ValueError(f"--meter {text!r}: {key} must be {low:g}..{high:g}")
    return number


def check_specs(specs: Sequence[MeterSpec]) -> None:
    """A line's specs together: not too many, distinct device ids, no file shared by two meters."""
    if len(specs) > MAX_METERS_PER_LINE:
        raise ValueError(f"{len(specs)} meters on one line; at most {MAX_METERS_PER_LINE}")
    ids: dict[int, MeterSpec] = {}
    files: dict[Path, int] = {}
    for spec in specs:
        if spec.device_id in ids:
            raise ValueError(
                f"--meter: device id {spec.device_id} is given twice ({ids[spec.device_id].model} and {spec.model}); "
                "each meter on a line needs its own"
            )
        ids[spec.device_id] = spec
        for path in (spec.state, spec.ledger):
            if path is None:
                continue
            if path in files:
                raise ValueError(f"--meter: file {path} is given to device ids {files[path]} and {spec.device_id}")
            files[path] = spec.device_id
