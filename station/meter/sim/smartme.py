"""A simulated smart-me meter with transaction support, serving our provisional register map over Modbus RTU.

It owns the simulated meter's non-volatile memory (energy register, T counter, open transaction, key pair, a signed
record not yet collected), kept in a JSON state file so that it survives a restart like a real meter's memory, and its
ledger: every record it signs is appended to a JSON-lines file at the moment of signing, so that a test can compare
what the meter signed with what the CSMS received. It signs with ECDSA P-256 / SHA-256 over the exact payload bytes.

It must never be used as evidence of smart-me's real register map (see station/meter/smartme.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

from station.meter.link import bytes_to_regs, str_to_regs, to_s32, to_u32
from station.meter.smartme import (
    COMMAND_ACK,
    COMMAND_END,
    COMMAND_START,
    STATUS_IDLE,
    STATUS_RUNNING,
    STATUS_SIGNED,
    STATUS_SIGNING,
    SmartMeRegisters,
)

log = structlog.get_logger("station.meter.sim")

METADATA_KEYS = ("IS", "IL", "IF", "IT", "ID", "TT", "CT", "CI")


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
    output_stuck_off: bool = False  # the digital output does not switch on at start
    corrupt_signature: bool = False  # sign, then flip a bit of the signature


@dataclass
class MeterMemory:
    """What a real meter keeps across power loss."""

    serial: str
    private_key_pem: str
    energy_wh: float = 0.0
    export_wh: float = 0.0
    tx_counter: int = 0
    status: int = STATUS_IDLE
    open_tx: dict[str, Any] | None = None  # number, begin_wh, begin_tm, meta
    record: str | None = None  # signed, not yet acknowledged
    signed_visible_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _new_memory(serial: str) -> MeterMemory:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return MeterMemory(serial=serial, private_key_pem=pem)


def ocmf_time(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S,") + f"{at.microsecond // 1000:03d}+0000 S"


class SmartMeSimulator:
    MODEL = "Pico (sim)"
    FIRMWARE = "2.4.1"

    def __init__(
        self,
        *,
        state_path: Path | None = None,
        ledger_path: Path | None = None,
        registers: SmartMeRegisters | None = None,
        device_id: int = 1,
        power_w: float = 11000.0,
        signing_time: float = 0.5,
        serial: str = "SIM00012345",
    ) -> None:
        self.regs = registers or SmartMeRegisters()
        self.state_path = state_path
        self.ledger_path = ledger_path
        self.device_id = device_id
        self.power_w = power_w
        self.signing_time = signing_time
        self.faults = Faults()
        self.mem = self._load(serial)
        self._key = serialization.load_pem_private_key(self.mem.private_key_pem.encode(), password=None)
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        self.public_key_der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._last_tick = time.monotonic()
        self._last_save = self._last_tick
        self.requests = 0
        self._save()

    # ------------------------------------------------------------------ persistence

    def _load(self, serial: str) -> MeterMemory:
        if self.state_path is not None and self.state_path.exists():
            data = json.loads(self.state_path.read_text())
            return MeterMemory(**data)
        return _new_memory(serial)

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

    def _append_ledger(self, entry: dict[str, Any]) -> None:
        if self.ledger_path is None:
            return
        with open(self.ledger_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------------ the meter's behaviour

    @property
    def public_key_hex(self) -> str:
        return self.public_key_der.hex().upper()

    @property
    def charging(self) -> bool:
        return self.mem.status == STATUS_RUNNING

    def tick(self) -> None:
        """Advance the energy register by what was drawn since the last look."""
        now = time.monotonic()
        if self.charging:
            self.mem.energy_wh += self.power_w * (now - self._last_tick) / 3600.0
            if now - self._last_save > 5.0:
                self._save()
        self._last_tick = now

    def command(self, value: int) -> ExcCodes | None:
        self.tick()
        if value == COMMAND_START:
            return self._start()
        if value == COMMAND_END:
            return self._end()
        if value == COMMAND_ACK:
            if self.mem.status == STATUS_SIGNED:
                self.mem.status = STATUS_IDLE
                self.mem.record = None
                self.mem.open_tx = None
                self._save()
            return None
        return ExcCodes.ILLEGAL_VALUE

    def _start(self) -> ExcCodes | None:
        if self.mem.status != STATUS_IDLE or self.faults.refuse_start:
            return ExcCodes.ILLEGAL_VALUE
        meta: dict[str, Any] = {}
        length = self.mem.extra.get("metadata_length", 0)
        if length:
            try:
                parsed = json.loads(self.mem.extra.get("metadata", "")[:length])
            except json.JSONDecodeError:
                return ExcCodes.ILLEGAL_VALUE
            if not isinstance(parsed, dict):
                return ExcCodes.ILLEGAL_VALUE
            meta = {k: parsed[k] for k in METADATA_KEYS if k in parsed}
        self.mem.tx_counter += 1
        self.mem.open_tx = {
            "number": self.mem.tx_counter,
            "begin_wh": int(self.mem.energy_wh),
            "begin_tm": ocmf_time(datetime.now(UTC)),
            "meta": meta,
        }
        self.mem.status = STATUS_RUNNING
        self._save()
        log.info("sim: transaction started", pagination=f"T{self.mem.tx_counter}", begin_wh=int(self.mem.energy_wh))
        return None

    def _end(self) -> ExcCodes | None:
        if self.mem.status != STATUS_RUNNING or self.mem.open_tx is None:
            return ExcCodes.ILLEGAL_VALUE
        tx = self.mem.open_tx
        end_wh = int(self.mem.energy_wh)
        record = self._sign(tx, end_wh, ocmf_time(datetime.now(UTC)))
        self.mem.record = record
        self.mem.status = STATUS_SIGNING
        self.mem.signed_visible_at = time.time() + self.signing_time
        self._save()
        self._append_ledger(
            {
                "pagination": f"T{tx['number']}",
                "ocmf": record,
                "begin_wh": tx["begin_wh"],
                "end_wh": end_wh,
                "id": tx["meta"].get("ID"),
                "signed_at": datetime.now(UTC).isoformat(),
            }
        )
        log.info("sim: transaction ended and signed", pagination=f"T{tx['number']}", end_wh=end_wh)
        return None

    def _sign(self, tx: dict[str, Any], end_wh: int, end_tm: str) -> str:
        meta = tx["meta"]
        head: dict[str, Any] = {
            "FV": "1.0",
            "GI": self.MODEL,
            "GS": self.mem.serial,
            "GV": self.FIRMWARE,
            "PG": f"T{tx['number']}",
            "MV": "smart-me",
            "MM": "Pico",
            "MS": self.mem.serial,
            "MF": self.FIRMWARE,
            "IS": bool(meta.get("IS", False)),
            "IT": meta.get("IT", "NONE"),
        }
        for key in ("IL", "IF", "ID", "TT", "CT", "CI"):
            if key in meta:
                head[key] = meta[key]

        def reading(tm: str, tx_code: str, wh: int) -> str:
            # RV is written as text so that its representation is exactly what gets signed.
            return (
                f'{{"TM":{json.dumps(tm)},"TX":"{tx_code}","RV":{wh / 1000:.3f},"RI":"1-b:1.8.0",'
                f'"RU":"kWh","RT":"AC","EF":"","ST":"G"}}'
            )

        payload = (
            json.dumps(head, separators=(",", ":"))[:-1]
            + ',"RD":['
            + reading(tx["begin_tm"], "B", tx["begin_wh"])
            + ","
            + reading(end_tm, "E", end_wh)
            + "]}"
        )
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        signature = self._key.sign(payload.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
        if self.faults.corrupt_signature:
            signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
        sig = json.dumps({"SA": "ECDSA-secp256r1-SHA256", "SD": signature.hex().upper()}, separators=(",", ":"))
        return f"OCMF|{payload}|{sig}"

    def _visible_status(self) -> int:
        if self.mem.status == STATUS_SIGNING and time.time() >= self.mem.signed_visible_at:
            self.mem.status = STATUS_SIGNED
            self._save()
        return self.mem.status

    # ------------------------------------------------------------------ Modbus face

    def device(self) -> SimDevice:
        r = self.regs
        blocks = [
            SimData(r.model, count=20, values=0, datatype=DataType.REGISTERS, readonly=True),
            SimData(r.energy_import, count=12, values=0, datatype=DataType.REGISTERS, readonly=True),
            SimData(r.command, count=1, values=0, datatype=DataType.REGISTERS),
            SimData(r.status_block, count=5, values=0, datatype=DataType.REGISTERS, readonly=True),
            SimData(r.metadata_length, count=3, values=0, datatype=DataType.REGISTERS),
            SimData(r.metadata, count=r.metadata_regs, values=0, datatype=DataType.REGISTERS),
            SimData(
                r.public_key_length, count=1 + r.public_key_regs, values=0, datatype=DataType.REGISTERS, readonly=True
            ),
            SimData(r.record, count=r.record_regs, values=0, datatype=DataType.REGISTERS, readonly=True),
        ]
        return SimDevice(id=self.device_id, simdata=blocks, action=self.action)

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
        r = self.regs
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
            values = [int(v) for v in set_values]
            for i, value in enumerate(values):
                reg = address + i
                if reg == r.command:
                    result = self.command(value)
                    if result is not None:
                        return result
                elif reg == r.metadata_length:
                    self.mem.extra["metadata_length"] = value
            if r.metadata <= address < r.metadata + r.metadata_regs:
                # Keep the metadata text in memory; reassemble from the live registers after the write lands.
                asyncio.get_running_loop().call_soon(self._capture_metadata, registers, start)
            return None

        self.tick()
        status = self._visible_status()
        identity = str_to_regs(self.MODEL, 8) + str_to_regs(self.mem.serial, 8) + str_to_regs(self.FIRMWARE, 4)
        put(r.model, identity)
        power = int(self.power_w) if self.charging else 0
        amps = int(power / 230 / 3 * 1000) if power else 0
        put(
            r.energy_import,
            to_u32(int(self.mem.energy_wh))
            + to_u32(int(self.mem.export_wh))
            + to_s32(power)
            + [2301, 2299, 2302]
            + [amps, amps, amps],
        )
        tx = self.mem.open_tx or {}
        record = self.mem.record if status == STATUS_SIGNED else None
        record_bytes = record.encode() if record else b""
        output_on = status == STATUS_RUNNING and not self.faults.output_stuck_off
        put(
            r.status_block,
            [status, *to_u32(int(tx.get("number", self.mem.tx_counter))), int(output_on), len(record_bytes)],
        )
        put(r.metadata_length + 1, to_u32(int(tx.get("begin_wh", 0))))
        put(r.public_key_length, [len(self.public_key_der), *bytes_to_regs(self.public_key_der)])
        if record_bytes and address >= r.record:
            put(r.record, bytes_to_regs(record_bytes))
        return None

    def _capture_metadata(self, registers: list[int], start: int) -> None:
        r = self.regs
        raw = b"".join(
            v.to_bytes(2, "big") for v in registers[r.metadata - start : r.metadata - start + r.metadata_regs]
        )
        self.mem.extra["metadata"] = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")
