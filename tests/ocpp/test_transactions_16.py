"""1.6 transactions to the letter, against the real WebSocket CSMS: RemoteStartTransaction on connector 0, an idTag
the CSMS does not accept in StartTransaction.conf, the sampled values in StopTransaction.transactionData, and no
head-of-line blocking in the outbox."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from station.app import running_station
from station.config import parse_config
from station.demo.csms import CsmsBehaviour, LocalCsms
from station.meter import ocmf

STATION = "CP-TX16"


def config_for(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "power_w": 36000, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


async def test_remote_start_on_connector_0_is_rejected(tmp_path: Path, csms: LocalCsms) -> None:
    """§6.33 RemoteStartTransaction.req: "connectorId SHALL be > 0". Connector 0 is the Charge Point itself: Rejected,
    and nothing charges."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        assert await csms.remote_start(STATION, "TAG-0", connector_id=0) == "Rejected"
        assert station.runtime.core.running_transactions() == []
        assert csms.messages("StartTransaction") == []
        # Without a connectorId the station picks its connector.
        assert await csms.remote_start(STATION, "TAG-NONE", connector_id=None) == "Accepted"
        start, _ = await csms.wait_session_started(STATION)
        assert start.payload["connectorId"] == 1


async def test_an_invalid_id_stops_the_transaction_at_once(tmp_path: Path) -> None:
    """§9.1.24 StopTransactionOnInvalidId and §4.8 (errata §3.17): a StartTransaction.conf whose idTagInfo is not
    Accepted stops the transaction "normally ... The Reason field ... should be set to DeAuthorized" when the key is
    true (its default). Found with CitrineOS (item 21): it answers Invalid with transactionId 0, and the station went
    on charging and sent MeterValues with transactionId 0."""
    behaviour = CsmsBehaviour(id_status="Invalid", refused_transaction_id=0)
    csms = await LocalCsms(behaviour, subprotocols=("ocpp1.6",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
            assert await csms.change_configuration(STATION, "MeterValueSampleInterval", "1") == "Accepted"
            assert await csms.remote_start(STATION, "TAG-STOLEN") == "Accepted"
            start = await csms.wait_for("StartTransaction")
            stop = await csms.wait_for("StopTransaction", timeout=20)
            assert stop.payload["reason"] == "DeAuthorized" and stop.payload["transactionId"] == 0
            assert stop.payload["idTag"] == "TAG-STOLEN"
            await station.runtime.idle()
            await csms.wait_for(
                "StatusNotification", lambda p: p["status"] == "Available", after=csms.received.index(stop)
            )
            assert station.runtime.core.running_transactions() == []
            # No periodic MeterValues for the refused transaction after its answer (the answer stops it at once;
            # a reading the meter took before may have been queued already).
            later = [m for m in csms.messages("MeterValues") if csms.received.index(m) > csms.received.index(start) + 2]
            assert later == [], later
            assert station.runtime.authorizer is not None
            assert station.runtime.authorizer.local_status("TAG-STOLEN") == "Invalid"  # the answer is remembered
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_stop_transaction_carries_the_sampled_values(tmp_path: Path, csms: LocalCsms) -> None:
    """§9.1.27 StopTxnSampledData: "Sampled measurands to be included in the TransactionData element of
    StopTransaction.req PDU, every MeterValueSampleInterval seconds from the start of the charging session"
    (§3.16.1), beside the meter's signed record (OCA application note §3.1.4)."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        measurands = "Energy.Active.Import.Register,Power.Active.Import,Voltage"
        assert await csms.change_configuration(STATION, "StopTxnSampledData", measurands) == "Accepted"
        assert await csms.change_configuration(STATION, "MeterValueSampleInterval", "1") == "Accepted"
        assert await csms.remote_start(STATION, "TAG-SAMPLES") == "Accepted"
        _, tx_id = await csms.wait_session_started(STATION)
        first = await csms.wait_for("MeterValues", lambda p: p.get("transactionId") == int(tx_id), timeout=10)
        await csms.wait_for("MeterValues", after=csms.received.index(first) + 1, timeout=10)
        assert await csms.remote_stop(STATION, int(tx_id)) == "Accepted"
        stop = await csms.wait_session_ended(STATION)
        await station.runtime.idle()
    data = stop.payload["transactionData"]
    periodic = [mv for mv in data if mv["sampledValue"][0]["context"] == "Sample.Periodic"]
    assert len(periodic) >= 2 and data[-1] is not periodic[-1]  # the samples, then the signed end
    for mv in periodic:
        got = [(s["measurand"], s.get("phase")) for s in mv["sampledValue"]]
        assert got == [
            ("Energy.Active.Import.Register", None),
            ("Power.Active.Import", None),
            ("Voltage", "L1-N"),
            ("Voltage", "L2-N"),
            ("Voltage", "L3-N"),
        ]
        assert all("format" not in s for s in mv["sampledValue"])  # unsigned
    energies = [int(mv["sampledValue"][0]["value"]) for mv in periodic]
    assert energies == sorted(energies) and energies[-1] <= stop.payload["meterStop"]
    [signed] = [s for s in data[-1]["sampledValue"] if s.get("format") == "SignedData"]
    record = ocmf.parse(base64.b64decode(json.loads(signed["value"])["signedMeterData"]).decode())
    assert signed["context"] == "Transaction.End" and record.end is not None


async def test_a_refused_security_event_holds_no_transaction_message_back(tmp_path: Path) -> None:
    """1.6 §3.7: "new messages that are not transaction-related MAY be delivered immediately"; transaction messages
    keep their chronological order among themselves and "SHALL wait until the queue has been emptied" of transaction
    messages only. Found with CitrineOS (item 20): a SecurityEventNotification it answered with InternalError held
    StartTransaction back by 59 s (the CALLERROR retry waits TransactionMessageRetryInterval x attempts)."""
    behaviour = CsmsBehaviour(call_errors={"SecurityEventNotification": 100})
    csms = await LocalCsms(behaviour, subprotocols=("ocpp1.6",)).start()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
            await csms.wait_for("SecurityEventNotification")  # StartupOfTheDevice, refused; its retry waits 10 s
            await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
            assert await csms.remote_start(STATION, "TAG-LANE") == "Accepted"
            start, tx_id = await csms.wait_session_started(STATION, timeout=5)
            assert await csms.remote_stop(STATION, int(tx_id)) == "Accepted"
            stop = await csms.wait_session_ended(STATION, timeout=5)
            assert csms.received.index(start) < csms.received.index(stop)
            assert station.store.outbox_depth("security_event") >= 1  # still waiting for its retry
    finally:
        await csms.stop()
