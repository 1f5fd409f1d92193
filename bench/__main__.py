"""`python -m bench [--quick] [--json] [--only PART]`: the figures of issues 7 and 17, measured on this machine,
each beside a floor measured in the same run (issue 22, bench/floors.py) so that its ratio means the same anywhere.

Everything runs for real: the daemon (in-process or as `station run`), the local CSMS on loopback, the smart-me
simulator behind a wire-time-emulating virtual serial line (each byte released after its transmission time at the
configured baud rate and serial settings). Wire times are computed from the frames, never hard-coded.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import (
    SIGNING_TIME,
    STATION,
    SessionFrames,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    start_wire_time,
    startup_wire_time,
    station_process,
    station_toml,
    stop_wire_time,
)
from bench.evses import BAUD, COUNTS, measure_evses, parse_counts
from bench.evses import PLAIN as EVSE_PLAIN
from bench.evses import RATIOS as EVSE_RATIOS
from bench.floors import (
    CURVES,
    OCMF_PAYLOAD,
    compile_station,
    floor_verifier,
    import_floor,
    interleaved_rates,
    ratio,
    roundtrip_floor,
)
from bench.meterline import meter_line
from bench.smart import TARGETS as SMART_TARGETS
from bench.smart import measure_smart
from station.app import running_station
from station.bus import LineSettings
from station.bus.codec import str_to_regs
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.demo.session import extract_signed_record
from station.meter import ocmf
from station.meter.interface import MeterTransactionRequest
from station.meter.smartme import metadata_json
from station.store import Store


def config(workdir: Path, url: str, baud: int, **meter: Any) -> dict[str, Any]:
    """The in-process station of the backlog figure: its meter simulated in the daemon (no wire is measured)."""
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "baudrate": baud,
            "simulator": {"signing_time": SIGNING_TIME, "state": str(workdir / "m.json"), **meter},
        },
        "storage": {"path": str(workdir / "s.db")},
    }


def _median(values: list[float]) -> float:
    return round(sorted(values)[len(values) // 2], 3)


async def _idle(csms: LocalCsms, mark: int) -> None:
    """The EVSE is Available again and the meter's release is off the line."""
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available", after=mark, timeout=60)
    await asyncio.sleep(0.3)


async def sessions(baud: int, count: int) -> dict[str, float]:
    """Remote start and stop latencies against the wire time of the frames each step puts on the line, in the shape
    of a station: `station run` in its own process, its meter the simulator in another behind a wire-time-emulating
    pty pair (bench/meterline.py), the CSMS here. Each latency runs from the CSMS sending the request to the
    StartTransaction / StopTransaction reaching the CSMS; the bytes are what the line carried."""
    settings = LineSettings("bench", baudrate=baud)
    request = MeterTransactionRequest("x", 1, "BENCH", STATION, datetime.now(UTC))
    meta_regs = len(str_to_regs(metadata_json(request)))
    start_ratios: list[float] = []
    stop_ratios: list[float] = []
    efficiencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, meter_line(baud, Path(tmp) / "m.json", SIGNING_TIME) as line:
        workdir = Path(tmp)
        csms = await LocalCsms().start()
        path = workdir / "station.toml"
        path.write_text(station_toml(workdir, csms.url, 1, line.port, baud))
        try:
            with station_process(path):
                await _idle(csms, 0)
                for _ in range(count):
                    mark = len(csms.received)
                    b0 = line.bytes_on_line()
                    t0 = datetime.now(UTC)
                    await csms.remote_start(STATION, "BENCH")
                    start, tx_id = await csms.wait_session_started(STATION, after=mark)
                    t1 = start.at
                    b1 = line.bytes_on_line()
                    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging", after=mark)
                    await asyncio.sleep(0.3)
                    b2 = line.bytes_on_line()
                    t2 = datetime.now(UTC)
                    await csms.remote_stop(STATION, int(tx_id))
                    stop = await csms.wait_session_ended(STATION, after=mark)
                    t3 = stop.at
                    await _idle(csms, mark)
                    b3 = line.bytes_on_line()
                    record, _ = extract_signed_record(stop.payload)
                    frames = SessionFrames.of(len(record.encode()), meta_regs)
                    start_ratios.append((t1 - t0).total_seconds() / start_wire_time(frames, settings))
                    stop_ratios.append((t3 - t2).total_seconds() / stop_wire_time(frames, settings))
                    efficiencies.append(((b1 - b0) + (b3 - b2)) / sum(frames.bytes()))
        finally:
            await csms.stop()
    return {
        "start_ratio": _median(start_ratios),
        "stop_ratio": _median(stop_ratios),
        "wire_efficiency": _median(efficiencies),
    }


