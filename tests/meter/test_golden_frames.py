"""Golden Modbus RTU frames per driver, from the vendors' public register maps: the exact request frames (device id,
function code, address, count, values, CRC) each driver sends for identity, public key, live values, start and stop
(reading the signed record), answered with canned response frames, on a scripted line that speaks only the request
API. Addresses are literals from the public documents (section in the comment beside them), never the drivers'
tables, and no simulator runs here: a driver with a wrong address fails, whatever its simulator would say.

Documents: ../shared/docs/meters-and-ocmf.md §2.1 (Iskra WM3M4C, Iskra's manual as EVerest's RsIskraMeter puts it on
the wire), §2.2 (Carlo Gavazzi EM580, EVerest's CarloGavazzi_EM580 helper.hpp, 3xxxxx notation: PDU = N - 300001),
§2.3 (BAUER BSM-WS36A, chargeITmobility/bsm-python doc/modbus/bsm-ws36a-modbus-registers.csv).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import station.meter.bauer
import station.meter.em580
import station.meter.iskra
from station.meter.bauer import BauerMeter
from station.meter.em580 import Em580Meter
from station.meter.interface import MeterTransactionRequest
from station.meter.iskra import IskraMeter

FC_HOLDING, FC_INPUT, FC_WRITE_ONE, FC_WRITE_MANY = 3, 4, 6, 16
NOW = 1_700_000_000  # the clock the drivers see (time.time() in each driver module)
REQUEST = MeterTransactionRequest("ref-1", 1, "TAG-1", "CP-1", datetime(2024, 5, 1, tzinfo=UTC))

# ---------------------------------------------------------------------- RTU frames, built here and only here


def crc16(data: bytes) -> bytes:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF), low byte first on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def framed(pdu: bytes) -> bytes:
    return pdu + crc16(pdu)


def u16(*values: int) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def read(device: int, fc: int, address: int, count: int) -> bytes:
    return framed(bytes([device, fc]) + u16(address, count))


def write_one(device: int, address: int, value: int) -> bytes:
    return framed(bytes([device, FC_WRITE_ONE]) + u16(address, value))


def write_many(device: int, address: int, values: Sequence[int]) -> bytes:
    return framed(bytes([device, FC_WRITE_MANY]) + u16(address, len(values)) + bytes([2 * len(values)]) + u16(*values))


def answer(device: int, fc: int, registers: Sequence[int]) -> bytes:
    return framed(bytes([device, fc, 2 * len(registers)]) + u16(*registers))


def write_many_echo(device: int, address: int, count: int) -> bytes:
    return framed(bytes([device, FC_WRITE_MANY]) + u16(address, count))


def text(value: str, n_regs: int | None = None) -> list[int]:
    raw = value.encode("ascii")
    raw = raw.ljust(2 * n_regs, b"\x00") if n_regs is not None else raw + b"\x00" * (len(raw) % 2)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def blob(raw: bytes, n_regs: int | None = None) -> list[int]:
    n = (len(raw) + 1) // 2 if n_regs is None else n_regs
    raw = raw.ljust(2 * n, b"\x00")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * n, 2)]


def test_crc_and_frame_builders_match_the_modbus_specification_example() -> None:
    # "Modbus over serial line" V1.02 §6.2.2's worked example: read 10 holding registers of slave 1 from address 0.
    assert read(1, FC_HOLDING, 0, 10) == bytes.fromhex("01 03 00 00 00 0A C5 CD")
    assert write_one(1, 1, 3) == bytes.fromhex("01 06 00 01 00 03 98 0B")


# ---------------------------------------------------------------------- the scripted line

Exchange = tuple[bytes, bytes]  # (the request the map says, the canned response)


class ScriptedLine:
    """What a driver talks through (its first constructor argument), speaking only the request API: it turns each
    call into the RTU request frame a real link would send (reads in blocks of at most 125 registers, FC16 writes of
    at most 123), checks it against the next scripted request, and decodes the scripted response frame."""

    def __init__(self, device_id: int, script: Sequence[Exchange]) -> None:
        self.device_id = device_id
        self.script = list(script)
        self.sent: list[bytes] = []
        self.on_link_change: Callable[[bool, str], None] | None = None

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def load(self, script: Sequence[Exchange]) -> None:
        assert not self.script, f"{len(self.script)} scripted requests were never sent"
        self.script = list(script)

    def done(self) -> None:
        assert not self.script, f"{len(self.script)} scripted requests were never sent; next: {self.script[0][0].hex()}"

    def _exchange(self, request: bytes) -> bytes:
        n = len(self.sent)
        self.sent.append(request)
        assert self.script, f"request #{n} {request.hex(' ')} is not in the script"
        expected, response = self.script.pop(0)
        assert request == expected, (
            f"request #{n}: the driver sent {request.hex(' ')}, the map says {expected.hex(' ')}"
        )
        assert crc16(response[:-2]) == response[-2:] and response[0] == self.device_id
        return response

    async def read_holding(self, address: int, count: int) -> list[int]:
        return self._read(FC_HOLDING, address, count)

    async def read_input(self, address: int, count: int) -> list[int]:
        return self._read(FC_INPUT, address, count)

    def _read(self, fc: int, address: int, count: int) -> list[int]:
        out: list[int] = []
        for pos in range(address, address + count, 125):
            n = min(125, address + count - pos)
            response = self._exchange(read(self.device_id, fc, pos, n))
            assert response[1] == fc and response[2] == 2 * n, f"canned response to FC{fc} {pos} x{n} is wrong"
            out += [int.from_bytes(response[3 + 2 * i : 5 + 2 * i], "big") for i in range(n)]
        return out

    async def write_registers(self, address: int, values: Sequence[int], *, once: bool = False) -> None:
        for at in range(0, len(values), 123):
            chunk = list(values[at : at + 123])
            response = self._exchange(write_many(self.device_id, address + at, chunk))
            assert response == write_many_echo(self.device_id, address + at, len(chunk))

    async def write_register(self, address: int, value: int, *, once: bool = False) -> None:
        response = self._exchange(write_one(self.device_id, address, value))
        assert response == write_one(self.device_id, address, value)


def wrote_one(device: int, address: int, value: int) -> Exchange:
    return write_one(device, address, value), write_one(device, address, value)


def wrote_many(device: int, address: int, values: Sequence[int]) -> list[Exchange]:
    return [
        (
            write_many(device, address + at, values[at : at + 123]),
            write_many_echo(device, address + at, len(values[at : at + 123])),
        )
        for at in range(0, len(values), 123)
    ]


def read_back(device: int, fc: int, address: int, registers: Sequence[int]) -> list[Exchange]:
    """The blocks of at most 125 registers a read of `registers` takes, each with its canned answer."""
    return [
        (read(device, fc, address + at, len(registers[at : at + 125])), answer(device, fc, registers[at : at + 125]))
        for at in range(0, len(registers), 125)
    ]


def fixed_clock(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: float(NOW)))


def sign(key: ec.EllipticCurvePrivateKey, payload: str) -> bytes:
    return key.sign(payload.encode(), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def payload(*readings: tuple[str, int], pg: str = "T1", serial: str = "SN1") -> str:
    rd = ",".join(
        f'{{"TM":"2024-05-01T10:0{i}:00,000+0000 S","TX":"{tx}","RV":{wh / 1000:.3f},"RI":"1-b:1.8.0","RU":"kWh",'
        f'"RT":"AC","EF":"","ST":"G"}}'
        for i, (tx, wh) in enumerate(readings)
    )
    return (
        f'{{"FV":"1.0","GI":"golden","GS":"{serial}","PG":"{pg}","MV":"vendor","MS":"{serial}","IS":true,'
        f'"IT":"CENTRAL","ID":"TAG-1","RD":[{rd}]}}'
    )


# ---------------------------------------------------------------------- Iskra WM3M4C, §2.1, slave id 33

ISKRA = 33
ISKRA_KEY = ec.derive_private_key(0x15C7A, ec.SECP256R1())


def non_minimal_der(signature: bytes) -> bytes:
    """The Iskra firmware's DER (§2.1 "Firmware quirk"): a zero byte in front of every INTEGER."""
    r, s = decode_dss_signature(signature)
    body = b"".join(b"\x02" + bytes([33]) + b"\x00" + v.to_bytes(32, "big") for v in (r, s))
    return b"\x30" + bytes([len(body)]) + body


