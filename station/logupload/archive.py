"""The file a log upload sends: a tar.gz of what the station knows about a period, secrets removed.

Owns what goes into the archive and how big it may get. A diagnostics archive (OCPP DiagnosticsLog, 1.6
GetDiagnostics) holds the daemon's own JSON log lines in the period (station/logs.py LogFile), the OCPP frame trace,
the security log, the configuration with every secret masked, and counts from the store; a security archive (OCPP
SecurityLog) holds the security log only (N01.FR.03). It reads what it is given (files, lists) and never talks to
the network, the store or the clock: the caller passes the moment. Every member passes through the log redaction
again (station/logs.py redact_text) as the last word before it is packed, so a secret that slipped into a log line
or a frame still never leaves the station.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.config import Config
from station.logs import MASK, SECRET_KEYS, redact_text
from station.ocpp.trace import Frame

DIAGNOSTICS = "DiagnosticsLog"
SECURITY = "SecurityLog"
LOG_TYPES = (DIAGNOSTICS, SECURITY)

MAX_LOG_BYTES = 16 * 1024 * 1024  # daemon log lines packed (before compression); the newest are kept
MAX_MEMBER_BYTES = 4 * 1024 * 1024  # any other member
MAX_ARCHIVE_BYTES = 8 * 1024 * 1024  # the compressed archive: what an upload may send at most

# Identifiers of people's cards in frames (1.6 idTag, 2.0.1 idToken) and log lines (id_tag=...): the place an upload
# goes to may be a third party's storage (2.0.1 N01.FR.17 note), so they are masked like secrets. A JSON string value
# only: a 2.0.1 IdTokenType object keeps its type, its inner idToken string is masked.
_ID_FIELDS = re.compile(
    r"(?P<name>\\?\"(?:idTag|parentIdTag|idToken|groupIdToken|additionalIdToken|id_tag|parent_id_tag|id_token)\\?\""
    r"\s{0,4}:\s{0,4})(?P<q>\\?\")(?:[^\"\\]|\\[^\"])*(?P=q)"
)


def _without_ids(text: str) -> str:
    return _ID_FIELDS.sub(lambda m: f"{m['name']}{m['q']}{MASK}{m['q']}", text)


@dataclass(frozen=True)
class Window:
    """The period asked for: OCPP oldestTimestamp / latestTimestamp (1.6 GetDiagnostics startTime / stopTime); an
    open end is None."""

    oldest: datetime | None = None
    latest: datetime | None = None

    def holds(self, at: datetime | None) -> bool:
        if at is None:
            return self.oldest is None and self.latest is None  # undated lines only when no period was asked for
        return (self.oldest is None or at >= self.oldest) and (self.latest is None or at <= self.latest)

    def as_json(self) -> dict[str, str | None]:
        return {
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "latest": self.latest.isoformat() if self.latest else None,
        }


@dataclass(frozen=True)
class Sources:
    """What an archive is made of, gathered by the caller (station/logupload/service.py)."""

    station_id: str
    software: str
    log_files: Sequence[Path] = ()  # the daemon's log files, oldest first
    frames: Sequence[Frame] = ()
    security_log: Sequence[dict[str, Any]] = ()  # store.security_log(): newest first, {at, type, tech_info}
    config: Config | None = None
    store_summary: dict[str, Any] | None = None


@dataclass(frozen=True)
class Archive:
    name: str
    data: bytes
    members: tuple[str, ...]


def parse_time(text: str | None) -> datetime | None:
    """An OCPP dateTime (or a log line's timestamp) as an aware UTC datetime; None for none or an unreadable one."""
    if not text or not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def file_name(station_id: str, log_type: str, now: datetime) -> str:
    """`<station>-<diagnostics|security>-<UTC time>.tar.gz`, only characters every file system and URL takes."""
    kind = "security" if log_type == SECURITY else "diagnostics"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", station_id)[:64] or "station"
    return f"{safe}-{kind}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def redacted_config(config: Config) -> dict[str, Any]:
    """The configuration as a table, every secret-named key masked (passwords, keys) and URLs' credentials cut."""
    masked: dict[str, Any] = _mask(dataclasses.asdict(config))
    return masked


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and SECRET_KEYS.search(k) and v not in ("", None) else _mask(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _log_lines(files: Iterable[Path], window: Window, budget: int) -> tuple[list[str], int]:
    """The daemon's log lines in the period, the newest that fit in `budget` bytes; and how many were left out."""
    kept: list[str] = []
    size = 0
    for path in files:
        try:
            handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 -- closed below
        except OSError:
            continue
        with handle:
            for raw in handle:
                line = raw.rstrip("\n")
                if not line:
                    continue
                try:
                    at = parse_time(json.loads(line).get("timestamp"))
                except (ValueError, AttributeError):
                    at = None
                if window.holds(at):
                    kept.append(line)
                    size += len(line) + 1
    dropped = 0
    while size > budget and kept:
        size -= len(kept.pop(0)) + 1
        dropped += 1
    return kept, dropped


def _jsonl(items: Iterable[dict[str, Any]]) -> Iterator[str]:
    for item in items:
        yield json.dumps(item, default=str, ensure_ascii=False)


def _bounded(lines: Iterable[str], budget: int) -> tuple[str, bool]:
    out: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > budget:
            return "\n".join(out) + "\n", True
        out.append(line)
        size += len(line) + 1
    return ("\n".join(out) + "\n") if out else "", False


def build_archive(log_type: str, sources: Sources, window: Window, now: datetime) -> Archive:
    """The archive for a log request; ValueError for an unknown log type. Reads the log files (call it off the event
    loop: station/logupload/service.py runs it in a thread)."""
    if log_type not in LOG_TYPES:
        raise ValueError(f"unknown log type {log_type!r}; known: {', '.join(LOG_TYPES)}")
    members: dict[str, str] = {}
    notes: dict[str, Any] = {}
    security = [e for e in reversed(sources.security_log) if window.holds(parse_time(str(e.get("at", ""))))]
    members["security-log.jsonl"], cut = _bounded(_jsonl(security), MAX_MEMBER_BYTES)
    notes["security_log_events"] = len(security)
    if cut:
        notes["security_log_cut"] = True
    if log_type == DIAGNOSTICS:
        lines, dropped = _log_lines(sources.log_files, window, MAX_LOG_BYTES)
        members["station-log.jsonl"] = "\n".join(lines) + "\n" if lines else ""
        notes["station_log_lines"] = len(lines)
        if dropped:
            notes["station_log_oldest_left_out"] = dropped
        if not sources.log_files:
            notes["station_log"] = "no log file ([logging] write_file is off, or nothing was logged yet)"
        frames = [f.as_json() for f in sources.frames if window.holds(f.at)]
        members["ocpp-trace.jsonl"], cut = _bounded(_jsonl(frames), MAX_MEMBER_BYTES)
        notes["ocpp_frames"] = len(frames)
        if cut:
            notes["ocpp_trace_cut"] = True
        if sources.config is not None:
            members["config.json"] = json.dumps(redacted_config(sources.config), indent=2, default=str) + "\n"
        if sources.store_summary is not None:
            members["store-summary.json"] = json.dumps(sources.store_summary, indent=2, default=str) + "\n"
    manifest = {
        "station_id": sources.station_id,
        "software": sources.software,
        "log_type": log_type,
        "generated_at": now.astimezone(UTC).isoformat(),
        "period": window.as_json(),
        "members": sorted(members),
        **notes,
    }
    members = {"manifest.json": json.dumps(manifest, indent=2) + "\n", **members}
    data = _pack({name: _without_ids(redact_text(text)) for name, text in members.items()}, now)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ValueError(f"archive of {len(data)} bytes exceeds {MAX_ARCHIVE_BYTES}; ask for a shorter period")
    return Archive(file_name(sources.station_id, log_type, now), data, tuple(members))


def _pack(members: dict[str, str], now: datetime) -> bytes:
    import tarfile  # only when an archive is built: the daemon starts without it

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in members.items():
            body = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mtime = int(now.timestamp())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()
