"""Driver for the Iskra WM3M4 / WM3M4C (Eichrecht) over Modbus RTU.

Register map and procedure as EVerest's `RsIskraMeter` implements them from Iskra's manual "K_WM3M4_EN_22433922
Users_manual Ver_1.14" (see ../shared/docs/meters-and-ocmf.md §2.1 and docs/meters.md). Input registers (FC04) carry
identity and measurements; holding registers (FC03/06/16) from 7000 the transaction procedure. One OCMF record holds
the begin and end readings. The meter's DER signature has non-minimal INTEGERs (a firmware quirk): it is normalised
before forwarding, which changes only the encoding, never r and s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from station.bus import ModbusDevice
from station.bus.codec import regs_to_bytes, regs_to_str, str_to_regs, u32
from station.meter.driver import ModbusMeter, RegisterTable, scaled
from station.meter.interface import (
    LiveValues,
    MeterError,
    MeterIdentity,
    MeterRefused,
    MeterTransactionEnded,
    MeterTransactionRequest,
    MeterTransactionStarted,
)
from station.meter.ocmf import OcmfError, normalize_der_signature
from station.meter.records import end_wh, examine_record

log = structlog.get_logger("station.meter.iskra")

P256_SPKI_PREFIX = "3059301306072A8648CE3D020106082A8648CE3D03010703420004"


@dataclass(frozen=True)
class IskraRegisters(RegisterTable):
    """PDU addresses from the public map (meters-and-ocmf.md §2.1); overridable from `[meter.registers]`."""

    VENDOR = "Iskra"

    model: int = 1  # IR 1..8, 16 ASCII
    serial: int = 9  # IR 9..12, 8 ASCII
    frequency: int = 105  # IR, T5
    voltage: int = 107  # IR 107, 109, 111, T5
    current: int = 126  # IR 126, 128, 130, T6
    power: int = 140  # IR 140 total, T6
    energy_exponent: int = 414  # IR 414 import, 415 export (int16)
    energy_import: int = 418  # IR 418-419 import, 420-421 export (u32 x 10^exp Wh)
    tx_state: int = 7000  # HR: 0 idle, 1 active, 2 active after power failure, 3 active after reset
    command: int = 7051  # HR W: 0x4200 start, 0x7200 stop
    signature_status: int = 7052  # HR: 15 SignatureOK; 0/1/2 keep polling; others are errors
    timezone: int = 7053  # HR W: minutes; 7054/7055 UTC unix time hi/lo
    metadata_length: int = 7056
    payload_length: int = 7057
    signature_length: int = 7058
    signature_algorithm: int = 7059
    time_sync: int = 7071  # HR: write 2 (synchronised); 0 after a power loss
    metadata: int = 7100  # HR, 2 ASCII per register
    metadata_regs: int = 512
    payload: int = 7612
    payload_regs: int = 512
    public_key: int = 8124  # 32 regs: X||Y
    signature: int = 8188
    signature_regs: int = 64


COMMAND_START = 0x4200
COMMAND_STOP = 0x7200
STATE_IDLE = 0
ACTIVE_STATES = {1: "active", 2: "active after power failure", 3: "active after reset"}
SIGNATURE_OK = 15
SIGNATURE_PENDING = {0, 1, 2}
SIGNATURE_ERRORS = {
    128: "InvalidDateTime",
    129: "CheckSumError",
    130: "InvalidCommand",
    131: "InvalidState",
    132: "InvalidMeasurement",
    133: "TestModeError",
    243: "VerifyStateError",
    244: "SignatureStateError",
    245: "KeyPairGenerationError",
    246: "SHAFailed",
    247: "InitFailed",
    248: "DataNotLocked",
    249: "ConfigNotLocked",
    250: "VerifyError",
    251: "PublicKeyError",
    252: "InvalidMessageFormat",
    253: "InvalidMessageSize",
    254: "SignatureError",
    255: "UndefinedError",
}


def t5(regs: list[int]) -> float:
    """Iskra T5: high byte a signed decimal exponent, then a 24-bit unsigned mantissa."""
    exponent = (regs[0] >> 8) - 256 if regs[0] >> 8 >= 128 else regs[0] >> 8
    return ((regs[0] & 0xFF) << 16 | regs[1]) * 10.0**exponent


def t6(regs: list[int]) -> float:
    """Iskra T6: high byte a signed decimal exponent, then a 24-bit signed mantissa."""
    exponent = (regs[0] >> 8) - 256 if regs[0] >> 8 >= 128 else regs[0] >> 8
    mantissa = (regs[0] & 0xFF) << 16 | regs[1]
    if mantissa & 0x800000:
        mantissa -= 1 << 24
    return mantissa * 10.0**exponent


def _int16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


class IskraMeter(ModbusMeter):
    model = "iskra-wm3m4c"

    def __init__(
        self,
        device: ModbusDevice,
        registers: IskraRegisters | None = None,
        *,
        start_timeout: float = 1.0,
        signing_timeout: float = 40.0,
        poll_interval: float = 0.05,
    ) -> None:
        super().__init__(device)
        self.regs = registers or IskraRegisters()
        self.start_timeout = start_timeout  # EVerest: 1 s until Active
        self.signing_timeout = signing_timeout  # EVerest waits 15 s; meters may take "up to 30 s" (app note §2.3.1)
        self.poll_interval = poll_interval
        self._public_key: str | None = None

    # ------------------------------------------------------------------ reads

    async def identity(self) -> MeterIdentity:
        block = await self.device.read_input(self.regs.model, 12)
        # The public map names no firmware register; the version is on the meter's display and nameplate.
        return MeterIdentity(
            model=regs_to_str(block[0:8]), vendor="Iskra", serial_number=regs_to_str(block[8:12]), firmware_version=""
        )

    async def public_key(self) -> str:
        if self._public_key is None:
            raw = regs_to_bytes(await self.device.read_holding(self.regs.public_key, 32), 64)
            if raw == bytes(64):
                raise MeterRefused(f"meter reports no public key at register {self.regs.public_key}")
            self._public_key = P256_SPKI_PREFIX + raw.hex().upper()
        return self._public_key

    async def live_values(self) -> LiveValues:
        r = self.regs
        u = await self.device.read_input(r.voltage, 6)
        measured = await self.device.read_input(r.current, r.power + 2 - r.current)
        energy = await self.device.read_input(r.energy_exponent, r.energy_import + 4 - r.energy_exponent)
        exp_import, exp_export = _int16(energy[0]), _int16(energy[1])
        at = r.energy_import - r.energy_exponent
        return LiveValues(
            energy_import_wh=round(scaled(u32(energy[at : at + 2]), exp_import, "energy import")),
            energy_export_wh=round(scaled(u32(energy[at + 2 : at + 4]), exp_export, "energy export")),
            power_w=t6(measured[r.power - r.current : r.power - r.current + 2]),
            voltage_v=tuple(round(t5(u[i : i + 2]), 2) for i in (0, 2, 4)),
            current_a=tuple(round(t6(measured[i : i + 2]), 3) for i in (0, 2, 4)),
        )

    async def _state(self) -> int:
        return (await self.device.read_holding(self.regs.tx_state, 1))[0]

    async def transaction_running(self) -> bool:
        return await self._state() in ACTIVE_STATES

    async def _idle(self) -> bool:
        return await self._state() == STATE_IDLE

    # ------------------------------------------------------------------ transactions

    async def _set_time(self) -> None:
        now = int(time.time())
        await self.device.write_registers(self.regs.timezone, [0, now >> 16, now & 0xFFFF])
        await self.device.write_register(self.regs.time_sync, 2)

    async def start_transaction(self, request: MeterTransactionRequest) -> MeterTransactionStarted:
        state = await self._state()
        if state in ACTIVE_STATES:
            raise MeterRefused(f"meter is {ACTIVE_STATES[state]}: an earlier transaction must be ended first")
        await self._set_time()
        await self.device.write_register(self.regs.signature_algorithm, 0)
        meta = json.dumps(
            {
                "FV": "1.0",
                "GI": "station",
                "IS": True,
                "IF": list(request.identification_flags),
                "IT": request.identification_type,
                "ID": request.id_tag,
                "CT": "CBIDC",
                "CI": f"{request.charge_point_id} {request.connector_id}",
            },
            separators=(",", ":"),
        ).replace("|", " ")
        regs = str_to_regs(meta)
        if len(regs) > self.regs.metadata_regs:
            raise MeterError(f"transaction metadata of {len(meta)} bytes does not fit the meter's metadata block")
        await self.device.write_registers(self.regs.metadata, regs)
        await self.device.write_register(self.regs.metadata_length, len(meta.encode()))
        await self.command(self.regs.command, COMMAND_START, self.transaction_running)
        await self._poll_state(lambda s: s in ACTIVE_STATES, self.start_timeout, "start the transaction")
        await self._poll_signature("sign the transaction's begin")
        live = await self.live_values()
        log.info("meter transaction started", begin_wh=live.energy_import_wh)
        return MeterTransactionStarted(live.energy_import_wh)

    async def stop_transaction(self, tx_ref: str) -> MeterTransactionEnded:
        state = await self._state()
        if state == STATE_IDLE:
            payload_length = (await self.device.read_holding(self.regs.payload_length, 1))[0]
            if not payload_length:
                raise MeterRefused("meter has no transaction to end (idle, no signed record)")
            # Ended already (a stop interrupted after the command): collect the record the meter holds.
        else:
            if state == 2:
                # Active after a power failure: the clock was lost; set it and rewrite the metadata first (manual §6.6).
                await self._set_time()
            await self.command(self.regs.command, COMMAND_STOP, self._idle)
            await self._poll_state(lambda s: s == STATE_IDLE, max(self.start_timeout, 1.0), "end the transaction")
        await self._poll_signature("sign the transaction")
        r = self.regs
        lengths = await self.device.read_holding(r.payload_length, 2)
        payload_length, signature_length = lengths
        if not 0 < payload_length <= 2 * r.payload_regs or not 0 < signature_length <= 2 * r.signature_regs:
            raise MeterRefused(
                f"meter reports a record of {payload_length} bytes and a {signature_length}-byte signature"
            )
        payload = regs_to_bytes(await self.device.read_holding(r.payload, (payload_length + 1) // 2), payload_length)
        raw_sig = regs_to_bytes(
            await self.device.read_holding(r.signature, (signature_length + 1) // 2), signature_length
        )
        try:
            signature = normalize_der_signature(raw_sig)
        except (OcmfError, ValueError) as exc:
            raise MeterRefused(f"meter's signature is not DER: {exc}") from None
        try:
            text = f'OCMF|{payload.decode("utf-8")}|{{"SD":"{signature.hex().upper()}"}}'
        except UnicodeDecodeError as exc:
            raise MeterRefused(f"signed payload is not text: {exc}") from None
        record = examine_record(text, await self.public_key(), context="Transaction.End")
        if not record.verified:
            log.error("meter record failed its check", problems=list(record.problems))
        stop_wh = end_wh(text)
        return MeterTransactionEnded(meter_stop_wh=stop_wh if stop_wh is not None else 0, records=(record,))

    async def _poll_state(self, done: Callable[[int], bool], timeout: float, what: str) -> int:
        return await self.poll_until(
            self._state, done, timeout=timeout, what=what, describe=lambda state: f"transaction state {state}"
        )

    async def _signature_status(self) -> int:
        return (await self.device.read_holding(self.regs.signature_status, 1))[0]

    async def _poll_signature(self, what: str) -> None:
        def failure(status: int) -> str | None:
            if status in SIGNATURE_PENDING:
                return None
            name = SIGNATURE_ERRORS.get(status, f"unknown status {status}")
            return f"meter reports {name} while asked to {what} (register {self.regs.signature_status})"

        await self.poll_until(
            self._signature_status,
            lambda status: status == SIGNATURE_OK,
            timeout=self.signing_timeout,
            what=what,
            failure=failure,
            describe=lambda status: f"signature status {status}",
        )
