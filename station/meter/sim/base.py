"""What every simulated meter shares: non-volatile memory in a state file, the ledger of signed records, the signing
key, the energy register that counts while charging, fault injection, and the Modbus face (pymodbus `SimDevice`).

A model's simulator (one file per model, beside this one) has its own register map (a `SimRegisterMap`, written from
the vendor's public document, never imported from the driver: a simulator that shares the driver's table can only
confirm the driver's mistakes), declares its register blocks and answers two hooks: `on_write(address, values)` when
the daemon writes, and `refresh(put)` before a read, where it puts the values the read should see. Register overrides
from the config (`[meter.registers]`, the driver's names) move the simulator's registers too, through the map's
explicit `CONFIG_NAMES`. Simulators are test and demo equipment: they must never be taken as evidence of a vendor's map.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

Put = Callable[[int, list[int]], None]

MODBUS_ADDRESSES = 0x10000  # PDU addresses are 0..65535


@dataclass(frozen=True)
class SimRegisterMap:
    """A simulator's own register map: PDU addresses (and block sizes) from the vendor's public document.

    `CONFIG_NAMES` maps every register name the config may override (the driver's names, `[meter.registers]`) onto a
    field of this map, explicitly, so that a site with a moved register can still be simulated."""

    MODEL: ClassVar[str] = "meter"
    CONFIG_NAMES: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_config(cls, overrides: Mapping[str, int] | None) -> Self:
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(cls.CONFIG_NAMES))
        if unknown:
            raise ValueError(
                f"unknown {cls.MODEL} register name(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(cls.CONFIG_NAMES))}"
            )
        for name, value in overrides.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MODBUS_ADDRESSES:
                raise ValueError(f"register {name}: must be a register address 0..65535, got {value!r}")
        return dataclasses.replace(cls(), **{cls.CONFIG_NAMES[k]: v for k, v in overrides.items()})


def register_runs(blocks: Sequence[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    """(address, count, readonly) runs that cover `blocks` without overlap: blocks may overlap or touch (after a
    config override moved a register into or next to another block); an address any block makes writable is writable.
    Raises ValueError for a block outside the 16-bit address space."""
    writable: dict[int, bool] = {}
    for address, count, readonly in blocks:
        if count <= 0:
            continue  # a span between two registers that an override put out of order: each still has its own block
        if address < 0 or address + count > MODBUS_ADDRESSES:
            raise ValueError(f"register block at {address} x{count} is outside the Modbus address space 0..65535")
        for a in range(address, address + count):
            writable[a] = writable.get(a, False) or not readonly
    runs: list[tuple[int, int, bool]] = []
    for a in sorted(writable):
        readonly = not writable[a]
        if runs and runs[-1][0] + runs[-1][1] == a and runs[-1][2] == readonly:
            start, count, _ = runs[-1]
            runs[-1] = (start, count + 1, readonly)
        else:
            runs.append((a, 1, readonly))
    return runs


# Register codecs of the simulators' own (two characters or bytes per register, high byte first; 32-bit values high
# word first unless a model says otherwise): the drivers have theirs, and sharing them would hide a common mistake.


def text_regs(text: str, n_regs: int | None = None) -> list[int]:
    """ASCII text, NUL padded to `n_regs` registers (cut to fit)."""
    raw = text.encode("ascii", errors="replace")
    if n_regs is not None:
        raw = raw[: 2 * n_regs].ljust(2 * n_regs, b"\x00")
    return byte_regs(raw)


def byte_regs(raw: bytes) -> list[int]:
    if len(raw) % 2:
        raw += b"\x00"
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def regs_text(regs: Sequence[int]) -> str:
    raw = b"".join((v & 0xFFFF).to_bytes(2, "big") for v in regs)
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")


def u32_regs(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


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
    MAP: type[SimRegisterMap] = SimRegisterMap  # the model's own register map
    regs: Any

    def __init__(
        self,
        *,
        state_path: Path | None = None,
        ledger_path: Path | None = None,
        registers: Mapping[str, int] | None = None,
        device_id: int | None = None,
        power_w: float = 11000.0,
        signing_time: float = 0.5,
        serial: str | None = None,
    ) -> None:
        self.regs = self.register_map(registers)
        self._init_model()
        device_id = device_id or self.DEVICE_ID
        # A meter made fresh at another device id than the model's default gets a serial of its own, so that two
        # meters of one model on one line are told apart (a transaction remembers its meter's serial).
        serial = serial or (self.SERIAL if device_id == self.DEVICE_ID else f"{self.SERIAL[:-3]}{device_id:03d}")
        self.state_path = state_path
        self.ledger_path = ledger_path
        self.device_id = device_id
        self.power_w = power_w
        # What flows through the meter, when something (a simulated charge controller's car) says so: None keeps the
        # meter on its own (`power_w` while a transaction runs); a number is counted whether a transaction runs or
        # not, as a real meter counts whatever flows. Set it through `set_load`, which counts up to the change first.
        self.load_w: float | None = None
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

    @classmethod
    def register_map(cls, overrides: Mapping[str, int] | None) -> Any:
        """The register map with the config's overrides (`[meter.registers]`, the driver's names) applied."""
        return cls.MAP.from_config(overrides)

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

    @property
    def drawn_w(self) -> float:
        """The power flowing now: the load when one is set, else `power_w` while a transaction runs."""
        if self.load_w is not None:
            return self.load_w
        return self.power_w if self.charging else 0.0

    def set_load(self, watts: float | None) -> None:
        """What flows from now on (e.g. a simulated car's draw: `controller.add_power_listener(meter.set_load)`);
        None goes back to the meter's own `power_w` while a transaction runs. What flowed so far is counted first."""
        if watts is not None and (not math.isfinite(watts) or watts < 0):
            raise ValueError(f"load must be a finite number of watts >= 0, got {watts!r}")
        self.tick()
        self.load_w = None if watts is None else float(watts)

    def tick(self) -> None:
        """Advance the energy register by what was drawn since the last look."""
        now = time.monotonic()
        drawn = self.drawn_w
        if drawn:
            self.mem.energy_wh += drawn * (now - self._last_tick) / 3600.0
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
        data = [
            SimData(a, count=n, values=0, datatype=DataType.REGISTERS, readonly=ro)
            for a, n, ro in register_runs(self.blocks())
        ]
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
            at = addr - start
            if at < 0:  # below the device's first register: only a moved (overridden) block can be there
                values, at = values[-at:], 0
            # never past the device's last register: a slice assignment there would grow the list
            registers[at : at + len(values)] = values[: max(0, len(registers) - at)]

        if set_values is not None:
            return self.on_write(address, [int(v) for v in set_values])
        self.tick()
        self.refresh(put, address, count)
        return None
