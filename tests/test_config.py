"""Config files: the example loads, and every kind of mistake is reported at once, by key, with a fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from station.cli import main
from station.config import ConfigError, load_config, parse_config
from tests.conftest import write_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "station.example.toml"


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
