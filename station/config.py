"""The station's configuration: one TOML file, checked completely before anything starts.

This module owns the config schema (every key, its type, default and allowed values) and the checking of a file
against it. It reports every problem at once, each with the key, what is wrong and how to fix it, and it never
lets the daemon start on a file with a problem. Besides reading the file it is given, it only looks at the files the
config names (certificates, keys): that they exist, and that a private key is not readable by others. Its warnings
(`config_warnings`) look at the places the config names: the serial port, the directories the daemon writes, who can
read the secrets. They never stop the daemon and never change a file.

The meters: `[bus.NAME]` tables (a Modbus line each: serial port or RTU over TCP, or the in-process simulators) and
`[[evse]]` tables (an EVSE: its id, its connector ids and its fiscal meter on one of the buses, with its device id).
Today's single `[meter]` table still works: one bus named "meter" and EVSE 1 with connector 1. Errors name the full
key: `evse[2].meter.device_id` is a key of the second [[evse]] table in the file, `bus.rs485.baudrate` one of
[bus.rs485]. Checking a file imports no meter driver, only the register table of a model whose registers it
overrides.

Card readers: `[[card_reader]]` tables, each with a driver ("pcsc" or "simulated"), a unique name, the PC/SC reader's
name (part of it) as `device`, and the EVSE it belongs to (`evse = 0`: one reader for all EVSEs). Errors name
`card_reader[2].evse` and so on.
"""

from __future__ import annotations

import dataclasses
import difflib
import grp
import os
import pwd
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from station.meter.models import MODELS

OCPP_VERSIONS = ("1.6", "2.0.1", "auto")
METER_MODELS = tuple(MODELS)  # station/meter/models.py says where each one's driver is
METER_TRANSPORTS = ("rtu", "tcp", "simulated")
PARITIES = ("N", "E", "O")
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
SIGNED_VALUE_FORMATS = ("oca", "raw")
SECURITY_PROFILES = (0, 1, 2, 3)  # OCPP security profiles: none, Basic auth, TLS + Basic auth, TLS + client cert
KEY_ALGORITHMS = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072")  # a renewed client key (A00.FR.502/503)

# Bounds on what a file may ask for (a config may come from anywhere: bound it before acting on it).
MAX_CONFIG_BYTES = 1 << 20
MAX_EVSES = 16
MAX_CONNECTORS_PER_EVSE = 4
MAX_BUSES = MAX_EVSES  # one bus per meter at most
MAX_BUS_NAME = 32
MAX_REGISTER_OVERRIDES = 64
LEGACY_BUS = "meter"  # the bus a single [meter] table describes
CARD_READER_DRIVERS = ("pcsc", "simulated")  # station/cards/drivers.py builds them
MAX_CARD_READERS = MAX_EVSES
MAX_CARD_READER_NAME = 32


class ConfigError(Exception):
    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + f"{len(problems)} problem(s) in the configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class StationConfig:
    id: str
    vendor: str = "station"
    model: str = "station-controller"
    nominal_voltage: float = 230.0  # V per phase (line to neutral): charging profiles in W <-> A


@dataclass(frozen=True)
class CsmsConfig:
    url: str
    ocpp_version: str = "1.6"
    heartbeat_interval: int = 300
    response_timeout: float = 30.0
    signed_value_format: str = "oca"
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    security_profile: int = 0
    basic_auth_password: str = field(default="", repr=False)
    allow_basic_auth_over_ws: bool = False
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    client_key_algorithm: str = "ec-p256"
    client_cert_renew_days: int = 30

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/")


@dataclass(frozen=True)
class BusConfig:
    """One Modbus line: a serial port (or RTU over TCP, or the in-process simulators' virtual line) that one or more
    meters share, each with its own device id."""

    name: str
    transport: str = "rtu"  # "rtu", "tcp" (RTU over TCP, port = host:port) or "simulated" (in-process simulators)
    port: str = "/dev/ttyUSB0"
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"  # checked against PARITIES when read
    stopbits: int = 1
    latency: float = 0.3  # default worst-case answer time of a device on this bus (s)
    retries: int = 2


@dataclass(frozen=True)
class MeterConfig:
    model: str = "smartme"
    bus: str = LEGACY_BUS  # name of a [bus.NAME]
    device_id: int = 1
    latency: float = 0.3  # this meter's answer time (defaults to its bus's latency)
    poll_interval: float = 0.1
    registers: dict[str, int] = field(default_factory=dict)
    sim_power_w: float = 11000.0
    sim_signing_time: float = 0.5
    sim_state: str = ""
    sim_ledger: str = ""


@dataclass(frozen=True)
class ChargeControllerConfig:
    """The EVSE's charge controller: "meter-output" (the meter's digital output switches it; the station does not see
    the car), "simulated" (a car behind a simulated controller, driven through `control_socket`) or "openevse"
    (OpenEVSE's RAPI on a serial port)."""

    driver: str = "meter-output"
    port: str = ""
    baudrate: int = 115200
    control_socket: str = ""
    lock: bool = False  # the socket has a connector lock the controller drives
    max_current: float = 32.0  # A, what the car may draw at most (PWM per IEC 61851-1 Annex A)
    phases: int = 3  # the phases the EVSE supplies: charging limits in W <-> A


@dataclass(frozen=True)
class EvseConfig:
    id: int
    meter: MeterConfig
    connectors: tuple[int, ...] = (1,)  # connector ids within the EVSE (2.0.1 numbering, 1..)
    charge_controller: ChargeControllerConfig = ChargeControllerConfig()


@dataclass(frozen=True)
class CardReaderConfig:
    """A card reader: `evse` 0 serves every EVSE (OCPP's one reader for several connectors), else that EVSE only."""

    name: str
    driver: str  # "pcsc" or "simulated"
    device: str = ""  # pcsc: part of the PC/SC reader's name ("" = the first reader pcscd lists)
    evse: int = 0


@dataclass(frozen=True)
class StorageConfig:
    path: str


@dataclass(frozen=True)
class DiagnosticsConfig:
    socket: str = ""
    http: str = ""
    http_password: str = field(default="", repr=False)


# ---- firmware update (issue 20, station/firmware/)
@dataclass(frozen=True)
class FirmwareConfig:
    releases: str = "/opt/station/releases"  # <releases>/<version> venvs and the `current` / `previous` links
    manufacturer_root: str = ""  # PEM file of the ManufacturerRootCertificate(s) a signing certificate must chain to
    allow_unsigned_16: bool = False  # 1.6 UpdateFirmware (no signature) is refused unless this is true
    ca_file: str = ""  # CA bundle for HTTPS downloads ("" = the certificate store's CSMS roots, else the system's)
    max_size_mb: int = 200  # a release bigger than this is refused while downloading
    download_timeout: float = 600.0  # seconds one download attempt may take as a whole
    boot_timeout: float = 600.0  # a new release without an Accepted BootNotification this long is rolled back
    max_boots: int = 3  # starts of a new release (ExecStartPre counts them) before it is rolled back


