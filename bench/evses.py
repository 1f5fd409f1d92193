"""Several EVSEs on one bus (issue 17 item 11): `station run` with N EVSEs, each with its own smart-me simulator
(device ids 1..N, all in one process of their own: bench/meterline.py) on one RS-485 line at 9600 baud, a pty pair
that releases every byte after its transmission time, the daemon on an `rtu` bus; all charging with MeterValues
every second (MeterValueSampleInterval = 1) so that the line is busy with every neighbour's sampling while one EVSE
stops.

Two figures per N:

- stop -> signed record ratio: the time from the CSMS's RemoteStopTransaction to the StopTransaction carrying the
  signed record arriving at the CSMS, divided by the stop's wire time (bench/common.py: its frames with the RTU
  silence between each two, and the meter's signing time, as in the single-EVSE figure) plus one neighbour exchange
  (the largest sampling exchange, request and answer, that may be on the line when the stop's first frame wants it:
  the bus puts transaction work first, so it waits for at most that one). Worst and median over the stops, which go
  round the EVSEs while the others keep charging;
- peak RSS growth per extra EVSE: the daemon's peak RSS (VmHWM) with N EVSEs minus with 1 after the same number of
  stops, divided by N - 1 (the simulators are not in the daemon's process: what grows is the daemon's own).

In `--json` and the table they take the form of the other figures (issue 22): each ratio beside its figure and its
floor (`floors` of each `evses_N`): the worst and the median stop's time over that stop's wire time, and the peak
RSS over the peak with one EVSE (`rss_ratio`); the per-EVSE RSS growth and the MeterValues interval are plain.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    SIGNING_TIME,
    STATION,
    SessionFrames,
    proc_peak_rss_mb,
    station_process,
    station_toml,
    stop_wire_time,
    wire_time,
)
from bench.floors import ratio
from bench.meterline import meter_line
from station.bus import LineSettings, read_frame_sizes
from station.demo.csms import LocalCsms, Received
from station.demo.session import extract_signed_record

BAUD = 9600
COUNTS = (2, 4)
MAX_EVSES = 16  # --evse-counts is bounded: each EVSE is a meter on the one 9600 baud line
# The largest exchange a charging neighbour puts on the line between two samples: SmartMeMeter.live_values reads 12
# registers (energy import/export, power, voltages, currents); the status poll reads fewer.
NEIGHBOUR_READ_REGS = 12

# (ratio key, absolute figure, floor, target), as bench/__main__.py's RATIOS: the floor of each `evses_N` is in its
# own `floors`. The stop's floor is the wire time its stop needs (stop_wire_time), the RSS floor the same run with
# one EVSE.
RATIOS = (
    ("stop_ratio_worst", "stop_s_worst", "stop_wire_s_worst", "<= 1.15"),
    ("stop_ratio_median", "stop_s_median", "stop_wire_s_median", "<= 1.15"),
    ("rss_ratio", "peak_rss_mb", "rss_mb_one_evse", "reported"),
)
# Figures with no floor of their own.
PLAIN = {
    "rss_mb_per_extra_evse": "<= 2",
    "meter_values_interval_s": "reported",
}
TARGETS = {**{key: target for key, _, _, target in RATIOS}, **PLAIN}


def stop_allowance(record_bytes: int, settings: LineSettings) -> float:
    """The stop's own wire time (bench/common.py) and one neighbour exchange with the silences around it."""
    neighbour = wire_time(list(read_frame_sizes(NEIGHBOUR_READ_REGS)), settings) + 2 * settings.inter_frame_silence
    return stop_wire_time(SessionFrames.of(record_bytes, 0), settings) + neighbour


