"""The core with several EVSEs (issue 17 item 3): each EVSE has its own phase, transaction, meter health and
availability; one silent meter faults only its own EVSE."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.core.model import (
    AvailabilityChanged,
    ConnectorStatus,
    Layout,
    MeterLinkChanged,
    MeterStamp,
    MeterStarted,
    MeterStopped,
    Phase,
    RecordTransactionEnded,
    RecordTransactionStarted,
    ReportStatus,
    SignedMeterRecord,
    StartMeterTransaction,
    StartRequested,
    StationAccepted,
    StopReason,
    StopRequested,
)
from station.core.station import ChargingStation, InvalidTransition

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
RECORD = SignedMeterRecord("OCMF|{}|{}", verified=True)


def station_of(layout: Layout) -> ChargingStation:
    station = ChargingStation(layout)
    station.handle(StationAccepted())
    return station


def test_layout_numbers_connectors_over_the_evses_in_order() -> None:
    layout = Layout(((1, (1,)), (2, (1, 2)), (3, (1,))))
    assert layout.numbered() == [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 3, 1)]
    assert layout.number_of(2, 2) == 3 and layout.locate(3) == (2, 2)
    assert layout.locate(0) is None and layout.locate(5) is None
    with pytest.raises(ValueError, match="EVSE ids must be"):
        Layout(((1, (1,)), (3, (1,))))
    with pytest.raises(ValueError, match="connector ids"):
        Layout(((1, (2,)),))


def test_two_evses_charge_at_once_each_with_its_own_transaction() -> None:
    station = station_of(Layout.one_connector_each(2))
    a = station.handle(StartRequested(1, "A", T0, "tx-a"))
    b = station.handle(StartRequested(2, "B", T0, "tx-b"))
    assert a.accepted and b.accepted
    assert a.commands[0] == StartMeterTransaction(1, a.transaction)  # type: ignore[arg-type]
    assert b.commands[0] == StartMeterTransaction(2, b.transaction)  # type: ignore[arg-type]
    assert not station.handle(StartRequested(1, "C", T0, "tx-c")).accepted  # EVSE 1 is busy
    stamp = MeterStamp("smartme", "SN-2", "1.0", "3059AA")
    started = station.handle(MeterStarted("tx-b", 10, T0, meter=stamp))
    assert isinstance(started.commands[0], RecordTransactionStarted)
    assert started.commands[0].transaction.meter == stamp and started.commands[0].transaction.evse_id == 2
    station.handle(MeterStarted("tx-a", 20, T0))
    station.handle(StopRequested("tx-b", StopReason.REMOTE, T0))
    ended = station.handle(MeterStopped("tx-b", 30, T0, (RECORD,)))
    assert isinstance(ended.commands[0], RecordTransactionEnded)
    assert ended.commands[0].transaction.meter == stamp  # the stamp of the start is kept
    assert ended.commands[1] == ReportStatus(2, ConnectorStatus.AVAILABLE)
    assert station.evses[1].phase is Phase.CHARGING and station.evses[2].phase is Phase.AVAILABLE


def test_one_silent_meter_faults_only_its_own_evse() -> None:
    """Issue 17 item 3: one dead meter must not take the other EVSEs out of service."""
    station = station_of(Layout.one_connector_each(2))
    station.handle(StartRequested(2, "B", T0, "tx-b"))
    station.handle(MeterStarted("tx-b", 10, T0))
    out = station.handle(MeterLinkChanged(1, False, "no answer"))
    assert out.commands == (ReportStatus(1, ConnectorStatus.FAULTED, "PowerMeterFailure", "no answer"),)
    assert station.status_of(2) is ConnectorStatus.CHARGING
    assert not station.handle(StartRequested(1, "A", T0, "tx-a")).accepted
    assert station.first_available() is None  # EVSE 1 faulted, EVSE 2 busy
    station.handle(StopRequested("tx-b", StopReason.REMOTE, T0))
    station.handle(MeterStopped("tx-b", 30, T0, (RECORD,)))
    assert station.first_available() == (2, 1)


def test_a_start_without_an_evse_goes_to_the_first_available() -> None:
    station = station_of(Layout.one_connector_each(3))
    station.handle(AvailabilityChanged(1, False))
    assert station.first_available() == (2, 1)


def test_availability_for_the_station_an_evse_or_one_connector() -> None:
    """2.0.1 G03/G04 and 1.6 §5.2: no EVSE is the whole station; an EVSE is all its connectors."""
    station = station_of(Layout(((1, (1, 2)), (2, (1,)))))
    station.handle(StartRequested(2, "B", T0, "tx-b"))
    out = station.handle(AvailabilityChanged(0, False))
    assert out.reason == "scheduled"  # EVSE 2 is busy: its change waits for the end
    assert station.status_of(1, 1) is ConnectorStatus.UNAVAILABLE
    assert station.status_of(1, 2) is ConnectorStatus.UNAVAILABLE
    assert station.status_of(2) is ConnectorStatus.PREPARING
    station.handle(AvailabilityChanged(1, True, connector_id=2))
    assert (
        station.status_of(1, 2) is ConnectorStatus.AVAILABLE and station.status_of(1, 1) is ConnectorStatus.UNAVAILABLE
    )
    assert not station.handle(AvailabilityChanged(1, True, connector_id=3)).accepted
    assert not station.handle(AvailabilityChanged(3, True)).accepted


def test_the_other_connectors_of_a_busy_evse_are_unavailable() -> None:
    """One meter per EVSE: while it meters one connector, the EVSE's other connectors cannot charge."""
    station = station_of(Layout(((1, (1, 2)),)))
    out = station.handle(StartRequested(1, "A", T0, "tx", connector_id=2))
    assert ReportStatus(1, ConnectorStatus.UNAVAILABLE, connector_id=1) in out.commands
    assert ReportStatus(1, ConnectorStatus.PREPARING, connector_id=2) in out.commands
    assert not station.handle(StartRequested(1, "B", T0, "tx2", connector_id=1)).accepted


EVENT_KINDS = st.sampled_from(["start", "started", "stop", "stopped", "link_down", "link_up"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2]), EVENT_KINDS), max_size=40))
def test_random_events_on_two_evses_never_cross(events: list[tuple[int, str]]) -> None:
    """Whatever arrives on either EVSE, each keeps its own coherent state, and a transaction is only ever on the
    EVSE it started on."""
    station = station_of(Layout.one_connector_each(2))
    home: dict[str, int] = {}
    for n, (evse_id, kind) in enumerate(events):
        evse = station.evses[evse_id]
        ref = evse.transaction.ref if evse.transaction else "none"
        match kind:
            case "start":
                event: object = StartRequested(evse_id, "T", T0, f"tx{n}")
            case "started":
                event = MeterStarted(ref, 1, T0)
            case "stop":
                event = StopRequested(ref, StopReason.REMOTE, T0)
            case "stopped":
                event = MeterStopped(ref, 2, T0, (RECORD,))
            case "link_down":
                event = MeterLinkChanged(evse_id, False, "x")
            case _:
                event = MeterLinkChanged(evse_id, True)
        try:
            out = station.handle(event)  # type: ignore[arg-type]
        except InvalidTransition:
            continue
        if out.transaction is not None:
            assert home.setdefault(out.transaction.ref, out.transaction.evse_id) == out.transaction.evse_id
        for other in station.evses.values():
            assert (other.phase is Phase.AVAILABLE) == (other.transaction is None)
            if other.transaction is not None:
                assert other.transaction.evse_id == other.id
            faulted = station.status_of(other.id) is ConnectorStatus.FAULTED
            assert faulted == (not other.meter_link_up)