def t5(value: int, exponent: int) -> list[int]:
    return [((exponent & 0xFF) << 8) | value >> 16, value & 0xFFFF]


def iskra_live() -> list[Exchange]:
    d = ISKRA
    return [
        *read_back(d, FC_INPUT, 107, [*t5(23010, -2), *t5(22990, -2), *t5(23020, -2)]),  # IR 107,109,111: U L1..L3, T5
        *read_back(  # IR 126..130 I L1..L3, IR 140 P total (T6); 132..139 read along
            d, FC_INPUT, 126, [*t5(16000, -3), *t5(16000, -3), *t5(16000, -3), *[0] * 8, *t5(11040, 0)]
        ),
        *read_back(d, FC_INPUT, 414, [0, 0, 0, 0, 0, 12345, 0, 7]),  # IR 414/415 exponents, 418-421 import / export
    ]


async def test_iskra_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_clock(monkeypatch, station.meter.iskra)
    d = ISKRA
    point = spki(ISKRA_KEY)[-64:]  # X||Y
    line = ScriptedLine(d, [])
    meter = IskraMeter(line, poll_interval=0.0)  # type: ignore[arg-type]  # the request API is all it needs

    line.load(read_back(d, FC_INPUT, 1, [*text("WM3M4C", 8), *text("79000123", 4)]))  # IR 1..8 model, 9..12 serial
    assert line.script[0][0] == bytes.fromhex("21 04 00 01 00 0C A6 AF")  # the first frame, pinned byte for byte
    identity = await meter.identity()
    assert (identity.model, identity.serial_number) == ("WM3M4C", "79000123")

    line.load(read_back(d, FC_HOLDING, 8124, blob(point)))  # HR 8124..8155: public key X||Y
    assert await meter.public_key() == spki(ISKRA_KEY).hex().upper()

    line.load(iskra_live())
    live = await meter.live_values()
    assert (live.energy_import_wh, live.energy_export_wh, live.power_w) == (12345, 7, 11040)
    assert live.voltage_v == (230.1, 229.9, 230.2) and live.current_a == (16.0, 16.0, 16.0)

    meta = (
        '{"FV":"1.0","GI":"station","IS":true,"IF":["OCPP_RS"],"IT":"CENTRAL","ID":"TAG-1","CT":"CBIDC","CI":"CP-1 1"}'
    )
    line.load(
        [
            *read_back(d, FC_HOLDING, 7000, [0]),  # HR 7000: transaction state, 0 Idle
            *wrote_many(d, 7053, [0, NOW >> 16, NOW & 0xFFFF]),  # HR 7053 timezone, 7054/7055 UTC high/low
            wrote_one(d, 7071, 2),  # HR 7071: time sync status 2 = synchronised
            wrote_one(d, 7059, 0),  # HR 7059: signature algorithm select
            *wrote_many(d, 7100, text(meta)),  # HR 7100..: metadata JSON
            wrote_one(d, 7056, len(meta)),  # HR 7056: metadata length in bytes
            wrote_one(d, 7051, 0x4200),  # HR 7051: command start
            *read_back(d, FC_HOLDING, 7000, [1]),  # 1 Active
            *read_back(d, FC_HOLDING, 7052, [15]),  # HR 7052: 15 SignatureOK
            *iskra_live(),
        ]
    )
    started = await meter.start_transaction(REQUEST)
    assert started.meter_start_wh == 12345
    line.done()

    signed = payload(("B", 12345), ("E", 23456), serial="79000123")
    der = sign(ISKRA_KEY, signed)
    quirky = non_minimal_der(der)
    line.load(
        [
            *read_back(d, FC_HOLDING, 7000, [1]),
            wrote_one(d, 7051, 0x7200),  # HR 7051: command stop
            *read_back(d, FC_HOLDING, 7000, [0]),
            *read_back(d, FC_HOLDING, 7052, [15]),
            *read_back(d, FC_HOLDING, 7057, [len(signed), len(quirky)]),  # HR 7057 payload / 7058 signature length
            *read_back(d, FC_HOLDING, 7612, blob(signed.encode())),  # HR 7612..: signed payload
            *read_back(d, FC_HOLDING, 8188, blob(quirky)),  # HR 8188..: DER signature
        ]
    )
    ended = await meter.stop_transaction("ref-1")
    line.done()
    (record,) = ended.records
    assert record.data == f'OCMF|{signed}|{{"SD":"{der.hex().upper()}"}}'  # the quirk normalised, nothing else
    assert record.verified and ended.meter_stop_wh == 23456


