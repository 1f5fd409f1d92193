"""Log lines: JSON in service mode, and no secret in any line, whoever logs it."""

from __future__ import annotations

import json
import logging
import time

import pytest
import structlog

from station.logs import configure, loggable, redact_text


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


ADVERSARIAL = {
    "a long word": "a" * 1_000_000,
    "dotted words": "a." * 500_000,
    "schemes without credentials": "ws://" * 200_000,
    "a scheme and endless user": "ws://" + "a:" * 500_000,
    "value fields after a secret name": 'AuthorizationKey "value":"' * 38_000,
    "escaped value fields": "BasicAuthPassword" + '"value":"\\' * 100_000,
    "authorization headers": "authorization: basic " * 47_000,
    "unterminated private keys": "-----BEGIN PRIVATE KEY-----" * 37_000,
    "password keys": "password:" * 111_000,
    "quotes": "'\"" * 500_000,
    "at signs": "a:@" * 333_000,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_redaction_is_linear_on_a_megabyte_of_adversarial_text(name: str) -> None:
    """Issue 14.2: `_URL_CREDENTIALS` was quadratic: a 50,000-letter word blocked the event loop 22 s, a 900,000-letter
    frame more than 10 minutes. Every pattern is linear now; a megabyte of the worst text for each takes a fraction
    of a second (here ~0.1 s; the bound only separates linear from quadratic, which would take hours)."""
    text = ADVERSARIAL[name]
    started = time.perf_counter()
    redact_text(text)
    assert time.perf_counter() - started < 1.0


def test_loggable_masks_a_value_that_comes_before_its_secret_name_and_is_cut_off() -> None:
    """A trace keeps only the start of a frame; the decision to mask is made on the whole frame, so a secret value
    before its (cut-off) name is still masked."""
    frame = '[2,"1","ChangeConfiguration",{"value":"0011aabbccddeeff0011","key":"' + " " * 5000 + 'AuthorizationKey"}]'
    shown = loggable(frame, 100)
    assert "0011aabbccddeeff0011" not in shown and "more characters" in shown


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        # Python repr, as the ocpp library logs a payload
        (
            "Error while handling request '<Call - payload={'key': 'AuthorizationKey', 'value': 'reprsecret1'}>'",
            "reprsecret1",
        ),
        ("{'attributeValue': 'reprsecret2', 'variable': {'name': 'BasicAuthPassword'}}", "reprsecret2"),
        # a frame echoed as a JSON string inside a CALLERROR's details
        (
            json.dumps(
                {
                    "ocpp_message": json.dumps(
                        [2, "i", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "esc3"}]
                    )
                }
            ),
            "esc3",
        ),
        # key=value
        ("key=AuthorizationKey value=kvsecret4", "kvsecret4"),
        ("http_password=webpass5 user=x", "webpass5"),
        # a private key, whole or cut off
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKEYDATA6\n-----END EC PRIVATE KEY-----", "KEYDATA6"),
        ("key: -----BEGIN PRIVATE KEY-----\nMIGHAgEAKEYDATA7", "KEYDATA7"),
    ],
)
def test_secrets_are_masked_in_every_representation(text: str, secret: str) -> None:
    """Issue 14.6: redaction by key name in JSON, Python repr and key=value forms."""
    assert secret not in redact_text(text)
