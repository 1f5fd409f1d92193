"""Config files: the example loads, and every kind of mistake is reported at once, by key, with a fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.cli import main
from station.config import (
    MAX_CONFIG_BYTES,
    BusConfig,
    ConfigError,
    EvseConfig,
    MeterConfig,
    config_warnings,
    describe,
    load_config,
    parse_config,
    sim_state_path,
)
from tests.conftest import write_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
EXAMPLE = CONFIG_DIR / "station.example.toml"
TWIN = CONFIG_DIR / "station-twin.example.toml"


def minimal() -> dict[str, dict[str, object]]:
    return {
        "station": {"id": "CP-1"},
        "csms": {"url": "ws://127.0.0.1:9000/ocpp"},
        "meter": {"port": "/dev/ttyUSB0"},
        "storage": {"path": "/tmp/x.db"},
    }


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.station.id == "CP-0001"
    bus = config.bus_of(config.evses[0])
    assert bus.transport == "rtu" and bus.baudrate == 9600 and bus.parity == "N"


def test_defaults_fill_what_is_not_given() -> None:
    config = parse_config(minimal())
    meter = config.evses[0].meter
    assert config.csms.ocpp_version == "1.6" and meter.model == "smartme" and meter.device_id == 1


@pytest.mark.parametrize("parity", ["N", "E", "O"])
def test_serial_settings_8n1_8e1_8o1_are_accepted(parity: str) -> None:
    data = minimal()
    data["meter"]["parity"] = parity
    assert parse_config(data).buses["meter"].parity == parity


def test_every_problem_is_reported_at_once_with_its_key() -> None:
    data = minimal()
    data["station"]["id"] = "bad id/with slash"
    data["csms"]["url"] = "http://example.com"
    data["csms"]["ocpp_version"] = "1.5"
    data["meter"]["baudrate"] = 9601
    data["meter"]["parity"] = "X"
    data["meter"]["transport"] = "usb"
    data["meter"]["device_id"] = 0
    data["meter"]["bogus"] = 1
    data["meter"]["registers"] = {"command": 70000, "no_such_register": 1}
    del data["storage"]["path"]
    data["extra"] = {}
    with pytest.raises(ConfigError) as err:
        parse_config(data, "station.toml")
    text = "\n".join(err.value.problems)
    for key in (
        "station.id",
        "csms.url",
        "csms.ocpp_version",
        "meter.baudrate",
        "meter.parity",
        "meter.transport",
        "meter.device_id",
        "meter.bogus",
        "meter.registers.command",
        "storage.path",
        "[extra]",
    ):
        assert key in text, key
    assert len(err.value.problems) >= 11


def test_wrong_types_are_named() -> None:
    data = minimal()
    data["meter"]["baudrate"] = "9600"
    data["meter"]["latency"] = True
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert any("meter.baudrate: must be an integer" in p for p in err.value.problems)
    assert any("meter.latency" in p for p in err.value.problems)


def test_unknown_register_name_is_refused() -> None:
    data = minimal()
    data["meter"]["registers"] = {"comand": 0x0200}
    with pytest.raises(ConfigError, match="unknown smart-me register"):
        parse_config(data)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[station\nid = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[station]\nid = ""\n[csms]\nurl = "ftp://x"\n')
    assert main(["config", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "station.id" in out and "csms.url" in out and "storage.path" in out


def test_run_refuses_to_start_on_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[station]\nid = "CP"\n')
    assert main(["run", "--config", str(bad)]) == 2
    assert "csms.url" in capsys.readouterr().err


# ---------------------------------------------------------------------- issue 16 items 5 and 8, issue 14.7


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m station ARGS` as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "station", *args], capture_output=True, text=True, timeout=60, check=False
    )


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_misspelled_key_or_section_suggests_the_nearest_known_one(tmp_path: Path) -> None:
    config = write(
        tmp_path / "typo.toml",
        '[station]\nid = "CP-1"\n[csms]\nurl = "ws://127.0.0.1:9/ocpp"\n[meter]\nbaudrat = 9600\n'
        '[storage]\npath = "/tmp/x.db"\n[diagnostic]\nsocket = "/tmp/d.sock"\n',
    )
    result = run_cli("config", "check", str(config))
    assert result.returncode == 1
    assert "meter.baudrat: unknown key; did you mean baudrate?" in result.stdout
    assert "[diagnostic]: unknown section; did you mean [diagnostics]?" in result.stdout


def checked(tmp_path: Path, **sections: dict[str, object]) -> Path:
    data: dict[str, dict[str, object]] = {
        "station": {"id": "CP-1"},
        "csms": {"url": "ws://127.0.0.1:9/ocpp"},
        "meter": {"port": str(tmp_path / "ttyUSB9")},
        "storage": {"path": str(tmp_path / "state" / "s.db")},
        "diagnostics": {"socket": str(tmp_path / "run" / "diag.sock")},
    }
    for name, keys in sections.items():
        data.setdefault(name, {}).update(keys)
    return write_config(tmp_path / "station.toml", data)


def warnings_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.strip()[len("WARNING: ") :] for line in result.stdout.splitlines() if "WARNING:" in line]


def test_config_check_warns_about_a_missing_serial_port_and_still_exits_0(tmp_path: Path) -> None:
    config = checked(tmp_path)
    config.chmod(0o600)
    result = run_cli("config", "check", str(config))
    assert result.returncode == 0, result.stdout
    [warning] = warnings_of(result)
    assert warning.startswith(f"meter.port: {tmp_path / 'ttyUSB9'} does not exist; plug the meter's adapter in")
    (tmp_path / "ttyUSB9").touch()
    (tmp_path / "ttyUSB9").chmod(0o600)  # root's; the service user may not open it
    result = run_cli("config", "check", "--user", "nobody", str(config))
    [warning] = [w for w in warnings_of(result) if w.startswith("meter.port")]
    assert "nobody may not open" in warning and "usermod -aG" in warning
    assert run_cli("config", "check", "--user", "no-such-user-here", str(config)).returncode == 2


def test_config_check_warns_when_the_daemon_cannot_write_its_directories(tmp_path: Path) -> None:
    (tmp_path / "ttyUSB9").touch()
    (tmp_path / "ttyUSB9").chmod(0o666)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)  # root's, not writable by anyone else
    config = checked(
        tmp_path,
        storage={"path": str(locked / "s.db")},
        diagnostics={"socket": str(locked / "run" / "diag.sock")},
    )
    config.chmod(0o644)  # no passwords in it: readable is fine
    result = run_cli("config", "check", "--user", "nobody", str(config))
    assert result.returncode == 0
    found = warnings_of(result)
    assert any(w.startswith(f"storage.path: nobody cannot write in {locked}") for w in found), found
    assert any(w.startswith(f"diagnostics.socket: the directory {locked / 'run'} does not exist") for w in found)
    assert all("readable" not in w for w in found)
    # Writable for the service user: no warning about them.
    locked.chmod(0o777)
    assert not [w for w in warnings_of(run_cli("config", "check", "--user", "nobody", str(config))) if "directory" in w]


def test_config_check_warns_when_a_file_holding_passwords_is_readable_by_others(tmp_path: Path) -> None:
    """Issue 14.7: a config file holding passwords that is group- or world-readable gets a warning."""
    (tmp_path / "ttyUSB9").touch()
    config = checked(tmp_path, diagnostics={"http": "127.0.0.1:8080", "http_password": "technician-secret"})
    for mode, who in ((0o640, "its group"), (0o604, "everyone"), (0o644, "its group and everyone")):
        config.chmod(mode)
        result = run_cli("config", "check", str(config))
        assert result.returncode == 0
        [warning] = warnings_of(result)
        assert f"holds passwords (diagnostics.http_password) and is readable by {who}" in warning
        assert "chmod 600" in warning and "technician-secret" not in result.stdout
    config.chmod(0o600)
    assert warnings_of(run_cli("config", "check", str(config))) == []
    # The store keeps the AuthorizationKey a CSMS sets: world-readable is warned about too.
    store = tmp_path / "state" / "s.db"
    store.parent.mkdir()
    store.touch(mode=0o644)
    store.chmod(0o644)
    [warning] = warnings_of(run_cli("config", "check", str(config)))
    assert warning.startswith(f"storage.path: {store} holds the CSMS password") and "chmod 600" in warning


def test_the_daemon_warns_at_start_up_about_a_readable_password_file(tmp_path: Path) -> None:
    """Issue 14.7 at start-up: the warning is in the daemon's log (then it runs as usual; here it stops at once on
    SIGTERM)."""
    import signal
    import time

    config = checked(
        tmp_path,
        meter={"transport": "simulated", "simulator": {"state": str(tmp_path / "m.json")}},
        csms={
            "basic_auth_password": "0123456789abcdef-secret",
            "security_profile": 1,
            "allow_basic_auth_over_ws": True,
        },
    )
    config.chmod(0o644)
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "run", "--config", str(config), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    for line in process.stdout:
        lines.append(line)
        if '"station running"' in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=30)
    log = "".join(lines) + rest
    warnings = [json.loads(x) for x in log.splitlines() if '"config warning"' in x]
    assert any("holds passwords (csms.basic_auth_password)" in w["problem"] for w in warnings), log[-3000:]
    assert "0123456789abcdef-secret" not in log


# ---------------------------------------------------------------------- issue 17 item 1: EVSEs and buses


def twin() -> dict[str, Any]:
    """Two EVSEs, an Iskra (device id 33) and an EM580 (device id 1), on one bus."""
    return {
        "station": {"id": "CP-1"},
        "csms": {"url": "ws://127.0.0.1:9000/ocpp"},
        "bus": {"rs485": {"port": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E"}},
        "evse": [
            {"id": 1, "connectors": [1], "meter": {"model": "iskra-wm3m4c", "bus": "rs485", "device_id": 33}},
            {"id": 2, "meter": {"model": "carlo-gavazzi-em580", "bus": "rs485", "device_id": 1}},
        ],
        "storage": {"path": "/tmp/x.db"},
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "station.toml")
    return err.value.problems


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_file_in_config_is_a_valid_config(path: Path) -> None:
    config = load_config(path)
    assert config.evses and all(config.bus_of(evse) for evse in config.evses)
    assert [evse.id for evse in config.evses] == list(range(1, len(config.evses) + 1))


def test_the_twin_example_is_two_evses_on_one_bus() -> None:
    config = load_config(TWIN)
    assert not config.legacy and list(config.buses) == ["rs485"]
    iskra, em580 = config.evses
    assert (iskra.id, iskra.connectors, iskra.meter.model, iskra.meter.device_id) == (1, (1,), "iskra-wm3m4c", 33)
    assert (em580.id, em580.connectors, em580.meter.model, em580.meter.device_id) == (2, (1,), "carlo-gavazzi-em580", 1)
    assert config.bus_of(iskra) is config.bus_of(em580) is config.buses["rs485"]


def test_the_legacy_meter_table_means_one_bus_named_meter_and_evse_1() -> None:
    """Every key of [meter] lands where it did: the line settings on bus "meter", the meter's own on EVSE 1."""
    data = minimal()
    data["meter"] = {
        "model": "bauer-bsm-ws36a",
        "transport": "tcp",
        "port": "10.0.0.5:502",
        "baudrate": 19200,
        "parity": "E",
        "stopbits": 2,
        "device_id": 42,
        "latency": 1,
        "poll_interval": 0.5,
        "registers": {"public_key": 0x8000},
        "simulator": {"power_w": 7400, "signing_time": 2, "state": "/tmp/s.json", "ledger": "/tmp/l.jsonl"},
    }
    config = parse_config(data)
    assert config.legacy
    assert config.buses == {
        "meter": BusConfig("meter", "tcp", "10.0.0.5:502", 19200, "E", 2, latency=1.0, retries=2),
    }
    assert config.evses == (
        EvseConfig(
            id=1,
            connectors=(1,),
            meter=MeterConfig(
                model="bauer-bsm-ws36a",
                bus="meter",
                device_id=42,
                latency=1.0,
                poll_interval=0.5,
                registers={"public_key": 0x8000},
                sim_power_w=7400.0,
                sim_signing_time=2.0,
                sim_state="/tmp/s.json",
                sim_ledger="/tmp/l.jsonl",
            ),
        ),
    )
    assert config.evse(1) is config.evses[0] and config.bus_of(config.evse(1)).port == "10.0.0.5:502"
    with pytest.raises(KeyError, match="no EVSE 2"):
        config.evse(2)