# ---------------------------------------------------------------------- Carlo Gavazzi EM580, §2.2, unit id 1

EM580 = 1
EM580_KEY = ec.derive_private_key(0x580580, ec.BrainpoolP384R1())


def lsw_first(value: int, words: int) -> list[int]:
    return [(value >> (16 * i)) & 0xFFFF for i in range(words)]


def em580_live() -> list[Exchange]:
    d = EM580
    measurements = [0] * 42  # 300001..300042 (0x0000..0x0029): V, A, W, var INT32 LSW first
    for i, (volts, amps) in enumerate(((2301, 16000), (2299, 16000), (2302, 16000))):
        measurements[2 * i : 2 * i + 2] = lsw_first(volts, 2)  # V L-N x10
        measurements[12 + 2 * i : 14 + 2 * i] = lsw_first(amps, 2)  # A x1000 at 0x000C (offset assumed, see sim)
    measurements[40:42] = lsw_first(110400, 2)  # W sys x10 at 0x0028 (offset assumed, see sim)
    energy = [0] * 32  # 301281 (0x0500) kWh(+) total .. 301309 (0x051C) kWh(-) total, INT64 LSW first
    energy[0:4] = lsw_first(12345, 4)
    energy[28:32] = lsw_first(7, 4)
    return [
        *read_back(d, FC_INPUT, 300001 - 300001, measurements),
        *read_back(d, FC_INPUT, 301281 - 300001, energy),
    ]


