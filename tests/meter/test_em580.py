"""The Carlo Gavazzi EM580 driver against its simulator over a real pty pair: brainpoolP384r1 records verified over
their exact bytes (spaces included), the record kept by the meter until released, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from station.bus import LineSettings, ModbusBus, ModbusDevice
from station.meter import ocmf
from station.meter.em580 import STATE_NOT_READY, STATE_READY, Em580Meter, lsw_first, to_lsw_first
from station.meter.interface import MeterRefused, MeterTransactionRequest
from station.meter.nullmodem import VirtualNullModem
from station.meter.sim.em580 import Em580Simulator
from station.meter.sim.server import serve

Line = tuple[Em580Meter, Em580Simulator, Path]


@pytest_asyncio.fixture
async def line(tmp_path: Path) -> AsyncIterator[Line]:
    cable = await VirtualNullModem().start()
    ledger = tmp_path / "ledger.jsonl"
    sim = Em580Simulator(state_path=tmp_path / "m.json", ledger_path=ledger, signing_time=0.2)
    server = await serve(sim, cable.path_b)
    meter = Em580Meter(ModbusDevice(ModbusBus(LineSettings(port=cable.path_a)), 1))
    await meter.open()
    yield meter, sim, ledger
    await meter.close()
    await server.shutdown()
    await cable.stop()


def request() -> MeterTransactionRequest:
    return MeterTransactionRequest("ref-em", 1, "TAG-EM580", "CP-EM", datetime.now(UTC))


async def test_identity_key_live(line: Line) -> None:
    meter, sim, _ = line
    identity = await meter.identity()
    assert (identity.vendor, identity.serial_number) == ("Carlo Gavazzi", sim.mem.serial)
    key = await meter.public_key()
    assert key == sim.public_key_hex and ocmf.load_public_key(key).curve == "brainpoolP384r1"
    live = await meter.live_values()
    assert live.voltage_v == (230.1, 229.9, 230.2) and live.power_w == 0


async def test_signed_transaction_kept_until_released(line: Line) -> None:
    meter, sim, ledger = line
    sim.mem.energy_wh = 5000.0
    started = await meter.start_transaction(request())
    assert started.meter_start_wh == 5000 and await meter.transaction_running()
    ended = await meter.stop_transaction("ref-em")
    (record,) = ended.records
    assert record.verified, record.problems
    parsed = ocmf.parse(record.data)
    assert parsed.signature_algorithm == "ECDSA-brainpoolP384r1-SHA256" and ", " in parsed.payload_text
    assert parsed.identification == "TAG-EM580" and parsed.payload["CI"] == "CP-EM 1"
    assert [json.loads(x)["ocmf"] for x in ledger.read_text().splitlines()] == [record.data]
    assert sim.mem.status == STATE_READY  # the meter keeps it until the daemon has stored it
    await meter.release_record("ref-em")
    assert sim.mem.status == STATE_NOT_READY and sim.mem.record is None


async def test_slow_signing_busy_and_corrupt(line: Line) -> None:
    meter, sim, _ = line
    sim.faults.busy_next = 1
    await meter.start_transaction(request())
    sim.signing_time = 1.5
    sim.faults.corrupt_signature = True
    (record,) = (await meter.stop_transaction("ref-em")).records
    assert not record.verified and any("signature" in p for p in record.problems)


async def test_start_while_running_is_refused(line: Line) -> None:
    meter, _, _ = line
    await meter.start_transaction(request())
    with pytest.raises(MeterRefused, match="running transaction"):
        await meter.start_transaction(request())


def test_word_order() -> None:
    assert to_lsw_first(0x0001_0002, 2) == [2, 1]
    assert lsw_first([2, 1]) == 0x0001_0002 and lsw_first(to_lsw_first(-5, 2)) == -5