def test_no_meter_table_at_all_is_the_legacy_defaults() -> None:
    data = minimal()
    del data["meter"]
    config = parse_config(data)
    assert config.legacy and config == parse_config(minimal() | {"meter": {}})
    assert config.buses == {"meter": BusConfig("meter")} and config.evses == (EvseConfig(1, MeterConfig()),)


def test_legacy_station_connectors_is_still_accepted_as_1_and_refused_otherwise() -> None:
    data = minimal()
    data["station"]["connectors"] = 1
    assert parse_config(data).evses[0].connectors == (1,)
    data["station"]["connectors"] = 2
    assert any(p.startswith("station.connectors: 2 must be between 1 and 1") for p in problems_of(data))


def test_new_form_several_meters_on_one_bus_sorted_by_id_with_bus_defaults() -> None:
    data = twin()
    data["bus"]["rs485"]["latency"] = 0.8
    data["evse"][1]["meter"]["latency"] = 1.5
    data["evse"][0]["connectors"] = [2, 1]
    data["evse"].reverse()  # ids need not be written in order
    config = parse_config(data)
    assert [e.id for e in config.evses] == [1, 2]
    assert config.buses["rs485"] == BusConfig("rs485", "rtu", "/dev/ttyUSB0", 19200, "E", 1, latency=0.8, retries=2)
    assert config.evse(1).connectors == (1, 2) and config.evse(2).connectors == (1,)
    assert config.evse(1).meter.latency == 0.8  # the bus's
    assert config.evse(2).meter.latency == 1.5  # its own


