"""A simulated smart-me meter with transaction support, serving our provisional register map over Modbus RTU.

It signs with ECDSA P-256 / SHA-256 over the exact payload bytes, one record per transaction holding the begin and end
readings. Memory, ledger, faults and the Modbus plumbing come from `base.SimulatedMeter`.

It must never be used as evidence of smart-me's real register map (see station/meter/smartme.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from pymodbus.constants import ExcCodes

from station.meter.sim.base import (
    Faults,
    MeterMemory,
    Put,
    SimulatedMeter,
    WrittenText,
    byte_regs,
    ocmf_reading,
    ocmf_time,
    text_regs,
    u32_regs,
)
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

__all__ = ["Faults", "MeterMemory", "SmartMeSimulator", "ocmf_time"]

log = structlog.get_logger("station.meter.sim")

METADATA_KEYS = ("IS", "IL", "IF", "IT", "ID", "TT", "CT", "CI")


class SmartMeSimulator(SimulatedMeter):
    MODEL = "Pico (sim)"
    FIRMWARE = "2.4.1"

    regs: SmartMeRegisters

    fiscal_interval = 900.0  # seconds between signed readings outside transactions (smart-me: 15 minutes)

    @classmethod
    def register_map(cls, overrides: Mapping[str, int] | None) -> SmartMeRegisters:
        """smart-me publishes no Modbus RTU register map (meters-and-ocmf.md §0), so there is no document to write a
        table of this simulator's own from: it shares the driver's provisional, guessed table (SmartMeRegisters in
        station/meter/smartme.py) and can only ever agree with the driver. Overrides use the driver's names."""
        return SmartMeRegisters.with_overrides(dict(overrides or {}))

    def _init_model(self) -> None:
        self._metadata = WrittenText(self.regs.metadata, self.regs.metadata_regs)

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
        self.mem.status = STATUS_RUNNING
        tx = self.open_transaction(meta)
        log.info("sim: transaction started", pagination=f"T{tx['number']}", begin_wh=tx["begin_wh"])
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
        self.append_ledger(tx, record, end_wh)
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
        payload = (
            json.dumps(head, separators=(",", ":"))[:-1]
            + ',"RD":['
            + ocmf_reading(tx["begin_tm"], "B", tx["begin_wh"])
            + ","
            + ocmf_reading(end_tm, self.end_tx, end_wh)
            + "]}"
        )
        signature = self.sign(payload)
        sig = json.dumps({"SA": "ECDSA-secp256r1-SHA256", "SD": signature.hex().upper()}, separators=(",", ":"))
        return f"OCMF|{payload}|{sig}"

    def _fiscal_record(self) -> str:
        """The latest signed reading outside transactions: made every `fiscal_interval` seconds (the real meter:
        every 15 minutes), OCMF PG "F<n>", import and export registers, no TX (meters-and-ocmf.md §3)."""
        now = time.time()
        last = self.mem.extra.get("fiscal")
        if last is None or now - float(last["at"]) >= self.fiscal_interval:
            self.tick()
            number = int(self.mem.extra.get("fiscal_counter", 0)) + 1
            tm = ocmf_time(datetime.now(UTC))
            head: dict[str, Any] = {"FV": "1.0", "GI": self.MODEL, "GS": self.mem.serial, "GV": self.FIRMWARE}
            head["PG"] = f"F{number}"
            head |= {"MV": "smart-me", "MM": "Pico", "MS": self.mem.serial, "MF": self.FIRMWARE, "IS": False}
            readings = [
                f'{{"TM":"{tm}","RV":{int(self.mem.energy_wh) / 1000:.3f},"RI":"1-b:1.8.0","RU":"kWh","RT":"AC",'
                f'"EF":"","ST":"G"}}',
                f'{{"TM":"{tm}","RV":{int(self.mem.export_wh) / 1000:.3f},"RI":"1-b:2.8.0","RU":"kWh","RT":"AC",'
                f'"EF":"","ST":"G"}}',
            ]
            payload = json.dumps(head, separators=(",", ":"))[:-1] + ',"RD":[' + ",".join(readings) + "]}"
            sig = json.dumps(
                {"SA": "ECDSA-secp256r1-SHA256", "SD": self.sign(payload).hex().upper()}, separators=(",", ":")
            )
            last = {"at": now, "record": f"OCMF|{payload}|{sig}"}
            self.mem.extra["fiscal"] = last
            self.mem.extra["fiscal_counter"] = number
        return str(last["record"])

    def _visible_status(self) -> int:
        if self.mem.status == STATUS_SIGNING and time.time() >= self.mem.signed_visible_at:
            self.mem.status = STATUS_SIGNED
            self._save()
        return self.mem.status

    # ------------------------------------------------------------------ Modbus face

    def blocks(self) -> list[tuple[int, int, bool]]:
        r = self.regs
        return [
            (r.model, 20, True),
            (r.energy_import, 12, True),
            (r.command, 1, False),
            (r.status_block, 5, True),
            (r.metadata_length, 3, False),
            (r.metadata, r.metadata_regs, False),
            (r.public_key_length, 1 + r.public_key_regs, True),
            (r.record, r.record_regs, True),
            (r.fiscal_length, 1 + r.fiscal_regs, True),
        ]

    def on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        r = self.regs
        for i, value in enumerate(values):
            reg = address + i
            if reg == r.command:
                result = self.command(value)
                if result is not None:
                    return result
            elif reg == r.metadata_length:
                self.mem.extra["metadata_length"] = value
        if self._metadata.take(address, values):
            self.mem.extra["metadata"] = self._metadata.text
        return None

    def refresh(self, put: Put, address: int, count: int) -> None:
        r = self.regs
        status = self._visible_status()
        identity = text_regs(self.MODEL, 8) + text_regs(self.mem.serial, 8) + text_regs(self.FIRMWARE, 4)
        put(r.model, identity)
        power = int(self.drawn_w)
        amps = int(power / 230 / 3 * 1000) if power else 0
        put(
            r.energy_import,
            u32_regs(int(self.mem.energy_wh))
            + u32_regs(int(self.mem.export_wh))
            + u32_regs(power & 0xFFFFFFFF)
            + [2301, 2299, 2302]
            + [amps, amps, amps],
        )
        tx = self.mem.open_tx or {}
        record = self.mem.record if status == STATUS_SIGNED else None
        record_bytes = record.encode() if record else b""
        output_on = status == STATUS_RUNNING and not self.faults.output_stuck_off
        put(
            r.status_block,
            [status, *u32_regs(int(tx.get("number", self.mem.tx_counter))), int(output_on), len(record_bytes)],
        )
        put(r.metadata_length + 1, u32_regs(int(tx.get("begin_wh", 0))))
        put(r.public_key_length, [len(self.public_key_der), *byte_regs(self.public_key_der)])
        if record_bytes and address >= r.record and address < r.fiscal_length:
            put(r.record, byte_regs(record_bytes))
        if address >= r.fiscal_length:
            fiscal = self._fiscal_record().encode()
            put(r.fiscal_length, [len(fiscal), *byte_regs(fiscal)])
