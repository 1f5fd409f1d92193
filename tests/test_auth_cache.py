"""The authorization cache is written only when an answer changes what it holds (issue 22: every StartTransaction
answer carries the identifier's status, nearly always the one cached at the previous start)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from station.auth import CACHE, LIST, Authorizer
from station.store import IdTagEntry, Store


def writes(store: Store) -> list[str]:
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("BEGIN") else None)  # type: ignore[func-returns-value]
    return seen


def test_an_unchanged_answer_writes_nothing_a_changed_one_is_cached(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    auth = Authorizer(store)
    expiry = datetime(2027, 1, 1, tzinfo=UTC)
    auth.remember(IdTagEntry("TAG", "Accepted", expiry, "PARENT"))
    seen = writes(store)
    auth.remember(IdTagEntry("TAG", "Accepted", expiry, "PARENT"))
    assert seen == []
    auth.remember(IdTagEntry("TAG", "Blocked", expiry, "PARENT"))
    auth.remember(IdTagEntry("TAG", "Blocked", None, "PARENT"))
    auth.remember(IdTagEntry("TAG", "Blocked", None, None))
    assert len(seen) == 3
    assert store.id_tag_entry(CACHE, "TAG") == IdTagEntry("TAG", "Blocked", None, None)
    assert auth.local_status("TAG") == "Blocked"
    store.close()


def test_the_local_list_is_never_cached_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    auth = Authorizer(store)
    assert auth.update_list(1, [IdTagEntry("TAG", "Accepted")], full=True) == "Accepted"
    auth.remember(IdTagEntry("TAG", "Blocked"))
    assert store.id_tag_entry(CACHE, "TAG") is None and store.id_tag_entry(LIST, "TAG") is not None
    store.close()