def test_new_form_one_bus_per_meter() -> None:
    data = twin()
    data["bus"]["second"] = {"port": "/dev/ttyUSB1", "transport": "rtu", "retries": 0}
    data["evse"][1]["meter"]["bus"] = "second"
    data["evse"][1]["meter"]["device_id"] = 33  # the same address is fine on another line
    config = parse_config(data)
    assert config.bus_of(config.evse(2)) == BusConfig("second", port="/dev/ttyUSB1", retries=0)
    assert config.evse(1).meter.device_id == config.evse(2).meter.device_id == 33


def test_a_meter_may_leave_out_its_bus_when_there_is_only_one() -> None:
    data = twin()
    for evse in data["evse"]:
        del evse["meter"]["bus"]
    assert {e.meter.bus for e in parse_config(data).evses} == {"rs485"}
    data["bus"]["other"] = {"port": "/dev/ttyUSB1"}
    problems = problems_of(data)
    assert any(p.startswith("evse[1].meter.bus: missing; name the [bus.NAME]") for p in problems), problems
    assert any(p.startswith("evse[2].meter.bus: missing") and "rs485, other" in p for p in problems), problems


def test_simulator_state_files_default_next_to_the_store() -> None:
    legacy = parse_config(minimal() | {"meter": {"transport": "simulated"}})
    assert sim_state_path(legacy, legacy.evses[0]) == Path("/tmp/meter-sim.json")
    data = twin()
    data["bus"]["rs485"]["transport"] = "simulated"
    data["evse"][1]["meter"]["simulator"] = {"state": "/elsewhere/em580.json", "ledger": "/elsewhere/l.jsonl"}
    config = parse_config(data)
    assert sim_state_path(config, config.evse(1)) == Path("/tmp/meter-sim-evse1.json")
    assert sim_state_path(config, config.evse(2)) == Path("/elsewhere/em580.json")
    assert config.evse(2).meter.sim_ledger == "/elsewhere/l.jsonl"


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    """Set `value` at a dotted path of `data`; evse.N is the N-th [[evse]] table (1-based); DELETE removes."""
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part) - 1] if part.isdigit() else node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()

