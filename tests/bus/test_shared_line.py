"""Two meters on ONE real pty pair, as a twin AC column wires them: one RS-485 line, two device ids, one bus.

The server side is one pymodbus RTU server holding both simulated meters (a SimDevice each); a request to any other
id is dropped, as on a real line where nobody answers it (pymodbus itself would answer DEVICE_FAILURE,
docs/modbus-testing.md pitfall 6). The server's trace records every request frame in the order it came off the line,
so the tests assert what the wire saw, not how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from pymodbus import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer

from station.bus import LineSettings, ModbusBus, ModbusDevice, PortUnavailable, Priority, urgent
from station.bus.codec import regs_to_str
from station.meter.interface import MeterLinkError, MeterTransactionRequest
from station.meter.nullmodem import VirtualNullModem
from station.meter.sim.smartme import SmartMeSimulator
from station.meter.smartme import SmartMeMeter, SmartMeRegisters

REGS = SmartMeRegisters()
SILENT_ID = 3  # nobody on the line answers this id


@dataclass
class Line:
    cable: VirtualNullModem
    sims: dict[int, SmartMeSimulator]
    server: ModbusSerialServer
    seen: list[tuple[int, int, int]] = field(default_factory=list)  # (device id, function code, address) per request

    def trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        self.seen.append((pdu.dev_id, pdu.function_code, int(getattr(pdu, "address", -1))))
        sim = self.sims.get(pdu.dev_id)
        if sim is None or sim.faults.mute:
            return None  # silence, like a real line
        return pdu

    def units(self) -> list[int]:
        return [unit for unit, _, _ in self.seen]


@pytest_asyncio.fixture
async def line() -> AsyncIterator[Line]:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    cable = await VirtualNullModem().start()
    sims = {1: SmartMeSimulator(device_id=1, serial="SIM-LEFT"), 2: SmartMeSimulator(device_id=2, serial="SIM-RIGHT")}
    holder: list[Line] = []
    server = ModbusSerialServer(
        [sim.device() for sim in sims.values()],
        framer=FramerType.RTU,
        port=cable.path_b,
        baudrate=9600,
        trace_pdu=lambda sending, pdu: holder[0].trace(sending, pdu),  # type: ignore[arg-type,return-value]
    )
    result = Line(cable, sims, server)
    holder.append(result)
    await server.serve_forever(background=True)
    await asyncio.sleep(0)  # let the serial transport set itself up (pitfall 7)
    yield result
    await server.shutdown()  # type: ignore[no-untyped-call]
    await cable.stop()


def bus_on(line: Line, **settings: Any) -> ModbusBus:
    return ModbusBus(LineSettings(line.cable.path_a, **settings))


async def serial_of(device: ModbusDevice) -> str:
    block = await device.read_holding(REGS.model, 20)
    return regs_to_str(block[REGS.serial - REGS.model : REGS.serial - REGS.model + 8])


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def test_requests_to_two_devices_interleave_and_each_gets_its_own_answer(line: Line) -> None:
    bus = bus_on(line)
    left, right = ModbusDevice(bus, 1), ModbusDevice(bus, 2)
    await left.open()
    await right.open()
    reads: list[Awaitable[str]] = []
    for _ in range(6):
        reads += [serial_of(left), serial_of(right)]
    serials = await asyncio.gather(*reads)
    assert serials == ["SIM-LEFT", "SIM-RIGHT"] * 6  # no answer ever went to the other device
    assert line.units() == [1, 2] * 6  # first come, first served: they alternate on the wire
    assert (left.requests, right.requests, bus.requests) == (6, 6, 12)
    assert left.bytes_sent + right.bytes_sent == bus.bytes_sent == 12 * 8
    assert left.bytes_received == right.bytes_received and bus.bytes_received == 2 * left.bytes_received
    assert left.up and right.up and bus.failures == 0
    await left.close()
    await right.close()


async def test_the_drivers_of_two_meters_share_one_line(line: Line) -> None:
    bus = bus_on(line)
    left, right = SmartMeMeter(ModbusDevice(bus, 1)), SmartMeMeter(ModbusDevice(bus, 2))
    await left.open()
    await right.open()
    keys = await asyncio.gather(left.public_key(), right.public_key())
    assert keys == [line.sims[1].public_key_hex, line.sims[2].public_key_hex] and keys[0] != keys[1]
    ids = await asyncio.gather(left.identity(), right.identity())
    assert [i.serial_number for i in ids] == ["SIM-LEFT", "SIM-RIGHT"]
    await left.close()
    await right.close()


async def test_a_silent_device_marks_only_itself_down(line: Line) -> None:
    bus = bus_on(line, retries=1)
    events: dict[int, list[bool]] = {1: [], SILENT_ID: []}
    alive = ModbusDevice(bus, 1, latency=0.05, on_link_change=lambda up, _: events[1].append(up))
    silent = ModbusDevice(bus, SILENT_ID, latency=0.05, on_link_change=lambda up, _: events[SILENT_ID].append(up))
    await alive.open()
    await silent.open()

    async def keep_reading() -> list[str]:
        return [await serial_of(alive) for _ in range(5)]

    async def ask_the_silent_one() -> BaseException:
        with pytest.raises(MeterLinkError, match=f"no valid answer.*device id {SILENT_ID}") as failed:
            await serial_of(silent)
        return failed.value

    serials, _ = await asyncio.gather(keep_reading(), ask_the_silent_one())
    assert serials == ["SIM-LEFT"] * 5  # the neighbour kept answering throughout
    assert silent.up is False and events[SILENT_ID] == [False] and "no valid answer" in silent.last_error
    assert alive.up is True and events[1] == [True] and alive.last_error == ""
    assert (silent.failures, alive.failures, bus.failures) == (2, 0, 2)  # the first try and one retry
    assert line.units().count(SILENT_ID) == 2 and line.units().count(1) == 5
    assert await serial_of(alive) == "SIM-LEFT"
    await alive.close()
    await silent.close()


async def test_a_transaction_request_overtakes_queued_sampling_requests_on_the_wire(line: Line) -> None:
    bus = bus_on(line)
    sampler, signer = ModbusDevice(bus, 1), ModbusDevice(bus, 2)
    await sampler.open()
    await signer.open()
    line.sims[1].faults.latency = 0.2  # each sampling answer takes a while, so the queue behind it builds up
    sampling = [asyncio.create_task(sampler.read_holding(REGS.energy_import + i, 1)) for i in range(5)]
    await until(lambda: bus.scheduler.on_line is not None and bus.scheduler.waiting == 4, "four sampling reads queue")
    with urgent():
        stop = asyncio.create_task(signer.read_holding(REGS.status_block, 8))  # the task inherits the priority
    await until(lambda: bus.scheduler.waiting == 5, "the transaction request queues")
    assert bus.scheduler.queued()[0].priority is Priority.TRANSACTION
    await asyncio.gather(stop, *sampling)
    # On the line: the one sampling frame already sent, then the transaction's frame, then the rest of the queue.
    assert line.seen == [
        (1, 3, REGS.energy_import),
        (2, 3, REGS.status_block),
        *[(1, 3, REGS.energy_import + i) for i in range(1, 5)],
    ]
    await sampler.close()
    await signer.close()


async def test_a_drivers_transaction_procedure_is_urgent_without_changes_to_the_driver(line: Line) -> None:
    bus = bus_on(line)
    meter = SmartMeMeter(ModbusDevice(bus, 1), poll_interval=0.01)
    await meter.open()
    priorities: list[Priority] = []
    submit = bus.scheduler.submit

    def recording_submit(priority: Priority, label: str = "") -> Any:
        priorities.append(priority)
        return submit(priority, label)

    bus.scheduler.submit = recording_submit  # type: ignore[method-assign]
    request = MeterTransactionRequest("tx-1", 1, "TAG", "CP-1", datetime.now(UTC))
    with meter.transaction_work():
        await meter.start_transaction(request)
    started = len(priorities)
    await meter.live_values()
    assert started >= 4 and priorities[:started] == [Priority.TRANSACTION] * started
    assert priorities[started:] and set(priorities[started:]) == {Priority.SAMPLING}
    await meter.close()


async def test_a_request_cancelled_in_the_queue_is_removed_and_the_line_goes_on(line: Line) -> None:
    bus = bus_on(line)
    left, right = ModbusDevice(bus, 1), ModbusDevice(bus, 2)
    await left.open()
    await right.open()
    line.sims[1].faults.latency = 0.2
    first = asyncio.create_task(serial_of(left))
    await until(lambda: bus.scheduler.on_line is not None, "the first read is on the line")
    doomed = asyncio.create_task(right.read_holding(REGS.energy_import, 2))
    after = asyncio.create_task(serial_of(right))
    await until(lambda: bus.scheduler.waiting == 2, "two reads queue")
    doomed.cancel()
    assert await first == "SIM-LEFT" and await after == "SIM-RIGHT"
    assert doomed.cancelled() and bus.scheduler.waiting == 0
    assert [addr for _, _, addr in line.seen] == [REGS.model, REGS.model]  # the cancelled read never went out
    await left.close()
    await right.close()


async def test_a_request_cancelled_on_the_line_leaves_its_late_answer_no_way_in(line: Line) -> None:
    bus = bus_on(line)
    device = ModbusDevice(bus, 1, latency=0.3)
    await device.open()
    line.sims[1].faults.late_next, line.sims[1].faults.late_by = 1, 0.2
    doomed = asyncio.create_task(device.read_holding(REGS.status_block, 8))
    await until(lambda: len(line.seen) == 1, "the frame is on the line")
    doomed.cancel()
    await asyncio.gather(doomed, return_exceptions=True)
    assert bus.scheduler.wait() > 0  # its answer may still come: the line stays quiet
    # The next request of the same device asks for a different count; the late 8-register answer must not be it.
    assert await serial_of(device) == "SIM-LEFT"
    await device.close()


async def test_the_port_stays_open_until_its_last_device_closes(line: Line) -> None:
    bus = bus_on(line)
    left, right = ModbusDevice(bus, 1), ModbusDevice(bus, 2)
    await left.open()
    await left.open()  # idempotent
    await right.open()
    await left.close()
    await left.close()  # idempotent, and it does not close the port under its neighbour
    assert bus.is_open and await serial_of(right) == "SIM-RIGHT"
    await right.close()
    assert not bus.is_open
    with pytest.raises(PortUnavailable, match="closed"):
        await serial_of(right)


def test_two_devices_with_one_id_cannot_share_a_bus() -> None:
    bus = ModbusBus(LineSettings("/dev/ttyUSB9"))
    ModbusDevice(bus, 7)
    with pytest.raises(ValueError, match="device id 7 is already in use on the bus at /dev/ttyUSB9"):
        ModbusDevice(bus, 7)
    with pytest.raises(ValueError, match="out of range"):
        ModbusDevice(bus, 0)


async def test_a_missing_port_marks_every_device_of_the_bus_down(tmp_path: Any) -> None:
    port = str(tmp_path / "ttyUSB-unplugged")
    bus = ModbusBus(LineSettings(port, config_section="[bus.left]"))
    left, right = ModbusDevice(bus, 1), ModbusDevice(bus, 2)
    await left.open()
    await right.open()
    assert left.up is False and right.up is False
    assert "no such device" in right.last_error and "[bus.left] port names it" in right.last_error
    with pytest.raises(PortUnavailable, match="no such device"):
        await left.read_holding(0, 1)
    assert bus.scheduler.wait() == 0.0  # nothing went out, so no quiet time is owed
    await left.close()
    await right.close()