def _status_on(connector: int, *statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("connectorId") == connector and p.get("status") in statuses


def _stop_of(transaction_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: str(p.get("transactionId")) == transaction_id


def sample_intervals(meter_values: list[Received]) -> list[float]:
    """Seconds between consecutive MeterValues of each transaction, as the CSMS received them, sorted."""
    last: dict[Any, datetime] = {}
    out: list[float] = []
    for message in meter_values:
        tx = message.payload.get("transactionId")
        if tx in last:
            out.append((message.at - last[tx]).total_seconds())
        last[tx] = message.at
    return sorted(out)


async def _start(csms: LocalCsms, connector: int) -> str:
    mark = len(csms.received)
    status = await csms.remote_start(STATION, f"BENCH-{connector}", connector_id=connector)
    if status != "Accepted":
        raise RuntimeError(f"RemoteStartTransaction on connector {connector}: {status}")
    start, transaction_id = await csms.wait_session_started(STATION, after=mark, timeout=60)
    if start.payload.get("connectorId") != connector:
        raise RuntimeError(f"the start asked of connector {connector} arrived as {start.payload!r}")
    await csms.wait_for("StatusNotification", _status_on(connector, "Charging"), after=mark, timeout=60)
    return transaction_id


async def one_station(evses: int, stops: int) -> dict[str, Any]:
    """`station run` with `evses` EVSEs charging; `stops` stops going round them, each restarted afterwards.
    The stop ratios and the daemon's peak RSS."""
    settings = LineSettings("bench", baudrate=BAUD)
    stops_timed: list[tuple[float, float]] = []  # (elapsed, its wire time)
    with tempfile.TemporaryDirectory() as tmp, meter_line(BAUD, Path(tmp) / "m.json", SIGNING_TIME, evses) as line:
        workdir = Path(tmp)
        csms = await LocalCsms().start()
        path = workdir / "station.toml"
        path.write_text(station_toml(workdir, csms.url, evses, line.port, BAUD))
        try:
            with station_process(path) as proc:
                await csms.wait_for("BootNotification", timeout=60)
                for n in range(1, evses + 1):
                    await csms.wait_for("StatusNotification", _status_on(n, "Available"), timeout=60)
                if await csms.change_configuration(STATION, "MeterValueSampleInterval", "1") != "Accepted":
                    raise RuntimeError("MeterValueSampleInterval = 1 was not accepted")
                transactions = {n: await _start(csms, n) for n in range(1, evses + 1)}
                sampled_from = len(csms.messages("MeterValues"))
                for i in range(stops):
                    n = i % evses + 1
                    # Let the neighbours sample for a while, and land the stop at a different phase of the 1 s sampling.
                    await asyncio.sleep(1.0 + (i * 0.37) % 1.0)
                    mark = len(csms.received)
                    t0 = datetime.now(UTC)
                    status = await csms.remote_stop(STATION, int(transactions[n]))
                    if status != "Accepted":
                        raise RuntimeError(f"RemoteStopTransaction on connector {n}: {status}")
                    stop = await csms.wait_for("StopTransaction", _stop_of(transactions[n]), after=mark, timeout=60)
                    elapsed = (stop.at - t0).total_seconds()  # until the StopTransaction reached the CSMS
                    record, _ = extract_signed_record(stop.payload)
                    stops_timed.append((elapsed, stop_allowance(len(record.encode()), settings)))
                    await csms.wait_for("StatusNotification", _status_on(n, "Available"), after=mark, timeout=60)
                    transactions[n] = await _start(csms, n)
                intervals = sample_intervals(csms.messages("MeterValues")[sampled_from:])
                peak = proc_peak_rss_mb(proc.pid)
        finally:
            await csms.stop()
    stops_timed.sort(key=lambda s: s[0] / s[1])
    worst = stops_timed[-1] if stops_timed else (math.nan, math.nan)
    median = stops_timed[len(stops_timed) // 2] if stops_timed else (math.nan, math.nan)
    return {
        # the worst and the median stop by ratio: its time, its wire time (the floor) and their ratio
        "stop_s_worst": round(worst[0], 3),
        "stop_s_median": round(median[0], 3),
        "stop_ratio_worst": ratio(worst[0], worst[1]),
        "stop_ratio_median": ratio(median[0], median[1]),
        "floors": {"stop_wire_s_worst": round(worst[1], 3), "stop_wire_s_median": round(median[1], 3)},
        "peak_rss_mb": round(peak, 2),
        "sessions": stops,
        # the median time between two MeterValues of one transaction while the stops went round
        "meter_values_interval_s": round(intervals[len(intervals) // 2], 3) if intervals else math.nan,
    }


async def measure_evses(
    counts: tuple[int, ...], stops: int, say: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """`evses_N` for each N of `counts`: the stop ratios with N EVSEs on one bus, and peak RSS per extra EVSE
    against the same run with one EVSE."""
    say(f"one EVSE on a {BAUD} baud bus (the RSS baseline) ...")
    base = await one_station(1, stops)
    out: dict[str, dict[str, Any]] = {}
    for n in counts:
        say(f"{n} EVSEs on one {BAUD} baud bus, MeterValues every second, {stops} stops ...")
        figures = await one_station(n, stops)
        figures["rss_mb_per_extra_evse"] = round((figures["peak_rss_mb"] - base["peak_rss_mb"]) / (n - 1), 2)
        figures["peak_rss_mb_one_evse"] = base["peak_rss_mb"]
        figures["floors"]["rss_mb_one_evse"] = base["peak_rss_mb"]
        figures["rss_ratio"] = ratio(figures["peak_rss_mb"], base["peak_rss_mb"])
        out[f"evses_{n}"] = figures
    return out


def parse_counts(text: str) -> tuple[int, ...]:
    """`--evse-counts 2,4`: EVSE counts 2..MAX_EVSES (one is the baseline every count is compared with)."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--evse-counts wants whole numbers separated by commas, not {text!r}") from None
    if not counts or len(counts) > 4 or any(not 2 <= n <= MAX_EVSES for n in counts):
        raise ValueError(f"--evse-counts wants one to four counts, each 2..{MAX_EVSES}, not {text!r}")
    return counts
