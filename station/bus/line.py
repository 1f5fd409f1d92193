"""One Modbus RTU line (RS-485, or RTU frames over a TCP gateway) and the one client that talks on it.

Several meters share one RS-485 line, each with its own device id; only one frame may be on the line at a time and
the pymodbus client of the line must be shared, since a serial port opens only once (pyserial locks it). So the
line's settings and its client live here, and each meter is a `ModbusDevice` on the bus (station/bus/device.py).

pymodbus matches an answer to its request by device id only (docs/modbus-testing.md pitfall 2): a late answer from
the same device is taken as the answer to its next request. The bus therefore checks the device id, function code,
address and register count of every answer, and after any timeout it keeps the line quiet for the silent device's
worst-case latency plus one frame, so that a late answer dies on the line instead of in the next request (of any
device: on RS-485 a late answer would also collide with a neighbour's request). Between frames it keeps the RTU
inter-frame silence of 3.5 characters, counted from an answer's last byte: a request that comes while the silence
still runs is built at once and its frame held until the silence ends, written then by a thread of the bus's own
(`_write_at_once`); a longer wait is slept in a thread too (the event loop's timers round up to whole milliseconds:
`_wake_after`). Timeouts are derived from the baud rate and the frame
sizes. Requests wait in a `BusScheduler` queue, transaction work before sampling (station/bus/scheduler.py).

Users only ever see `MeterError` subclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import serial
import structlog
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse
from pymodbus.transport.serialtransport import SerialTransport

from station.bus.scheduler import BusScheduler, Priority, Turn, TurnState, current_priority
from station.meter.interface import MeterLinkError, MeterRefused

if TYPE_CHECKING:
    from station.bus.device import ModbusDevice

log = structlog.get_logger("station.bus")


def _write_at_once(self: SerialTransport, data: bytes) -> None:
    """pymodbus's serial transport queues each frame for the loop's next turn (add_writer), so every callback that is
    ready in this one (a StatusNotification going out beside a meter start) runs before the frame reaches the port.
    Written at once, as asyncio's own transports do; what the port does not take waits for writability as before.

    A frame the bus let be built while the silence before it still runs (ModbusBus._dispatch sets `send_at`) is
    held until the silence ends and written then by the bus's timer thread (`_write_when_silent`): its way from the
    silence's end to the wire is then a thread's wake-up, not the loop's wake-up, the task's resumption and the
    frame's encoding."""
    send_at: float = self.__dict__.pop("send_at", 0.0)
    if send_at > time.monotonic() and not self.intern_write_buffer and not self.force_poll:
        _HOLD.submit(_write_when_silent, self, data, send_at, asyncio.get_running_loop())
        return
    self.intern_write_buffer.append(data)
    if not self.force_poll:
        self.intern_write_ready()


_HOLD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bus-hold")  # one frame at a time: one line each


def _write_when_silent(
    transport: SerialTransport, data: bytes, send_at: float, loop: asyncio.AbstractEventLoop
) -> None:
    """In the hold thread: sleep out the silence, then write. What the port does not take (it takes a frame at once:
    at most 256 bytes into a tty's kilobytes of buffer), or a port that failed, goes back to the loop's own path."""
    time.sleep(max(0.0, send_at - time.monotonic()))
    port = transport.sync_serial
    written = 0
    if port is not None:
        with contextlib.suppress(OSError, ValueError, serial.SerialException):
            written = port.write(data) or 0
    if written < len(data):
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(_write_rest, transport, data[written:])


def _write_rest(transport: SerialTransport, rest: bytes) -> None:
    if transport.sync_serial is not None:
        transport.intern_write_buffer.append(rest)
        transport.intern_write_ready()


SerialTransport.write = _write_at_once  # type: ignore[method-assign]  # process-wide, like ocpp's ASYNC_VALIDATION


