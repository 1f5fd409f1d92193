"""The bounded chaos soak CI runs on every change (the long run: `python -m tests.chaos.soak --sessions N`)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.soak import run_soak

SESSIONS = int(os.environ.get("STATION_SOAK_SESSIONS", "50"))
# CI replays one schedule so that a red run means a change broke something, not that a new schedule was drawn; new
# schedules are explored by the long run (random seed) and by STATION_SOAK_SEED=random here.
DEFAULT_SEED = "1529268175"


@pytest.mark.timeout(900)  # about 4 s per session; the soak has its own deadlines inside
async def test_chaos_soak_loses_and_duplicates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chosen = os.environ.get("STATION_SOAK_SEED", DEFAULT_SEED)
    seed = random.SystemRandom().randrange(2**31) if chosen == "random" else int(chosen)

    def say(text: str) -> None:  # to the terminal on every run, pass or fail: the seed first, the report last
        with capsys.disabled():
            print("\n" + text, flush=True)

    report = await run_soak(tmp_path, seed, SESSIONS, say=say)
    say(report.text())
    assert report.ok, report.text()
    assert report.signed >= SESSIONS // 2 and report.delivered == report.signed
    assert report.lost == 0 and report.duplicated == 0
    assert sum(report.faults.values()) >= SESSIONS // 2
