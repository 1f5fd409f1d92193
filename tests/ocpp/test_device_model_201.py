"""The 2.0.1 device model to the letter, over the real WebSocket (B05-B07, Part 2 "Referenced Components and
Variables"): the physical components with their required variables, every required variable of every implemented
controller with its mutability, valuesList on every list-typed variable, reports in ItemsPerMessage parts, and no
controller claimed that is not implemented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms

STATION = "CP-DM"

# Part 2 Referenced Components and Variables §2.1-§2.7 (and Part 4 §8): the required variables of the controllers
# this station implements, (component, variable, instance) -> mutability (None: "ReadOnly or ReadWrite, choice is up
# to the Charging Station"). UnlockOnEVSideDisconnect: "For an EVSE with only fixed cables, the mutability SHALL be
# ReadOnly and the actual value SHALL be false".
REQUIRED: dict[tuple[str, str, str | None], str | None] = {
    ("OCPPCommCtrlr", "FileTransferProtocols", None): "ReadOnly",
    ("OCPPCommCtrlr", "MessageTimeout", "Default"): "ReadOnly",
    ("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"): "ReadWrite",
    ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"): "ReadWrite",
    ("OCPPCommCtrlr", "NetworkConfigurationPriority", None): "ReadWrite",
    ("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", None): "ReadWrite",
    ("OCPPCommCtrlr", "OfflineThreshold", None): "ReadWrite",
    ("OCPPCommCtrlr", "ResetRetries", None): "ReadWrite",
    ("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", None): "ReadOnly",
    ("OCPPCommCtrlr", "RetryBackOffRepeatTimes", None): "ReadWrite",
    ("OCPPCommCtrlr", "RetryBackOffRandomRange", None): "ReadWrite",
    ("OCPPCommCtrlr", "RetryBackOffWaitMinimum", None): "ReadWrite",
    ("OCPPCommCtrlr", "WebSocketPingInterval", None): "ReadWrite",
    ("DeviceDataCtrlr", "ItemsPerMessage", "GetReport"): "ReadOnly",
    ("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables"): "ReadOnly",
    ("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables"): "ReadOnly",
    ("DeviceDataCtrlr", "BytesPerMessage", "GetReport"): "ReadOnly",
    ("DeviceDataCtrlr", "BytesPerMessage", "GetVariables"): "ReadOnly",
    ("DeviceDataCtrlr", "BytesPerMessage", "SetVariables"): "ReadOnly",
    ("ClockCtrlr", "DateTime", None): "ReadOnly",
    ("ClockCtrlr", "TimeSource", None): "ReadWrite",
    ("SecurityCtrlr", "CertificateEntries", None): "ReadOnly",
    ("SecurityCtrlr", "OrganizationName", None): "ReadWrite",
    ("SecurityCtrlr", "SecurityProfile", None): "ReadOnly",
    ("AuthCtrlr", "AuthorizeRemoteStart", None): None,
    ("AuthCtrlr", "LocalAuthorizeOffline", None): "ReadWrite",
    ("AuthCtrlr", "LocalPreAuthorize", None): "ReadWrite",
    ("LocalAuthListCtrlr", "BytesPerMessage", None): "ReadOnly",
    ("LocalAuthListCtrlr", "Entries", None): "ReadOnly",
    ("LocalAuthListCtrlr", "ItemsPerMessage", None): "ReadOnly",
    ("TxCtrlr", "EVConnectionTimeOut", None): "ReadWrite",
    ("TxCtrlr", "StopTxOnEVSideDisconnect", None): None,
    ("TxCtrlr", "StopTxOnInvalidId", None): "ReadWrite",
    ("TxCtrlr", "TxStartPoint", None): None,
    ("TxCtrlr", "TxStopPoint", None): None,
    ("SampledDataCtrlr", "TxEndedInterval", None): "ReadWrite",
    ("SampledDataCtrlr", "TxEndedMeasurands", None): "ReadWrite",
    ("SampledDataCtrlr", "TxStartedMeasurands", None): "ReadWrite",
    ("SampledDataCtrlr", "TxUpdatedInterval", None): "ReadWrite",
    ("SampledDataCtrlr", "TxUpdatedMeasurands", None): "ReadWrite",
    ("AlignedDataCtrlr", "Interval", None): "ReadWrite",
    ("AlignedDataCtrlr", "Measurands", None): "ReadWrite",
    ("AlignedDataCtrlr", "TxEndedInterval", None): "ReadWrite",
    ("AlignedDataCtrlr", "TxEndedMeasurands", None): "ReadWrite",
    # SmartChargingCtrlr's required variables (dm_components_vars: Required yes), issue 19
    ("SmartChargingCtrlr", "Entries", "ChargingProfiles"): "ReadOnly",
    ("SmartChargingCtrlr", "LimitChangeSignificance", None): "ReadWrite",
    ("SmartChargingCtrlr", "PeriodsPerSchedule", None): "ReadOnly",
    ("SmartChargingCtrlr", "ProfileStackLevel", None): "ReadOnly",
    ("SmartChargingCtrlr", "RateUnit", None): "ReadOnly",
}
# §2.13: the physical components, each on its tier.
PHYSICAL = {
    ("ChargingStation", None, None): {"AvailabilityState", "Available", "SupplyPhases"},
    ("EVSE", 1, None): {"AvailabilityState", "Available", "Power", "SupplyPhases"},
    ("Connector", 1, 1): {"Available", "ConnectorType", "SupplyPhases"},
}
IMPLEMENTED = {
    "OCPPCommCtrlr",
    "DeviceDataCtrlr",
    "ClockCtrlr",
    "SecurityCtrlr",
    "AuthCtrlr",
    "AuthCacheCtrlr",
    "LocalAuthListCtrlr",
    "TxCtrlr",
    "SampledDataCtrlr",
    "AlignedDataCtrlr",
    "FiscalMetering",
    "SmartChargingCtrlr",
    "ChargingStation",
    "EVSE",
    "Connector",
}


def config_for(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": "2.0.1", "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


def key_of(item: dict[str, Any]) -> tuple[str, str, str | None]:
    return item["component"]["name"], item["variable"]["name"], item["variable"].get("instance")


async def test_full_inventory_to_the_letter(tmp_path: Path) -> None:
    """B07.FR.08 (FullInventory: all component-variables with their VariableCharacteristics), B07.FR.10 (seqNo from
    0 per report), ItemsPerMessage[GetReport] per part, tbc on all but the last; §2.13 ChargingStation / EVSE /
    Connector with AvailabilityState, Available, SupplyPhases, ConnectorType, Power (maxLimit); the required variables
    with their mutability; valuesList on every MemberList, SequenceList and OptionList (VariableCharacteristicsType);
    Part 2 §1 "Controller Components": a controller's Enabled/Available only where it is implemented."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))):
            await csms.wait_for("StatusNotification", lambda p: p.get("connectorStatus") == "Available")
            assert await csms.get_base_report(STATION, 9) == "Accepted"
            await csms.wait_for("NotifyReport", lambda p: p["requestId"] == 9 and not p.get("tbc"))
            parts = [r.payload for r in csms.messages("NotifyReport") if r.payload["requestId"] == 9]
            items = [item for part in parts for item in part.get("reportData", [])]
            per_part = next(
                int(i["variableAttribute"][0]["value"])
                for i in items
                if key_of(i) == ("DeviceDataCtrlr", "ItemsPerMessage", "GetReport")
            )
            assert len(parts) > 1 and [p["seqNo"] for p in parts] == list(range(len(parts)))
            assert [bool(p.get("tbc")) for p in parts] == [True] * (len(parts) - 1) + [False]
            assert all(len(p.get("reportData", [])) <= per_part for p in parts)

            found = {key_of(i): i for i in items}
            for key, mutability in REQUIRED.items():
                assert key in found, f"required variable missing: {key}"
                got = found[key]["variableAttribute"][0]["mutability"]
                if mutability is not None:
                    assert got == mutability, (key, got)
            for item in items:
                characteristics = item["variableCharacteristics"]
                if characteristics["dataType"] in ("MemberList", "SequenceList", "OptionList"):
                    assert "valuesList" in characteristics, key_of(item)
            physical: dict[tuple[str, int | None, int | None], set[str]] = {}
            for item in items:
                component = item["component"]
                where = (
                    component["name"],
                    component.get("evse", {}).get("id"),
                    component.get("evse", {}).get("connectorId"),
                )
                if component["name"] in ("ChargingStation", "EVSE", "Connector"):
                    physical.setdefault(where, set()).add(item["variable"]["name"])
                    assert item["variableAttribute"][0]["mutability"] == "ReadOnly"
            for where, variables in PHYSICAL.items():
                assert variables <= physical.get(where, set()), (where, physical.get(where))
            power = found[("EVSE", "Power", None)]
            assert power["variableCharacteristics"]["maxLimit"] > 0  # §2.13.7: required (maxLimit only)
            assert found[("Connector", "ConnectorType", None)]["variableAttribute"][0]["value"] == "cType2"
            assert (
                found[("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", None)]["variableAttribute"][0]["value"] == "false"
            )
            assert {key[0] for key in found} <= IMPLEMENTED  # no Reservation, Tariff, ... claimed
            # meter-output: nothing limits the car, so smart charging is reported and not available (K01.FR.29)
            assert found[("SmartChargingCtrlr", "Available", None)]["variableAttribute"][0]["value"] == "false"
            for controller in ("LocalAuthListCtrlr", "AuthCacheCtrlr"):
                assert found[(controller, "Available", None)]["variableAttribute"][0]["value"] == "true"
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_physical_components_and_read_write_variables(tmp_path: Path) -> None:
    """B06 on the component tiers (EVSE on evse 1, Connector on evse 1 connector 1; unknown tier: UnknownComponent,
    B06.FR.06); ReadOnly variables Rejected by SetVariables (B05.FR.09); NetworkConfigurationPriority,
    NetworkProfileConnectionAttempts, ResetRetries and TimeSource ReadWrite (§2.1.6, §2.1.7, §2.1.14, §2.1.30),
    accepting the values the station has and refusing the rest (B05.FR.07)."""
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))):
            await csms.wait_for("StatusNotification", lambda p: p.get("connectorStatus") == "Available")
            got = await csms.get_variables(
                STATION,
                [
                    {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"}},
                    {
                        "component": {"name": "Connector", "evse": {"id": 1, "connectorId": 1}},
                        "variable": {"name": "ConnectorType"},
                    },
                    {"component": {"name": "ChargingStation"}, "variable": {"name": "SupplyPhases"}},
                    {"component": {"name": "EVSE", "evse": {"id": 5}}, "variable": {"name": "Available"}},
                    {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Colour"}},
                    {"component": {"name": "ClockCtrlr"}, "variable": {"name": "DateTime"}},
                ],
            )
            assert [(g["attribute_status"], g.get("attribute_value")) for g in got[:5]] == [
                ("Accepted", "Available"),
                ("Accepted", "cType2"),
                ("Accepted", "3"),
                ("UnknownComponent", None),
                ("UnknownVariable", None),
            ]
            assert got[5]["attribute_status"] == "Accepted" and got[5]["attribute_value"].endswith("Z")

            def item(component: str, variable: str, value: str, **extra: Any) -> dict[str, Any]:
                return {
                    "component": {"name": component, **extra},
                    "variable": {"name": variable},
                    "attribute_value": value,
                }

            results = await csms.set_variables(
                STATION,
                [
                    item("EVSE", "AvailabilityState", "Faulted", evse={"id": 1}),
                    item("OCPPCommCtrlr", "NetworkConfigurationPriority", "0"),
                    item("OCPPCommCtrlr", "NetworkConfigurationPriority", "1,0"),
                    item("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", "5"),
                    item("OCPPCommCtrlr", "ResetRetries", "1"),
                    item("ClockCtrlr", "TimeSource", "NTP"),
                    item("ClockCtrlr", "TimeSource", "Heartbeat"),
                    item("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", "true"),
                    item("TxCtrlr", "StopTxOnInvalidId", "false"),
                    item("TxCtrlr", "StopTxOnInvalidId", "true"),
                ],
            )
            assert [r["attribute_status"] for r in results] == [
                "Rejected",
                "Accepted",
                "Rejected",
                "Accepted",
                "Accepted",
                "Accepted",
                "Rejected",
                "Rejected",
                "Rejected",
                "Accepted",
            ]
    finally:
        await csms.stop()
    assert csms.violations == []
