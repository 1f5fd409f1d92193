"""The transaction core on its own: no sockets, no serial ports, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.core.model import (
    AvailabilityChanged,
    ConnectorStatus,
    Event,
    Layout,
    MeterLinkChanged,
    MeterStarted,
    MeterStartFailed,
    MeterStopped,
    Phase,
    RecordTransactionAborted,
    RecordTransactionEnded,
    RecordTransactionStarted,
    ReportStatus,
    SignedMeterRecord,
    StartMeterTransaction,
    StartRequested,
    StationAccepted,
    StopMeterTransaction,
    StopReason,
    StopRequested,
)
from station.core.station import TRANSITIONS, ChargingStation, InvalidTransition, transition_diagram

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RECORD = SignedMeterRecord("OCMF|{}|{}", verified=True)


def accepted_station() -> ChargingStation:
    station = ChargingStation(Layout.one_connector_each(1))
    station.handle(StationAccepted())
    return station


def test_a_whole_session_emits_the_commands_in_order() -> None:
    station = accepted_station()
    out = station.handle(StartRequested(1, "TAG", T0, "tx1", remote_start_id=7))
    assert out.accepted
    assert [type(c) for c in out.commands] == [StartMeterTransaction, ReportStatus]
    assert out.commands[1] == ReportStatus(1, ConnectorStatus.PREPARING)
    assert station.evses[1].phase is Phase.STARTING

    out = station.handle(MeterStarted("tx1", 1234, T0 + timedelta(seconds=1)))
    started = out.commands[0]
    assert isinstance(started, RecordTransactionStarted)
    assert started.transaction.meter_start_wh == 1234 and started.transaction.remote_start_id == 7
    assert out.commands[1] == ReportStatus(1, ConnectorStatus.CHARGING)

    out = station.handle(StopRequested("tx1", StopReason.REMOTE, T0 + timedelta(minutes=5)))
    assert isinstance(out.commands[0], StopMeterTransaction)
    assert out.commands[1] == ReportStatus(1, ConnectorStatus.FINISHING)

    out = station.handle(MeterStopped("tx1", 5678, T0 + timedelta(minutes=5, seconds=2), (RECORD,)))
    ended = out.commands[0]
    assert isinstance(ended, RecordTransactionEnded)
    tx = ended.transaction
    assert (tx.meter_start_wh, tx.meter_stop_wh, tx.stop_reason, tx.signed_records) == (
        1234,
        5678,
        StopReason.REMOTE,
        (RECORD,),
    )
    assert out.commands[1] == ReportStatus(1, ConnectorStatus.AVAILABLE)
    assert station.evses[1].transaction is None


def test_no_charging_before_the_csms_accepted_the_station() -> None:
    station = ChargingStation(Layout.one_connector_each(1))
    out = station.handle(StartRequested(1, "TAG", T0, "tx1"))
    assert not out.accepted and "not accepted" in out.reason
    assert station.evses[1].phase is Phase.AVAILABLE


def test_start_is_refused_while_busy_or_on_unknown_connector() -> None:
    station = accepted_station()
    station.handle(StartRequested(1, "TAG", T0, "tx1"))
    again = station.handle(StartRequested(1, "TAG2", T0, "tx2"))
    assert not again.accepted and again.commands == ()
    assert not station.handle(StartRequested(2, "TAG", T0, "tx3")).accepted


def test_meter_start_failure_frees_the_connector_and_tells_nobody_upstream() -> None:
    station = accepted_station()
    station.handle(StartRequested(1, "TAG", T0, "tx1"))
    out = station.handle(MeterStartFailed("tx1", "meter busy"))
    assert isinstance(out.commands[0], RecordTransactionAborted)
    assert station.evses[1].phase is Phase.AVAILABLE


def test_impossible_events_raise_named_errors() -> None:
    station = accepted_station()
    with pytest.raises(InvalidTransition):
        station.handle(StopRequested("nope", StopReason.REMOTE, T0))
    station.handle(StartRequested(1, "TAG", T0, "tx1"))
    with pytest.raises(InvalidTransition, match="StopRequested is not possible while starting"):
        station.handle(StopRequested("tx1", StopReason.REMOTE, T0))
    with pytest.raises(InvalidTransition):
        station.handle(MeterStopped("tx1", 1, T0, ()))


def test_a_second_stop_request_is_harmless() -> None:
    station = accepted_station()
    station.handle(StartRequested(1, "TAG", T0, "tx1"))
    station.handle(MeterStarted("tx1", 0, T0))
    station.handle(StopRequested("tx1", StopReason.REMOTE, T0))
    out = station.handle(StopRequested("tx1", StopReason.REMOTE, T0))
    assert out.accepted and out.commands == ()


def test_meter_link_down_faults_the_connector_and_recovers() -> None:
    station = accepted_station()
    out = station.handle(MeterLinkChanged(1, False, "no answer"))
    assert out.commands == (ReportStatus(1, ConnectorStatus.FAULTED, "PowerMeterFailure", "no answer"),)
    assert not station.handle(StartRequested(1, "TAG", T0, "tx1")).accepted
    out = station.handle(MeterLinkChanged(1, True))
    assert out.commands == (ReportStatus(1, ConnectorStatus.AVAILABLE),)


def test_restore_ends_an_open_transaction_on_the_meter() -> None:
    station = accepted_station()
    station.handle(StartRequested(1, "TAG", T0, "tx1"))
    tx = station.handle(MeterStarted("tx1", 10, T0)).transaction
    assert tx is not None
    fresh = ChargingStation(Layout.one_connector_each(1))
    commands = fresh.restore(tx)
    assert isinstance(commands[0], StopMeterTransaction)
    assert fresh.evses[1].phase is Phase.STOPPING
    out = fresh.handle(MeterStopped("tx1", 20, T0, (RECORD,)))
    assert isinstance(out.commands[0], RecordTransactionEnded)


def test_the_transition_table_prints_as_a_diagram() -> None:
    diagram = transition_diagram()
    assert diagram.startswith("stateDiagram-v2")
    assert diagram.count("-->") == sum(len(targets) for targets in TRANSITIONS.values())


EVENT_KINDS = st.sampled_from(["start", "started", "start_failed", "stop", "stopped", "link_down", "link_up"])


def make_event(kind: str, ref: str, new_ref: str) -> Event:
    match kind:
        case "start":
            return StartRequested(1, "TAG", T0, new_ref)
        case "started":
            return MeterStarted(ref, 1, T0)
        case "start_failed":
            return MeterStartFailed(ref, "x")
        case "stop":
            return StopRequested(ref, StopReason.REMOTE, T0)
        case "stopped":
            return MeterStopped(ref, 2, T0, (RECORD,))
        case "link_down":
            return MeterLinkChanged(1, False, "x")
    return MeterLinkChanged(1, True)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT_KINDS, max_size=30))
def test_random_event_sequences_keep_the_invariants(kinds: list[str]) -> None:
    """Whatever arrives, the core either applies it or raises InvalidTransition, and its state stays coherent."""
    station = accepted_station()
    for n, kind in enumerate(kinds):
        connector = station.evses[1]
        ref = connector.transaction.ref if connector.transaction else "none"
        event = make_event(kind, ref, f"tx{n}")
        try:
            station.handle(event)
        except InvalidTransition:
            pass
        connector = station.evses[1]
        assert (connector.phase is Phase.AVAILABLE) == (connector.transaction is None)
        expected = ConnectorStatus.FAULTED if not station.evses[1].meter_link_up else None
        if expected is not None:
            assert station.status_of(1) is expected


def test_inoperative_connector_is_unavailable_and_refuses_starts() -> None:
    station = accepted_station()
    outcome = station.handle(AvailabilityChanged(1, operative=False))
    assert outcome.accepted and outcome.reason == ""
    assert ReportStatus(1, ConnectorStatus.UNAVAILABLE) in outcome.commands
    refused = station.handle(StartRequested(1, "TAG", T0, "tx-a"))
    assert not refused.accepted and "inoperative" in refused.reason
    back = station.handle(AvailabilityChanged(1, operative=True))
    assert ReportStatus(1, ConnectorStatus.AVAILABLE) in back.commands
    assert station.handle(StartRequested(1, "TAG", T0, "tx-b")).accepted


def test_availability_change_during_a_transaction_is_scheduled_until_it_ends() -> None:
    station = accepted_station()
    station.handle(StartRequested(1, "TAG", T0, "tx-1"))
    station.handle(MeterStarted("tx-1", 100, T0))
    outcome = station.handle(AvailabilityChanged(0, operative=False))
    assert outcome.accepted and outcome.reason == "scheduled" and outcome.commands == ()
    assert station.status_of(1) is ConnectorStatus.CHARGING
    station.handle(StopRequested("tx-1", StopReason.REMOTE, T0))
    ended = station.handle(MeterStopped("tx-1", 200, T0, (RECORD,)))
    assert ReportStatus(1, ConnectorStatus.UNAVAILABLE) in ended.commands


def test_availability_of_an_unknown_connector_is_refused() -> None:
    assert not accepted_station().handle(AvailabilityChanged(7, operative=False)).accepted
