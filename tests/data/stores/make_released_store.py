"""Write the SQL dumps of stores made by released versions of the station's store, with data in them.

Each released schema version is written by that release's own code: `git show COMMIT:station/store.py` and the
`station/core/model.py` of the same commit are loaded as temporary modules, and their Store is driven through what a
2.0.1 station does (transactions ended and delivered, ended and queued, open; signed records from the OCMF vectors in
tests/data/ocmf-vectors-sample.json; seqNo assigned; outbox entries queued and one given up; availability, the local
list and its version, the cache, settings, the security log; in version 2 also samples, an idToken and the run
record). The file is then dumped with sqlite3's iterdump, preceded by its `PRAGMA user_version`, as vN.sql here.

Regenerate (from the repository root, with its history; only when a dump must change, since the released code
does not):

    .venv/bin/python tests/data/stores/make_released_store.py

tests/test_store_migrations.py loads the dumps and checks what each row must mean after the migrations.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RELEASES = {1: "c06a680", 2: "6ce05c9"}  # schema version -> a commit of the release that wrote it
VECTORS = json.loads((ROOT / "tests" / "data" / "ocmf-vectors-sample.json").read_text(encoding="utf-8"))
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
DONE, QUEUED, OPEN = "a1" * 16, "b2" * 16, "c3" * 16  # transaction refs: delivered, its end queued, still open


def vector(source_end: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["source"].endswith(source_end))


def _module(name: str, source: str) -> ModuleType:
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def released(version: int) -> tuple[ModuleType, ModuleType]:
    """(store module, model module) exactly as the release had them."""
    commit = RELEASES[version]

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    model = _module(f"released_model_v{version}", show("station/core/model.py"))
    store_source = show("station/store.py").replace("from station.core.model import", f"from {model.__name__} import")
    store = _module(f"released_store_v{version}", store_source)
    assert version == store.SCHEMA_VERSION, (commit, store.SCHEMA_VERSION)
    return store, model


def fill(version: int, path: Path) -> None:
    store_mod, m = released(version)
    store = store_mod.Store(path)
    if version >= 2:
        store.begin_run("boot-1", "0.1.0")

    def counter(tx: Any) -> str:  # what the 2.0.1 adapter of the release numbered its TransactionEvents by
        return f"evse.{tx.connector_id}" if version == 1 else f"tx.{tx.ref}"

    # The 2.0.1 adapter's answers teach the CSMS transaction id, which is ours (the station names 2.0.1 transactions).
    def deliver(expect_kind: str, tx: Any | None = None, **taught: Any) -> None:
        message = store.next_message()
        assert message is not None and message.kind == expect_kind, (message, expect_kind)
        if tx is not None and expect_kind != "signed_begin":
            store.assign_seq_no(message.id, counter(tx))
        store.delivered(message.id, **taught)

    keba = vector("test_ocmf_keba_kcp30.xml")
    begin, end = vector("two_values.xml (value 1)"), vector("two_values.xml (value 2)")

    def record(v: dict[str, Any], context: str) -> Any:
        return m.SignedMeterRecord(
            v["ocmf"], signing_method=v["signature_algorithm"], context=context, verified=bool(v["expected_valid"])
        )

    # Local list (version 7, then 8 removing one) and a cached answer.
    entry = store_mod.IdTagEntry
    store.replace_id_tags("list", [entry("TAG-A", "Accepted"), entry("TAG-B", "Accepted"), entry("TAG-X", "Blocked")],
                          full=True, version=7)  # fmt: skip
    store.replace_id_tags("list", [entry("TAG-B", None)], full=False, version=8)
    store.replace_id_tags("cache", [entry("TAG-C", "Accepted", T0 + timedelta(days=30))], full=False, version=None)
    store.set_setting("accepted_once", "1")
    store.set_setting("ocpp16.MeterValueSampleInterval", "60")
    store.set_setting("availability.1", "Inoperative")  # ChangeAvailability Inoperative on connector 1

    # 1: charged, signed (one record with begin and end), every message delivered.
    tx1 = m.Transaction(
        ref=DONE, connector_id=1, id_tag="TAG-A", source=m.StartSource.REMOTE, requested_at=T0, remote_start_id=11,
        started_at=T0, meter_start_wh=259,
    )  # fmt: skip
    store.transaction_started(tx1, offline=False)
    deliver("transaction_started", tx1, csms_transaction=(DONE, DONE))
    tx1 = replace(
        tx1,
        stopped_at=T0 + timedelta(minutes=30),
        meter_stop_wh=260,
        stop_reason=m.StopReason.REMOTE,
        signed_records=(record(keba, "Transaction.End"),),
    )
    store.transaction_ended(tx1, offline=False)
    deliver("transaction_ended", tx1, transaction_done=DONE)

    # 2: a meter that signs begin and end apart; started online, ended while the CSMS was away: the end queued, sent
    # once and refused (CALLERROR), so it carries its seqNo.
    t2 = T0 + timedelta(hours=1)
    tx2 = m.Transaction(
        ref=QUEUED, connector_id=1, id_tag="TAG-A", source=m.StartSource.LOCAL, requested_at=t2, started_at=t2,
        meter_start_wh=1000, signed_records=(record(begin, "Transaction.Begin"),),
    )  # fmt: skip
    store.transaction_started(tx2, offline=False)
    deliver("transaction_started", tx2, csms_transaction=(QUEUED, QUEUED))
    deliver("signed_begin")
    tx2 = replace(
        tx2,
        stopped_at=t2 + timedelta(minutes=45),
        meter_stop_wh=1420,
        stop_reason=m.StopReason.LOCAL,
        signed_records=(record(begin, "Transaction.Begin"), record(end, "Transaction.End")),
    )
    store.transaction_ended(tx2, offline=True)
    ended = store.next_message()
    store.assign_seq_no(ended.id, counter(tx2))
    store.attempt_failed(ended.id, "CALLERROR InternalError")

    # 3: started offline and still open when the daemon was killed; its start and a reading queued.
    t3 = T0 + timedelta(hours=3)
    tx3 = m.Transaction(
        ref=OPEN, connector_id=1, id_tag="TAG-C", source=m.StartSource.REMOTE, requested_at=t3, remote_start_id=33,
        started_at=t3, meter_start_wh=1420,
    )  # fmt: skip
    store.transaction_started(tx3, offline=True)
    reading = {"context": "Sample.Periodic", "at": (t3 + timedelta(minutes=1)).isoformat(), "energy_wh": 1431,
               "export_wh": 0, "power_w": 11000.0, "voltage_v": [230.0] * 3, "current_a": [16.0] * 3,
               "connector_id": 1}  # fmt: skip
    if version >= 2:
        store.set_id_token(OPEN, {"idToken": "TAG-C", "type": "ISO14443"})
        store.enqueue("meter_values", OPEN, reading, offline=True, sample="periodic")
    else:
        store.enqueue("meter_values", OPEN, reading, offline=True)

    # Security events: one given up by the CSMS (kept aside), one queued.
    store.security_event("SettingSystemTime", "clock set by the CSMS", at=T0 - timedelta(days=1))
    refused = store._read("SELECT id FROM outbox WHERE kind='security_event'")[0][0]  # version 1 has one lane
    store.give_up(refused, "CALLERROR FormationViolation")
    store.security_event("InvalidCsmsCertificate", "certificate expired")
    store.close()


def dump(path: Path, version: int) -> str:
    db = sqlite3.connect(path)
    found = db.execute("PRAGMA user_version").fetchone()[0]
    assert found == version, (path, found)
    lines = [f"-- A store written by release {RELEASES[version]} (schema version {version}) through its own code;"]
    lines.append("-- made by tests/data/stores/make_released_store.py (see there how to regenerate). Do not edit.")
    lines.append(f"PRAGMA user_version={version};")
    lines.extend(db.iterdump())
    db.close()
    return "\n".join(lines) + "\n"


def main() -> None:
    for version in RELEASES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "station.db"
            fill(version, path)
            target = HERE / f"v{version}.sql"
            target.write_text(dump(path, version), encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