async def test_em580_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_clock(monkeypatch, station.meter.em580)
    d = EM580
    der_key = spki(EM580_KEY)
    assert len(der_key) == 124  # §2.2: 62 words for P-384
    line = ScriptedLine(d, [])
    meter = Em580Meter(line, poll_interval=0.0)  # type: ignore[arg-type]

    # 320481..320487 serial (14 chars), 320488 production year
    line.load(read_back(d, FC_INPUT, 320481 - 300001, [*text("EM580SN0000042", 7), 2024]))
    assert line.script[0][0] == bytes.fromhex("01 04 50 00 00 08 E0 CC")
    assert (await meter.identity()).serial_number == "EM580SN0000042"

    line.load(read_back(d, FC_INPUT, 309729 - 300001, blob(der_key)))  # 309729 (0x2600): public key DER, 62 words
    assert await meter.public_key() == der_key.hex().upper()

    line.load(em580_live())
    live = await meter.live_values()
    assert (live.energy_import_wh, live.energy_export_wh, live.power_w) == (12345, 7, 11040)
    assert live.voltage_v == (230.1, 229.9, 230.2) and live.current_a == (16.0, 16.0, 16.0)

    ident = [1, 0, 0, 0, 0, 0, 10, *text("TAG-1", 20), 1, *text("CP-1 1", 20)]  # IS, IL, IF[4], IT CENTRAL, ID, CT, CI
    line.load(
        [
            *read_back(d, FC_INPUT, 328929 - 300001, [0, 0]),  # 328929 (0x7100) OCMF state NOT_READY, 0x7101 size
            *wrote_many(d, 328673 - 300001, ident),  # 328673 (0x7000) IS .. 0x702F CI
            *wrote_many(d, 326881 - 300001, [*text("=<ref-1>"), 0]),  # 326881 (0x6900) tariff text, NUL terminated
            *wrote_many(d, 328722 - 300001, [0, *lsw_first(NOW, 4), 0]),  # timezone, UTC INT64, 328727 modality 0
            *wrote_many(d, 328737 - 300001, [ord("B")]),  # 328737 (0x7040) command 'B'
            *read_back(d, FC_INPUT, 328929 - 300001, [1, 0]),  # RUNNING
            *em580_live(),
        ]
    )
    assert (await meter.start_transaction(REQUEST)).meter_start_wh == 12345
    line.done()

    signed = json.dumps(json.loads(payload(("B", 12345), ("E", 23456), serial="EM580SN0000042")))  # with spaces
    record_text = (
        f'OCMF|{signed}|{{"SA":"ECDSA-brainpoolP384r1-SHA256","SD":"{sign(EM580_KEY, signed).hex().upper()}"}}'
    )
    file_regs = blob(record_text.encode() + b"\x00")
    line.load(
        [
            *read_back(d, FC_INPUT, 328929 - 300001, [1, 0]),
            *wrote_many(d, 328737 - 300001, [ord("E")]),  # command 'E'
            *read_back(d, FC_INPUT, 328929 - 300001, [2, len(file_regs)]),  # READY, size in words
            *read_back(d, FC_INPUT, 328945 - 300001, file_regs),  # 328945 (0x7110..): the OCMF file
        ]
    )
    ended = await meter.stop_transaction("ref-1")
    line.done()
    (record,) = ended.records
    assert record.data == record_text and record.verified and ended.meter_stop_wh == 23456

    line.load(
        [
            *read_back(d, FC_INPUT, 328929 - 300001, [2, len(file_regs)]),
            *wrote_many(d, 328929 - 300001, [0]),  # write 0 to the OCMF state: the file was read
        ]
    )
    await meter.release_record("ref-1")
    line.done()


# ---------------------------------------------------------------------- BAUER BSM-WS36A, §2.3, unit 42

BAUER = 42
BAUER_KEY = ec.derive_private_key(0xBA0E4, ec.SECP256R1())
START_O, END_O = 43295, 43795  # O of the OCMF Signed Start / End Snapshot (models 64903 at 43291 / 43791, offset 4)