KEYED_MISTAKES = [
    ("bus.rs485.baudrate", 9601, "bus.rs485.baudrate: 9601 must be one of"),
    ("bus.rs485.parity", "X", "bus.rs485.parity: 'X' must be one of"),
    ("bus.rs485.transport", "usb", "bus.rs485.transport: 'usb' must be one of"),
    ("bus.rs485.stopbits", 3, "bus.rs485.stopbits: 3 must be one of"),
    ("bus.rs485.latency", True, "bus.rs485.latency: must be a number"),
    ("bus.rs485.retries", 11, "bus.rs485.retries: 11 must be between 0 and 10"),
    ("bus.rs485.port", "", "bus.rs485.port: '' must not be empty"),
    ("bus.rs485.port", "/dev/tty\x00USB0", "bus.rs485.port: '/dev/tty\\x00USB0' must not contain control characters"),
    ("bus.rs485.baudrat", 9600, "bus.rs485.baudrat: unknown key; did you mean baudrate?"),
    ("bus.rs485", 5, "[bus.rs485] must be a table"),
    ("bus.rs 485", {}, "[bus.rs 485]: a bus name is 1 to 32 letters"),
    ("evse.1.id", DELETE, "evse[1].id: missing"),
    ("evse.1.id", "1", "evse[1].id: must be an integer"),
    ("evse.2.id", 3, "evse[2].id: 3 is more than the 2 EVSE(s) given; EVSE ids are 1..2"),
    ("evse.2.id", 1, "evse[2].id: 1 is also evse[1]'s id"),
    ("evse.2.id", 0, "evse[2].id: 0 must be between 1 and 16"),
    ("evse.1.connectors", [1, 3], "evse[1].connectors: [1, 3] must be the ids 1..2 without gaps or repeats"),
    ("evse.1.connectors", [1, 1], "evse[1].connectors: [1, 1] must be the ids 1..2"),
    ("evse.1.connectors", [], "evse[1].connectors: must be an array of connector ids"),
    ("evse.1.connectors", ["1"], "evse[1].connectors: must be an array of connector ids"),
    ("evse.1.connectors", 1, "evse[1].connectors: must be an array"),
    ("evse.1.conectors", [1], "evse[1].conectors: unknown key; did you mean connectors?"),
    ("evse.1.meter", DELETE, "evse[1].meter: missing"),
    ("evse.2.meter.device_id", 0, "evse[2].meter.device_id: 0 must be between 1 and 247"),
    ("evse.2.meter.device_id", 33, "evse[2].meter.device_id: EVSE 2 and EVSE 1 (evse[1]) both have device id 33"),
    ("evse.2.meter.model", "em580", "evse[2].meter.model: 'em580' must be one of"),
    ("evse.2.meter.modle", "em580", "evse[2].meter.modle: unknown key; did you mean model?"),
    ("evse.2.meter.bus", "rs458", "evse[2].meter.bus: 'rs458' is not a bus; did you mean rs485? buses: rs485"),
    ("evse.2.meter.port", "/dev/ttyUSB1", "evse[2].meter.port: a setting of the serial line, not of the meter"),
    ("evse.2.meter.latency", 11, "evse[2].meter.latency: 11 must be between 0.0 and 10.0"),
    ("evse.2.meter.poll_interval", 0, "evse[2].meter.poll_interval: 0 must be between"),
    ("evse.1.meter.registers", {"command": 70000}, "evse[1].meter.registers.command: must be a register address"),
    (
        "evse.1.meter.registers",
        {"comand": 7051},
        "evse[1].meter.registers.comand: unknown Iskra register name; did you mean command?",
    ),
    ("evse.2.meter.registers", {"comand": 1}, "evse[2].meter.registers.comand: unknown EM580 register name"),
    ("evse.2.meter.simulator.power_w", -1, "evse[2].meter.simulator.power_w: -1 must be between"),
    ("evse.2.meter.simulator.powerw", 1, "evse[2].meter.simulator.powerw: unknown key; did you mean power_w?"),
    ("evse.2.meter.simulator", 1, "evse[2].meter.simulator: must be a table"),
    ("station.connectors", 1, "station.connectors: only with the single [meter] table"),
    ("meter", {"port": "/dev/ttyUSB0"}, "[meter]: cannot be combined with [[evse]] and [bus.NAME] tables"),
    ("evses", [], "[evses]: unknown section; did you mean [[evse]]?"),
]


