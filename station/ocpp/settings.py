"""The station's OCPP settings: one table, read and changed as 1.6 configuration keys or 2.0.1 device-model variables.

Owns every setting the CSMS can see (`SETTINGS`): its 1.6 key, its 2.0.1 component/variable (and instance), default,
mutability, data type and check. One setting has one value whatever the protocol: `HeartbeatInterval` (1.6) and
`OCPPCommCtrlr.HeartbeatInterval` (2.0.1) are the same entry. Values the CSMS changes are kept in the store's settings,
so they survive restarts; read-only values may be computed (the meter's public key). A change is validated before
anything is stored: a bad value, or one the product cannot honour, is Rejected and changes nothing. A setting's check
accepts only what the station does: a key never promises what the meter or the hardware cannot deliver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from station.core.model import Layout
from station.ocpp.adapter import iso
from station.ocpp.signed_value import PUBLIC_KEY_OPTIONS, oca_public_key
from station.smart.book import ProfileRules
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


def _percent(value: str) -> bool:
    try:
        return 0 <= float(value) <= 100
    except ValueError:
        return False


def _one_of(options: tuple[str, ...]) -> Check:
    return lambda value: value in options


# What every meter driver reads (station/meter/interface.py LiveValues): the import and export registers, active
# power, and voltage and current per phase. Nothing else may be configured as a measurand (1.6 §3.16.4: Rejected).
MEASURANDS = (
    "Energy.Active.Import.Register",
    "Energy.Active.Export.Register",
    "Power.Active.Import",
    "Voltage",
    "Current.Import",
)
MAX_LIST_LENGTH = 500  # 1.6 CiString500 (ChangeConfiguration value); also the maxLimit reported for lists


def _members_of(options: tuple[str, ...]) -> Check:
    """A MemberList / CSL: an unordered set of distinct members (empty allowed)."""

    def check(value: str) -> bool:
        if value == "":
            return True
        members = [v.strip() for v in value.split(",")]
        return len(value) <= MAX_LIST_LENGTH and len(set(members)) == len(members) and set(members) <= set(options)

    return check


def _sequence_of(options: tuple[str, ...]) -> Check:
    """A SequenceList: an ordered, non-empty set of distinct members."""
    members = _members_of(options)
    return lambda value: value != "" and members(value)


PHASE_ROTATIONS = ("NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR")
TIME_SOURCES = ("NTP",)  # the board's clock: the OS keeps it with NTP (the daemon sets no clock itself)
# ---- network profiles (B09/B10, station/ocpp/network.py): three slots; slot 0 starts as the config's [csms]
NETWORK_SLOTS = ("0", "1", "2")
# The TxStartPoint / TxStopPoint values the station honours where it sees the car (a transaction is the meter's, from
# its start to its signed end: never starting after the relay closed, never ending before it opened). Without a view
# of the car only PowerPathClosed.
TX_START_POINTS = ("PowerPathClosed", "Authorized")
TX_STOP_POINTS = ("PowerPathClosed", "EnergyTransfer")
STOP_TX_MAX_SAMPLES = 100  # periodic samples kept per transaction for StopTransaction / TransactionEvent(Ended)
CONNECTOR_TYPE = "cType2"  # the fixed Type 2 cable (2.0.1 ConnectorEnumType)
SUPPLY_PHASES = "3"  # every supported meter measures three phases
CERTIFICATE_STORE_MAX = 24  # ---- certificates: CA certificates the store holds at most (certificates.MAX_LENGTH)
PROFILE_RULES = ProfileRules()  # the limits the station's book of charging profiles keeps (station/smart/book.py)


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
    values_list: str | None = None  # 2.0.1 OptionList / MemberList / SequenceList values
    check: Check | None = None
    unit: str | None = None
    max_limit: float | None = None  # 2.0.1 VariableCharacteristics.maxLimit


def _s(name: str, default: str, **kw: Any) -> Setting:
    return Setting(name, default, **kw)


def _measurands(name: str, default: str, **kw: Any) -> Setting:
    return _s(
        name,
        default,
        data_type="MemberList",
        values_list=",".join(MEASURANDS),
        check=_members_of(MEASURANDS),
        max_limit=MAX_LIST_LENGTH,
        **kw,
    )


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # OCPPCommCtrlr (2.0.1 Part 2 "Referenced Components and Variables" §2.1, Part 4 §8; 1.6 §9.1)
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
       data_type="SequenceList", values_list=",".join(NETWORK_SLOTS), check=_sequence_of(NETWORK_SLOTS)),
    _s("NetworkProfileConnectionAttempts", "3", component="OCPPCommCtrlr",
       variable="NetworkProfileConnectionAttempts", data_type="integer", check=_int_range(1, 100)),
    # ---- network profiles: the slot of the connection in use (computed by station/ocpp/network.py)
    _s("ActiveNetworkProfile", "0", component="OCPPCommCtrlr", variable="ActiveNetworkProfile", readonly=True,
       data_type="integer"),
    _s("OfflineThreshold", "60", component="OCPPCommCtrlr", variable="OfflineThreshold", data_type="integer",
       check=_int_range(0, 86400), unit="s"),
    _s("ResetRetries", "0", key16="ResetRetries", component="OCPPCommCtrlr", variable="ResetRetries",
       data_type="integer", check=_int_range(0, 10)),
    # ---- log upload: what station/logupload/transfer.py sends over (and its tests prove); 1.6 §8's key too
    _s("FileTransferProtocols", "FTP,HTTP,HTTPS", key16="SupportedFileTransferProtocols", component="OCPPCommCtrlr",
       variable="FileTransferProtocols", readonly=True, data_type="MemberList", values_list="FTP,HTTP,HTTPS"),
    # Read-write; without a lock (a fixed cable) only "false" (1.6 errata §3.84 / 2.0.1 §2.1.12 "SHALL report
    # false"): Settings narrows the check and the default per station.
    _s("UnlockConnectorOnEVSideDisconnect", "false", key16="UnlockConnectorOnEVSideDisconnect",
       component="OCPPCommCtrlr", variable="UnlockOnEVSideDisconnect", data_type="boolean", check=_bool),
    _s("RetryBackOffWaitMinimum", "", component="OCPPCommCtrlr", variable="RetryBackOffWaitMinimum",
       data_type="integer", check=_int_range(0, 3600), unit="s"),
    _s("RetryBackOffRandomRange", "", component="OCPPCommCtrlr", variable="RetryBackOffRandomRange",
       data_type="integer", check=_int_range(0, 3600), unit="s"),
    _s("RetryBackOffRepeatTimes", "", component="OCPPCommCtrlr", variable="RetryBackOffRepeatTimes",
       data_type="integer", check=_int_range(0, 20)),
    # Sampled and aligned data
    _s("MeterValueSampleInterval", "0", key16="MeterValueSampleInterval", component="SampledDataCtrlr",
       variable="TxUpdatedInterval", data_type="integer", check=_int_range(0, 86400), unit="s"),
    _measurands("TxStartedMeasurands", "Energy.Active.Import.Register", component="SampledDataCtrlr",
                variable="TxStartedMeasurands"),
    _measurands("MeterValuesSampledData", "Energy.Active.Import.Register", key16="MeterValuesSampledData",
                component="SampledDataCtrlr", variable="TxUpdatedMeasurands"),
    _measurands("StopTxnSampledData", "Energy.Active.Import.Register", key16="StopTxnSampledData",
                component="SampledDataCtrlr", variable="TxEndedMeasurands"),
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
    _measurands("StartTxnSampledData", "Energy.Active.Import.Register", key16="StartTxnSampledData"),
    _s("ClockAlignedDataInterval", "0", key16="ClockAlignedDataInterval", component="AlignedDataCtrlr",
       variable="Interval", data_type="integer", check=_int_range(0, 86400), unit="s"),
    _measurands("MeterValuesAlignedData", "Energy.Active.Import.Register", key16="MeterValuesAlignedData",
                component="AlignedDataCtrlr", variable="Measurands"),
    # Clock-aligned values in StopTransaction / TransactionEvent(Ended) are not made: only the empty list is honoured.
    _s("StopTxnAlignedData", "", key16="StopTxnAlignedData", component="AlignedDataCtrlr",
       variable="TxEndedMeasurands", data_type="MemberList", values_list="", check=_one_of(("",)),
       max_limit=MAX_LIST_LENGTH),
    _s("AlignedTxEndedInterval", "0", component="AlignedDataCtrlr", variable="TxEndedInterval",
       data_type="integer", check=_int_range(0, 86400), unit="s"),
    _s("StopTransactionMaxMeterValues", str(STOP_TX_MAX_SAMPLES + 2), key16="StopTransactionMaxMeterValues",
       readonly=True, data_type="integer"),
    # Transactions
    _s("TxStartPoint", "PowerPathClosed", component="TxCtrlr", variable="TxStartPoint", data_type="MemberList",
       values_list=",".join(TX_START_POINTS), check=_one_of(TX_START_POINTS)),
    _s("TxStopPoint", "PowerPathClosed", component="TxCtrlr", variable="TxStopPoint", data_type="MemberList",
       values_list=",".join(TX_STOP_POINTS), check=_one_of(TX_STOP_POINTS)),
    _s("EVConnectionTimeOut", "60", key16="ConnectionTimeOut", component="TxCtrlr", variable="EVConnectionTimeOut",
       data_type="integer", check=_int_range(0, 3600), unit="s"),
    # Read-write (1.6 §9.1); a station that does not see the car (the meter's output switches the controller) can
    # only end the transaction when the cable goes: Settings narrows it to "true" there.
    _s("StopTxOnEVSideDisconnect", "true", key16="StopTransactionOnEVSideDisconnect", component="TxCtrlr",
       variable="StopTxOnEVSideDisconnect", data_type="boolean", check=_bool),
    _s("StopTxOnInvalidId", "true", key16="StopTransactionOnInvalidId", component="TxCtrlr",
       variable="StopTxOnInvalidId", data_type="boolean", check=_one_of(("true",))),
    # Authorization
    _s("AuthorizeRemoteTxRequests", "false", key16="AuthorizeRemoteTxRequests", component="AuthCtrlr",
       variable="AuthorizeRemoteStart", readonly=True, data_type="boolean"),
    _s("LocalAuthorizeOffline", "true", key16="LocalAuthorizeOffline", component="AuthCtrlr",
       variable="LocalAuthorizeOffline", data_type="boolean", check=_bool),
    _s("AllowOfflineTxForUnknownId", "false", key16="AllowOfflineTxForUnknownId", component="AuthCtrlr",
       variable="OfflineTxForUnknownIdEnabled", data_type="boolean", check=_bool),
    _s("LocalPreAuthorize", "false", key16="LocalPreAuthorize", component="AuthCtrlr", variable="LocalPreAuthorize",
       data_type="boolean", check=_bool),
    # Core keys of 1.6 §9.1 without a 2.0.1 twin
    _s("ConnectorPhaseRotation", "", key16="ConnectorPhaseRotation"),  # default: "<id>.Unknown" per connector
    _s("GetConfigurationMaxKeys", "100", key16="GetConfigurationMaxKeys", readonly=True, data_type="integer"),
    # Device data, clock, security
    _s("ItemsPerMessageGetReport", "20", component="DeviceDataCtrlr", variable="ItemsPerMessage",
       instance="GetReport", readonly=True, data_type="integer"),
    _s("ItemsPerMessageGetVariables", "50", component="DeviceDataCtrlr", variable="ItemsPerMessage",
       instance="GetVariables", readonly=True, data_type="integer"),
    _s("ItemsPerMessageSetVariables", "50", component="DeviceDataCtrlr", variable="ItemsPerMessage",
       instance="SetVariables", readonly=True, data_type="integer"),
    _s("BytesPerMessageGetReport", "65536", component="DeviceDataCtrlr", variable="BytesPerMessage",
       instance="GetReport", readonly=True, data_type="integer"),
    _s("BytesPerMessageGetVariables", "65536", component="DeviceDataCtrlr", variable="BytesPerMessage",
       instance="GetVariables", readonly=True, data_type="integer"),
    _s("BytesPerMessageSetVariables", "65536", component="DeviceDataCtrlr", variable="BytesPerMessage",
       instance="SetVariables", readonly=True, data_type="integer"),
    _s("DateTime", "", component="ClockCtrlr", variable="DateTime", readonly=True, data_type="dateTime"),
    _s("TimeSource", "NTP", component="ClockCtrlr", variable="TimeSource", data_type="SequenceList",
       values_list=",".join(TIME_SOURCES), check=_sequence_of(TIME_SOURCES)),
    # SecurityProfile: 1.6 may raise it (ChangeConfiguration); 2.0.1 changes it only through a network profile
    # (A05: SetNetworkProfile, NetworkConfigurationPriority, the next connection), so there it is read-only.
    # station/ocpp/security.py computes and checks it; station/ocpp/network.py sets it once a connection works.
    _s("SecurityProfile", "0", key16="SecurityProfile", component="SecurityCtrlr", variable="SecurityProfile",
       readonly201=True, data_type="integer"),
    _s("AuthorizationKey", "", key16="AuthorizationKey", component="SecurityCtrlr", variable="BasicAuthPassword",
       writeonly=True, check=lambda v: 16 <= len(v) <= 40 and v.isascii() and v.isprintable() and " " not in v),
    # ---- client certificate (A02/A03, station/ocpp/client_certificate.py): the O of the CSR (1.6 CpoName), the
    # SignCertificate back-off (A02.FR.17-19) and the longest chain CertificateSigned may carry (A02.FR.16).
    _s("OrganizationName", "", key16="CpoName", component="SecurityCtrlr", variable="OrganizationName",
       data_type="string", check=lambda v: len(v) <= 50),
    _s("CertSigningWaitMinimum", "60", component="SecurityCtrlr", variable="CertSigningWaitMinimum",
       data_type="integer", unit="s", check=_int_range(1, 86400)),
    _s("CertSigningRepeatTimes", "3", component="SecurityCtrlr", variable="CertSigningRepeatTimes",
       data_type="integer", check=_int_range(0, 10)),
    _s("CertificateSignedMaxChainSize", "10000", key16="CertificateSignedMaxChainSize", component="SecurityCtrlr",
       variable="MaxCertificateChainSize", readonly=True, data_type="integer"),
    # ---- end client certificate
    # ---- certificates (station/ocpp/certificates.py): CertificateEntries is computed by station/ocpp/security.py;
    # the store's limit is 1.6's CertificateStoreMaxLength and 2.0.1's CertificateEntries maxLimit (M05.FR.06).
    _s("CertificateEntries", "0", component="SecurityCtrlr", variable="CertificateEntries", readonly=True,
       data_type="integer", max_limit=CERTIFICATE_STORE_MAX),
    _s("CertificateStoreMaxLength", str(CERTIFICATE_STORE_MAX), key16="CertificateStoreMaxLength", readonly=True,
       data_type="integer"),
    # ---- end certificates
    _s("NumberOfConnectors", "1", key16="NumberOfConnectors", readonly=True, data_type="integer"),
    # Core, LocalAuthListManagement (SendLocalList, GetLocalListVersion), Reservation (ReserveNow, CancelReservation)
    # and RemoteTrigger (TriggerMessage) are what the 1.6 adapter handles, and SmartCharging where a controller sets
    # the current, and FirmwareManagement where the plain UpdateFirmware is allowed (Settings).
    _s("SupportedFeatureProfiles", "Core,LocalAuthListManagement,Reservation,RemoteTrigger",
       key16="SupportedFeatureProfiles",
       readonly=True),
    # Local authorization list and cache (station/auth.py)
    _s("LocalAuthListEnabled", "true", key16="LocalAuthListEnabled", component="LocalAuthListCtrlr",
       variable="Enabled", data_type="boolean", check=_bool),
    _s("LocalAuthListAvailable", "true", component="LocalAuthListCtrlr", variable="Available", readonly=True,
       data_type="boolean"),
    _s("LocalAuthListMaxLength", "10000", key16="LocalAuthListMaxLength", readonly=True, data_type="integer"),
    _s("LocalAuthListEntries", "0", component="LocalAuthListCtrlr", variable="Entries", readonly=True,
       data_type="integer", max_limit=10000),
    _s("SendLocalListMaxLength", "500", key16="SendLocalListMaxLength", component="LocalAuthListCtrlr",
       variable="ItemsPerMessage", readonly=True, data_type="integer"),
    _s("BytesPerMessageSendLocalList", "262144", component="LocalAuthListCtrlr", variable="BytesPerMessage",
       readonly=True, data_type="integer"),
    _s("AuthorizationCacheEnabled", "true", key16="AuthorizationCacheEnabled", component="AuthCacheCtrlr",
       variable="Enabled", data_type="boolean", check=_bool),
    _s("AuthCacheAvailable", "true", component="AuthCacheCtrlr", variable="Available", readonly=True,
       data_type="boolean"),
    # Smart charging (1.6 §9.4; 2.0.1 SmartChargingCtrlr): what the book of profiles takes (station/smart/book.py).
    # Available and Enabled are true where an EVSE's controller sets the car's current (Settings.smart_charging).
    _s("ChargeProfileMaxStackLevel", str(PROFILE_RULES.max_stack_level), key16="ChargeProfileMaxStackLevel",
       component="SmartChargingCtrlr", variable="ProfileStackLevel", readonly=True, data_type="integer"),
    _s("ChargingScheduleAllowedChargingRateUnit", "Current,Power", key16="ChargingScheduleAllowedChargingRateUnit",
       readonly=True),
    _s("SmartChargingRateUnit", "A,W", component="SmartChargingCtrlr", variable="RateUnit", readonly=True,
       data_type="MemberList", values_list="A,W"),
    _s("ChargingScheduleMaxPeriods", str(PROFILE_RULES.max_periods), key16="ChargingScheduleMaxPeriods",
       component="SmartChargingCtrlr", variable="PeriodsPerSchedule", readonly=True, data_type="integer"),
    _s("MaxChargingProfilesInstalled", str(PROFILE_RULES.max_installed), key16="MaxChargingProfilesInstalled",
       readonly=True, data_type="integer"),
    _s("ChargingProfileEntries", "0", component="SmartChargingCtrlr", variable="Entries",
       instance="ChargingProfiles", readonly=True, data_type="integer", max_limit=PROFILE_RULES.max_installed),
    _s("SmartChargingAvailable", "false", component="SmartChargingCtrlr", variable="Available", readonly=True,
       data_type="boolean"),
    _s("SmartChargingEnabled", "false", component="SmartChargingCtrlr", variable="Enabled", readonly=True,
       data_type="boolean"),
    # No external control signals (no EMS input, no ISO 15118) exist on this station: read-only false.
    _s("ExternalControlSignalsEnabled", "false", component="SmartChargingCtrlr",
       variable="ExternalControlSignalsEnabled", readonly=True, data_type="boolean"),
    _s("LimitChangeSignificance", "10", component="SmartChargingCtrlr", variable="LimitChangeSignificance",
       data_type="decimal", check=_percent, unit="Percent"),
    # The EVSEs cannot switch between 3 and 1 phases, nor choose the phase of 1-phase charging.
    _s("ConnectorSwitch3to1PhaseSupported", "false", key16="ConnectorSwitch3to1PhaseSupported",
       component="SmartChargingCtrlr", variable="Phases3to1", readonly=True, data_type="boolean"),
    # ---- reservations (1.6 §9.3; 2.0.1 ReservationCtrlr, H01): a reservation of any connector / EVSE is one setting
    # for both versions (1.6 ReserveConnectorZeroSupported, R; 2.0.1 NonEvseSpecific, H01.FR.18/19).
    _s("ReservationAvailable", "true", component="ReservationCtrlr", variable="Available", readonly=True,
       data_type="boolean"),
    _s("ReservationEnabled", "true", component="ReservationCtrlr", variable="Enabled", data_type="boolean",
       check=_bool),
    _s("ReserveConnectorZeroSupported", "true", key16="ReserveConnectorZeroSupported", component="ReservationCtrlr",
       variable="NonEvseSpecific", readonly=True, data_type="boolean"),
)
# fmt: on

BY_NAME = {s.name: s for s in SETTINGS}
BY_KEY16 = {s.key16: s for s in SETTINGS if s.key16}
BY_VARIABLE = {(s.component, s.variable, s.instance): s for s in SETTINGS if s.component}
COMPONENTS = {s.component for s in SETTINGS if s.component}


@dataclass(frozen=True)
class VariableResult:
    status: str  # 2.0.1 GetVariableStatus / SetVariableStatus
    value: str | None = None


class Settings:
    def __init__(
        self,
        store: Store,
        layout: Layout,
        public_key: Callable[[int], str],
        *,
        sees_car: bool = False,
        has_lock: bool = False,
        smart_charging: bool = False,
        firmware_management: bool = False,
    ) -> None:
        """`public_key(evse_id)`: the key of that EVSE's meter, as upper-case hex DER ("" while unknown). `sees_car`:
        every EVSE's charge controller reports the plug; `has_lock`: every EVSE has a connector lock;
        `smart_charging`: some EVSE's controller sets the car's current (charging profiles are taken);
        `firmware_management`: the plain 1.6 UpdateFirmware is allowed (`[firmware] allow_unsigned_16`), so the whole
        FirmwareManagement profile is supported (GetDiagnostics always is)."""
        self.store = store
        self.layout = layout
        self.connector_ids = tuple(number for number, _, _ in layout.numbered())  # 1.6 connectorIds
        self.evse_ids = layout.evse_ids
        self.public_key = public_key
        self.listeners: list[Callable[[str, str], None]] = []
        self.computed: dict[str, Callable[[], str]] = {
            "NumberOfConnectors": lambda: str(len(self.connector_ids)),
            "DateTime": lambda: iso(None),
            "LocalAuthListEntries": lambda: str(self.store.id_tag_count("list")),
            "ChargingProfileEntries": lambda: str(len(self.store.charging_profiles())),
        }
        # Defaults that depend on the station (its connectors) or its config (the connection sets those).
        self.defaults: dict[str, str] = {
            "ConnectorPhaseRotation": ",".join(f"{c}.Unknown" for c in self.connector_ids),
        }
        # Checks that need more than the value (station/ocpp/security.py registers SecurityProfile's).
        self.checks: dict[str, Check] = {"ConnectorPhaseRotation": self._phase_rotation}
        self.readonly201: set[str] = set()  # read-only as 2.0.1 variables on this station
        if not sees_car:
            self.checks["StopTxOnEVSideDisconnect"] = _one_of(("true",))  # the unplug ends it; nothing else can
            for point in ("TxStartPoint", "TxStopPoint"):  # the meter's transaction is all there is
                self.checks[point] = _one_of(("PowerPathClosed",))
                self.readonly201.add(point)
        profiles = BY_NAME["SupportedFeatureProfiles"].default.split(",")
        if firmware_management:
            profiles.insert(1, "FirmwareManagement")
        if smart_charging:
            # 1.6 §9.1.33: the SmartCharging feature profile is claimed only where a car's current can be limited.
            profiles.append("SmartCharging")
            self.defaults["SmartChargingAvailable"] = self.defaults["SmartChargingEnabled"] = "true"
        self.defaults["SupportedFeatureProfiles"] = ",".join(profiles)
        if has_lock:
            self.defaults["UnlockConnectorOnEVSideDisconnect"] = "true"
        else:
            self.checks["UnlockConnectorOnEVSideDisconnect"] = _one_of(("false",))  # no lock to open
            self.readonly201.add("UnlockConnectorOnEVSideDisconnect")  # 2.0.1 §2.1.12: false and ReadOnly

    # ------------------------------------------------------------------ shared

    def value(self, name: str) -> str:
        setting = BY_NAME[name]
        if name in self.computed:
            return self.computed[name]()
        stored = self.store.setting(f"ocpp16.{name}")
        if stored is not None:
            return stored  # also an empty list the CSMS set (e.g. StopTxnSampledData "")
        return self.defaults.get(name, setting.default)

    def int_value(self, name: str) -> int:
        try:
            return int(self.value(name))
        except ValueError:
            return int(BY_NAME[name].default)

    def clamp(self, name: str, value: int) -> int:
        """`value` within the integer setting's allowed range."""
        check = BY_NAME[name].check
        return check.clamp(value) if isinstance(check, IntRange) else value

    def measurands(self, name: str) -> list[str]:
        """A measurand list setting as a list (in the order configured)."""
        return [m.strip() for m in self.value(name).split(",") if m.strip()]

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

    def _phase_rotation(self, value: str) -> bool:
        """1.6 §9.1.7: "<connector>.<rotation>" per connector (0: the grid connection), each at most once."""
        seen: set[int] = set()
        for item in value.split(","):
            number, _, rotation = item.strip().partition(".")
            if not number.isdigit() or rotation not in PHASE_ROTATIONS:
                return False
            connector = int(number)
            if connector in seen or (connector != 0 and connector not in self.connector_ids):
                return False
            seen.add(connector)
        return len(value) <= MAX_LIST_LENGTH

    # ------------------------------------------------------------------ 1.6 configuration keys

    def _meter_key_connector(self, key: str) -> int | None:
        """The EVSE whose meter `MeterPublicKey<connectorId>` names (OCA app note), None for any other key."""
        suffix = key[len("MeterPublicKey") :] if key.startswith("MeterPublicKey") else ""
        where = self.layout.locate(int(suffix)) if suffix.isdigit() and len(suffix) < 4 else None
        return None if where is None else where[0]

    def get(self, key: str) -> str | None:
        """A 1.6 key's value, None when the key is unknown."""
        if (evse := self._meter_key_connector(key)) is not None:
            return oca_public_key(self.public_key(evse))
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
        return component == "FiscalMetering" and variable == "PublicKey" and evse in self.evse_ids

    def get_variable(
        self,
        component: str,
        variable: str,
        *,
        instance: str | None = None,
        evse: int | None = None,
        attribute: str = "Actual",
    ) -> VariableResult:
        if evse is not None and self._fiscal_key(component, variable, evse):
            if attribute != "Actual":
                return VariableResult("NotSupportedAttributeType")
            return VariableResult("Accepted", oca_public_key(self.public_key(evse)))
        setting = BY_VARIABLE.get((component, variable, instance))
        if setting is None:
            return VariableResult("UnknownVariable" if component in COMPONENTS else "UnknownComponent")
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
        if self._fiscal_key(component, variable, evse):
            return "Rejected"
        setting = BY_VARIABLE.get((component, variable, instance))
        if setting is None:
            return "UnknownVariable" if component in COMPONENTS else "UnknownComponent"
        if attribute != "Actual":
            return "NotSupportedAttributeType"
        if setting.readonly201 or setting.name in self.readonly201:
            return "Rejected"
        return "Accepted" if self._change(setting, value) else "Rejected"

    def report(self, *, configuration_only: bool = False) -> list[dict[str, Any]]:
        """GetBaseReport's ReportData (camelCase, as on the wire): every variable with its attributes and
        characteristics; a list-typed variable carries its valuesList (B07.FR.07/08)."""
        items: list[dict[str, Any]] = []
        for setting in SETTINGS:
            if setting.component is None or setting.variable is None:
                continue
            readonly = setting.readonly or setting.readonly201 or setting.name in self.readonly201
            if configuration_only and readonly:
                continue
            variable: dict[str, Any] = {"name": setting.variable}
            if setting.instance:
                variable["instance"] = setting.instance
            characteristics: dict[str, Any] = {"dataType": setting.data_type, "supportsMonitoring": False}
            if setting.values_list is not None:
                characteristics["valuesList"] = setting.values_list
            if setting.unit:
                characteristics["unit"] = setting.unit
            if setting.max_limit is not None:
                characteristics["maxLimit"] = setting.max_limit
            attribute: dict[str, Any] = {
                "type": "Actual",
                "mutability": "ReadOnly" if readonly else "WriteOnly" if setting.writeonly else "ReadWrite",
                "persistent": setting.name not in self.computed or setting.name == "SecurityProfile",
                "constant": setting.readonly and setting.name not in self.computed,
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
            for evse in self.evse_ids:
                key = oca_public_key(self.public_key(evse))
                items.append(
                    {
                        "component": {"name": "FiscalMetering", "evse": {"id": evse}},
                        "variable": {"name": "PublicKey"},
                        "variableAttribute": [{"type": "Actual", "value": key, "mutability": "ReadOnly"}],
                        "variableCharacteristics": {"dataType": "string", "supportsMonitoring": False},
                    }
                )
        return items


class SettingsPolicy:
    """What the runtime reads of the settings (station.runtime.policy.RuntimePolicy), read at every use so that a
    change by the CSMS takes effect at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def sample_interval(self) -> int:
        return self.settings.int_value("MeterValueSampleInterval")

    def aligned_interval(self) -> int:
        return self.settings.int_value("ClockAlignedDataInterval")

    def sign_aligned(self) -> bool:
        return self.settings.value("AlignedDataSignReadings") == "true"

    def ended_interval(self) -> int:
        return self.settings.int_value("TxEndedInterval")

    def stop_on_invalid_id(self) -> bool:
        return self.settings.value("StopTxOnInvalidId") == "true"

    def stop_on_ev_disconnect(self) -> bool:
        return self.settings.value("StopTxOnEVSideDisconnect") == "true"

    def unlock_on_ev_disconnect(self) -> bool:
        return self.settings.value("UnlockConnectorOnEVSideDisconnect") == "true"

    def connection_timeout(self) -> int:
        return self.settings.int_value("EVConnectionTimeOut")

    def start_on_authorization(self) -> bool:
        return self.settings.value("TxStartPoint") == "Authorized"

    def stop_when_energy_stops(self) -> bool:
        return self.settings.value("TxStopPoint") == "EnergyTransfer"

    def limit_change_significance(self) -> float:
        try:
            return float(self.settings.value("LimitChangeSignificance"))
        except ValueError:
            return 10.0
