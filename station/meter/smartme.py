"""Driver for the smart-me meter (v2 / Pico) with meter transactions, over Modbus RTU.

PROVISIONAL REGISTER MAP. smart-me publishes no Modbus RTU register map for its transaction feature (only Modbus TCP
read registers, and those not as text). The addresses in `SmartMeRegisters` are OURS, chosen to follow the proven
Iskra/EM580 pattern (command register, status register, record length + record block, key block); they are not the
vendor's map. Every address can be overridden from the config file (`[meter.registers]`), so the day smart-me's OEM
documentation or a bus capture gives the real map, it is a config change. See docs/smartme-register-map.md.

The driver never acknowledges (frees) a signed record before the daemon has stored it: `release_record()` does that.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from station.bus import ModbusDevice
from station.bus.codec import regs_to_bytes, regs_to_str, s32, str_to_regs, u32
from station.core.model import SignedMeterRecord
from station.meter.driver import ModbusMeter, RegisterTable
from station.meter.interface import (
    LiveValues,
    MeterError,
    MeterIdentity,
    MeterRefused,
    MeterTransactionEnded,
    MeterTransactionRequest,
    MeterTransactionStarted,
)
from station.meter.records import end_wh, examine_record

log = structlog.get_logger("station.meter.smartme")


@dataclass(frozen=True)
class SmartMeRegisters(RegisterTable):
    """Holding-register addresses (Modbus PDU addresses, FC03 reads / FC06+FC16 writes). Provisional, ours."""

    VENDOR = "smart-me"

    model: int = 0x0000  # 8 regs, ASCII
    serial: int = 0x0008  # 8 regs, ASCII
    firmware: int = 0x0010  # 4 regs, ASCII
    energy_import: int = 0x0100  # u32, Wh (1-b:1.8.0)
    energy_export: int = 0x0102  # u32, Wh (1-b:2.8.0)
    power: int = 0x0104  # s32, W
    voltage: int = 0x0106  # 3 x u16, 0.1 V
    current: int = 0x0109  # 3 x u16, mA
    command: int = 0x0200  # u16 W: 1 start, 2 end, 3 acknowledge record
    status_block: int = 0x0201  # 8 regs read in one request, see StatusBlock
    metadata_length: int = 0x0206  # u16 W: bytes of metadata JSON
    metadata: int = 0x0210  # 128 regs W: JSON object merged into the OCMF payload (ID, IT, IF, CT, CI)
    metadata_regs: int = 128
    public_key_length: int = 0x0300  # u16, bytes
    public_key: int = 0x0301  # 64 regs, DER SubjectPublicKeyInfo
    public_key_regs: int = 64
    record: int = 0x0400  # up to 1024 regs, ASCII OCMF string, length in the status block
    record_regs: int = 1024
    fiscal_length: int = 0x0800  # u16, bytes of the latest fiscal signed reading (0: none yet)
    fiscal_record: int = 0x0801  # up to 512 regs, ASCII OCMF string, PG "F<n>", signed every 15 minutes
    fiscal_regs: int = 512


COMMAND_START = 1
COMMAND_END = 2
COMMAND_ACK = 3

STATUS_IDLE = 0
STATUS_RUNNING = 1
STATUS_SIGNING = 2
STATUS_SIGNED = 3
STATUS_ERROR_FLAG = 0x8000
STATUS_NAMES = {STATUS_IDLE: "idle", STATUS_RUNNING: "running", STATUS_SIGNING: "signing", STATUS_SIGNED: "signed"}
STATUS_BLOCK_REGS = 8


@dataclass(frozen=True)
class StatusBlock:
    """The 8 registers from `status_block`: everything the transaction procedure polls, in one request."""

    status: int  # +0
    transaction_number: int  # +1..+2, u32: the meter's T counter (OCMF PG "T<n>")
    digital_output: int  # +3: 1 while the meter enables the charge controller
    record_length: int  # +4: bytes of the signed record, 0 if none
    metadata_length: int  # +5
    begin_energy_wh: int  # +6..+7, u32: the meter's reading at the transaction's begin

    @classmethod
    def from_regs(cls, regs: list[int]) -> StatusBlock:
        return cls(regs[0], u32(regs[1:3]), regs[3], regs[4], regs[5], u32(regs[6:8]))

    @property
    def name(self) -> str:
        if self.status & STATUS_ERROR_FLAG:
            return f"error {self.status & 0x7FFF}"
        return STATUS_NAMES.get(self.status, f"unknown {self.status}")


def metadata_json(request: MeterTransactionRequest) -> str:
    """The OCMF identification fields the meter puts into the record ('|' would break the OCMF framing)."""
    return json.dumps(
        {
            "IS": True,
            "IT": request.identification_type,
            "IF": list(request.identification_flags),
            "ID": request.id_tag,
            "CT": "CBIDC",
            "CI": f"{request.charge_point_id} {request.connector_id}",
        },
        separators=(",", ":"),
    ).replace("|", " ")


class SmartMeMeter(ModbusMeter):
    model = "smartme"

    def __init__(
        self,
        device: ModbusDevice,
        registers: SmartMeRegisters | None = None,
        *,
        start_timeout: float = 3.0,
        signing_timeout: float = 40.0,
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(device)
        self.regs = registers or SmartMeRegisters()
        self.start_timeout = start_timeout
        self.signing_timeout = signing_timeout  # meters may take "up to 30 s" to sign (OCA app note §2.3.1)
        self.poll_interval = poll_interval
        self._public_key: str | None = None
        self._pagination: dict[str, str] = {}
        # Where, in seconds after the end command, the last signing was seen to complete: after the last poll that
        # still saw the meter signing, by the first that saw it signed (None: not seen yet).
        self._signing_window: tuple[float, float] | None = None

    # ------------------------------------------------------------------ reads

    async def identity(self) -> MeterIdentity:
        r = self.regs
        block = await self.device.read_holding(r.model, 20)
        return MeterIdentity(
            model=regs_to_str(block[0:8]),
            vendor="smart-me",
            serial_number=regs_to_str(block[r.serial - r.model : r.serial - r.model + 8]),
            firmware_version=regs_to_str(block[r.firmware - r.model : r.firmware - r.model + 4]),
        )

    async def public_key(self) -> str:
        if self._public_key is None:
            block = await self.device.read_holding(self.regs.public_key_length, 1 + self.regs.public_key_regs)
            length = block[0]
            if not 0 < length <= 2 * self.regs.public_key_regs:
                raise MeterRefused(f"meter reports a public key of {length} bytes at register {self.regs.public_key}")
            self._public_key = regs_to_bytes(block[1:], length).hex().upper()
        return self._public_key

    async def live_values(self) -> LiveValues:
        r = self.regs
        block = await self.device.read_holding(r.energy_import, 12)
        return LiveValues(
            energy_import_wh=u32(block[0:2]),
            energy_export_wh=u32(block[2:4]),
            power_w=float(s32(block[4:6])),
            voltage_v=tuple(v / 10 for v in block[6:9]),
            current_a=tuple(i / 1000 for i in block[9:12]),
        )

    async def status(self) -> StatusBlock:
        return StatusBlock.from_regs(await self.device.read_holding(self.regs.status_block, STATUS_BLOCK_REGS))

    async def transaction_running(self) -> bool:
        st = await self.status()
        return st.status in (STATUS_RUNNING, STATUS_SIGNING, STATUS_SIGNED)

    async def _ended(self) -> bool:
        return (await self.status()).status in (STATUS_SIGNING, STATUS_SIGNED)

    # ------------------------------------------------------------------ transactions

    async def start_transaction(self, request: MeterTransactionRequest) -> MeterTransactionStarted:
        st = await self.status()
        if st.status != STATUS_IDLE:
            raise MeterRefused(
                f"meter is not idle ({st.name}, transaction T{st.transaction_number}); "
                "an earlier transaction must be ended and its record collected first"
            )
        meta = metadata_json(request)
        meta_regs = str_to_regs(meta)
        if len(meta_regs) > self.regs.metadata_regs:
            raise MeterError(f"transaction metadata of {len(meta)} bytes does not fit the meter's metadata block")
        await self.device.write_registers(self.regs.metadata, meta_regs)
        await self.device.write_register(self.regs.metadata_length, len(meta.encode()))
        await self.command(self.regs.command, COMMAND_START, self.transaction_running)
        st = await self._poll(lambda s: s.status == STATUS_RUNNING, self.start_timeout, "start the transaction")
        if st.digital_output != 1:
            # The output enables the charge controller: charging without it would be unmetered, or not happen.
            raise MeterRefused(
                f"meter started transaction T{st.transaction_number} but its digital output is off; "
                "check the output wiring and the meter's output configuration"
            )
        self._pagination[request.tx_ref] = f"T{st.transaction_number}"
        log.info("meter transaction started", pagination=f"T{st.transaction_number}", begin_wh=st.begin_energy_wh)
        return MeterTransactionStarted(st.begin_energy_wh, f"T{st.transaction_number}")

    async def stop_transaction(self, tx_ref: str) -> MeterTransactionEnded:
        st = await self.status()
        if st.status == STATUS_RUNNING:
            await self.command(self.regs.command, COMMAND_END, self._ended)
            st = await self._await_signed(asyncio.get_running_loop().time())
        elif st.status in (STATUS_SIGNING, STATUS_SIGNED):  # ended before (a retry): when, is not known
            st = await self._poll(lambda s: s.status == STATUS_SIGNED, self.signing_timeout, "sign the transaction")
        else:
            raise MeterRefused(f"meter has no transaction to end ({st.name})")
        if st.digital_output != 0:
            raise MeterRefused(f"meter ended transaction T{st.transaction_number} but its digital output is still on")
        if not 0 < st.record_length <= 2 * self.regs.record_regs:
            raise MeterRefused(f"meter reports a signed record of {st.record_length} bytes")
        regs = await self.device.read_holding(self.regs.record, (st.record_length + 1) // 2)
        try:
            text = regs_to_bytes(regs, st.record_length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MeterRefused(f"signed record is not text: {exc}") from None
        expected = self._pagination.get(tx_ref) or f"T{st.transaction_number}"
        record = examine_record(text, await self.public_key(), context="Transaction.End", expected_pagination=expected)
        if not record.verified:
            log.error("meter record failed its check", problems=list(record.problems), pagination=expected)
        stop_wh = end_wh(text)
        return MeterTransactionEnded(meter_stop_wh=stop_wh if stop_wh is not None else 0, records=(record,))

    async def fiscal_reading(self) -> SignedMeterRecord | None:
        """smart-me signs its import and export registers every 15 minutes ("signed meter values"): the latest one.
        The meter may replace it while we read it (several requests): a text that does not verify is read again, and
        only after three tries handed over as it is, flagged."""
        r = self.regs
        record = None
        key = await self.public_key()
        for _ in range(3):
            length = (await self.device.read_holding(r.fiscal_length, 1))[0]
            if length == 0:
                return None
            if length > 2 * r.fiscal_regs:
                raise MeterRefused(f"meter reports a fiscal reading of {length} bytes")
            regs = await self.device.read_holding(r.fiscal_record, (length + 1) // 2)
            record = examine_record(
                regs_to_bytes(regs, length).decode("utf-8", errors="replace"), key, context="Sample.Clock"
            )
            if record.verified:
                return record
        assert record is not None
        log.error("meter fiscal reading failed its check", problems=list(record.problems))
        return record

    async def release_record(self, tx_ref: str) -> None:
        st = await self.status()
        if st.status == STATUS_SIGNED:
            await self.device.write_register(self.regs.command, COMMAND_ACK)
        self._pagination.pop(tx_ref, None)

    async def _await_signed(self, since: float) -> StatusBlock:
        """Poll until the record is signed, the end command given at `since` (loop time). A meter takes about the
        same time to sign each record: once a signing has been seen to complete, the next first poll comes when the
        last one still saw it signing, and polls follow back to back until the moment the last one was seen signed,
        then every `poll_interval` as before. So the record is read within one status poll of being signed, with
        one or two polls on the line instead of one every `poll_interval`. A meter that signed before the first
        poll halves the wait next time; one slower than before is polled as always and its time learnt."""
        loop = asyncio.get_running_loop()
        deadline = since + self.signing_timeout
        window = self._signing_window
        if window is not None and window[0] > 0:
            await asyncio.sleep(max(0.0, since + window[0] - loop.time()))
        still_signing: float | None = None  # when the last poll that saw it signing began
        while True:
            began = loop.time()
            st = await self.status()
            if st.status == STATUS_SIGNED:
                if still_signing is not None:
                    self._signing_window = (still_signing - since, began - since)
                elif window is not None:  # signed before the first poll: wait less next time
                    self._signing_window = (window[0] / 2, began - since)
                else:
                    self._signing_window = (0.0, began - since)
                return st
            if st.status & STATUS_ERROR_FLAG:
                raise MeterRefused(f"meter reports {st.name} while asked to sign the transaction")
            if loop.time() > deadline:
                raise MeterRefused(f"meter did not sign the transaction within {self.signing_timeout:.0f} s "
                                   f"(status {st.name})")  # fmt: skip
            still_signing = began
            back_to_back = window is not None and began - since < window[1]
            await asyncio.sleep(0 if back_to_back else self.poll_interval)

    async def _poll(self, done: Callable[[StatusBlock], bool], timeout: float, what: str) -> StatusBlock:
        return await self.poll_until(
            self.status,
            done,
            timeout=timeout,
            what=what,
            failure=lambda st: (
                f"meter reports {st.name} while asked to {what}" if st.status & STATUS_ERROR_FLAG else None
            ),
            describe=lambda st: f"status {st.name}",
        )
