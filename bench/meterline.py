"""The meter of `station run` in the daemon figures: the smart-me simulator in a process of its own, behind a
wire-time-emulating pty pair (`VirtualNullModem`, each byte released after its transmission time), the daemon on a
`transport = "rtu"` bus on the other end. A real station has a real meter on a serial line and loads no simulator,
so the daemon's start-up, memory and CPU are measured in that shape (issue 22); the simulator's own work is no part
of them.

    python -m bench.meterline --baudrate 9600 --state FILE [--signing-time S] [--meters N]

(with `--meters N`, N simulators at device ids 1..N on the one line, the memory of meter n in FILE's directory as
FILE's stem + n: m.json -> m1.json, m2.json, ...)

prints the daemon's end (a /dev/pts path) on one line once it serves, and runs until SIGTERM or stdin closes. Each
line `bytes` on stdin is answered with a line of the bytes the line carried so far: `<towards the meters> <towards
the daemon>` (the figures' wire efficiency; the line counts what was on it, whoever sent it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import end_process


def state_file(state: Path, meters: int, n: int) -> Path:
    return state if meters == 1 else state.with_name(f"{state.stem}{n}{state.suffix}")


async def serve_line(baudrate: int, state: Path, signing_time: float, meters: int = 1) -> None:
    from station.meter.nullmodem import VirtualNullModem
    from station.meter.sim.server import build_simulator, serve

    cable = await VirtualNullModem(baudrate=baudrate).start()
    sims = [
        build_simulator(
            "smartme", state=state_file(state, meters, n), ledger=None, device_id=n, signing_time=signing_time
        )
        for n in range(1, meters + 1)
    ]
    server = await serve(sims, cable.path_b, baudrate=baudrate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin = sys.stdin.fileno()  # closed when the bench ends, also when it is killed
    pending = bytearray()

    def on_stdin() -> None:
        data = os.read(stdin, 256)
        if not data:
            stop.set()
            return
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if line.strip() == b"bytes":
                print(cable.bytes_a_to_b, cable.bytes_b_to_a, flush=True)

    loop.add_reader(stdin, on_stdin)
    print(cable.path_a, flush=True)
    try:
        await stop.wait()
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        await cable.stop()


@dataclass
class MeterLine:
    """The meters' process as the bench sees it: the port the daemon opens, and the line's byte count."""

    port: str
    proc: subprocess.Popen[str]

    def bytes_on_line(self) -> int:
        """Bytes the line carried so far, both directions."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("bytes\n")
        self.proc.stdin.flush()
        to_meters, to_daemon = self.proc.stdout.readline().split()
        return int(to_meters) + int(to_daemon)


@contextlib.contextmanager
def meter_line(baudrate: int, state: Path, signing_time: float, meters: int = 1) -> Iterator[MeterLine]:
    """Start the meters' process; yields it once it serves. The process ends when the block does."""
    args = ["--baudrate", str(baudrate), "--state", str(state), "--signing-time", str(signing_time)]
    args += ["--meters", str(meters)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.meterline", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port:
            raise RuntimeError(f"the meter simulator's process ended before serving (exit {proc.wait(10)})")
        yield MeterLine(port, proc)
    finally:
        end_process(proc, 10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.meterline")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--state", required=True, help="the simulator's memory file")
    parser.add_argument("--signing-time", type=float, default=0.5)
    parser.add_argument("--meters", type=int, default=1, choices=range(1, 17), metavar="N")
    args = parser.parse_args()
    from station.logs import configure

    configure("error", "console")
    asyncio.run(serve_line(args.baudrate, Path(args.state), args.signing_time, args.meters))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
