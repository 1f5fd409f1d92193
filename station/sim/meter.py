"""`station sim meter` (also `station meter-sim`): a simulated meter served as Modbus RTU on a serial device.

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
from station.meter.sim.server import build_simulator, serve

log = structlog.get_logger("station.sim.meter")

DEFAULT_STATE_DIR = Path("/tmp/station-dev")  # config/dev.toml names the same place


def _make_link(link: Path, target: str) -> None:
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise SystemExit(f"sim meter: {link} exists and is not a symlink; give another --link")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


async def run_sim_meter(args: argparse.Namespace) -> int:
    own_cable = args.port is None
    state_dir = Path(args.state_dir) if args.state_dir else DEFAULT_STATE_DIR
    # Files default into the state directory when this command makes its own cable or is given --state-dir; with
    # only --port it behaves as `station meter-sim` always did (memory and ledger only where asked).
    use_dir = own_cable or args.state_dir is not None
    if use_dir:
        state_dir.mkdir(parents=True, exist_ok=True)
    state = Path(args.state) if args.state else (state_dir / "meter.json" if use_dir else None)
    ledger = Path(args.ledger) if args.ledger else (state_dir / "ledger.jsonl" if use_dir else None)
    sim = build_simulator(
        args.model,
        state=state,
        ledger=ledger,
        device_id=args.device_id,
        power_w=args.power_w,
        signing_time=args.signing_time,
    )
    cable: VirtualNullModem | None = None
    link: Path | None = None
    port = args.port
    if own_cable:
        cable = await VirtualNullModem().start()
        port = cable.path_b
        link = Path(args.link) if args.link else state_dir / "meter-tty"
        _make_link(link, cable.path_a)
    server = await serve(sim, port, baudrate=args.baudrate)
    log.info(
        "meter simulator serving", model=args.model, port=port, device_id=args.device_id, public_key=sim.public_key_hex
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if link and cable:
            where = f"the daemon's port is {link} (-> {cable.path_a})"
        else:
            where = f"serving on {port} (the daemon opens the other end of its cable)"
        print(f"meter simulator {args.model}, device id {args.device_id}: {where}", flush=True)
        print(f"  memory {state or '(not kept)'}; ledger {ledger or '(none)'}; Ctrl-C stops", flush=True)
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
