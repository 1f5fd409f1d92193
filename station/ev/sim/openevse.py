"""A simulated OpenEVSE board speaking RAPI on a serial port, written from the protocol document at the top of the
firmware's `rapi_proc.h` (RAPIVER 5.2.1) and its EVSE_STATE_xxx / ECVF_xxx codes, for the driver's tests and for
trying the daemon by hand. It shares no code or tables with the driver (station/ev/openevse.py, station/ev/rapi.py),
so that a misreading of the document in one shows up against the other.

Like the firmware it takes commands with the XOR checksum (`^xk`), the additive one (`*ck`) or none, echoes a
sequence id (`:ss`), answers `$NK` to a bad checksum or an unknown command, drops a command longer than its
32-character buffer, and sends `$AT evsestate pilotstate currentcapacity vflags` whenever the state changes (also
right after the answer to a command that changed it). Behind it a scripted car: plug / unplug / ready (state C) /
suspend (state B). Knobs for the tests: a fault state, going silent, sending garbage, corrupting checksums, a reboot
(`$AB`, and back to enabled, as the firmware boots).

Simplifications: the relay opens at once on `$FS` (the firmware waits up to 3 s for the car); no timers, limits,
LCD or temperature readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import structlog

log = structlog.get_logger("station.ev.sim.openevse")

# EVSE_STATE_xxx (J1772EvseController.h)
A, B, C, D = 0x01, 0x02, 0x03, 0x04
SLEEPING, DISABLED = 0xFE, 0xFF
FAULTS = {
    "diode": 0x05,
    "gfci": 0x06,
    "no_ground": 0x07,
    "stuck_relay": 0x08,
    "gfi_self_test": 0x09,
    "over_temperature": 0x0A,
    "over_current": 0x0B,
    "relay_closure": 0x0E,
}
# ECVF_xxx vflags
CHARGING_ON = 0x0040
EV_CONNECTED = 0x0100
BOOT_LOCK = 0x4000
SESSION_ENDED = 0x0200

BUFLEN = 32  # ESRAPI_BUFLEN


def _xor(data: bytes) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


class OpenEvseSimulator:
    """One simulated board. `start(port)` serves on a serial device (one end of a VirtualNullModem in the tests)."""

    def __init__(
        self,
        *,
        min_amps: int = 6,
        hw_max_amps: int = 32,
        configured_max_amps: int = 32,
        has_lock: bool = False,
        boot_lock: bool = False,
        firmware: str = "8.2.3",
        echo_sequence_ids: bool = True,
    ) -> None:
        self.min_amps, self.hw_max_amps, self.configured_max_amps = min_amps, hw_max_amps, configured_max_amps
        self.has_lock = has_lock
        self.boot_lock_feature = boot_lock
        self.firmware = firmware
        self.echo_sequence_ids = echo_sequence_ids
        # The car.
        self.plugged = False
        self.car_ready = False
        self.vent = False
        # The board.
        self.mode = "enabled"  # enabled | sleeping | disabled; the firmware boots enabled
        self.fault_state: int | None = None
        self.capacity = configured_max_amps
        self.boot_locked = boot_lock
        self.lock_manual = False
        self.locked = False
        self.lock_jammed = False  # S5 is answered $OK but the lock does not move
        self.pilot_state = A
        # Knobs.
        self.silent = False
        self.corrupt_checksums = 0  # the next N lines we send carry a wrong checksum
        # What happened, for the tests.
        self.commands: list[str] = []
        self.relay_closed_ever = False
        self._sent_at: tuple[int, int, int, int] | None = None
        self._buf = bytearray()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------- the state

    @property
    def evse_state(self) -> int:
        if self.fault_state is not None:
            return self.fault_state
        if self.mode == "disabled":
            return DISABLED
        if self.mode == "sleeping":
            return SLEEPING
        if not self.plugged:
            return A
        if self.car_ready and not self.boot_locked:
            return D if self.vent else C
        return B

    @property
    def relay_closed(self) -> bool:
        return self.evse_state == C

    @property
    def vflags(self) -> int:
        flags = 0
        if self.plugged:
            flags |= EV_CONNECTED
        else:
            flags |= SESSION_ENDED
        if self.relay_closed:
            flags |= CHARGING_ON
        if self.boot_locked:
            flags |= BOOT_LOCK
        return flags

    def _update_pilot(self) -> None:
        # The firmware reads the pilot only while enabled and not in a fault.
        state = self.evse_state
        if state in (A, B, C, D):
            self.pilot_state = A if not self.plugged else (D if self.vent else C) if self.car_ready else B
        elif state == 0x05:
            self.pilot_state = 0x05
        elif self.fault_state is not None:
            self.pilot_state = 0x00

    def _changed(self) -> None:
        self._update_pilot()
        if self.relay_closed:
            self.relay_closed_ever = True
        now = (self.evse_state, self.pilot_state, self.capacity, self.vflags & ~CHARGING_ON & ~SESSION_ENDED)
        if now != self._sent_at:
            self._sent_at = now
            self._send(f"AT {now[0]:02x} {now[1]:02x} {now[2]} {self.vflags:04x}")

    # ----------------------------------------------------------------------- the car and the knobs

    def plug(self) -> None:
        self.plugged = True
        self._changed()

    def unplug(self) -> None:
        self.plugged = self.car_ready = False
        self._changed()

    def ready(self) -> None:
        """The car asks for power (state C once the EVSE offers it)."""
        self.plugged = self.car_ready = True
        self._changed()

    def suspend(self) -> None:
        """The car pauses (state B)."""
        self.car_ready = False
        self._changed()

    def fault(self, name: str) -> None:
        if name not in FAULTS:
            raise ValueError(f"no fault {name!r}; one of {', '.join(FAULTS)}")
        self.fault_state = FAULTS[name]
        self._changed()

    def clear(self) -> None:
        self.fault_state = None
        self._changed()

    def reboot(self) -> None:
        """As a power cycle: volatile settings gone, enabled, `$AB 00 <version>`."""
        self.mode = "enabled"
        self.capacity = self.configured_max_amps
        self.lock_manual = False
        self.boot_locked = self.boot_lock_feature
        self._sent_at = None
        self._send(f"AB 00 {self.firmware}")
        self._changed()

    def send_raw(self, data: bytes) -> None:
        """Put bytes on the line as they are (garbage, over-long lines)."""
        if self._writer is not None:
            self._writer.write(data)

    # ----------------------------------------------------------------------- the line

    def _send(self, body: str) -> None:
        if self.silent or self._writer is None:
            return
        raw = ("$" + body).encode("ascii")
        chk = _xor(raw)
        if self.corrupt_checksums:
            self.corrupt_checksums -= 1
            chk ^= 0x5A
        self._writer.write(raw + f"^{chk:02X}\r".encode("ascii"))

    def _answer(self, ok: bool, text: str, seq: str | None) -> None:
        body = "OK" if ok else "NK"
        if text:
            body += " " + text
        if seq is not None and self.echo_sequence_ids:
            body += " :" + seq
        self._send(body)

    def feed(self, data: bytes) -> None:
        for b in data:
            if b == 0x24:  # '$'
                self._buf = bytearray(b"$")
            elif self._buf:
                if len(self._buf) >= BUFLEN:
                    self._buf = bytearray()  # too many characters: dropped, as the firmware does
                elif b == 0x0D:
                    line, self._buf = bytes(self._buf), bytearray()
                    self._line(line)
                else:
                    self._buf.append(b)

    def _line(self, line: bytes) -> None:
        body, chk_ok = line, True
        for mark, calc in ((b"^", _xor), (b"*", lambda d: sum(d) & 0xFF)):
            at = line.find(mark)
            if at >= 0:
                body = line[:at]
                try:
                    chk_ok = int(line[at + 1 : at + 3], 16) == calc(body)
                except ValueError:
                    chk_ok = False
                break
        text = body[1:].decode("ascii", "replace")
        tokens = text.split(" ")
        seq = None
        if len(tokens) > 1 and tokens[-1].startswith(":"):
            seq = tokens.pop()[1:3].upper()
        if not chk_ok:
            self._answer(False, "", None)
            return
        self.commands.append(" ".join(tokens))
        if self.silent:
            return
        ok, out = self._do(tokens[0], tokens[1:])
        self._answer(ok, out, seq)
        self._changed()  # a command may have changed the state: $AT after the answer, as the firmware does

    def _do(self, cmd: str, args: list[str]) -> tuple[bool, str]:
        if cmd == "GS":
            return True, f"{self.evse_state:02x} 0 {self.pilot_state:02x} {self.vflags:04x}"
        if cmd == "GC":
            return True, f"{self.min_amps} {self.hw_max_amps} {self.capacity} {self.configured_max_amps}"
        if cmd == "GE":
            return True, f"{self.capacity} 0000"
        if cmd == "GV":
            return True, f"{self.firmware} 5.2.1"
        if cmd == "G0":
            return True, "2" if self.mode == "disabled" else ("1" if self.plugged else "0")
        if cmd == "GG":
            return True, f"{self.capacity * 1000 if self.relay_closed else 0} 230000"
        if cmd == "SC" and len(args) in (1, 2) and args[0].isdigit():
            amps = int(args[0])
            top = self.configured_max_amps if len(args) == 2 else self.hw_max_amps
            if self.fault_state == FAULTS["over_temperature"] and amps > self.capacity:
                return False, str(self.capacity)
            if amps < self.min_amps:
                self.capacity = self.min_amps
                return False, str(self.capacity)
            if amps > top:
                self.capacity = top
                return False, str(self.capacity)
            self.capacity = amps
            return True, str(self.capacity)
        if cmd == "FE":
            if self.mode in ("sleeping", "disabled"):
                self.mode = "enabled"
            return True, ""
        if cmd == "FS":
            self.mode = "sleeping"
            return True, ""
        if cmd == "FD":
            self.mode = "disabled"
            return True, ""
        if cmd == "FR":
            asyncio.get_running_loop().call_later(0.05, self.reboot)
            return True, ""
        if cmd == "SB" and self.boot_lock_feature:
            if self.fault_state is not None:
                return True, "1"
            self.boot_locked = False
            return True, "0"
        if cmd == "F0" and len(args) == 1:
            return True, ""
        if cmd == "FF" and len(args) == 2:
            return args[0] in "BDEFGRTV" and args[1] in ("0", "1"), ""
        if self.has_lock and cmd == "G5":
            return True, f"{int(self.locked)} {'M' if self.lock_manual else 'A'}"
        if self.has_lock and cmd == "S5" and len(args) == 1:
            if args[0] in ("A", "M"):
                self.lock_manual = args[0] == "M"
                return True, ""
            if args[0] in ("0", "1") and self.lock_manual:
                if not self.lock_jammed:
                    self.locked = args[0] == "1"
                return True, ""
            return False, ""
        return False, ""

    async def start(self, port: str, *, baudrate: int = 115200) -> OpenEvseSimulator:
        import serial_asyncio_fast

        reader, writer = await serial_asyncio_fast.open_serial_connection(url=port, baudrate=baudrate)
        self._writer = writer
        self._task = asyncio.create_task(self._serve(reader), name="openevse-sim")
        return self

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(256)
            if not data:
                return
            self.feed(data)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None

    def describe(self) -> str:
        return (
            f"evse_state={self.evse_state:02x} pilot={self.pilot_state:02x} mode={self.mode} plugged={self.plugged} "
            f"ready={self.car_ready} relay={'closed' if self.relay_closed else 'open'} capacity={self.capacity}A "
            f"fault={self.fault_state} silent={self.silent}"
        )


HAND_HELP = (
    "commands: plug | unplug | ready | suspend | fault NAME | clear | silent on|off | garbage | badsum N | reboot | "
    f"state | quit   (faults: {', '.join(FAULTS)})"
)


def by_hand_command(sim: OpenEvseSimulator, line: str) -> str:
    """One line typed at `run_by_hand`; the answer to print. ValueError for a bad command."""
    words = line.split()
    if not words:
        return ""
    cmd, rest = words[0], words[1:]
    if cmd in ("plug", "unplug", "ready", "suspend", "clear", "reboot") and not rest:
        getattr(sim, cmd)()
    elif cmd == "fault" and len(rest) == 1:
        sim.fault(rest[0])
    elif cmd == "silent" and rest in (["on"], ["off"]):
        sim.silent = rest[0] == "on"
    elif cmd == "garbage" and not rest:
        sim.send_raw(b"\x00\xffnoise$XX broken\r" + b"$" + b"A" * 200 + b"\r")
    elif cmd == "badsum" and len(rest) == 1 and rest[0].isdigit():
        sim.corrupt_checksums = min(int(rest[0]), 1000)
    elif cmd == "state" and not rest:
        pass
    elif cmd == "help":
        return HAND_HELP
    else:
        raise ValueError(f"unknown command {line.strip()[:40]!r}; {HAND_HELP}")
    return sim.describe()


async def run_by_hand(port: str, *, baudrate: int = 115200, has_lock: bool = False) -> None:
    """Serve a simulated OpenEVSE on `port` (e.g. one end of `station sim nullmodem`) and take car and fault commands
    on standard input until `quit` or end of input. For a future `station sim openevse --port PORT`."""
    sim = await OpenEvseSimulator(has_lock=has_lock).start(port, baudrate=baudrate)
    print(f"simulated OpenEVSE on {port} at {baudrate} baud; {HAND_HELP}", flush=True)
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() == "quit":
                return
            try:
                print(by_hand_command(sim, line[:200]), flush=True)
            except ValueError as exc:
                print(exc, flush=True)
    finally:
        await sim.stop()
