"""A simulated BAUER BSM-WS36A: SunSpec registers and signed Start/End snapshots, each its own OCMF record (TX B or
E) with a running PG, served from its own table of BAUER's public register list (never the driver's)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from pymodbus.constants import ExcCodes

from station.meter.sim.base import (
    Put,
    SimRegisterMap,
    SimulatedMeter,
    byte_regs,
    ocmf_time,
    regs_text,
    text_regs,
    u32_regs,
)


@dataclass(frozen=True)
class BauerMap(SimRegisterMap):
    """BAUER BSM-WS36A, from chargeITmobility/bsm-python doc/modbus/bsm-ws36a-modbus-registers.csv (columns Address,
    Size, Name) and doc/modbus/bsm-ws36a-modbus-model-instances.txt, summarised in ../shared/docs/meters-and-ocmf.md
    §2.3. Holding registers (FC03/06/16), PDU addresses as the CSV gives them."""

    MODEL: ClassVar[str] = "BAUER"

    common_vr: int = 40044  # model Common (1) at 40002: Vr, 8 regs
    common_sn: int = 40052  # Common: SN, 16 regs (DA follows at 40068)
    ac_meter_a: int = 40092  # model AC Meter (203) at 40090: A, AphA..C, A_SF at 40096
    ac_meter_phv_pha: int = 40098  # PhVphA..C 40098..40100, V_SF at 40105
    ac_meter_w: int = 40108  # W, WphA..C, W_SF at 40112
    ac_meter_tot_wh_exp: int = 40128  # TotWhExp acc32
    ac_meter_tot_wh_imp: int = 40136  # TotWhImp acc32
    ac_meter_tot_wh_sf: int = 40144  # TotWh_SF
    bsm_rcnt: int = 40256  # model BSM Meter (64900) at 40197: RCnt uint32, the same value as PG
    bsm_epoch: int = 40260  # Epoch uint32, TZO int16 at 40262: "set both in a single write"
    bsm_meta1: int = 40279  # Meta1, 70 regs: becomes the OCMF ID
    bsm_meta2: int = 40349  # Meta2, 50 regs: X2 (Meta3 at 40399, 50 regs)
    bsm_npk: int = 40449  # NPK: registers of the key block
    bsm_bpk: int = 40450  # BPK: bytes of the public key
    bsm_pk: int = 40451  # PK: DER (RFC 5480), the first BPK bytes
    bsm_pk_regs: int = 48  # the repeating block up to the next model (40499)
    start_snapshot_st: int = 41286  # Signed Start Snapshot (64901) at 41283: St at offset 3
    end_snapshot_st: int = 41540  # Signed End Snapshot at 41537: St
    start_ocmf_o: int = 43295  # OCMF Signed Start Snapshot (64903) at 43291: Typ 43293, St 43294, O 43295 (496)
    end_ocmf_o: int = 43795  # OCMF Signed End Snapshot at 43791: O at 43795
    ocmf_regs: int = 496

    # The config's names ([meter.registers], as the driver calls them) onto this map.
    CONFIG_NAMES: ClassVar[dict[str, str]] = {
        "firmware": "common_vr",
        "serial": "common_sn",
        "current": "ac_meter_a",
        "voltage": "ac_meter_phv_pha",
        "power": "ac_meter_w",
        "energy_export": "ac_meter_tot_wh_exp",
        "energy_import": "ac_meter_tot_wh_imp",
        "energy_sf": "ac_meter_tot_wh_sf",
        "response_counter": "bsm_rcnt",
        "epoch": "bsm_epoch",
        "meta1": "bsm_meta1",
        "meta2": "bsm_meta2",
        "public_key_length": "bsm_bpk",
        "public_key": "bsm_pk",
        "public_key_regs": "bsm_pk_regs",
        "start_status": "start_snapshot_st",
        "end_status": "end_snapshot_st",
        "start_ocmf": "start_ocmf_o",
        "end_ocmf": "end_ocmf_o",
        "ocmf_regs": "ocmf_regs",
    }


# Snapshot status St (the CSV's enum16 St rows): 0 VALID, 2 UPDATING (write it to make a snapshot), 3 FAILED_GENERAL.
SNAPSHOT_VALID, SNAPSHOT_UPDATING, SNAPSHOT_FAILED_GENERAL = 0, 2, 3

log = structlog.get_logger("station.meter.sim.bauer")


class BauerSimulator(SimulatedMeter):
    MODEL = "BSM-WS36A"
    FIRMWARE = "1.9:32CA:AFF4"

    MAP = BauerMap
    regs: BauerMap
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
        meta = {"ID": regs_text(self._meta[:70]), "X2": regs_text(self._meta[70:120])}
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
            (r.common_vr, 8, True),
            (r.common_sn, 16, True),
            (r.common_vr, r.common_sn + 16 - r.common_vr, True),
            (r.ac_meter_a, 5, True),
            (r.ac_meter_phv_pha, 8, True),
            (r.ac_meter_w, 5, True),
            (r.ac_meter_a, r.ac_meter_w + 5 - r.ac_meter_a, True),  # 40092..40112 of model 203
            (r.ac_meter_tot_wh_exp, 2, True),
            (r.ac_meter_tot_wh_imp, 2, True),
            (r.ac_meter_tot_wh_sf, 1, True),
            (r.ac_meter_tot_wh_exp, r.ac_meter_tot_wh_sf + 1 - r.ac_meter_tot_wh_exp, True),
            (r.bsm_rcnt, 2, True),
            (r.bsm_epoch, 3, False),
            (r.bsm_meta1, 70, False),
            (r.bsm_meta2, 50, False),
            (r.bsm_npk, 2, True),
            (r.bsm_pk, r.bsm_pk_regs, True),
            (r.bsm_pk + r.bsm_pk_regs, 22, True),  # the next model (64902, firmware hash: 2 + 20 regs), read along
            (r.start_snapshot_st, 1, False),
            (r.end_snapshot_st, 1, False),
            (r.start_ocmf_o, r.ocmf_regs, True),
            (r.end_ocmf_o, r.ocmf_regs, True),
        ]

    def on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        r = self.regs
        for i, value in enumerate(values):
            reg = address + i
            if reg in (r.start_snapshot_st, r.end_snapshot_st):
                if value != SNAPSHOT_UPDATING:
                    return ExcCodes.ILLEGAL_VALUE
                kind = "B" if reg == r.start_snapshot_st else "E"
                if self.faults.refuse_start and kind == "B":
                    self.mem.extra["failed_B"] = True
                    return None
                self._snapshot(kind)
            elif r.bsm_meta1 <= reg < r.bsm_meta1 + 70:
                self._meta[reg - r.bsm_meta1] = value
            elif r.bsm_meta2 <= reg < r.bsm_meta2 + 50:
                self._meta[70 + reg - r.bsm_meta2] = value
        return None

    def _status(self, kind: str) -> int:
        if kind == "B" and self.mem.extra.get("failed_B"):
            return SNAPSHOT_FAILED_GENERAL
        return SNAPSHOT_UPDATING if self.mem.extra.get(f"visible_{kind}", 0) > time.time() else SNAPSHOT_VALID

    def refresh(self, put: Put, address: int, count: int) -> None:
        r = self.regs
        put(r.common_vr, text_regs(self.FIRMWARE, 8))
        put(r.common_sn, text_regs(self.mem.serial, 16))
        power = self.drawn_w
        amps = round(power / 230 / 3 * 100)
        put(r.ac_meter_a, [amps * 3, amps, amps, amps, 0xFFFE])  # A, AphA..C, A_SF -2
        put(r.ac_meter_phv_pha, [2301, 2299, 2302, 0, 0, 0, 0, 0xFFFF])  # PhVphA..C, PPV, PhVphAB..CA, V_SF -1
        put(r.ac_meter_w, [round(power) & 0xFFFF, 0, 0, 0, 0])  # W, WphA..C, W_SF 0
        put(r.ac_meter_tot_wh_exp, u32_regs(int(self.mem.export_wh)))
        put(r.ac_meter_tot_wh_imp, u32_regs(int(self.mem.energy_wh)))
        put(r.ac_meter_tot_wh_sf, [0])
        put(r.bsm_rcnt, u32_regs(self.mem.tx_counter))
        put(r.bsm_npk, [r.bsm_pk_regs])
        put(r.bsm_bpk, [len(self.public_key_der)])
        put(r.bsm_pk, byte_regs(self.public_key_der))
        put(r.start_snapshot_st, [self._status("B")])
        put(r.end_snapshot_st, [self._status("E")])
        for kind, base in (("B", r.start_ocmf_o), ("E", r.end_ocmf_o)):
            if address == base and self._status(kind) == SNAPSHOT_VALID:
                text = self.mem.extra.get(f"ocmf_{kind}", "").encode()
                put(base, byte_regs(text) + [0] * (r.ocmf_regs - (len(text) + 1) // 2))
