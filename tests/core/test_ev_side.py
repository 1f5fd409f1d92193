"""The core's EV side (issue 18): the car's plug and pilot, the relay with feedback, the lock, controller faults.
The meter's transaction starts before the relay closes and ends after it has opened, so the signed record covers
every Wh; power flows only while the meter's transaction runs."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from station.core.model import (
    AllowPower,
    ConnectionTimedOut,
    ConnectorStatus,
    EvFaultChanged,
    EvLockChanged,
    EvPilotChanged,
    EvRelayChanged,
    Fault,
    Layout,
    LockConnector,
    LockState,
    MeterStarted,
    MeterStopped,
    Phase,
    Pilot,
    RecordChargingState,
    RecordTransactionAborted,
    SignedMeterRecord,
    StartMeterTransaction,
    StartRequested,
    StationAccepted,
    StopMeterTransaction,
    StopReason,
    StopRequested,
    WatchConnection,
)
from station.core.station import ChargingStation, EvSide, InvalidTransition

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
RECORD = SignedMeterRecord("OCMF|{}|{}", verified=True)


def station(has_lock: bool = False) -> ChargingStation:
    core = ChargingStation(Layout.one_connector_each(1), {1: EvSide(senses_plug=True, has_lock=has_lock)})
    core.handle(StationAccepted())
    return core


def kinds(outcome: object) -> list[type]:
    return [type(c) for c in outcome.commands]  # type: ignore[attr-defined]


def test_cable_first_then_authorized_starts_the_meter_then_closes_the_relay() -> None:
    """Cable first (1.6 §3.6 / 2.0.1 E02): plug in -> Preparing (and the ConnectionTimeOut watch); the start
    starts the meter at once; the relay closes only once the meter confirmed and the car asks for power (C)."""
    core = station()
    out = core.handle(EvPilotChanged(1, Pilot.B))
    assert WatchConnection in kinds(out) and core.status_of(1) is ConnectorStatus.PREPARING
    out = core.handle(StartRequested(1, "TAG", T0, "tx"))
    assert StartMeterTransaction in kinds(out) and core.evses[1].phase is Phase.STARTING
    out = core.handle(MeterStarted("tx", 100, T0))
    assert AllowPower not in kinds(out)  # the car has not asked (state B)
    assert core.status_of(1) is ConnectorStatus.SUSPENDED_EV
    out = core.handle(EvPilotChanged(1, Pilot.C))
    assert AllowPower(1, True) in out.commands
    assert core.status_of(1) is ConnectorStatus.SUSPENDED_EVSE  # asked for, not yet confirmed by the feedback
    out = core.handle(EvRelayChanged(1, True))
    assert core.status_of(1) is ConnectorStatus.CHARGING
    assert RecordChargingState(core.evses[1].transaction, "Charging") in out.commands  # type: ignore[arg-type]


def test_the_stop_opens_the_relay_and_ends_the_meter_only_once_it_is_open() -> None:
    core = station()
    core.handle(EvPilotChanged(1, Pilot.C))
    core.handle(StartRequested(1, "TAG", T0, "tx"))
    core.handle(MeterStarted("tx", 100, T0))
    core.handle(EvRelayChanged(1, True))
    out = core.handle(StopRequested("tx", StopReason.REMOTE, T0))
    assert out.commands[0] == AllowPower(1, False) and StopMeterTransaction not in kinds(out)
    assert core.evses[1].phase is Phase.OPENING
    out = core.handle(EvRelayChanged(1, False))
    assert StopMeterTransaction in kinds(out) and core.evses[1].phase is Phase.STOPPING
    core.handle(MeterStopped("tx", 200, T0, (RECORD,)))
    assert core.status_of(1) is ConnectorStatus.FINISHING  # the cable is still in
    core.handle(EvPilotChanged(1, Pilot.A))
    assert core.status_of(1) is ConnectorStatus.AVAILABLE


def test_a_welded_relay_still_ends_the_meter() -> None:
    core = station()
    core.handle(EvPilotChanged(1, Pilot.C))
    core.handle(StartRequested(1, "TAG", T0, "tx"))
    core.handle(MeterStarted("tx", 100, T0))
    core.handle(EvRelayChanged(1, True))
    core.handle(StopRequested("tx", StopReason.REMOTE, T0))
    out = core.handle(EvFaultChanged(1, Fault.RELAY_WELDED, True, "relay stays closed"))
    assert StopMeterTransaction in kinds(out)
    assert core.status_of(1) is ConnectorStatus.FAULTED


def test_authorize_first_waits_for_the_car_and_drops_the_start_after_connection_timeout() -> None:
    """1.6 ConnectionTimeOut (§9.1.5) / 2.0.1 EVConnectionTimeOut: authorized, no plug in time -> the start is
    dropped; nothing reached the meter."""
    core = station()
    out = core.handle(StartRequested(1, "TAG", T0, "tx"))
    assert out.commands[0] == WatchConnection(1, "tx-tx") and core.evses[1].phase is Phase.WAITING
    assert core.status_of(1) is ConnectorStatus.PREPARING
    assert core.handle(ConnectionTimedOut(1, "stale")).reason == "stale watch"
    out = core.handle(ConnectionTimedOut(1, "tx-tx"))
    assert RecordTransactionAborted in kinds(out) and core.evses[1].phase is Phase.AVAILABLE
    # The same start with the car plugged in in time starts the meter.
    core.handle(StartRequested(1, "TAG", T0, "tx2"))
    out = core.handle(EvPilotChanged(1, Pilot.B))
    assert StartMeterTransaction in kinds(out)


def test_a_plug_never_authorized_goes_back_to_available() -> None:
    """1.6 ConnectionTimeOut: "The Charge Point SHALL go back to the original state, probably: Available"."""
    core = station()
    out = core.handle(EvPilotChanged(1, Pilot.B))
    watch = next(c for c in out.commands if isinstance(c, WatchConnection))
    core.handle(ConnectionTimedOut(1, watch.token))
    assert core.status_of(1) is ConnectorStatus.AVAILABLE
    core.handle(EvPilotChanged(1, Pilot.A))
    out = core.handle(EvPilotChanged(1, Pilot.B))  # a new plug-in gets a new watch
    assert core.status_of(1) is ConnectorStatus.PREPARING and WatchConnection in kinds(out)


def test_ev_side_disconnect_stops_with_ev_disconnected_when_so_configured() -> None:
    """1.6 StopTransactionOnEVSideDisconnect (§9.1.33) true: reason EVDisconnected; false: the transaction goes on."""
    for stop in (True, False):
        core = station()
        core.handle(EvPilotChanged(1, Pilot.C))
        core.handle(StartRequested(1, "TAG", T0, "tx"))
        core.handle(MeterStarted("tx", 100, T0))
        core.handle(EvRelayChanged(1, True))
        out = core.handle(EvPilotChanged(1, Pilot.A, stop_on_ev_disconnect=stop))
        assert AllowPower(1, False) in out.commands
        tx = core.evses[1].transaction
        assert tx is not None
        if stop:
            assert core.evses[1].phase is Phase.OPENING and tx.stop_reason is StopReason.EV_DISCONNECTED
        else:
            assert core.evses[1].phase is Phase.CHARGING and core.status_of(1) is ConnectorStatus.SUSPENDED_EV


def test_a_fault_opens_the_relay_ends_the_transaction_and_faults_the_connector() -> None:
    core = station()
    core.handle(EvPilotChanged(1, Pilot.C))
    core.handle(StartRequested(1, "TAG", T0, "tx"))
    core.handle(MeterStarted("tx", 100, T0))
    core.handle(EvRelayChanged(1, True))
    out = core.handle(EvFaultChanged(1, Fault.RCD, True, "30 mA"))
    assert AllowPower(1, False) in out.commands
    tx = core.evses[1].transaction
    assert tx is not None and tx.stop_reason is StopReason.GROUND_FAULT and tx.stop_reason.ocpp16 == "Other"
    report = [c for c in out.commands if getattr(c, "status", None) is ConnectorStatus.FAULTED]
    assert report and report[0].error_code == "GroundFailure"  # type: ignore[attr-defined]


def test_power_only_while_locked_where_there_is_a_lock() -> None:
    core = station(has_lock=True)
    core.handle(EvPilotChanged(1, Pilot.C))
    core.handle(StartRequested(1, "TAG", T0, "tx"))
    out = core.handle(MeterStarted("tx", 100, T0))
    assert LockConnector(1, True) in out.commands and AllowPower not in kinds(out)
    out = core.handle(EvLockChanged(1, LockState.LOCKED))
    assert AllowPower(1, True) in out.commands
    core.handle(EvRelayChanged(1, True))
    core.handle(StopRequested("tx", StopReason.LOCAL, T0))
    core.handle(EvRelayChanged(1, False))
    out = core.handle(MeterStopped("tx", 150, T0, (RECORD,)))
    assert LockConnector(1, False) in out.commands


EV_EVENTS = st.sampled_from(["A", "B", "C", "relay_on", "relay_off", "start", "started", "stop", "stopped", "rcd"])


@settings(max_examples=300, deadline=None)
@given(st.lists(EV_EVENTS, max_size=40))
def test_power_is_never_commanded_without_a_running_meter_transaction(kinds_: list[str]) -> None:
    """Whatever the car and the CSMS do, the relay is commanded closed only in CHARGING (the meter's transaction
    confirmed) with the car asking and no fault; and the meter is told to end only with the relay open."""
    core = station()
    for n, kind in enumerate(kinds_):
        evse = core.evses[1]
        ref = evse.transaction.ref if evse.transaction else "none"
        event: object = {
            "A": EvPilotChanged(1, Pilot.A),
            "B": EvPilotChanged(1, Pilot.B),
            "C": EvPilotChanged(1, Pilot.C),
            "relay_on": EvRelayChanged(1, True),
            "relay_off": EvRelayChanged(1, False),
            "start": StartRequested(1, "T", T0, f"tx{n}"),
            "started": MeterStarted(ref, 1, T0),
            "stop": StopRequested(ref, StopReason.REMOTE, T0),
            "stopped": MeterStopped(ref, 2, T0, (RECORD,)),
            "rcd": EvFaultChanged(1, Fault.RCD, n % 2 == 0),
        }[kind]
        try:
            out = core.handle(event)  # type: ignore[arg-type]
        except InvalidTransition:
            continue
        for command in out.commands:
            if command == AllowPower(1, True):
                assert evse.phase is Phase.CHARGING and not evse.ev.faults and evse.ev.pilot.wants_power
            if isinstance(command, StopMeterTransaction):
                assert not evse.ev.relay_closed or Fault.RELAY_WELDED in evse.ev.faults
        if evse.ev.power_on:
            assert evse.phase is Phase.CHARGING


def test_a_relay_that_closes_without_being_told_is_told_again_to_open() -> None:
    """No energy without a running meter transaction: a relay the controller closed on its own (a reboot, its own
    logic) is commanded open again at once."""
    core = station()
    core.handle(EvPilotChanged(1, Pilot.C))
    out = core.handle(EvRelayChanged(1, True))
    assert out.commands[0] == AllowPower(1, False) and out.reason == "relay closed without being told to"


def test_tx_start_point_authorized_starts_the_meter_before_the_plug_and_times_out() -> None:
    """2.0.1 TxStartPoint Authorized (E01/E03): the meter's transaction starts at the authorization; no car within
    EVConnectionTimeOut ends it with stoppedReason Timeout (E03.FR.05) and its (empty) signed record."""
    core = station()
    out = core.handle(StartRequested(1, "TAG", T0, "tx", start_on_authorization=True))
    assert StartMeterTransaction in kinds(out) and WatchConnection(1, "tx-tx") in out.commands
    assert core.handle(ConnectionTimedOut(1, "tx-tx")).reason == "stop after the start"  # still starting
    out = core.handle(MeterStarted("tx", 100, T0))
    assert StopMeterTransaction in kinds(out)
    tx = core.evses[1].transaction
    assert tx is not None and tx.stop_reason is StopReason.TIMEOUT and tx.stop_reason.ocpp16 == "Other"


def test_tx_stop_point_energy_transfer_ends_the_transaction_when_the_car_pauses() -> None:
    """2.0.1 TxStopPoint EnergyTransfer (E06): the transaction ends when the energy stops (the car pauses:
    StoppedByEV), after the relay has opened."""
    core = station()
    core.handle(EvPilotChanged(1, Pilot.C))
    core.handle(StartRequested(1, "TAG", T0, "tx", stop_when_energy_stops=True))
    core.handle(MeterStarted("tx", 100, T0))
    core.handle(EvRelayChanged(1, True))
    out = core.handle(EvPilotChanged(1, Pilot.B))
    assert AllowPower(1, False) in out.commands
    tx = core.evses[1].transaction
    assert tx is not None and tx.stop_reason is StopReason.STOPPED_BY_EV and core.evses[1].phase is Phase.OPENING


def test_unlock_on_ev_side_disconnect_follows_the_setting() -> None:
    """1.6 UnlockConnectorOnEVSideDisconnect (§9.1.32) / 2.0.1 UnlockOnEVSideDisconnect: the cable pulled from the
    car unlocks the station's socket only when it is true."""
    for unlock in (True, False):
        core = station(has_lock=True)
        core.handle(EvPilotChanged(1, Pilot.C))
        core.handle(StartRequested(1, "TAG", T0, "tx"))
        core.handle(MeterStarted("tx", 100, T0))
        core.handle(EvLockChanged(1, LockState.LOCKED))
        out = core.handle(EvPilotChanged(1, Pilot.A, stop_on_ev_disconnect=False, unlock_on_ev_disconnect=unlock))
        assert (LockConnector(1, False) in out.commands) is unlock