@pytest.mark.parametrize(("path", "value", "expected"), KEYED_MISTAKES, ids=[m[0] for m in KEYED_MISTAKES])
def test_every_mistake_in_the_new_form_names_its_full_key(path: str, value: Any, expected: str) -> None:
    data = twin()
    _set(data, path, value)
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_meter_on_a_broken_bus_gets_no_second_problem() -> None:
    data = twin()
    data["bus"]["rs485"]["baudrate"] = 9601
    assert problems_of(data) == [p for p in problems_of(data) if p.startswith("bus.rs485.")]


def test_the_shape_of_the_new_form_is_checked() -> None:
    data = twin()
    del data["evse"]
    assert any(p.startswith("[[evse]]: missing; with [bus.NAME] tables") for p in problems_of(data))
    data["evse"] = {"id": 1}  # [evse] written with one pair of brackets
    assert any(p.startswith("[[evse]] must be an array of tables") for p in problems_of(data))
    data["evse"] = [5]
    assert any(p.startswith("evse[1]: must be a table") for p in problems_of(data))
    data["evse"] = []
    assert any(p.startswith("[[evse]]: none given") for p in problems_of(data))
    data = twin()
    data["bus"] = "rs485"
    assert any(p.startswith("[bus] must be [bus.NAME] tables") for p in problems_of(data))
    data = twin()
    del data["bus"]
    problems = problems_of(data)
    assert any(
        p.startswith("evse[1].meter.bus: 'rs485' is not a bus;") and "no [bus.NAME] table is given" in p
        for p in problems
    ), problems


