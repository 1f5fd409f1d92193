"""The soak's verdict itself, on hand-made CSMS views: two meters on one line, and what would count as a record of
one meter arriving on the other EVSE's transaction (either OCPP version), sent with the other meter's key, lost, or
duplicated. A soak whose comparison could not fail would prove nothing."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from station.demo.csms import Received
from station.meter import ocmf
from station.meter.sim.base import SimulatedMeter, ocmf_reading, ocmf_time
from station.meter.sim.server import build_simulator
from station.ocpp.signed_value import oca_public_key
from tests.chaos.soak import STATION, EvseReport, Soak, models_of

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
_ids = itertools.count(1)


def sign(sim: SimulatedMeter, number: int, tag: str) -> str:
    """A record as `sim` signs it, written to its ledger as the simulator does at the moment of signing."""
    tm = ocmf_time(NOW)
    payload = (
        f'{{"FV":"1.0","PG":"T{number}","MS":"{sim.mem.serial}","RD":[{ocmf_reading(tm, "B", 0)},'
        f"{ocmf_reading(tm, 'E', 10 * number)}]}}"
    )
    record = ocmf.sign_payload(payload, sim._key)
    sim.append_ledger({"number": number, "begin_wh": 0, "meta": {"ID": tag}}, record, 10 * number)
    return record


class View:
    """What a CSMS received, message by message, in either OCPP version."""

    def __init__(self, soak: Soak, version: str) -> None:
        self.soak = soak
        self.version = version

    def add(self, action: str, payload: dict[str, Any]) -> Received:
        message = Received(STATION, action, payload, f"m{next(_ids)}", NOW)
        self.soak.csms.received.append(message)
        return message

    def start(self, evse_id: int, tag: str) -> str:
        if self.version == "1.6":
            message = self.add("StartTransaction", {"connectorId": evse_id, "idTag": tag, "meterStart": 0})
            transaction_id = 1000 + next(_ids)
            self.soak.csms.transaction_by_message_id[message.unique_id] = transaction_id
            return str(transaction_id)
        transaction_id = f"tx-{next(_ids)}"
        self.add(
            "TransactionEvent",
            {
                "eventType": "Started",
                "seqNo": 0,
                "transactionInfo": {"transactionId": transaction_id},
                "evse": {"id": evse_id, "connectorId": 1},
                "idToken": {"idToken": tag, "type": "Central"},
            },
        )
        return transaction_id

    def end(self, transaction_id: str, record: str, key_hex: str) -> None:
        envelope = {
            "signedMeterData": base64.b64encode(record.encode()).decode(),
            "encodingMethod": "OCMF",
            "publicKey": oca_public_key(key_hex),
        }
        if self.version == "1.6":
            sampled = {"value": json.dumps(envelope), "format": "SignedData", "context": "Transaction.End"}
            data = [{"timestamp": NOW.isoformat(), "sampledValue": [sampled]}]
            self.add(
                "StopTransaction", {"transactionId": int(transaction_id), "meterStop": 10, "transactionData": data}
            )
            return
        sampled = {"value": 0.01, "context": "Transaction.End", "signedMeterValue": envelope}
        self.add(
            "TransactionEvent",
            {
                "eventType": "Ended",
                "seqNo": 1,
                "transactionInfo": {"transactionId": transaction_id},
                "meterValue": [{"timestamp": NOW.isoformat(), "sampledValue": [sampled]}],
            },
        )

    def session(self, evse_id: int, record: str, key_hex: str, tag: str) -> None:
        self.end(self.start(evse_id, tag), record, key_hex)


def twin(tmp_path: Path, version: str) -> tuple[Soak, View]:
    soak = Soak(tmp_path, 1, 2, ocpp=version, model="smartme,iskra-wm3m4c", evses=2)
    for n, model in enumerate(soak.models, start=1):
        soak.sims[n] = build_simulator(model, state=None, ledger=soak.ledgers[n], device_id=n)
        soak.report.per_evse[n] = EvseReport(model, n)
    return soak, View(soak, version)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_each_record_on_its_own_evse_passes(tmp_path: Path, version: str) -> None:
    soak, view = twin(tmp_path, version)
    one, two = soak.sims[1], soak.sims[2]
    first, second = sign(one, 1, "TAG-A"), sign(two, 1, "TAG-B")
    view.session(1, first, one.public_key_hex, "TAG-A")
    view.session(2, second, two.public_key_hex, "TAG-B")
    soak.compare()
    report = soak.report
    assert report.ok, report.text()
    assert (report.signed, report.delivered, report.misattributed) == (2, 2, 0)
    assert [(e.signed, e.delivered) for e in report.per_evse.values()] == [(1, 1), (1, 1)]
    assert "EVSE 2 (iskra-wm3m4c, device id 2)" in report.text()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_record_of_meter_2_on_a_transaction_of_evse_1_fails(tmp_path: Path, version: str) -> None:
    soak, view = twin(tmp_path, version)
    two = soak.sims[2]
    view.session(1, sign(two, 1, "TAG-B"), two.public_key_hex, "TAG-B")  # meter 2's record, EVSE 1's transaction
    soak.compare()
    report = soak.report
    assert not report.ok
    assert report.per_evse[2].misattributed == 1 and report.per_evse[1].misattributed == 0
    assert report.lost == 0 and report.delivered == 1  # delivered, once: on the wrong EVSE
    assert any("misattributed: EVSE 2 T1" in p and "on EVSE(s) 1" in p for p in report.problems), report.problems


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_record_sent_with_the_other_meters_key_fails(tmp_path: Path, version: str) -> None:
    soak, view = twin(tmp_path, version)
    one, two = soak.sims[1], soak.sims[2]
    view.session(1, sign(one, 1, "TAG-A"), two.public_key_hex, "TAG-A")
    soak.compare()
    assert soak.report.per_evse[1].misattributed == 1 and not soak.report.ok
    assert any("another meter's key" in p for p in soak.report.problems)


def test_lost_and_duplicated_are_counted_per_evse(tmp_path: Path) -> None:
    soak, view = twin(tmp_path, "2.0.1")
    one, two = soak.sims[1], soak.sims[2]
    sign(one, 1, "TAG-A")  # signed, never delivered
    record = sign(two, 1, "TAG-B")
    transaction_id = view.start(2, "TAG-B")
    view.end(transaction_id, record, two.public_key_hex)
    view.end(transaction_id, record, two.public_key_hex)  # again, under another message id
    soak.compare()
    report = soak.report
    assert (report.per_evse[1].lost, report.per_evse[1].duplicated) == (1, 0)
    assert (report.per_evse[2].lost, report.per_evse[2].duplicated) == (0, 1)
    assert (report.lost, report.duplicated) == (1, 1) and not report.ok


def test_a_transaction_naming_two_evses_fails(tmp_path: Path) -> None:
    soak, view = twin(tmp_path, "2.0.1")
    one = soak.sims[1]
    transaction_id = view.start(1, "TAG-A")
    view.add(
        "TransactionEvent",
        {"eventType": "Updated", "seqNo": 1, "transactionInfo": {"transactionId": transaction_id}, "evse": {"id": 2}},
    )
    view.end(transaction_id, sign(one, 1, "TAG-A"), one.public_key_hex)
    soak.compare()
    assert soak.report.misattributed >= 1 and not soak.report.ok


def test_a_refused_copy_does_not_count_but_its_retry_under_the_same_id_does(tmp_path: Path) -> None:
    """The CSMS answered one copy with a CALLERROR (not processed) and took the station's retry under the same message
    id: the record was delivered once."""
    soak, view = twin(tmp_path, "2.0.1")
    one = soak.sims[1]
    view.session(1, sign(one, 1, "TAG-A"), one.public_key_hex, "TAG-A")
    first = soak.csms.received[-1]
    first.refused = True
    soak.csms.received.append(Received(STATION, first.action, first.payload, first.unique_id, NOW))
    soak.compare()
    assert soak.report.ok, soak.report.text()
    assert (soak.report.delivered, soak.report.repeated) == (1, 0)


def test_models_per_evse() -> None:
    assert models_of("smartme", 2) == ["smartme", "smartme"]
    assert models_of("smartme,iskra-wm3m4c", 2) == ["smartme", "iskra-wm3m4c"]
    with pytest.raises(ValueError, match="3 models for 2 EVSEs"):
        models_of("smartme,smartme,smartme", 2)
    with pytest.raises(ValueError, match="unknown nope"):
        models_of("nope", 1)
    with pytest.raises(ValueError, match="--evses: 3"):
        models_of("smartme", 3)
