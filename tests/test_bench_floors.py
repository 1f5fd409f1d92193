"""The floors of issue 22: every figure of `python -m bench` beside a floor measured in the same run. Checks the floors
and the `*_ratio` keys exist and are sane; never the targets (wall-clock figures on a shared machine)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import RATIOS, TARGETS, print_table
from bench.floors import CURVES, crypto_floor, import_floor, interleaved_rates, ratio, roundtrip_floor

ROOT = Path(__file__).resolve().parents[1]


def bench_json(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_import_floor_is_a_fresh_interpreter_with_the_dependencies() -> None:
    floor = import_floor(1)
    assert 0 < floor["import_s"] < 60
    assert 10 < floor["rss_mb"] < 1000  # the interpreter, ocpp, pymodbus, cryptography...: tens of MB, never 0


async def test_the_round_trip_floor_exchanges_transaction_messages() -> None:
    rate = await roundtrip_floor(20)
    assert math.isfinite(rate) and rate > 0


def test_the_crypto_floor_has_every_curve_of_the_verify_bench() -> None:
    floor = crypto_floor(0.1)
    assert list(floor) == [name for name, _ in CURVES]
    assert all(rate > 0 for rate in floor.values())


def test_interleaved_rates_share_the_time_alike() -> None:
    fast, slow = interleaved_rates(lambda: None, lambda: sum(range(2000)), 0.1, slice_s=0.01)
    assert fast > slow > 0
    assert ratio(3.0, 2.0) == 1.5 and math.isnan(ratio(1.0, 0.0))


def test_the_table_shows_figure_floor_ratio_and_target(capsys: pytest.CaptureFixture[str]) -> None:
    result = {
        "start_ratio": 1.1,
        "19200": {"start_ratio": 1.2},
        "startup_s": 1.2,
        "startup_ratio": 2.0,
        "ocmf_verify_per_s": {"P-256": 500},
        "ocmf_verify_ratio": {"P-256": 0.5},
        "idle_cpu_s_per_h": 1.5,
        "floors": {"import_s": 0.6, "verify_per_s": {"P-256": 1000}},
    }
    print_table(result)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["ratio", "(9600", "baud)", "figure", "floor", "ratio", "target"]

    def row(name: str) -> list[str]:
        (line,) = [line for line in lines if line[:34].rstrip() == name]
        return line[len(name) :].split()

    assert row("startup_ratio")[:3] == ["1.2", "0.6", "2.0"]
    assert row("ocmf_verify_ratio P-256")[:3] == ["500", "1000", "0.5"]
    assert row("start_ratio @19200")[:2] == ["wire", "1.2"]
    assert row("start_ratio")[:2] == ["wire", "1.1"]
    assert row("idle_cpu_s_per_h")[:2] == ["1.5", "<"]


def check_ratios(result: dict[str, Any], keys: list[str]) -> None:
    for key, figure, floor, _ in RATIOS:
        if key not in keys:
            continue
        assert key in result, key
        values = result[key] if isinstance(result[key], dict) else {"": result[key]}
        for sub, value in values.items():
            assert math.isfinite(value) and 0 < value < 100, (key, sub, value)
            if figure:  # the ratio is the figure over the floor of the same run
                f = result[figure][sub] if sub else result[figure]
                base = result["floors"][floor][sub] if sub else result["floors"][floor]
                assert value == pytest.approx(f / base, rel=0.01, abs=0.002), key


def test_bench_verify_part_has_its_floor_and_ratio() -> None:
    result = bench_json("--only", "verify")
    assert set(result) == {"ocmf_verify_per_s", "ocmf_verify_ratio", "floors"}
    assert set(result["floors"]) == {"verify_per_s"}
    assert set(result["ocmf_verify_ratio"]) == {name for name, _ in CURVES}
    check_ratios(result, ["ocmf_verify_ratio"])


def test_bench_backlog_part_has_its_floor_and_ratio() -> None:
    result = bench_json("--only", "backlog")
    assert set(result) == {"backlog_msgs_per_s", "backlog_ratio", "floors"}
    assert set(result["floors"]) == {"roundtrip_msgs_per_s"}
    check_ratios(result, ["backlog_ratio"])


@pytest.mark.slow  # `station run` as a process for about 30 s
def test_bench_daemon_part_has_its_floors_and_ratios() -> None:
    result = bench_json("--only", "daemon")
    assert set(result["floors"]) == {"import_s", "rss_mb"}
    for key in ("startup_s", "peak_rss_mb", *TARGETS):  # every absolute key stays
        assert key in result, key
    check_ratios(result, ["startup_ratio", "rss_ratio"])
    # the daemon imports more than its dependencies and holds more than they do
    assert result["rss_ratio"] > 1 and result["startup_ratio"] > 0.5