# ---- end firmware update


@dataclass(frozen=True)
class LoggingConfig:
    """The daemon's own rotating JSON log file beside journald (station/logs.py LogFile), which a log upload sends."""

    write_file: bool = True
    file: str = ""  # "" = station.log.jsonl beside the store
    max_bytes: int = 4 * 1024 * 1024
    keep: int = 4  # rotated files kept besides the current one


def log_file_path(config: Config) -> Path:
    return Path(config.logging.file) if config.logging.file else Path(config.storage.path).parent / "station.log.jsonl"


@dataclass(frozen=True)
class Config:
    station: StationConfig
    csms: CsmsConfig
    buses: dict[str, BusConfig]
    evses: tuple[EvseConfig, ...]  # sorted by id, ids 1..N
    storage: StorageConfig
    diagnostics: DiagnosticsConfig
    source: str = ""
    legacy: bool = False  # read from the single [meter] table
    card_readers: tuple[CardReaderConfig, ...] = ()  # in the file's order
    firmware: FirmwareConfig = FirmwareConfig()
    logging: LoggingConfig = LoggingConfig()

    def evse(self, evse_id: int) -> EvseConfig:
        for evse in self.evses:
            if evse.id == evse_id:
                return evse
        raise KeyError(f"no EVSE {evse_id}; this station has EVSEs 1..{len(self.evses)}")

    def bus_of(self, evse: EvseConfig) -> BusConfig:
        return self.buses[evse.meter.bus]


def sim_state_path(config: Config, evse: EvseConfig) -> Path:
    """The memory file of `evse`'s in-process simulator (a bus with transport = "simulated"): the configured one, else
    next to the store: meter-sim.json for the single [meter] table (as always), meter-sim-evse{ID}.json otherwise."""
    if evse.meter.sim_state:
        return Path(evse.meter.sim_state)
    name = "meter-sim.json" if config.legacy else f"meter-sim-evse{evse.id}.json"
    return Path(config.storage.path).parent / name


# --------------------------------------------------------------------------- the schema

Check = Callable[[Any], str | None]  # returns a problem text, or None when fine


def _one_of(options: tuple[Any, ...]) -> Check:
    return lambda v: None if v in options else f"must be one of {', '.join(repr(o) for o in options)}"


def _between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _nonempty(v: Any) -> str | None:
    return None if str(v).strip() else "must not be empty"


def _port(v: str) -> str | None:
    if not v.strip():
        return "must not be empty"
    return None if v.isprintable() else "must not contain control characters"


def _printable(v: str) -> str | None:
    return None if v.isprintable() and len(v) <= 128 else "must be at most 128 characters without control characters"


def _reader_name(v: str) -> str | None:
    return None if 0 < len(v) <= MAX_CARD_READER_NAME and _BUS_NAME.fullmatch(v) else "is not a valid name"


def _station_id(v: str) -> str | None:
    if not v.strip():
        return "must not be empty"
    if len(v) > 48:  # OCPP identity: CiString48 / chargeBoxIdentity length
        return "must be at most 48 characters (OCPP identity limit)"
    if any(c in v for c in "/?#% ") or not v.isprintable():
        return "must not contain '/', '?', '#', '%', spaces or control characters (it becomes part of the URL)"
    return None


def _password(v: str) -> str | None:
    if v == "":
        return None
    if not 16 <= len(v) <= 40 or not v.isascii() or not v.isprintable() or " " in v:
        return "must be 16 to 40 printable ASCII characters without spaces (OCPP AuthorizationKey rules)"
    return None


def _listen_address(v: str) -> str | None:
    if v == "":
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return "must be host:port, e.g. 127.0.0.1:8080 (or the service interface's address)"
    return None


def _ws_url(v: str) -> str | None:
    parsed = urlparse(v)
    if parsed.scheme not in ("ws", "wss"):
        return "must start with ws:// or wss://"
    if not parsed.hostname:
        return "must name a host, e.g. ws://csms.example.com/ocpp"
    return None


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any = ...  # ... = required
    check: Check | None = None
    help: str = ""


