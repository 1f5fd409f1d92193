"""A simulated Carlo Gavazzi EM580, serving the public register map over Modbus RTU (its own table below, from the
public description; never the driver's).

Signs with ECDSA-brainpoolP384r1-SHA256 (SA in the record) over a payload written with spaces after separators, as
the real meter's sample is: verification must use the exact bytes. Keeps the OCMF file until the state register is
written 0, like the meter.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from pymodbus.constants import ExcCodes

from station.meter.sim.base import Put, SimRegisterMap, SimulatedMeter, byte_regs, ocmf_time, regs_text, text_regs

BASE = 300001  # the document writes input registers as 3xxxxx: PDU address = number - 300001


@dataclass(frozen=True)
class Em580Map(SimRegisterMap):
    """Carlo Gavazzi EM580, from the public description of its Modbus map (EVerest's CarloGavazzi_EM580 module,
    main/helper.hpp and README.md, after Carlo Gavazzi's EM580 communication protocol tables 4.20-4.39):
    ../shared/docs/meters-and-ocmf.md §2.2, table "Address (PDU) | Meaning". Input registers, read with FC04,
    written with FC16; addresses in the document's 3xxxxx notation."""

    MODEL: ClassVar[str] = "EM580"

    real_time_values: int = 300001 - BASE  # 300001..: V, A, W, var (INT32, LSW first)
    # Inside the real-time block the document names no offsets: A L1 at +12 and W sys at +40 (0x0C, 0x28) are the
    # EM-series layout (V L-N x3, V L-L x3, A x3, W x3 ..., W sys), assumed, with the scalings V x10, A x1000, W x10.
    current_l1: int = 0x000C
    power_total: int = 0x0028
    kwh_import_total: int = 301281 - BASE  # 0x0500, INT64 LSW first
    kwh_export_total: int = 301309 - BASE  # 0x051C
    signature_type: int = 309472 - BASE  # 0x24FF; the raw key (P-384: 49 words, 04||X||Y) follows at 309473
    public_key_der: int = 309729 - BASE  # 0x2600: DER; read the whole block, 62 words for P-384
    public_key_der_regs: int = 62
    serial_number: int = 320481 - BASE  # 320481..320487: 14 characters
    device_state: int = 320499 - BASE  # 0x5012: bitfield
    tariff_text: int = 326881 - BASE  # 0x6900: TT, CHAR[252]
    ocmf_identification_status: int = 328673 - BASE  # 0x7000 IS, 0x7001 IL, IF[4], IT, ID[20], 0x701B CT, CI[20]
    timezone: int = 328722 - BASE  # 0x7031 (the table's "0x7035" is a typo: 328722 - 300001 = 0x7031); UTC at 328723
    session_modality: int = 328727 - BASE  # 0x7036: 0 charging
    command: int = 328737 - BASE  # 0x7040: 'B' start, 'E' end, 'A' abort
    charging_status: int = 328742 - BASE  # 0x7045
    ocmf_state: int = 328929 - BASE  # 0x7100: 0 NOT_READY, 1 RUNNING, 2 READY, 3 CORRUPTED; write 0 to acknowledge
    ocmf_size: int = 328930 - BASE  # 0x7101: words
    ocmf_file: int = 328945 - BASE  # 0x7110..: at most 2031 words
    ocmf_file_regs: int = 2031

    # The config's names ([meter.registers], as the driver calls them) onto this map.
    CONFIG_NAMES: ClassVar[dict[str, str]] = {
        "voltage": "real_time_values",
        "current": "current_l1",
        "power": "power_total",
        "energy_import": "kwh_import_total",
        "energy_export": "kwh_export_total",
        "signature_type": "signature_type",
        "public_key_der": "public_key_der",
        "public_key_regs": "public_key_der_regs",
        "serial": "serial_number",
        "device_state": "device_state",
        "tariff_text": "tariff_text",
        "ocmf_is": "ocmf_identification_status",
        "timezone": "timezone",
        "modality": "session_modality",
        "command": "command",
        "ocmf_state": "ocmf_state",
        "ocmf_size": "ocmf_size",
        "ocmf_file": "ocmf_file",
        "ocmf_file_regs": "ocmf_file_regs",
    }


# Values (meters-and-ocmf.md §2.2: rows 0x7040 and 0x7100).
COMMAND_BEGIN, COMMAND_END = ord("B"), ord("E")
STATE_NOT_READY, STATE_RUNNING, STATE_READY = 0, 1, 2
OCMF_BLOCK_REGS = 0x30  # 0x7000..0x702F: IS, IL, IF[4], IT, ID[20], CT, CI[20]
# IT as a number: the OCMF specification's order of identification types (meters-and-ocmf.md §3), assumed.
IDENTIFICATION_TYPES = (
    "NONE", "DENIED", "UNDEFINED", "ISO14443", "ISO15693", "EMAID", "EVCCID", "EVCOID", "ISO7812", "CARD_TXN_NR",
    "CENTRAL", "CENTRAL_1", "CENTRAL_2", "LOCAL", "LOCAL_1", "LOCAL_2", "PHONE_NUMBER", "KEY_CODE",
)  # fmt: skip


def lsw_first(value: int, words: int) -> list[int]:
    """Multi-word integers LSW first, each word MSB first (meters-and-ocmf.md §2.2)."""
    value &= (1 << (16 * words)) - 1
    return [(value >> (16 * i)) & 0xFFFF for i in range(words)]


log = structlog.get_logger("station.meter.sim.em580")


class Em580Simulator(SimulatedMeter):
    MODEL = "EM580"
    FIRMWARE = "sim"
    CURVE = ec.BrainpoolP384R1()

    MAP = Em580Map
    regs: Em580Map
    SERIAL = "EM580SIM000042"

    def _init_model(self) -> None:
        self._ocmf_block = [0] * OCMF_BLOCK_REGS

    @property
    def charging(self) -> bool:
        return self.mem.status == STATE_RUNNING

    def _meta(self) -> dict[str, Any]:
        b = self._ocmf_block
        it = b[6]
        return {
            "IS": bool(b[0]),
            "IT": IDENTIFICATION_TYPES[it] if it < len(IDENTIFICATION_TYPES) else "UNDEFINED",
            "ID": regs_text(b[7:27]),
            "CT": "CBIDC" if b[0x1B] == 1 else "EVSEID",
            "CI": regs_text(b[0x1C:0x30]),
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
            (r.real_time_values, 6, True),
            (r.current_l1, 6, True),
            (r.power_total, 2, True),
            (r.real_time_values, r.power_total + 2 - r.real_time_values, True),  # one block of INT32 values
            (r.kwh_import_total, 4, True),
            (r.kwh_export_total, 4, True),
            (r.kwh_import_total, r.kwh_export_total + 4 - r.kwh_import_total, True),
            (r.signature_type, 1 + 49, True),
            (r.public_key_der, r.public_key_der_regs, True),
            (r.serial_number, 7, True),
            (r.device_state, 1, True),
            (r.serial_number, r.device_state + 1 - r.serial_number, True),
            (r.tariff_text, 126, False),
            (r.ocmf_identification_status, OCMF_BLOCK_REGS, False),
            (r.timezone, 5, False),
            (r.session_modality, 1, False),
            (r.command, 1, False),
            (r.charging_status, 1, False),
            (r.ocmf_identification_status, r.charging_status + 1 - r.ocmf_identification_status, False),
            (r.ocmf_state, 1, False),
            (r.ocmf_size, 1, False),
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
            elif r.ocmf_identification_status <= reg < r.ocmf_identification_status + len(self._ocmf_block):
                self._ocmf_block[reg - r.ocmf_identification_status] = value
        return None

    def refresh(self, put: Put, address: int, count: int) -> None:
        r = self.regs
        power = self.drawn_w
        amps = power / 230 / 3
        for i, volts in enumerate((230.1, 229.9, 230.2)):
            put(r.real_time_values + 2 * i, lsw_first(round(volts * 10), 2))
            put(r.current_l1 + 2 * i, lsw_first(round(amps * 1000), 2))
        put(r.power_total, lsw_first(round(power * 10), 2))
        put(r.kwh_import_total, lsw_first(int(self.mem.energy_wh), 4))
        put(r.kwh_export_total, lsw_first(int(self.mem.export_wh), 4))
        point = self.public_key_der[-97:]
        put(r.signature_type, [2, *byte_regs(point)])
        put(r.public_key_der, byte_regs(self.public_key_der))
        put(r.serial_number, text_regs(self.mem.serial, 7))
        visible_ready = self.mem.status == STATE_READY and time.time() >= self.mem.signed_visible_at
        state = STATE_RUNNING if self.mem.status == STATE_READY and not visible_ready else self.mem.status
        record = (self.mem.record or "").encode() if visible_ready else b""
        put(r.ocmf_state, [state])
        put(r.ocmf_size, [(len(record) + 1) // 2])
        if record and address >= r.ocmf_file:
            put(r.ocmf_file, byte_regs(record))
