"""A simulated Carlo Gavazzi EM580, serving the register map of station/meter/em580.py over Modbus RTU.

Signs with ECDSA-brainpoolP384r1-SHA256 (SA in the record) over a payload written with spaces after separators, as
the real meter's sample is: verification must use the exact bytes. Keeps the OCMF file until the state register is
written 0, like the meter.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from pymodbus.constants import ExcCodes

from station.bus.codec import bytes_to_regs, regs_to_str, str_to_regs
from station.meter.em580 import (
    COMMAND_BEGIN,
    COMMAND_END,
    IDENTIFICATION_TYPES,
    STATE_NOT_READY,
    STATE_READY,
    STATE_RUNNING,
    Em580Registers,
    to_lsw_first,
)
from station.meter.sim.base import Put, SimulatedMeter, ocmf_time

log = structlog.get_logger("station.meter.sim.em580")


class Em580Simulator(SimulatedMeter):
    MODEL = "EM580"
    FIRMWARE = "sim"
    CURVE = ec.BrainpoolP384R1()

    REGISTERS = Em580Registers
    regs: Em580Registers
    SERIAL = "EM580SIM000042"

    def _init_model(self) -> None:
        self._ocmf_block = [0] * 0x30

    @property
    def charging(self) -> bool:
        return self.mem.status == STATE_RUNNING

    def _meta(self) -> dict[str, Any]:
        b = self._ocmf_block
        it = b[6]
        return {
            "IS": bool(b[0]),
            "IT": IDENTIFICATION_TYPES[it] if it < len(IDENTIFICATION_TYPES) else "UNDEFINED",
            "ID": regs_to_str(b[7:27]),
            "CT": "CBIDC" if b[0x1B] == 1 else "EVSEID",
            "CI": regs_to_str(b[0x1C:0x30]),
        }

    def _command(self, value: int) -> ExcCodes | None:
        self.tick()
        if value == COMMAND_BEGIN:
            if self.mem.status != STATE_NOT_READY or self.faults.refuse_start:
                return ExcCodes.ILLEGAL_VALUE
            self.mem.status = STATE_RUNNING
            tx = self.open_transaction(self._meta())
            log.info("sim: transaction started", pagination=f"T{tx['number']}", begin_wh=tx["begin_wh"])
            return None
        if value == COMMAND_END:
            if self.mem.status != STATE_RUNNING or self.mem.open_tx is None:
                return ExcCodes.ILLEGAL_VALUE
            tx = self.mem.open_tx
            end_wh = int(self.mem.energy_wh)
            self.mem.record = self._record(tx, end_wh)
            self.mem.status = STATE_READY
            self.mem.signed_visible_at = time.time() + self.signing_time
            self._save()
            self.append_ledger(tx, self.mem.record, end_wh)
            log.info("sim: transaction ended and signed", pagination=f"T{tx['number']}", end_wh=end_wh)
            return None
        return ExcCodes.ILLEGAL_VALUE

    def _record(self, tx: dict[str, Any], end_wh: int) -> str:
        head = {
            "FV": "1.0",
            "GI": "Carlo Gavazzi EM580",
            "GS": self.mem.serial,
            "GV": self.FIRMWARE,
            "PG": f"T{tx['number']}",
            "MV": "Carlo Gavazzi",
            "MM": self.MODEL,
            "MS": self.mem.serial,
            "MF": self.FIRMWARE,
            **tx["meta"],
            "RD": [
                {"TM": tx["begin_tm"], "TX": "B", "RV": round(tx["begin_wh"] / 1000, 3), "RI": "01-00:98.08.00.FF",
                 "RU": "kWh", "RT": "AC", "ST": "G"},
                {"TM": ocmf_time(datetime.now(UTC)), "TX": self.end_tx, "RV": round(end_wh / 1000, 3),
                 "RI": "01-00:98.08.00.FF", "RU": "kWh", "RT": "AC", "ST": "G"},
            ],
        }  # fmt: skip
        payload = json.dumps(head)  # with spaces, as the meter writes it
        signature = self.sign(payload)
        sig = json.dumps({"SA": "ECDSA-brainpoolP384r1-SHA256", "SD": signature.hex().upper()})
        return f"OCMF|{payload}|{sig}"

    # ------------------------------------------------------------------ Modbus face

    def blocks(self) -> list[tuple[int, int, bool]]:
        r = self.regs
        return [
            (r.voltage, r.power + 2 - r.voltage, True),
            (r.energy_import, r.energy_export + 4 - r.energy_import, True),
            (r.signature_type, 1 + 49, True),
            (r.public_key_der, r.public_key_regs, True),
            (r.serial, r.device_state + 1 - r.serial, True),
            (r.tariff_text, 126, False),
            (r.ocmf_is, r.command + 6 - r.ocmf_is, False),
            (r.ocmf_state, 2, False),
            (r.ocmf_file, r.ocmf_file_regs, True),
        ]

    def on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        r = self.regs
        for i, value in enumerate(values):
            reg = address + i
            if reg == r.command:
                return self._command(value)
            if reg == r.ocmf_state and value == 0 and self.mem.status == STATE_READY:
                self.mem.status = STATE_NOT_READY  # acknowledged: the file may be forgotten
                self.mem.record = None
                self.mem.open_tx = None
                self._save()
            elif r.ocmf_is <= reg < r.ocmf_is + len(self._ocmf_block):
                self._ocmf_block[reg - r.ocmf_is] = value
        return None

    def refresh(self, put: Put, address: int, count: int) -> None:
        r = self.regs
        power = self.power_w if self.charging else 0.0
        amps = power / 230 / 3
        measurements = [0] * (r.power + 2 - r.voltage)
        for i, volts in enumerate((230.1, 229.9, 230.2)):
            measurements[2 * i : 2 * i + 2] = to_lsw_first(round(volts * 10), 2)
            at = r.current - r.voltage + 2 * i
            measurements[at : at + 2] = to_lsw_first(round(amps * 1000), 2)
        measurements[r.power - r.voltage :] = to_lsw_first(round(power * 10), 2)
        put(r.voltage, measurements)
        put(r.energy_import, to_lsw_first(int(self.mem.energy_wh), 4))
        put(r.energy_export, to_lsw_first(int(self.mem.export_wh), 4))
        point = self.public_key_der[-97:]
        put(r.signature_type, [2, *bytes_to_regs(point)])
        put(r.public_key_der, bytes_to_regs(self.public_key_der))
        put(r.serial, str_to_regs(self.mem.serial, 7))
        visible_ready = self.mem.status == STATE_READY and time.time() >= self.mem.signed_visible_at
        state = STATE_RUNNING if self.mem.status == STATE_READY and not visible_ready else self.mem.status
        record = (self.mem.record or "").encode() if visible_ready else b""
        put(r.ocmf_state, [state, (len(record) + 1) // 2])
        if record and address >= r.ocmf_file:
            put(r.ocmf_file, bytes_to_regs(record))