SCHEMA: dict[str, dict[str, Key]] = {
    "station": {
        "id": Key(str, ..., _station_id, 'the charge point identity the CSMS knows, e.g. "CP-0001"'),
        "connectors": Key(
            int, 1, _between(1, 1), "connectors of the single [meter] (1; several: use [[evse]] tables instead)"
        ),
        "vendor": Key(str, "station", _nonempty, "chargePointVendor in BootNotification"),
        "model": Key(str, "station-controller", _nonempty, "chargePointModel in BootNotification"),
        "nominal_voltage": Key(
            (int, float), 230.0, _between(100, 480), "volts per phase, line to neutral: charging limits in W <-> A"
        ),
    },
    "csms": {
        "url": Key(str, ..., _ws_url, 'the CSMS endpoint without the station id, e.g. "ws://csms.local:9000/ocpp"'),
        "ocpp_version": Key(str, "1.6", _one_of(OCPP_VERSIONS), '"1.6", "2.0.1" or "auto"'),
        "heartbeat_interval": Key(int, 300, _between(1, 86400), "seconds, until the CSMS sets its own"),
        "response_timeout": Key((int, float), 30.0, _between(1, 600), "seconds to wait for a CALLRESULT"),
        "signed_value_format": Key(
            str, "oca", _one_of(SIGNED_VALUE_FORMATS), '"oca" (OCA app note JSON envelope) or "raw" (OCMF text)'
        ),
        "reconnect_min": Key((int, float), 1.0, _between(0.1, 3600), "seconds before the first reconnect"),
        "reconnect_max": Key((int, float), 60.0, _between(1, 3600), "longest wait between reconnects"),
        "security_profile": Key(
            int, 0, _one_of(SECURITY_PROFILES), "0 none, 1 Basic auth, 2 TLS + Basic auth, 3 TLS + client certificate"
        ),
        "basic_auth_password": Key(
            str, "", _password, "the Basic-auth password (AuthorizationKey) for profiles 1 and 2, 16 to 40 characters"
        ),
        "allow_basic_auth_over_ws": Key(
            bool, False, None, "true to allow profile 1 (password in clear over ws://) on a trusted network or VPN"
        ),
        "ca_file": Key(str, "", None, 'CA bundle for the CSMS certificate (profiles 2, 3; "" = the system\'s)'),
        "client_cert": Key(str, "", None, "the station's client certificate, PEM (profile 3)"),
        "client_key": Key(str, "", None, "the client certificate's private key, PEM, mode 0600 (profile 3)"),
        "client_key_algorithm": Key(
            str, "ec-p256", _one_of(KEY_ALGORITHMS), "the key a renewed client certificate gets (made on the station)"
        ),
        "client_cert_renew_days": Key(
            int, 30, _between(0, 365), "renew the client certificate this many days before it expires (0 = never)"
        ),
    },
    "storage": {
        "path": Key(str, ..., _nonempty, 'the SQLite file, e.g. "/var/lib/station/station.db"'),
    },
    "diagnostics": {
        "socket": Key(str, "", None, "Unix socket of the technician interface"),
        "http": Key(str, "", _listen_address, 'the technician web page\'s address, e.g. "127.0.0.1:8080" ("" = none)'),
        "http_password": Key(str, "", None, "the technician web page's password, at least 12 characters"),
    },
    # ---- firmware update (issue 20)
    "firmware": {
        "releases": Key(str, "/opt/station/releases", _nonempty, "folder of the versioned release venvs"),
        "manufacturer_root": Key(
            str, "", None, "PEM file of the ManufacturerRootCertificate(s) firmware signing certificates chain to"
        ),
        "allow_unsigned_16": Key(bool, False, None, "true to accept a 1.6 UpdateFirmware without a signature"),
        "ca_file": Key(
            str, "", None, "CA bundle for HTTPS downloads (\"\" = the store's CSMS roots, else the system's)"
        ),
        "max_size_mb": Key(int, 200, _between(1, 4096), "MB a release file may have at most"),
        "download_timeout": Key((int, float), 600.0, _between(1, 86400), "seconds one download attempt may take"),
        "boot_timeout": Key(
            (int, float), 600.0, _between(5, 86400), "seconds a new release has to get its boot Accepted"
        ),
        "max_boots": Key(int, 3, _between(1, 20), "starts of a new release before it is rolled back"),
    },
    # ---- end firmware update
    "logging": {
        "write_file": Key(bool, True, None, "true to keep the daemon's own rotating JSON log file (for log uploads)"),
        "file": Key(str, "", None, 'the log file ("" = station.log.jsonl beside the store)'),
        "max_bytes": Key(int, 4 * 1024 * 1024, _between(65536, 1024**3), "bytes of one log file before it rotates"),
        "keep": Key(int, 4, _between(1, 20), "rotated log files kept besides the current one"),
    },
}

# The single [meter] table: one meter on its own line (bus "meter"), EVSE 1 with connector 1.
LEGACY_METER_KEYS: dict[str, Key] = {
    "model": Key(str, "smartme", _one_of(METER_MODELS), "the meter driver"),
    "transport": Key(str, "rtu", _one_of(METER_TRANSPORTS), '"rtu", "tcp" (RTU over TCP) or "simulated"'),
    "port": Key(str, "/dev/ttyUSB0", _nonempty, "serial device (rtu) or host:port (tcp)"),
    "baudrate": Key(int, 9600, _one_of(BAUDRATES), "the meter's baud rate"),
    "parity": Key(str, "N", _one_of(PARITIES), '"N", "E" or "O" (8 data bits)'),
    "stopbits": Key(int, 1, _one_of((1, 2)), "1 or 2"),
    "device_id": Key(int, 1, _between(1, 247), "the meter's Modbus address"),
    "latency": Key((int, float), 0.3, _between(0.0, 10.0), "seconds the meter may take to answer"),
    "poll_interval": Key((int, float), 0.1, _between(0.01, 5.0), "seconds between status polls"),
    "registers": Key(dict, {}, None, "register address overrides, e.g. command = 0x0200"),
    "simulator": Key(dict, {}, None, 'settings of the built-in simulator (transport = "simulated")'),
}

BUS_KEYS: dict[str, Key] = {
    "transport": Key(
        str,
        "rtu",
        _one_of(METER_TRANSPORTS),
        '"rtu", "tcp" (RTU over TCP) or "simulated" (an in-process simulator per meter, on one virtual line)',
    ),
    "port": Key(str, "/dev/ttyUSB0", _port, "serial device (rtu) or host:port (tcp)"),
    "baudrate": Key(int, 9600, _one_of(BAUDRATES), "the line's baud rate (every meter on it uses it)"),
    "parity": Key(str, "N", _one_of(PARITIES), '"N", "E" or "O" (8 data bits)'),
    "stopbits": Key(int, 1, _one_of((1, 2)), "1 or 2"),
    "latency": Key(
        (int, float),
        0.3,
        _between(0.0, 10.0),
        "seconds a meter on this bus may take to answer (a meter may set its own)",
    ),
    "retries": Key(int, 2, _between(0, 10), "times a request that got no answer is sent again"),
}

CONTROLLER_DRIVERS = ("meter-output", "simulated", "openevse")

CONTROLLER_KEYS: dict[str, Key] = {
    "driver": Key(
        str,
        "meter-output",
        _one_of(CONTROLLER_DRIVERS),
        '"meter-output" (the meter\'s output switches the controller), "simulated" or "openevse"',
    ),
    "port": Key(str, "", None, "serial device of the controller (openevse)"),
    "baudrate": Key(int, 115200, _one_of(BAUDRATES), "the controller's baud rate (openevse: 115200)"),
    "control_socket": Key(str, "", None, "Unix socket that drives the simulated car (`station sim ev --socket`)"),
    "lock": Key(bool, False, None, "true when the socket has a connector lock the controller drives"),
    "max_current": Key((int, float), 32.0, _between(6, 80), "amperes the car may draw at most (6..80)"),
    "phases": Key(int, 3, _one_of((1, 3)), "the phases the EVSE supplies, 1 or 3 (charging limits in W <-> A)"),
}

EVSE_KEYS: dict[str, Key] = {
    "id": Key(int, ..., _between(1, MAX_EVSES), "the EVSE id: 1..N, numbered from 1 (1.6: the connector id)"),
    "charge_controller": Key(dict, {}, None, "the EVSE's charge controller: an [evse.charge_controller] table"),
    "connectors": Key(list, [1], None, "the connector ids within the EVSE, 1..k, e.g. [1] or [1, 2]"),
    "meter": Key(dict, ..., None, "the EVSE's fiscal meter: an [evse.meter] table with model, bus and device_id"),
}

