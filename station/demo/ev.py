"""`station demo --ev`: one charging session told from the car's side, with a simulated car behind a simulated charge
controller on EVSE 1.

The car is plugged in (1.6 Preparing, 2.0.1 Occupied), a card is held to the station's reader (the controller's
simulated reader; the local CSMS accepts the Authorize), the meter starts its transaction, the car asks for power
and the relay closes (Charging; 2.0.1 TransactionEvent Updated, ChargingStateChanged), the car pauses (SuspendedEV),
resumes, and is unplugged: the relay opens, then the meter ends and signs the transaction (reason EVDisconnected, per
StopTransactionOnEVSideDisconnect / StopTxOnEVSideDisconnect, true by default). Every line about OCPP is printed as the
CSMS received it, when it received it; the signed record is verified with the key the meter published, as in
`station demo`.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.app import Station, running_station
from station.config import parse_config
from station.demo.csms import LocalCsms, Received
from station.demo.session import (
    STATION_ID,
    DemoResult,
    _result,
    _Session,
    _start_reading,
    demo_config,
)
from station.ev.interface import LockState
from station.ev.simulated import SimulatedController

CARD_UID = "04A2B3C4"  # the card the demo holds to the reader (an ISO 14443 UID, as a PC/SC reader reports it)
TOLD = ("StatusNotification", "Authorize", "StartTransaction", "StopTransaction", "TransactionEvent")


@dataclass
class EvStory:
    """What the CSMS saw of the car's session (`station demo --ev --json`: the "ev" object)."""

    card: str = CARD_UID
    authorize: str = ""  # the id the station sent in Authorize
    statuses: list[str] = field(default_factory=list)  # StatusNotification statuses of the connector, in order
    charging_states: list[str] = field(default_factory=list)  # 2.0.1: TransactionEvent chargingState, in order
    trigger_reasons: list[str] = field(default_factory=list)  # 2.0.1: "eventType triggerReason", in order
    stop_reason: str = ""  # 1.6 StopTransaction reason, 2.0.1 stoppedReason
    steps: list[dict[str, Any]] = field(default_factory=list)  # {"step": what the car did, "csms_saw": [...]}

    def as_json(self) -> dict[str, Any]:
        return {
            "card": self.card,
            "authorize": self.authorize,
            "statuses": list(self.statuses),
            "charging_states": list(self.charging_states),
            "trigger_reasons": list(self.trigger_reasons),
            "stop_reason": self.stop_reason,
            "steps": [dict(step) for step in self.steps],
        }


def ev_demo_json(result: DemoResult, story: EvStory) -> dict[str, Any]:
    """Today's one-EVSE object, plus "ev"."""
    return {**result.as_json(with_evse=False), "ev": story.as_json()}


def describe(received: Received) -> str:
    """One message as the CSMS saw it, in a line."""
    p = received.payload
    match received.action:
        case "StatusNotification":
            status = p.get("status") or p.get("connectorStatus")
            error = p.get("errorCode")
            return f"StatusNotification {status}" + (f" ({error})" if error and error != "NoError" else "")
        case "Authorize":
            token = p.get("idTag") or (p.get("idToken") or {}).get("idToken")
            return f"Authorize {token}"
        case "StartTransaction":
            return f"StartTransaction idTag={p.get('idTag')} meterStart={p.get('meterStart')} Wh"
        case "StopTransaction":
            return f"StopTransaction reason={p.get('reason', 'Local')} meterStop={p.get('meterStop')} Wh"
        case "TransactionEvent":
            info = p.get("transactionInfo") or {}
            extra = [f"{key}={info[key]}" for key in ("chargingState", "stoppedReason") if key in info]
            return " ".join(["TransactionEvent", str(p.get("eventType")), str(p.get("triggerReason")), *extra])
    return received.action


class _Narrator:
    """Prints each message the CSMS receives as it arrives, and keeps the story."""

    def __init__(self, story: EvStory, say: Callable[[str], None]) -> None:
        self.story = story
        self.say = say

    def step(self, text: str) -> None:
        self.story.steps.append({"step": text, "csms_saw": []})
        self.say(text)

    def heard(self, received: Received) -> None:
        if received.station_id != STATION_ID or received.action not in TOLD:
            return
        p = received.payload
        story = self.story
        if received.action == "StatusNotification":
            story.statuses.append(str(p.get("status") or p.get("connectorStatus")))
        elif received.action == "Authorize":
            story.authorize = str(p.get("idTag") or (p.get("idToken") or {}).get("idToken"))
        elif received.action == "TransactionEvent":
            info = p.get("transactionInfo") or {}
            story.trigger_reasons.append(f"{p.get('eventType')} {p.get('triggerReason')}")
            if "chargingState" in info:
                story.charging_states.append(str(info["chargingState"]))
        line = describe(received)
        if story.steps:
            story.steps[-1]["csms_saw"].append(line)
        self.say(f"  CSMS <- {line}")


