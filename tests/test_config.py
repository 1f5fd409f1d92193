"""Config files: the example loads, and every kind of mistake is reported at once, by key, with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.cli import main
from station.config import ConfigError, load_config, parse_config

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
    assert config.meter.transport == "rtu" and config.meter.baudrate == 9600 and config.meter.parity == "N"


def test_defaults_fill_what_is_not_given() -> None:
    config = parse_config(minimal())
    assert config.csms.ocpp_version == "1.6" and config.meter.model == "smartme" and config.meter.device_id == 1


@pytest.mark.parametrize("parity", ["N", "E", "O"])
def test_serial_settings_8n1_8e1_8o1_are_accepted(parity: str) -> None:
    data = minimal()
    data["meter"]["parity"] = parity
    assert parse_config(data).meter.parity == parity


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