EVSE_METER_KEYS: dict[str, Key] = {
    "model": LEGACY_METER_KEYS["model"],
    "bus": Key(str, None, None, "the name of the [bus.NAME] the meter is wired to"),
    "device_id": LEGACY_METER_KEYS["device_id"],
    "latency": Key(
        (int, float), None, _between(0.0, 10.0), "seconds this meter may take to answer (default: its bus's latency)"
    ),
    "poll_interval": LEGACY_METER_KEYS["poll_interval"],
    "registers": LEGACY_METER_KEYS["registers"],
    "simulator": Key(dict, {}, None, 'settings of the built-in simulator (its bus has transport = "simulated")'),
}

SIMULATOR_KEYS: dict[str, Key] = {
    "power_w": Key((int, float), 11000.0, _between(0, 350000), "simulated charging power in W"),
    "signing_time": Key((int, float), 0.5, _between(0, 60), "seconds the simulated meter takes to sign"),
    "state": Key(str, "", None, "file of the simulated meter's memory (empty: next to the store)"),
    "ledger": Key(str, "", None, "JSON-lines file of every record the simulator signs"),
}

CARD_READER_KEYS: dict[str, Key] = {
    "driver": Key(
        str,
        ...,
        _one_of(CARD_READER_DRIVERS),
        '"pcsc" (a PC/SC reader through pcscd; pip install \'station[pcsc]\') or "simulated"',
    ),
    "name": Key(
        str,
        ...,
        _reader_name,
        f'the reader\'s name, 1 to {MAX_CARD_READER_NAME} letters, digits, "-" or "_", e.g. "front"',
    ),
    "device": Key(
        str, "", _printable, "pcsc: part of the PC/SC reader's name as pcsc_scan shows it (default: the first reader)"
    ),
    "evse": Key(int, 0, _between(0, MAX_EVSES), "the EVSE id the reader belongs to, or 0 for one reader for all"),
}

SECTIONS = (
    "station",
    "csms",
    "meter",
    "charge_controller",
    "bus",
    "evse",
    "card_reader",
    "storage",
    "diagnostics",
    "firmware",
    "logging",
)
_SECTION_FORMS = {"bus": "[bus.NAME]", "evse": "[[evse]]", "card_reader": "[[card_reader]]"}


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "a table",
        bool: "true/false",
        list: "an array",
    }
    if isinstance(t, tuple):
        return "a number" if set(t) == {int, float} else " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


