"""Wiring: builds the station's parts from a Config and runs them until told to stop.

Owns start-up order (store, meter, recovery, then the CSMS connection, so that the station is useful before the
CSMS is reachable) and shutdown order (stop taking work, let a meter stop in flight store its record, close the
WebSocket, close the store). It decides nothing about charging.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from station.auth import Authorizer
from station.bus import LineSettings, ModbusBus, ModbusDevice
from station.cards.drivers import build_card_reader
from station.config import BusConfig, Config, EvseConfig, sim_state_path
from station.core.model import Layout
from station.core.station import ChargingStation, EvSide
from station.ev.interface import ChargeController
from station.firmware.update import FirmwareUpdater, settle_before_store_opens
from station.meter.interface import Meter
from station.meter.models import build_driver
from station.ocpp import security
from station.ocpp.connection import CsmsConnection
from station.ocpp.settings import Settings, SettingsPolicy
from station.runtime import MeterWorker, StationRuntime
from station.runtime.cards import Desk
from station.runtime.controller_worker import ControllerWorker
from station.runtime.smart_charging import EvseShape
from station.service import Notifier, feed_watchdog
from station.store import Store, StoreError

if TYPE_CHECKING:
    from station.diag.webpage import DiagnosticsPage
    from station.meter.nullmodem import VirtualNullModem
    from station.meter.sim.base import SimulatedMeter

log = structlog.get_logger("station.app")


@dataclass
class SimulatedLine:
    """The in-process simulators of a `transport = "simulated"` bus (one per meter on it) and the virtual cable they
    share."""

    cable: VirtualNullModem
    simulators: dict[int, SimulatedMeter]  # by EVSE id
    server: object

    async def close(self) -> None:
        await self.server.shutdown()  # type: ignore[attr-defined]
        await self.cable.stop()


@dataclass
class Station:
    config: Config
    store: Store
    meters: dict[int, Meter]  # by EVSE id
    runtime: StationRuntime
    connection: CsmsConnection
    settings: Settings
    buses: dict[str, ModbusBus] = field(default_factory=dict)
    simulated: dict[str, SimulatedLine] = field(default_factory=dict)  # by bus name
    page: DiagnosticsPage | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    firmware: FirmwareUpdater | None = None

    def simulator(self, evse_id: int = 1) -> SimulatedMeter:
        """The in-process simulator of an EVSE's meter (a simulated bus only)."""
        return self.simulated[self.config.evse(evse_id).meter.bus].simulators[evse_id]

    def simulated_line(self, evse_id: int = 1) -> SimulatedLine:
        return self.simulated[self.config.evse(evse_id).meter.bus]


def card_desks(config: Config, controllers: dict[int, ChargeController]) -> list[Desk]:
    """The configured card readers, and one simulated reader per simulated car (`station sim ev card UID`)."""
    desks = [Desk(build_card_reader(c), None if c.evse == 0 else (c.evse,)) for c in config.card_readers]
    for evse_id, controller in controllers.items():
        if hasattr(controller, "card_reader"):
            from station.cards.simulated import SimulatedCardReader

            reader = SimulatedCardReader(f"evse-{evse_id}")
            controller.card_reader = reader
            desks.append(Desk(reader, (evse_id,)))
    return desks


def tie_simulated_load(
    controller: ChargeController, simulated: dict[str, SimulatedLine], config: Config, evse_id: int
) -> None:
    """A simulated car on an in-process simulated meter: the meter counts only what the car draws (relay closed,
    car asking, current allowed). A meter in another process keeps its constant power while a transaction runs."""
    bus = config.evse(evse_id).meter.bus
    listen = getattr(controller, "add_power_listener", None)
    if bus in simulated and listen is not None:
        listen(simulated[bus].simulators[evse_id].set_load)


def line_settings(config: Config, bus: BusConfig, port: str | None = None) -> LineSettings:
    return LineSettings(
        port=port or bus.port,
        baudrate=bus.baudrate,
        parity=bus.parity,
        stopbits=bus.stopbits,
        transport="tcp" if bus.transport == "tcp" else "rtu",
        retries=bus.retries,
        config_section="[meter]" if config.legacy else f"[bus.{bus.name}]",
    )


def build_buses(config: Config, ports: dict[str, str] | None = None) -> dict[str, ModbusBus]:
    """One bus per configured line that a meter uses (`ports`: where a simulated bus's cable ends)."""
    used = {e.meter.bus for e in config.evses}
    ports = ports or {}
    return {
        name: ModbusBus(line_settings(config, bus, ports.get(name)))
        for name, bus in config.buses.items()
        if name in used
    }


