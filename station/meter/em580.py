"""Driver for the Carlo Gavazzi EM580 (Eichrecht, OCMF) over Modbus RTU.

Register map and procedure as EVerest's `CarloGavazzi_EM580` module implements them (../shared/docs/meters-and-ocmf.md
§2.2, docs/meters.md). Reads are FC04, writes FC16 in chunks of at most 123 registers. Words are MSB first; multi-word
integers are LSW first. The meter signs with ECDSA-brainpoolP384r1-SHA256 and keeps the OCMF file until it is
acknowledged (state register written 0), which `release_record` does once the daemon has stored it. Where the public
description gives an address but not the encoding (IT, IF codes; scaling of the measurement block), this driver's
choice is marked "assumed" and the address is overridable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from station.bus import ModbusDevice
from station.bus.codec import regs_to_bytes, regs_to_str, str_to_regs
from station.meter.driver import ModbusMeter, RegisterTable
from station.meter.interface import (
    LiveValues,
    MeterIdentity,
    MeterRefused,
    MeterTransactionEnded,
    MeterTransactionRequest,
    MeterTransactionStarted,
)
from station.meter.records import end_wh, examine_record

log = structlog.get_logger("station.meter.em580")

# OCMF identification types in the order of the OCMF spec's table (assumed encoding of register IT).
IDENTIFICATION_TYPES = (
    "NONE", "DENIED", "UNDEFINED", "ISO14443", "ISO15693", "EMAID", "EVCCID", "EVCOID", "ISO7812", "CARD_TXN_NR",
    "CENTRAL", "CENTRAL_1", "CENTRAL_2", "LOCAL", "LOCAL_1", "LOCAL_2", "PHONE_NUMBER", "KEY_CODE",
)  # fmt: skip


@dataclass(frozen=True)
class Em580Registers(RegisterTable):
    VENDOR = "EM580"

    voltage: int = 0x0000  # 3 x INT32 V x10 (assumed scaling)
    current: int = 0x000C  # 3 x INT32 A x1000 (assumed scaling)
    power: int = 0x0028  # INT32 W x10 (assumed scaling)
    energy_import: int = 0x0500  # INT64 Wh, LSW first (assumed unit)
    energy_export: int = 0x051C
    signature_type: int = 0x24FF
    public_key_der: int = 0x2600  # 62 words for P-384
    public_key_regs: int = 62
    serial: int = 0x5000  # 7 words, 14 chars
    device_state: int = 0x5012
    tariff_text: int = 0x6900  # TT, CHAR[252]
    ocmf_is: int = 0x7000  # IS, IL, IF[4], IT, ID[20 words], CT, CI[20 words]: one block
    timezone: int = 0x7031  # minutes; UTC INT64 at 0x7032..0x7035 (the doc's "0x7035" is a typo: 328722 = 0x7031)
    modality: int = 0x7036  # 0 charging
    command: int = 0x7040  # 'B' start, 'E' end, 'A' abort
    ocmf_state: int = 0x7100  # 0 NOT_READY, 1 RUNNING, 2 READY, 3 CORRUPTED; write 0 to acknowledge
    ocmf_size: int = 0x7101  # words
    ocmf_file: int = 0x7110  # at most 2031 words
    ocmf_file_regs: int = 2031


STATE_NOT_READY, STATE_RUNNING, STATE_READY, STATE_CORRUPTED = 0, 1, 2, 3
STATE_NAMES = {0: "NOT_READY", 1: "RUNNING", 2: "READY", 3: "CORRUPTED"}
COMMAND_BEGIN, COMMAND_END = ord("B"), ord("E")


def _describe_state(state: tuple[int, int]) -> str:
    return f"OCMF state {STATE_NAMES.get(state[0], state[0])}"


def lsw_first(regs: list[int]) -> int:
    value = 0
    for i, word in enumerate(regs):
        value |= word << (16 * i)
    if value >> (16 * len(regs) - 1):
        value -= 1 << (16 * len(regs))
    return value


def to_lsw_first(value: int, words: int) -> list[int]:
    value &= (1 << (16 * words)) - 1
    return [(value >> (16 * i)) & 0xFFFF for i in range(words)]


def char_regs(text: str, words: int) -> list[int]:
    return str_to_regs(text[: 2 * words], words)


class Em580Meter(ModbusMeter):
    model = "carlo-gavazzi-em580"

    def __init__(
        self,
        device: ModbusDevice,
        registers: Em580Registers | None = None,
        *,
        signing_timeout: float = 40.0,
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(device)
        self.regs = registers or Em580Registers()
        self.signing_timeout = signing_timeout  # EVerest: 10 polls of 100 ms; meters may take up to 30 s
        self.poll_interval = poll_interval
        self._public_key: str | None = None

    async def identity(self) -> MeterIdentity:
        block = await self.device.read_input(self.regs.serial, 8)
        return MeterIdentity(
            model="EM580", vendor="Carlo Gavazzi", serial_number=regs_to_str(block[:7]), firmware_version=""
        )

    async def public_key(self) -> str:
        if self._public_key is None:
            raw = regs_to_bytes(await self.device.read_input(self.regs.public_key_der, self.regs.public_key_regs))
            if len(raw) < 2 or raw[0] != 0x30 or raw[1] >= 0x80 or raw[1] + 2 > len(raw):
                raise MeterRefused(f"meter's public key at register {self.regs.public_key_der:#06x} is not DER")
            self._public_key = raw[: raw[1] + 2].hex().upper()
        return self._public_key

    async def live_values(self) -> LiveValues:
        r = self.regs
        block = await self.device.read_input(r.voltage, r.power + 2 - r.voltage)
        energy = await self.device.read_input(r.energy_import, r.energy_export + 4 - r.energy_import)
        at_export = r.energy_export - r.energy_import

        def int32(at: int) -> int:
            return lsw_first(block[at - r.voltage : at - r.voltage + 2])

        return LiveValues(
            energy_import_wh=lsw_first(energy[0:4]),
            energy_export_wh=lsw_first(energy[at_export : at_export + 4]),
            power_w=int32(r.power) / 10,
            voltage_v=tuple(int32(r.voltage + 2 * i) / 10 for i in range(3)),
            current_a=tuple(int32(r.current + 2 * i) / 1000 for i in range(3)),
        )

    async def _state(self) -> tuple[int, int]:
        state, size = await self.device.read_input(self.regs.ocmf_state, 2)
        return state, size

    async def transaction_running(self) -> bool:
        return (await self._state())[0] == STATE_RUNNING

    async def _ended(self) -> bool:
        return (await self._state())[0] != STATE_RUNNING

    async def start_transaction(self, request: MeterTransactionRequest) -> MeterTransactionStarted:
        r = self.regs
        state, _ = await self._state()
        if state == STATE_RUNNING:
            raise MeterRefused("meter reports a running transaction: an earlier transaction must be ended first")
        if state in (STATE_READY, STATE_CORRUPTED):
            # A record nobody collected ("spurious transaction", EVerest): the daemon's store decides what it was;
            # here it is acknowledged so that the meter accepts a new transaction.
            log.warning("meter holds an uncollected record; acknowledging it", state=STATE_NAMES[state])
            await self.device.write_registers(r.ocmf_state, [0])
        it = request.identification_type if request.identification_type in IDENTIFICATION_TYPES else "UNDEFINED"
        block = [
            *(1, 0, 0, 0, 0, 0, IDENTIFICATION_TYPES.index(it)),  # IS, IL, IF[4], IT
            *char_regs(request.id_tag, 20),
            1,  # CT: 1 = charge point id in CI (assumed code)
            *char_regs(f"{request.charge_point_id} {request.connector_id}", 20),
        ]
        await self.device.write_registers(r.ocmf_is, block)
        await self.device.write_registers(r.tariff_text, [*str_to_regs(f"=<{request.tx_ref}>"), 0])
        now = int(time.time())
        await self.device.write_registers(r.timezone, [0, *to_lsw_first(now, 4), 0])  # tz, UTC, modality 0 charging
        await self.command(r.command, COMMAND_BEGIN, self.transaction_running, fc16=True)
        await self.poll_until(
            self._state,
            lambda st: st[0] == STATE_RUNNING,
            timeout=3.0,
            what="start the transaction",
            describe=_describe_state,
        )
        live = await self.live_values()
        log.info("meter transaction started", begin_wh=live.energy_import_wh)
        return MeterTransactionStarted(live.energy_import_wh)

    async def stop_transaction(self, tx_ref: str) -> MeterTransactionEnded:
        r = self.regs
        state, _ = await self._state()
        if state == STATE_RUNNING:
            await self.command(r.command, COMMAND_END, self._ended, fc16=True)
        elif state not in (STATE_READY,):
            raise MeterRefused(f"meter has no transaction to end (OCMF state {STATE_NAMES.get(state, state)})")
        _, size = await self.poll_until(
            self._state,
            lambda st: st[0] == STATE_READY,
            timeout=self.signing_timeout,
            what="sign the transaction",
            failure=lambda st: "meter reports its OCMF file CORRUPTED" if st[0] == STATE_CORRUPTED else None,
            describe=_describe_state,
        )
        if not 0 < size <= r.ocmf_file_regs:
            raise MeterRefused(f"meter reports an OCMF file of {size} words")
        raw = regs_to_bytes(await self.device.read_input(r.ocmf_file, size)).split(b"\x00", 1)[0]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MeterRefused(f"OCMF file is not text: {exc}") from None
        record = examine_record(text, await self.public_key(), context="Transaction.End")
        if not record.verified:
            log.error("meter record failed its check", problems=list(record.problems))
        stop_wh = end_wh(text)
        return MeterTransactionEnded(meter_stop_wh=stop_wh if stop_wh is not None else 0, records=(record,))

    async def release_record(self, tx_ref: str) -> None:
        if (await self._state())[0] == STATE_READY:
            await self.device.write_registers(self.regs.ocmf_state, [0])
