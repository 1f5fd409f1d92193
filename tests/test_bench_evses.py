"""`python -m bench --only evses` (issue 17 item 11) in a tiny configuration: 2 EVSEs on one wire-time-emulating
9600 baud line, 2 stops. Checks the JSON it prints has the figures and that they are sane; not the targets (this is a
wall-clock measurement on a shared machine)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import SessionFrames, station_toml, stop_wire_time
from bench.evses import RATIOS, parse_counts, stop_allowance
from station.bus import LineSettings
from station.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # three `station run` processes on a 9600 baud line
def test_bench_evses_part_prints_both_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "evses", "--quick", "--evse-counts", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert list(result) == ["evses_2"]  # --only evses: nothing else ran
    figures = result["evses_2"]
    assert figures["sessions"] == 2
    for key in ("stop_ratio_worst", "stop_ratio_median", "rss_mb_per_extra_evse", "meter_values_interval_s"):
        assert math.isfinite(figures[key]), key
    # the form of the other figures: each ratio is its figure over its floor of the same run (issue 22)
    for key, figure, floor, _ in RATIOS:
        assert figures[key] == pytest.approx(figures[figure] / figures["floors"][floor], rel=0.01, abs=0.002), key
    # The stop took at least about the wire and signing time it needs: a ratio far under 1 means the line did not
    # emulate wire time, or the figure measures something else.
    assert 0.5 < figures["stop_ratio_median"] <= figures["stop_ratio_worst"] < 20
    assert 0 < figures["peak_rss_mb"] < 500 and 0 < figures["peak_rss_mb_one_evse"] < 500
    assert abs(figures["rss_mb_per_extra_evse"]) < 50
    assert 0.5 < figures["meter_values_interval_s"] < 5  # MeterValueSampleInterval = 1 took effect


def test_the_stop_allowance_is_the_stops_wire_time_plus_one_neighbour_exchange() -> None:
    settings = LineSettings("x", baudrate=9600)
    own = stop_wire_time(SessionFrames.of(700, 0), settings)
    neighbour = stop_allowance(700, settings) - own
    # one FC03 read of 12 registers: 8 bytes out, 29 back, the silence between them and on each side
    assert neighbour == pytest.approx((8 + 29) * settings.byte_time + 3 * settings.inter_frame_silence)


def test_a_stops_wire_time_counts_every_frame_and_the_silence_between_each_two() -> None:
    """Modbus over Serial Line v1.02 §2.5.1.1: at least 3.5 characters of silence separate any two frames, a
    request and its answer too. The stop: check (8 out, 21 back), the end command out (8); the meter signs; the poll's
    answer (21) and the record's reads (700 bytes: 350 registers in reads of 125, 125, 100)."""
    settings = LineSettings("x", baudrate=19200)
    frames = SessionFrames.of(700, 0)
    assert frames.stop_to_signing == [8, 21, 8]
    assert frames.stop_after_signing == [21, 8, 255, 8, 255, 8, 205]
    t35 = settings.inter_frame_silence
    expected = (37 * settings.byte_time + 2 * t35) + 0.5 + t35 + (760 * settings.byte_time + 6 * t35)
    assert stop_wire_time(frames, settings, 0.5) == pytest.approx(expected)


def test_the_bench_station_has_every_evse_on_one_rtu_bus(tmp_path: Path) -> None:
    """The daemon drives real serial meters (the simulators are in their own process, bench/meterline.py)."""
    path = tmp_path / "station.toml"
    path.write_text(station_toml(tmp_path, "ws://127.0.0.1:1/ocpp", 4, "/dev/pts/99"))
    config = load_config(str(path))
    assert [e.id for e in config.evses] == [1, 2, 3, 4]
    assert [e.meter.device_id for e in config.evses] == [1, 2, 3, 4]
    assert {e.meter.bus for e in config.evses} == {"rs485"}
    bus = config.buses["rs485"]
    assert (bus.transport, bus.port, bus.baudrate) == ("rtu", "/dev/pts/99", 9600)


@pytest.mark.parametrize("text", ["1", "0,2", "2,x", "", "2,4,8,16,3", "17"])
def test_evse_counts_are_bounded(text: str) -> None:
    with pytest.raises(ValueError, match="--evse-counts"):
        parse_counts(text)
    assert parse_counts("2,4") == (2, 4)
