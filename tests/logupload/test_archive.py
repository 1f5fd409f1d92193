"""The log archive: the daemon's own rotating log file, what an archive holds for a period, and that no password,
key or token hash is in any of its members (OCPP N01.FR.03/04: security log / diagnostics)."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from station.config import parse_config
from station.logs import LogFile, configure
from station.logupload.archive import DIAGNOSTICS, SECURITY, Sources, Window, build_archive, file_name
from station.ocpp.trace import FrameTrace
from station.store import Store

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
SECRETS = (
    "csms-Basic-Pass-1234",  # [csms] basic_auth_password
    "web-page-secret-99",  # [diagnostics] http_password
    "AuthKey-0011223344556677",  # 1.6 AuthorizationKey set by the CSMS
    "url-pass-777",  # a password in the CSMS URL
    "MHcCAQEEIGl0IGlzIGEgcHJpdmF0ZSBrZXk",  # a PEM private key's body
    "TAG-SECRET-UID",  # an id tag
    "hash-of-token-abcdef",  # an idToken hash
)


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield None
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def members(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_log_file_rotates_within_its_bound(tmp_path: Path) -> None:
    log_file = LogFile(tmp_path / "station.log.jsonl", max_bytes=4096, keep=2)
    for n in range(400):
        log_file.write(json.dumps({"event": "line", "n": n, "pad": "x" * 40}))
    files = log_file.files()
    assert [p.name for p in files] == ["station.log.jsonl.2", "station.log.jsonl.1", "station.log.jsonl"]
    assert all(p.stat().st_size <= 4096 for p in files)
    numbers = [json.loads(line)["n"] for p in files for line in p.read_text().splitlines()]
    assert numbers == sorted(numbers) and numbers[-1] == 399  # oldest first, the newest kept
    log_file.write("y" * 100_000)  # a line too long for the file becomes a note of its size
    assert json.loads(log_file.path.read_text().splitlines()[-1])["bytes"] == 100_000


def test_daemon_log_lines_go_to_the_file_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = LogFile(tmp_path / "d.jsonl", max_bytes=1 << 20, keep=1)
    configure("info", "json", log_file)
    structlog.get_logger("t").info("connecting", url="wss://CP:url-pass-777@h/ocpp", basic_auth_password="x-pw-1")
    logging.getLogger("websockets.client").warning("Authorization: Basic Q1AtMTpodW50ZXIy")
    lines = [json.loads(line) for line in log_file.path.read_text().splitlines()]
    assert lines[0]["event"] == "connecting" and lines[0]["level"] == "info"
    assert lines[1]["logger"] == "websockets.client" and "timestamp" in lines[1]
    text = log_file.path.read_text()
    for secret in ("url-pass-777", "x-pw-1", "Q1AtMTpodW50ZXIy"):
        assert secret not in text
    assert len(capsys.readouterr().err.splitlines()) == 2  # journald still gets every line


def _config(tmp_path: Path) -> dict[str, object]:
    return {
        "station": {"id": "CP-ARC"},
        "csms": {
            "url": "ws://CP-ARC:url-pass-777@127.0.0.1:9/ocpp",
            "security_profile": 1,
            "allow_basic_auth_over_ws": True,
            "basic_auth_password": SECRETS[0],
        },
        "meter": {"transport": "simulated"},
        "storage": {"path": str(tmp_path / "s.db")},
        "diagnostics": {"http": "127.0.0.1:0", "http_password": SECRETS[1]},
    }


def test_no_secret_in_any_member(tmp_path: Path) -> None:
    """Every member of a diagnostics and of a security archive, built from a config, store, trace and log that hold
    passwords, keys, id tags and token hashes, holds none of them."""
    config = parse_config(_config(tmp_path))
    store = Store(config.storage.path)
    store.set_setting("ocpp16.AuthorizationKey", SECRETS[2])
    store.security_event("ReconfigurationOfSecurityParameters", "AuthorizationKey changed by the CSMS")
    store.enqueue("meter_values", None, {"id_tag": SECRETS[5], "hash": SECRETS[6]})
    trace = FrameTrace()
    trace.record("in", json.dumps([2, "1", "ChangeConfiguration", {"key": "AuthorizationKey", "value": SECRETS[2]}]))
    trace.record("in", f"-----BEGIN EC PRIVATE KEY-----\n{SECRETS[4]}\n-----END EC PRIVATE KEY-----")
    trace.record("out", json.dumps([2, "2", "Authorize", {"idTag": SECRETS[5]}]))
    token = {"idToken": SECRETS[6], "type": "ISO14443"}
    trace.record("out", json.dumps([2, "3", "TransactionEvent", {"idToken": token, "eventType": "Started"}]))
    log_path = tmp_path / "station.log.jsonl"
    log_path.write_text(
        json.dumps(
            {
                "timestamp": NOW.isoformat(),
                "event": "x",
                "password": SECRETS[0],
                "url": "ftp://u:url-pass-777@h/",
                "id_tag": SECRETS[5],
            }
        )
        + "\n"
    )
    sources = Sources(
        "CP-ARC",
        "1.0",
        [log_path],
        trace.recent(100),
        store.security_log(1000),
        config,
        store.summary(),
    )
    for log_type in (DIAGNOSTICS, SECURITY):
        archive = build_archive(log_type, sources, Window(), NOW)
        texts = members(archive.data)
        for name, text in texts.items():
            for secret in SECRETS:
                assert secret not in text, f"{secret!r} in {name} of the {log_type} archive"
    diagnostics = members(build_archive(DIAGNOSTICS, sources, Window(), NOW).data)
    config_json = json.loads(diagnostics["config.json"])
    assert config_json["csms"]["basic_auth_password"] == "***" and config_json["station"]["id"] == "CP-ARC"
    assert '\\"type\\": \\"ISO14443\\"' in diagnostics["ocpp-trace.jsonl"]  # what is not an identifier stays
    summary = json.loads(diagnostics["store-summary.json"])
    assert summary["outbox"]["meter_values"]["queued"] == 1 and summary["security_log_events"] == 1
    store.close()


def test_members_and_the_period(tmp_path: Path) -> None:
    """N01.FR.04: a diagnostics archive holds the daemon's log, the frame trace, the security log, the config and the
    store summary, each for [oldestTimestamp, latestTimestamp]; N01.FR.03: a security archive the security log."""
    config = parse_config(_config(tmp_path))
    times = [NOW - timedelta(hours=h) for h in (3, 2, 1)]
    log_path = tmp_path / "station.log.jsonl"
    log_path.write_text(
        "".join(json.dumps({"timestamp": t.isoformat(), "event": f"e{i}"}) + "\n" for i, t in enumerate(times))
    )
    security = [{"at": t.isoformat(), "type": f"T{i}", "tech_info": ""} for i, t in reversed(list(enumerate(times)))]
    sources = Sources("CP ARC/1", "1.0", [log_path], (), security, config, {"outbox": {}})
    window = Window(NOW - timedelta(hours=2, minutes=30), NOW - timedelta(minutes=90))
    archive = build_archive(DIAGNOSTICS, sources, window, NOW)
    assert archive.name == "CP_ARC_1-diagnostics-20260504T120000Z.tar.gz" == file_name("CP ARC/1", DIAGNOSTICS, NOW)
    got = members(archive.data)
    assert set(got) == {
        "manifest.json",
        "station-log.jsonl",
        "ocpp-trace.jsonl",
        "security-log.jsonl",
        "config.json",
        "store-summary.json",
    }
    assert [json.loads(line)["event"] for line in got["station-log.jsonl"].splitlines()] == ["e1"]
    assert [json.loads(line)["type"] for line in got["security-log.jsonl"].splitlines()] == ["T1"]
    manifest = json.loads(got["manifest.json"])
    assert manifest["log_type"] == DIAGNOSTICS and manifest["station_log_lines"] == 1
    secure = members(build_archive(SECURITY, sources, Window(), NOW).data)
    assert set(secure) == {"manifest.json", "security-log.jsonl"}
    assert [json.loads(line)["type"] for line in secure["security-log.jsonl"].splitlines()] == ["T0", "T1", "T2"]
    with pytest.raises(ValueError, match="unknown log type"):
        build_archive("CrashDump", sources, Window(), NOW)


def test_the_daemon_writes_its_log_file_beside_the_store(tmp_path: Path) -> None:
    """`station run` ([logging] defaults): the log file is station.log.jsonl beside the store; write_file = false
    keeps none; a max_bytes below 64 KiB is a config error naming the key."""
    from station.cli import _setup_logging
    from station.config import ConfigError, log_file_path

    config = parse_config({**_config(tmp_path), "diagnostics": {}})
    assert log_file_path(config) == tmp_path / "station.log.jsonl"
    _setup_logging("info", "json", config)
    structlog.get_logger("station.app").info("station running")
    assert json.loads((tmp_path / "station.log.jsonl").read_text())["event"] == "station running"
    off = parse_config({**_config(tmp_path), "diagnostics": {}, "logging": {"write_file": False, "file": "x.jsonl"}})
    assert off.logging.write_file is False and log_file_path(off) == Path("x.jsonl")
    with pytest.raises(ConfigError, match=r"logging\.max_bytes"):
        parse_config({**_config(tmp_path), "diagnostics": {}, "logging": {"max_bytes": 10}})
