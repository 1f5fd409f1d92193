"""The EV checks of the soak (`--ev`) themselves: a stop reason the schedule did not cause fails the run, on
hand-made CSMS views; the power watch, against a real simulated charge controller on its control socket, ties the
meter's load to the car and catches a relay closed while the meter has no transaction open. A check that could not
fail would prove nothing."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from station.core.model import StopReason
from station.ev.simulated import SimulatedController
from station.meter.sim.server import build_simulator
from tests.chaos.soak import EvseReport, Soak
from tests.chaos.test_soak_compare import View, sign


def ev_soak(tmp_path: Path, version: str) -> tuple[Soak, View]:
    soak = Soak(tmp_path, 1, 2, ocpp=version, ev=True)
    soak.sims[1] = build_simulator("smartme", state=None, ledger=soak.ledgers[1])
    soak.report.per_evse[1] = EvseReport("smartme", soak.sims[1].device_id)
    return soak, View(soak, version)


def ended(view: View, soak: Soak, tag: str, number: int, reason: str | None) -> None:
    """One transaction of `tag`, ended with `reason` as this OCPP version carries it (None: the key left out)."""
    sim = soak.sims[1]
    view.end(view.start(1, tag), sign(sim, number, tag), sim.public_key_hex)
    payload = soak.csms.received[-1].payload
    if reason is not None:
        if view.version == "1.6":
            payload["reason"] = reason
        else:
            payload["transactionInfo"]["stoppedReason"] = reason


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_stop_reasons_the_schedule_caused_pass(tmp_path: Path, version: str) -> None:
    soak, view = ev_soak(tmp_path, version)
    soak._reasons["5A000001"] = {StopReason.REMOTE, StopReason.EV_DISCONNECTED}
    soak._reasons["5A000002"] = {StopReason.GROUND_FAULT}  # 1.6 says Other for it
    soak._reasons["5A000003"] = {StopReason.LOCAL}
    ended(view, soak, "5A000001", 1, "EVDisconnected")
    ended(view, soak, "5A000002", 2, "Other" if version == "1.6" else "GroundFault")
    ended(view, soak, "5A000003", 3, None)  # absent: Local
    soak.compare()
    report = soak.report
    assert report.ok, report.text()
    assert report.wrong_reason == 0 and sum(report.ev_ends.values()) == 3
    assert "stop reasons the schedule did not cause: 0" in report.text()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_stop_reason_the_schedule_did_not_cause_fails(tmp_path: Path, version: str) -> None:
    soak, view = ev_soak(tmp_path, version)
    soak._reasons["5A000001"] = {StopReason.REMOTE}
    ended(view, soak, "5A000001", 1, "EVDisconnected")  # nobody unplugged the car
    ended(view, soak, "TAG-OTHER", 2, "Local")  # a transaction the soak did not start: only LEFTOVER_REASONS
    soak.compare()
    report = soak.report
    assert report.wrong_reason == 2 and not report.ok
    assert report.lost == 0 and report.duplicated == 0  # the records themselves are fine
    assert any("(5A000001) ended EVDisconnected" in p for p in report.problems), report.problems


async def test_the_power_watch_ties_the_load_and_catches_a_relay_closed_without_a_meter_transaction(
    tmp_path: Path,
) -> None:
    soak, _ = ev_soak(tmp_path, "1.6")
    sim = soak.sims[1]
    controller = SimulatedController("evse-1", control_socket=soak.cars[1].path)
    await controller.open(lambda event: None)

    async def watch(seconds: float) -> None:
        task = asyncio.create_task(soak.watch_power(1))
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        controller.plug()
        controller.ready()
        await controller.set_max_current(16)
        await controller.allow_power(True)  # the relay closes, the meter has no transaction: a station bug
        assert controller.relay_closed and controller.power_w > 0
        await watch(0.6)
        assert soak.report.power_without_meter == 1  # one stretch, counted once
        assert sim.load_w == controller.power_w  # the meter counts what the car draws
        assert not soak.report.ok and "power with no meter transaction" in soak.report.problems[0]

        soak.report.power_without_meter = 0
        sim.open_transaction({"ID": "5A000001"})  # the meter's transaction runs: the relay may be closed
        await watch(0.4)
        assert soak.report.power_without_meter == 0

        controller.suspend()  # the car pauses: nothing flows, nothing is counted
        await watch(0.3)
        assert sim.load_w == 0.0
    finally:
        await controller.close()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_car_unplugged_while_the_meter_starts_ends_its_transaction(tmp_path: Path, version: str) -> None:
    """StopTransactionOnEVSideDisconnect (1.6 §9.1.33) / StopTxOnEVSideDisconnect (2.0.1) true: the car is unplugged
    after the remote start was accepted, while the meter is still starting the transaction. The transaction, once
    started, must end by itself (EVDisconnected) with its record - or not start at all. The soak's own harness: the
    daemon as a process, the meter slow to answer so that the start takes a while."""
    soak = Soak(tmp_path, 1, 1, ocpp=version, ev=True)
    await soak.start()
    try:
        car, tag = soak.cars[1], "5A000001"
        await car.want(True)
        soak.sim.faults.latency = 0.1  # every meter answer takes 0.1 s: the start takes several
        mark = len(soak.csms.received)
        await soak.ev_remote_start(tag, 1, 0, mark)
        await car.want(False)  # the car leaves while the meter starts
        transaction_id = await soak.ev_started(tag, mark, 1)
        if transaction_id is None:
            return  # the start was dropped: nothing to end
        with contextlib.suppress(TimeoutError):
            await soak.csms.wait_until(lambda: transaction_id in [t for _, t in soak.ends(mark)], timeout=20)
        ends = [m for m, t in soak.ends(mark) if t == transaction_id]
        assert ends, f"transaction {transaction_id} still runs 20 s after its car was unplugged; logs in {tmp_path}"
        payload = ends[0].payload
        reason = payload.get("reason") or payload.get("transactionInfo", {}).get("stoppedReason")
        assert reason == "EVDisconnected"
    finally:
        await soak.close()
