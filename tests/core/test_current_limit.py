"""Smart charging in the core (issue 19): the limit the composite schedule sets for an EVSE is offered to its charge
controller, and a limit below the car's minimum pauses the car (1.6 §3.13 / §7.7 SuspendedEVSE, 2.0.1 K01 and
ChargingStateEnumType SuspendedEVSE). The core takes a limit in every phase; it never starts or ends anything."""

from __future__ import annotations

from datetime import UTC, datetime

from station.core.model import (
    AllowPower,
    ConnectorStatus,
    CurrentLimitChanged,
    EvPilotChanged,
    EvRelayChanged,
    Layout,
    MeterStarted,
    OfferCurrent,
    Phase,
    Pilot,
    RecordChargingState,
    StartRequested,
    StationAccepted,
    StopMeterTransaction,
)
from station.core.station import ChargingStation, EvSide

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def charging(senses_plug: bool = True, stop_when_energy_stops: bool = False) -> ChargingStation:
    core = ChargingStation(Layout.one_connector_each(2), {1: EvSide(senses_plug=senses_plug, min_current_a=6.0)})
    core.handle(StationAccepted())
    core.handle(EvPilotChanged(1, Pilot.C))
    core.handle(StartRequested(1, "TAG", T0, "tx", stop_when_energy_stops=stop_when_energy_stops))
    core.handle(MeterStarted("tx", 100, T0))
    core.handle(EvRelayChanged(1, True))
    return core


def test_a_limit_is_offered_to_the_controller_and_charging_goes_on() -> None:
    """A limit at or above the car's minimum is offered (the PWM duty); the car keeps charging."""
    core = charging()
    assert core.status_of(1) is ConnectorStatus.CHARGING
    out = core.handle(CurrentLimitChanged(1, 10.0))
    assert out.accepted and out.commands == (OfferCurrent(1, 10.0),)
    assert core.status_of(1) is ConnectorStatus.CHARGING
    assert core.handle(CurrentLimitChanged(1, 10.0)).commands == ()  # unchanged: nothing to tell


def test_a_limit_below_the_minimum_suspends_the_car_and_lifting_it_resumes() -> None:
    """A TxProfile dropping to 0 A pauses the car: 1.6 StatusNotification SuspendedEVSE, 2.0.1 chargingState
    SuspendedEVSE (TransactionEvent Updated, ChargingStateChanged); a higher limit resumes it. The relay and the
    meter's transaction are left alone: the pause is the PWM's."""
    core = charging()
    out = core.handle(CurrentLimitChanged(1, 0.0))
    assert OfferCurrent(1, 0.0) in out.commands
    assert core.status_of(1) is ConnectorStatus.SUSPENDED_EVSE
    tx = core.evses[1].transaction
    assert tx is not None
    assert RecordChargingState(tx, "SuspendedEVSE") in out.commands
    assert not any(isinstance(c, AllowPower | StopMeterTransaction) for c in out.commands)
    assert core.evses[1].phase is Phase.CHARGING
    out = core.handle(CurrentLimitChanged(1, None))
    assert OfferCurrent(1, None) in out.commands
    assert RecordChargingState(tx, "Charging") in out.commands
    assert core.status_of(1) is ConnectorStatus.CHARGING


def test_a_pause_by_smart_charging_does_not_end_an_energy_transfer_transaction() -> None:
    """2.0.1 TxStopPoint EnergyTransfer (E06) ends the transaction when the car stops taking energy; a pause the
    station itself imposes (K01, SuspendedEVSE by a charging profile) is not that."""
    core = charging(stop_when_energy_stops=True)
    core.handle(CurrentLimitChanged(1, 0.0))
    tx = core.evses[1].transaction
    assert tx is not None and tx.stop_reason is None and core.evses[1].phase is Phase.CHARGING


def test_a_limit_before_any_transaction_is_kept_for_the_next_one() -> None:
    """A TxDefaultProfile applies to the next transaction: the limit set while Available holds when it starts."""
    core = ChargingStation(Layout.one_connector_each(1), {1: EvSide(senses_plug=True)})
    core.handle(StationAccepted())
    out = core.handle(CurrentLimitChanged(1, 3.0))
    assert out.commands == (OfferCurrent(1, 3.0),) and core.status_of(1) is ConnectorStatus.AVAILABLE
    core.handle(EvPilotChanged(1, Pilot.C))
    core.handle(StartRequested(1, "TAG", T0, "tx"))
    core.handle(MeterStarted("tx", 100, T0))
    core.handle(EvRelayChanged(1, True))
    assert core.status_of(1) is ConnectorStatus.SUSPENDED_EVSE


def test_bad_limits_and_unknown_evses_are_refused_and_change_nothing() -> None:
    core = charging()
    for amps in (-1.0, float("nan"), float("inf")):
        out = core.handle(CurrentLimitChanged(1, amps))
        assert not out.accepted and out.commands == ()
    assert not core.handle(CurrentLimitChanged(9, 10.0)).accepted
    assert core.evses[1].ev.limit_a is None and core.status_of(1) is ConnectorStatus.CHARGING


def test_an_evse_without_a_car_view_is_not_told() -> None:
    """driver = "meter-output": no current control, nothing to command (profiles are refused before this)."""
    core = ChargingStation(Layout.one_connector_each(1))
    core.handle(StationAccepted())
    assert core.handle(CurrentLimitChanged(1, 10.0)).commands == ()
