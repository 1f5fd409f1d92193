"""Log lines: JSON in service mode, and no secret in any line, whoever logs it."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from station.logs import configure, redact_text


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield None
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_json_lines_without_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json")
    log = structlog.get_logger("t")
    log.info(
        "connecting",
        url="wss://CP-1:s3cr3t-pass@csms.example/ocpp/CP-1",
        basic_auth_password="hunter2",
        headers={"Authorization": "Basic Q1AtMTpodW50ZXIy", "User-Agent": "station"},
        frame='[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"0011aabb"}]',
    )
    logging.getLogger("websockets.client").warning("> Authorization: Basic Q1AtMTpodW50ZXIy")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["event"] == "connecting" and first["level"] == "info" and "timestamp" in first
    assert first["headers"]["User-Agent"] == "station"
    text = "\n".join(lines)
    for secret in ("s3cr3t-pass", "hunter2", "Q1AtMTpodW50ZXIy", "0011aabb"):
        assert secret not in text
    assert json.loads(lines[1])["logger"] == "websockets.client"


def test_console_format_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "console")
    structlog.get_logger("t").info("hello", password="pw-123")
    err = capsys.readouterr().err
    assert "hello" in err and "pw-123" not in err and not err.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("ws://user:pa55@host/x", "pa55"),
        (
            '[2,"9","SetVariables",{"setVariableData":[{"attributeValue":"a","component":{"name":"SecurityCtrlr"},'
            '"variable":{"name":"BasicAuthPassword"}}]}]',
            '"a"',
        ),
        ('{"variable": {"name": "BasicAuthPassword"}, "attributeValue": "longpass"}', "longpass"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ('{"key": "BasicAuthPassword", "value": "x"} password=topsecret', "topsecret"),
    ],
)
def test_redact_text(text: str, secret: str) -> None:
    assert secret not in redact_text(text)
