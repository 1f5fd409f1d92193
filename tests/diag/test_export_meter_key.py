"""`station export` and `station diag transaction` use the key of the meter that signed the transaction, stored with
it, not the key of the meter in place now (a swapped meter never makes an old bill unverifiable); a transaction
stored before transactions remembered their meter gets the current meter's key, and the output says so."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from station.app import running_station
from station.cli import main
from station.config import parse_config
from station.core.model import MeterStamp, SignedMeterRecord, StartSource, StopReason, Transaction
from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.meter.transparency import read_transparency_xml
from station.store import Store
from tests.diag.test_diag_socket import config_for

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "data" / "ocmf-vectors-sample.json").read_text())
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
STAMPED, UNSTAMPED = "d4" * 16, "e5" * 16


def vector(source_end: str) -> dict[str, str]:
    return next(v for v in VECTORS if v["source"].endswith(source_end))


def store_delivered(store: Store, ref: str, v: dict[str, str], meter: MeterStamp | None) -> None:
    started = Transaction(ref, 1, "TAG", StartSource.REMOTE, T0, started_at=T0, meter_start_wh=0, meter=meter)
    store.transaction_started(started, offline=False)
    record = SignedMeterRecord(v["ocmf"], signing_method=v["signature_algorithm"], verified=True)
    ended = replace(started, stopped_at=T0, meter_stop_wh=1, stop_reason=StopReason.LOCAL, signed_records=(record,))
    store.transaction_ended(ended, offline=False)
    while (message := store.next_message()) is not None:
        store.delivered(message.id, transaction_done=ref if message.kind == "transaction_ended" else None)


async def test_export_uses_the_key_stored_with_the_transaction(
    tmp_path: Path, csms: LocalCsms, capsys: pytest.CaptureFixture[str]
) -> None:
    config = parse_config(config_for(tmp_path, csms.url))
    signed_by_old_meter = vector("test.xml (value 2)")  # a meter since swapped for the simulated one
    store = Store(config.storage.path)
    store_delivered(
        store, STAMPED, signed_by_old_meter, MeterStamp("Model-A", "SN-OLD", "", signed_by_old_meter["public_key"])
    )
    store_delivered(store, UNSTAMPED, vector("test_ocmf_keba_kcp30.xml"), None)  # as a migrated old row
    store.close()
    sock = config.diagnostics.socket
    async with running_station(config) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        current_key = station.runtime.meter_key(1)
        assert current_key and current_key != signed_by_old_meter["public_key"]
        capsys.readouterr()

        out = tmp_path / "old-bill.xml"
        argv = ["export", "--socket", sock, "--transaction", STAMPED, "--out", str(out)]
        assert await asyncio.to_thread(main, argv) == 0
        [entry] = read_transparency_xml(out.read_text())
        assert entry.public_key.upper() == signed_by_old_meter["public_key"].upper()
        assert ocmf.verify(ocmf.parse(entry.ocmf), entry.public_key).valid
        assert "NOTE" not in capsys.readouterr().err

        argv = ["export", "--socket", sock, "--transaction", UNSTAMPED, "--out", str(tmp_path / "unstamped.xml")]
        assert await asyncio.to_thread(main, argv) == 0
        [entry] = read_transparency_xml((tmp_path / "unstamped.xml").read_text())
        assert entry.public_key.upper() == current_key.upper()
        assert "stored before transactions remembered their meter" in capsys.readouterr().err

        assert await asyncio.to_thread(main, ["diag", "--socket", sock, "transaction", STAMPED]) == 0
        shown = capsys.readouterr().out
        assert "meter Model-A serial SN-OLD" in shown and signed_by_old_meter["public_key"] in shown
        assert await asyncio.to_thread(main, ["diag", "--socket", sock, "transaction", UNSTAMPED]) == 0
        assert "meter not recorded" in capsys.readouterr().out
