"""Serves a simulated meter on a serial device path as a Modbus RTU server (pymodbus), and runs `station meter-sim`."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import structlog
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer

from station.meter.models import MODELS, build_simulator_for
from station.meter.sim.base import SimulatedMeter

log = structlog.get_logger("station.meter.sim")

SIMULATED_MODELS = tuple(MODELS)


async def serve(
    sim: SimulatedMeter, port: str, *, baudrate: int = 9600, parity: str = "N", stopbits: int = 1
) -> ModbusSerialServer:
    """Start serving `sim` on `port`; returns once the port is open. Stop with `await server.shutdown()`."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    server = ModbusSerialServer(
        sim.device(),
        framer=FramerType.RTU,
        port=port,
        baudrate=baudrate,
        parity=parity,
        bytesize=8,
        stopbits=stopbits,
        trace_pdu=sim.trace_pdu,  # type: ignore[arg-type]  # returning None drops the request: a mute meter
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


async def run_meter_sim(
    model: str,
    port: str,
    *,
    state: Path | None,
    ledger: Path | None,
    baudrate: int,
    device_id: int,
    power_w: float,
    signing_time: float,
) -> int:
    sim = build_simulator(
        model, state=state, ledger=ledger, device_id=device_id, power_w=power_w, signing_time=signing_time
    )
    server = await serve(sim, port, baudrate=baudrate)
    log.info("meter simulator serving", model=model, port=port, device_id=device_id, public_key=sim.public_key_hex)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown()  # type: ignore[no-untyped-call]
    return 0