def _status_is(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: (p.get("status") or p.get("connectorStatus")) in names


def _charging_state(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: (p.get("transactionInfo") or {}).get("chargingState") == name


async def run_ev_demo(
    *,
    seconds: float = 4.0,
    ocpp_version: str = "1.6",
    meter_model: str = "smartme",
    say: Callable[[str], None] = print,
) -> tuple[DemoResult, EvStory]:
    """Plug in, card, charge, pause, resume, unplug; the signed record verified with the meter's published key."""
    v201 = ocpp_version == "2.0.1"
    story = EvStory()
    narrator = _Narrator(story, say)
    with tempfile.TemporaryDirectory(prefix="station-demo-") as tmp:
        workdir = Path(tmp)
        csms = await LocalCsms().start()
        say(f"local CSMS listening on {csms.url}")
        raw = demo_config(workdir, csms.url, ocpp_version=ocpp_version, meter_model=meter_model, ev=True)
        config = parse_config(raw, "demo")
        try:
            async with running_station(config) as station:
                baudrate = config.bus_of(config.evses[0]).baudrate
                say(f"{meter_model} meter simulator on a virtual serial line at {baudrate} baud, RTU framing")
                say("a simulated charge controller with a car behind it and a connector lock on EVSE 1")
                await csms.wait_connected(STATION_ID)
                await csms.wait_for("StatusNotification", _status_is("Available"))
                say(f"station {STATION_ID} connected (OCPP {ocpp_version}), booted, connector 1 Available")
                csms.listeners.append(narrator.heard)
                session = await _story(station, csms, narrator, seconds=seconds, v201=v201)
                session.key_text = await csms.meter_public_key(STATION_ID, evse_id=1)
                await station.runtime.idle()
                csms.listeners.remove(narrator.heard)
        finally:
            await csms.stop()
    return _result(session, ocpp_version, meter_model), story


async def _story(station: Station, csms: LocalCsms, narrator: _Narrator, *, seconds: float, v201: bool) -> _Session:
    worker = station.runtime.controllers[1]
    car = worker.controller
    if not isinstance(car, SimulatedController):
        raise ValueError(f"the EV demo needs the simulated charge controller, not {car.name}")

    def mark() -> int:
        return len(csms.received)

    at = mark()
    narrator.step("the car is plugged in (control pilot A -> B)")
    car.plug()
    await csms.wait_for("StatusNotification", _status_is("Occupied" if v201 else "Preparing"), after=at)

    at = mark()
    narrator.step(f"card {CARD_UID} held to the station's reader")
    car.present_card(CARD_UID)
    await csms.wait_for("Authorize", after=at)
    start, transaction_id = await csms.wait_session_started(STATION_ID, after=at)
    if not v201:
        await csms.wait_for("StatusNotification", _status_is("SuspendedEV"), after=at)
    await csms.wait_until(lambda: worker.state.lock is LockState.LOCKED)  # locked once the meter's transaction runs
    narrator.say(
        f"  the meter started its transaction at {_start_reading(start.payload)} Wh, transactionId={transaction_id}; "
        "the connector is locked"
    )

    await _power(
        narrator, csms, car, "the car asks for power (pilot B -> C); the station closes the relay", v201, "Charging"
    )
    await _charge(station, narrator, seconds)
    await _power(narrator, csms, car, "the car pauses (pilot C -> B); the relay opens", v201, "SuspendedEV")
    await _charge(station, narrator, 1.0)
    await _power(narrator, csms, car, "the car resumes (pilot B -> C); the station closes the relay", v201, "Charging")
    await _charge(station, narrator, max(1.0, seconds / 2))

    at = mark()
    narrator.step("the cable is pulled out of the car (pilot C -> A): the relay opens, then the meter ends and signs")
    car.unplug()
    stop = await csms.wait_session_ended(STATION_ID, after=at)
    await csms.wait_for("StatusNotification", _status_is("Available"), after=at)
    payload = stop.payload
    # 1.6: a StopTransaction without a reason means Local (§7.43)
    stopped = (payload.get("transactionInfo") or {}).get("stoppedReason") if v201 else payload.get("reason", "Local")
    narrator.story.stop_reason = str(stopped or "")
    return _Session(1, transaction_id, start, stop)


async def _power(
    narrator: _Narrator, csms: LocalCsms, car: SimulatedController, text: str, v201: bool, state: str
) -> None:
    at = len(csms.received)
    narrator.step(text)
    if state == "Charging":
        car.ready()
    else:
        car.suspend()
    if v201:
        await csms.wait_for("TransactionEvent", _charging_state(state), after=at)
    else:
        await csms.wait_for("StatusNotification", _status_is(state), after=at)


async def _charge(station: Station, narrator: _Narrator, seconds: float) -> None:
    """What the meter reads meanwhile, about once a second."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        await asyncio.sleep(max(0.0, min(1.0, end - loop.time())))
        live = await station.meters[1].live_values()
        narrator.say(f"    meter: {live.power_w / 1000:.1f} kW, register {live.energy_import_wh} Wh")
        if loop.time() >= end:
            return
