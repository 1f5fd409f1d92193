"""LogUploads without a CSMS: statuses and the running note in the store, an upload cut off by a restart, refusals,
and a flood of requests (each cancels the one before; at most one archive is built at a time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio

from station.config import Config, parse_config
from station.logupload.archive import DIAGNOSTICS, Window, parse_time
from station.logupload.service import (
    DIAGNOSTICS_REQUEST,
    LOG_REQUEST,
    RUNNING_NOTE,
    LogRequest,
    LogUploads,
)
from station.ocpp.trace import FrameTrace
from station.runtime.presence import CsmsPresence
from station.runtime.supervisor import Supervisor
from station.store import Store
from tests.logupload.servers import UploadServer


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "station": {"id": "CP-SVC"},
            "csms": {"url": "ws://127.0.0.1:9/ocpp", "ocpp_version": "2.0.1"},
            "meter": {"transport": "simulated"},
            "storage": {"path": str(tmp_path / "s.db")},
        }
    )


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    store = Store(config.storage.path)
    yield store
    store.close()


@pytest_asyncio.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    supervisor = Supervisor()
    yield supervisor
    await supervisor.close()


def queued(store: Store) -> list[tuple[str, dict[str, object]]]:
    out = []
    while (message := store.next_message("other")) is not None:
        out.append((message.kind, message.body))
        store.delivered(message.id)
    return [(k, b) for k, b in out if k != "security_event"]


def uploads(config: Config, store: Store, supervisor: Supervisor) -> LogUploads:
    return LogUploads(config, store, FrameTrace(), supervisor, CsmsPresence(), timeout=5)


def request(location: str, request_id: int, **kw: object) -> LogRequest:
    return LogRequest(LOG_REQUEST, "2.0.1", DIAGNOSTICS, location, request_id=request_id, **kw)  # type: ignore[arg-type]


async def test_an_upload_cut_off_by_a_restart_is_reported_failed(
    config: Config, store: Store, supervisor: Supervisor
) -> None:
    """N01.FR.10: an upload that said Uploading and then lost its process (restart, power loss) is told
    UploadFailure with its requestId by the next run (1.6 GetDiagnostics: UploadFailed), and only once."""
    slow = await UploadServer(delay=30).start()
    try:
        service = uploads(config, store, supervisor)
        assert service.request(request(slow.url, 5)).status == "Accepted"
        await asyncio.wait_for(_until(lambda: slow.attempts == 1), 10)
        assert store.setting(RUNNING_NOTE)
        await supervisor.close()  # the process ends mid-upload
        service.close()
        assert queued(store) == [("log_status", {"status": "Uploading", "request_id": 5})]
        again = uploads(config, store, Supervisor())
        assert queued(store) == [("log_status", {"status": "UploadFailure", "request_id": 5})]
        assert not store.setting(RUNNING_NOTE)
        again.close()
        uploads(config, store, Supervisor()).close()
        assert queued(store) == []
    finally:
        await slow.stop()


async def test_refusals_and_a_flood_of_requests(config: Config, store: Store, supervisor: Supervisor) -> None:
    """N01.FR.05: a location the station cannot use, or a period that ends before it starts, is Rejected with a
    reason and queues nothing; N01.FR.12: each new request cancels the running one (AcceptedCanceled), so a flood of
    them leaves one upload, which completes."""
    http = await UploadServer().start()
    try:
        service = uploads(config, store, supervisor)
        for bad in (request("scp://h/x", 1), request("http://", 2)):
            answer = service.request(bad)
            assert answer.status == "Rejected" and answer.reason and answer.file_name is None
        backwards = Window(parse_iso("2026-01-02T00:00:00Z"), parse_iso("2026-01-01T00:00:00Z"))
        assert service.request(request(http.url, 3, window=backwards)).status == "Rejected"
        answers = [service.request(request(http.url, n)).status for n in range(10, 60)]
        assert answers == ["Accepted"] + ["AcceptedCanceled"] * 49
        await asyncio.wait_for(_until(lambda: service.uploading(LOG_REQUEST) is None), 20)
        statuses = queued(store)
        assert statuses[-2:] == [
            ("log_status", {"status": "Uploading", "request_id": 59}),
            ("log_status", {"status": "Uploaded", "request_id": 59}),
        ]
        assert [b["request_id"] for _, b in statuses if b["status"] == "AcceptedCanceled"] == list(range(10, 59))
        assert len(http.uploads) == 1
        assert service.uploading(DIAGNOSTICS_REQUEST) is None
    finally:
        await http.stop()


def parse_iso(text: str) -> datetime | None:
    return parse_time(text)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 -- polls a server's and the service's state
        await asyncio.sleep(0.02)
