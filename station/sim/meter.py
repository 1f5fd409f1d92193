"""`station sim meter` (also `station meter-sim`): simulated meters served as Modbus RTU on one serial device, one
(`--model`, `--device-id`, `--state`, `--ledger`) or several (`--meter MODEL:DEVICE_ID[:state=FILE,ledger=FILE,
power_w=W,signing_time=S]`, repeated), each at its own device id with its own key, memory and ledger.

Either on a port the user gives (`--port`, e.g. one end of `station sim nullmodem`), or on its own virtual cable with
a symlink at a fixed path (`--link`, by default STATE_DIR/meter-tty) to the daemon's end, so that a config such as
config/dev.toml can name the meter's port once and for all. It owns that symlink (made at start, removed at exit,
never over anything but a symlink) and the simulator's files; it never touches the daemon's store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

import structlog

from station.meter.nullmodem import VirtualNullModem
from station.meter.sim.base import SimulatedMeter
from station.meter.sim.server import MeterSpec, build_simulator, check_specs, parse_meter_spec, serve

log = structlog.get_logger("station.sim.meter")

DEFAULT_STATE_DIR = Path("/tmp/station-dev")  # config/dev.toml names the same place


def _make_link(link: Path, target: str) -> None:
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise SystemExit(f"sim meter: {link} exists and is not a symlink; give another --link")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def line_specs(args: argparse.Namespace) -> list[MeterSpec]:
    """The meters to serve: the repeated `--meter`s, or the one of the single-meter options. SystemExit says what is
    wrong."""
    try:
        if not args.meter:
            return [MeterSpec(args.model or "smartme", 1 if args.device_id is None else args.device_id)]
        single = [f"--{k.replace('_', '-')}" for k in ("model", "device_id", "state", "ledger") if getattr(args, k)]
        if single:
            raise ValueError(f"--meter gives each meter's model, device id and files: drop {', '.join(single)}")
        specs = [parse_meter_spec(text) for text in args.meter]
        check_specs(specs)
    except ValueError as exc:
        raise SystemExit(f"sim meter: {exc}") from None
    return specs


def build_line(args: argparse.Namespace, specs: list[MeterSpec], state_dir: Path | None) -> list[SimulatedMeter]:
    """One simulator per spec. Files default into `state_dir` when there is one: meter.json and ledger.jsonl for a
    single meter (as config/dev.toml expects), meter-<id>.json and ledger-<id>.jsonl for several."""
    sims = []
    for spec in specs:
        one = len(specs) == 1
        state = spec.state or (Path(args.state) if one and args.state else None)
        ledger = spec.ledger or (Path(args.ledger) if one and args.ledger else None)
        if state_dir is not None:
            state = state or state_dir / ("meter.json" if one else f"meter-{spec.device_id}.json")
            ledger = ledger or state_dir / ("ledger.jsonl" if one else f"ledger-{spec.device_id}.jsonl")
        try:
            sims.append(
                build_simulator(
                    spec.model,
                    state=state,
                    ledger=ledger,
                    device_id=spec.device_id,
                    power_w=args.power_w if spec.power_w is None else spec.power_w,
                    signing_time=args.signing_time if spec.signing_time is None else spec.signing_time,
                )
            )
        except (ValueError, OSError) as exc:
            raise SystemExit(f"sim meter: device id {spec.device_id} ({spec.model}): {exc}") from None
    return sims


async def run_sim_meter(args: argparse.Namespace) -> int:
    specs = line_specs(args)
    own_cable = args.port is None
    state_dir = Path(args.state_dir) if args.state_dir else DEFAULT_STATE_DIR
    # Files default into the state directory when this command makes its own cable or is given --state-dir; with
    # only --port it behaves as `station meter-sim` always did (memory and ledger only where asked).
    use_dir = own_cable or args.state_dir is not None
    if use_dir:
        state_dir.mkdir(parents=True, exist_ok=True)
    sims = build_line(args, specs, state_dir if use_dir else None)
    cable: VirtualNullModem | None = None
    link: Path | None = None
    port = args.port
    if own_cable:
        cable = await VirtualNullModem().start()
        port = cable.path_b
        link = Path(args.link) if args.link else state_dir / "meter-tty"
        _make_link(link, cable.path_a)
    server = await serve(sims, port, baudrate=args.baudrate)
    for spec, sim in zip(specs, sims, strict=True):
        key = sim.public_key_hex
        log.info("meter simulator serving", model=spec.model, port=port, device_id=sim.device_id, public_key=key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if link and cable:
            where = f"the daemon's port is {link} (-> {cable.path_a})"
        else:
            where = f"serving on {port} (the daemon opens the other end of its cable)"
        for spec, sim in zip(specs, sims, strict=True):
            print(f"meter simulator {spec.model}, device id {sim.device_id}: {where}", flush=True)
            print(f"  memory {sim.state_path or '(not kept)'}; ledger {sim.ledger_path or '(none)'}", flush=True)
        print("  Ctrl-C stops", flush=True)
        await stop.wait()
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        if cable is not None:
            await cable.stop()
        if link is not None and cable is not None:
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(link.readlink()) == cable.path_a:
                    link.unlink()
    return 0
