"""A simulated Iskra WM3M4C, serving the public register map (station/meter/iskra.py) over Modbus RTU.

It reproduces the procedure (state 7000, command 7051, signature status 7052, metadata at 7100, payload at 7612,
X||Y key at 8124, DER signature at 8188) and the firmware quirk the driver must handle: its DER signatures carry
non-minimal INTEGERs (a zero byte in front of r). One record per transaction, begin and end readings, no SA field.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pymodbus.constants import ExcCodes

from station.bus.codec import bytes_to_regs, str_to_regs, to_u32
from station.meter.iskra import COMMAND_START, COMMAND_STOP, SIGNATURE_OK, IskraRegisters
from station.meter.sim.base import Put, SimulatedMeter, WrittenText, ocmf_reading, ocmf_time

log = structlog.get_logger("station.meter.sim.iskra")

METADATA_KEYS = ("IS", "IF", "IT", "ID", "CT", "CI")


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

    REGISTERS = IskraRegisters
    regs: IskraRegisters
    DEVICE_ID = 33
    SERIAL = "79000123"

    def _init_model(self) -> None:
        self._metadata = WrittenText(self.regs.metadata, self.regs.metadata_regs)

    # ------------------------------------------------------------------ procedure

    def _signature_status(self) -> int:
        if self.mem.extra.get("signing_until", 0) > time.time():
            return 2  # SignatureInProgress
        return int(self.mem.extra.get("signature_status", 1))

    def _command(self, value: int) -> ExcCodes | None:
        self.tick()
        if value == COMMAND_START:
            if self.mem.status != 0 or self.faults.refuse_start:
                self.mem.extra["signature_status"] = 131  # InvalidState
                return None
            try:
                parsed = json.loads(self.mem.extra.get("metadata", "")[: self.mem.extra.get("metadata_length", 0)])
            except json.JSONDecodeError:
                self.mem.extra["signature_status"] = 252  # InvalidMessageFormat
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
                self.mem.extra["signature_status"] = 131
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
        self.mem.extra["signature_status"] = 130  # InvalidCommand
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
            (r.model, 12, True),
            (r.frequency, r.power + 16 - r.frequency, True),
            (r.energy_exponent, r.energy_import + 4 - r.energy_exponent, True),
            (r.tx_state, 1, True),
            (r.command, r.time_sync + 1 - r.command, False),
            (r.metadata, r.metadata_regs, False),
            (r.payload, r.payload_regs, True),
            (r.public_key, 32, True),
            (r.signature, r.signature_regs, True),
        ]

    def on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        r = self.regs
        for i, value in enumerate(values):
            reg = address + i
            if reg == r.command:
                return self._command(value)
            if reg == r.metadata_length:
                self.mem.extra["metadata_length"] = value
        if self._metadata.take(address, values):
            self.mem.extra["metadata"] = self._metadata.text
        return None

    def refresh(self, put: Put, address: int, count: int) -> None:
        r = self.regs
        put(r.model, str_to_regs(self.MODEL, 8) + str_to_regs(self.mem.serial, 4))
        power = self.power_w if self.charging else 0.0
        amps = power / 230 / 3
        put(r.frequency, t5(50.0, -2))
        for i, volts in enumerate((230.1, 229.9, 230.2)):
            put(r.voltage + 2 * i, t5(volts, -2))
        for i in range(3):
            put(r.current + 2 * i, t5(amps, -3))
        put(r.power, t5(power, 0))
        put(r.energy_exponent, [0, 0])
        put(r.energy_import, to_u32(int(self.mem.energy_wh)) + to_u32(int(self.mem.export_wh)))
        put(r.tx_state, [self.mem.status])
        status = self._signature_status()
        visible = status == SIGNATURE_OK and self.mem.status == 0
        payload = self.mem.extra.get("payload", "").encode() if visible else b""
        signature = bytes.fromhex(self.mem.extra.get("signature", "")) if visible else b""
        put(r.signature_status, [status])
        put(r.payload_length, [len(payload), len(signature)])
        put(r.public_key, bytes_to_regs(self.public_key_der[-64:]))
        if payload and address >= r.payload:
            put(r.payload, bytes_to_regs(payload))
            put(r.signature, bytes_to_regs(signature))
