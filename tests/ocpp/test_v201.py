"""OCPP 2.0.1 over a real WebSocket, with the station's meter simulator on a real pty pair: version negotiation, the
signed session as TransactionEvents, the device model (Get/SetVariables, GetBaseReport) and the delivery rules."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.ocpp.signed_value import parse_oca_public_key
from station.store import IdTagEntry

STATION = "CP-201"


def config_for(tmp_path: Path, url: str, version: str = "2.0.1") -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {
                "signing_time": 0.1,
                "state": str(tmp_path / "m.json"),
                "ledger": str(tmp_path / "ledger.jsonl"),
            },
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


@pytest_asyncio.fixture
async def csms201() -> AsyncIterator[LocalCsms]:
    server = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    yield server
    await server.stop()
    assert server.violations == [], server.violations  # every station frame passed the official 2.0.1 schemas


def available(p: dict[str, Any]) -> bool:
    return p.get("connectorStatus") == "Available"


async def test_signed_session_as_transaction_events(tmp_path: Path, csms201: LocalCsms) -> None:
    csms = csms201
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        boot = await csms.wait_for("BootNotification")
        assert boot.payload["reason"] == "PowerUp" and "model" in boot.payload["chargingStation"]
        status = await csms.wait_for("StatusNotification", available)
        assert status.payload["evseId"] == 1 and status.payload["connectorId"] == 1

        assert await csms.request_start(STATION, "TAG-201", remote_start_id=77) == "Accepted"
        started, tx_id = await csms.wait_session_started(STATION)
        p = started.payload
        assert p["triggerReason"] == "RemoteStart" and p["seqNo"] == 0
        assert p["transactionInfo"]["remoteStartId"] == 77
        assert p["idToken"] == {"idToken": "TAG-201", "type": "Central"}
        assert p["evse"] == {"id": 1, "connectorId": 1}
        begin = p["meterValue"][0]["sampledValue"][0]
        assert begin["context"] == "Transaction.Begin" and begin["measurand"] == "Energy.Active.Import.Register"
        await csms.wait_for("StatusNotification", lambda q: q.get("connectorStatus") == "Occupied")

        assert await csms.request_stop(STATION, "no-such-transaction") == "Rejected"
        assert await csms.request_stop(STATION, tx_id) == "Accepted"
        ended = (await csms.wait_session_ended(STATION)).payload
        assert ended["transactionInfo"]["transactionId"] == tx_id
        assert ended["transactionInfo"]["stoppedReason"] == "Remote"
        assert ended["triggerReason"] == "RemoteStop" and ended["seqNo"] == 1
        (sample,) = ended["meterValue"][0]["sampledValue"]
        signed = sample["signedMeterValue"]
        assert signed["encodingMethod"] == "OCMF" and sample["context"] == "Transaction.End"
        record = base64.b64decode(signed["signedMeterData"]).decode()
        key = parse_oca_public_key(await csms.meter_public_key(STATION))
        assert ocmf.verify(record, key).valid
        assert parse_oca_public_key(signed["publicKey"]) == key  # PublicKeyWithSignedMeterValue OncePerTransaction
        parsed = ocmf.parse(record)
        assert parsed.end is not None and sample["value"] == pytest.approx(float(parsed.end.value) * 1000)
        ledger = [json.loads(line)["ocmf"] for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
        assert ledger == [record]
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)

        # The next transaction starts its own sequence at 0 (Part 2 E §1.3.2.1 "Sequence number generation").
        assert await csms.request_start(STATION, "TAG-2", remote_start_id=78) == "Accepted"
        started2, _ = await csms.wait_session_started(STATION, after=csms.received.index(started) + 1)
        assert started2.payload["seqNo"] == 0


async def test_device_model_get_set_and_base_report(tmp_path: Path, csms201: LocalCsms) -> None:
    csms = csms201
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", available)
        got = await csms.get_variables(
            STATION,
            [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NoSuchThing"}},
                {"component": {"name": "NoSuchCtrlr"}, "variable": {"name": "X"}},
                {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "SignReadings"}},
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "MessageAttempts", "instance": "TransactionEvent"},
                },
            ],
        )
        assert [g["attribute_status"] for g in got] == [
            "Accepted",
            "UnknownVariable",
            "UnknownComponent",
            "Accepted",
            "Accepted",
        ]
        assert got[3]["attribute_value"] == "true"

        results = await csms.set_variables(
            STATION,
            [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                    "attribute_value": "45",
                },
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                    "attribute_value": "-3",
                },
                {
                    "component": {"name": "TxCtrlr"},
                    "variable": {"name": "TxStartPoint"},
                    "attribute_value": "Authorized",
                },
                {
                    "component": {"name": "FiscalMetering", "evse": {"id": 1}},
                    "variable": {"name": "PublicKey"},
                    "attribute_value": "forged",
                },
            ],
        )
        assert [r["attribute_status"] for r in results] == ["Accepted", "Rejected", "Rejected", "Rejected"]
        # One setting, two names: the 1.6 key sees the value 2.0.1 set, and it is stored.
        assert station.settings.get("HeartbeatInterval") == "45"
        assert station.store.setting("ocpp16.HeartbeatInterval") == "45"

        assert await csms.get_base_report(STATION, 5) == "Accepted"
        last = await csms.wait_for("NotifyReport", lambda p: p["requestId"] == 5 and not p.get("tbc"))
        reports = [r for r in csms.messages("NotifyReport") if r.payload["requestId"] == 5]
        assert [r.payload["seqNo"] for r in reports] == list(range(len(reports))) and last is reports[-1]
        items = [item for r in reports for item in r.payload.get("reportData", [])]
        names = {(i["component"]["name"], i["variable"]["name"]) for i in items}
        for required in (
            ("OCPPCommCtrlr", "HeartbeatInterval"),
            ("TxCtrlr", "TxStartPoint"),
            ("SampledDataCtrlr", "TxEndedMeasurands"),
            ("AlignedDataCtrlr", "Interval"),
            ("AuthCtrlr", "AuthorizeRemoteStart"),
            ("DeviceDataCtrlr", "ItemsPerMessage"),
            ("ClockCtrlr", "TimeSource"),
            ("SecurityCtrlr", "SecurityProfile"),
            ("FiscalMetering", "PublicKey"),
        ):
            assert required in names, required
        assert await csms.get_base_report(STATION, 6, "SummaryInventory") == "NotSupported"


@pytest.mark.parametrize(
    ("csms_speaks", "station_offers", "expected"),
    [
        (("ocpp2.0.1",), "auto", "2.0.1"),
        (("ocpp1.6",), "auto", "1.6"),
        (("ocpp1.6", "ocpp2.0.1"), "2.0.1", "2.0.1"),
    ],
)
async def test_version_negotiation(
    tmp_path: Path, csms_speaks: tuple[str, ...], station_offers: str, expected: str
) -> None:
    csms = await LocalCsms(subprotocols=csms_speaks).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, station_offers))) as station:
            await csms.wait_connected(STATION)
            assert csms.version_of(STATION) == expected
            await csms.wait_for("BootNotification")
            await csms.wait_until(lambda: station.connection.state.booted == expected)
            assert station.connection.state.version == expected
    finally:
        await csms.stop()


async def test_a_csms_that_picks_no_version_is_refused(tmp_path: Path) -> None:
    csms = await LocalCsms(subprotocols=("ocpp1.6",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url, "2.0.1"))) as station:
            await csms.wait_until(lambda: "CSMS chose none" in station.connection.state.last_error, timeout=10)
            assert not station.connection.state.connected and csms.received == []
    finally:
        await csms.stop()


def test_a_signed_record_over_the_2500_limit_is_flagged_not_truncated() -> None:
    from station.core.model import SignedMeterRecord, StartSource, Transaction
    from station.ocpp.v201 import V201Adapter

    class Runtime:
        def meter_key(self, evse_id: int) -> str:
            return "3059"

    class Settings:
        def value(self, name: str) -> str:
            return "Never"

    adapter = V201Adapter.__new__(V201Adapter)
    adapter.runtime = Runtime()  # type: ignore[assignment]
    adapter.settings = Settings()  # type: ignore[assignment]
    big = 'OCMF|{"FV":"1.0","PG":"T1","XX":"' + "A" * 2000 + '","RD":[{"TX":"E","RV":1.5,"RU":"kWh"}]}|{"SD":"00"}'
    tx = Transaction("r", 1, "TAG", StartSource.REMOTE, datetime.now(UTC), meter_stop_wh=1500)
    sample = adapter._signed_sample(tx, SignedMeterRecord(big))
    assert "signed_meter_value" not in sample and sample["value"] == 1500.0
    assert "signedMeterValueOmitted" in sample["custom_data"]
    small = adapter._signed_sample(tx, SignedMeterRecord(big[:100] + '"}]}|{"SD":"00"}'))
    assert small["signed_meter_value"]["encodingMethod"] == "OCMF"


async def test_events_queued_while_offline_carry_the_offline_flag(tmp_path: Path) -> None:
    csms = await LocalCsms(subprotocols=("ocpp2.0.1",)).start()
    port = csms.port
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", available)
        assert station.runtime.authorizer is not None
        station.runtime.authorizer.update_list(1, [IdTagEntry("CARD-OFF", "Accepted")], full=True)
        await csms.stop()
        await csms.drop_connections()
        await csms.wait_until(lambda: not station.connection.state.connected)
        assert (await station.runtime.local_start(1, "CARD-OFF")).accepted
        await csms.wait_until(lambda: station.store.outbox_depth("transaction_started") == 1)
        csms.port = port
        await csms.start()
        await csms.wait_connected(STATION)
        started, tx_id = await csms.wait_session_started(STATION, timeout=30)
        assert started.payload["offline"] is True and started.payload["idToken"]["idToken"] == "CARD-OFF"
        assert await csms.request_stop(STATION, tx_id) == "Accepted"
        ended = await csms.wait_session_ended(STATION)
        assert "offline" not in ended.payload  # sent while connected
    await csms.stop()
    assert csms.violations == []