def build_meters(config: Config, buses: dict[str, ModbusBus]) -> dict[int, Meter]:
    """Each EVSE's meter driver, as a device on its bus."""
    return {evse.id: _driver(evse, buses[evse.meter.bus]) for evse in config.evses}


def build_meter(config: Config, evse_id: int = 1) -> Meter:
    """One EVSE's meter on a bus of its own (tools that talk to one meter while the daemon is not running)."""
    evse = config.evse(evse_id)
    return _driver(evse, ModbusBus(line_settings(config, config.bus_of(evse))))


def build_controller(evse: EvseConfig) -> ChargeController | None:
    """The EVSE's charge controller, None for "meter-output" (the meter's output switches it: nothing to talk to).
    Each driver is imported only when configured."""
    cc = evse.charge_controller
    name = f"evse-{evse.id}"
    if cc.driver == "simulated":
        from station.ev.simulated import SimulatedController

        return SimulatedController(
            name, has_lock=cc.lock, control_socket=cc.control_socket, max_current_a=cc.max_current
        )
    if cc.driver == "openevse":
        from station.ev.openevse import OpenEvseController

        return OpenEvseController(cc.port, baudrate=cc.baudrate, name=name, has_lock=cc.lock)
    return None


def charging_shapes(config: Config, controllers: Mapping[int, ChargeController]) -> dict[int, EvseShape]:
    """What smart charging knows of each EVSE: whether its controller sets the car's current ("meter-output" does
    not), the current range and the phases it supplies."""
    shapes: dict[int, EvseShape] = {}
    for evse in config.evses:
        controller = controllers.get(evse.id)
        cc = evse.charge_controller
        if controller is None or not controller.capabilities.senses_plug:
            shapes[evse.id] = EvseShape(controllable=False, max_current_a=cc.max_current, phases=cc.phases)
        else:
            caps = controller.capabilities
            shapes[evse.id] = EvseShape(True, min(cc.max_current, caps.max_current_a), caps.min_current_a, cc.phases)
    return shapes


def _driver(evse: EvseConfig, bus: ModbusBus) -> Meter:
    m = evse.meter
    return build_driver(m.model, ModbusDevice(bus, m.device_id, latency=m.latency), m.registers, m.poll_interval)


async def start_simulated_lines(config: Config) -> dict[str, SimulatedLine]:
    """For each `transport = "simulated"` bus: its meters' simulators on one virtual cable. The simulators are
    imported here, once a simulated bus is found, not at the top: a station with real meters never loads them (nor
    pymodbus's server, which loads aiohttp)."""
    lines: dict[str, SimulatedLine] = {}
    for name, bus in config.buses.items():
        evses = [e for e in config.evses if e.meter.bus == name]
        if bus.transport != "simulated" or not evses:
            continue
        from station.meter.nullmodem import VirtualNullModem
        from station.meter.sim.server import build_simulator, serve

        cable = await VirtualNullModem(baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits).start()
        sims = {
            e.id: build_simulator(
                e.meter.model,
                state=sim_state_path(config, e),
                ledger=Path(e.meter.sim_ledger) if e.meter.sim_ledger else None,
                device_id=e.meter.device_id,
                power_w=e.meter.sim_power_w,
                signing_time=e.meter.sim_signing_time,
                registers=e.meter.registers,
            )
            for e in evses
        }
        server = await serve(list(sims.values()), cable.path_b, baudrate=bus.baudrate)
        log.info(
            "simulated meters on a virtual serial line",
            bus=name,
            meters=len(sims),
            daemon_end=cable.path_a,
            meter_end=cable.path_b,
        )
        lines[name] = SimulatedLine(cable, sims, server)
    return lines


