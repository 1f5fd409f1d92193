"""`python -m bench --only smart` (issue 19 part 6): the composite schedule of a worst-case book over a day. Checks the
book is the one described and the JSON has sane figures; not the targets (a wall-clock measurement on a shared
machine)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.smart import PERIODS, PROFILES, SITE, TARGETS, book
from station.smart.composite import limits_at
from station.smart.profiles import Purpose

ROOT = Path(__file__).resolve().parents[1]


def test_the_book_is_ten_stacked_profiles_of_the_most_periods_a_schedule_may_have() -> None:
    profiles = book()
    assert len(profiles) == PROFILES == 10
    assert all(len(p.schedule.periods) == PERIODS == 1024 for p in profiles)
    assert {p.purpose for p in profiles} == set(Purpose)
    assert len({(p.purpose, p.stack_level) for p in profiles}) == len(profiles)  # no two leading at once
    assert limits_at(profiles, profiles[1].schedule.start or SITE.transactions[1].started, SITE).per_evse_a[1] >= 6


def test_bench_smart_part_prints_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "smart", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(TARGETS) <= set(result)
    for key in TARGETS:
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["composite_consistent"] is True  # the 24 h composite agrees with limits_at at every second
    assert result["composite_evaluations"] == 8640  # every tenth second of a day with --quick
    # stacked schedules of 1024 periods each: many distinct periods, never more than there are boundaries
    assert 100 < result["composite_periods"] <= PROFILES * PERIODS * 2