class PortUnavailable(MeterLinkError):
    """The serial port (or the RTU-over-TCP gateway) cannot be opened at all: no wiring or Modbus advice fits."""


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
EXCEPTION_FRAME_BYTES = 5  # device id, function | 0x80, exception code, CRC
LARGEST_FRAME_BYTES = 256  # an RTU ADU is at most 256 bytes
FINE_TIMER_UNDER = 0.02  # silences shorter than this are timed to the tenth of a millisecond (ModbusBus._wake_after)
FAST_SILENCE = 0.00175  # Modbus over serial line V1.02 §2.5.1.1: a fixed t3.5 of 1.75 ms above 19200 baud
SCHEDULING_SLACK = 0.05  # event loop and pty latency on top of the wire and the device


@dataclass(frozen=True)
class LineSettings:
    """The serial line as the config describes it, and the times that follow from it."""

    port: str  # a serial device, or "host:port" of an RTU-over-TCP gateway
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8
    transport: Literal["rtu", "tcp"] = "rtu"  # tcp: RTU frames over a TCP socket
    retries: int = 2  # further attempts after a request got no valid answer
    busy_retry_delay: float = 0.1  # grows with each attempt; the line serves others meanwhile
    config_section: str = "[meter]"  # where the port is configured, for the advice in errors

    @property
    def bits_per_byte(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def byte_time(self) -> float:
        return self.bits_per_byte / self.baudrate

    def wire_time(self, n_bytes: int) -> float:
        return n_bytes * self.byte_time

    @property
    def inter_frame_silence(self) -> float:
        """RTU t3.5: the silence that ends a frame and must come before the next one."""
        return FAST_SILENCE if self.baudrate > 19200 else 3.5 * self.byte_time

    def timeout_for(self, request_bytes: int, response_bytes: int, latency: float) -> float:
        """How long to wait for an answer: the silence before the request (a frame held until it ends), the request
        out, the silence after it, the device thinks for up to `latency`, the answer back, plus scheduling slack."""
        silences = 2 * self.inter_frame_silence
        return self.wire_time(request_bytes + response_bytes) + silences + latency + SCHEDULING_SLACK

    def quiet_after_timeout(self, latency: float) -> float:
        """The longest a late answer can still be on its way: the device's latency plus the largest frame."""
        return latency + self.wire_time(LARGEST_FRAME_BYTES) + 0.02

    def line_format(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


def read_frame_sizes(count: int) -> tuple[int, int]:
    """(request, response) RTU frame bytes for FC03/FC04 of `count` registers."""
    return 8, 5 + 2 * count


def write_frame_sizes(count: int) -> tuple[int, int]:
    """(request, response) RTU frame bytes for FC16 of `count` registers."""
    return 9 + 2 * count, 8


def frame_sizes(fc: int, count: int) -> tuple[int, int]:
    if fc in (3, 4):
        return read_frame_sizes(count)
    if fc == 16:
        return write_frame_sizes(count)
    return 8, 8  # FC06


class _Silence:
    """A silence slept in the bus's thread (ModbusBus._wake_after); cancelled, its end does nothing."""

    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ModbusBus:
    """The one client of a line: one exchange at a time, in priority order, every answer checked.

    The port is open while anyone holds it: `open(holder)` / `close(holder)` add and remove a holder, each
    idempotent, and the port closes when the last holder leaves. A `ModbusDevice` holds the bus between its own
    `open()` and `close()`, so the drivers open and close their meters as they always did and a neighbour closing
    never takes the port from under another meter. An owner that wants the port open regardless (a diagnostics
    tool) calls `open()` without a holder, which holds it as the bus itself.
    """

    def __init__(self, settings: LineSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.scheduler = BusScheduler(clock)
        self._clock = clock
        self._last_received = 0.0  # when the last chunk of an answer came in: the silence after it counts from there
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._holders: set[object] = set()
        self._devices: dict[int, ModbusDevice] = {}
        self._waiters: dict[Turn, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | _Silence | None = None
        self._fine_timer: ThreadPoolExecutor | None = None  # for silences shorter than FINE_TIMER_UNDER (_dispatch)
        self._speaking: ModbusDevice | None = None  # whose frame is on the line, for the byte counters
        self.last_error = ""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0
        self.failures = 0

    @property
    def devices(self) -> tuple[ModbusDevice, ...]:
        return tuple(self._devices.values())

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def attach(self, device: ModbusDevice) -> None:
        """Called by `ModbusDevice.__init__`: two devices with one id on one line would answer together."""
        if device.unit_id in self._devices:
            raise ValueError(f"device id {device.unit_id} is already in use on the bus at {self.settings.port}")
        self._devices[device.unit_id] = device

    # ------------------------------------------------------------------ lifecycle

    async def open(self, holder: object | None = None) -> None:
        """Hold the bus open. Opening the port does not fail when it is absent: the devices are marked down and
        the first request says why."""
        holder = self if holder is None else holder
        self._holders.add(holder)
        if self._client is not None:
            if not self._client.connected and self.last_error:
                self._port_down()  # a device joining a bus whose port failed learns it at once
            return
        s = self.settings
        if s.transport == "tcp":
            host, _, port = s.port.rpartition(":")
            self._client = AsyncModbusTcpClient(
                host or "127.0.0.1",
                port=int(port),
                framer=FramerType.RTU,
                timeout=1,
                retries=0,
                trace_packet=self._on_packet,
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
                trace_packet=self._on_packet,
            )
        turn = await self._take_turn(Priority.TRANSACTION, "open")
        try:
            await self._connect()
        finally:
            self._finish(turn, 0.0)

    async def close(self, holder: object | None = None) -> None:
        """Let go of the bus; the last holder's close waits for the frame on the line, then closes the port."""
        holder = self if holder is None else holder
        if holder not in self._holders:
            return
        self._holders.discard(holder)
        if self._holders or self._client is None:
            return
        turn = await self._take_turn(Priority.TRANSACTION, "close")
        try:
            if not self._holders and self._client is not None:  # nobody opened it again meanwhile
                self._client.close()
                self._client = None
        finally:
            self._finish(turn, 0.0)
        if self._client is None and self._fine_timer is not None:
            self._fine_timer.shutdown(wait=False)  # a silence still being waited ends on its own
            self._fine_timer = None

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
            self._port_down()
        else:
            self.last_error = ""
        return ok

    def _port_down(self) -> None:
        """No device on this line can be reached: every device holding the bus is down, for the port's reason."""
        for device in self._devices.values():
            if device in self._holders:
                device.last_error = self.last_error
                device.mark(False, self.last_error)

    def _cannot_open(self, detail: str) -> str:
        port = self.settings.port
        if self.settings.transport == "tcp":
            why = f": {detail}" if detail else ""
            return f"cannot connect to the meter's RTU gateway at {port}{why}; check the address and that it is on"
        if not os.path.exists(port):
            return (
                f"cannot open serial port {port}: no such device; "
                f"check that the adapter is plugged in and that {self.settings.config_section} port names it"
            )
        if not os.access(port, os.R_OK | os.W_OK):
            return (
                f"cannot open serial port {port}: permission denied; "
                "the service user needs the device's group (usually dialout)"
            )
        return f"cannot open serial port {port}: {detail or 'it refused to open'}; is another program using it?"

    def _on_packet(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus's trace of every frame sent and every chunk received: counts what was sent, and stamps when the
        last chunk of an answer came (the silence after it counts from there). A received frame is traced once per
        chunk with the whole buffer so far, so it is counted once, by its size, when accepted (exchange)."""
        if sending:
            self.bytes_sent += len(packet)
            if self._speaking is not None:
                self._speaking.bytes_sent += len(packet)
        else:
            self._last_received = self._clock()
        return packet

    def _received(self, device: ModbusDevice, n_bytes: int) -> None:
        self.bytes_received += n_bytes
        device.bytes_received += n_bytes

    # ------------------------------------------------------------------ the queue

    async def _take_turn(self, priority: Priority, label: str, turn: Turn | None = None) -> Turn:
        """Queue (or queue again, for a retry) and wait until the line is ours."""
        if turn is None:
            turn = self.scheduler.submit(priority, label)
        else:
            self.scheduler.resubmit(turn)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[turn] = future
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            self._waiters.pop(turn, None)
            if turn.state is TurnState.ON_LINE:  # granted, but cancelled before it could send anything
                self.scheduler.finish(turn, 0.0)
            else:
                self.scheduler.cancel(turn)
            self._dispatch()
            raise
        return turn

    def _finish(self, turn: Turn, quiet: float) -> None:
        self.scheduler.finish(turn, quiet)
        self._dispatch()

    def _dispatch(self) -> None:
        """Give the line to the next turn once it is free and its silence is kept."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        s = self.scheduler
        while s.on_line is None and s.waiting:
            delay = s.wait()
            if delay > 0:
                transport = self._serial_transport() if delay < FINE_TIMER_UNDER else None
                if transport is None:
                    self._wake_after(delay)
                    return
                # The frame is built now and held until the silence ends (_write_at_once).
                transport.send_at = time.monotonic() + delay  # type: ignore[attr-defined]
                turn = s.grant(early=True)
            else:
                turn = s.grant()
            assert turn is not None
            future = self._waiters.pop(turn, None)
            if future is None or future.done():  # its requester was cancelled while it waited
                s.finish(turn, 0.0)
                continue
            future.set_result(None)
            return

    def _serial_transport(self) -> SerialTransport | None:
        """The open serial port's transport (None for a TCP gateway, or while the port is closed)."""
        client = self._client
        transport = getattr(client.ctx, "transport", None) if client is not None else None
        return transport if isinstance(transport, SerialTransport) and transport.sync_serial is not None else None

    def _wake_after(self, delay: float) -> None:
        """`_dispatch` again after `delay`. The event loop's timers wait in whole milliseconds (epoll), so a 1.8 ms
        silence (t3.5 at 19200 baud) would last 2 to 3 ms: up to half as long again, on every frame. A silence that
        short is slept in a thread of the bus's own (the kernel's timer), whose end wakes the loop at once; a longer
        wait (a busy device, the quiet after a timeout) uses the loop's timer."""
        loop = asyncio.get_running_loop()
        if delay >= FINE_TIMER_UNDER:
            self._timer = loop.call_later(delay, self._dispatch)
            return
        if self._fine_timer is None:
            self._fine_timer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bus-silence")
        timer = _Silence()
        self._timer = timer

        def sleep() -> None:
            time.sleep(delay)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(self._silence_over, timer)

        self._fine_timer.submit(sleep)

    def _silence_over(self, timer: _Silence) -> None:
        if timer is self._timer and not timer.cancelled:
            self._dispatch()

    # ------------------------------------------------------------------ requests

    async def exchange(
        self, device: ModbusDevice, fc: int, address: int, count: int, values: list[int] | None, *, once: bool = False
    ) -> list[int]:
        """One request frame of `device` and its checked answer, with the retries the settings allow (`once`: none
        after a lost answer, for a command a repeat could be refused or done twice; a busy device is asked again, it
        did nothing). Waits for its turn at the priority of the caller's context (`station.bus.urgent()`)."""
        s = self.settings
        req, resp = frame_sizes(fc, count)
        timeout = s.timeout_for(req, resp, device.latency)
        where = f"FC{fc:02d} register {address} ({address:#06x}) x{count}"
        turn: Turn | None = None
        attempt = 0
        while True:
            attempt += 1
            turn = await self._take_turn(current_priority(), f"device {device.unit_id} {where}", turn)
            quiet = s.inter_frame_silence
            pause = 0.0
            self._speaking = device
            self.requests += 1
            device.requests += 1
            try:
                answer = await self._once(device, fc, address, count, values, timeout)
                self._received(device, resp)
                # The silence runs from the answer's last byte, not from when it was decoded and checked.
                quiet = max(0.0, quiet - (self._clock() - self._last_received))
                return answer
            except _Busy as busy:
                self._received(device, EXCEPTION_FRAME_BYTES)
                reason = f"meter busy ({busy}) at {where}"
                if attempt > s.retries + 3:
                    raise MeterRefused(reason) from None
                pause = s.busy_retry_delay * attempt  # the device is busy, not the line: others may go meanwhile
            except MeterRefused:
                self._received(device, EXCEPTION_FRAME_BYTES)
                raise
            except _CannotOpen as exc:
                # Nothing was sent, so no late answer can come: no quiet time, no retry of a port that is absent.
                self._failed(device)
                quiet = 0.0
                raise PortUnavailable(str(exc)) from None
            except _NoAnswer as exc:
                self._failed(device)
                reason = f"no valid answer to {where}: {exc}"
                device.last_error = reason
                # Let a late answer arrive and be dropped while no request is pending.
                quiet = s.quiet_after_timeout(device.latency)
                if attempt > (0 if once else s.retries):
                    device.mark(False, reason)
                    raise MeterLinkError(
                        f"{reason}; check wiring, serial settings ({s.line_format()}), device id {device.unit_id}"
                    ) from None
            except BaseException:
                # Cancelled with the frame on the line: its answer may still come.
                quiet = s.quiet_after_timeout(device.latency)
                raise
            finally:
                self._speaking = None
                self._finish(turn, quiet)
            if pause:
                await asyncio.sleep(pause)

    def _failed(self, device: ModbusDevice) -> None:
        self.failures += 1
        device.failures += 1

    async def _once(
        self, device: ModbusDevice, fc: int, address: int, count: int, values: list[int] | None, timeout: float
    ) -> list[int]:
        client = self._client
        if client is None:
            raise _CannotOpen(f"the link to {self.settings.port} is closed")
        if not client.connected and not await self._connect():
            raise _CannotOpen(self.last_error)
        client.ctx.comm_params.timeout_connect = timeout
        unit = device.unit_id
        try:
            if fc == 3:
                rr: Any = await client.read_holding_registers(address, count=count, device_id=unit)
            elif fc == 4:
                rr = await client.read_input_registers(address, count=count, device_id=unit)
            elif fc == 16:
                assert values is not None
                rr = await client.write_registers(address, values, device_id=unit)
            else:
                assert values is not None
                rr = await client.write_register(address, values[0], device_id=unit)
        except ModbusException as exc:
            raise _NoAnswer(str(exc).split("\n")[0][:200]) from None
        return check_answer(rr, device, fc, address, count)


def check_answer(rr: Any, device: ModbusDevice, fc: int, address: int, count: int) -> list[int]:
    """Refuse any answer that is not the answer to this request (a shifted late answer, a foreign frame): pymodbus
    itself only looks at the device id. Marks `device` up when it answered."""
    got_unit = int(getattr(rr, "dev_id", device.unit_id))
    if got_unit != device.unit_id:
        raise _NoAnswer(f"answer comes from device id {got_unit}, asked {device.unit_id} (foreign answer dropped)")
    if isinstance(rr, ExceptionResponse) or (hasattr(rr, "isError") and rr.isError()):
        code = int(getattr(rr, "exception_code", 0))
        if (getattr(rr, "function_code", 0) & 0x7F) != fc:
            raise _NoAnswer(f"exception answer for function {getattr(rr, 'function_code', '?')}, asked {fc}")
        if code in BUSY_CODES:
            raise _Busy(EXCEPTION_NAMES.get(code, str(code)))
        device.mark(True, "meter answers")
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
        device.mark(True, "meter answers")
        return regs
    got_address = int(getattr(rr, "address", -1))
    if got_address != address:
        raise _NoAnswer(f"write echo names register {got_address}, expected {address} (shifted answer dropped)")
    if fc == 16 and int(getattr(rr, "count", count)) != count:
        raise _NoAnswer(f"write echo names {rr.count} registers, expected {count}")
    device.mark(True, "meter answers")
    return []


class _NoAnswer(Exception):
    pass


class _CannotOpen(Exception):
    pass


class _Busy(Exception):
    pass