def test_two_buses_on_one_serial_port_is_an_error(tmp_path: Path) -> None:
    data = twin()
    data["bus"]["again"] = {"port": "/dev/ttyUSB0"}
    assert any(p.startswith("bus.again.port: '/dev/ttyUSB0' is also bus.rs485.port") for p in problems_of(data))
    # Also when one names it by a symlink (as /dev/serial/by-id/ does).
    (tmp_path / "ttyUSB7").touch()
    (tmp_path / "by-id").symlink_to(tmp_path / "ttyUSB7")
    data["bus"] = {"rs485": {"port": str(tmp_path / "ttyUSB7")}, "again": {"port": str(tmp_path / "by-id")}}
    assert any(p.startswith("bus.again.port:") for p in problems_of(data))
    # Simulated buses have no port to share.
    data["bus"] = {"rs485": {"transport": "simulated"}, "again": {"transport": "simulated"}}
    data["evse"][1]["meter"]["bus"] = "again"
    assert parse_config(data).evse(2).meter.bus == "again"


def test_two_simulated_meters_may_not_share_a_memory_or_ledger_file() -> None:
    data = twin()
    data["bus"]["rs485"]["transport"] = "simulated"
    for evse in data["evse"]:
        evse["meter"]["simulator"] = {"state": "/tmp/one.json", "ledger": "/tmp/one.jsonl"}
    problems = problems_of(data)
    assert any(p.startswith("evse[2].meter.simulator.state: '/tmp/one.json' is also evse[1]") for p in problems)
    assert any(p.startswith("evse[2].meter.simulator.ledger: '/tmp/one.jsonl' is also evse[1]") for p in problems)


def test_bounds_on_evses_connectors_buses_and_overrides() -> None:
    """A hostile file is refused with one problem per bound, not one per entry."""
    data = twin()
    data["evse"] = [{"id": i, "meter": {"device_id": i, "bus": "rs485"}} for i in range(1, 18)]
    assert problems_of(data) == ["[[evse]]: 17 EVSEs; at most 16"]
    data["evse"] = data["evse"][:16]
    assert len(parse_config(data).evses) == 16
    data = twin()
    data["evse"][0]["connectors"] = list(range(1, 6))
    assert problems_of(data) == ["evse[1].connectors: 5 connectors; at most 4 per EVSE"]
    data["evse"][0]["connectors"] = list(range(1, 5))
    assert parse_config(data).evse(1).connectors == (1, 2, 3, 4)
    data = twin()
    data["bus"] |= {f"b{i}": {"port": f"/dev/ttyS{i}"} for i in range(16)}
    assert problems_of(data) == ["[bus]: 17 buses; at most 16 (one per meter)"]
    data = twin()
    data["evse"][0]["meter"]["registers"] = {f"r{i}": i for i in range(65)}
    assert problems_of(data) == ["evse[1].meter.registers: 65 overrides; a meter has at most 64 registers"]
    data = twin()
    data["bus"]["x" * 10000] = {"port": "/dev/ttyS9"}
    assert problems_of(data) == [
        "[bus." + "x" * 32 + "...]: a bus name is 1 to 32 letters, digits, '-' or '_', e.g. [bus.rs485]"
    ]


