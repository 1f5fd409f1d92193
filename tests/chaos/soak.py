"""The chaos soak: many charging sessions while a seeded random schedule breaks the CSMS link, the daemon and the
meters, then each meter's own ledger is compared with what the CSMS received.

Real at every boundary: the daemon is a `station run` process (so it can be SIGKILLed), the meter simulators serve
on one end of a real pty pair (the daemon opens the other), the CSMS is a WebSocket server on loopback. The promise
checked: every record a meter signed reaches the CSMS exactly once (a repeat under the same message id, which
OCPP's at-least-once delivery allows, is counted apart), in order, and verifies; the daemon never crashes; over
OCPP 2.0.1 also every TransactionEvent seqNo arrives. Either OCPP version, any simulated meter model.

With `--evses 2` two EVSEs share the one line, each with its own meter (its own device id, key and ledger): sessions
overlap (each starts on a random free EVSE, the stops come in whatever order the sessions draw), and the faults hit
either EVSE (one meter muted, busy, slow to sign or losing power; CRC errors on the shared line). Each meter's ledger
is then compared with what the CSMS received for THAT EVSE (1.6: the connectorId of the transaction's
StartTransaction; 2.0.1: the evse of its TransactionEvents): a record of meter 2 arriving on a transaction of EVSE 1,
or sent with another meter's key, is misattributed. `--model A,B` puts a different model on each EVSE.

With `--ev` each EVSE gets a simulated charge controller with a car behind it (`driver = "simulated"`, a control
socket in the work directory), driven as `station sim ev` drives it: sessions start cable first (plug, then a remote
start or a card) or authorize first (remote start, then plug), the car charges, sometimes pauses and resumes, and the
session ends by a remote stop, by the unplug (StopTransactionOnEVSideDisconnect: EVDisconnected), by the same card
(Local), or by a fault. EV-side faults join the schedule: the unplug while the stop is in flight, an RCD trip while
charging (the transaction ends with its record), the controller silent for a while; a SIGKILLed daemon takes the car
with it (the car lives in the daemon) and the soak puts it back plugged in as it was. The meters stay in the soak's
process (so that their faults can be injected): the soak ties each meter's load to what its car draws by polling the
car's state, and checks at every poll that the relay is never closed while the meter has no transaction open. Every
transaction's stop reason must be one the schedule caused.

    python -m tests.chaos.soak --sessions 2000 [--seed N] [--ocpp 1.6|2.0.1] [--model MODEL[,MODEL]] [--evses 1|2]
        [--ev] [--workdir DIR]

prints the seed first, so a failing run can be replayed with `--seed`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.core.model import StopReason
from station.demo.csms import CsmsBehaviour, LocalCsms, Received
from station.demo.session import extract_signed_record
from station.diag import client
from station.meter import ocmf
from station.meter.nullmodem import LineFaults, VirtualNullModem
from station.meter.sim.base import Faults, SimulatedMeter
from station.meter.sim.server import SIMULATED_MODELS, build_simulator, serve
from station.ocpp.v201 import STOPPED
from station.sim.ev import NoController
from station.sim.ev import Refused as CarRefused
from station.sim.ev import ask as car_ask
from tests.conftest import Process, toml_value, write_config

STATION = "CP-SOAK"

# fault -> weight. Each session gets one fault at one moment of its life.
FAULTS = {
    "none": 3,
    "kill": 4,  # SIGKILL the daemon, start it again
    "drop": 2,  # the CSMS drops the WebSocket
    "csms_restart": 2,  # the CSMS goes away for a moment and comes back
    "late": 2,  # the CSMS answers the next transaction message late (sometimes after the station gave up)
    "callerror": 2,  # the CSMS answers the next transaction message with a CALLERROR
    "no_answer": 1,  # the CSMS never answers the next transaction message
    "meter_slow": 2,  # the meter answers slowly and takes long to sign
    "meter_busy": 2,  # the meter answers DEVICE_BUSY a few times
    "meter_silent": 2,  # the meter does not answer for a while
    "corrupt": 2,  # frames from the meter arrive with CRC errors
    "power_loss": 2,  # the meter loses power and comes back
}
# --ev: faults on the car's side, drawn with the ones above.
EV_FAULTS = {
    "unplug_mid_stop": 3,  # the car is unplugged while the session's remote stop is in flight
    "unplug_mid_start": 2,  # the car is unplugged while its transaction starts (the meter starting)
    "rcd": 3,  # the RCD trips while the car charges: the transaction ends (GroundFault) with its record
    "controller_silent": 3,  # the charge controller stops answering for a while, then comes back
}
START_STYLES = ("cable_remote", "cable_card", "authorize_first")  # plug + remote start, plug + card, start + plug
END_STYLES = ("remote", "unplug", "card")  # remote stop, unplug (EVDisconnected), the same card (Local)
# Reasons a transaction may end with that the schedule did not cause itself: a transaction the soak did not start
# (the meter's own, recovered) is allowed these.
LEFTOVER_REASONS = {StopReason.REMOTE, StopReason.POWER_LOSS, StopReason.EV_DISCONNECTED}
MOMENTS = ("before_start", "starting", "charging", "stopping", "signing", "sending_stop")
METER_FAULTS = ("meter_slow", "meter_busy", "meter_silent", "power_loss")  # hit one meter: either EVSE's
MAX_EVSES = 2
MAX_GAP = 2.0  # seconds between one session's start and the next one's (several EVSEs): the sessions overlap


class Stuck(AssertionError):
    """The station stopped doing what the soak asks (a start never accepted, no settling): the run ends there."""


@dataclass
class EvseReport:
    """One EVSE's share: its meter's ledger against what the CSMS received on that EVSE's transactions."""

    model: str
    device_id: int
    sessions: int = 0  # sessions the soak ran on this EVSE
    starts_seen: int = 0
    signed: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    misattributed: int = 0  # delivered on another EVSE's transaction, or with another meter's key
    faults: int = 0  # meter faults aimed at this EVSE's meter

    def text(self, evse_id: int) -> str:
        return (
            f"  EVSE {evse_id} ({self.model}, device id {self.device_id}): sessions {self.sessions}, started "
            f"{self.starts_seen}; signed {self.signed}; delivered {self.delivered}; lost {self.lost}; duplicated "
            f"{self.duplicated}; misattributed {self.misattributed}; meter faults {self.faults}"
        )


