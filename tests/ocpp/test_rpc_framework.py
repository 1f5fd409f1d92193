"""The OCPP-J RPC framework to the letter, per version, against the real WebSocket CSMS on loopback: which CALLERROR
code a request earns (1.6 OCPP-J §4.2.3 Table 7 with its errata; 2.0.1 Part 4 §4.3/§4.4), that a refusal is a plain
log line, and that the connection stays up and nothing changes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

STATION = "CP-RPC"


def config_for(tmp_path: Path, url: str, version: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def frame(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return json.dumps([2, unique_id, action, payload])


# (frame, the 1.6 error code). 1.6 has only these codes; FormatViolation and OccurrenceConstraintViolation are 2.0.1's.
FRAMES_16 = [
    # OCPP-J 1.6 §4.2.3 Table 7: NotImplemented "Requested Action is not known by receiver"
    (frame("raw-1", "FlyToTheMoon", {}), "NotImplemented"),
    # NotSupported "Requested Action is recognized but not supported by the receiver" (the plain UpdateFirmware of
    # a profile not claimed: no [firmware] allow_unsigned_16)
    (
        frame("raw-2", "UpdateFirmware", {"location": "http://x/f", "retrieveDate": "2026-01-01T00:00:00Z"}),
        "NotSupported",
    ),
    # PropertyConstraintViolation "at least one field contains an invalid value": outside its enumeration
    (frame("raw-3", "ChangeAvailability", {"connectorId": 1, "type": "Sometimes"}), "PropertyConstraintViolation"),
    # FormationViolation (errata §5.2: the wire value keeps this spelling): not conform the PDU structure
    (
        frame("raw-4", "ChangeAvailability", {"connectorId": 1, "type": "Operative", "colour": "red"}),
        "FormationViolation",
    ),
    # OccurenceConstraintViolation (errata §5.1: the wire value keeps this spelling): a required field is missing
    (frame("raw-5", "ChangeAvailability", {"connectorId": 1}), "OccurenceConstraintViolation"),
    # TypeConstraintViolation: "somestring": 12
    (frame("raw-6", "ChangeAvailability", {"connectorId": "one", "type": "Operative"}), "TypeConstraintViolation"),
]

# (frame, the 2.0.1 error code)
FRAMES_201 = [
    # Part 4 §4.3: NotImplemented for an unknown action, NotSupported for a known one the station does not support
    (frame("raw-1", "FlyToTheMoon", {}), "NotImplemented"),
    (
        frame(
            "raw-2",
            "SetDisplayMessage",
            {"message": {"id": 1, "priority": "AlwaysFront", "message": {"format": "ASCII", "content": "x"}}},
        ),
        "NotSupported",
    ),
    # a value outside its enumeration: PropertyConstraintViolation
    (frame("raw-3", "ChangeAvailability", {"operationalStatus": "Sometimes"}), "PropertyConstraintViolation"),
    (frame("raw-4", "ChangeAvailability", {"operationalStatus": 7}), "TypeConstraintViolation"),
    (frame("raw-5", "ChangeAvailability", {}), "OccurrenceConstraintViolation"),
    # ProtocolError "Payload for Action is not conform the PDU structure": a property the schema does not define
    (frame("raw-6", "ChangeAvailability", {"operationalStatus": "Operative", "colour": "red"}), "ProtocolError"),
    # B06.FR.16: more GetVariableData than ItemsPerMessage[GetVariables] (50)
    (
        frame(
            "raw-7",
            "GetVariables",
            {
                "getVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]
                * 51
            },
        ),
        "OccurrenceConstraintViolation",
    ),
]


async def _exchange(csms: LocalCsms, frames: list[tuple[str, str]]) -> None:
    for sent, code in frames:
        answer = await csms.send_raw(STATION, sent)
        assert answer is not None and answer[0] == 4, (sent[:80], answer)
        assert answer[1] == json.loads(sent)[1] and answer[2] == code, (sent[:80], answer)


async def test_callerror_codes_are_the_16_ones(tmp_path: Path, csms: LocalCsms) -> None:
    """OCPP-J 1.6 §4.2.3 Table 7 and the OCPP-J 1.6 errata §5.1/§5.2: only 1.6 codes, spelt as on the wire."""
    async with running_station(parse_config(config_for(tmp_path, csms.url, "1.6"))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        await _exchange(csms, FRAMES_16)
        # 1.6 knows three message types and no code for a fourth: such a frame is ignored, the connection stays.
        assert await csms.send_raw(STATION, json.dumps([7, "raw-7", "Hello", {}]), timeout=1) is None
        answer = await csms.send_raw(STATION, frame("raw-8", "GetConfiguration", {"key": ["HeartbeatInterval"]}))
        assert answer is not None and answer[0] == 3
        assert station.runtime.core.evses[1].connectors[1].operative  # nothing the refused requests asked for happened


async def test_rpc_framework_201(tmp_path: Path) -> None:
    """2.0.1 Part 4 §4.3 (codes), §4.4 (an unknown message type gets MessageTypeNotSupported), §4.2.3 (a frame
    whose message id cannot be read gets message id "-1"), B06.FR.16 (ItemsPerMessage)."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))) as station:
            await csms.wait_for("StatusNotification", lambda p: p.get("connectorStatus") == "Available")
            await _exchange(csms, FRAMES_201)
            answer = await csms.send_raw(STATION, json.dumps([7, "raw-9", "Hello", {}]))
            assert answer is not None and answer[:3] == [4, "raw-9", "MessageTypeNotSupported"]
            answer = await csms.send_raw(STATION, json.dumps([2, 17, "Heartbeat", {}]))
            assert answer is not None and answer[:3] == [4, "-1", "RpcFrameworkError"]
            answer = await csms.send_raw(
                STATION,
                frame(
                    "raw-10",
                    "GetVariables",
                    {
                        "getVariableData": [
                            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
                        ]
                    },
                ),
            )
            assert answer is not None and answer[0] == 3  # the connection is up and answers
            assert station.runtime.core.evses[1].connectors[1].operative
    finally:
        await csms.stop()
    assert csms.violations == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_refusal_is_a_plain_log_line(tmp_path: Path, version: str, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15 item 23: the NotImplemented the station sends is logged as one plain line at info level, never as an
    error with a traceback (which is what the `ocpp` library did: logger.exception)."""
    csms = await LocalCsms(subprotocols=(f"ocpp{version}",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, version))):
            await csms.wait_for("BootNotification")
            await csms.wait_until(lambda: STATION in csms.stations)
            caplog.set_level(logging.DEBUG, logger="ocpp")
            with structlog.testing.capture_logs() as logs:
                answer = await csms.send_raw(STATION, frame("raw-1", "FlyToTheMoon", {}))
            assert answer is not None and answer[2] == "NotImplemented"
    finally:
        await csms.stop()
    refused = [e for e in logs if e["event"] == "CSMS request refused"]
    assert [(e["log_level"], e["code"]) for e in refused] == [("info", "NotImplemented")]
    assert not [e for e in logs if e["log_level"] in ("error", "exception", "critical")]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("version", "expected"), [("1.6", "AuthorizationKey"), ("2.0.1", "SecurityCtrlr.BasicAuthPassword")]
)
async def test_security_event_names_the_setting_in_the_versions_words(
    tmp_path: Path, version: str, expected: str
) -> None:
    """Issue 15 item 23 (found with CitrineOS): the ReconfigurationOfSecurityParameters event (2.0.1 A04, 1.6 Security
    Whitepaper §2.3 / A04) names the password by the connection's vocabulary: 2.0.1 SecurityCtrlr.BasicAuthPassword
    (Part 2 Referenced Components §2.2.1), 1.6 AuthorizationKey (OCPP-J 1.6 errata §3.12)."""
    csms = await LocalCsms(subprotocols=(f"ocpp{version}",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, version))):
            await csms.wait_for("StatusNotification")
            password = "a-new-password-0123"
            if version == "1.6":
                assert await csms.change_configuration(STATION, "AuthorizationKey", password) == "Accepted"
            else:
                [result] = await csms.set_variables(
                    STATION,
                    [
                        {
                            "component": {"name": "SecurityCtrlr"},
                            "variable": {"name": "BasicAuthPassword"},
                            "attribute_value": password,
                        }
                    ],
                )
                assert result["attribute_status"] == "Accepted"
            event = await csms.wait_for(
                "SecurityEventNotification", lambda p: p["type"] == "ReconfigurationOfSecurityParameters"
            )
            assert event.payload["techInfo"].startswith(f"{expected} changed"), event.payload
            assert password not in json.dumps(event.payload)
    finally:
        await csms.stop()
    assert csms.violations == []