def test_a_huge_config_file_is_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "huge.toml"
    huge.write_text(TWIN.read_text() + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_config(huge)


def test_a_bus_nobody_uses_is_a_warning_not_an_error(tmp_path: Path) -> None:
    data = twin()
    (tmp_path / "tty0").touch()
    data["bus"]["rs485"]["port"] = str(tmp_path / "tty0")
    data["bus"]["spare"] = {"port": str(tmp_path / "tty1")}
    data["storage"]["path"] = str(tmp_path / "s.db")
    config = parse_config(data)
    warnings = config_warnings(config)
    assert any(w.startswith("bus.spare: no meter is on this bus; remove [bus.spare]") for w in warnings), warnings
    assert any(w.startswith(f"bus.spare.port: {tmp_path / 'tty1'} does not exist") for w in warnings), warnings
    assert not any("rs485" in w for w in warnings)
    assert "bus spare: RTU on" in "\n".join(describe(config)) and "  no meter on this bus" in describe(config)


def test_describe_says_how_the_file_was_read() -> None:
    assert describe(load_config(TWIN)) == [
        "2 EVSEs on 1 bus",
        "bus rs485: RTU on /dev/serial/by-id/usb-FTDI_FT232R_USB_UART-if00-port0, 9600 baud 8N1, latency 0.3 s, "
        "2 retries",
        "  EVSE 1 (connector 1): iskra-wm3m4c meter, device id 33",
        "  EVSE 2 (connector 1): carlo-gavazzi-em580 meter, device id 1",
    ]
    assert describe(load_config(EXAMPLE)) == [
        "1 EVSE on 1 bus, read from the legacy [meter] table",
        "bus meter: RTU on /dev/ttyUSB0, 9600 baud 8N1, latency 0.3 s, 2 retries",
        "  EVSE 1 (connector 1): smartme meter, device id 1",
    ]
    data = twin()
    data["bus"]["rs485"]["transport"] = "simulated"
    data["bus"]["tcp"] = {"transport": "tcp", "port": "10.0.0.9:502"}
    data["evse"][1]["meter"] |= {"bus": "tcp", "latency": 1, "registers": {"command": 0x7040}}
    data["evse"][1]["connectors"] = [1, 2]
    assert describe(parse_config(data)) == [
        "2 EVSEs on 2 buses",
        "bus rs485: simulated: an in-process simulator per meter on one virtual line, 19200 baud 8E1, latency 0.3 s, "
        "2 retries",
        "  EVSE 1 (connector 1): iskra-wm3m4c meter, device id 33, memory in /tmp/meter-sim-evse1.json",
        "bus tcp: RTU over TCP to 10.0.0.9:502, 9600 baud 8N1 timing, latency 0.3 s, 2 retries",
        "  EVSE 2 (connectors 1, 2): carlo-gavazzi-em580 meter, device id 1, latency 1 s, 1 register override(s)",
    ]


def test_config_check_prints_how_it_read_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(TWIN)]) == 0
    out = capsys.readouterr().out
    assert "OK (station CP-TWIN-01, OCPP 2.0.1)" in out and "\n  2 EVSEs on 1 bus\n" in out
    assert "\n    EVSE 1 (connector 1): iskra-wm3m4c meter, device id 33\n" in out
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "1 EVSE on 1 bus, read from the legacy [meter] table" in capsys.readouterr().out


IMPORTS_OF_A_PARSE = """
import json, sys
from station.config import load_config, parse_config
load_config(sys.argv[1])
parse_config({"station": {"id": "CP"}, "csms": {"url": "ws://h/o"}, "storage": {"path": "/tmp/s.db"}})
parse_config({"station": {"id": "CP"}, "csms": {"url": "ws://h/o"}, "storage": {"path": "/tmp/s.db"},
              "meter": {"model": "bauer-bsm-ws36a", "transport": "simulated"}})
print(json.dumps(sorted(m for m in sys.modules if m.startswith("station.meter"))))
if len(sys.argv) > 2:
    parse_config({"station": {"id": "CP"}, "csms": {"url": "ws://h/o"}, "storage": {"path": "/tmp/s.db"},
                  "meter": {"model": sys.argv[2], "registers": {"command": 1}}})
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("station.meter"))))
"""


