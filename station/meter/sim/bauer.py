"""A simulated BAUER BSM-WS36A: SunSpec-style registers and signed Start/End snapshots, each its own OCMF record
(TX B or E) with a running PG, as station/meter/bauer.py expects them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from pymodbus.constants import ExcCodes

from station.bus.codec import bytes_to_regs, regs_to_str, str_to_regs, to_u32
from station.meter.bauer import SNAPSHOT_UPDATING, SNAPSHOT_VALID, BauerRegisters
from station.meter.sim.base import Put, SimulatedMeter, ocmf_time

log = structlog.get_logger("station.meter.sim.bauer")


class BauerSimulator(SimulatedMeter):
    MODEL = "BSM-WS36A"
    FIRMWARE = "1.9:32CA:AFF4"

    REGISTERS = BauerRegisters
    regs: BauerRegisters
    DEVICE_ID = 42
    SERIAL = "BSM09876543"

    def _init_model(self) -> None:
        self._meta = [0] * 120

    @property
    def charging(self) -> bool:
        return bool(self.mem.extra.get("running"))

    def _snapshot(self, kind: str) -> None:
        """Sign a Start ('B') or End ('E') snapshot; visible after the signing time."""
        self.tick()
        self.mem.tx_counter += 1
        wh = int(self.mem.energy_wh)
        meta = {"ID": regs_to_str(self._meta[:70]), "X2": regs_to_str(self._meta[70:120])}
        if kind == "B":
            self.mem.open_tx = {"number": self.mem.tx_counter, "begin_wh": wh, "begin_tm": "", "meta": meta}
        head: dict[str, Any] = {
            "FV": "1.0",
            "GI": "BAUER Electronic BSM-WS36A-H01-1311-0000",
            "GS": self.mem.serial,
            "GV": self.FIRMWARE,
            "PG": f"T{self.mem.tx_counter}",
            "MV": "BAUER Electronic",
            "MM": self.MODEL,
            "MS": self.mem.serial,
            "MF": self.FIRMWARE,
            "IS": True,
            "IT": "UNDEFINED",
            "ID": (self.mem.open_tx or {}).get("meta", meta)["ID"],
            "RD": [
                {"TM": ocmf_time(datetime.now(UTC)), "TX": self.end_tx if kind == "E" else kind,
                 "RV": round(wh / 1000, 3), "RI": "1-0:1.8.0",
                 "RU": "kWh", "RT": "AC", "EF": "", "ST": "G"}
            ],
        }  # fmt: skip
        payload = json.dumps(head, separators=(",", ":"))
        signature = self.sign(payload)
        record = f'OCMF|{payload}|{{"SD":"{signature.hex().upper()}"}}'
        self.mem.extra[f"ocmf_{kind}"] = record
        self.mem.extra[f"visible_{kind}"] = time.time() + self.signing_time
        self.mem.extra["running"] = kind == "B"
        self._save()
        tx = self.mem.open_tx or {"number": self.mem.tx_counter, "begin_wh": wh, "meta": meta}
        self.append_ledger({**tx, "number": self.mem.tx_counter}, record, wh if kind == "E" else None)
        log.info("sim: snapshot signed", kind=kind, pagination=f"T{self.mem.tx_counter}", wh=wh)

    def blocks(self) -> list[tuple[int, int, bool]]:
        r = self.regs
        return [
            (r.firmware, r.serial + 16 - r.firmware, True),
            (r.current, r.power + 5 - r.current, True),
            (r.energy_export, r.energy_sf + 1 - r.energy_export, True),
            (r.response_counter, r.epoch + 3 - r.response_counter, False),
            (r.meta1, 120, False),
            (r.public_key_length, 1 + r.public_key_regs, True),
            (r.start_status, 1, False),
            (r.end_status, 1, False),
            (r.start_ocmf, r.ocmf_regs, True),
            (r.end_ocmf, r.ocmf_regs, True),
        ]

    def on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        r = self.regs
        for i, value in enumerate(values):
            reg = address + i
            if reg in (r.start_status, r.end_status):
                if value != SNAPSHOT_UPDATING:
                    return ExcCodes.ILLEGAL_VALUE
                kind = "B" if reg == r.start_status else "E"
                if self.faults.refuse_start and kind == "B":
                    self.mem.extra["failed_B"] = True
                    return None
                self._snapshot(kind)
            elif r.meta1 <= reg < r.meta1 + len(self._meta):
                self._meta[reg - r.meta1] = value
        return None

    def _status(self, kind: str) -> int:
        if kind == "B" and self.mem.extra.get("failed_B"):
            return 3  # FAILED_GENERAL
        return SNAPSHOT_UPDATING if self.mem.extra.get(f"visible_{kind}", 0) > time.time() else SNAPSHOT_VALID

    def refresh(self, put: Put, address: int, count: int) -> None:
        r = self.regs
        put(r.firmware, str_to_regs(self.FIRMWARE, 8))
        put(r.serial, str_to_regs(self.mem.serial, 16))
        power = self.power_w if self.charging else 0.0
        amps = round(power / 230 / 3 * 100)
        put(r.current, [amps * 3, amps, amps, amps, 0xFFFE])  # A, AphA..C, A_SF -2
        put(r.voltage, [2301, 2299, 2302, 0, 0, 0, 0, 0xFFFF])  # PhVphA..C ... V_SF -1
        put(r.power, [round(power) & 0xFFFF, 0, 0, 0, 0])  # W, WphA..C, W_SF 0
        put(r.energy_export, to_u32(int(self.mem.export_wh)))
        put(r.energy_import, to_u32(int(self.mem.energy_wh)))
        put(r.energy_sf, [0])
        put(r.response_counter, [self.mem.tx_counter])
        put(r.public_key_length, [len(self.public_key_der), *bytes_to_regs(self.public_key_der)])
        put(r.start_status, [self._status("B")])
        put(r.end_status, [self._status("E")])
        for kind, base in (("B", r.start_ocmf), ("E", r.end_ocmf)):
            if address == base and self._status(kind) == SNAPSHOT_VALID:
                text = self.mem.extra.get(f"ocmf_{kind}", "").encode()
                put(base, bytes_to_regs(text) + [0] * (r.ocmf_regs - (len(text) + 1) // 2))
