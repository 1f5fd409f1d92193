"""The Modbus RTU link to the meter: one request at a time, every answer checked, timeouts from the wire.

pymodbus matches an answer to its request by device id only, so a late answer would be taken as the answer to the next
request (docs/modbus-testing.md pitfall 2). This link therefore checks the function code, address and register count of
every answer, and after any timeout it stays quiet for the meter's worst-case latency plus one frame, so that a late
answer dies on the bus instead of in the next request. Timeouts are derived from the baud rate and the frame sizes.
It reports link up/down through a callback and never raises anything but `MeterError` subclasses to its users.
"""

from __future__ import annotations

import asyncio
import os
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse

from station.meter.interface import MeterLinkError, MeterRefused


class PortUnavailable(MeterLinkError):
    """The serial port (or the RTU-over-TCP gateway) cannot be opened at all: no wiring or Modbus advice fits."""


log = structlog.get_logger("station.meter.link")

MAX_READ_REGISTERS = 125  # Modbus application protocol limit for FC03/FC04
MAX_WRITE_REGISTERS = 123  # ... and for FC16
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
BUSY_CODES = {5, 6}


@dataclass(frozen=True)
class SerialSettings:
    port: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8
    device_id: int = 1
    transport: Literal["rtu", "tcp"] = "rtu"  # tcp: RTU frames over a TCP socket ("host:port" in `port`)
    meter_latency: float = 0.3  # worst-case time the meter takes to answer, beyond the wire time
    retries: int = 2
    busy_retry_delay: float = 0.1

    @property
    def bits_per_byte(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def byte_time(self) -> float:
        return self.bits_per_byte / self.baudrate

    def wire_time(self, n_bytes: int) -> float:
        return n_bytes * self.byte_time

    def timeout_for(self, request_bytes: int, response_bytes: int) -> float:
        # request out, 3.5 character silence, meter thinks, response back, plus scheduling slack
        return self.wire_time(request_bytes + response_bytes + 4) + self.meter_latency + 0.05

    @property
    def quiet_after_timeout(self) -> float:
        # The longest a late answer can still be on its way: the meter's latency plus the largest frame (256 bytes).
        return self.meter_latency + self.wire_time(256) + 0.02


def read_frame_sizes(count: int) -> tuple[int, int]:
    """(request, response) RTU frame bytes for FC03/FC04 of `count` registers."""
    return 8, 5 + 2 * count


def write_frame_sizes(count: int) -> tuple[int, int]:
    """(request, response) RTU frame bytes for FC16 of `count` registers."""
    return 9 + 2 * count, 8


class ModbusLink:
    """A checked, serialised Modbus client for one meter."""

    def __init__(
        self,
        settings: SerialSettings,
        on_link_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_link_change = on_link_change
        self._lock = asyncio.Lock()
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self.up: bool | None = None
        self.last_error = ""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0
        self.failures = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        s = self.settings
        if s.transport == "tcp":
            host, _, port = s.port.rpartition(":")
            self._client = AsyncModbusTcpClient(
                host or "127.0.0.1",
                port=int(port),
                framer=FramerType.RTU,
                timeout=1,
                retries=0,
                trace_packet=self._count_bytes,
            )
        else:
            self._client = AsyncModbusSerialClient(
                s.port,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                parity=s.parity,
                stopbits=s.stopbits,
                bytesize=s.bytesize,
                timeout=1,
                retries=0,
                reconnect_delay=0.5,
                reconnect_delay_max=5.0,
                trace_packet=self._count_bytes,
            )
        await self._connect()

    async def _connect(self) -> bool:
        assert self._client is not None
        detail = ""
        try:
            ok = bool(await self._client.connect())
        except (OSError, termios.error) as exc:
            # termios.error is not an OSError: a pty refuses parity E/O (modbus-testing.md pitfall 1).
            ok = False
            detail = str(exc)
        if not ok:
            # Set afresh on every attempt, never built on the previous text: one line, the cause first.
            self.last_error = self._cannot_open(detail)
            self._mark(False, self.last_error)
        return ok

    def _cannot_open(self, detail: str) -> str:
        port = self.settings.port
        if self.settings.transport == "tcp":
            why = f": {detail}" if detail else ""
            return f"cannot connect to the meter's RTU gateway at {port}{why}; check the address and that it is on"
        if not os.path.exists(port):
            return (
                f"cannot open serial port {port}: no such device; "
                "check that the adapter is plugged in and that [meter] port names it"
            )
        if not os.access(port, os.R_OK | os.W_OK):
            return (
                f"cannot open serial port {port}: permission denied; "
                "the service user needs the device's group (usually dialout)"
            )
        return f"cannot open serial port {port}: {detail or 'it refused to open'}; is another program using it?"

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _count_bytes(self, sending: bool, packet: bytes) -> bytes:
        # pymodbus traces a received frame once per chunk with the whole buffer so far, so only frames sent are
        # counted here; a received frame is counted once, by its size, when it has been accepted (_request).
        if sending:
            self.bytes_sent += len(packet)
        return packet

    def _mark(self, up: bool, reason: str) -> None:
        if self.up is up:
            return
        self.up = up
        log.info("meter link up" if up else "meter link down", reason=reason, port=self.settings.port)
        if self.on_link_change is not None:
            self.on_link_change(up, reason)

    # ------------------------------------------------------------------ requests

    async def read_holding(self, address: int, count: int) -> list[int]:
        return await self._read(3, address, count)

    async def read_input(self, address: int, count: int) -> list[int]:
        return await self._read(4, address, count)

    async def _read(self, fc: int, address: int, count: int) -> list[int]:
        """Read any number of registers in the largest blocks the protocol allows."""
        out: list[int] = []
        pos = address
        while pos < address + count:
            n = min(MAX_READ_REGISTERS, address + count - pos)
            out.extend(await self._request(fc, pos, n, None))
            pos += n
        return out

    async def write_registers(self, address: int, values: Sequence[int]) -> None:
        pos = 0
        while pos < len(values):
            chunk = list(values[pos : pos + MAX_WRITE_REGISTERS])
            await self._request(16, address + pos, len(chunk), chunk)
            pos += len(chunk)

    async def write_register(self, address: int, value: int) -> None:
        await self._request(6, address, 1, [value])

    async def _request(self, fc: int, address: int, count: int, values: list[int] | None) -> list[int]:
        s = self.settings
        if fc in (3, 4):
            req, resp = read_frame_sizes(count)
        elif fc == 16:
            req, resp = write_frame_sizes(count)
        else:
            req, resp = 8, 8
        timeout = s.timeout_for(req, resp)
        where = f"FC{fc:02d} register {address} ({address:#06x}) x{count}"
        async with self._lock:
            attempt = 0
            while True:
                attempt += 1
                self.requests += 1
                try:
                    answer = await self._once(fc, address, count, values, timeout)
                    self.bytes_received += resp
                    return answer
                except _Busy as busy:
                    self.bytes_received += 5  # the exception frame
                    reason = f"meter busy ({busy}) at {where}"
                    if attempt > s.retries + 3:
                        raise MeterRefused(reason) from None
                    await asyncio.sleep(s.busy_retry_delay * attempt)
                except _CannotOpen as exc:
                    # Nothing was sent, so no late answer can come: no quiet time, no retry of a port that is absent.
                    self.failures += 1
                    raise PortUnavailable(str(exc)) from None
                except _NoAnswer as exc:
                    self.failures += 1
                    reason = f"no valid answer to {where}: {exc}"
                    self.last_error = reason
                    # Let a late answer arrive and be dropped while no request is pending.
                    await asyncio.sleep(s.quiet_after_timeout)
                    if attempt > s.retries:
                        self._mark(False, reason)
                        raise MeterLinkError(
                            f"{reason}; check wiring, serial settings ({s.baudrate} {s.bytesize}{s.parity}"
                            f"{s.stopbits}), device id {s.device_id}"
                        ) from None

    async def _once(self, fc: int, address: int, count: int, values: list[int] | None, timeout: float) -> list[int]:
        s = self.settings
        client = self._client
        if client is None:
            raise _CannotOpen(f"the link to {s.port} is closed")
        if not client.connected and not await self._connect():
            raise _CannotOpen(self.last_error)
        client.ctx.comm_params.timeout_connect = timeout
        try:
            if fc == 3:
                rr: Any = await client.read_holding_registers(address, count=count, device_id=s.device_id)
            elif fc == 4:
                rr = await client.read_input_registers(address, count=count, device_id=s.device_id)
            elif fc == 16:
                assert values is not None
                rr = await client.write_registers(address, values, device_id=s.device_id)
            else:
                assert values is not None
                rr = await client.write_register(address, values[0], device_id=s.device_id)
        except ModbusException as exc:
            raise _NoAnswer(str(exc).split("\n")[0][:200]) from None
        return self._check(rr, fc, address, count)

    def _check(self, rr: Any, fc: int, address: int, count: int) -> list[int]:
        """Refuse any answer that is not the answer to this request (a shifted late answer, a foreign frame)."""
        if isinstance(rr, ExceptionResponse) or (hasattr(rr, "isError") and rr.isError()):
            code = int(getattr(rr, "exception_code", 0))
            if (getattr(rr, "function_code", 0) & 0x7F) != fc:
                raise _NoAnswer(f"exception answer for function {getattr(rr, 'function_code', '?')}, asked {fc}")
            if code in BUSY_CODES:
                raise _Busy(EXCEPTION_NAMES.get(code, str(code)))
            self._mark(True, "meter answers")
            raise MeterRefused(
                f"meter answered exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) to FC{fc:02d} "
                f"register {address} ({address:#06x}) x{count}; check the register map in the config"
            )
        got_fc = int(getattr(rr, "function_code", -1))
        if got_fc != fc:
            raise _NoAnswer(f"answer has function code {got_fc}, expected {fc} (shifted answer dropped)")
        if fc in (3, 4):
            regs = list(rr.registers)
            if len(regs) != count:
                raise _NoAnswer(f"answer has {len(regs)} registers, expected {count} (shifted answer dropped)")
            self._mark(True, "meter answers")
            return regs
        got_address = int(getattr(rr, "address", -1))
        if got_address != address:
            raise _NoAnswer(f"write echo names register {got_address}, expected {address} (shifted answer dropped)")
        if fc == 16 and int(getattr(rr, "count", count)) != count:
            raise _NoAnswer(f"write echo names {rr.count} registers, expected {count}")
        self._mark(True, "meter answers")
        return []


class _NoAnswer(Exception):
    pass


class _CannotOpen(Exception):
    pass


class _Busy(Exception):
    pass


# ---------------------------------------------------------------------- register codecs


def regs_to_str(regs: Sequence[int], length: int | None = None) -> str:
    """ASCII, two characters per register, high byte first; NUL padding removed."""
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    if length is not None:
        raw = raw[:length]
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")  # garbage shows as U+FFFD, never raises


def str_to_regs(text: str, n_regs: int | None = None) -> list[int]:
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if n_regs is not None:
        if len(regs) > n_regs:
            raise ValueError(f"text of {len(raw)} bytes does not fit {n_regs} registers")
        regs += [0] * (n_regs - len(regs))
    return regs


def regs_to_bytes(regs: Sequence[int], length: int | None = None) -> bytes:
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    return raw if length is None else raw[:length]


def bytes_to_regs(raw: bytes) -> list[int]:
    if len(raw) % 2:
        raw += b"\x00"
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def u32(regs: Sequence[int]) -> int:
    return (regs[0] << 16) | regs[1]


def to_u32(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def s32(regs: Sequence[int]) -> int:
    v = u32(regs)
    return v - (1 << 32) if v & 0x80000000 else v


def to_s32(value: int) -> list[int]:
    return to_u32(value & 0xFFFFFFFF)
