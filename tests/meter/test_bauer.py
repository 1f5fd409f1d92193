"""The BAUER BSM-WS36A driver against its simulator over a real pty pair: separate signed Start and End snapshots
(TX B and E, running PG), both forwarded, begin first; a restart mid-transaction finds the begin record in the meter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from station.bus import LineSettings, ModbusBus, ModbusDevice
from station.meter import ocmf
from station.meter.bauer import BauerMeter
from station.meter.interface import MeterRefused, MeterTransactionRequest
from station.meter.nullmodem import VirtualNullModem
from station.meter.sim.bauer import BauerSimulator
from station.meter.sim.server import serve

Line = tuple[BauerMeter, BauerSimulator, VirtualNullModem]


@pytest_asyncio.fixture
async def line(tmp_path: Path) -> AsyncIterator[Line]:
    cable = await VirtualNullModem().start()
    sim = BauerSimulator(state_path=tmp_path / "m.json", ledger_path=tmp_path / "ledger.jsonl", signing_time=0.2)
    server = await serve(sim, cable.path_b)
    meter = BauerMeter(ModbusDevice(ModbusBus(LineSettings(port=cable.path_a)), 42))
    await meter.open()
    yield meter, sim, cable
    await meter.close()
    await server.shutdown()
    await cable.stop()


def request() -> MeterTransactionRequest:
    return MeterTransactionRequest("ref-b", 1, "TAG-BSM", "CP-BSM", datetime.now(UTC))


async def test_identity_key_live(line: Line) -> None:
    meter, sim, _ = line
    identity = await meter.identity()
    assert (identity.vendor, identity.serial_number, identity.firmware_version) == (
        "BAUER",
        sim.mem.serial,
        sim.FIRMWARE,
    )
    assert await meter.public_key() == sim.public_key_hex
    live = await meter.live_values()
    assert live.voltage_v == (230.1, 229.9, 230.2) and live.power_w == 0


async def test_begin_and_end_records_both_forwarded(line: Line) -> None:
    meter, sim, _ = line
    sim.mem.energy_wh = 777.0
    started = await meter.start_transaction(request())
    assert started.meter_start_wh == 777 and await meter.transaction_running()
    assert (await meter.live_values()).power_w == pytest.approx(11000, abs=1)
    ended = await meter.stop_transaction("ref-b")
    begin, end = ended.records
    assert (begin.context, end.context) == ("Transaction.Begin", "Transaction.End")
    assert begin.verified and end.verified, (begin.problems, end.problems)
    b, e = ocmf.parse(begin.data), ocmf.parse(end.data)
    assert [r.tx for r in b.readings] == ["B"] and [r.tx for r in e.readings] == ["E"]
    assert int(b.pagination[1:]) + 1 == int(e.pagination[1:])
    assert b.identification == e.identification == "TAG-BSM"
    assert not await meter.transaction_running()


async def test_nothing_to_end_on_a_fresh_meter(line: Line) -> None:
    meter, _, _ = line
    with pytest.raises(MeterRefused, match="no transaction"):
        await meter.stop_transaction("never-started")


async def test_a_new_driver_finds_the_open_transaction(line: Line) -> None:
    meter, _, _ = line
    await meter.start_transaction(request())
    fresh = BauerMeter(meter.device)  # a restarted daemon: nothing in memory
    assert await fresh.transaction_running()
    ended = await fresh.stop_transaction("ref-b")
    assert [r.context for r in ended.records] == ["Transaction.Begin", "Transaction.End"]


async def test_failed_snapshot_and_corrupt_signature(line: Line) -> None:
    meter, sim, _ = line
    sim.faults.refuse_start = True
    with pytest.raises(MeterRefused, match="FAILED_GENERAL"):
        await meter.start_transaction(request())
    sim.faults.refuse_start = False
    sim.mem.extra.pop("failed_B")
    await meter.start_transaction(request())
    sim.faults.corrupt_signature = True
    _, end = (await meter.stop_transaction("ref-b")).records
    assert not end.verified
