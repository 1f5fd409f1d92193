"""What every simulated meter shares: non-volatile memory in a state file, the ledger of signed records, the signing
key, the energy register that counts while charging, fault injection, and the Modbus face (pymodbus `SimDevice`).

A model's simulator (one file per model, beside this one) declares its register blocks and answers two hooks:
`on_write(address, values)` when the daemon writes, and `refresh(put)` before a read, where it puts the values the
read should see. Simulators are test and demo equipment: they must never be taken as evidence of a vendor's map.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

Put = Callable[[int, list[int]], None]


@dataclass
class Faults:
    """Knobs a test turns to make the meter misbehave."""

    busy_next: int = 0  # answer the next N requests with DEVICE_BUSY
    exception_next: int = 0  # answer the next N requests with this exception code (0 = off)
    exception_count: int = 0
    mute: bool = False  # drop every request (a dead meter, a cut RX line)
    latency: float = 0.0  # processing time before each answer
    late_next: int = 0  # answer the next N requests only after `late_by` seconds
    late_by: float = 0.0
    refuse_start: bool = False  # the meter reports an error status instead of starting
    output_stuck_off: bool = False  # the digital output does not switch on at start (smart-me)
    corrupt_signature: bool = False  # sign, then flip a bit of the signature


@dataclass
class MeterMemory:
    """What a real meter keeps across power loss."""

    serial: str
    private_key_pem: str
    energy_wh: float = 0.0
    export_wh: float = 0.0
    tx_counter: int = 0
    status: int = 0
    open_tx: dict[str, Any] | None = None  # number, begin_wh, begin_tm, meta
    record: str | None = None  # signed, not yet acknowledged
    signed_visible_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def ocmf_time(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S,") + f"{at.microsecond // 1000:03d}+0000 S"


def ocmf_reading(tm: str, tx_code: str, wh: int) -> str:
    """One RD entry, written as text so that its representation is exactly what gets signed."""
    return (
        f'{{"TM":{json.dumps(tm)},"TX":"{tx_code}","RV":{wh / 1000:.3f},"RI":"1-b:1.8.0",'
        f'"RU":"kWh","RT":"AC","EF":"","ST":"G"}}'
    )


class WrittenText:
    """A register block the daemon writes text into (two ASCII characters per register, NUL padded), kept whole
    across writes that arrive in several chunks."""

    def __init__(self, base: int, count: int) -> None:
        self.base = base
        self.regs = [0] * count

    def take(self, address: int, values: list[int]) -> bool:
        """Keep the part of a write that falls into the block; whether any did."""
        taken = False
        for i, value in enumerate(values):
            if 0 <= address + i - self.base < len(self.regs):
                self.regs[address + i - self.base] = value
                taken = True
        return taken

    @property
    def text(self) -> str:
        raw = b"".join(v.to_bytes(2, "big") for v in self.regs)
        return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")


class SimulatedMeter:
    MODEL = "meter (sim)"
    FIRMWARE = "1.0"
    SERIAL = "SIM00012345"
    DEVICE_ID = 1
    CURVE: ec.EllipticCurve = ec.SECP256R1()
    HASH: type[hashes.HashAlgorithm] = hashes.SHA256
    REGISTERS: Callable[[], Any] = dict  # the model's register table class

    def __init__(
        self,
        *,
        state_path: Path | None = None,
        ledger_path: Path | None = None,
        registers: Any = None,
        device_id: int | None = None,
        power_w: float = 11000.0,
        signing_time: float = 0.5,
        serial: str | None = None,
    ) -> None:
        self.regs = registers if registers is not None else self.REGISTERS()
        self._init_model()
        serial = serial or self.SERIAL
        device_id = device_id or self.DEVICE_ID
        self.state_path = state_path
        self.ledger_path = ledger_path
        self.device_id = device_id
        self.power_w = power_w
        self.signing_time = signing_time
        # The TX of a record's end reading: E, or how the transaction was ended (OCMF L, R, A, P), as real meters do.
        self.end_tx = "E"
        self.faults = Faults()
        self.mem = self._load(serial)
        key = serialization.load_pem_private_key(self.mem.private_key_pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        self.public_key_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._last_tick = time.monotonic()
        self._last_save = self._last_tick
        self.requests = 0
        self._save()

    def _init_model(self) -> None:
        """Set up model-specific buffers (after `self.regs`, before the memory is loaded)."""

    # ------------------------------------------------------------------ persistence

    def _load(self, serial: str) -> MeterMemory:
        if self.state_path is not None and self.state_path.exists():
            return MeterMemory(**json.loads(self.state_path.read_text()))
        key = ec.generate_private_key(self.CURVE)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return MeterMemory(serial=serial, private_key_pem=pem)

    def _save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(self.state_path.suffix + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.mem.__dict__, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        self._last_save = time.monotonic()

    def append_ledger(self, tx: dict[str, Any], record: str, end_wh: int | None) -> None:
        """Every record the meter signs, at the moment of signing: what a test compares the CSMS's view with."""
        if self.ledger_path is None:
            return
        entry = {
            "pagination": f"T{tx['number']}",
            "ocmf": record,
            "begin_wh": tx["begin_wh"],
            "end_wh": end_wh,
            "id": tx["meta"].get("ID"),
            "signed_at": datetime.now(UTC).isoformat(),
        }
        with open(self.ledger_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def power_cycle(self, off_s: float) -> None:
        """Power loss: the meter saves its registers on the falling supply (as MID meters do), falls silent for
        `off_s`, and comes back with its non-volatile memory only: text the daemon had written but not yet committed
        with a command is gone."""
        self.tick()
        self._save()
        self.faults.mute = True
        try:
            await asyncio.sleep(off_s)
            if self.state_path is not None and self.state_path.exists():
                self.mem = MeterMemory(**json.loads(self.state_path.read_text()))
            self._init_model()
            self._last_tick = time.monotonic()  # no energy drawn while the meter was off
        finally:
            self.faults.mute = False

    # ------------------------------------------------------------------ metering and signing

    @property
    def public_key_hex(self) -> str:
        return self.public_key_der.hex().upper()

    @property
    def charging(self) -> bool:
        return self.mem.open_tx is not None and self.mem.record is None

    def tick(self) -> None:
        """Advance the energy register by what was drawn since the last look."""
        now = time.monotonic()
        if self.charging:
            self.mem.energy_wh += self.power_w * (now - self._last_tick) / 3600.0
            if now - self._last_save > 5.0:
                self._save()
        self._last_tick = now

    def sign(self, payload: str) -> bytes:
        """DER ECDSA signature over the exact payload bytes (flipped when the fault asks for it)."""
        signature = self._key.sign(payload.encode("utf-8"), ec.ECDSA(self.HASH()))
        if self.faults.corrupt_signature:
            signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
        return signature

    def open_transaction(self, meta: dict[str, Any]) -> dict[str, Any]:
        self.tick()
        self.mem.tx_counter += 1
        self.mem.open_tx = {
            "number": self.mem.tx_counter,
            "begin_wh": int(self.mem.energy_wh),
            "begin_tm": ocmf_time(datetime.now(UTC)),
            "meta": meta,
        }
        self._save()
        return self.mem.open_tx

    # ------------------------------------------------------------------ Modbus face

    def blocks(self) -> list[tuple[int, int, bool]]:
        """(address, count, readonly) of every register block the model answers."""
        raise NotImplementedError

    def on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        return None

    def refresh(self, put: Put, address: int, count: int) -> None:
        raise NotImplementedError

    def device(self) -> SimDevice:
        data = [SimData(a, count=n, values=0, datatype=DataType.REGISTERS, readonly=ro) for a, n, ro in self.blocks()]
        return SimDevice(id=self.device_id, simdata=data, action=self.action)

    def trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if not sending and self.faults.mute:
            return None
        return pdu

    async def action(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if fc in (3, 4) or set_values is not None:
            self.requests += 1
            if self.faults.latency:
                await asyncio.sleep(self.faults.latency)
            if self.faults.late_next:
                self.faults.late_next -= 1
                await asyncio.sleep(self.faults.late_by)
            if self.faults.busy_next:
                self.faults.busy_next -= 1
                return ExcCodes.DEVICE_BUSY
            if self.faults.exception_count:
                self.faults.exception_count -= 1
                return ExcCodes(self.faults.exception_next)

        def put(addr: int, values: list[int]) -> None:
            registers[addr - start : addr - start + len(values)] = values

        if set_values is not None:
            return self.on_write(address, [int(v) for v in set_values])
        self.tick()
        self.refresh(put, address, count)
        return None
