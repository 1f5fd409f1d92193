"""`driver = "openevse"`: an OpenEVSE charge controller over its serial RAPI (station/ev/rapi.py).

The EVSE states (`evsestate` of `$GS` and `$AT`; the codes are the firmware's EVSE_STATE_xxx of
J1772EvseController.h, which rapi_proc.h refers to): 01 A not connected, 02 B connected, 03 C charging, 04 D vent
required, 05 diode check failed, 06 GFCI fault, 07 no ground, 08 stuck relay, 09 GFI self-test failed, 0A over
temperature, 0B over current, 0E relay closure fault (0C and 0D are reserved), FE sleeping, FF disabled; 00 is the
firmware's transient "unknown" right after it is enabled.

How they map onto the contract (station/ev/interface.py):
- Pilot: the `pilotstate` field (the car's own signal) in states A..D. In sleep the firmware keeps reading the car
  but stops updating `pilotstate`; the EV-connected flag of `vflags` (0x0100) then tells A from B. Disabled: Pilot F
  (the pilot is held at -12 V). In a fault state the pilot is not reported anew (the firmware does not read it).
- Relay: RAPI has no relay feedback contact (Capabilities.relay_feedback=False). The relay is taken as closed in
  state C, or while the firmware's "charging relay is closed" flag (vflags 0x0040) is set: after `$FS` the firmware
  holds the relay up to 3 s for the car to stop drawing, and that flag covers the gap. This is what the firmware
  drives, not what the contactor did: a welded contactor shows only as the firmware's own stuck-relay state (08).
- Faults: 05 DIODE, 06 RCD, 07 NO_GROUND, 08 RELAY_WELDED, 09 RCD (self-test), 0A OVERTEMPERATURE, 0B OVERCURRENT,
  0E RELAY_WELDED (the relay did not close: a power switch failure too; the contract has no closer kind); a
  controller that stops answering: CONTROLLER_SILENT, cleared when it answers again.
- No proximity pilot: RAPI reports no cable ampacity, so there is no AmpacityChanged.
- Lock (has_lock=True): the firmware's Mennekes lock (`$S5`, `$G5`, built with MENNEKES_LOCK) in manual mode; `$G5`
  reports what the firmware drives, not a lock sensor.

Commands: allow_power(True) enables the EVSE (`$FE`): it then offers the PWM and closes the relay itself when the
car asks (state C); allow_power(False) puts it to sleep (`$FS`), which keeps the car visible (`$FD` disable would
hold the pilot at -12 V and hide it). set_max_current sends `$SC amps V` (volatile, so frequent changes do not wear
the EEPROM; the firmware caps it at its configured maximum, `cmaxamps` of `$GC`); below the controller's minimum
(6 A in IEC 61851-1 and the firmware) it pauses the car with `$FS`.

Never on its own: the driver puts the EVSE to sleep at start, after the controller reboots (`$AB`) and whenever it
finds it enabled without power being allowed (a front-panel button press, a reboot it did not hear). The firmware
boots enabled, so between a controller reboot and the driver's `$FS` (one poll interval at most) the firmware
alone decides; a firmware built with BOOTLOCK closes that gap (the driver clears the boot lock with `$SB` when it
allows power).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import Callable

import structlog

from station.ev import rapi
from station.ev.interface import (
    Capabilities,
    ChargeController,
    ControllerError,
    ControllerEvent,
    Fault,
    FaultChanged,
    LockChanged,
    LockState,
    Pilot,
    PilotChanged,
    RelayChanged,
)

log = structlog.get_logger("station.ev.openevse")

STATE_UNKNOWN = 0x00
STATE_A, STATE_B, STATE_C, STATE_D = 0x01, 0x02, 0x03, 0x04
STATE_SLEEPING, STATE_DISABLED = 0xFE, 0xFF
ENABLED_STATES = (STATE_A, STATE_B, STATE_C, STATE_D)
PILOT_OF_STATE = {STATE_A: Pilot.A, STATE_B: Pilot.B, STATE_C: Pilot.C, STATE_D: Pilot.D}
FAULT_OF_STATE: dict[int, tuple[Fault, str]] = {
    0x05: (Fault.DIODE, "diode check failed"),
    0x06: (Fault.RCD, "GFCI fault"),
    0x07: (Fault.NO_GROUND, "bad ground"),
    0x08: (Fault.RELAY_WELDED, "stuck relay"),
    0x09: (Fault.RCD, "GFCI self-test failed"),
    0x0A: (Fault.OVERTEMPERATURE, "over temperature"),
    0x0B: (Fault.OVERCURRENT, "over current"),
    0x0E: (Fault.RELAY_WELDED, "relay closure fault: the relay did not close"),
}
DEVICE_FAULTS = frozenset(f for f, _ in FAULT_OF_STATE.values())
VFLAG_CHARGING_ON = 0x0040  # ECVF_CHARGING_ON: the firmware drives the relay closed
VFLAG_EV_CONNECTED = 0x0100  # ECVF_EV_CONNECTED
VFLAG_BOOT_LOCK = 0x4000  # ECVF_BOOT_LOCK: no charging after boot until $SB


class OpenEvseController(ChargeController):
    """One OpenEVSE board on `port`. `poll_interval`: how often `$GS` is asked (the heartbeat; `$AT` notifications
    come in between); `command_timeout`: the wait for one answer; `silent_after`: how many commands in a row may go
    unanswered before CONTROLLER_SILENT is raised; `phases`: what the installation wires (RAPI does not say)."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        name: str = "openevse",
        has_lock: bool = False,
        poll_interval: float = 2.0,
        command_timeout: float = 1.0,
        silent_after: int = 2,
        phases: int = 1,
    ) -> None:
        if poll_interval <= 0 or command_timeout <= 0 or silent_after < 1:
            raise ValueError("poll_interval and command_timeout must be > 0 and silent_after >= 1")
        self.port = port
        self.baudrate = baudrate
        self.name = name
        self.poll_interval = poll_interval
        self.command_timeout = command_timeout
        self.silent_after = silent_after
        self.capabilities = Capabilities(
            senses_plug=True,
            has_lock=has_lock,
            relay_feedback=False,
            min_current_a=6.0,
            max_current_a=32.0,
            phases=phases,
        )
        self.bad = rapi.BadInput(name)
        self._listener: Callable[[ControllerEvent], None] | None = None
        self._client: rapi.RapiClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._first_cycle = asyncio.Event()
        self._need_setup = True
        self._misses = 0
        self._cycle_error = ""
        # What the station asked for.
        self._power_allowed = False
        self._limit_a: float | None = None  # None: the controller's own setting
        # What was last reported to the listener (None: not yet).
        self._pilot: Pilot | None = None
        self._relay: bool | None = None
        self._lock: LockState | None = None
        self._faults: dict[Fault, str] = {}
        self._evse_state: int | None = None
        self._vflags: int | None = None

    # ----------------------------------------------------------------------- the contract

    async def open(self, listener: Callable[[ControllerEvent], None]) -> None:
        self._listener = listener
        self._task = asyncio.create_task(self._run(), name=f"openevse-{self.name}")
        waiter = asyncio.ensure_future(self._first_cycle.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()  # a bug: let it show

    async def close(self) -> None:
        self._power_allowed = False
        client = self._client
        if client is not None and not client.closed.is_set():
            with contextlib.suppress(rapi.RapiError):
                await client.command("FS", timeout=self.command_timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_client()

    async def allow_power(self, on: bool) -> None:
        self._power_allowed = on
        if not on:
            await self._command("FS")
            return
        if not self._wants_enabled():
            log.info("openevse.power_allowed_paused", controller=self.name, limit_a=self._limit_a)
            return
        if self._vflags is not None and self._vflags & VFLAG_BOOT_LOCK:
            await self._command("SB", allow_nk=True)
        if self._limit_a is not None:
            await self._send_limit(self._limit_a)
        await self._command("FE")

    async def set_max_current(self, amps: float) -> None:
        if not math.isfinite(amps) or amps < 0:
            raise ValueError(f"maximum current {amps!r} is not a finite number >= 0")
        self._limit_a = amps
        if amps < self.capabilities.min_current_a:
            # Below the minimum the car must not charge: pause it (the EVSE sleeps; the car sees a steady pilot).
            await self._command("FS")
            return
        await self._send_limit(amps)
        if self._power_allowed and self._evse_state in (STATE_SLEEPING, STATE_DISABLED):
            await self._command("FE")

    async def lock(self, locked: bool) -> None:
        if not self.capabilities.has_lock:
            return
        try:
            await self._command("S5", "1" if locked else "0")
            await self._read_lock()
        except ControllerError as exc:
            self._emit_lock(LockState.FAILED)
            self._set_fault(Fault.LOCK_FAILURE, True, str(exc))
            raise
        if self._lock != (LockState.LOCKED if locked else LockState.UNLOCKED):
            self._emit_lock(LockState.FAILED)
            self._set_fault(Fault.LOCK_FAILURE, True, f"asked to {'lock' if locked else 'unlock'}, $G5 says otherwise")
            raise ControllerError(f"{self.name}: the lock did not {'lock' if locked else 'unlock'}")
        self._set_fault(Fault.LOCK_FAILURE, False)

    # ----------------------------------------------------------------------- the worker

    def _wants_enabled(self) -> bool:
        return self._power_allowed and (self._limit_a is None or self._limit_a >= self.capabilities.min_current_a)

    async def _run(self) -> None:
        while True:
            try:
                await self._cycle()
                self._cycle_error = ""
            except rapi.RapiTimeout as exc:
                self._missed(str(exc))
            except rapi.RapiClosed as exc:
                self._missed(str(exc), force=True)
                await self._drop_client()
            except ControllerError as exc:
                # Refused or garbled answers: the controller is talking, just not sense.
                self._log_cycle_error(str(exc))
            except (OSError, ValueError) as exc:  # the port cannot be opened (pyserial raises SerialException)
                self._missed(f"cannot open {self.port}: {exc}", force=True)
                await self._drop_client()
            self._first_cycle.set()
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):  # not wait_for: 3.11's can swallow a cancel
                    await self._kick.wait()

    async def _cycle(self) -> None:
        if self._client is None or self._client.closed.is_set():
            await self._connect()
        if self._need_setup:
            if not self._wants_enabled():
                await self._ask("FS")  # the safe state first, before anything that might fail
            try:
                await self._setup()
            except ControllerError as exc:  # retried next cycle; the heartbeat and the sleep go on meanwhile
                self._log_cycle_error(str(exc))
        await self._poll()
        await self._reconcile()

    def _log_cycle_error(self, error: str) -> None:
        if error != self._cycle_error:
            log.warning("openevse.cycle_failed", controller=self.name, error=error)
        self._cycle_error = error

    async def _connect(self) -> None:
        import serial_asyncio_fast

        await self._drop_client()
        reader, writer = await serial_asyncio_fast.open_serial_connection(url=self.port, baudrate=self.baudrate)
        self._client = rapi.RapiClient(
            reader, writer, name=self.name, on_notification=self._on_notification, bad=self.bad
        )
        self._need_setup = True
        log.info("openevse.port_open", controller=self.name, port=self.port, baudrate=self.baudrate)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _setup(self) -> None:
        """After (re)connecting, a reboot, or silence: learn the current range, take the lock, send the limit."""
        gc = await self._ask("GC")
        try:
            cap = rapi.parse_gc(gc)
        except rapi.RapiFrameError as exc:
            raise ControllerError(f"{self.name}: answer to $GC: {exc}") from exc
        max_a = min(cap.hw_max_amps, cap.configured_max_amps) if cap.configured_max_amps else cap.hw_max_amps
        if not 0 < cap.min_amps <= max_a:
            raise ControllerError(f"{self.name}: $GC range {cap.min_amps}..{max_a} A makes no sense")
        self.capabilities = dataclasses.replace(
            self.capabilities, min_current_a=float(cap.min_amps), max_current_a=float(max_a)
        )
        if self.capabilities.has_lock:
            await self._command("S5", "M")  # manual mode: the station locks and unlocks (volatile in the firmware)
            await self._read_lock()
        if self._wants_enabled() and self._limit_a is not None:
            await self._send_limit(self._limit_a)
        self._need_setup = False
        log.info("openevse.setup", controller=self.name, min_a=cap.min_amps, max_a=max_a)

    async def _poll(self) -> None:
        args = await self._ask("GS")
        try:
            status = rapi.parse_gs(args)
        except rapi.RapiFrameError as exc:
            self.bad(exc.kind, exc.detail)
            raise ControllerError(f"{self.name}: answer to $GS: {exc}") from exc
        self._apply(status)

    async def _reconcile(self) -> None:
        """Make the EVSE's enable/sleep state what the station asked for."""
        state = self._evse_state
        want = self._wants_enabled()
        if not want and state in (*ENABLED_STATES, STATE_DISABLED):
            log.warning("openevse.put_to_sleep", controller=self.name, evse_state=f"{state:02x}")
            await self._ask("FS")
        elif want and state in (STATE_SLEEPING, STATE_DISABLED):
            log.info("openevse.enable", controller=self.name, evse_state=f"{state:02x}")
            await self._ask("FE")

    async def _ask(self, command: str, *args: str) -> tuple[str, ...]:
        reply = await self._exchange(command, *args)
        if not reply.ok:
            raise ControllerError(f"{self.name}: ${command} refused ($NK {' '.join(reply.args)})")
        return reply.args

    async def _command(self, command: str, *args: str, allow_nk: bool = False) -> rapi.Reply:
        """A command from the station: ControllerError when the controller is away, silent or refuses."""
        try:
            reply = await self._exchange(command, *args)
        except rapi.RapiTimeout as exc:
            self._missed(str(exc))
            self._kick.set()
            raise ControllerError(str(exc)) from exc
        except rapi.RapiClosed as exc:
            self._kick.set()
            raise ControllerError(str(exc)) from exc
        if not reply.ok and not allow_nk:
            raise ControllerError(f"{self.name}: ${command} {' '.join(args)} refused ($NK {' '.join(reply.args)})")
        return reply

    async def _exchange(self, command: str, *args: str) -> rapi.Reply:
        client = self._client
        if client is None:
            raise rapi.RapiClosed(f"{self.name}: {self.port} is not open")
        reply = await client.command(command, *args, timeout=self.command_timeout)
        self._answered()
        return reply

    async def _send_limit(self, amps: float) -> None:
        whole = min(math.floor(amps), math.floor(self.capabilities.max_current_a))  # never more than asked
        reply = await self._command("SC", str(whole), "V", allow_nk=True)
        try:
            got = rapi.parse_amps(reply.args, "answer to $SC")
        except rapi.RapiFrameError as exc:
            raise ControllerError(f"{self.name}: {exc}") from exc
        if got > amps:
            # The firmware raises a request below its minimum to the minimum: more than asked. Pause instead.
            await self._command("FS")
            raise ControllerError(f"{self.name}: $SC {whole} set {got} A, more than the {amps:g} A asked; paused")
        if not reply.ok:
            raise ControllerError(f"{self.name}: $SC {whole} refused, the controller keeps {got} A")

    async def _read_lock(self) -> None:
        args = await self._ask("G5")
        if not args or args[0] not in ("0", "1"):
            raise ControllerError(f"{self.name}: answer to $G5 {args!r} is not a lock state")
        self._emit_lock(LockState.LOCKED if args[0] == "1" else LockState.UNLOCKED)

    # ----------------------------------------------------------------------- health

    def _answered(self) -> None:
        self._misses = 0
        if Fault.CONTROLLER_SILENT in self._faults:
            log.info("openevse.answering_again", controller=self.name)
            self._need_setup = True  # it may have rebooted: volatile settings are gone
            self._set_fault(Fault.CONTROLLER_SILENT, False)

    def _missed(self, why: str, *, force: bool = False) -> None:
        self._misses += 1
        if (force or self._misses >= self.silent_after) and Fault.CONTROLLER_SILENT not in self._faults:
            log.warning("openevse.silent", controller=self.name, error=why)
            self._set_fault(Fault.CONTROLLER_SILENT, True, why)

    # ----------------------------------------------------------------------- what the controller says

    def _on_notification(self, frame: rapi.Frame) -> None:
        if frame.token == "AT":
            try:
                status = rapi.parse_at(frame.args)
            except rapi.RapiFrameError as exc:
                self.bad(exc.kind, exc.detail)
                return
            self._apply(status)
            self._kick.set()  # reconcile now, not at the next poll
        elif frame.token == "AB":
            # Rebooted: volatile settings (current, lock mode) are gone and the firmware boots enabled. A postcode
            # other than 00 is a failed power-on self test; the fault state follows in $AT / $GS.
            try:
                boot = rapi.parse_ab(frame.args)
            except rapi.RapiFrameError as exc:
                self.bad(exc.kind, exc.detail)
                boot = None
            log.warning(
                "openevse.rebooted",
                controller=self.name,
                postcode=None if boot is None else f"{boot.postcode:02x}",
                firmware=None if boot is None else boot.firmware,
            )
            self._need_setup = True
            self._kick.set()
        elif frame.token in ("AN", "WF"):  # button presses and wifi-module requests: nothing for the station
            log.debug("openevse.notification_ignored", controller=self.name, token=frame.token, args=frame.args)
        else:  # whatever later firmware adds
            log.debug("openevse.notification_unknown", controller=self.name, token=frame.token)

    def _apply(self, status: rapi.EvseStatus) -> None:
        state = status.evse_state
        if state == STATE_UNKNOWN:
            return  # transient, right after enabling
        known = state in PILOT_OF_STATE or state in FAULT_OF_STATE or state in (STATE_SLEEPING, STATE_DISABLED)
        if not known:
            self.bad("malformed", f"unknown EVSE state {state:02x}")
            return
        self._evse_state = state
        if status.vflags is not None:
            self._vflags = status.vflags
        vflags = status.vflags
        pilot: Pilot | None = None
        if state in PILOT_OF_STATE:
            pilot = PILOT_OF_STATE.get(status.pilot_state or state, PILOT_OF_STATE[state])
        elif state == STATE_SLEEPING:
            if vflags is not None:
                pilot = Pilot.B if vflags & VFLAG_EV_CONNECTED else Pilot.A
                if pilot is Pilot.B and self._pilot in (Pilot.C, Pilot.D):
                    pilot = self._pilot  # plugged all along; the firmware does not read C/D in sleep
        elif state == STATE_DISABLED:
            pilot = Pilot.F
        # The relay the firmware drives (no feedback contact in RAPI).
        relay = state == STATE_C or (vflags is not None and bool(vflags & VFLAG_CHARGING_ON))
        fault = FAULT_OF_STATE.get(state)
        for f in DEVICE_FAULTS:
            if fault is None or f is not fault[0]:
                self._set_fault(f, False)
        if fault is not None:
            self._set_fault(fault[0], True, f"EVSE state {state:02x}: {fault[1]}")
        if relay != self._relay:
            self._relay = relay
            self._emit(RelayChanged(closed=relay))
        if pilot is not None and pilot != self._pilot:
            self._pilot = pilot
            self._emit(PilotChanged(pilot=pilot))

    def _set_fault(self, fault: Fault, active: bool, detail: str = "") -> None:
        if active and self._faults.get(fault) != detail:
            self._faults[fault] = detail
            self._emit(FaultChanged(fault=fault, active=True, detail=detail))
        elif not active and fault in self._faults:
            del self._faults[fault]
            self._emit(FaultChanged(fault=fault, active=False))

    def _emit_lock(self, state: LockState) -> None:
        if state != self._lock:
            self._lock = state
            self._emit(LockChanged(state=state))

    def _emit(self, event: ControllerEvent) -> None:
        log.info("openevse.event", controller=self.name, kind=type(event).__name__, **dataclasses.asdict(event))
        if self._listener is None:
            return
        try:
            self._listener(event)
        except Exception:
            log.exception("openevse.listener_failed", controller=self.name, event=type(event).__name__)
