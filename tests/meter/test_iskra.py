"""The Iskra WM3M4C driver against its simulator over a real pty pair: identity, key, live values, a whole signed
transaction (with the firmware's non-minimal DER signature normalised), faults, and what the ledger says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from station.bus import LineSettings, ModbusBus, ModbusDevice
from station.meter import ocmf
from station.meter.interface import MeterRefused, MeterTransactionRequest
from station.meter.iskra import IskraMeter, t5, t6
from station.meter.nullmodem import VirtualNullModem
from station.meter.sim.iskra import IskraSimulator, non_minimal_der
from station.meter.sim.server import serve

Line = tuple[IskraMeter, IskraSimulator, Path]


@pytest_asyncio.fixture
async def line(tmp_path: Path) -> AsyncIterator[Line]:
    cable = await VirtualNullModem().start()
    ledger = tmp_path / "ledger.jsonl"
    sim = IskraSimulator(state_path=tmp_path / "m.json", ledger_path=ledger, signing_time=0.2)
    server = await serve(sim, cable.path_b)
    meter = IskraMeter(ModbusDevice(ModbusBus(LineSettings(port=cable.path_a)), 33))
    await meter.open()
    yield meter, sim, ledger
    await meter.close()
    await server.shutdown()
    await cable.stop()


def request(tag: str = "TAG-ISKRA") -> MeterTransactionRequest:
    return MeterTransactionRequest("ref-1", 1, tag, "CP-ISKRA", datetime.now(UTC))


async def test_identity_key_and_live_values(line: Line) -> None:
    meter, sim, _ = line
    identity = await meter.identity()
    assert (identity.vendor, identity.model, identity.serial_number) == ("Iskra", "WM3M4C", sim.mem.serial)
    assert await meter.public_key() == sim.public_key_hex  # X||Y from the meter, SPKI header added by the driver
    live = await meter.live_values()
    assert live.power_w == 0 and live.voltage_v == (230.1, 229.9, 230.2)
    assert not await meter.transaction_running()


async def test_signed_transaction_with_normalised_signature(line: Line) -> None:
    meter, sim, ledger = line
    sim.mem.energy_wh = 12345.0
    started = await meter.start_transaction(request())
    assert started.meter_start_wh == 12345 and await meter.transaction_running()
    assert (await meter.live_values()).power_w == pytest.approx(11000, rel=0.01)
    ended = await meter.stop_transaction("ref-1")
    (record,) = ended.records
    assert record.verified, record.problems
    assert not await meter.transaction_running()
    parsed = ocmf.parse(record.data)
    assert parsed.identification == "TAG-ISKRA" and parsed.payload["CI"] == "CP-ISKRA 1"
    assert ended.meter_stop_wh == int(parsed.end.value * 1000) if parsed.end else False
    # What the meter signed (ledger): the same payload, with the quirky DER the driver had to normalise.
    (entry,) = [json.loads(line) for line in ledger.read_text().splitlines()]
    meter_payload = ocmf.parse(entry["ocmf"]).payload_text
    assert meter_payload == parsed.payload_text
    raw_sd = bytes.fromhex(ocmf.parse(entry["ocmf"]).signature["SD"])
    assert raw_sd[4] == 0  # r always carries a zero byte (non-minimal whenever r's top bit is clear)
    assert ocmf.normalize_der_signature(raw_sd) == bytes.fromhex(parsed.signature["SD"])
    assert ocmf.verify(record.data, await meter.public_key()).valid


async def test_busy_meter_and_slow_signing(line: Line) -> None:
    meter, sim, _ = line
    sim.faults.busy_next = 2  # the link retries a busy meter
    await meter.start_transaction(request())
    sim.signing_time = 2.0
    ended = await meter.stop_transaction("ref-1")
    assert ended.records[0].verified


async def test_corrupt_signature_is_flagged_not_hidden(line: Line) -> None:
    meter, sim, _ = line
    await meter.start_transaction(request())
    sim.faults.corrupt_signature = True
    (record,) = (await meter.stop_transaction("ref-1")).records
    assert not record.verified and any("signature" in p for p in record.problems)


async def test_refused_start_is_reported_with_the_meter_reason(line: Line) -> None:
    meter, _, _ = line
    await meter.start_transaction(request())
    with pytest.raises(MeterRefused, match="earlier transaction"):
        await meter.start_transaction(request())


def test_iskra_number_formats() -> None:
    assert t5([0xFE00 | 0x00, 23010]) == pytest.approx(230.10)
    assert t6([0x0000 | 0xFF, 0xFFFF]) == -1
    der = non_minimal_der(bytes.fromhex("3006020101020102"))
    assert der == bytes.fromhex("30080202000102020002")
    assert ocmf.normalize_der_signature(der) == bytes.fromhex("3006020101020102")
