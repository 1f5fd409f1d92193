"""No secret in any log line, at any level, in any representation (issue 14.6), for every message that can carry one.

The station runs with debug logging as JSON lines into the test's captured stderr, against a raw CSMS on loopback
that sends each secret the way OCPP carries it, valid and schema-invalid (the invalid ones made the `ocpp` library log
the whole payload as a Python repr, which the JSON-only redaction did not catch). The technician's trace and the
frames the station sends back are checked too, and the web page's password.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import structlog
from websockets.asyncio.server import serve

from station.app import running_station
from station.config import parse_config
from station.logs import configure
from tests.ocpp.raw_csms import RawCsms

STATION = "CP-SECRETS"
WEB_PASSWORD = "web-pass-7f3a9c2e"
WRONG_WEB_PASSWORD = "wrong-pass-1b2c3d4e"


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    yield None
    structlog.reset_defaults()
    import logging

    logging.getLogger().handlers.clear()


def representations(secret: str) -> list[str]:
    """The forms a secret could leak in: as is, base64 (alone and as Basic auth credentials), hex."""
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"{STATION}:{secret}".encode()).decode(),
        secret.encode().hex(),
    ]


def config_for(tmp_path: Path, port: int, version: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": f"ws://127.0.0.1:{port}/ocpp", "ocpp_version": version, "reconnect_min": 0.2},
        "meter": {"transport": "simulated", "simulator": {"state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
        "diagnostics": {"http": "127.0.0.1:0", "http_password": WEB_PASSWORD},
    }


def v16_frames() -> list[tuple[str, str]]:
    """(frame, secret) for every way 1.6 carries AuthorizationKey: valid, with an unknown property, too long."""
    valid = "0123456789abcdef0123456789abcdef"
    extra = "fedcba9876543210fedcba9876543210"
    long_value = "9" * 600  # ChangeConfiguration.value is at most 500 characters
    return [
        (json.dumps([2, "c1", "ChangeConfiguration", {"key": "AuthorizationKey", "value": valid}]), valid),
        (json.dumps([2, "c2", "ChangeConfiguration", {"value": extra, "key": "AuthorizationKey", "x": 1}]), extra),
        (json.dumps([2, "c3", "ChangeConfiguration", {"key": "AuthorizationKey", "value": long_value}]), long_value),
    ]


def v201_frames() -> list[tuple[str, str]]:
    """(frame, secret) for SecurityCtrlr.BasicAuthPassword: valid, with an unknown property, too long."""

    def set_variables(value: str, **extra: Any) -> dict[str, Any]:
        return {
            "setVariableData": [
                {
                    "attributeValue": value,
                    "component": {"name": "SecurityCtrlr"},
                    "variable": {"name": "BasicAuthPassword"},
                    **extra,
                }
            ]
        }

    valid = "abcdef0123456789abcdef01"
    extra = "0f1e2d3c4b5a69780f1e2d3c"
    long_value = "8" * 1200  # attributeValue is at most 1000 characters
    return [
        (json.dumps([2, "s1", "SetVariables", set_variables(valid)]), valid),
        (json.dumps([2, "s2", "SetVariables", set_variables(extra, bogus=True)]), extra),
        (json.dumps([2, "s3", "SetVariables", set_variables(long_value)]), long_value),
    ]


def web_request(port: int, password: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"tech:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_no_secret_reaches_a_log_line_the_trace_or_an_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    """Issue 14.6; 1.6 security whitepaper A00.FR.304 (AuthorizationKey is write-only), 2.0.1 part 2 Appendix
    SecurityCtrlr.BasicAuthPassword (WriteOnly): a secret is accepted or refused, and never shown."""
    configure("debug", "json")
    raw = RawCsms()
    frames = v16_frames() if version == "1.6" else v201_frames()
    subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    async with serve(raw.handler, "127.0.0.1", 0, subprotocols=[subprotocol]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        async with running_station(parse_config(config_for(tmp_path, port, version))) as station:
            await asyncio.wait_for(raw.connected.wait(), 20)
            answers = [await raw.send_raw(frame) for frame, _ in frames]
            assert answers[0][0] == 3, answers[0]  # the valid one is taken
            assert all(a[0] == 4 for a in answers[1:]), answers  # the invalid ones are refused
            assert station.page is not None
            assert await asyncio.to_thread(web_request, station.page.port, WEB_PASSWORD) == 200
            assert await asyncio.to_thread(web_request, station.page.port, WRONG_WEB_PASSWORD) == 401
            trace = "\n".join(f.text for f in station.connection.trace.recent(500))
    captured = capsys.readouterr()
    logged = captured.out + captured.err
    assert '"level": "debug"' in logged or '"level":"debug"' in logged.replace(" ", "")  # debug was really on
    secrets = [secret for _, secret in frames] + [WEB_PASSWORD, WRONG_WEB_PASSWORD]
    answered = json.dumps(answers)
    for secret in secrets:
        for form in representations(secret):
            assert form not in logged, f"{form[:40]}... in the log"
            assert form not in trace, f"{form[:40]}... in the trace"
            assert form not in answered, f"{form[:40]}... echoed back to the CSMS"
