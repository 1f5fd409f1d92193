"""Wiring: builds the station's parts from a Config and runs them until told to stop.

Owns start-up order (store, meter, recovery, then the CSMS connection, so that the station is useful before the
CSMS is reachable) and shutdown order (stop taking work, let a meter stop in flight store its record, close the
WebSocket, close the store). It decides nothing about charging.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from station.auth import Authorizer
from station.bus import LineSettings, ModbusBus, ModbusDevice
from station.config import Config
from station.core.station import ChargingStation
from station.diag.server import DiagnosticsServer
from station.diag.webpage import DiagnosticsPage
from station.meter.interface import Meter
from station.meter.models import build_driver
from station.meter.nullmodem import VirtualNullModem
from station.meter.sim.base import SimulatedMeter
from station.meter.sim.server import build_simulator, serve
from station.ocpp import security
from station.ocpp.connection import CsmsConnection
from station.ocpp.settings import Settings
from station.runtime import StationRuntime
from station.service import Notifier, feed_watchdog
from station.store import Store, StoreError

log = structlog.get_logger("station.app")


@dataclass
class SimulatedLine:
    """The in-process simulator of `transport = "simulated"` and the virtual cable it sits on."""

    cable: VirtualNullModem
    simulator: SimulatedMeter
    server: object

    async def close(self) -> None:
        await self.server.shutdown()  # type: ignore[attr-defined]
        await self.cable.stop()


@dataclass
class Station:
    config: Config
    store: Store
    meter: Meter
    runtime: StationRuntime
    connection: CsmsConnection
    settings: Settings
    simulated: SimulatedLine | None = None
    page: DiagnosticsPage | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def serial_settings(config: Config, port: str | None = None) -> LineSettings:
    m = config.meter
    return LineSettings(
        port=port or m.port,
        baudrate=m.baudrate,
        parity=m.parity,  # type: ignore[arg-type]
        stopbits=m.stopbits,
        transport="tcp" if m.transport == "tcp" else "rtu",
    )


def build_meter(config: Config, port: str | None = None) -> Meter:
    bus = ModbusBus(serial_settings(config, port))
    device = ModbusDevice(bus, config.meter.device_id, latency=config.meter.latency)
    return build_driver(config.meter.model, device, config.meter.registers, config.meter.poll_interval)


async def start_simulated_line(config: Config) -> SimulatedLine:
    m = config.meter
    state_dir = Path(config.storage.path).parent
    cable = await VirtualNullModem(baudrate=m.baudrate, parity=m.parity, stopbits=m.stopbits).start()
    sim = build_simulator(
        m.model,
        state=Path(m.sim_state) if m.sim_state else state_dir / "meter-sim.json",
        ledger=Path(m.sim_ledger) if m.sim_ledger else None,
        device_id=m.device_id,
        power_w=m.sim_power_w,
        signing_time=m.sim_signing_time,
        registers=m.registers,
    )
    server = await serve(sim, cable.path_b, baudrate=m.baudrate)
    log.info("simulated meter on a virtual serial line", daemon_end=cable.path_a, meter_end=cable.path_b)
    return SimulatedLine(cable, sim, server)


@contextlib.asynccontextmanager
async def running_station(config: Config) -> AsyncIterator[Station]:
    """Start every part; on exit shut them down in the safe order."""
    store = Store(config.storage.path)
    simulated: SimulatedLine | None = None
    try:
        port = None
        if config.meter.transport == "simulated":
            simulated = await start_simulated_line(config)
            port = simulated.cable.path_a
        meter = build_meter(config, port)
        connector_ids = tuple(range(1, config.station.connectors + 1))
        core = ChargingStation(connector_ids)
        runtime = StationRuntime(core, store, meter, station_id=config.station.id)
        await runtime.start()
        settings = Settings(store, connector_ids, lambda: runtime.meter_state.public_key_hex)
        runtime.authorizer = Authorizer(
            store,
            offline_allowed=lambda: settings.value("LocalAuthorizeOffline") == "true",
            list_enabled=lambda: settings.value("LocalAuthListEnabled") == "true",
            cache_enabled=lambda: settings.value("AuthorizationCacheEnabled") == "true",
        )
        runtime.sample_interval = lambda: settings.int_value("MeterValueSampleInterval")
        runtime.aligned_interval = lambda: settings.int_value("ClockAlignedDataInterval")
        runtime.sign_aligned = lambda: settings.value("AlignedDataSignReadings") == "true"
        runtime.ended_interval = lambda: settings.int_value("TxEndedInterval")
        runtime.stop_on_invalid_id = lambda: settings.value("StopTxOnInvalidId") == "true"
        settings.listeners.append(lambda _name, _value: runtime.sampling_changed())
        connection = CsmsConnection(config, runtime, store, settings)
        store.security_event(security.STARTUP, f"station started, security profile {connection.security.profile}")
        if connection.security.profile == 0:
            log.warning("security profile 0: the CSMS connection is neither authenticated nor encrypted")
        station = Station(config, store, meter, runtime, connection, settings, simulated)
        station.tasks.append(asyncio.create_task(connection.run(), name="csms connection"))
        diagnostics = DiagnosticsServer(station, config.diagnostics.socket) if config.diagnostics.socket else None
        if diagnostics is not None:
            await diagnostics.start()
        page = None
        if config.diagnostics.http:
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
            await runtime.close()
            await connection.close()
            for task in station.tasks:
                task.cancel()
            for task in station.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    finally:
        if simulated is not None:
            await simulated.close()
        store.close()


def status_line(station: Station) -> str:
    """One line for systemd's STATUS=: what the station is doing right now."""
    state = station.connection.state
    if state.connected:
        csms = f"CSMS connected (OCPP {state.version})"
    else:
        csms = "CSMS unreachable" if state.last_error else "CSMS connecting"
    meter = "meter up" if station.runtime.meter_state.link_up else "meter DOWN"
    parts = [csms, meter]
    for connector in station.runtime.core.connectors.values():
        text = f"connector {connector.id} {connector.phase.value}"
        if connector.transaction is not None:
            text += f" ({connector.transaction.ref[:8]})"
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
        await asyncio.wait([reset, stopped, *station.tasks], return_when=asyncio.FIRST_COMPLETED)
        if (problem := ended_loop(station)) is not None and not stopped.done():
            # Never a daemon that looks alive but no longer talks to the CSMS: stop properly and let systemd start a
            # fresh one (the watchdog is withheld meanwhile, should the shutdown itself hang).
            task = next(t for t in station.tasks if t.done())
            error = None if task.cancelled() else task.exception()
            log.critical("a loop the station needs ended; stopping for a restart", problem=problem, exc_info=error)
            code = FAILURE_EXIT_CODE
            notifier.stopping(f"{problem}; restarting")
        elif reset.done() and not stopped.done():
            code = RESET_EXIT_CODE
            station.store.security_event(security.RESET, "reset requested by the CSMS")
            notifier.stopping("reset requested by the CSMS: delivering what is queued, then restarting")
            await _drain_outbox(station, timeout=10.0)
        else:
            notifier.stopping("stopping: finishing meter work, flushing the store, closing the CSMS connection")
        reset.cancel()
        stopped.cancel()
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