def ocmf_verify_per_s(seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """`ocmf.verify` of a signed record (text and hex key, as the daemon and `station verify` get them) and, in
    alternating slices, the crypto floor: `cryptography`'s verify of the same payload on the same key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    figures: dict[str, float] = {}
    floors: dict[str, float] = {}
    for name, curve in CURVES:
        key = ec.generate_private_key(curve)
        text = ocmf.sign_payload(OCMF_PAYLOAD, key)
        public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo).hex()
        assert ocmf.verify(text, public).valid
        figures[name], floors[name] = interleaved_rates(
            functools.partial(ocmf.verify, text, public), floor_verifier(key), seconds
        )
    return figures, floors


async def daemon_figures(baud: int, idle_seconds: float, charging_seconds: float, n_sessions: int) -> dict[str, Any]:
    """`station run` as its own process: start-up, idle and charging CPU, peak RSS over sessions and its growth. Its
    meter is the simulator in a process of its own on a wire-time-emulating pty pair (bench/meterline.py), the daemon
    on an `rtu` bus, as on a real station (a simulator in the daemon would load pymodbus's server and aiohttp)."""
    with tempfile.TemporaryDirectory() as tmp, meter_line(baud, Path(tmp) / "m.json", SIGNING_TIME) as line:
        workdir = Path(tmp)
        csms = await LocalCsms().start()
        path = workdir / "station.toml"
        path.write_text(station_toml(workdir, csms.url, 1, line.port, baud))
        t0 = time.perf_counter()
        try:
            with station_process(path) as proc:
                await csms.wait_for("BootNotification", timeout=60)
                startup = time.perf_counter() - t0
                await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available", timeout=60)
                c0 = proc_cpu_seconds(proc.pid)
                await asyncio.sleep(idle_seconds)
                idle = (proc_cpu_seconds(proc.pid) - c0) / idle_seconds * 3600
                # Charging with live readings every second (MeterValues each second: read, queue, send).
                await csms.change_configuration(STATION, "MeterValueSampleInterval", "1")
                await csms.remote_start(STATION, "BENCH")
                _, tx_id = await csms.wait_session_started(STATION)
                c1 = proc_cpu_seconds(proc.pid)
                await asyncio.sleep(charging_seconds)
                charging = (proc_cpu_seconds(proc.pid) - c1) / charging_seconds * 3600
                await csms.remote_stop(STATION, int(tx_id))
                await csms.wait_session_ended(STATION)
                await csms.change_configuration(STATION, "MeterValueSampleInterval", "0")
                curve: dict[str, float] = {}  # RSS after every tenth of the sessions: growth that flattens is a cache
                for i in range(n_sessions):
                    mark = len(csms.received)
                    await csms.wait_for(
                        "StatusNotification", lambda p: p["status"] == "Available", after=max(0, mark - 3)
                    )
                    await csms.remote_start(STATION, "BENCH")
                    _, tx_id = await csms.wait_session_started(STATION, after=mark)
                    await csms.remote_stop(STATION, int(tx_id))
                    await csms.wait_session_ended(STATION, after=mark)
                    if (i + 1) % max(1, n_sessions // 10) == 0:
                        curve[str(i + 1)] = round(proc_peak_rss_mb(proc.pid), 2)
                peak = proc_peak_rss_mb(proc.pid)
        finally:
            await csms.stop()
    return {
        "startup_s": round(startup, 3),
        "startup_meter_wire_s": round(startup_wire_time(baud), 3),  # part of startup_s: the meter's reads
        "idle_cpu_s_per_h": round(idle, 2),
        "charging_cpu_s_per_h": round(charging, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_growth_mb": round(peak - next(iter(curve.values()), peak), 1),  # from the first tenth on
        "sessions_for_rss": n_sessions,
        "rss_mb_by_session": curve,
    }


async def backlog(messages: int) -> float:
    """Queued transaction messages drained after reconnect, messages per second on loopback."""
    from datetime import UTC, datetime

    from station.core.model import StartSource, Transaction

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = Store(workdir / "s.db")
        now = datetime.now(UTC)
        for i in range(messages // 2):
            tx = Transaction(f"tx{i:06d}", 1, "BACKLOG", StartSource.REMOTE, now, started_at=now, meter_start_wh=i)
            store.transaction_started(tx, offline=True)
            store.transaction_ended(
                Transaction(tx.ref, 1, "BACKLOG", StartSource.REMOTE, now, started_at=now, meter_start_wh=i,
                            stopped_at=now, meter_stop_wh=i + 1),
                offline=True,
            )  # fmt: skip
        store.set_setting("accepted_once", "1")
        store.close()
        csms = await LocalCsms().start()
        try:
            async with running_station(parse_config(config(workdir, csms.url, 115200))) as station:
                t0 = time.perf_counter()
                await csms.wait_until(lambda: station.store.outbox_depth() == 0, timeout=3600)
                elapsed = time.perf_counter() - t0
        finally:
            await csms.stop()
    return round(messages / elapsed, 1)


# Figures with no floor of their own (absolute, or a growth that should be nothing).
TARGETS = {
    "startup_meter_wire_s": "reported",
    "idle_cpu_s_per_h": "< 2",
    "charging_cpu_s_per_h": "reported",
    "rss_growth_mb": "~ 0",
}

# (ratio key, absolute figure, floor, target of the ratio): issue 22, each figure beside a floor measured in the same
# run. The wire ratios are their own figure: the floor is the wire time of the frames (bench/common.py).
RATIOS = (
    # Issue 22's targets. The start meets its own at 9600 baud, not at 19200 (README: where the rest goes).
    ("start_ratio", "", "wire", "<= 1.05"),
    ("stop_ratio", "", "wire", "<= 1.05"),
    ("wire_efficiency", "", "wire", "<= 1.1"),
    ("startup_ratio", "startup_s", "import_s", "<= 1.5"),
    ("rss_ratio", "peak_rss_mb", "rss_mb", "<= 1.15"),
    ("backlog_ratio", "backlog_msgs_per_s", "roundtrip_msgs_per_s", ">= 0.5"),
    ("ocmf_verify_ratio", "ocmf_verify_per_s", "verify_per_s", ">= 0.8"),
)


PARTS = ("sessions", "daemon", "backlog", "verify", "evses", "smart")


async def measure(
    quick: bool, say: Callable[[str], None], only: str | None = None, evse_counts: tuple[int, ...] = COUNTS
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    parts = PARTS if only is None else (only,)
    for baud in (9600, 19200):
        if "sessions" in parts:
            say(f"sessions at {baud} baud ...")
            figures = await sessions(baud, 3 if quick else 20)
            if baud == 9600:
                result.update(figures)
            else:
                result["19200"] = figures
    floors: dict[str, Any] = {}
    if "daemon" in parts:
        say("import floor: the dependency set in a fresh interpreter ...")
        compile_station()
        floors.update(import_floor(3 if quick else 7))
        say("daemon process figures ...")
        result.update(await daemon_figures(9600, 10 if quick else 120, 10 if quick else 120, 20 if quick else 1000))
        result["startup_ratio"] = ratio(result["startup_s"], floors["import_s"])
        result["rss_ratio"] = ratio(result["peak_rss_mb"], floors["rss_mb"])
    if "backlog" in parts:
        messages = 1000 if quick else 10000
        say("round-trip floor: bare ocpp client and server ...")
        floors["roundtrip_msgs_per_s"] = await roundtrip_floor(messages // 2)
        say("offline backlog ...")
        result["backlog_msgs_per_s"] = await backlog(messages)
        result["backlog_ratio"] = ratio(result["backlog_msgs_per_s"], floors["roundtrip_msgs_per_s"])
    if "verify" in parts:
        result["ocmf_verify_per_s"], floors["verify_per_s"] = ocmf_verify_per_s(1.0 if quick else 5.0)
        result["ocmf_verify_ratio"] = {
            curve: ratio(rate, floors["verify_per_s"][curve]) for curve, rate in result["ocmf_verify_per_s"].items()
        }
    if floors:
        result["floors"] = floors
    if "evses" in parts:
        result.update(await measure_evses(evse_counts, 2 if quick else 12, say))
    if "smart" in parts:
        say("composite schedule of 10 stacked profiles of 1024 periods ...")
        result.update(measure_smart(quick))
    return result


def _rows(
    result: dict[str, Any], ratios: tuple[tuple[str, str, str, str], ...] = RATIOS
) -> list[tuple[str, Any, Any, Any, str]]:
    """(name, figure, floor, ratio, target) of every ratio the result has, one row per curve for the verify rate."""
    rows: list[tuple[str, Any, Any, Any, str]] = []
    floors = result.get("floors", {})
    for key, figure, floor, target in ratios:
        if key not in result:
            continue
        if floor == "wire":
            rows.append((key, "", "wire", result[key], target))
            if key in result.get("19200", {}):
                rows.append((f"{key} @19200", "", "wire", result["19200"][key], target))
        elif isinstance(result[key], dict):
            for sub, value in result[key].items():
                rows.append((f"{key} {sub}", result[figure][sub], floors[floor][sub], value, target))
        else:
            rows.append((key, result[figure], floors[floor], result[key], target))
    return rows


def print_table(result: dict[str, Any]) -> None:
    rows = _rows(result)
    if rows:
        print(f"\n{'ratio (9600 baud)':34} {'figure':>10} {'floor':>10} {'ratio':>8}  target")
        for name, figure, floor, value, target in rows:
            print(f"{name:34} {figure!s:>10} {floor!s:>10} {value!s:>8}  {target}")
    plain = [key for key in TARGETS if key in result]
    if plain:
        print(f"\n{'figure':34} {'value':>10}  target")
        for key in plain:
            print(f"{key:34} {json.dumps(result[key]):>10}  {TARGETS[key]}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a run under a minute or two, fewer samples")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--only", choices=PARTS, help="run one part of the bench")
    parser.add_argument(
        "--evse-counts",
        default=",".join(map(str, COUNTS)),
        metavar="N,N",
        help="EVSE counts of the evses part (default 2,4), each against one EVSE",
    )
    args = parser.parse_args()
    try:
        counts = parse_counts(args.evse_counts)
    except ValueError as exc:
        parser.error(str(exc))
    from station.logs import configure

    configure("error", "console")
    result = asyncio.run(measure(args.quick, (lambda _: None) if args.json else print, args.only, counts))
    if args.json:
        print(json.dumps(result))
        return 0
    print_table(result)
    if "rss_mb_by_session" in result:
        curve = ", ".join(f"{n}: {mb}" for n, mb in result["rss_mb_by_session"].items())
        print(f"\npeak RSS (MB) after session n of `station run`: {curve}")
    evses = [key for key in result if key.startswith("evses_")]
    if evses:
        print(f"\nseveral EVSEs on one {BAUD} baud bus, MeterValues every second ({', '.join(evses)})")
        print(f"{'ratio':34} {'figure':>10} {'floor':>10} {'ratio':>8}  target")
        for e in evses:
            for name, figure, floor, value, target in _rows(result[e], EVSE_RATIOS):
                print(f"{e + ' ' + name:34} {figure!s:>10} {floor!s:>10} {value!s:>8}  {target}")
        print(f"{'figure':34} {'value':>10}  target")
        for e in evses:
            for key in (*EVSE_PLAIN, "sessions"):
                print(f"{e + ' ' + key:34} {json.dumps(result[e].get(key)):>10}  {EVSE_PLAIN.get(key, '')}")
    if "composite_schedule_us" in result:
        print("\ncomposite schedule, 10 stacked profiles of 1024 periods, one day")
        for key in (*SMART_TARGETS, "composite_periods", "composite_evaluations", "composite_consistent"):
            print(f"{key:24} {json.dumps(result.get(key)):>14}  {SMART_TARGETS.get(key, '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
