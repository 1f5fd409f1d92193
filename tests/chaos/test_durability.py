"""Durability of the store: what it acknowledged survives SIGKILL, and a store that cannot write (a real full file
system: a small tmpfs the test fills) makes the station stop offering charging instead of charging unrecorded,
keeps the signed record in the meter until it can be stored, and delivers it when the store writes again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from station.app import Station, running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.demo.session import extract_signed_record
from station.store import Store, StoreError

pytestmark = pytest.mark.slow  # daemon processes killed and restarted, a real tmpfs filled

STATION = "CP-DURABLE"

WRITER = """
import sys
from station.store import Store
store = Store(sys.argv[1])
n = 0
while True:
    n += 1
    store.enqueue("meter_values", None, {"n": n})
    print(n, flush=True)  # acknowledged: the write has returned
"""


async def test_what_the_store_acknowledged_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    writer = subprocess.Popen(  # noqa: ASYNC220 -- its output is read in a thread below
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    acknowledged: list[int] = []
    while len(acknowledged) < 200:
        line = await asyncio.to_thread(writer.stdout.readline)
        acknowledged.append(int(line))
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    acknowledged += [int(line) for line in writer.stdout.read().split()]  # printed before the kill landed
    store = Store(path)
    bodies = {m["n"] for m in (r for r in _outbox_bodies(store))}
    store.close()
    assert set(acknowledged) <= bodies, sorted(set(acknowledged) - bodies)[:10]


def _outbox_bodies(store: Store) -> list[dict[str, Any]]:
    import json

    return [json.loads(r["body"]) for r in store._read("SELECT body FROM outbox ORDER BY id")]


def test_a_corrupt_store_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store(path)
    store.enqueue("meter_values", None, {"n": 1})
    store.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # scribble over the first page's b-tree
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"corrupt|malformed|not a database"):
        Store(path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of its own (tmpfs, 4 MiB) that the test can fill up: root in CI can mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("STATION_CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr.decode()}")
        pytest.skip(f"needs root to mount a small file system: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def config_for(tmp_path: Path, url: str, disk: Path) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.2, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.2, "state": str(tmp_path / "m.json"), "ledger": str(tmp_path / "l.jsonl")},
        },
        "storage": {"path": str(disk / "station.db")},
    }


def fill_up(store: Store) -> None:
    """Checkpoint the WAL (so that the next commit must grow it), then fill the store's file system to the last byte:
    from now on every write fails (ENOSPC -> SQLITE_FULL), as on a full disk."""
    with sqlite3.connect(store.path) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = store.path.parent / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    with pytest.raises(StoreError, match="full"):
        store.probe()


def free_up(store: Store) -> None:
    (store.path.parent / "filler").unlink()


def status_is(status: str) -> Any:
    return lambda p: p["status"] == status


async def wait_station(station: Station, csms: LocalCsms) -> None:
    await csms.wait_for("StatusNotification", status_is("Available"))
    station.runtime.store_guard.probe_interval = 0.2


async def test_a_full_store_refuses_new_charging_and_recovers(
    tmp_path: Path, csms: LocalCsms, small_disk: Path
) -> None:
    async with running_station(parse_config(config_for(tmp_path, csms.url, small_disk))) as station:
        await wait_station(station, csms)
        fill_up(station.store)
        assert await csms.remote_start(STATION, "TAG-FULL") == "Rejected"
        faulted = await csms.wait_for("StatusNotification", status_is("Faulted"))
        assert faulted.payload["errorCode"] == "InternalError" and "store" in faulted.payload["info"]
        assert station.runtime.meter_state(1).link_up and station.runtime.core.evses[1].transaction is None
        mark = len(csms.received)
        free_up(station.store)
        await csms.wait_for("StatusNotification", status_is("Available"), after=mark)
        assert await csms.remote_start(STATION, "TAG-FULL") == "Accepted"
        await csms.wait_for("StartTransaction")


async def test_disk_full_while_charging_keeps_the_record_in_the_meter_until_it_can_be_stored(
    tmp_path: Path, csms: LocalCsms, small_disk: Path
) -> None:
    config = parse_config(config_for(tmp_path, csms.url, small_disk))
    async with running_station(config) as station:
        await wait_station(station, csms)
        assert await csms.remote_start(STATION, "TAG-A") == "Accepted"
        await csms.wait_for("StatusNotification", status_is("Charging"))
        await csms.wait_until(lambda: csms.assigned_transaction_ids and station.store.outbox_depth() == 0)
        fill_up(station.store)
        assert await csms.remote_stop(STATION, csms.assigned_transaction_ids[0]) == "Accepted"
        await csms.wait_for("StatusNotification", status_is("Faulted"))
        sim = station.simulator(1)
        await csms.wait_until(lambda: sim.mem.record is not None)  # signed, held by the meter, not released
        await asyncio.sleep(0.5)
        assert sim.mem.record is not None and csms.messages("StopTransaction") == []
        free_up(station.store)
        stop = await csms.wait_for("StopTransaction", timeout=30)
        record, _ = extract_signed_record(stop.payload)
        assert record == sim_ledger(tmp_path)[0]
        await csms.wait_until(lambda: sim.mem.record is None)  # released once stored
        await csms.wait_for("StatusNotification", status_is("Available"), after=csms.received.index(stop))


async def test_disk_full_between_accepting_a_start_and_the_meter_starting(
    tmp_path: Path, csms: LocalCsms, small_disk: Path
) -> None:
    config = parse_config(config_for(tmp_path, csms.url, small_disk))
    async with running_station(config) as station:
        await wait_station(station, csms)
        sim = station.simulator(1)
        sim.faults.latency = 0.2  # the meter takes a moment to start
        assert await csms.remote_start(STATION, "TAG-B") == "Accepted"
        fill_up(station.store)
        # The meter started, the store could not record it: the station ends it at once (no unrecorded charging)
        await csms.wait_until(lambda: sim.mem.record is not None, timeout=30)
        assert csms.messages("StartTransaction") == []
        sim.faults.latency = 0.0
        free_up(station.store)
        stop = await csms.wait_for("StopTransaction", timeout=30)
        start = csms.messages("StartTransaction")
        assert len(start) == 1 and start[0].payload["idTag"] == "TAG-B"
        assert csms.received.index(start[0]) < csms.received.index(stop)
        assert stop.payload["reason"] == "Other"
        assert extract_signed_record(stop.payload)[0] == sim_ledger(tmp_path)[0]


def sim_ledger(tmp_path: Path) -> list[str]:
    import json

    return [json.loads(line)["ocmf"] for line in (tmp_path / "l.jsonl").read_text().splitlines()]
