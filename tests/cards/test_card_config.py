"""[[card_reader]] tables: which reader belongs to which EVSE, every mistake named by its key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from station.cards.drivers import build_card_reader
from station.cards.interface import CardReaderError
from station.cards.simulated import SimulatedCardReader
from station.config import CardReaderConfig, ConfigError, describe, load_config, parse_config

TWIN = Path(__file__).resolve().parents[2] / "config" / "station-twin.example.toml"


def legacy(*readers: Any) -> dict[str, Any]:
    return {
        "station": {"id": "CP-1"},
        "csms": {"url": "ws://127.0.0.1:9000/ocpp"},
        "meter": {"port": "/dev/ttyUSB0"},
        "storage": {"path": "/tmp/x.db"},
        "card_reader": list(readers),
    }


def twin(*readers: Any) -> dict[str, Any]:
    return {
        "station": {"id": "CP-1"},
        "csms": {"url": "ws://127.0.0.1:9000/ocpp"},
        "bus": {"rs485": {"port": "/dev/ttyUSB0"}},
        "evse": [{"id": 1, "meter": {"device_id": 1}}, {"id": 2, "meter": {"device_id": 2}}],
        "storage": {"path": "/tmp/x.db"},
        "card_reader": list(readers),
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_no_card_reader_is_the_default() -> None:
    data = legacy()
    del data["card_reader"]
    assert parse_config(data).card_readers == ()
    assert load_config(TWIN).card_readers == ()


def test_a_reader_per_evse_and_one_for_all() -> None:
    config = parse_config(
        twin(
            {"driver": "pcsc", "name": "left", "device": "ACS ACR122U", "evse": 1},
            {"driver": "pcsc", "name": "right", "device": "Identiv uTrust", "evse": 2},
            {"driver": "simulated", "name": "sim"},
        )
    )
    assert config.card_readers == (
        CardReaderConfig(name="left", driver="pcsc", device="ACS ACR122U", evse=1),
        CardReaderConfig(name="right", driver="pcsc", device="Identiv uTrust", evse=2),
        CardReaderConfig(name="sim", driver="simulated", device="", evse=0),
    )
    assert describe(config)[-3:] == [
        "card reader left: PC/SC reader 'ACS ACR122U', for EVSE 1",
        "card reader right: PC/SC reader 'Identiv uTrust', for EVSE 2",
        "card reader sim: simulated, for all EVSEs",
    ]


def test_the_single_meter_form_takes_a_reader_for_its_evse() -> None:
    config = parse_config(legacy({"driver": "pcsc", "name": "front", "evse": 1}))
    assert config.card_readers == (CardReaderConfig(name="front", driver="pcsc", evse=1),)
    assert describe(config)[-1] == "card reader front: the first PC/SC reader, for EVSE 1"


def test_every_mistake_is_named_by_its_key() -> None:
    found = problems(
        twin(
            {"driver": "pcsc", "name": "front", "evse": 3},
            {"driver": "simulated", "name": "front", "device": "ACS"},
            {"driver": "nfc", "name": "with space", "devise": "x"},
            {"name": "x", "evse": -1},
            {"driver": "pcsc", "name": "y", "evse": True, "device": "bad\x00name"},
            5,
        )
    )
    expected = [
        "card_reader[1].evse: there is no EVSE 3;",
        "card_reader[2].name: 'front' is also card_reader[1]'s name;",
        "card_reader[2].device: only a pcsc reader has a device;",
        "card_reader[3].devise: unknown key; did you mean device?",
        "card_reader[3].driver: 'nfc' must be one of 'pcsc', 'simulated';",
        "card_reader[3].name: 'with space' is not a valid name;",
        "card_reader[4].driver: missing;",
        "card_reader[4].evse: -1 must be between 0 and 16;",
        "card_reader[5].evse: must be an integer, got True;",
        "card_reader[5].device: 'bad\\x00name' must be at most 128 characters without control characters;",
        "card_reader[6]: must be a table, got int;",
    ]
    for start in expected:
        assert sum(p.startswith(start) for p in found) == 1, (start, found)
    assert len(found) == len(expected), found


def test_two_readers_on_one_pcsc_reader_are_refused() -> None:
    found = problems(
        twin({"driver": "pcsc", "name": "a", "evse": 1}, {"driver": "pcsc", "name": "b", "device": "", "evse": 2})
    )
    assert len(found) == 1 and found[0].startswith("card_reader[2].device: '' is also card_reader[1]'s device;")
    found = problems(
        twin({"driver": "pcsc", "name": "a", "device": "ACS"}, {"driver": "pcsc", "name": "b", "device": "acs"})
    )
    assert len(found) == 1 and "would report each card twice" in found[0]


def test_card_reader_must_be_an_array_of_tables_and_bounded() -> None:
    data = legacy()
    data["card_reader"] = {"driver": "pcsc", "name": "a"}
    assert problems(data) == [
        "[[card_reader]] must be an array of tables, got dict; write each reader as [[card_reader]] (two brackets)"
    ]
    data["card_reader"] = [{"driver": "simulated", "name": f"r{i}"} for i in range(17)]
    assert problems(data) == ["[[card_reader]]: 17 readers; at most 16"]


def test_a_misspelt_section_points_at_card_reader() -> None:
    data = legacy()
    data["card_readers"] = data.pop("card_reader")
    assert problems(data)[0].startswith("[card_readers]: unknown section; did you mean [[card_reader]]?")


def test_a_broken_evse_gives_the_reader_no_second_problem() -> None:
    data = twin({"driver": "pcsc", "name": "a", "evse": 2})
    data["evse"][1]["meter"]["device_id"] = 999
    found = problems(data)
    assert [p.split(":")[0] for p in found] == ["evse[2].meter.device_id"], found


def test_the_file_form_reads(tmp_path: Path) -> None:
    text = TWIN.read_text() + '\n[[card_reader]]\ndriver = "pcsc"\nname = "left"\ndevice = "ACR122"\nevse = 1\n'
    (tmp_path / "station.toml").write_text(text)
    config = load_config(tmp_path / "station.toml")
    assert config.card_readers == (CardReaderConfig(name="left", driver="pcsc", device="ACR122", evse=1),)


def test_build_card_reader_makes_the_configured_reader() -> None:
    reader = build_card_reader(CardReaderConfig(name="sim", driver="simulated"))
    assert isinstance(reader, SimulatedCardReader) and reader.name == "sim"
    pytest.importorskip("smartcard")
    from station.cards.pcsc import PcscCardReader

    pcsc = build_card_reader(CardReaderConfig(name="front", driver="pcsc", device="ACR122"))
    assert isinstance(pcsc, PcscCardReader) and (pcsc.name, pcsc.reader) == ("front", "ACR122")


def test_without_pyscard_the_pcsc_reader_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smartcard", None)  # import smartcard now raises ImportError
    monkeypatch.delitem(sys.modules, "station.cards.pcsc", raising=False)
    with pytest.raises(CardReaderError, match=r"pip install 'station\[pcsc\]'"):
        build_card_reader(CardReaderConfig(name="front", driver="pcsc"))


def test_the_example_configs_commented_card_reader_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "station.example.toml"
    keys = ("[[card_reader]]", "driver =", "name =", "device =", "evse =")
    lines = [
        line[2:] if line.startswith("# ") and line[2:].startswith(keys) else line
        for line in example.read_text().splitlines()
    ]
    (tmp_path / "station.toml").write_text("\n".join(lines))
    config = load_config(tmp_path / "station.toml")
    assert config.card_readers == (CardReaderConfig(name="front", driver="pcsc", device="ACR122U", evse=0),)
    assert load_config(example).card_readers == ()
