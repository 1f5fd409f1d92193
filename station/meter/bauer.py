"""Driver for the BAUER BSM-WS36A (SunSpec Modbus RTU, Eichrecht) after chargeITmobility/bsm-python.

The meter knows snapshots, not transactions: a signed "Start" snapshot is the transaction's begin record (OCMF TX B),
a signed "End" snapshot its end record (TX E), each a separate OCMF record with a running PG (../shared/docs/
meters-and-ocmf.md §2.3, docs/meters.md). Both are forwarded, begin first (Transaction.Begin, Transaction.End). A
snapshot is made by writing 2 (UPDATING) to its status register and polling until 0 (VALID). The begin record stays in
the meter's registers, so a daemon restarted mid-transaction still finds it. The addresses are those of bsm-python's
doc/modbus/bsm-ws36a-modbus-registers.csv (SunSpec model 203 at 40090).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from station.bus import ModbusDevice
from station.bus.codec import regs_to_bytes, regs_to_str, str_to_regs, u32
from station.core.model import SignedMeterRecord
from station.meter.driver import ModbusMeter, RegisterTable, scaled
from station.meter.interface import (
    LiveValues,
    MeterIdentity,
    MeterRefused,
    MeterTransactionEnded,
    MeterTransactionRequest,
    MeterTransactionStarted,
)
from station.meter.ocmf import OcmfError, parse
from station.meter.records import begin_wh, end_wh, examine_record

log = structlog.get_logger("station.meter.bauer")


@dataclass(frozen=True)
class BauerRegisters(RegisterTable):
    VENDOR = "BAUER"

    serial: int = 40052  # common model SN, 16 regs (SunSpec common block, assumed offset)
    firmware: int = 40044  # common model Vr, 8 regs (assumed offset)
    current: int = 40092  # A, AphA..C, A_SF at +4 (model 203 at 40090, bsm-ws36a-modbus-registers.csv)
    voltage: int = 40098  # PhVphA..C, V_SF at 40105 (same CSV)
    power: int = 40108  # W, WphA..C, W_SF at 40112 (same CSV)
    energy_export: int = 40128  # TotWhExp acc32
    energy_import: int = 40136  # TotWhImp acc32
    energy_sf: int = 40144  # TotWh_SF
    response_counter: int = 40256  # RCnt: same value as PG
    epoch: int = 40260  # u32, TZO i16 at 40262: written together
    meta1: int = 40279  # 70 regs: becomes OCMF ID
    meta2: int = 40349  # 50 regs: X2 (we put the charge point id here)
    public_key_length: int = 40450  # BPK; PK (DER SPKI) follows
    public_key: int = 40451
    public_key_regs: int = 64
    start_status: int = 41286  # St of the Start snapshot
    end_status: int = 41540  # St of the End snapshot
    start_ocmf: int = 43295  # O of "OCMF Signed Start Snapshot" (model 64903 at 43291: Typ, St, then O), 496 regs
    end_ocmf: int = 43795  # O of "OCMF Signed End Snapshot" (at 43791)
    ocmf_regs: int = 496


SNAPSHOT_UPDATING = 2
SNAPSHOT_VALID = 0
SNAPSHOT_ERRORS = {1: "INVALID", 3: "FAILED_GENERAL", 4: "FAILED_NOT_ENABLED", 5: "FAILED_FEEDBACK"}


def _int16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def _pagination(text: str) -> int:
    try:
        pg = parse(text).pagination
    except OcmfError:
        return -1
    return int(pg[1:]) if pg[1:].isdigit() else -1


class BauerMeter(ModbusMeter):
    model = "bauer-bsm-ws36a"

    def __init__(
        self,
        device: ModbusDevice,
        registers: BauerRegisters | None = None,
        *,
        snapshot_timeout: float = 40.0,
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(device)
        self.regs = registers or BauerRegisters()
        self.snapshot_timeout = snapshot_timeout  # bsm-python: 15 s; meters may take up to 30 s to sign
        self.poll_interval = poll_interval
        self._public_key: str | None = None

    async def identity(self) -> MeterIdentity:
        r = self.regs
        block = await self.device.read_holding(r.firmware, r.serial + 16 - r.firmware)
        return MeterIdentity(
            model="BSM-WS36A",
            vendor="BAUER",
            serial_number=regs_to_str(block[r.serial - r.firmware :]),
            firmware_version=regs_to_str(block[:8]),
        )

    async def public_key(self) -> str:
        if self._public_key is None:
            block = await self.device.read_holding(self.regs.public_key_length, 1 + self.regs.public_key_regs)
            length = block[0]
            if not 0 < length <= 2 * self.regs.public_key_regs:
                raise MeterRefused(
                    f"meter reports a public key of {length} bytes (register {self.regs.public_key_length})"
                )
            self._public_key = regs_to_bytes(block[1:], length).hex().upper()
        return self._public_key

    async def live_values(self) -> LiveValues:
        r = self.regs
        m = await self.device.read_holding(r.current, r.power + 5 - r.current)
        e = await self.device.read_holding(r.energy_export, r.energy_sf + 1 - r.energy_export)

        def at(addr: int) -> int:
            return m[addr - r.current]

        a_sf, v_sf, w_sf = _int16(at(r.current + 4)), _int16(at(r.voltage + 7)), _int16(at(r.power + 4))
        e_sf = _int16(e[r.energy_sf - r.energy_export])
        imp = r.energy_import - r.energy_export
        return LiveValues(
            energy_import_wh=round(scaled(u32(e[imp : imp + 2]), e_sf, "energy")),
            energy_export_wh=round(scaled(u32(e[0:2]), e_sf, "energy")),
            power_w=scaled(_int16(at(r.power)), w_sf, "power"),
            voltage_v=tuple(round(scaled(at(r.voltage + i), v_sf, "voltage"), 2) for i in range(3)),
            current_a=tuple(round(scaled(_int16(at(r.current + 1 + i)), a_sf, "current"), 3) for i in range(3)),
        )

    async def _ocmf(self, address: int) -> str:
        raw = regs_to_bytes(await self.device.read_holding(address, self.regs.ocmf_regs)).split(b"\x00", 1)[0]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MeterRefused(f"snapshot OCMF at register {address} is not text: {exc}") from None

    async def transaction_running(self) -> bool:
        """Running when the latest Start snapshot is newer (higher PG) than the latest End snapshot."""
        begin = _pagination(await self._ocmf(self.regs.start_ocmf))
        end = _pagination(await self._ocmf(self.regs.end_ocmf))
        return begin > end

    async def _snapshot(self, status_register: int, what: str) -> None:
        async def status() -> int:
            return (await self.device.read_holding(status_register, 1))[0]

        def failure(value: int) -> str | None:
            if value == SNAPSHOT_UPDATING:
                return None
            name = SNAPSHOT_ERRORS.get(value, f"status {value}")
            return f"meter reports {name} for the {what} snapshot (register {status_register})"

        await self.device.write_register(status_register, SNAPSHOT_UPDATING)
        await self.poll_until(
            status,
            lambda value: value == SNAPSHOT_VALID,
            timeout=self.snapshot_timeout,
            what=f"sign the {what} snapshot",
            failure=failure,
        )

    async def start_transaction(self, request: MeterTransactionRequest) -> MeterTransactionStarted:
        r = self.regs
        if await self.transaction_running():
            raise MeterRefused("meter's latest Start snapshot has no End snapshot: end that transaction first")
        now = int(time.time())
        await self.device.write_registers(r.epoch, [now >> 16, now & 0xFFFF, 0])
        await self.device.write_registers(r.meta1, str_to_regs(request.id_tag[:140], 70))
        await self.device.write_registers(r.meta2, str_to_regs(f"{request.charge_point_id} {request.connector_id}", 50))
        await self._snapshot(r.start_status, "Start")
        text = await self._ocmf(r.start_ocmf)
        start_wh = begin_wh(text)
        if start_wh is None:
            raise MeterRefused("the Start snapshot carries no begin reading (TX B)")
        begin = examine_record(text, await self.public_key(), context="Transaction.Begin")
        if not begin.verified:
            log.error("meter begin record failed its check", problems=list(begin.problems))
        log.info("meter transaction started", begin_wh=start_wh, pagination=f"T{_pagination(text)}")
        return MeterTransactionStarted(start_wh, f"T{_pagination(text)}", begin_record=begin)

    async def stop_transaction(self, tx_ref: str) -> MeterTransactionEnded:
        r = self.regs
        if await self.transaction_running():
            await self._snapshot(r.end_status, "End")
        elif _pagination(await self._ocmf(r.end_ocmf)) < 0:
            raise MeterRefused("meter has no transaction to end (no Start snapshot)")
        key = await self.public_key()
        begin_text, end_text = await self._ocmf(r.start_ocmf), await self._ocmf(r.end_ocmf)
        records: list[SignedMeterRecord] = [
            examine_record(begin_text, key, context="Transaction.Begin"),
            examine_record(end_text, key, context="Transaction.End"),
        ]
        for record in records:
            if not record.verified:
                log.error("meter record failed its check", context=record.context, problems=list(record.problems))
        stop_wh = end_wh(end_text)
        return MeterTransactionEnded(meter_stop_wh=stop_wh if stop_wh is not None else 0, records=tuple(records))
