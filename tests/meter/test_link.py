"""The Modbus link over a real pty pair: answers are checked so that a late answer never shifts into the next request.

pymodbus alone takes a late answer as the answer to the next request (docs/modbus-testing.md pitfall 2); the first test
reproduces that with the bare client, the second shows the link refusing it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from station.meter.interface import MeterLinkError, MeterRefused
from station.meter.link import ModbusLink, SerialSettings, read_frame_sizes, regs_to_str, str_to_regs
from station.meter.nullmodem import VirtualNullModem
from station.meter.sim.server import serve
from station.meter.sim.smartme import SmartMeSimulator
from station.meter.smartme import STATUS_BLOCK_REGS, SmartMeRegisters

REGS = SmartMeRegisters()


@pytest_asyncio.fixture
async def line() -> AsyncIterator[tuple[SmartMeSimulator, VirtualNullModem]]:
    cable = await VirtualNullModem().start()
    sim = SmartMeSimulator()
    server = await serve(sim, cable.path_b)
    yield sim, cable
    await server.shutdown()
    await cable.stop()


async def test_bare_pymodbus_shifts_a_late_answer_into_the_next_request(
    line: tuple[SmartMeSimulator, VirtualNullModem],
) -> None:
    sim, cable = line
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    client = AsyncModbusSerialClient(cable.path_a, framer=FramerType.RTU, baudrate=9600, timeout=0.3, retries=0)
    assert await client.connect()
    sim.faults.latency = 0.45  # every answer comes after the client's 0.3 s timeout
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(REGS.status_block, count=STATUS_BLOCK_REGS, device_id=1)
    # The next request asks for 20 identity registers but is handed the late 8-register status answer.
    shifted = await client.read_holding_registers(REGS.model, count=20, device_id=1)
    assert len(shifted.registers) == STATUS_BLOCK_REGS
    client.close()


async def test_the_link_never_returns_a_shifted_answer(line: tuple[SmartMeSimulator, VirtualNullModem]) -> None:
    sim, cable = line
    # The link is told the meter answers within 50 ms; the meter is late by 500 ms once.
    link = ModbusLink(SerialSettings(cable.path_a, meter_latency=0.05, retries=0))
    await link.open()
    sim.faults.late_next, sim.faults.late_by = 1, 0.5
    with pytest.raises(MeterLinkError, match="no valid answer"):
        await link.read_holding(REGS.status_block, STATUS_BLOCK_REGS)
    identity = await link.read_holding(REGS.model, 20)
    assert len(identity) == 20 and regs_to_str(identity[8:16]) == sim.mem.serial
    await link.close()


async def test_retries_ride_out_one_lost_frame(line: tuple[SmartMeSimulator, VirtualNullModem]) -> None:
    sim, cable = line
    link = ModbusLink(SerialSettings(cable.path_a, meter_latency=0.1, retries=2))
    await link.open()
    cable.faults.corrupt_to_a = 1  # one answer arrives with a bad CRC
    identity = await link.read_holding(REGS.model, 20)
    assert regs_to_str(identity[8:16]) == sim.mem.serial
    assert link.failures == 1
    await link.close()


async def test_busy_is_retried_and_exceptions_are_named(line: tuple[SmartMeSimulator, VirtualNullModem]) -> None:
    sim, cable = line
    link = ModbusLink(SerialSettings(cable.path_a, busy_retry_delay=0.01))
    await link.open()
    sim.faults.busy_next = 2
    assert len(await link.read_holding(REGS.model, 20)) == 20
    with pytest.raises(MeterRefused, match="illegal data address"):
        await link.read_holding(0x7000, 2)  # not in the map
    await link.close()


async def test_link_down_and_up_is_reported(line: tuple[SmartMeSimulator, VirtualNullModem]) -> None:
    sim, cable = line
    events: list[bool] = []
    link = ModbusLink(SerialSettings(cable.path_a, meter_latency=0.05, retries=1), lambda up, _: events.append(up))
    await link.open()
    await link.read_holding(REGS.model, 1)
    sim.faults.mute = True
    with pytest.raises(MeterLinkError):
        await link.read_holding(REGS.model, 1)
    sim.faults.mute = False
    await link.read_holding(REGS.model, 1)
    assert events == [True, False, True]
    await link.close()


async def test_reads_use_the_largest_blocks(line: tuple[SmartMeSimulator, VirtualNullModem]) -> None:
    _, cable = line
    link = ModbusLink(SerialSettings(cable.path_a))
    await link.open()
    await link.read_holding(REGS.record, 300)  # 125 + 125 + 50
    assert link.requests == 3
    await link.close()


def test_timeouts_follow_baud_rate_parity_and_frame_size() -> None:
    fast = SerialSettings("x", baudrate=19200, meter_latency=0.0)
    slow = SerialSettings("x", baudrate=9600, meter_latency=0.0)
    even = SerialSettings("x", baudrate=9600, parity="E", meter_latency=0.0)
    assert slow.byte_time == pytest.approx(10 / 9600) and even.byte_time == pytest.approx(11 / 9600)
    big = read_frame_sizes(125)
    assert big == (8, 255)
    assert slow.timeout_for(*big) > fast.timeout_for(*big)
    assert even.timeout_for(*big) > slow.timeout_for(*big)
    assert slow.timeout_for(*big) > slow.wire_time(8 + 255)
    assert slow.timeout_for(*read_frame_sizes(1)) < slow.timeout_for(*big)


def test_register_text_codec_round_trips() -> None:
    assert regs_to_str(str_to_regs("SIM-1", 4)) == "SIM-1"
    with pytest.raises(ValueError):
        str_to_regs("too long for two", 2)