@dataclass
class Report:
    seed: int
    sessions: int
    ocpp: str = "1.6"
    model: str = "smartme"
    evses: int = 1
    faults: Counter[str] = field(default_factory=Counter)
    per_evse: dict[int, EvseReport] = field(default_factory=dict)
    starts_seen: int = 0
    overlapping: int = 0  # sessions whose start reached the CSMS while another EVSE's transaction was open
    signed: int = 0
    delivered: int = 0
    duplicated: int = 0  # a record that reached the CSMS in two different messages
    repeated: int = 0  # a message that arrived again under the same message id (allowed)
    lost: int = 0
    phantom: int = 0  # delivered but never signed by any meter
    misattributed: int = 0  # a record delivered on another EVSE's transaction or with another meter's key
    wrong_evse: int = 0  # a start that reached the CSMS on another EVSE than the one the CSMS asked for
    not_verifying: int = 0
    out_of_order: int = 0
    seq_gaps: int = 0  # 2.0.1: a seqNo of the station's TransactionEvent stream that never reached the CSMS
    crashes: int = 0
    stuck: int = 0  # the soak gave up waiting for the station (see problems)
    ev: bool = False
    ev_starts: Counter[str] = field(default_factory=Counter)  # --ev: how sessions started (START_STYLES)
    ev_ends: Counter[str] = field(default_factory=Counter)  # --ev: how the CSMS heard them end (stop reasons)
    power_without_meter: int = 0  # --ev: the relay seen closed while the meter had no transaction open
    wrong_reason: int = 0  # --ev: a transaction ended with a stop reason the schedule did not cause
    left_running: int = 0  # --ev: a transaction that did not end by itself after its car was unplugged
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicated
            or self.lost
            or self.phantom
            or self.not_verifying
            or self.out_of_order
            or self.seq_gaps
            or self.crashes
            or self.stuck
            or self.misattributed
            or self.wrong_evse
            or self.power_without_meter
            or self.wrong_reason
            or self.left_running
        )

    def text(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        several = self.evses > 1
        lines = [
            f"chaos soak: seed {self.seed}, {self.sessions} sessions, OCPP {self.ocpp}, "
            + (f"{self.evses} EVSEs on one line, meters {self.model}" if several else f"meter {self.model}")
            + (", simulated cars" if self.ev else "")
            + f", {self.seconds:.0f} s",
            f"  faults injected: {faults}",
            f"  records signed by the meter{'s' if several else ''}: {self.signed}; delivered: {self.delivered}; "
            f"lost: {self.lost}; duplicated: {self.duplicated}; repeats under the same message id: {self.repeated}",
            f"  not verifying: {self.not_verifying}; out of order: {self.out_of_order}; phantom: {self.phantom}; "
            f"daemon crashes: {self.crashes}; sessions whose start reached the CSMS: {self.starts_seen}"
            + (f"; STUCK: {self.stuck}" if self.stuck else "")
            + (f"; seqNo gaps: {self.seq_gaps}" if self.ocpp == "2.0.1" else ""),
        ]
        if several:
            lines.append(
                f"  misattributed: {self.misattributed}; starts on another EVSE than asked: {self.wrong_evse}; "
                f"sessions overlapping another EVSE's: {self.overlapping}"
            )
            lines += [evse.text(n) for n, evse in sorted(self.per_evse.items())]
        if self.ev:
            starts = ", ".join(f"{k} {v}" for k, v in sorted(self.ev_starts.items()))
            ends = ", ".join(f"{k} {v}" for k, v in sorted(self.ev_ends.items()))
            lines += [
                f"  EV side: starts {starts or 'none'}; stop reasons {ends or 'none'}",
                f"  power with no meter transaction: {self.power_without_meter}; stop reasons the schedule did not "
                f"cause: {self.wrong_reason}; transactions running on after the car left: {self.left_running}",
            ]
        lines += [f"  PROBLEM: {p}" for p in self.problems[:20]]
        lines.append("  verdict: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def record_key(text: str) -> str:
    """A signed record as the meter signed it: its payload and the signature's two integers. A driver may re-encode
    a meter's non-minimal DER signature minimally (Iskra); that changes the text, not the record."""
    record = ocmf.parse(text)
    signature = ocmf.normalize_der_signature(bytes.fromhex(str(record.signature["SD"])))
    return f"{record.payload_text}|{signature.hex()}"


def key_hex(text: str) -> str:
    """A public key as the envelope carries it (hex or base64 DER), as upper-case hex."""
    try:
        return bytes.fromhex(text).hex().upper()
    except ValueError:
        try:
            return base64.b64decode(text, validate=True).hex().upper()
        except (binascii.Error, ValueError):
            return text


def models_of(model: str, evses: int) -> list[str]:
    """`--model`: one model for every EVSE, or one per EVSE separated by commas. ValueError naming what is wrong."""
    if not 1 <= evses <= MAX_EVSES:
        raise ValueError(f"--evses: {evses}; the soak runs 1..{MAX_EVSES} EVSEs on one line")
    models = [m.strip() for m in model.split(",")]
    unknown = [m for m in models if m not in SIMULATED_MODELS]
    if unknown:
        raise ValueError(f"--model: unknown {', '.join(unknown)}; simulated models: {', '.join(SIMULATED_MODELS)}")
    if len(models) == 1:
        return models * evses
    if len(models) != evses:
        raise ValueError(f"--model: {len(models)} models for {evses} EVSEs; give one, or one per EVSE")
    return models


class Car:
    """--ev: the simulated car behind one EVSE's simulated charge controller, driven through its control socket as
    `station sim ev` drives it. It lives in the daemon: a SIGKILLed daemon takes it along, and `sync()` puts it back
    as the soak wants it (plugged in or not, asking for power or not)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.plugged = False
        self.ready = False
        self._lock = asyncio.Lock()

    async def request(self, cmd: str, timeout: float = 30.0, **args: str) -> tuple[bool, Any]:
        """(True, answer) or (False, why it was refused / nothing answered within `timeout`); a daemon being started
        again is waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return True, await asyncio.to_thread(car_ask, self.path, {"cmd": cmd, **args}, 2.0)
            except CarRefused as exc:
                return False, str(exc)
            except NoController as exc:
                if loop.time() >= deadline:
                    return False, f"no controller: {exc}"
                await asyncio.sleep(0.2)

    async def state(self) -> dict[str, Any] | None:
        """The controller's state now, None when it does not answer at once (the daemon is down)."""
        try:
            answer = await asyncio.to_thread(car_ask, self.path, {"cmd": "state"}, 1.0)
        except (CarRefused, NoController):
            return None
        state = answer.get("state")
        return state if isinstance(state, dict) else None

    async def want(self, plugged: bool, ready: bool = False) -> None:
        self.plugged = plugged
        self.ready = plugged and ready
        await self.sync()

    async def sync(self) -> None:
        """Bring the car to what the soak wants (after a restart of the daemon: plugged in again, asking again)."""
        async with self._lock:
            ok, answer = await self.request("state")
            if not ok:
                return
            now = answer["state"]["car"]
            want = ("ready" if self.ready else "connected") if self.plugged else "unplugged"
            if now == want:
                return
            if want == "unplugged":
                await self.request("unplug")
                return
            if now == "unplugged":
                await self.request("plug")
            if want == "ready":
                await self.request("ready")
            elif now == "ready":
                await self.request("suspend")


class Soak:
    def __init__(
        self,
        workdir: Path,
        seed: int,
        sessions: int,
        say: Callable[[str], None] = print,
        ocpp: str = "1.6",
        model: str = "smartme",
        evses: int = 1,
        ev: bool = False,
    ) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.models = models_of(model, evses)
        self.evses = evses
        self.report = Report(seed, sessions, ocpp, "+".join(self.models) if evses > 1 else model, evses, ev=ev)
        self.ev = ev
        # --ev: one car per EVSE (short socket names: a Unix socket path has at most 107 bytes)
        self.cars = {n: Car(str(workdir / f"car{n}.sock")) for n in range(1, evses + 1)} if ev else {}
        self._reasons: dict[str, set[StopReason]] = {}  # --ev: id tag -> the stop reasons its session caused
        self._session_reasons: dict[int, set[StopReason]] = {}  # --ev: EVSE -> that set of its running session
        self.ocpp = ocpp
        self.model = model
        self.say = say
        self.csms = LocalCsms()
        self.cable = VirtualNullModem()
        self.sims: dict[int, SimulatedMeter] = {}  # EVSE id -> its meter's simulator, all on the one line
        self.sim_server: Any = None
        self.daemon: Process | None = None
        self.daemons = 0
        self.config_path = workdir / "station.toml"
        self.socket = str(workdir / "diag.sock")
        # One EVSE: today's file names. Several: one memory and one ledger per meter.
        self.ledgers = (
            {1: workdir / "ledger.jsonl"}
            if evses == 1
            else {n: workdir / f"ledger-evse{n}.jsonl" for n in range(1, evses + 1)}
        )
        self._background: set[asyncio.Task[None]] = set()
        # Sessions overlap with several EVSEs: one daemon kill / CSMS restart at a time, and a daemon the soak is
        # killing is not a crash.
        self._daemon_lock = asyncio.Lock()
        self._csms_lock = asyncio.Lock()
        self._open: dict[int, str] = {}  # EVSE -> transaction id of the session running on it, once started
        self.journal = workdir / "soak.log"  # what the soak did when: each session's steps and faults

    def note(self, text: str) -> None:
        with open(self.journal, "a") as f:
            f.write(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {text}\n")

    @property
    def sim(self) -> SimulatedMeter:
        """The first EVSE's meter (the only one of a one-EVSE soak)."""
        return self.sims[1]

    # ------------------------------------------------------------------ set-up

    async def start(self) -> None:
        await self.csms.start()
        await self.cable.start()
        if self.evses == 1:
            self.sims[1] = build_simulator(
                self.model, state=self.workdir / "meter.json", ledger=self.ledgers[1], power_w=22000, signing_time=0.2
            )
        else:
            for n, model in enumerate(self.models, start=1):
                self.sims[n] = build_simulator(
                    model,
                    state=self.workdir / f"meter-evse{n}.json",
                    ledger=self.ledgers[n],
                    device_id=n,
                    power_w=22000,
                    signing_time=0.2,
                )
        for n, sim in self.sims.items():
            self.report.per_evse[n] = EvseReport(self.models[n - 1], sim.device_id)
        self.sim_server = await serve(list(self.sims.values()), self.cable.path_b)
        self.write_config()
        self.start_daemon()
        await self.until_connected()
        # Retry quickly after a CALLERROR, and do not set a message aside after the one or two the soak injects.
        if self.ocpp == "2.0.1":
            items = [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": name, "instance": "TransactionEvent"},
                    "attribute_value": value,
                }
                for name, value in (("MessageAttemptInterval", "1"), ("MessageAttempts", "10"))
            ]
            if self.ev:
                items.append(
                    {
                        "component": {"name": "TxCtrlr"},
                        "variable": {"name": "StopTxOnEVSideDisconnect"},
                        "attribute_value": "true",
                    }
                )
            results = await self.csms.set_variables(STATION, items)
            assert all(r["attribute_status"] == "Accepted" for r in results), results
        else:
            keys = [("TransactionMessageRetryInterval", "1"), ("TransactionMessageAttempts", "10")]
            if self.ev:
                keys.append(("StopTransactionOnEVSideDisconnect", "true"))
            for key, value in keys:
                answer = await self.ask(lambda k=key, v=value: self.csms.change_configuration(STATION, k, v))
                assert answer == "Accepted", (key, answer)
        for evse_id in self.cars:
            self.later(self.watch_power(evse_id))

    async def watch_power(self, evse_id: int) -> None:
        """--ev: the meter counts what the car draws (the meter is in this process, the car in the daemon: polled),
        and the relay is never closed while the meter has no transaction open. The meter's transaction starts before
        the relay closes and ends after it has opened, so a poll that sees the relay closed while the meter had no
        transaction both before and after it (and none started in between) caught power with no meter transaction."""
        car, sim = self.cars[evse_id], self.sims[evse_id]
        sim.set_load(0.0)
        stretch = False  # in a stretch of polls that all saw it: counted once
        while True:
            before = (sim.charging, sim.mem.tx_counter)
            state = await car.state()
            after = (sim.charging, sim.mem.tx_counter)
            sim.set_load(float(state.get("power_w", 0.0)) if state is not None else 0.0)
            closed = state is not None and state.get("relay") == "closed"
            bad = closed and not before[0] and not after[0] and before[1] == after[1]
            if bad and not stretch:
                self.report.power_without_meter += 1
                self.report.problems.append(
                    f"power with no meter transaction: EVSE {evse_id}'s relay closed at "
                    f"{datetime.now(UTC).isoformat(timespec='milliseconds')} (car {state})"
                )
                self.note(f"  EVSE {evse_id}: relay closed with no meter transaction: {state}")
            stretch = bad
            await asyncio.sleep(0.1)

    def write_config(self) -> None:
        sections: dict[str, dict[str, Any]] = {
            "station": {"id": STATION},
            "csms": {
                "url": self.csms.url,
                "ocpp_version": self.ocpp,
                "response_timeout": 2,
                "reconnect_min": 0.2,
                "reconnect_max": 1,
            },
        }
        tail: dict[str, dict[str, Any]] = {
            "storage": {"path": str(self.workdir / "station.db")},
            "diagnostics": {"socket": self.socket},
        }
        if self.evses == 1:  # today's single [meter] table: one EVSE on bus "meter"
            sections["meter"] = {"model": self.model, "port": self.cable.path_a, "latency": 0.3}
            if self.ev:
                sections["charge_controller"] = self.controller_keys(1)
            write_config(self.config_path, sections | tail)
            return
        # Several: one [bus.rs485] on the pty, an [[evse]] with its [evse.meter] per meter (arrays of tables, which
        # write_config does not write).
        lines: list[str] = []

        def table(header: str, keys: dict[str, Any]) -> None:
            lines.extend([header, *(f"{k} = {toml_value(v)}" for k, v in keys.items()), ""])

        for name, keys in sections.items():
            table(f"[{name}]", keys)
        table("[bus.rs485]", {"port": self.cable.path_a, "latency": 0.3})
        for n, sim in self.sims.items():
            table("[[evse]]", {"id": n})
            table("[evse.meter]", {"model": self.models[n - 1], "bus": "rs485", "device_id": sim.device_id})
            if self.ev:
                table("[evse.charge_controller]", self.controller_keys(n))
        for name, keys in tail.items():
            table(f"[{name}]", keys)
        self.config_path.write_text("\n".join(lines))

    def controller_keys(self, evse_id: int) -> dict[str, Any]:
        return {"driver": "simulated", "control_socket": self.cars[evse_id].path, "lock": True}

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        if self.daemon is not None:
            await self.daemon.terminate(signal.SIGTERM)
        if self.sim_server is not None:
            await self.sim_server.shutdown()
        await self.cable.stop()
        await self.csms.stop()
        with open(self.workdir / "csms.jsonl", "w") as f:  # what the CSMS received, for a post-mortem
            for m in self.csms.received:
                f.write(
                    json.dumps(
                        {"at": m.at.isoformat(), "action": m.action, "id": m.unique_id, "refused": m.refused}
                        | {"payload": m.payload}
                    )
                    + "\n"
                )

    def start_daemon(self) -> None:
        self.daemons += 1
        log = self.workdir / f"daemon-{self.daemons}.log"
        # PYTHONFAULTHANDLER: a stuck daemon is sent SIGABRT and writes every thread's stack into its log.
        args = ["run", "--config", str(self.config_path), "--log-format", "json"]
        self.daemon = Process(args, log, env={"PYTHONFAULTHANDLER": "1"})

    # ------------------------------------------------------------------ talking to the station

    async def ask(self, call: Callable[[], Awaitable[str]], timeout: float = 5) -> str | None:
        """A CSMS request to the station; None when it is not connected or did not answer."""
        try:
            return await asyncio.wait_for(call(), timeout)
        except Exception:  # not connected, connection dropped mid-call, no answer: the soak tries again
            return None

    async def until_connected(self, timeout: float = 60) -> None:
        await self.check_daemon()
        await self.csms.wait_connected(STATION, timeout=timeout)

    async def check_daemon(self) -> None:
        """A daemon that exited without being killed by the soak crashed: count it, keep its log, start another."""
        if self._daemon_lock.locked():
            return  # being killed and started again by a fault
        assert self.daemon is not None
        if self.daemon.proc.poll() is not None:
            self.report.crashes += 1
            self.report.problems.append(f"daemon exited with {self.daemon.proc.returncode}: {self.daemon.log_path}")
            self.start_daemon()

    async def retry(
        self,
        call: Callable[[], Awaitable[str]],
        accept: tuple[str, ...],
        timeout: float = 90,
        refused: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.check_daemon()
            answer = await self.ask(call)
            if answer in accept:
                return answer
            if answer is not None and refused is not None:
                await refused()
            await asyncio.sleep(0.3)
        raise Stuck(f"the station did not answer {accept} within {timeout} s; logs in {self.workdir}")

    def diag_status(self) -> dict[str, Any] | None:
        try:
            return client.ask(self.socket, {"command": "status"}, timeout=5)["status"]  # type: ignore[no-any-return]
        except (client.DiagError, ValueError):
            return None

    def start_call(self, tag: str, evse_id: int, number: int) -> Callable[[], Awaitable[str]]:
        """The CSMS's remote start of one session: on the EVSE the soak chose (one EVSE: no EVSE named, as always)."""
        if self.evses == 1:
            return lambda: self.csms.start_session(STATION, tag)
        if self.ocpp == "2.0.1":
            return lambda: self.csms.request_start(STATION, tag, evse_id=evse_id, remote_start_id=number + 1)
        return lambda: self.csms.remote_start(STATION, tag, connector_id=evse_id)

    # ------------------------------------------------------------------ faults

    def later(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def inject(self, fault: str, rng: random.Random, evse_id: int = 1) -> None:
        assert self.daemon is not None
        self.report.faults[fault] += 1
        if fault in EV_FAULTS:  # the car's side: the session's own EVSE
            self.note(f"  fault {fault} on EVSE {evse_id}'s charge controller")
            await self.inject_ev(fault, rng, evse_id)
            return
        if fault in METER_FAULTS:  # one meter: with several EVSEs, the session's own or a neighbour's
            target = rng.choice(sorted(self.sims)) if self.evses > 1 else 1
            self.report.per_evse[target].faults += 1
            sim = self.sims[target]
            self.note(f"  fault {fault} on the meter of EVSE {target}")
        else:
            self.note(f"  fault {fault}")
        if fault == "kill":
            async with self._daemon_lock:
                await self.daemon.terminate(signal.SIGKILL)
                # What was open ends at the restart (recovery: PowerLoss, unless a stop had been asked for).
                for reasons in self._open_reasons():
                    reasons.add(StopReason.POWER_LOSS)
                await asyncio.sleep(rng.uniform(0, 0.5))
                self.start_daemon()
            for car in self.cars.values():  # the car went with the daemon: plugged in again as it was
                self.later(car.sync())
        elif fault == "drop":
            await self.csms.drop_connections()
        elif fault == "csms_restart":
            async with self._csms_lock:
                port = self.csms.port
                await self.csms.stop()
                await self.csms.drop_connections()
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                self.csms.port = port
                await self.csms.start()
        elif fault in ("late", "callerror", "no_answer"):
            # 2.0.1: Started, Updated or Ended, whichever goes next (with several EVSEs: of either)
            action = "TransactionEvent" if self.ocpp == "2.0.1" else rng.choice(["StartTransaction", "StopTransaction"])
            if fault == "late":
                self.csms.behaviour.late[action] = rng.uniform(0.5, 3.0)  # the station waits 2 s
            elif fault == "callerror":
                self.csms.behaviour.call_errors[action] = 1
            else:
                self.csms.behaviour.silent[action] = 1
        elif fault == "meter_slow":
            sim.faults.latency = rng.uniform(0.02, 0.1)
            sim.signing_time = rng.uniform(1.0, 4.0)
            self.later(self._restore_meter_speed(sim, rng.uniform(2, 6)))
        elif fault == "meter_busy":
            sim.faults.busy_next = rng.randint(1, 4)
        elif fault == "meter_silent":
            sim.faults.mute = True
            self.later(self._unmute(sim, rng.uniform(0.5, 4)))
        elif fault == "corrupt":  # the one line: whichever meter answers next
            self.cable.faults.corrupt_to_a = rng.randint(1, 3)
        elif fault == "power_loss":
            self.later(sim.power_cycle(rng.uniform(0.3, 3)))

    async def inject_ev(self, fault: str, rng: random.Random, evse_id: int) -> None:
        car = self.cars[evse_id]
        reasons = self._session_reasons.setdefault(evse_id, set())
        if fault in ("unplug_mid_stop", "unplug_mid_start"):
            reasons.add(StopReason.EV_DISCONNECTED)
            await car.want(False)
        elif fault == "rcd":
            reasons.add(StopReason.GROUND_FAULT)
            ok, why = await car.request("fault", name="rcd", detail="30 mA (soak)")
            if not ok:
                self.note(f"  rcd not injected: {why}")
        elif fault == "controller_silent":
            reasons.add(StopReason.OTHER)  # a fault while charging ends the transaction, reason Other
            ok, why = await car.request("fault", name="controller_silent")
            if ok:
                self.later(self._speak_again(car, rng.uniform(0.5, 4)))
            else:
                self.note(f"  controller_silent not injected: {why}")

    async def _speak_again(self, car: Car, after: float) -> None:
        await asyncio.sleep(after)
        ok, why = await car.request("clear", name="controller_silent")
        self.note(f"  controller {car.path} speaks again" if ok else f"  controller_silent not cleared: {why}")

    def _open_reasons(self, evse_id: int | None = None) -> list[set[StopReason]]:
        """--ev: the stop-reason sets of the sessions running now and of the tags whose transactions are open at the
        CSMS (on every EVSE, or on one)."""
        found = [r for n, r in self._session_reasons.items() if evse_id in (None, n)]
        open_ids = set(self._open_at_csms())
        where = self.transaction_evses()
        for _, transaction_id, tag in self.starts():
            if transaction_id not in open_ids or tag not in self._reasons:
                continue
            if evse_id is None or self.evses == 1 or where.get(transaction_id) == {evse_id}:
                found.append(self._reasons[tag])
        return found

    async def _restore_meter_speed(self, sim: SimulatedMeter, after: float) -> None:
        await asyncio.sleep(after)
        sim.faults.latency = 0.0
        sim.signing_time = 0.2

    async def _unmute(self, sim: SimulatedMeter, after: float) -> None:
        await asyncio.sleep(after)
        sim.faults.mute = False

    # ------------------------------------------------------------------ one session

    async def session(self, number: int, evse_id: int = 1, rng: random.Random | None = None) -> None:
        rng = rng or self.rng
        fault = rng.choices(list(FAULTS), weights=list(FAULTS.values()))[0]
        moment = rng.choice(MOMENTS)
        csms = self.csms
        self.report.per_evse[evse_id].sessions += 1

        async def at(this: str) -> None:
            if moment == this and fault != "none":
                self.note(f"session {number} EVSE {evse_id}: {this}")
                await self.inject(fault, rng)

        await at("before_start")
        if moment == "sending_stop" and fault in ("late", "callerror", "no_answer"):
            moment = "stopping"  # those are set up right before the stop instead
        mark = len(csms.received)
        tag = f"TAG-{number:05d}"
        self.note(f"session {number} EVSE {evse_id}: start {tag}, fault {fault} at {moment}")
        # A start whose answer was lost may have started a transaction after all: those are stopped when the
        # station refuses the next start (connector busy).
        await self.retry(
            self.start_call(tag, evse_id, number),
            ("Accepted",),
            refused=lambda: self.stop_leftovers(None if self.evses == 1 else evse_id),
        )
        await at("starting")
        transaction_id = await self.started(tag, mark, evse_id)
        self.note(f"session {number} EVSE {evse_id}: transaction {transaction_id}")
        if transaction_id is None:
            return  # the start never got through (e.g. killed before the meter started): the ledger tells the rest
        self.report.starts_seen += 1
        self.report.per_evse[evse_id].starts_seen += 1
        if any(n != evse_id for n in self._open):
            self.report.overlapping += 1
        self._open[evse_id] = transaction_id
        try:
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            await at("charging")
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            await at("sending_stop")
            stop_sent = asyncio.create_task(
                self.retry(lambda: csms.stop_session(STATION, transaction_id), ("Accepted", "Rejected"))
            )
            await asyncio.sleep(rng.uniform(0, 0.3))
            await at("stopping")
            await stop_sent
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            await at("signing")
            self.note(f"session {number} EVSE {evse_id}: stop sent")
            with contextlib.suppress(TimeoutError):
                await csms.wait_until(lambda: transaction_id in {t for _, t in self.ends(mark)}, timeout=60)
            self.note(f"session {number} EVSE {evse_id}: done")
        finally:
            del self._open[evse_id]

    # ------------------------------------------------------------------ one session with a car (--ev)

    async def ev_session(self, number: int, evse_id: int = 1, rng: random.Random | None = None) -> None:
        """A session as a driver has it: the car is plugged in before or after the start, charges, perhaps pauses,
        and the session ends one of END_STYLES ways or by an EV-side fault. Every way it may end is noted in the
        session's stop-reason set, which the transactions started with its tag must keep to."""
        try:
            await self._ev_session(number, evse_id, rng or self.rng)
        finally:
            self._session_reasons.pop(evse_id, None)  # no longer running: only its tag's open transactions count

    async def _ev_session(self, number: int, evse_id: int, rng: random.Random) -> None:
        faults = FAULTS | EV_FAULTS
        fault = rng.choices(list(faults), weights=list(faults.values()))[0]
        moment = rng.choice(MOMENTS)
        if fault == "unplug_mid_stop":
            moment = "stopping"
        elif fault == "rcd":
            moment = "charging"
        style = rng.choice(START_STYLES)
        if fault == "unplug_mid_start":  # right after the start was asked for with the car in, or the plug-in
            moment = "plugged" if style == "authorize_first" else "starting"
        ending = "remote" if fault == "unplug_mid_stop" else rng.choice(END_STYLES)
        early = rng.random() < 0.5  # the car asks for power before the transaction starts
        pause = rng.random() < 0.3  # the car pauses and resumes while charging
        csms, car = self.csms, self.cars[evse_id]
        self.report.per_evse[evse_id].sessions += 1
        await self.ev_idle(evse_id)
        tag = f"5A{number:06X}"  # a card's UID as a reader reports it, used for the remote start too
        reasons: set[StopReason] = set()
        self._reasons[tag] = self._session_reasons[evse_id] = reasons

        async def at(this: str) -> None:
            if moment == this and fault != "none":
                self.note(f"session {number} EVSE {evse_id}: {this}")
                await self.inject(fault, rng, evse_id)

        await at("before_start")
        if moment == "sending_stop" and fault in ("late", "callerror", "no_answer"):
            moment = "stopping"
        self.report.ev_starts[style] += 1
        self.note(f"session {number} EVSE {evse_id}: {style} {tag}, ends {ending}, fault {fault} at {moment}")
        mark = len(csms.received)
        if style != "authorize_first":
            await car.want(True, early)
        if style == "cable_card":
            await self.present_card(car, tag)
        else:
            await self.ev_remote_start(tag, evse_id, number, mark)
        await at("starting")
        if style == "authorize_first":
            await asyncio.sleep(rng.uniform(0.1, 1.5))  # well within ConnectionTimeOut
            await car.want(True, early)
            await at("plugged")
        transaction_id = await self.ev_started(tag, mark, evse_id, card=car if style == "cable_card" else None)
        self.note(f"session {number} EVSE {evse_id}: transaction {transaction_id}")
        if transaction_id is None:
            return
        self.report.starts_seen += 1
        self.report.per_evse[evse_id].starts_seen += 1
        if any(n != evse_id for n in self._open):
            self.report.overlapping += 1
        self._open[evse_id] = transaction_id

        def ended() -> bool:
            return transaction_id in {t for _, t in self.ends(mark)}

        try:
            if fault == "unplug_mid_start":  # the car has gone: the transaction must end by itself (EVDisconnected)
                await self.ended_by_unplug(ended, evse_id, transaction_id, tag, car, reasons)
                return
            await car.want(True, True)  # the car charges
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            await at("charging")  # an RCD trip ends it here
            if pause and not ended():
                await car.want(True, False)
                await asyncio.sleep(rng.uniform(0.2, 0.8))
                await car.want(True, True)
                await asyncio.sleep(rng.uniform(0.1, 0.4))
            if fault == "rcd":
                with contextlib.suppress(TimeoutError):
                    await csms.wait_until(ended, timeout=30)
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                await car.request("clear", name="rcd")
            else:
                await at("sending_stop")
                stop_sent = asyncio.create_task(self.ev_stop(ending, car, tag, transaction_id, reasons))
                await asyncio.sleep(rng.uniform(0, 0.3))
                await at("stopping")  # unplug_mid_stop: while the remote stop is in flight
                await stop_sent
                await asyncio.sleep(rng.uniform(0.1, 0.4))
                await at("signing")
            self.note(f"session {number} EVSE {evse_id}: stop sent")
            if ending == "unplug" and fault != "kill":
                await self.ended_by_unplug(ended, evse_id, transaction_id, tag, car, reasons)
            with contextlib.suppress(TimeoutError):
                await csms.wait_until(ended, timeout=60)
            if not ended():  # e.g. the card came while the station was restarting: a remote stop after all
                self.note(f"session {number} EVSE {evse_id}: not ended; remote stop")
                await self.ev_stop("remote", car, tag, transaction_id, reasons)
                with contextlib.suppress(TimeoutError):
                    await csms.wait_until(ended, timeout=60)
            self.note(f"session {number} EVSE {evse_id}: done")
        finally:
            del self._open[evse_id]

    async def tag_running(self, evse_id: int, tag: str) -> bool:
        """Whether the station has a transaction of `tag` on the EVSE (True while it cannot be asked)."""
        status = await asyncio.to_thread(self.diag_status)
        if status is None:
            return True
        return any(
            c["evse_id"] == evse_id and c["transaction"] is not None and c["transaction"]["id_tag"] == tag
            for c in status["connectors"]
        )

    async def ended_by_unplug(
        self,
        ended: Callable[[], bool],
        evse_id: int,
        transaction_id: str,
        tag: str,
        car: Car,
        reasons: set[StopReason],
    ) -> None:
        """StopTransactionOnEVSideDisconnect is true: a transaction whose car was unplugged ends by itself (at the
        station: its message may still be on its way). One that runs on is a station fault (counted); a remote stop
        ends it then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            if ended() or not await self.tag_running(evse_id, tag):
                return
            await asyncio.sleep(0.3)
        self.report.left_running += 1
        self.report.problems.append(
            f"transaction {transaction_id} ({tag}) still ran 30 s after its car was unplugged; stopped remotely"
        )
        self.note(f"  {tag}: transaction {transaction_id} runs on without the car")
        await self.ev_stop("remote", car, tag, transaction_id, reasons)

    async def ev_remote_start(self, tag: str, evse_id: int, number: int, mark: int, timeout: float = 90) -> None:
        """The CSMS's remote start, again until Accepted. A start whose answer was lost (the connection dropped under
        it) may have started the transaction after all: when the station refuses the next one because this tag's
        transaction runs there, that is the session's; other leftovers on the EVSE are stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        call = self.start_call(tag, evse_id, number)
        while loop.time() < deadline:
            await self.check_daemon()
            answer = await self.ask(call)
            if answer == "Accepted":
                return
            if answer is not None:
                status = await asyncio.to_thread(self.diag_status)
                running = (
                    []
                    if status is None
                    else [
                        c["transaction"]["id_tag"]
                        for c in status["connectors"]
                        if c["evse_id"] == evse_id and c["transaction"] is not None
                    ]
                )
                if tag in running or tag in {t for m, _, t in self.starts(mark)}:
                    self.note(f"  {tag}: the start whose answer was lost went through")
                    return
                await self.stop_leftovers(None if self.evses == 1 else evse_id)
            await asyncio.sleep(0.3)
        raise Stuck(f"the station did not accept the start of {tag} within {timeout} s; logs in {self.workdir}")

    async def ev_stop(self, ending: str, car: Car, tag: str, transaction_id: str, reasons: set[StopReason]) -> None:
        if ending == "remote":
            reasons.add(StopReason.REMOTE)
            await self.retry(lambda: self.csms.stop_session(STATION, transaction_id), ("Accepted", "Rejected"))
        elif ending == "unplug":
            reasons.add(StopReason.EV_DISCONNECTED)
            await car.want(False)
        else:
            reasons.add(StopReason.LOCAL)
            await self.present_card(car, tag)

    async def present_card(self, car: Car, tag: str) -> None:
        ok, why = await car.request("card", uid=tag)
        if not ok:
            self.note(f"  card {tag} not presented: {why}")

    async def ev_idle(self, evse_id: int, timeout: float = 90) -> None:
        """Before a session: the car unplugged, its controller's faults cleared, the EVSE with no transaction and no
        phase but available (a stuck EVSE ends the run)."""
        car = self.cars[evse_id]
        if car.plugged:  # a transaction of an earlier session still running here ends with the unplug
            for reasons in self._open_reasons(evse_id):
                reasons.add(StopReason.EV_DISCONNECTED)
        await car.want(False)
        await car.request("clear")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.check_daemon()
            status = await asyncio.to_thread(self.diag_status)
            if status is not None:
                mine = [c for c in status["connectors"] if c["evse_id"] == evse_id]
                if all(c["phase"] == "available" and c["transaction"] is None for c in mine):
                    return
                if status["ocpp"]["connected"]:
                    await self.stop_leftovers(None if self.evses == 1 else evse_id)
            await asyncio.sleep(0.3)
        raise Stuck(f"EVSE {evse_id} did not come back to available after the car left; logs in {self.workdir}")

    async def ev_started(
        self, tag: str, mark: int, evse_id: int, card: Car | None = None, timeout: float = 60
    ) -> str | None:
        """The CSMS's transaction id of this session's start; None once the EVSE has been available with no
        transaction and nothing queued for 3 s (the start was lost). A card start is tried again then (the card was
        refused, e.g. while the CSMS was away), up to three times."""
        csms = self.csms
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since: float | None = None
        cards = 1
        while loop.time() < deadline:
            # not one the CSMS refused with a CALLERROR: the station sends it again (1.6: under another message id)
            found = [m for m, _, id_tag in self.starts(mark) if id_tag == tag and not m.refused]
            if found:
                start = found[0]
                where = self.evse_of_start(start)
                if self.evses > 1 and where != evse_id:
                    self.report.wrong_evse += 1
                    self.report.problems.append(f"{tag}: asked to start on EVSE {evse_id}, started on {where}")
                with contextlib.suppress(TimeoutError):
                    await csms.wait_until(lambda s=start: self.transaction_of(s) is not None, timeout=60)
                return self.transaction_of(start)
            status = await asyncio.to_thread(self.diag_status)
            idle = status is not None and status["ocpp"]["queue_depth"] == 0
            if idle and status is not None:
                mine = [c for c in status["connectors"] if c["evse_id"] == evse_id]
                idle = all(c["phase"] == "available" and c["transaction"] is None for c in mine)
            if not idle:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = loop.time()
            elif loop.time() - quiet_since > 3:
                if card is None or cards >= 3 or not card.plugged:  # without the car a card would authorize first
                    return None
                cards += 1
                self.note(f"  {tag}: no start; the card again")
                await self.present_card(card, tag)
                quiet_since = None
            await asyncio.sleep(0.2)
        return None

    async def sessions(self) -> None:
        """One EVSE: one session after the other. Several: each session starts on a random free EVSE a random moment
        after the previous one started, so that sessions overlap and stop in either order; each session draws its
        own schedule from a generator seeded in turn, so that one session's timing does not reshuffle the others'."""
        total = self.report.sessions
        session = self.ev_session if self.ev else self.session
        if self.evses == 1:
            for number in range(total):
                await session(number)
                self.progress(number + 1)
            return
        free = set(self.sims)
        freed = asyncio.Event()

        async def on(number: int, evse_id: int, rng: random.Random) -> None:
            try:
                await session(number, evse_id, rng)
            finally:
                free.add(evse_id)
                freed.set()
            self.progress(number + 1)

        async with asyncio.TaskGroup() as group:
            for number in range(total):
                while not free:
                    freed.clear()
                    await freed.wait()
                evse_id = self.rng.choice(sorted(free))
                free.discard(evse_id)
                group.create_task(on(number, evse_id, random.Random(self.rng.randrange(2**32))))
                await asyncio.sleep(self.rng.uniform(0, MAX_GAP))

    def progress(self, done: int) -> None:
        if done % 25 == 0:
            self.say(f"  ... {done} sessions, faults so far: {dict(self.report.faults)}")

    async def started(self, tag: str, mark: int, evse_id: int = 1, timeout: float = 30) -> str | None:
        """The CSMS's transaction id of this session's start; None once the station has shown its EVSE Available for
        2 s with no start on its way (the start was lost, e.g. the daemon was killed before the meter started)."""
        csms = self.csms
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            found = [m for m, _, id_tag in self.starts(mark) if id_tag == tag]
            if found:
                start = found[0]
                where = self.evse_of_start(start)
                if self.evses > 1 and where != evse_id:
                    self.report.wrong_evse += 1
                    self.report.problems.append(f"{tag}: asked to start on EVSE {evse_id}, started on {where}")
                with contextlib.suppress(TimeoutError):  # 1.6: the id is the CSMS's answer to StartTransaction
                    await csms.wait_until(lambda s=start: self.transaction_of(s) is not None, timeout=60)
                return self.transaction_of(start)
            statuses = [
                m
                for m in csms.received[mark:]
                if m.action == "StatusNotification" and (self.evses == 1 or self.evse_of_status(m) == evse_id)
            ]
            if (
                statuses
                and statuses[-1].payload.get("status", statuses[-1].payload.get("connectorStatus")) == "Available"
            ):
                quiet = (datetime.now(UTC) - statuses[-1].at).total_seconds()
                if quiet > 2 and self.diag_outbox_empty():
                    return None
            await asyncio.sleep(0.2)
        return None

    # ------------------------------------------------------------------ the CSMS's view, either OCPP version

    def transaction_of(self, start: Received) -> str | None:
        if start.action == "TransactionEvent":
            return str(start.payload["transactionInfo"]["transactionId"])
        known = self.csms.transaction_by_message_id.get(start.unique_id)
        return None if known is None else str(known)

    @staticmethod
    def evse_of_start(start: Received) -> int | None:
        """The EVSE a transaction's start names: 1.6 its connectorId (connectors 1..N are EVSEs 1..N), 2.0.1 the
        evse of the event."""
        if start.action == "StartTransaction":
            return int(start.payload["connectorId"])
        evse = start.payload.get("evse")
        return None if evse is None else int(evse["id"])

    @staticmethod
    def evse_of_status(status: Received) -> int | None:
        where = status.payload.get("connectorId") if "status" in status.payload else status.payload.get("evseId")
        return None if where is None else int(where)

    def starts(self, after: int = 0) -> list[tuple[Received, str | None, str]]:
        """(message, transaction id, id tag) of each transaction start the CSMS received."""
        found: list[tuple[Received, str | None, str]] = []
        for m in self.csms.received[after:]:
            if m.action == "StartTransaction":
                found.append((m, self.transaction_of(m), m.payload["idTag"]))
            elif m.action == "TransactionEvent" and m.payload["eventType"] == "Started":
                found.append((m, self.transaction_of(m), m.payload["idToken"]["idToken"]))
        return found

    def ends(self, after: int = 0) -> list[tuple[Received, str]]:
        """(message, transaction id) of each transaction end the CSMS received."""
        found: list[tuple[Received, str]] = []
        for m in self.csms.received[after:]:
            if m.action == "StopTransaction":
                found.append((m, str(m.payload["transactionId"])))
            elif m.action == "TransactionEvent" and m.payload["eventType"] == "Ended":
                found.append((m, str(m.payload["transactionInfo"]["transactionId"])))
        return found

    def transaction_evses(self) -> dict[str, set[int]]:
        """Transaction id -> the EVSE(s) the CSMS was told it runs on: 1.6 the connectorId of its StartTransaction,
        2.0.1 the evse of each of its TransactionEvents that carries one. Two EVSEs for one transaction is itself a
        misattribution."""
        found: dict[str, set[int]] = {}
        for m in self.csms.received:
            if m.refused:
                continue
            if m.action == "StartTransaction":
                transaction = self.transaction_of(m)
                if transaction is not None:
                    found.setdefault(transaction, set()).add(int(m.payload["connectorId"]))
            elif m.action == "TransactionEvent":
                evse = self.evse_of_start(m)
                ids = found.setdefault(str(m.payload["transactionInfo"]["transactionId"]), set())
                if evse is not None:
                    ids.add(evse)
        return found

    def diag_outbox_empty(self) -> bool:
        status = self.diag_status()
        return status is not None and status["ocpp"]["queue_depth"] == 0

    # ------------------------------------------------------------------ the end: settle and compare

    async def settle(self, timeout: float = 180) -> None:
        """No more faults: wait until the daemon has delivered everything and no transaction is open anywhere."""
        for sim in self.sims.values():
            sim.faults = Faults()
            sim.signing_time = 0.2
        self.cable.faults = LineFaults()
        self.csms.behaviour = CsmsBehaviour()
        if self.ev:  # the cars leave; what still runs ends with the unplug
            for reasons in self._open_reasons():
                reasons.add(StopReason.EV_DISCONNECTED)
            self._session_reasons.clear()
            for car in self.cars.values():
                await car.want(False)
                await car.request("clear")
        await asyncio.sleep(4)  # let timed faults (a meter off, a mute) run out
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.check_daemon()
            status = await asyncio.to_thread(self.diag_status)
            if status is not None and status["ocpp"]["connected"]:
                running = [c for c in status["connectors"] if c["transaction"]]
                open_at_csms = self._open_at_csms()
                await self.stop_leftovers()
                charging = any(sim.charging for sim in self.sims.values())
                if not running and not open_at_csms and status["ocpp"]["queue_depth"] == 0 and not charging:
                    return
            await asyncio.sleep(1)
        raise Stuck(f"the station did not settle within {timeout} s; logs in {self.workdir}")

    async def stop_leftovers(self, evse_id: int | None = None) -> None:
        """Stop the transactions open at the CSMS that no session is running: all, or those on one EVSE."""
        where = self.transaction_evses() if evse_id is not None else {}
        for transaction_id in self._open_at_csms():
            if evse_id is not None and where.get(transaction_id) != {evse_id}:
                continue
            if self.ev:
                for _, started, tag in self.starts():
                    if started == transaction_id and tag in self._reasons:
                        self._reasons[tag].add(StopReason.REMOTE)
            await self.ask(lambda t=transaction_id: self.csms.stop_session(STATION, t))

    def _open_at_csms(self) -> list[str]:
        stopped = {t for _, t in self.ends()}
        return sorted({t for _, t, _ in self.starts() if t is not None and t not in stopped})

    def compare(self) -> None:
        report = self.report
        ledgers: dict[int, list[dict[str, Any]]] = {}
        owner: dict[str, int] = {}  # record_key -> the EVSE whose meter's ledger holds it
        for n, path in self.ledgers.items():
            entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            ledgers[n] = [entry for entry in entries if entry["end_wh"] is not None]  # end records (BAUER: begins)
            for entry in ledgers[n]:
                owner[record_key(entry["ocmf"])] = n
        report.signed = sum(len(entries) for entries in ledgers.values())
        on_evses = self.transaction_evses()
        by_record: dict[str, set[str]] = {}  # record_key -> ids of the messages that carried it
        as_delivered: dict[str, str] = {}  # record_key -> the text the CSMS received
        delivered_on: dict[str, set[int | None]] = {}  # record_key -> EVSEs of the transactions that carried it
        keys_sent: dict[str, set[str]] = {}  # record_key -> the public keys sent with it
        first_seen: list[str] = []
        for stop, transaction_id in self.ends():
            if stop.refused:
                continue  # answered with a CALLERROR: the CSMS did not take it; the station sends it again
            try:
                text, key = extract_signed_record(stop.payload)
                record = record_key(text)
            except (ValueError, KeyError) as exc:
                report.problems.append(f"transaction end {stop.unique_id} without a usable signed record: {exc}")
                continue
            if record not in by_record:
                first_seen.append(record)
                as_delivered[record] = text
            ids = by_record.setdefault(record, set())
            if stop.unique_id in ids:
                report.repeated += 1
            ids.add(stop.unique_id)
            delivered_on.setdefault(record, set()).update(on_evses.get(transaction_id) or {None})
            if key is not None:
                keys_sent.setdefault(record, set()).add(key_hex(key))
        for n, entries in ledgers.items():
            evse = report.per_evse[n]
            sim = self.sims[n]
            evse.signed = len(entries)
            signed = [record_key(entry["ocmf"]) for entry in entries]
            for entry, record in zip(entries, signed, strict=True):
                ids = by_record.get(record, set())
                label = f"EVSE {n} {entry['pagination']}" if self.evses > 1 else entry["pagination"]
                if not ids:
                    evse.lost += 1
                    report.problems.append(f"lost: {label} was signed but never delivered")
                    continue
                evse.delivered += 1
                if len(ids) > 1:
                    evse.duplicated += 1
                    report.problems.append(f"duplicated: {label} in messages {sorted(ids)}")
                if not ocmf.verify(ocmf.parse(as_delivered[record]), sim.public_key_hex).valid:
                    report.not_verifying += 1
                    report.problems.append(f"not verifying: {label} as the CSMS received it")
                wrong_keys = keys_sent.get(record, set()) - {sim.public_key_hex}
                if self.evses > 1 and (delivered_on[record] != {n} or wrong_keys):
                    evse.misattributed += 1
                    on = sorted(str(e) for e in delivered_on[record])
                    report.problems.append(
                        f"misattributed: {label} (meter {sim.mem.serial}) delivered on EVSE(s) {', '.join(on)}"
                        + (f" with another meter's key {sorted(wrong_keys)[0][-16:]}" if wrong_keys else "")
                    )
            # Each meter's records reach the CSMS in the order it signed them (the EVSEs' relative order is free).
            delivered_order = [r for r in first_seen if owner.get(r) == n]
            expected_order = [r for r in signed if r in by_record]
            if delivered_order != expected_order:
                report.out_of_order += sum(1 for a, b in zip(delivered_order, expected_order, strict=False) if a != b)
                report.problems.append(
                    f"records of EVSE {n}'s meter reached the CSMS in another order than the meter signed them"
                )
        for name in ("lost", "delivered", "duplicated", "misattributed"):
            setattr(report, name, sum(getattr(e, name) for e in report.per_evse.values()))
        report.phantom = len([r for r in by_record if r not in owner])
        if self.ocpp == "2.0.1":
            self.check_seq_nos()
        if self.ev:
            self.check_stop_reasons()
        if self.evses > 1:
            for transaction_id, evses in on_evses.items():
                if len(evses) > 1:
                    report.problems.append(f"transaction {transaction_id} named EVSEs {sorted(evses)}")
                    report.misattributed += 1

    def reason_word(self, reason: StopReason) -> str:
        """A stop reason as this OCPP version's message carries it."""
        return reason.ocpp16 if self.ocpp == "1.6" else STOPPED[reason][0]

    def check_stop_reasons(self) -> None:
        """--ev: every transaction ended with a reason its session's schedule caused (a remote stop Remote, the
        unplug EVDisconnected, the same card Local, an RCD trip GroundFault, a silent controller Other, a kill
        PowerLoss); a transaction the soak did not start, with one of LEFTOVER_REASONS."""
        tags = {t: tag for _, t, tag in self.starts() if t is not None}
        seen: set[str] = set()
        for end, transaction_id in self.ends():
            if end.refused or transaction_id in seen:
                continue
            seen.add(transaction_id)
            if end.action == "StopTransaction":
                reason = str(end.payload.get("reason", "Local"))  # 1.6 §7.43: absent means Local
            else:
                reason = str(end.payload["transactionInfo"].get("stoppedReason", "Local"))
            self.report.ev_ends[reason] += 1
            tag = tags.get(transaction_id)
            allowed = self._reasons.get(tag, LEFTOVER_REASONS) if tag is not None else LEFTOVER_REASONS
            words = sorted({self.reason_word(r) for r in allowed})
            if reason not in words:
                self.report.wrong_reason += 1
                self.report.problems.append(
                    f"transaction {transaction_id} ({tag}) ended {reason}; the schedule caused only {words}"
                )

    def check_seq_nos(self) -> None:
        """2.0.1: the CSMS tells a lost TransactionEvent by a gap in seqNo; the station numbers each transaction's
        events from 0 (Part 2 E §1.3.2.1) and keeps a message's number across retries and restarts, so every number
        up to a transaction's last must have arrived."""
        seen: dict[str, set[int]] = {}
        for m in self.csms.messages("TransactionEvent"):
            if not m.refused:
                seen.setdefault(str(m.payload["transactionInfo"]["transactionId"]), set()).add(m.payload["seqNo"])
        missing = [
            f"{tx[:8]}:{n}" for tx, numbers in seen.items() for n in sorted(set(range(max(numbers) + 1)) - numbers)
        ]
        self.report.seq_gaps = len(missing)
        if missing:
            self.report.problems.append(f"TransactionEvent seqNo never received: {missing[:20]}")

    async def run(self) -> Report:
        report = self.report
        self.say(
            f"chaos soak: seed {report.seed} (replay with --seed {report.seed}), {report.sessions} sessions, "
            f"OCPP {self.ocpp}, "
            + (f"{self.evses} EVSEs, meters {report.model}" if self.evses > 1 else f"meter {self.model}")
            + (", simulated cars" if self.ev else "")
            + f", work directory {self.workdir}"
        )
        began = time.monotonic()
        await self.start()
        try:
            try:
                await self.sessions()
                await self.settle()
            except* Stuck as stuck:  # the report still says what was signed and delivered up to there
                for exc in stuck.exceptions:
                    report.stuck += 1
                    report.problems.append(f"stuck: {exc}")
                if self.daemon is not None and self.daemon.proc.poll() is None:
                    self.daemon.proc.send_signal(signal.SIGABRT)
                    report.problems.append(f"the daemon's threads at that moment: {self.daemon.log_path}")
        finally:
            await self.close()
        self.compare()
        self.report.seconds = time.monotonic() - began
        return self.report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ocpp", choices=("1.6", "2.0.1"), default="1.6")
    parser.add_argument(
        "--model", default="smartme", help=f"one of {', '.join(SIMULATED_MODELS)}, or one per EVSE: A,B"
    )
    parser.add_argument("--evses", type=int, choices=range(1, MAX_EVSES + 1), default=1, help="EVSEs on the one line")
    parser.add_argument(
        "--ev", action="store_true", help="a simulated car behind a simulated charge controller on each EVSE"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs, store and ledger here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="station-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        soak = Soak(workdir, seed, args.sessions, ocpp=args.ocpp, model=args.model, evses=args.evses, ev=args.ev)
    except ValueError as exc:
        parser.error(str(exc))
    report = asyncio.run(soak.run())
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