def ocmf_block(record: str) -> list[int]:
    return blob(record.encode(), 496)  # O: 496 registers, NUL padded


def bauer_live() -> list[Exchange]:
    d = BAUER
    # model 203 at 40090: A 40092, AphA..C, A_SF 40096; PhV 40097, PhVphA..C 40098..40100, PPV.., V_SF 40105;
    # Hz 40106, Hz_SF; W 40108, WphA..C, W_SF 40112
    block = [4800, 1600, 1600, 1600, 0xFFFE, 2300, 2301, 2299, 2302, 0, 0, 0, 0, 0xFFFF, 500, 0xFFFF, 11040, 0, 0, 0, 0]
    energy = [0, 7, *[0] * 6, 0, 12345, *[0] * 6, 0]  # TotWhExp 40128, TotWhImp 40136 (acc32), TotWh_SF 40144
    return [*read_back(d, FC_HOLDING, 40092, block), *read_back(d, FC_HOLDING, 40128, energy)]


async def test_bauer_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_clock(monkeypatch, station.meter.bauer)
    d = BAUER
    der_key = spki(BAUER_KEY)
    line = ScriptedLine(d, [])
    meter = BauerMeter(line, poll_interval=0.0)  # type: ignore[arg-type]

    # Common model at 40002: Vr 40044 (8 regs), SN 40052 (16 regs)
    line.load(read_back(d, FC_HOLDING, 40044, [*text("1.9:32CA:AFF4", 8), *text("BSM09876543", 16)]))
    assert line.script[0][0] == bytes.fromhex("2A 03 9C 6C 00 18 AD 96")
    identity = await meter.identity()
    assert (identity.serial_number, identity.firmware_version) == ("BSM09876543", "1.9:32CA:AFF4")

    # BPK 40450 (bytes), PK 40451..: DER (RFC 5480); the driver reads 64 registers of PK
    line.load(read_back(d, FC_HOLDING, 40450, [len(der_key), *blob(der_key, 64)]))
    assert await meter.public_key() == der_key.hex().upper()

    line.load(bauer_live())
    live = await meter.live_values()
    assert (live.energy_import_wh, live.energy_export_wh, live.power_w) == (12345, 7, 11040)
    assert live.voltage_v == (230.1, 229.9, 230.2) and live.current_a == (16.0, 16.0, 16.0)

    begin_payload = payload(("B", 12345), pg="T1", serial="BSM09876543")
    begin = f'OCMF|{begin_payload}|{{"SD":"{sign(BAUER_KEY, begin_payload).hex().upper()}"}}'
    line.load(
        [
            *read_back(d, FC_HOLDING, START_O, [0] * 496),  # no Start snapshot yet
            *read_back(d, FC_HOLDING, END_O, [0] * 496),
            *wrote_many(d, 40260, [NOW >> 16, NOW & 0xFFFF, 0]),  # Epoch 40260 (uint32) and TZO 40262 in one write
            *wrote_many(d, 40279, text("TAG-1", 70)),  # Meta1: becomes the OCMF ID
            *wrote_many(d, 40349, text("CP-1 1", 50)),  # Meta2
            wrote_one(d, 41286, 2),  # St of the Signed Start Snapshot (model at 41283): write UPDATING
            *read_back(d, FC_HOLDING, 41286, [0]),  # VALID
            *read_back(d, FC_HOLDING, START_O, ocmf_block(begin)),
        ]
    )
    started = await meter.start_transaction(REQUEST)
    line.done()
    assert started.meter_start_wh == 12345 and started.begin_record is not None and started.begin_record.verified

    end_payload = payload(("E", 23456), pg="T2", serial="BSM09876543")
    end = f'OCMF|{end_payload}|{{"SD":"{sign(BAUER_KEY, end_payload).hex().upper()}"}}'
    line.load(
        [
            *read_back(d, FC_HOLDING, START_O, ocmf_block(begin)),  # T1 begun, no end: running
            *read_back(d, FC_HOLDING, END_O, [0] * 496),
            wrote_one(d, 41540, 2),  # St of the Signed End Snapshot (model at 41537)
            *read_back(d, FC_HOLDING, 41540, [0]),
            *read_back(d, FC_HOLDING, START_O, ocmf_block(begin)),
            *read_back(d, FC_HOLDING, END_O, ocmf_block(end)),
        ]
    )
    ended = await meter.stop_transaction("ref-1")
    line.done()
    assert [r.data for r in ended.records] == [begin, end] and all(r.verified for r in ended.records)
    assert ended.meter_stop_wh == 23456
