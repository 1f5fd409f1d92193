"""The station's OCPP settings: one table, read and changed as 1.6 configuration keys or 2.0.1 device-model variables.

Owns every setting the CSMS can see (`SETTINGS`): its 1.6 key, its 2.0.1 component/variable (and instance), default,
mutability, data type and check. One setting has one value whatever the protocol: `HeartbeatInterval` (1.6) and
`OCPPCommCtrlr.HeartbeatInterval` (2.0.1) are the same entry. Values the CSMS changes are kept in the store's settings,
so they survive restarts; read-only values may be computed (the meter's public key). A change is validated before
anything is stored: a bad value is Rejected and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from station.ocpp.signed_value import PUBLIC_KEY_OPTIONS, oca_public_key
from station.store import Store

Check = Callable[[str], bool]


@dataclass(frozen=True)
class IntRange:
    """An integer setting's allowed range: the check a change must pass, and the bounds a CSMS value is clamped to
    where OCPP gives no way to refuse it (the heartbeat interval in a BootNotification answer)."""

    lo: int
    hi: int

    def __call__(self, value: str) -> bool:
        try:
            return self.lo <= int(value) <= self.hi
        except ValueError:
            return False

    def clamp(self, value: int) -> int:
        return min(max(value, self.lo), self.hi)


def _int_range(lo: int, hi: int) -> Check:
    return IntRange(lo, hi)


def _bool(value: str) -> bool:
    return value.lower() in ("true", "false")


def _one_of(options: tuple[str, ...]) -> Check:
    return lambda value: value in options


MEASURANDS = (
    "Energy.Active.Import.Register",
    "Energy.Active.Export.Register",
    "Power.Active.Import",
    "Voltage",
    "Current.Import",
)


def _members_of(options: tuple[str, ...]) -> Check:
    return lambda value: value == "" or all(v.strip() in options for v in value.split(","))


@dataclass(frozen=True)
class Setting:
    name: str  # the storage name: the 1.6 key where there is one
    default: str
    key16: str | None = None  # 1.6 configuration key
    component: str | None = None  # 2.0.1 component.variable[instance]
    variable: str | None = None
    instance: str | None = None
    readonly: bool = False
    readonly201: bool = False  # read-only as a 2.0.1 variable though writable as a 1.6 key
    writeonly: bool = False  # a secret: accepted, stored, never read back (GetConfiguration, GetVariables, reports)
    data_type: str = "string"  # 2.0.1 DataEnumType
    values_list: str | None = None  # 2.0.1 OptionList / MemberList values
    check: Check | None = None
    unit: str | None = None


def _s(name: str, default: str, **kw: Any) -> Setting:
    return Setting(name, default, **kw)


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # OCPPCommCtrlr
    _s("HeartbeatInterval", "300", key16="HeartbeatInterval", component="OCPPCommCtrlr", variable="HeartbeatInterval",
       data_type="integer", check=_int_range(1, 86400), unit="s"),
    _s("TransactionMessageAttempts", "3", key16="TransactionMessageAttempts", component="OCPPCommCtrlr",
       variable="MessageAttempts", instance="TransactionEvent", data_type="integer", check=_int_range(1, 100)),
    _s("TransactionMessageRetryInterval", "10", key16="TransactionMessageRetryInterval", component="OCPPCommCtrlr",
       variable="MessageAttemptInterval", instance="TransactionEvent", data_type="integer",
       check=_int_range(1, 86400), unit="s"),
    _s("WebSocketPingInterval", "30", key16="WebSocketPingInterval", component="OCPPCommCtrlr",
       variable="WebSocketPingInterval", data_type="integer", check=_int_range(0, 3600), unit="s"),
    _s("MessageTimeout", "30", component="OCPPCommCtrlr", variable="MessageTimeout", instance="Default",
       readonly=True, data_type="integer", unit="s"),
    _s("PublicKeyWithSignedMeterValue", "OncePerTransaction", key16="PublicKeyWithSignedMeterValue",
       component="OCPPCommCtrlr", variable="PublicKeyWithSignedMeterValue", data_type="OptionList",
       values_list=",".join(PUBLIC_KEY_OPTIONS), check=_one_of(PUBLIC_KEY_OPTIONS)),
    _s("NetworkConfigurationPriority", "0", component="OCPPCommCtrlr", variable="NetworkConfigurationPriority",
       readonly=True, data_type="SequenceList"),
    _s("NetworkProfileConnectionAttempts", "3", component="OCPPCommCtrlr",
       variable="NetworkProfileConnectionAttempts", readonly=True, data_type="integer"),
    _s("OfflineThreshold", "60", component="OCPPCommCtrlr", variable="OfflineThreshold", data_type="integer",
       check=_int_range(0, 86400), unit="s"),
    _s("ResetRetries", "0", component="OCPPCommCtrlr", variable="ResetRetries", readonly=True, data_type="integer"),
    _s("FileTransferProtocols", "", component="OCPPCommCtrlr", variable="FileTransferProtocols", readonly=True,
       data_type="MemberList"),
    # Sampled and aligned data
    _s("MeterValueSampleInterval", "0", key16="MeterValueSampleInterval", component="SampledDataCtrlr",
       variable="TxUpdatedInterval", data_type="integer", check=_int_range(0, 86400), unit="s"),
    _s("TxStartedMeasurands", "Energy.Active.Import.Register", component="SampledDataCtrlr",
       variable="TxStartedMeasurands", data_type="MemberList", values_list=",".join(MEASURANDS),
       check=_members_of(MEASURANDS)),
    _s("MeterValuesSampledData", "Energy.Active.Import.Register", key16="MeterValuesSampledData",
       component="SampledDataCtrlr", variable="TxUpdatedMeasurands", data_type="MemberList",
       values_list=",".join(MEASURANDS), check=_members_of(MEASURANDS)),
    _s("StopTxnSampledData", "Energy.Active.Import.Register", key16="StopTxnSampledData",
       component="SampledDataCtrlr", variable="TxEndedMeasurands", data_type="MemberList",
       values_list=",".join(MEASURANDS), check=_members_of(MEASURANDS)),
    _s("TxEndedInterval", "0", component="SampledDataCtrlr", variable="TxEndedInterval", data_type="integer",
       check=_int_range(0, 86400), unit="s"),
    _s("SampledDataSignReadings", "true", key16="SampledDataSignReadings", component="SampledDataCtrlr",
       variable="SignReadings", data_type="boolean", check=_bool),
    # OCA application note: which readings are signed. This release's meters sign Transaction.Begin/End records
    # only (smart-me one combined record at the end), so updated/aligned readings are never signed: read-only false.
    _s("SampledDataSignStartedReadings", "false", key16="SampledDataSignStartedReadings",
       component="SampledDataCtrlr", variable="SignStartedReadings", data_type="boolean", check=_bool),
    _s("SampledDataSignUpdatedReadings", "false", key16="SampledDataSignUpdatedReadings",
       component="SampledDataCtrlr", variable="SignUpdatedReadings", readonly=True, data_type="boolean"),
    # Signed aligned data: the meter's latest signed reading outside transactions (smart-me signs every 15 minutes;
    # the other models make none, and their aligned values stay unsigned).
    _s("AlignedDataSignReadings", "false", key16="AlignedDataSignReadings", component="AlignedDataCtrlr",
       variable="SignReadings", data_type="boolean", check=_bool),
    _s("AlignedDataSignUpdatedReadings", "false", key16="AlignedDataSignUpdatedReadings",
       component="AlignedDataCtrlr", variable="SignUpdatedReadings", readonly=True, data_type="boolean"),
    _s("StartTxnSampledData", "Energy.Active.Import.Register", key16="StartTxnSampledData",
       data_type="MemberList", values_list=",".join(MEASURANDS), check=_members_of(MEASURANDS)),
    _s("RetryBackOffWaitMinimum", "", component="OCPPCommCtrlr", variable="RetryBackOffWaitMinimum",
       data_type="integer", check=_int_range(0, 3600), unit="s"),
    _s("RetryBackOffRandomRange", "", component="OCPPCommCtrlr", variable="RetryBackOffRandomRange",
       data_type="integer", check=_int_range(0, 3600), unit="s"),
    _s("RetryBackOffRepeatTimes", "", component="OCPPCommCtrlr", variable="RetryBackOffRepeatTimes",
       data_type="integer", check=_int_range(0, 20)),
    _s("ClockAlignedDataInterval", "0", key16="ClockAlignedDataInterval", component="AlignedDataCtrlr",
       variable="Interval", data_type="integer", check=_int_range(0, 86400), unit="s"),
    _s("MeterValuesAlignedData", "Energy.Active.Import.Register", key16="MeterValuesAlignedData",
       component="AlignedDataCtrlr", variable="Measurands", data_type="MemberList",
       values_list=",".join(MEASURANDS), check=_members_of(MEASURANDS)),
    _s("StopTxnAlignedData", "", key16="StopTxnAlignedData", component="AlignedDataCtrlr",
       variable="TxEndedMeasurands", data_type="MemberList", values_list=",".join(MEASURANDS),
       check=_members_of(MEASURANDS)),
    _s("AlignedTxEndedInterval", "0", component="AlignedDataCtrlr", variable="TxEndedInterval",
       data_type="integer", check=_int_range(0, 86400), unit="s"),
    # Transactions
    _s("TxStartPoint", "PowerPathClosed", component="TxCtrlr", variable="TxStartPoint", readonly=True,
       data_type="MemberList"),
    _s("TxStopPoint", "PowerPathClosed", component="TxCtrlr", variable="TxStopPoint", readonly=True,
       data_type="MemberList"),
    _s("EVConnectionTimeOut", "60", key16="ConnectionTimeOut", component="TxCtrlr", variable="EVConnectionTimeOut",
       data_type="integer", check=_int_range(0, 3600), unit="s"),
    _s("StopTxOnEVSideDisconnect", "true", key16="StopTransactionOnEVSideDisconnect", component="TxCtrlr",
       variable="StopTxOnEVSideDisconnect", readonly=True, data_type="boolean"),
    _s("StopTxOnInvalidId", "true", key16="StopTransactionOnInvalidId", component="TxCtrlr",
       variable="StopTxOnInvalidId", readonly=True, data_type="boolean"),
    _s("UnlockConnectorOnEVSideDisconnect", "true", key16="UnlockConnectorOnEVSideDisconnect", readonly=True),
    # Authorization
    _s("AuthorizeRemoteTxRequests", "false", key16="AuthorizeRemoteTxRequests", component="AuthCtrlr",
       variable="AuthorizeRemoteStart", readonly=True, data_type="boolean"),
    _s("LocalAuthorizeOffline", "true", key16="LocalAuthorizeOffline", component="AuthCtrlr",
       variable="LocalAuthorizeOffline", data_type="boolean", check=_bool),
    _s("LocalPreAuthorize", "false", key16="LocalPreAuthorize", component="AuthCtrlr", variable="LocalPreAuthorize",
       data_type="boolean", check=_bool),
    # Device data, clock, security
    _s("ItemsPerMessageGetVariables", "50", component="DeviceDataCtrlr", variable="ItemsPerMessage",
       instance="GetVariables", readonly=True, data_type="integer"),
    _s("ItemsPerMessageSetVariables", "50", component="DeviceDataCtrlr", variable="ItemsPerMessage",
       instance="SetVariables", readonly=True, data_type="integer"),
    _s("BytesPerMessageGetVariables", "65536", component="DeviceDataCtrlr", variable="BytesPerMessage",
       instance="GetVariables", readonly=True, data_type="integer"),
    _s("BytesPerMessageSetVariables", "65536", component="DeviceDataCtrlr", variable="BytesPerMessage",
       instance="SetVariables", readonly=True, data_type="integer"),
    _s("TimeSource", "Heartbeat", component="ClockCtrlr", variable="TimeSource", readonly=True,
       data_type="SequenceList"),
    # SecurityProfile: 1.6 may raise it (ChangeConfiguration); 2.0.1 changes it only through a network profile, which
    # this product does not offer, so there it is read-only. station/ocpp/security.py computes and checks it.
    _s("SecurityProfile", "0", key16="SecurityProfile", component="SecurityCtrlr", variable="SecurityProfile",
       readonly201=True, data_type="integer"),
    _s("AuthorizationKey", "", key16="AuthorizationKey", component="SecurityCtrlr", variable="BasicAuthPassword",
       writeonly=True, check=lambda v: 16 <= len(v) <= 40 and v.isascii() and v.isprintable() and " " not in v),
    _s("OrganizationName", "", component="SecurityCtrlr", variable="OrganizationName", data_type="string",
       check=lambda v: len(v) <= 50),
    _s("NumberOfConnectors", "1", key16="NumberOfConnectors", readonly=True, data_type="integer"),
    _s("SupportedFeatureProfiles", "Core,LocalAuthListManagement,RemoteTrigger", key16="SupportedFeatureProfiles",
       readonly=True),
    # Local authorization list and cache (station/auth.py)
    _s("LocalAuthListEnabled", "true", key16="LocalAuthListEnabled", component="LocalAuthListCtrlr",
       variable="Enabled", data_type="boolean", check=_bool),
    _s("LocalAuthListMaxLength", "10000", key16="LocalAuthListMaxLength", component="LocalAuthListCtrlr",
       variable="Entries", readonly=True, data_type="integer"),
    _s("SendLocalListMaxLength", "500", key16="SendLocalListMaxLength", component="LocalAuthListCtrlr",
       variable="ItemsPerMessage", readonly=True, data_type="integer"),
    _s("AuthorizationCacheEnabled", "true", key16="AuthorizationCacheEnabled", component="AuthCacheCtrlr",
       variable="Enabled", data_type="boolean", check=_bool),
)
# fmt: on

BY_NAME = {s.name: s for s in SETTINGS}
BY_KEY16 = {s.key16: s for s in SETTINGS if s.key16}
BY_VARIABLE = {(s.component, s.variable, s.instance): s for s in SETTINGS if s.component}


@dataclass(frozen=True)
class VariableResult:
    status: str  # 2.0.1 GetVariableStatus / SetVariableStatus
    value: str | None = None


class Settings:
    def __init__(self, store: Store, connector_ids: tuple[int, ...], public_key: Callable[[], str]) -> None:
        self.store = store
        self.connector_ids = connector_ids
        self.public_key = public_key
        self.listeners: list[Callable[[str, str], None]] = []
        self.computed: dict[str, Callable[[], str]] = {
            "NumberOfConnectors": lambda: str(len(self.connector_ids)),
        }
        # Checks that need more than the value (station/ocpp/security.py registers SecurityProfile's).
        self.checks: dict[str, Check] = {}

    # ------------------------------------------------------------------ shared

    def value(self, name: str) -> str:
        setting = BY_NAME[name]
        if name in self.computed:
            return self.computed[name]()
        return self.store.setting(f"ocpp16.{name}") or setting.default

    def int_value(self, name: str) -> int:
        try:
            return int(self.value(name))
        except ValueError:
            return int(BY_NAME[name].default)

    def clamp(self, name: str, value: int) -> int:
        """`value` within the integer setting's allowed range."""
        check = BY_NAME[name].check
        return check.clamp(value) if isinstance(check, IntRange) else value

    def stored(self, name: str) -> str | None:
        """What the CSMS set, None when it never did (secrets included: for the connection, never for the CSMS)."""
        return self.store.setting(f"ocpp16.{name}")

    def _change(self, setting: Setting, value: str) -> bool:
        if setting.readonly or (setting.check is not None and not setting.check(value)):
            return False
        extra = self.checks.get(setting.name)
        if extra is not None and not extra(value):
            return False
        self.store.set_setting(f"ocpp16.{setting.name}", value)
        for listener in self.listeners:
            listener(setting.name, value)
        return True

    # ------------------------------------------------------------------ 1.6 configuration keys

    def _meter_key_connector(self, key: str) -> int | None:
        suffix = key[len("MeterPublicKey") :] if key.startswith("MeterPublicKey") else ""
        return int(suffix) if suffix.isdigit() and int(suffix) in self.connector_ids else None

    def get(self, key: str) -> str | None:
        """A 1.6 key's value, None when the key is unknown."""
        if self._meter_key_connector(key) is not None:
            return oca_public_key(self.public_key())
        setting = BY_KEY16.get(key)
        return None if setting is None else self.value(setting.name)

    def read(self, keys: list[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        for key in keys or [*BY_KEY16, *(f"MeterPublicKey{c}" for c in self.connector_ids)]:
            if key in BY_KEY16 and BY_KEY16[key].writeonly:
                known.append({"key": key, "readonly": False})  # it exists and can be set; its value is not shown
                continue
            value = self.get(key)
            if value is None:
                unknown.append(key)
                continue
            readonly = self._meter_key_connector(key) is not None or BY_KEY16[key].readonly
            known.append({"key": key, "readonly": readonly, "value": value})
        return known, unknown

    def change(self, key: str, value: str) -> str:
        """Returns the 1.6 ConfigurationStatus: Accepted, Rejected or NotSupported."""
        if self._meter_key_connector(key) is not None:
            return "Rejected"
        setting = BY_KEY16.get(key)
        if setting is None:
            return "NotSupported"
        return "Accepted" if self._change(setting, value) else "Rejected"

    # ------------------------------------------------------------------ 2.0.1 device model

    def _fiscal_key(self, component: str, variable: str, evse: int | None) -> bool:
        return component == "FiscalMetering" and variable == "PublicKey" and evse in self.connector_ids

    def get_variable(
        self,
        component: str,
        variable: str,
        *,
        instance: str | None = None,
        evse: int | None = None,
        attribute: str = "Actual",
    ) -> VariableResult:
        if self._fiscal_key(component, variable, evse):
            if attribute != "Actual":
                return VariableResult("NotSupportedAttributeType")
            return VariableResult("Accepted", oca_public_key(self.public_key()))
        if component == "ClockCtrlr" and variable == "DateTime":
            return VariableResult("Accepted", datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        known_component = any(c == component for c, _, _ in BY_VARIABLE) or component == "ClockCtrlr"
        setting = BY_VARIABLE.get((component, variable, instance))
        if setting is None:
            return VariableResult("UnknownVariable" if known_component else "UnknownComponent")
        if attribute != "Actual":
            return VariableResult("NotSupportedAttributeType")
        if setting.writeonly:
            return VariableResult("Rejected")  # WriteOnly mutability: set, never read
        return VariableResult("Accepted", self.value(setting.name))

    def set_variable(
        self,
        component: str,
        variable: str,
        value: str,
        *,
        instance: str | None = None,
        evse: int | None = None,
        attribute: str = "Actual",
    ) -> str:
        """Returns the 2.0.1 SetVariableStatus."""
        if self._fiscal_key(component, variable, evse) or (component, variable) == ("ClockCtrlr", "DateTime"):
            return "Rejected"
        setting = BY_VARIABLE.get((component, variable, instance))
        if setting is None:
            known_component = any(c == component for c, _, _ in BY_VARIABLE)
            return "UnknownVariable" if known_component else "UnknownComponent"
        if attribute != "Actual":
            return "NotSupportedAttributeType"
        if setting.readonly201:
            return "Rejected"
        return "Accepted" if self._change(setting, value) else "Rejected"

    def report(self, *, configuration_only: bool = False) -> list[dict[str, Any]]:
        """GetBaseReport's ReportData (camelCase, as on the wire): every variable with its attributes."""
        items: list[dict[str, Any]] = []
        for setting in SETTINGS:
            if setting.component is None or setting.variable is None:
                continue
            readonly = setting.readonly or setting.readonly201
            if configuration_only and readonly:
                continue
            variable: dict[str, Any] = {"name": setting.variable}
            if setting.instance:
                variable["instance"] = setting.instance
            characteristics: dict[str, Any] = {"dataType": setting.data_type, "supportsMonitoring": False}
            if setting.values_list:
                characteristics["valuesList"] = setting.values_list
            if setting.unit:
                characteristics["unit"] = setting.unit
            attribute: dict[str, Any] = {
                "type": "Actual",
                "mutability": "ReadOnly" if readonly else "WriteOnly" if setting.writeonly else "ReadWrite",
                "persistent": True,
                "constant": setting.readonly,
            }
            if not setting.writeonly:
                attribute["value"] = self.value(setting.name)[:2500]
            items.append(
                {
                    "component": {"name": setting.component},
                    "variable": variable,
                    "variableAttribute": [attribute],
                    "variableCharacteristics": characteristics,
                }
            )
        if not configuration_only:
            for connector in self.connector_ids:
                items.append(
                    {
                        "component": {"name": "FiscalMetering", "evse": {"id": connector}},
                        "variable": {"name": "PublicKey"},
                        "variableAttribute": [
                            {"type": "Actual", "value": oca_public_key(self.public_key()), "mutability": "ReadOnly"}
                        ],
                        "variableCharacteristics": {"dataType": "string", "supportsMonitoring": False},
                    }
                )
        return items
