"""1.6 configuration keys to the letter, over the real WebSocket: every required key of every profile the station
claims is there with the spec's accessibility (§9), a read-write key accepts what the product honours and refuses the
rest (never claims read-only), and every profile claimed in SupportedFeatureProfiles is implemented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ocpp.v16 import call

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

STATION = "CP-CONF"

# §9.1 Core (with the errata), §9.2 Local Auth List Management, §9.4.x not claimed: key -> readonly per the spec
# (None: "R or RW, choice is up to Charge Point implementation").
REQUIRED = {
    "Core": {
        "AuthorizeRemoteTxRequests": None,
        "ClockAlignedDataInterval": False,
        "ConnectionTimeOut": False,
        "ConnectorPhaseRotation": False,
        "GetConfigurationMaxKeys": True,
        "HeartbeatInterval": False,
        "LocalAuthorizeOffline": False,
        "LocalPreAuthorize": False,
        "MeterValuesAlignedData": False,
        "MeterValuesSampledData": False,
        "MeterValueSampleInterval": False,
        "NumberOfConnectors": True,
        "ResetRetries": False,
        "StopTransactionOnEVSideDisconnect": False,
        "StopTransactionOnInvalidId": False,
        "StopTxnAlignedData": False,
        "StopTxnSampledData": False,
        "SupportedFeatureProfiles": True,
        "TransactionMessageAttempts": False,
        "TransactionMessageRetryInterval": False,
        "UnlockConnectorOnEVSideDisconnect": False,
    },
    "LocalAuthListManagement": {
        "LocalAuthListEnabled": False,
        "LocalAuthListMaxLength": True,
        "SendLocalListMaxLength": True,
    },
    "RemoteTrigger": {},
}

# Every CSMS-initiated message of each profile (1.6 §3.3 Table 2), with a valid payload.
PROFILE_MESSAGES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "Core": [
        ("ChangeAvailability", {"connectorId": 1, "type": "Operative"}),
        ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "300"}),
        ("ClearCache", {}),
        ("DataTransfer", {"vendorId": "x"}),
        ("GetConfiguration", {}),
        ("RemoteStartTransaction", {"idTag": "TAG", "connectorId": 0}),
        ("RemoteStopTransaction", {"transactionId": 4711}),
        ("UnlockConnector", {"connectorId": 1}),
    ],
    "LocalAuthListManagement": [
        ("GetLocalListVersion", {}),
        ("SendLocalList", {"listVersion": 1, "updateType": "Full", "localAuthorizationList": []}),
    ],
    "RemoteTrigger": [("TriggerMessage", {"requestedMessage": "Heartbeat"})],
    # GetDiagnostics of this profile works (tests/logupload/); the profile is claimed once UpdateFirmware does too.
    "FirmwareManagement": [
        ("UpdateFirmware", {"location": "ftp://x/", "retrieveDate": "2030-01-01T00:00:00Z"}),
    ],
    "Reservation": [
        ("ReserveNow", {"connectorId": 1, "expiryDate": "2030-01-01T00:00:00Z", "idTag": "T", "reservationId": 1}),
        ("CancelReservation", {"reservationId": 1}),
    ],
    "SmartCharging": [
        ("ClearChargingProfile", {}),
        ("GetCompositeSchedule", {"connectorId": 1, "duration": 60}),
    ],
}


def config_for(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


async def configuration(csms: LocalCsms, keys: list[str] | None = None) -> dict[str, dict[str, Any]]:
    result = await csms.stations[STATION].call(call.GetConfiguration(key=keys), suppress=False)
    return {item["key"]: item for item in result.configuration_key or []}


async def test_every_required_key_of_the_claimed_profiles(tmp_path: Path, csms: LocalCsms) -> None:
    """§9: "A required configuration key mentioned under a particular profile only has to be supported by the Charge
    Point if it supports that profile", with the Accessibility given: §9.1.7 ConnectorPhaseRotation (RW, CSL),
    §9.1.9 GetConfigurationMaxKeys (R), §9.1.22 ResetRetries (RW) among them."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))):
        await csms.wait_for("StatusNotification")
        keys = await configuration(csms)
        claimed = keys["SupportedFeatureProfiles"]["value"].split(",")
        for profile in claimed:
            for key, readonly in REQUIRED[profile].items():
                assert key in keys, f"{profile}: {key} missing"
                if readonly is not None:
                    assert keys[key]["readonly"] is readonly, (key, keys[key])
        assert keys["ConnectorPhaseRotation"]["value"] == "1.Unknown"  # one connector; its rotation is not known
        assert await csms.change_configuration(STATION, "ConnectorPhaseRotation", "0.RST,1.RTS") == "Accepted"
        for bad in ("1.XYZ", "2.RST", "1.RST,1.RTS", ""):
            assert await csms.change_configuration(STATION, "ConnectorPhaseRotation", bad) == "Rejected", bad
        assert (await configuration(csms, ["ConnectorPhaseRotation"]))["ConnectorPhaseRotation"][
            "value"
        ] == "0.RST,1.RTS"
        assert await csms.change_configuration(STATION, "ResetRetries", "2") == "Accepted"
        assert await csms.change_configuration(STATION, "ResetRetries", "-1") == "Rejected"
        # GetConfigurationMaxKeys bounds a request: more keys get OccurenceConstraintViolation (1.6 spelling).
        limit = int(keys["GetConfigurationMaxKeys"]["value"])
        answer = await csms.send_raw(
            STATION, json.dumps([2, "raw-many", "GetConfiguration", {"key": ["HeartbeatInterval"] * (limit + 1)}])
        )
        assert answer is not None and answer[:3] == [4, "raw-many", "OccurenceConstraintViolation"]


