"""The floors of issue 22: the best a plain Python program does on this machine, measured in the same run as the
station's figures, so that each figure can be given as a ratio that means the same on any machine.

- import floor: a fresh interpreter importing the daemon's dependency set and exiting (wall time, and its RSS right
  after the imports: the memory floor);
- round-trip floor: a bare `ocpp`-library client and server on loopback exchanging the backlog's transaction
  messages one at a time, nothing stored;
- crypto floor: `cryptography`'s own ECDSA verify rate for the curves and payload of the OCMF verification bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# What the daemon cannot do without, whatever its configuration: both OCPP versions' message classes and the
# library's schema validation, the WebSocket client, the Modbus client, structlog, cryptography's EC, sqlite3.
DEPENDENCIES = (
    "import ocpp.messages, ocpp.v16, ocpp.v201, ocpp.v16.call, ocpp.v16.call_result, ocpp.v201.call, "
    "ocpp.v201.call_result\n"
    "import websockets.asyncio.client\n"
    "import pymodbus.client\n"
    "import structlog\n"
    "import sqlite3\n"
    "from cryptography.hazmat.primitives.asymmetric import ec\n"
    "from cryptography.hazmat.primitives import hashes, serialization\n"
)
_REPORT_RSS = (
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'):\n"
    "        print(int(line.split()[1]) / 1024)\n"
)

# The OCMF verification bench's payload (bench/__main__.py) and curves.
OCMF_PAYLOAD = '{"FV":"1.0","PG":"T1","RD":[{"TX":"B","RV":1.000,"RU":"kWh"}]}'
CURVES: tuple[tuple[str, ec.EllipticCurve], ...] = (
    ("P-256", ec.SECP256R1()),
    ("brainpoolP384r1", ec.BrainpoolP384R1()),
)


def compile_station() -> None:
    """Byte-compile the station's modules, as installing its wheel does: under PYTHONDONTWRITEBYTECODE (or in a
    fresh checkout) every `station run` would compile its sources again, while the dependencies, installed by pip,
    come compiled; the start-up ratio would then measure the compiler."""
    import compileall

    import station

    compileall.compile_dir(Path(station.__file__).parent, quiet=1)


def import_floor(runs: int) -> dict[str, float]:
    """Median wall time of `python -c <the dependency imports>` (start to exit, as `station run` is timed start to
    BootNotification) and the median RSS right after the imports."""
    times: list[float] = []
    rss: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", DEPENDENCIES + _REPORT_RSS], capture_output=True, text=True, check=True
        ).stdout
        times.append(time.perf_counter() - t0)
        rss.append(float(out.split()[-1]))
    return {"import_s": round(statistics.median(times), 3), "rss_mb": round(statistics.median(rss), 1)}


async def roundtrip_floor(messages: int) -> float:
    """StartTransaction / StopTransaction pairs, one CALL at a time, between `ocpp.v16.ChargePoint`s over a
    loopback WebSocket (with the library's schema validation on both sides); messages per second."""
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call, call_result
    from ocpp.v16.enums import Action, AuthorizationStatus, Reason
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    class Csms(ChargePoint):  # type: ignore[misc]
        ids = iter(range(1, 10**9))

        @on(Action.start_transaction)  # type: ignore[untyped-decorator]
        def on_start(self, **_: Any) -> call_result.StartTransaction:
            return call_result.StartTransaction(
                transaction_id=next(self.ids), id_tag_info={"status": AuthorizationStatus.accepted}
            )

        @on(Action.stop_transaction)  # type: ignore[untyped-decorator]
        def on_stop(self, **_: Any) -> call_result.StopTransaction:
            return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    async def handle(connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await Csms("FLOOR", connection).start()

    server = await serve(handle, "127.0.0.1", 0, subprotocols=["ocpp1.6"])  # type: ignore[list-item]
    port = server.sockets[0].getsockname()[1]
    try:
        async with connect(f"ws://127.0.0.1:{port}/ocpp/FLOOR", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            cp = ChargePoint("FLOOR", ws)
            reader = asyncio.create_task(cp.start())
            try:
                now = datetime.now(UTC).isoformat()
                t0 = time.perf_counter()
                for i in range(messages // 2):
                    started = await cp.call(call.StartTransaction(1, "BACKLOG", i, now))
                    await cp.call(
                        call.StopTransaction(i + 1, now, started.transaction_id, id_tag="BACKLOG", reason=Reason.local)
                    )
                elapsed = time.perf_counter() - t0
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await reader
    finally:
        server.close()
        await server.wait_closed()
    return round(2 * (messages // 2) / elapsed, 1)


def floor_verifier(key: ec.EllipticCurvePrivateKey) -> Callable[[], None]:
    """One `cryptography` ECDSA-SHA256 verify of a DER signature over the OCMF bench's payload, key already loaded."""
    data = OCMF_PAYLOAD.encode()
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    return lambda: public.verify(signature, data, ec.ECDSA(hashes.SHA256()))


def interleaved_rates(
    figure: Callable[[], object], floor: Callable[[], object], seconds: float, slice_s: float = 0.05
) -> tuple[float, float]:
    """Calls per second of `figure` and of `floor`, measured in alternating slices over `seconds` each: a machine
    whose load changes during the run slows both alike, and the ratio stays."""
    counts = [0, 0]
    spent = [0.0, 0.0]
    while spent[0] < seconds or spent[1] < seconds:
        for i, fn in enumerate((figure, floor)):
            n, t0 = 0, time.perf_counter()
            while (now := time.perf_counter()) - t0 < slice_s:
                fn()
                n += 1
            counts[i] += n
            spent[i] += now - t0
    return round(counts[0] / spent[0]), round(counts[1] / spent[1])


def crypto_floor(seconds: float) -> dict[str, float]:
    """`cryptography`'s verify rate per curve, alone."""
    out: dict[str, float] = {}
    for name, curve in CURVES:
        verify = floor_verifier(ec.generate_private_key(curve))
        out[name] = interleaved_rates(verify, verify, seconds / 2)[1]
    return out


def ratio(figure: float, floor: float) -> float:
    return round(figure / floor, 3) if floor else float("nan")


if __name__ == "__main__":  # `python -m bench.floors`: the floors alone
    print(
        json.dumps(
            {
                **import_floor(3),
                "roundtrip_msgs_per_s": asyncio.run(roundtrip_floor(400)),
                "verify_per_s": crypto_floor(0.5),
            }
        )
    )
