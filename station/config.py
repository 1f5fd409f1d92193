"""The station's configuration: one TOML file, checked completely before anything starts.

This module owns the config schema (every key, its type, default and allowed values) and the checking of a file
against it. It reports every problem at once, each with the key, what is wrong and how to fix it, and it never
lets the daemon start on a file with a problem. Besides reading the file it is given, it only looks at the files the
config names (certificates, keys): that they exist, and that a private key is not readable by others. Its warnings
(`config_warnings`) look at the places the config names: the serial port, the directories the daemon writes, who can
read the secrets. They never stop the daemon and never change a file.
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

OCPP_VERSIONS = ("1.6", "2.0.1", "auto")
METER_MODELS = (
    "smartme",
    "iskra-wm3m4c",
    "carlo-gavazzi-em580",
    "bauer-bsm-ws36a",
)  # station/meter/models.py has each one's driver
METER_TRANSPORTS = ("rtu", "tcp", "simulated")
PARITIES = ("N", "E", "O")
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
SIGNED_VALUE_FORMATS = ("oca", "raw")
SECURITY_PROFILES = (0, 1, 2, 3)  # OCPP security profiles: none, Basic auth, TLS + Basic auth, TLS + client cert


class ConfigError(Exception):
    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + f"{len(problems)} problem(s) in the configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class StationConfig:
    id: str
    connectors: int = 1
    vendor: str = "station"
    model: str = "station-controller"


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

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/")


@dataclass(frozen=True)
class MeterConfig:
    model: str = "smartme"
    transport: str = "rtu"
    port: str = "/dev/ttyUSB0"
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    device_id: int = 1
    latency: float = 0.3
    poll_interval: float = 0.1
    registers: dict[str, int] = field(default_factory=dict)
    sim_power_w: float = 11000.0
    sim_signing_time: float = 0.5
    sim_state: str = ""
    sim_ledger: str = ""


@dataclass(frozen=True)
class StorageConfig:
    path: str


@dataclass(frozen=True)
class DiagnosticsConfig:
    socket: str = ""
    http: str = ""
    http_password: str = field(default="", repr=False)


@dataclass(frozen=True)
class Config:
    station: StationConfig
    csms: CsmsConfig
    meter: MeterConfig
    storage: StorageConfig
    diagnostics: DiagnosticsConfig
    source: str = ""


# --------------------------------------------------------------------------- the schema

Check = Callable[[Any], str | None]  # returns a problem text, or None when fine


def _one_of(options: tuple[Any, ...]) -> Check:
    return lambda v: None if v in options else f"must be one of {', '.join(repr(o) for o in options)}"


def _between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _nonempty(v: Any) -> str | None:
    return None if str(v).strip() else "must not be empty"


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
        "connectors": Key(int, 1, _between(1, 1), "connectors with a fiscal meter (this release: 1)"),
        "vendor": Key(str, "station", _nonempty, "chargePointVendor in BootNotification"),
        "model": Key(str, "station-controller", _nonempty, "chargePointModel in BootNotification"),
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
    },
    "meter": {
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
    },
    "storage": {
        "path": Key(str, ..., _nonempty, 'the SQLite file, e.g. "/var/lib/station/station.db"'),
    },
    "diagnostics": {
        "socket": Key(str, "", None, "Unix socket of the technician interface"),
        "http": Key(str, "", _listen_address, 'the technician web page\'s address, e.g. "127.0.0.1:8080" ("" = none)'),
        "http_password": Key(str, "", None, "the technician web page's password, at least 12 characters"),
    },
}

SIMULATOR_KEYS: dict[str, Key] = {
    "power_w": Key((int, float), 11000.0, _between(0, 350000), "simulated charging power in W"),
    "signing_time": Key((int, float), 0.5, _between(0, 60), "seconds the simulated meter takes to sign"),
    "state": Key(str, "", None, "file of the simulated meter's memory (empty: next to the store)"),
    "ledger": Key(str, "", None, "JSON-lines file of every record the simulator signs"),
}


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", dict: "a table", bool: "true/false"}
    if isinstance(t, tuple):
        return "a number" if set(t) == {int, float} else " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


def _did_you_mean(name: str, known: Any) -> str:
    close = difflib.get_close_matches(str(name).lower(), list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def _check_table(section: str, table: Any, schema: dict[str, Key], problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        problems.append(f"[{section}] must be a table, got {type(table).__name__}; write it as [{section}]")
        table = {}
    for key in table:
        if key not in schema:
            problems.append(
                f"{section}.{key}: unknown key; {_did_you_mean(key, schema)}known keys in [{section}]: "
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


def parse_config(data: dict[str, Any], source: str = "") -> Config:
    problems: list[str] = []
    for section in data:
        if section not in SCHEMA:
            hint = _did_you_mean(section, SCHEMA).replace("mean ", "mean [").replace("? ", "]? ")
            problems.append(f"[{section}]: unknown section; {hint}known: {', '.join(SCHEMA)}")
    sections = {name: _check_table(name, data.get(name, {}), keys, problems) for name, keys in SCHEMA.items()}
    meter = sections["meter"]
    registers: dict[str, int] = {}
    for key, value in (meter.get("registers") or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            problems.append(f"meter.registers.{key}: must be a register address 0..65535 (e.g. 0x0200), got {value!r}")
        else:
            registers[key] = value
    if registers and meter.get("model") in METER_MODELS:
        from station.meter.models import MODELS

        try:
            MODELS[meter["model"]].registers(registers)
        except ValueError as exc:
            problems.append(f"meter.registers: {exc}")
    sim = _check_table("meter.simulator", meter.get("simulator", {}), SIMULATOR_KEYS, problems)
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
    if problems:
        raise ConfigError(problems, source)
    return Config(
        station=StationConfig(**sections["station"]),
        # The [csms] keys are CsmsConfig's fields; the ones TOML may give as integers become floats.
        csms=CsmsConfig(**csms | {k: float(csms[k]) for k in ("response_timeout", "reconnect_min", "reconnect_max")}),
        meter=MeterConfig(
            model=meter["model"],
            transport=meter["transport"],
            port=meter["port"],
            baudrate=meter["baudrate"],
            parity=meter["parity"],
            stopbits=meter["stopbits"],
            device_id=meter["device_id"],
            latency=float(meter["latency"]),
            poll_interval=float(meter["poll_interval"]),
            registers=registers,
            sim_power_w=float(sim["power_w"]),
            sim_signing_time=float(sim["signing_time"]),
            sim_state=sim["state"],
            sim_ledger=sim["ledger"],
        ),
        storage=StorageConfig(**sections["storage"]),
        diagnostics=DiagnosticsConfig(**sections["diagnostics"]),
        source=source,
    )


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
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], str(p)) from None
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
    meter = config.meter
    if meter.transport == "rtu":
        port = Path(meter.port)
        if not port.exists():
            warnings.append(
                f"meter.port: {meter.port} does not exist; plug the meter's adapter in, or correct the name "
                "(ls /dev/serial/by-id/ shows stable names)"
            )
        elif not access.may(port, os.R_OK | os.W_OK):
            group = _group_name(port.stat().st_gid)
            warnings.append(
                f"meter.port: {access.name} may not open {meter.port}; add {access.name} to group {group} "
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