def _did_you_mean(name: str, known: Any) -> str:
    close = difflib.get_close_matches(str(name).lower(), list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def _check_table(
    section: str, table: Any, schema: dict[str, Key], problems: list[str], table_name: str = ""
) -> dict[str, Any]:
    """The keys of `table` that are fine (defaults for those not given); a problem for each other one. `section` is
    the keys' prefix in the messages, `table_name` how the table is written in the file (default [section])."""
    table_name = table_name or f"[{section}]"
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        problems.append(f"{table_name} must be a table, got {type(table).__name__}; write it as {table_name}")
        table = {}
    for key in table:
        if key not in schema:
            problems.append(
                f"{section}.{key}: unknown key; {_did_you_mean(key, schema)}known keys in {table_name}: "
                f"{', '.join(schema)} (remove it or fix typo)"
            )
    for key, spec in schema.items():
        name = f"{section}.{key}"
        if key not in table:
            if spec.default is ...:
                problems.append(f"{name}: missing; set it to {spec.help}")
            else:
                out[key] = spec.default
            continue
        value = table[key]
        if (isinstance(value, bool) and spec.type is not bool) or not isinstance(value, spec.type):
            problems.append(f"{name}: must be {_type_name(spec.type)}, got {value!r}; {spec.help}")
            continue
        if spec.check is not None and (problem := spec.check(value)) is not None:
            problems.append(f"{name}: {value!r} {problem}; {spec.help}")
            continue
        out[key] = value
    return out


def _registers(prefix: str, model: Any, table: dict[Any, Any], problems: list[str]) -> dict[str, int]:
    """Register overrides: each a 0..65535 address, each name one of the model's registers (which loads that one
    model's register table, nothing else)."""
    if len(table) > MAX_REGISTER_OVERRIDES:
        problems.append(f"{prefix}: {len(table)} overrides; a meter has at most {MAX_REGISTER_OVERRIDES} registers")
        return {}
    registers: dict[str, int] = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            problems.append(f"{prefix}.{key}: must be a register address 0..65535 (e.g. 0x0200), got {value!r}")
        else:
            registers[key] = value
    if table and model in MODELS:
        register_table = MODELS[model].register_table()
        known = sorted(f.name for f in dataclasses.fields(register_table))  # type: ignore[arg-type]
        for key in table:
            if key not in known:
                problems.append(
                    f"{prefix}.{key}: unknown {register_table.VENDOR} register name; {_did_you_mean(key, known)}"
                    f"known: {', '.join(known)}"
                )
    return registers


def _meter_config(
    keys: dict[str, Any], registers: dict[str, int], sim: dict[str, Any], bus: str, latency: float
) -> MeterConfig:
    return MeterConfig(
        model=keys["model"],
        bus=bus,
        device_id=keys["device_id"],
        latency=float(latency),
        poll_interval=float(keys["poll_interval"]),
        registers=registers,
        sim_power_w=float(sim["power_w"]),
        sim_signing_time=float(sim["signing_time"]),
        sim_state=sim["state"],
        sim_ledger=sim["ledger"],
    )


Meters = tuple[dict[str, BusConfig], tuple[EvseConfig, ...]]


def _legacy_meter(table: Any, problems: list[str], table_controller: Any = None) -> Meters | None:
    """The single [meter] table: bus "meter" with its line settings, EVSE 1 (connector 1) with the meter."""
    before = len(problems)
    meter = _check_table("meter", table, LEGACY_METER_KEYS, problems)
    registers = _registers("meter.registers", meter.get("model"), meter.get("registers") or {}, problems)
    sim = _check_table("meter.simulator", meter.get("simulator", {}), SIMULATOR_KEYS, problems)
    if len(problems) > before:
        return None
    bus = BusConfig(
        name=LEGACY_BUS,
        transport=meter["transport"],
        port=meter["port"],
        baudrate=meter["baudrate"],
        parity=meter["parity"],
        stopbits=meter["stopbits"],
        latency=float(meter["latency"]),
    )
    controller = _controller("charge_controller", table_controller, problems)
    if controller is None:
        return None
    evse = EvseConfig(
        id=1, meter=_meter_config(meter, registers, sim, LEGACY_BUS, meter["latency"]), charge_controller=controller
    )
    return {LEGACY_BUS: bus}, (evse,)


def _controller(label: str, table: Any, problems: list[str]) -> ChargeControllerConfig | None:
    before = len(problems)
    keys = _check_table(label, table, CONTROLLER_KEYS, problems)
    if len(problems) > before:
        return None
    if keys["driver"] == "openevse" and not keys["port"]:
        problems.append(f"{label}.port: missing; the openevse driver talks RAPI on a serial port, e.g. /dev/ttyUSB1")
        return None
    if keys["driver"] == "meter-output" and keys["lock"]:
        problems.append(f"{label}.lock: the meter-output driver drives no lock; set driver, or remove lock")
        return None
    return ChargeControllerConfig(**keys | {"max_current": float(keys["max_current"])})


def _buses(raw: Any, problems: list[str]) -> tuple[dict[str, BusConfig], list[str]]:
    """The [bus.NAME] tables: the valid ones, and the names of all (a meter naming a broken bus gets no second
    problem)."""
    if not isinstance(raw, dict):
        problems.append(
            f"[bus] must be [bus.NAME] tables, one per serial line, got {type(raw).__name__}; write e.g. [bus.rs485]"
        )
        return {}, []
    if len(raw) > MAX_BUSES:
        problems.append(f"[bus]: {len(raw)} buses; at most {MAX_BUSES} (one per meter)")
        return {}, [name for name in raw if isinstance(name, str)]  # the meters naming them get no second problem
    buses: dict[str, BusConfig] = {}
    names: list[str] = []
    for name, table in raw.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_BUS_NAME or not _BUS_NAME.fullmatch(name):
            shown = str(name)[:MAX_BUS_NAME] + ("..." if len(str(name)) > MAX_BUS_NAME else "")
            problems.append(
                f"[bus.{shown}]: a bus name is 1 to {MAX_BUS_NAME} letters, digits, '-' or '_', e.g. [bus.rs485]"
            )
            continue
        names.append(name)
        before = len(problems)
        keys = _check_table(f"bus.{name}", table, BUS_KEYS, problems)
        if len(problems) == before:
            buses[name] = BusConfig(name=name, **keys | {"latency": float(keys["latency"])})
    lines: dict[str, str] = {}
    for name, bus in buses.items():
        if bus.transport == "simulated":
            continue
        line = bus.port if bus.transport == "tcp" else os.path.realpath(bus.port)
        if line in lines:
            other = lines[line]
            problems.append(
                f"bus.{name}.port: {bus.port!r} is also bus.{other}.port; one line is one bus: put the meters of both "
                f"on [bus.{other}], each with its own device_id"
            )
        else:
            lines[line] = name
    return buses, names


_BUS_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _connectors(label: str, value: list[Any], problems: list[str]) -> tuple[int, ...] | None:
    name = f"{label}.connectors"
    if len(value) > MAX_CONNECTORS_PER_EVSE:
        problems.append(f"{name}: {len(value)} connectors; at most {MAX_CONNECTORS_PER_EVSE} per EVSE")
        return None
    if not value or any(isinstance(c, bool) or not isinstance(c, int) for c in value):
        problems.append(f"{name}: must be an array of connector ids, got {value!r}; e.g. [1] or [1, 2]")
        return None
    if sorted(value) != list(range(1, len(value) + 1)):
        problems.append(
            f"{name}: {value!r} must be the ids 1..{len(value)} without gaps or repeats (connectors are numbered "
            "from 1 within their EVSE)"
        )
        return None
    return tuple(sorted(value))


def _evse_meter(
    prefix: str, table: dict[Any, Any], buses: dict[str, BusConfig], bus_names: list[str], problems: list[str]
) -> MeterConfig | None:
    before = len(problems)
    misplaced = [k for k in table if k in BUS_KEYS and k not in EVSE_METER_KEYS]
    for key in misplaced:
        problems.append(
            f"{prefix}.{key}: a setting of the serial line, not of the meter: set {key} in the [bus.NAME] table the "
            "meter's bus names"
        )
    keys = _check_table(
        prefix, {k: v for k, v in table.items() if k not in misplaced}, EVSE_METER_KEYS, problems, "[evse.meter]"
    )
    bus: str | None = keys.get("bus")
    known = f"buses: {', '.join(bus_names)}" if bus_names else "no [bus.NAME] table is given"
    if "bus" not in table:
        if len(bus_names) == 1:
            bus = bus_names[0]
        else:
            problems.append(f"{prefix}.bus: missing; name the [bus.NAME] the meter is wired to ({known})")
    elif bus is not None and bus not in bus_names:
        problems.append(
            f"{prefix}.bus: {bus!r} is not a bus; {_did_you_mean(bus, bus_names)}{known} (add [bus.{bus}] with its "
            "port, or fix the name)"
        )
    registers = _registers(f"{prefix}.registers", keys.get("model"), keys.get("registers") or {}, problems)
    sim = _check_table(
        f"{prefix}.simulator", keys.get("simulator", {}), SIMULATOR_KEYS, problems, "[evse.meter.simulator]"
    )
    if len(problems) > before or bus is None or bus not in buses:
        return None  # a broken bus has its own problem
    latency = keys["latency"] if keys["latency"] is not None else buses[bus].latency
    return _meter_config(keys, registers, sim, bus, latency)


def _evses(raw: Any, buses: dict[str, BusConfig], bus_names: list[str], problems: list[str]) -> tuple[EvseConfig, ...]:
    if raw is None:
        problems.append(
            "[[evse]]: missing; with [bus.NAME] tables each charging point is an [[evse]] table with its id, "
            "connectors and [evse.meter]"
        )
        return ()
    if not isinstance(raw, list):
        problems.append(
            f"[[evse]] must be an array of tables, got {type(raw).__name__}; write each EVSE as [[evse]] (two brackets)"
        )
        return ()
    if not raw:
        problems.append("[[evse]]: none given; a station has at least one EVSE")
        return ()
    if len(raw) > MAX_EVSES:
        problems.append(f"[[evse]]: {len(raw)} EVSEs; at most {MAX_EVSES}")
        return ()
    count = len(raw)
    found: list[EvseConfig] = []
    ids: dict[int, str] = {}  # id -> the label of the first [[evse]] with it
    devices: dict[tuple[str, int], tuple[str, int]] = {}  # (bus, device id) -> (label, EVSE id)
    files: dict[str, str] = {}  # a simulator's state or ledger file -> the key naming it
    for position, table in enumerate(raw, 1):
        label = f"evse[{position}]"
        if not isinstance(table, dict):
            problems.append(f"{label}: must be a table, got {type(table).__name__}; write it as [[evse]]")
            continue
        before = len(problems)
        keys = _check_table(label, table, EVSE_KEYS, problems, "[[evse]]")
        evse_id: int | None = keys.get("id")
        if evse_id is not None and evse_id > count:
            problems.append(
                f"{label}.id: {evse_id} is more than the {count} EVSE(s) given; EVSE ids are 1..{count}, numbered "
                "from 1 without gaps (OCPP 2.0.1 numbers EVSEs from 1, 1.6 numbers connectors 1..N)"
            )
        elif evse_id is not None and evse_id in ids:
            problems.append(f"{label}.id: {evse_id} is also {ids[evse_id]}'s id; each EVSE has its own, 1..{count}")
        elif evse_id is not None:
            ids[evse_id] = label
        connectors = _connectors(label, keys["connectors"], problems) if "connectors" in keys else None
        meter = _evse_meter(f"{label}.meter", keys["meter"], buses, bus_names, problems) if "meter" in keys else None
        if meter is not None:
            device = (meter.bus, meter.device_id)
            if device in devices:
                other, other_id = devices[device]
                problems.append(
                    f"{label}.meter.device_id: EVSE {evse_id} and EVSE {other_id} ({other}) both have device id "
                    f"{meter.device_id} on bus {meter.bus}; each meter on a bus needs its own Modbus address"
                )
            devices.setdefault(device, (label, evse_id or 0))
            for key, path in (("state", meter.sim_state), ("ledger", meter.sim_ledger)):
                if path and path in files:
                    problems.append(
                        f"{label}.meter.simulator.{key}: {path!r} is also {files[path]}; each simulated meter has "
                        "its own"
                    )
                files.setdefault(path, f"{label}.meter.simulator.{key}")
        controller = _controller(f"{label}.charge_controller", keys.get("charge_controller", {}), problems)
        if controller is not None and controller.control_socket:
            if controller.control_socket in files:
                problems.append(
                    f"{label}.charge_controller.control_socket: {controller.control_socket!r} is also "
                    f"{files[controller.control_socket]}; each simulated car has its own"
                )
            files.setdefault(controller.control_socket, f"{label}.charge_controller.control_socket")
        if (
            len(problems) == before
            and evse_id is not None
            and connectors is not None
            and meter is not None
            and controller is not None
        ):
            found.append(EvseConfig(id=evse_id, meter=meter, connectors=connectors, charge_controller=controller))
    return tuple(sorted(found, key=lambda e: e.id))


def _new_form(data: dict[str, Any], problems: list[str]) -> Meters | None:
    before = len(problems)
    station = data.get("station")
    if isinstance(station, dict) and "connectors" in station:
        problems.append(
            "station.connectors: only with the single [meter] table; with [[evse]] tables each EVSE's connectors "
            "= [...] says which connectors there are (remove it)"
        )
    buses, names = _buses(data.get("bus", {}), problems)
    evses = _evses(data.get("evse"), buses, names, problems)
    if len(problems) > before:
        return None
    return buses, evses


def _card_readers(raw: Any, evse_ids: set[int] | None, problems: list[str]) -> tuple[CardReaderConfig, ...]:
    """The [[card_reader]] tables; `evse_ids`: the EVSEs there are (None: the EVSEs have problems of their own)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(
            f"[[card_reader]] must be an array of tables, got {type(raw).__name__}; write each reader as "
            "[[card_reader]] (two brackets)"
        )
        return ()
    if len(raw) > MAX_CARD_READERS:
        problems.append(f"[[card_reader]]: {len(raw)} readers; at most {MAX_CARD_READERS}")
        return ()
    readers: list[CardReaderConfig] = []
    names: dict[str, str] = {}  # name -> label of the first reader with it
    devices: dict[str, str] = {}  # a PC/SC device -> label of the first reader with it
    for position, table in enumerate(raw, 1):
        label = f"card_reader[{position}]"
        if not isinstance(table, dict):
            problems.append(f"{label}: must be a table, got {type(table).__name__}; write it as [[card_reader]]")
            continue
        before = len(problems)
        keys = _check_table(label, table, CARD_READER_KEYS, problems, "[[card_reader]]")
        name, driver, device, evse = (keys.get(k) for k in ("name", "driver", "device", "evse"))
        if name is not None and name in names:
            problems.append(f"{label}.name: {name!r} is also {names[name]}'s name; each card reader has its own")
        elif name is not None:
            names[name] = label
        if driver == "simulated" and device:
            problems.append(f"{label}.device: only a pcsc reader has a device; remove it from the simulated reader")
        if driver == "pcsc" and device is not None:
            if device.lower() in devices:
                problems.append(
                    f"{label}.device: {device!r} is also {devices[device.lower()]}'s device; two readers on one PC/SC "
                    "reader would report each card twice ("
                    + ('"" is the first reader pcscd lists; ' if not device else "")
                    + "name each reader by part of its name as pcsc_scan shows it)"
                )
            else:
                devices[device.lower()] = label
        if evse and evse_ids is not None and evse not in evse_ids:
            known = ", ".join(str(i) for i in sorted(evse_ids))
            problems.append(
                f"{label}.evse: there is no EVSE {evse}; this station has EVSE(s) {known} (or 0: one reader for all)"
            )
        if len(problems) == before:
            readers.append(CardReaderConfig(**keys))
    return tuple(readers)


def parse_config(data: dict[str, Any], source: str = "") -> Config:
    problems: list[str] = []
    for section in data:
        if section not in SECTIONS:
            close = difflib.get_close_matches(str(section).lower(), SECTIONS, n=1, cutoff=0.6)
            hint = f"did you mean {_SECTION_FORMS.get(close[0], f'[{close[0]}]')}? " if close else ""
            problems.append(f"[{section}]: unknown section; {hint}known: {', '.join(SECTIONS)}")
    legacy = "meter" in data or not ("evse" in data or "bus" in data)
    tables = dict(data)
    if not legacy and isinstance(data.get("station"), dict):  # [station] connectors: _new_form names it
        tables["station"] = {k: v for k, v in data["station"].items() if k != "connectors"}
    sections = {name: _check_table(name, tables.get(name, {}), keys, problems) for name, keys in SCHEMA.items()}
    meters: Meters | None = None
    if "charge_controller" in data and not legacy:
        problems.append(
            "[charge_controller]: only with the single [meter] table; with [[evse]] tables each EVSE has its own "
            "[evse.charge_controller]"
        )
    if "meter" in data and ("evse" in data or "bus" in data):
        problems.append(
            "[meter]: cannot be combined with [[evse]] and [bus.NAME] tables; use [meter] alone for one meter, or "
            "move its keys to [bus.NAME] (transport, port, baudrate, parity, stopbits, latency) and to [[evse]] "
            "tables with [evse.meter] (model, device_id, latency, poll_interval, registers, simulator)"
        )
    elif legacy:
        meters = _legacy_meter(data.get("meter", {}), problems, data.get("charge_controller", {}))
    else:
        meters = _new_form(data, problems)
    card_readers = _card_readers(
        data.get("card_reader"), {evse.id for evse in meters[1]} if meters is not None else None, problems
    )
    csms = sections["csms"]
    if "reconnect_min" in csms and "reconnect_max" in csms and csms["reconnect_min"] > csms["reconnect_max"]:
        problems.append("csms.reconnect_min: must not exceed csms.reconnect_max")
    if "url" in csms and "security_profile" in csms:
        problems.extend(_security_problems(csms))
    diagnostics = sections["diagnostics"]
    if diagnostics.get("http") and len(diagnostics.get("http_password", "")) < 12:
        problems.append(
            "diagnostics.http_password: the web page needs a password of at least 12 characters (it shows the "
            "station's state to whoever can reach the address)"
        )
    if problems or meters is None:
        raise ConfigError(problems, source)
    buses, evses = meters
    station = {k: v for k, v in sections["station"].items() if k != "connectors"}  # legacy only, always 1
    if "nominal_voltage" in station:
        station["nominal_voltage"] = float(station["nominal_voltage"])
    return Config(
        station=StationConfig(**station),
        # The [csms] keys are CsmsConfig's fields; the ones TOML may give as integers become floats.
        csms=CsmsConfig(**csms | {k: float(csms[k]) for k in ("response_timeout", "reconnect_min", "reconnect_max")}),
        buses=buses,
        evses=evses,
        storage=StorageConfig(**sections["storage"]),
        diagnostics=DiagnosticsConfig(**sections["diagnostics"]),
        source=source,
        legacy=legacy,
        card_readers=card_readers,
        firmware=FirmwareConfig(
            **sections["firmware"]
            | {
                k: float(sections["firmware"][k])
                for k in ("download_timeout", "boot_timeout")
                if k in sections["firmware"]
            }
        ),
        logging=LoggingConfig(**sections["logging"]),
    )


def describe(config: Config) -> list[str]:
    """How the file was read, for `station config check`: the EVSEs, the buses, which meters are on each."""
    evses, buses = len(config.evses), len(config.buses)
    head = f"{evses} EVSE{'s' if evses != 1 else ''} on {buses} bus{'es' if buses != 1 else ''}"
    lines = [head + (", read from the legacy [meter] table" if config.legacy else "")]
    for name, bus in config.buses.items():
        frame = f"{bus.baudrate} baud 8{bus.parity}{bus.stopbits}"
        if bus.transport == "simulated":
            line = f"simulated: an in-process simulator per meter on one virtual line, {frame}"
        elif bus.transport == "tcp":
            line = f"RTU over TCP to {bus.port}, {frame} timing"
        else:
            line = f"RTU on {bus.port}, {frame}"
        lines.append(f"bus {name}: {line}, latency {bus.latency:g} s, {bus.retries} retries")
        on = [evse for evse in config.evses if evse.meter.bus == name]
        for evse in on:
            connectors = ", ".join(str(c) for c in evse.connectors)
            text = (
                f"  EVSE {evse.id} (connector{'s' if len(evse.connectors) > 1 else ''} {connectors}): "
                f"{evse.meter.model} meter, device id {evse.meter.device_id}"
            )
            if evse.meter.latency != bus.latency:
                text += f", latency {evse.meter.latency:g} s"
            if evse.meter.registers:
                text += f", {len(evse.meter.registers)} register override(s)"
            if bus.transport == "simulated":
                text += f", memory in {sim_state_path(config, evse)}"
            cc = evse.charge_controller
            if cc.driver == "simulated":
                text += f"; simulated car{' (socket ' + cc.control_socket + ')' if cc.control_socket else ''}"
            elif cc.driver == "openevse":
                text += f"; OpenEVSE controller on {cc.port}"
            if cc.lock:
                text += ", connector lock"
            lines.append(text)
        if not on:
            lines.append("  no meter on this bus")
    for reader in config.card_readers:
        where = f"EVSE {reader.evse}" if reader.evse else "all EVSEs"
        what = (
            (f"PC/SC reader {reader.device!r}" if reader.device else "the first PC/SC reader")
            if reader.driver == "pcsc"
            else "simulated"
        )
        lines.append(f"card reader {reader.name}: {what}, for {where}")
    return lines


def _security_problems(csms: dict[str, Any]) -> list[str]:
    """The [csms] keys must fit the security profile together: scheme, password, certificate files."""
    problems: list[str] = []
    profile = csms["security_profile"]
    scheme = urlparse(csms["url"]).scheme
    wanted = "wss" if profile >= 2 else "ws"
    if scheme != wanted:
        problems.append(
            f"csms.url: security_profile {profile} needs a {wanted}:// url, got {scheme}://; "
            + ("profiles 2 and 3 use TLS" if profile >= 2 else "use profile 2 or 3 for wss://")
        )
    if profile == 1 and not csms.get("allow_basic_auth_over_ws", False):
        problems.append(
            "csms.security_profile: 1 sends the password unencrypted over ws://; set allow_basic_auth_over_ws = true "
            "if the network is trusted (VPN), or use profile 2"
        )
    if profile in (1, 2) and not csms.get("basic_auth_password"):
        problems.append(f"csms.basic_auth_password: missing; security_profile {profile} needs the Basic-auth password")
    for key in ("ca_file", "client_cert", "client_key"):
        path = csms.get(key, "")
        if path and not Path(path).is_file():
            problems.append(f"csms.{key}: {path!r} is not a readable file; give the path of the PEM file")
    if profile == 3:
        for key in ("client_cert", "client_key"):
            if not csms.get(key):
                problems.append(f"csms.{key}: missing; security_profile 3 needs the station's client certificate")
        key_path = csms.get("client_key", "")
        if key_path and Path(key_path).is_file() and os.stat(key_path).st_mode & 0o077:
            problems.append(
                f"csms.client_key: {key_path!r} is readable by others; chmod 600 it (owned by the service user)"
            )
    return problems


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], str(p)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB; a station's configuration is a few kB"], str(p)
        )
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as a text file reads it
    except UnicodeDecodeError:
        raise ConfigError(["the file is not UTF-8 text"], str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(p)) from None
    return parse_config(data, str(p))


# --------------------------------------------------------------------------- warnings


UNIT_SUPPLEMENTARY_GROUPS = ("dialout",)  # systemd/station.service: SupplementaryGroups=dialout


class _Access:
    """Whether a user may read or write a path, from the path's mode bits (for a user other than the one running this:
    `station config check --user station` run as root at install time, counting the groups the unit adds), or from
    os.access() for ourselves."""

    def __init__(self, user: str | None) -> None:
        self._user: pwd.struct_passwd | None = None
        self._groups: set[int] = set()
        if user:
            self._user = pwd.getpwnam(user)  # KeyError: no such user
            self.name = user
            self._groups = {self._user.pw_gid} | {
                g.gr_gid for g in grp.getgrall() if user in g.gr_mem or g.gr_name in UNIT_SUPPLEMENTARY_GROUPS
            }
        else:
            try:
                self.name = pwd.getpwuid(os.geteuid()).pw_name
            except KeyError:
                self.name = f"uid {os.geteuid()}"

    def may(self, path: Path, want: int) -> bool:
        """`want`: os.R_OK | os.W_OK | os.X_OK."""
        if self._user is None:
            return os.access(path, want)
        if self._user.pw_uid == 0:
            return True
        st = path.stat()
        if st.st_uid == self._user.pw_uid:
            bits = st.st_mode >> 6
        elif st.st_gid in self._groups:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & want == want


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _writable_dir_problem(key: str, file_path: str, access: _Access, how: str) -> str | None:
    """The directory of `file_path` must let the daemon create files (SQLite's journal, a socket)."""
    directory = Path(file_path).parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != directory:
        if access.may(existing, os.W_OK | os.X_OK):
            return None  # the daemon creates the missing directories
        return (
            f"{key}: the directory {directory} does not exist and {access.name} cannot create it in {existing}; {how}"
        )
    if not directory.is_dir():
        return f"{key}: {directory} is not a directory; give a path in a directory"
    if not access.may(directory, os.W_OK | os.X_OK):
        return f"{key}: {access.name} cannot write in {directory}; {how}"
    return None


def config_warnings(config: Config, *, user: str | None = None) -> list[str]:
    """What will likely go wrong when the daemon runs on this config as `user` (default: whoever runs this), with how
    to fix it: a serial port that is absent or not accessible, directories it cannot write, and secrets that others
    can read. Raises KeyError for an unknown `user`."""
    access = _Access(user)
    warnings: list[str] = []
    used = {evse.meter.bus for evse in config.evses}
    for name, bus in config.buses.items():
        if name not in used:
            warnings.append(
                f"bus.{name}: no meter is on this bus; remove [bus.{name}], or name it in the [evse.meter] of the "
                "meter wired to it"
            )
        if bus.transport != "rtu":
            continue
        key = "meter.port" if config.legacy else f"bus.{name}.port"
        port = Path(bus.port)
        if not port.exists():
            warnings.append(
                f"{key}: {bus.port} does not exist; plug the meter's adapter in, or correct the name "
                "(ls /dev/serial/by-id/ shows stable names)"
            )
        elif not access.may(port, os.R_OK | os.W_OK):
            group = _group_name(port.stat().st_gid)
            warnings.append(
                f"{key}: {access.name} may not open {bus.port}; add {access.name} to group {group} "
                f"(usermod -aG {group} {access.name})"
            )
    problem = _writable_dir_problem(
        "storage.path",
        config.storage.path,
        access,
        "create it writable by the service user (the unit's StateDirectory= does so for /var/lib/station)",
    )
    if problem:
        warnings.append(problem)
    store = Path(config.storage.path)
    if store.is_file() and not access.may(store, os.R_OK | os.W_OK):
        warnings.append(f"storage.path: {access.name} cannot read and write {store}; chown it to the service user")
    if config.diagnostics.socket:
        problem = _writable_dir_problem(
            "diagnostics.socket",
            config.diagnostics.socket,
            access,
            "use a directory the service user owns (the unit's RuntimeDirectory= makes /run/station)",
        )
        if problem:
            warnings.append(problem)
    # ---- firmware update: a signed update needs the root; the install needs the releases folder
    root = config.firmware.manufacturer_root
    if root and not Path(root).is_file():  # unset: no firmware update over OCPP (answered InvalidCertificate)
        warnings.append(
            f"firmware.manufacturer_root: {root} does not exist; install the manufacturer's root certificate there "
            "or have the CSMS install one (InstallCertificate ManufacturerRootCertificate); signed firmware updates "
            "are answered InvalidCertificate until then"
        )
    releases = Path(config.firmware.releases)
    if releases.is_dir() and not access.may(releases, os.W_OK | os.X_OK):
        warnings.append(
            f"firmware.releases: {access.name} cannot write {releases}; chown it to the service user (firmware "
            "updates install new releases there)"
        )
    warnings.extend(secret_warnings(config))
    return warnings


def secret_warnings(config: Config) -> list[str]:
    """Files holding secrets that others can read: the config file with passwords in it (group or others: the
    technicians in the service's group may use the socket but must not read the CSMS password) and the store (the
    AuthorizationKey a CSMS sets is kept there; others). The daemon logs these at start-up (issue 14.7); the rest of
    `config_warnings` is for `station config check`, since the daemon reports a missing port or store itself."""
    warnings: list[str] = []
    secrets = [
        name
        for name, value in (
            ("csms.basic_auth_password", config.csms.basic_auth_password),
            ("diagnostics.http_password", config.diagnostics.http_password),
        )
        if value
    ]
    if secrets and config.source:
        try:
            mode = stat.S_IMODE(os.stat(config.source).st_mode)
        except OSError:
            mode = 0
        if mode & 0o044:
            who = " and ".join(w for w, bit in (("its group", 0o040), ("everyone", 0o004)) if mode & bit)
            warnings.append(
                f"{config.source} holds passwords ({', '.join(secrets)}) and is readable by {who} (mode "
                f"{mode:04o}); chmod 600 it, owned by the service user (chown station: {config.source})"
            )
    store = Path(config.storage.path)
    try:
        store_mode = stat.S_IMODE(store.stat().st_mode)
    except OSError:
        store_mode = 0
    if store_mode & 0o004:
        warnings.append(
            f"storage.path: {store} holds the CSMS password once the CSMS sets one and is readable by everyone "
            f"(mode {store_mode:04o}); chmod 600 it"
        )
    return warnings
