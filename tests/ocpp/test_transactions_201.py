"""2.0.1 transactions to the letter, against the real WebSocket CSMS: the idToken as the CSMS gave it, an Ended
event without idToken after a Reset, TxEndedInterval samples, seqNo per transaction, StopTxOnInvalidId,
GetTransactionStatus and CustomerInformation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from station.app import running_station
from station.config import parse_config
from station.demo.csms import CsmsBehaviour, LocalCsms
from station.store import IdTagEntry

STATION = "CP-TX201"


def config_for(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": "2.0.1", "reconnect_min": 0.1, "reconnect_max": 1},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "power_w": 22000, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


def variable(component: str, name: str, value: str) -> dict[str, Any]:
    return {"component": {"name": component}, "variable": {"name": name}, "attribute_value": value}


async def started_csms(behaviour: CsmsBehaviour | None = None) -> LocalCsms:
    return await LocalCsms(behaviour, subprotocols=("ocpp2.0.1",)).start()


async def test_id_token_as_given_and_none_in_the_ended_event(tmp_path: Path) -> None:
    """E01.FR.10 / F02: the TransactionEvent carries the idToken the CSMS gave in RequestStartTransaction, type and
    additionalInfo included (an ISO14443 card stays ISO14443; it was sent as Central). TransactionEventRequest.idToken:
    "IdToken should not be present in the TransactionRequest when a transaction is ended by a
    RequestStopTransactionRequest or a ResetRequest"; TC_B_22_CS: after Reset Immediate the Ended event has
    triggerReason ResetCommand, chargingState EVConnected, stoppedReason ImmediateReset, no idToken."""
    csms = await started_csms()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))):
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            token = {
                "id_token": "04A2B3C4D5E6F7",
                "type": "ISO14443",
                "additional_info": [{"additional_id_token": "CONTRACT-1", "type": "ContractId"}],
            }
            assert await csms.request_start_token(STATION, token, remote_start_id=5) == "Accepted"
            started, _ = await csms.wait_session_started(STATION)
            assert started.payload["idToken"] == {
                "idToken": "04A2B3C4D5E6F7",
                "type": "ISO14443",
                "additionalInfo": [{"additionalIdToken": "CONTRACT-1", "type": "ContractId"}],
            }
            assert await csms.reset(STATION, "Immediate") == "Accepted"
            ended = (await csms.wait_session_ended(STATION)).payload
            assert "idToken" not in ended
            assert ended["triggerReason"] == "ResetCommand"
            assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
            assert ended["transactionInfo"]["chargingState"] == "EVConnected"
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_ended_event_holds_the_tx_ended_interval_samples(tmp_path: Path) -> None:
    """E06.FR.11 / E07.FR.08 with SampledDataCtrlr.TxEndedInterval (§2.7.5): the Ended event holds the
    TxEndedMeasurands taken every TxEndedInterval (Sample.Periodic), then the Transaction.End values (the signed
    record); nothing of it is sent during the transaction (TxUpdatedInterval 0)."""
    csms = await started_csms()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            results = await csms.set_variables(
                STATION,
                [
                    variable("SampledDataCtrlr", "TxEndedInterval", "1"),
                    variable("SampledDataCtrlr", "TxEndedMeasurands", "Energy.Active.Import.Register,Current.Import"),
                ],
            )
            assert [r["attribute_status"] for r in results] == ["Accepted", "Accepted"]
            assert await csms.request_start(STATION, "TAG-END") == "Accepted"
            _, tx_id = await csms.wait_session_started(STATION)
            await csms.wait_until(lambda: len(station.store.samples(tx_id, "ended")) >= 2, timeout=10)
            assert await csms.request_stop(STATION, tx_id) == "Accepted"
            ended = (await csms.wait_session_ended(STATION)).payload
    finally:
        await csms.stop()
    assert [m.payload["eventType"] for m in csms.messages("TransactionEvent")] == ["Started", "Ended"]
    *periodic, end = ended["meterValue"]
    assert len(periodic) >= 2
    for meter_value in periodic:
        sampled = meter_value["sampledValue"]
        assert {s["context"] for s in sampled} == {"Sample.Periodic"}
        assert [(s["measurand"], s.get("phase")) for s in sampled] == [
            ("Energy.Active.Import.Register", None),
            ("Current.Import", "L1"),
            ("Current.Import", "L2"),
            ("Current.Import", "L3"),
        ]
    [signed] = end["sampledValue"]
    assert signed["context"] == "Transaction.End" and "signedMeterValue" in signed
    assert csms.violations == []


async def test_seq_no_starts_at_0_for_each_transaction(tmp_path: Path) -> None:
    """Part 2 E §1.3.2.1 "Sequence number generation": "When a transaction starts, the Charging Station SHOULD set the
    seqNo ... to 0", then +1 per TransactionEventRequest (E01.FR.07, E06.FR.14): each transaction complete on its own.
    Found with CitrineOS (item 22): the second transaction started at 4."""
    csms = await started_csms()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            [result] = await csms.set_variables(STATION, [variable("SampledDataCtrlr", "TxUpdatedInterval", "1")])
            assert result["attribute_status"] == "Accepted"
            for n in range(2):
                assert await csms.request_start(STATION, f"TAG-SEQ-{n}", remote_start_id=n + 1) == "Accepted"
                _, tx_id = await csms.wait_session_started(STATION, after=len(csms.received))
                await csms.wait_for(
                    "TransactionEvent",
                    lambda p, t=tx_id: p["eventType"] == "Updated" and p["transactionInfo"]["transactionId"] == t,
                    timeout=10,
                )
                assert await csms.request_stop(STATION, tx_id) == "Accepted"
                await csms.wait_session_ended(STATION, after=len(csms.received) - 2)
                await csms.wait_until(lambda: station.store.outbox_depth() == 0)
    finally:
        await csms.stop()
    events = [m.payload for m in csms.messages("TransactionEvent")]
    transactions = list(dict.fromkeys(e["transactionInfo"]["transactionId"] for e in events))
    assert len(transactions) == 2
    for tx in transactions:
        seq = [e["seqNo"] for e in events if e["transactionInfo"]["transactionId"] == tx]
        assert seq == list(range(len(seq))), (tx, seq)


async def test_an_unknown_id_token_ends_the_transaction(tmp_path: Path) -> None:
    """E05.FR.10: the idTokenInfo of the TransactionEventResponse is not Accepted, TxStopPoint contains
    PowerPathClosed and StopTxOnInvalidId is true: the station ends the transaction with triggerReason Deauthorized
    and stoppedReason DeAuthorized (found with CitrineOS, item 21: an Unknown idToken kept charging)."""
    csms = await started_csms(CsmsBehaviour(id_status="Unknown"))
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))):
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            assert await csms.request_start(STATION, "TAG-WHO") == "Accepted"
            _, tx_id = await csms.wait_session_started(STATION)
            ended = (await csms.wait_session_ended(STATION, timeout=20)).payload
            assert ended["transactionInfo"]["transactionId"] == tx_id
            assert ended["triggerReason"] == "Deauthorized"
            assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_get_transaction_status(tmp_path: Path) -> None:
    """E14 (mandatory in the Core certification profile): E14.FR.01 unknown transaction: ongoingIndicator and
    messagesInQueue false; E14.FR.02/03 ongoingIndicator for a known one; E14.FR.04/05 messagesInQueue from the
    outbox; E14.FR.06-08 without a transactionId: no ongoingIndicator, messagesInQueue for any transaction."""
    csms = await started_csms()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            [result] = await csms.set_variables(
                STATION,
                [
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": "MessageAttemptInterval", "instance": "TransactionEvent"},
                        "attribute_value": "2",
                    }
                ],
            )
            assert result["attribute_status"] == "Accepted"
            assert await csms.get_transaction_status(STATION, "no-such-transaction") == {
                "messages_in_queue": False,
                "ongoing_indicator": False,
            }
            assert await csms.get_transaction_status(STATION, None) == {
                "messages_in_queue": False,
                "ongoing_indicator": None,
            }
            assert await csms.request_start(STATION, "TAG-STATUS") == "Accepted"
            _, tx_id = await csms.wait_session_started(STATION)
            await csms.wait_until(lambda: station.store.outbox_depth() == 0)
            assert await csms.get_transaction_status(STATION, tx_id) == {
                "messages_in_queue": False,
                "ongoing_indicator": True,
            }
            csms.behaviour.call_errors["TransactionEvent"] = 1  # the Ended event waits in the outbox for its retry
            assert await csms.request_stop(STATION, tx_id) == "Accepted"
            await csms.wait_until(lambda: bool(csms.refused))
            assert await csms.get_transaction_status(STATION, tx_id) == {
                "messages_in_queue": True,
                "ongoing_indicator": False,
            }
            assert (await csms.get_transaction_status(STATION, None))["messages_in_queue"] is True
            await csms.wait_until(lambda: station.store.outbox_depth() == 0, timeout=20)
            assert await csms.get_transaction_status(STATION, tx_id) == {
                "messages_in_queue": False,
                "ongoing_indicator": False,
            }
    finally:
        await csms.stop()
    assert csms.violations == []


async def test_customer_information(tmp_path: Path) -> None:
    """N09 / N10 (mandatory in Core): report sends NotifyCustomerInformation with what the station holds about the
    idToken (N09.FR.05), in parts of at most 512 characters with seqNo from 0 and tbc on all but the last; nothing
    held: one message saying so (N09.FR.06); clear removes the authorization cache entry and keeps the local list's
    (N10.FR.03/06); neither flag: Rejected (N09.FR.07); no customer reference: Invalid (N09.FR.09)."""
    csms = await started_csms()
    try:
        async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
            await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
            authorizer = station.runtime.authorizer
            assert authorizer is not None
            for n in range(4):  # transactions started with the card: their records are what the station holds
                assert await csms.request_start(STATION, "CARD-C", remote_start_id=n + 1) == "Accepted"
                _, tx_id = await csms.wait_session_started(STATION, after=len(csms.received))
                assert await csms.request_stop(STATION, tx_id) == "Accepted"
                await csms.wait_session_ended(STATION, after=len(csms.received) - 2)
                await station.runtime.idle()
            authorizer.remember(IdTagEntry("CARD-C", "Accepted"))  # the CSMS's answer, cached
            assert authorizer.update_list(1, [IdTagEntry("CARD-L", "Accepted")], full=True) == "Accepted"

            async def notifications(request_id: int) -> list[dict[str, Any]]:
                await csms.wait_for(
                    "NotifyCustomerInformation", lambda p: p["requestId"] == request_id and not p.get("tbc")
                )
                return [
                    m.payload
                    for m in csms.messages("NotifyCustomerInformation")
                    if m.payload["requestId"] == request_id
                ]

            token = {"id_token": "CARD-C", "type": "ISO14443"}
            assert await csms.customer_information(STATION, 1, report=True, clear=False, id_token=token) == "Accepted"
            parts = await notifications(1)
            assert len(parts) > 1 and [p["seqNo"] for p in parts] == list(range(len(parts)))
            assert [bool(p.get("tbc")) for p in parts] == [True] * (len(parts) - 1) + [False]
            assert all(len(p["data"]) <= 512 for p in parts)
            text = "\n".join(p["data"] for p in parts)
            assert "authorization cache: CARD-C Accepted" in text and text.count("transaction ") == 4

            assert await csms.customer_information(STATION, 2, report=False, clear=True, id_token=token) == "Accepted"
            [cleared] = await notifications(2)
            assert cleared["data"].startswith("Cleared: authorization cache")
            assert station.store.id_tag_entry("cache", "CARD-C") is None

            listed = {"id_token": "CARD-L", "type": "ISO14443"}
            assert await csms.customer_information(STATION, 3, report=True, clear=True, id_token=listed) == "Accepted"
            [kept] = await notifications(3)
            assert "local authorization list: CARD-L" in kept["data"]
            assert station.store.id_tag_entry("list", "CARD-L") is not None  # the CSMS's list stays

            nobody = {"id_token": "CARD-NOBODY", "type": "ISO14443"}
            assert await csms.customer_information(STATION, 4, report=True, clear=False, id_token=nobody) == "Accepted"
            [none] = await notifications(4)
            assert none["data"] == "No data found for this customer." and not none.get("tbc")

            assert await csms.customer_information(STATION, 5, report=False, clear=False, id_token=token) == "Rejected"
            assert await csms.customer_information(STATION, 6, report=True, clear=False, id_token=None) == "Invalid"
    finally:
        await csms.stop()
    assert csms.violations == []


def test_the_samples_for_the_end_message_are_bounded(tmp_path: Path) -> None:
    """E06.FR.12/13 (and 1.6 errata StopTransactionMaxMeterValues): a long transaction at a short interval must not
    grow the store or its end message without bound; intermediate values are dropped first, 1st, 3rd, 5th, ..., and
    the newest reading is kept. In the real SQLite store."""
    from station.store import MAX_SAMPLES_PER_TRANSACTION, Store

    store = Store(tmp_path / "s.db")
    try:
        for n in range(3 * MAX_SAMPLES_PER_TRANSACTION):
            store.add_sample("tx-long", "ended", {"at": "2026-12-01T10:00:00+00:00", "n": n})
        kept = [s["n"] for s in store.samples("tx-long", "ended")]
    finally:
        store.close()
    assert len(kept) <= MAX_SAMPLES_PER_TRANSACTION and kept == sorted(kept)
    assert kept[-1] == 3 * MAX_SAMPLES_PER_TRANSACTION - 1
    assert kept[0] > 0 and kept[1] - kept[0] > 1  # every other one dropped, not new values refused