@contextlib.asynccontextmanager
async def running_station(config: Config) -> AsyncIterator[Station]:
    """Start every part; on exit shut them down in the safe order."""
    settle_before_store_opens(config)  # ---- firmware update: a rollback may need the store as it was
    store = Store(config.storage.path)
    simulated: dict[str, SimulatedLine] = {}
    try:
        simulated = await start_simulated_lines(config)
        buses = build_buses(config, {name: line.cable.path_a for name, line in simulated.items()})
        meters = build_meters(config, buses)
        layout = Layout(tuple((e.id, e.connectors) for e in config.evses))
        controllers = {e.id: c for e in config.evses if (c := build_controller(e)) is not None}
        sides = {
            evse_id: EvSide(
                senses_plug=c.capabilities.senses_plug,
                has_lock=c.capabilities.has_lock,
                min_current_a=c.capabilities.min_current_a,
            )
            for evse_id, c in controllers.items()
        }
        for evse_id, controller in controllers.items():
            tie_simulated_load(controller, simulated, config, evse_id)
        workers = {evse_id: MeterWorker(evse_id, meter) for evse_id, meter in meters.items()}
        all_sides = [sides.get(e.id) for e in config.evses]
        shapes = charging_shapes(config, controllers)
        settings = Settings(
            store,
            layout,
            lambda evse_id: workers[evse_id].state.public_key_hex,
            sees_car=all(s is not None and s.senses_plug for s in all_sides),
            has_lock=all(s is not None and s.has_lock for s in all_sides),
            smart_charging=any(shape.controllable for shape in shapes.values()),
            firmware_management=config.firmware.allow_unsigned_16,
        )
        authorizer = Authorizer(
            store,
            offline_allowed=lambda: settings.value("LocalAuthorizeOffline") == "true",
            list_enabled=lambda: settings.value("LocalAuthListEnabled") == "true",
            cache_enabled=lambda: settings.value("AuthorizationCacheEnabled") == "true",
            pre_authorize=lambda: settings.value("LocalPreAuthorize") == "true",
            unknown_offline=lambda: settings.value("AllowOfflineTxForUnknownId") == "true",
        )
        runtime = StationRuntime(
            ChargingStation(layout, sides),
            store,
            workers,
            station_id=config.station.id,
            controllers={
                e: ControllerWorker(e, c, max_current_a=config.evse(e).charge_controller.max_current)
                for e, c in controllers.items()
            },
            card_readers=card_desks(config, controllers),
            policy=SettingsPolicy(settings),
            authorizer=authorizer,
            charging_shapes=shapes,
            nominal_voltage=config.station.nominal_voltage,
        )
        settings.listeners.append(lambda _name, _value: runtime.sampling_changed())
        # ---- firmware update (issue 20)
        firmware = FirmwareUpdater(
            config,
            store,
            busy=lambda: bool(runtime.core.running_transactions()),
            wake=runtime.csms.outbox_changed,
            hold=EvseHold(runtime).hold,
        )
        connection = CsmsConnection(config, runtime, store, settings, firmware=firmware)
        # ---- end firmware update
        store.security_event(security.STARTUP, f"station started, security profile {connection.security.profile}")
        if connection.security.profile == 0:
            log.warning("security profile 0: the CSMS connection is neither authenticated nor encrypted")
        station = Station(config, store, meters, runtime, connection, settings, buses, simulated, firmware=firmware)
        # The connection dials (imports its OCPP version, handshakes) while the runtime reads the meters: it boots
        # once they said who they are and answers the CSMS once the runtime is ready (CsmsConnection._drive).
        station.tasks.append(asyncio.create_task(connection.run(), name="csms connection"))
        try:
            await runtime.start()
        except BaseException:
            await _cancel(station.tasks)  # the run did not start: its end is not recorded as a clean one either
            raise
        # ---- firmware update: what this run has to do about an earlier install (after the runtime restored its state)
        firmware.on_start(lambda: connection.state.booted is not None and connection.state.registration == "Accepted")
        diagnostics = None
        if config.diagnostics.socket:
            from station.diag.server import DiagnosticsServer  # the technician socket: only when configured

            diagnostics = DiagnosticsServer(station, config.diagnostics.socket)
            await diagnostics.start()
        page = None
        if config.diagnostics.http:
            from station.diag.webpage import DiagnosticsPage  # aiohttp's server: only for a configured page

            page = DiagnosticsPage(station, config.diagnostics.http, config.diagnostics.http_password)
            await page.start()
        station.page = page
        try:
            yield station
        finally:
            if page is not None:
                await page.close()
            if diagnostics is not None:
                await diagnostics.close()
            await firmware.close()
            await runtime.close()
            await connection.close()
            await _cancel(station.tasks)
    finally:
        for line in simulated.values():
            await line.close()
        store.close()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class EvseHold:
    """2.0.1 L01.FR.07 while a firmware install waits for transactions to end, and while it installs: the EVSEs that
    are operative and free are made Unavailable for new starts (again each time one becomes free), and given back
    afterwards, only those this made so. Which ones is kept in the store: the release that runs after the restart gives
    them back."""

    KEY = "firmware.held_evses"

    def __init__(self, runtime: StationRuntime) -> None:
        self.runtime = runtime

    def hold(self, on: bool) -> None:
        store = self.runtime.store
        held = {int(e) for e in (store.setting(self.KEY) or "").split(",") if e.isdigit()}
        if on:
            for evse in self.runtime.core.evses.values():
                free = all(store.availability(evse.id, c) != "Inoperative" for c in evse.connectors)
                if evse.transaction is None and free and self.runtime.change_availability(evse.id, False).accepted:
                    held.add(evse.id)
            store.set_setting(self.KEY, ",".join(str(e) for e in sorted(held)))
        elif held:
            for evse_id in sorted(held):
                if evse_id in self.runtime.core.evses:
                    self.runtime.change_availability(evse_id, True)
            store.set_setting(self.KEY, "")