def _modules_after_parsing(*args: str) -> list[list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_A_PARSE, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_parsing_a_config_imports_no_meter_driver_and_no_simulator() -> None:
    """Issue 17 item 7: the parser knows the models by name; a driver module is imported only to check the register
    names of the model whose registers the file overrides, and a simulator module never."""
    from station.meter.models import MODELS

    drivers = {spec.module for spec in MODELS.values()}
    [modules] = _modules_after_parsing(str(TWIN))
    assert modules == ["station.meter", "station.meter.models"], modules
    [_, with_overrides] = _modules_after_parsing(str(TWIN), "smartme")
    assert drivers & set(with_overrides) == {"station.meter.smartme"}, with_overrides
    assert not [m for m in with_overrides if m.startswith("station.meter.sim")], with_overrides


def test_the_registry_finds_each_models_driver_and_simulator(tmp_path: Path) -> None:
    from station.bus import LineSettings, ModbusBus, ModbusDevice
    from station.meter.driver import RegisterTable
    from station.meter.interface import Meter
    from station.meter.models import MODELS, build_driver, build_simulator_for
    from station.meter.sim.base import SimulatedMeter

    assert sorted(MODELS) == ["bauer-bsm-ws36a", "carlo-gavazzi-em580", "iskra-wm3m4c", "smartme"]
    for name, spec in MODELS.items():
        assert issubclass(spec.register_table(), RegisterTable)
        device = ModbusDevice(ModbusBus(LineSettings(port=str(tmp_path / "none"))), 1)
        driver = build_driver(name, device, {}, 0.1)
        assert isinstance(driver, Meter)
        sim = build_simulator_for(
            name, state=tmp_path / f"{name}.json", ledger=None, device_id=7, power_w=1000, signing_time=0
        )
        assert isinstance(sim, SimulatedMeter)
    with pytest.raises(ValueError, match="unknown smart-me register name"):
        MODELS["smartme"].registers({"comand": 1})


@settings(max_examples=150, deadline=None)
@given(
    data=st.fixed_dictionaries(
        {},
        optional={
            "bus": st.dictionaries(
                st.sampled_from(["rs485", "b", "x y", ""]),
                st.dictionaries(
                    st.sampled_from(["transport", "port", "baudrate", "latency", "retries", "x"]),
                    st.sampled_from(["rtu", "simulated", "tcp", "/dev/ttyS0", 9600, 0, -1, 2.5, True, [], {}]),
                    max_size=4,
                )
                | st.integers(),
                max_size=3,
            ),
            "evse": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "id": st.integers(-1, 20) | st.text(max_size=3),
                        "connectors": st.lists(st.integers(-1, 5) | st.booleans(), max_size=6) | st.integers(),
                        "meter": st.dictionaries(
                            st.sampled_from(["model", "bus", "device_id", "port", "registers", "simulator", "x"]),
                            st.sampled_from(
                                ["smartme", "rs485", "b", 1, 33, 0, {}, {"command": 1}, {"state": "/tmp/a"}, [1]]
                            ),
                            max_size=5,
                        ),
                        "x": st.just(1),
                    },
                )
                | st.integers(),
                max_size=5,
            )
            | st.dictionaries(st.just("id"), st.just(1)),
            "meter": st.just({}),
        },
    )
)
def test_any_evse_and_bus_shape_is_accepted_or_refused_with_named_problems(data: dict[str, Any]) -> None:
    try:
        config = parse_config(minimal_new() | data)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert all("." in p.split(":")[0] or p.startswith("[") or p.startswith("evse[") for p in exc.problems)
    else:
        assert [e.id for e in config.evses] == list(range(1, len(config.evses) + 1))
        assert all(e.meter.bus in config.buses for e in config.evses)


def minimal_new() -> dict[str, Any]:
    return {"station": {"id": "CP-1"}, "csms": {"url": "ws://127.0.0.1:9000/ocpp"}, "storage": {"path": "/tmp/x.db"}}