async def test_read_write_keys_accept_what_the_product_honours(tmp_path: Path, csms: LocalCsms) -> None:
    """§9.1.24 StopTransactionOnInvalidId, §9.1.23 StopTransactionOnEVSideDisconnect and §9.1.33
    UnlockConnectorOnEVSideDisconnect are RW: never read-only; a value the station honours is Accepted, the other
    Rejected without a change (§5.3). The station ends energy only by ending the meter's transaction, and its cable is
    fixed (errata §3.84: "SHALL always report this value as false")."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))):
        await csms.wait_for("StatusNotification")
        cases = {
            "StopTransactionOnInvalidId": ("true", "false"),
            "StopTransactionOnEVSideDisconnect": ("true", "false"),
            "UnlockConnectorOnEVSideDisconnect": ("false", "true"),
        }
        for key, (honoured, refused) in cases.items():
            before = await configuration(csms, [key])
            assert before[key]["readonly"] is False and before[key]["value"] == honoured, before
            assert await csms.change_configuration(STATION, key, refused) == "Rejected", key
            assert await csms.change_configuration(STATION, key, honoured) == "Accepted", key
            assert (await configuration(csms, [key]))[key]["value"] == honoured


async def test_every_claimed_profile_is_implemented(tmp_path: Path, csms: LocalCsms) -> None:
    """§9.1.29 SupportedFeatureProfiles claims only what is implemented: every CSMS-initiated message of a claimed
    profile (§3.3) gets a CALLRESULT; one of a profile not claimed gets CALLERROR NotSupported (OCPP-J §4.2.3)."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))):
        await csms.wait_for("StatusNotification")
        claimed = (await configuration(csms, ["SupportedFeatureProfiles"]))["SupportedFeatureProfiles"]["value"]
        assert set(claimed.split(",")) == {"Core", "LocalAuthListManagement", "RemoteTrigger"}
        for profile, messages in PROFILE_MESSAGES.items():
            for n, (action, payload) in enumerate(messages):
                answer = await csms.send_raw(STATION, json.dumps([2, f"raw-{profile}-{n}", action, payload]))
                assert answer is not None, action
                if profile in claimed.split(","):
                    assert answer[0] == 3, (action, answer)
                else:
                    assert answer[:3] == [4, f"raw-{profile}-{n}", "NotSupported"], (action, answer)
