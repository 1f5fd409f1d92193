"""A simulated Iskra WM3M4C, serving Iskra's public register map over Modbus RTU (its own table below, from the
public documents; never the driver's).

It reproduces the procedure (state 7000, command 7051, signature status 7052, metadata at 7100, payload at 7612,
X||Y key at 8124, DER signature at 8188) and the firmware quirk the driver must handle: its DER signatures carry
non-minimal INTEGERs (a zero byte in front of r). One record per transaction, begin and end readings, no SA field.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pymodbus.constants import ExcCodes

from station.meter.sim.base import (
    Put,
    SimRegisterMap,
    SimulatedMeter,
    WrittenText,
    byte_regs,
    ocmf_reading,
    ocmf_time,
    text_regs,
    u32_regs,
)

log = structlog.get_logger("station.meter.sim.iskra")

METADATA_KEYS = ("IS", "IF", "IT", "ID", "CT", "CI")


@dataclass(frozen=True)
class IskraMap(SimRegisterMap):
    """Iskra WM3M4/WM3M4C, from Iskra's "K_WM3M4_EN_22433922 Users_manual Ver_1.14" as EVerest's RsIskraMeter puts it
    on the wire: ../shared/docs/meters-and-ocmf.md §2.1, table "Reg (FC) | Dir | Meaning". PDU addresses; IR = input
    registers (FC04), HR = holding registers (FC03/06/16)."""

    MODEL: ClassVar[str] = "Iskra"

    ir_device_model: int = 1  # IR 1..8: device model, 16 ASCII
    ir_serial_number: int = 9  # IR 9..12: serial number, 8 ASCII
    ir_frequency: int = 105  # IR 105: frequency, T5
    ir_voltage_l1: int = 107  # IR 107, 109, 111: U L1..L3, T5
    ir_current_l1: int = 126  # IR 126..130: I L1..L3, T6
    ir_power_total: int = 140  # IR 140..154: P total/L1..L3, Q total/L1..L3, T6
    ir_energy_exponent_import: int = 414  # IR 414 / 415: energy exponent import / export (int16)
    ir_energy_import: int = 418  # IR 418-419 / 420-421: energy counter import / export, 32 bit x 10^exp
    hr_transaction_state: int = 7000  # HR 7000: 0 Idle, 1 Active, 2 after power failure, 3 after reset
    hr_command: int = 7051  # HR 7051 W: 0x4200 start, 0x7200 stop
    hr_signature_status: int = 7052  # HR 7052: command / signature status
    hr_timezone: int = 7053  # HR 7053 W: minutes; 7054, 7055: UTC unix time high / low word
    hr_metadata_length: int = 7056  # HR 7056 W: bytes of the metadata JSON at 7100
    hr_payload_length: int = 7057  # HR 7057: bytes of the signed JSON at 7612
    hr_signature_length: int = 7058  # HR 7058: bytes of the signature at 8188
    hr_signature_algorithm: int = 7059  # HR 7059 W: algorithm select
    hr_time_sync: int = 7071  # HR 7071 RW: 2 synchronised, 0 after a power loss
    hr_metadata: int = 7100  # HR 7100..: metadata JSON, 2 ASCII per register
    metadata_regs: int = 512  # up to the payload at 7612
    hr_payload: int = 7612  # HR 7612..: signed payload JSON
    payload_regs: int = 512  # up to the key at 8124
    hr_public_key: int = 8124  # HR 8124..8155: 64 bytes X||Y
    hr_signature: int = 8188  # HR 8188..: DER signature
    signature_regs: int = 64

    # The config's names ([meter.registers], as the driver calls them) onto this map.
    CONFIG_NAMES: ClassVar[dict[str, str]] = {
        "model": "ir_device_model",
        "serial": "ir_serial_number",
        "frequency": "ir_frequency",
        "voltage": "ir_voltage_l1",
        "current": "ir_current_l1",
        "power": "ir_power_total",
        "energy_exponent": "ir_energy_exponent_import",
        "energy_import": "ir_energy_import",
        "tx_state": "hr_transaction_state",
        "command": "hr_command",
        "signature_status": "hr_signature_status",
        "timezone": "hr_timezone",
        "metadata_length": "hr_metadata_length",
        "payload_length": "hr_payload_length",
        "signature_length": "hr_signature_length",
        "signature_algorithm": "hr_signature_algorithm",
        "time_sync": "hr_time_sync",
        "metadata": "hr_metadata",
        "metadata_regs": "metadata_regs",
        "payload": "hr_payload",
        "payload_regs": "payload_regs",
        "public_key": "hr_public_key",
        "signature": "hr_signature",
        "signature_regs": "signature_regs",
    }


# Command and status values (meters-and-ocmf.md §2.1, rows HR 7051 and "Status register 7052 values").
COMMAND_START = 0x4200  # 'B' in the high byte
COMMAND_STOP = 0x7200  # 'r' in the high byte
SIGNATURE_OK = 15
SIGNATURE_IN_PROGRESS = 2
SIGNATURE_IDLE = 1
INVALID_COMMAND, INVALID_STATE, INVALID_MESSAGE_FORMAT = 130, 131, 252


def non_minimal_der(signature: bytes) -> bytes:
    """The firmware quirk: every INTEGER gets a leading zero byte, whether it needs one or not."""
    r, s = decode_dss_signature(signature)

    def integer(value: int) -> bytes:
        body = b"\x00" + value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
        return b"\x02" + bytes([len(body)]) + body

    content = integer(r) + integer(s)
    return b"\x30" + bytes([len(content)]) + content


def t5(value: float, exponent: int) -> list[int]:
    mantissa = round(value / 10.0**exponent) & 0xFFFFFF
    return [((exponent & 0xFF) << 8) | mantissa >> 16, mantissa & 0xFFFF]


class IskraSimulator(SimulatedMeter):
    MODEL = "WM3M4C"
    FIRMWARE = "sim"

    MAP = IskraMap
    regs: IskraMap
    DEVICE_ID = 33
    SERIAL = "79000123"

    def _init_model(self) -> None:
        self._metadata = WrittenText(self.regs.hr_metadata, self.regs.metadata_regs)

    # ------------------------------------------------------------------ procedure

    def _signature_status(self) -> int:
        if self.mem.extra.get("signing_until", 0) > time.time():
            return SIGNATURE_IN_PROGRESS
        return int(self.mem.extra.get("signature_status", SIGNATURE_IDLE))

    def _command(self, value: int) -> ExcCodes | None:
        self.tick()
        if value == COMMAND_START:
            if self.mem.status != 0 or self.faults.refuse_start:
                self.mem.extra["signature_status"] = INVALID_STATE
                return None
            try:
                parsed = json.loads(self.mem.extra.get("metadata", "")[: self.mem.extra.get("metadata_length", 0)])
            except json.JSONDecodeError:
                self.mem.extra["signature_status"] = INVALID_MESSAGE_FORMAT
                return None
            meta = {k: parsed[k] for k in METADATA_KEYS if isinstance(parsed, dict) and k in parsed}
            self.mem.status = 1
            self.mem.record = None
            self.mem.extra.update(signature_status=SIGNATURE_OK, signing_until=0, payload="", signature="")
            tx = self.open_transaction(meta)
            log.info("sim: transaction started", pagination=f"T{tx['number']}", begin_wh=tx["begin_wh"])
            return None
        if value == COMMAND_STOP:
            if self.mem.status == 0 or self.mem.open_tx is None:
                self.mem.extra["signature_status"] = INVALID_STATE
                return None
            tx = self.mem.open_tx
            end_wh = int(self.mem.energy_wh)
            payload = self._payload(tx, end_wh, ocmf_time(datetime.now(UTC)))
            signature = non_minimal_der(self.sign(payload))
            self.mem.status = 0
            self.mem.record = f'OCMF|{payload}|{{"SD":"{signature.hex().upper()}"}}'
            self.mem.extra.update(
                payload=payload,
                signature=signature.hex(),
                signature_status=SIGNATURE_OK,
                signing_until=time.time() + self.signing_time,
            )
            self._save()
            self.append_ledger(tx, self.mem.record, end_wh)
            log.info("sim: transaction ended and signed", pagination=f"T{tx['number']}", end_wh=end_wh)
            return None
        self.mem.extra["signature_status"] = INVALID_COMMAND
        return None

    @property
    def charging(self) -> bool:
        return self.mem.status != 0

    def _payload(self, tx: dict[str, Any], end_wh: int, end_tm: str) -> str:
        head: dict[str, Any] = {
            "FV": "1.0",
            "GI": "ISKRA WM3M4C",
            "GS": self.mem.serial,
            "GV": self.FIRMWARE,
            "PG": f"T{tx['number']}",
            "MV": "Iskra",
            "MM": self.MODEL,
            "MS": self.mem.serial,
            "MF": self.FIRMWARE,
            **tx["meta"],
        }
        return (
            json.dumps(head, separators=(",", ":"))[:-1]
            + ',"RD":['
            + ocmf_reading(tx["begin_tm"], "B", tx["begin_wh"])
            + ","
            + ocmf_reading(end_tm, self.end_tx, end_wh)
            + "]}"
        )

    # ------------------------------------------------------------------ Modbus face

    def blocks(self) -> list[tuple[int, int, bool]]:
        r = self.regs
        return [
            (r.ir_device_model, 8, True),
            (r.ir_serial_number, 4, True),
            (r.ir_frequency, 2, True),
            (r.ir_voltage_l1, 6, True),
            (r.ir_current_l1, 6, True),
            (r.ir_power_total, 16, True),
            (r.ir_frequency, r.ir_power_total + 16 - r.ir_frequency, True),  # IR 105..155: one area of measurements
            (r.ir_energy_exponent_import, 2, True),
            (r.ir_energy_import, 4, True),
            (r.ir_energy_exponent_import, r.ir_energy_import + 4 - r.ir_energy_exponent_import, True),  # 414..421
            (r.hr_transaction_state, 1, True),
            (r.hr_command, r.hr_time_sync + 1 - r.hr_command, False),  # HR 7051..7071
            (r.hr_command, 1, False),
            (r.hr_signature_status, 1, False),
            (r.hr_timezone, 3, False),
            (r.hr_metadata_length, 1, False),
            (r.hr_payload_length, 1, False),
            (r.hr_signature_length, 1, False),
            (r.hr_signature_algorithm, 1, False),
            (r.hr_time_sync, 1, False),
            (r.hr_metadata, r.metadata_regs, False),
            (r.hr_payload, r.payload_regs, True),
            (r.hr_public_key, 32, True),
            (r.hr_signature, r.signature_regs, True),
        ]

    def on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        r = self.regs
        for i, value in enumerate(values):
            reg = address + i
            if reg == r.hr_command:
                return self._command(value)
            if reg == r.hr_metadata_length:
                self.mem.extra["metadata_length"] = value
        if self._metadata.take(address, values):
            self.mem.extra["metadata"] = self._metadata.text
        return None

    def refresh(self, put: Put, address: int, count: int) -> None:
        r = self.regs
        put(r.ir_device_model, text_regs(self.MODEL, 8))
        put(r.ir_serial_number, text_regs(self.mem.serial, 4))
        power = self.drawn_w
        amps = power / 230 / 3
        put(r.ir_frequency, t5(50.0, -2))
        for i, volts in enumerate((230.1, 229.9, 230.2)):
            put(r.ir_voltage_l1 + 2 * i, t5(volts, -2))
        for i in range(3):
            put(r.ir_current_l1 + 2 * i, t5(amps, -3))
        put(r.ir_power_total, t5(power, 0))
        put(r.ir_energy_exponent_import, [0, 0])
        put(r.ir_energy_import, u32_regs(int(self.mem.energy_wh)) + u32_regs(int(self.mem.export_wh)))
        put(r.hr_transaction_state, [self.mem.status])
        status = self._signature_status()
        visible = status == SIGNATURE_OK and self.mem.status == 0
        payload = self.mem.extra.get("payload", "").encode() if visible else b""
        signature = bytes.fromhex(self.mem.extra.get("signature", "")) if visible else b""
        put(r.hr_signature_status, [status])
        put(r.hr_payload_length, [len(payload)])
        put(r.hr_signature_length, [len(signature)])
        put(r.hr_public_key, byte_regs(self.public_key_der[-64:]))
        if payload and address >= r.hr_payload:
            put(r.hr_payload, byte_regs(payload))
            put(r.hr_signature, byte_regs(signature))