def test_a_car_plugged_into_a_running_transaction_is_cable_plugged_in() -> None:
    """2.0.1 TxStartPoint Authorized: the car comes after the start: TransactionEvent Updated with triggerReason
    CablePluggedIn; pulled out while the transaction goes on: EVCommunicationLost."""
    core = station()
    core.handle(StartRequested(1, "TAG", T0, "tx", start_on_authorization=True))
    core.handle(MeterStarted("tx", 100, T0))
    out = core.handle(EvPilotChanged(1, Pilot.B))
    [state] = [c for c in out.commands if isinstance(c, RecordChargingState)]
    assert (state.state, state.trigger) == ("SuspendedEV", "CablePluggedIn")
    out = core.handle(EvPilotChanged(1, Pilot.A, stop_on_ev_disconnect=False))
    [state] = [c for c in out.commands if isinstance(c, RecordChargingState)]
    assert (state.state, state.trigger) == ("Idle", "EVCommunicationLost")


def test_unplugged_while_the_meter_starts_ends_the_transaction_once_it_has() -> None:
    """Found by the EV soak: the car unplugged while the meter was still starting left a transaction running with
    no car. It now ends (EVDisconnected) as soon as the meter confirmed the start; plugged in again before that,
    it goes on."""
    for replug in (False, True):
        core = station()
        core.handle(EvPilotChanged(1, Pilot.B))
        core.handle(StartRequested(1, "TAG", T0, "tx"))
        core.handle(EvPilotChanged(1, Pilot.A))
        if replug:
            core.handle(EvPilotChanged(1, Pilot.B))
        out = core.handle(MeterStarted("tx", 100, T0))
        tx = core.evses[1].transaction
        assert tx is not None
        if replug:
            assert core.evses[1].phase is Phase.CHARGING and StopMeterTransaction not in kinds(out)
        else:
            assert StopMeterTransaction in kinds(out) and tx.stop_reason is StopReason.EV_DISCONNECTED