def status_line(station: Station) -> str:
    """One line for systemd's STATUS=: what the station is doing right now."""
    state = station.connection.state
    if state.connected:
        csms = f"CSMS connected (OCPP {state.version})"
    else:
        csms = "CSMS unreachable" if state.last_error else "CSMS connecting"
    parts = [csms]
    for evse in station.runtime.core.evses.values():
        text = f"EVSE {evse.id} {evse.phase.value}"
        if evse.transaction is not None:
            text += f" ({evse.transaction.ref[:8]})"
        text += ", meter up" if station.runtime.meter_state(evse.id).link_up else ", meter DOWN"
        parts.append(text)
    queued = station.store.outbox_depth()
    if queued:
        parts.append(f"{queued} message(s) queued")
    return "; ".join(parts)


RESET_EXIT_CODE = 75  # systemd/station.service: RestartForceExitStatus= and SuccessExitStatus= name it
STORE_EXIT_CODE = 73  # EX_CANTCREAT: the store cannot be opened or written (its error names the file and the cause)
FAILURE_EXIT_CODE = 70  # EX_SOFTWARE: a loop the daemon cannot work without ended; Restart=on-failure starts it again


def ended_loop(station: Station) -> str | None:
    """The station's long-lived loops (the CSMS connection) never end while it runs; one that did is named here."""
    for task in station.tasks:
        if task.done():
            return f"the {task.get_name()} loop ended"
    return None


async def run_daemon(config: Config, notifier: Notifier | None = None) -> int:
    """`station run`: until SIGTERM or SIGINT (exit 0) or a Reset from the CSMS (exit 75: systemd starts us again).
    Tells systemd when it is ready, what it does, and that it lives."""
    notifier = notifier or Notifier()
    try:
        return await _run(config, notifier)
    except StoreError as exc:
        # One line that names the file and the cause (a read-only directory, a full disk), not a traceback.
        log.error("the store cannot be used; the station cannot run", error=str(exc))
        return STORE_EXIT_CODE


async def _run(config: Config, notifier: Notifier) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    async with running_station(config) as station:
        # READY once store and meter are up, whether or not the CSMS is reachable.
        notifier.ready(status_line(station))
        watchdog = asyncio.create_task(
            feed_watchdog(notifier, lambda: status_line(station), lambda: ended_loop(station)), name="watchdog"
        )
        log.info("station running", station_id=config.station.id, csms=config.csms.url)
        reset = asyncio.create_task(station.runtime.reset_requested.wait(), name="reset")
        stopped = asyncio.create_task(stop.wait(), name="stop")
        assert station.firmware is not None
        upgraded = asyncio.create_task(station.firmware.restart_requested.wait(), name="firmware restart")
        await asyncio.wait([reset, stopped, upgraded, *station.tasks], return_when=asyncio.FIRST_COMPLETED)
        if (problem := ended_loop(station)) is not None and not stopped.done():
            # Never a daemon that looks alive but no longer talks to the CSMS: stop properly and let systemd start a
            # fresh one (the watchdog is withheld meanwhile, should the shutdown itself hang).
            task = next(t for t in station.tasks if t.done())
            error = None if task.cancelled() else task.exception()
            log.critical("a loop the station needs ended; stopping for a restart", problem=problem, exc_info=error)
            code = FAILURE_EXIT_CODE
            notifier.stopping(f"{problem}; restarting")
        elif upgraded.done() and not stopped.done():
            # ---- firmware update: a new release (or a rollback) is in place; the unit restarts on exit 75.
            code = RESET_EXIT_CODE
            notifier.stopping("firmware update: delivering what is queued, then restarting on the new release")
            await _drain_outbox(station, timeout=10.0)
        elif reset.done() and not stopped.done():
            code = RESET_EXIT_CODE
            station.store.security_event(security.RESET, "reset requested by the CSMS")
            notifier.stopping("reset requested by the CSMS: delivering what is queued, then restarting")
            await _drain_outbox(station, timeout=10.0)
        else:
            notifier.stopping("stopping: finishing meter work, flushing the store, closing the CSMS connection")
        reset.cancel()
        stopped.cancel()
        upgraded.cancel()
        log.info("stopping", reset=code == RESET_EXIT_CODE, failed=code == FAILURE_EXIT_CODE)
        watchdog.cancel()
    log.info("stopped")
    return code


async def _drain_outbox(station: Station, timeout: float) -> None:
    """Give the CSMS a chance to receive what is queued (what is not delivered stays in the store for next time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while station.store.outbox_depth() and station.connection.state.connected and loop.time() < deadline:  # noqa: ASYNC110 -- polls two owners' state
        await asyncio.sleep(0.1)
