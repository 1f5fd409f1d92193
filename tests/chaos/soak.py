"""The chaos soak: many charging sessions while a seeded random schedule breaks the CSMS link, the daemon and the
meter, then the meter's own ledger is compared with what the CSMS received.

Real at every boundary: the daemon is a `station run` process (so it can be SIGKILLed), the meter simulator serves
on one end of a real pty pair (the daemon opens the other), the CSMS is a WebSocket server on loopback. The promise
checked: every record the meter signed reaches the CSMS exactly once (a repeat under the same message id, which
OCPP's at-least-once delivery allows, is counted apart), in order, and verifies; the daemon never crashes; over
OCPP 2.0.1 also every TransactionEvent seqNo arrives. Either OCPP version, any simulated meter model.

    python -m tests.chaos.soak --sessions 2000 [--seed N] [--ocpp 1.6|2.0.1] [--model MODEL] [--workdir DIR]

prints the seed first, so a failing run can be replayed with `--seed`.
"""

from __future__ import annotations

import argparse
import asyncio
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

from station.demo.csms import CsmsBehaviour, LocalCsms, Received
from station.demo.session import extract_signed_record
from station.diag import client
from station.meter import ocmf
from station.meter.nullmodem import LineFaults, VirtualNullModem
from station.meter.sim.base import Faults, SimulatedMeter
from station.meter.sim.server import SIMULATED_MODELS, build_simulator, serve
from tests.conftest import Process, write_config

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
MOMENTS = ("before_start", "starting", "charging", "stopping", "signing", "sending_stop")


@dataclass
class Report:
    seed: int
    sessions: int
    ocpp: str = "1.6"
    model: str = "smartme"
    faults: Counter[str] = field(default_factory=Counter)
    starts_seen: int = 0
    signed: int = 0
    delivered: int = 0
    duplicated: int = 0  # a record that reached the CSMS in two different messages
    repeated: int = 0  # a message that arrived again under the same message id (allowed)
    lost: int = 0
    phantom: int = 0  # delivered but never signed by the meter
    not_verifying: int = 0
    out_of_order: int = 0
    seq_gaps: int = 0  # 2.0.1: a seqNo of the station's TransactionEvent stream that never reached the CSMS
    crashes: int = 0
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
        )

    def text(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        lines = [
            f"chaos soak: seed {self.seed}, {self.sessions} sessions, OCPP {self.ocpp}, meter {self.model}, "
            f"{self.seconds:.0f} s",
            f"  faults injected: {faults}",
            f"  records signed by the meter: {self.signed}; delivered: {self.delivered}; lost: {self.lost}; "
            f"duplicated: {self.duplicated}; repeats under the same message id: {self.repeated}",
            f"  not verifying: {self.not_verifying}; out of order: {self.out_of_order}; phantom: {self.phantom}; "
            f"daemon crashes: {self.crashes}; sessions whose start reached the CSMS: {self.starts_seen}"
            + (f"; seqNo gaps: {self.seq_gaps}" if self.ocpp == "2.0.1" else ""),
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


class Soak:
    def __init__(
        self,
        workdir: Path,
        seed: int,
        sessions: int,
        say: Callable[[str], None] = print,
        ocpp: str = "1.6",
        model: str = "smartme",
    ) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.report = Report(seed, sessions, ocpp, model)
        self.ocpp = ocpp
        self.model = model
        self.say = say
        self.csms = LocalCsms()
        self.cable = VirtualNullModem()
        self.sim: SimulatedMeter | None = None
        self.sim_server: Any = None
        self.daemon: Process | None = None
        self.daemons = 0
        self.config_path = workdir / "station.toml"
        self.socket = str(workdir / "diag.sock")
        self.ledger = workdir / "ledger.jsonl"
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ set-up

    async def start(self) -> None:
        await self.csms.start()
        await self.cable.start()
        self.sim = build_simulator(
            self.model, state=self.workdir / "meter.json", ledger=self.ledger, power_w=22000, signing_time=0.2
        )
        self.sim_server = await serve(self.sim, self.cable.path_b)
        write_config(
            self.config_path,
            {
                "station": {"id": STATION},
                "csms": {
                    "url": self.csms.url,
                    "ocpp_version": self.ocpp,
                    "response_timeout": 2,
                    "reconnect_min": 0.2,
                    "reconnect_max": 1,
                },
                "meter": {"model": self.model, "port": self.cable.path_a, "latency": 0.3},
                "storage": {"path": str(self.workdir / "station.db")},
                "diagnostics": {"socket": self.socket},
            },
        )
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
            results = await self.csms.set_variables(STATION, items)
            assert [r["attribute_status"] for r in results] == ["Accepted", "Accepted"], results
        else:
            for key, value in (("TransactionMessageRetryInterval", "1"), ("TransactionMessageAttempts", "10")):
                answer = await self.ask(lambda k=key, v=value: self.csms.change_configuration(STATION, k, v))
                assert answer == "Accepted", (key, answer)

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        if self.daemon is not None:
            await self.daemon.terminate(signal.SIGTERM)
        if self.sim_server is not None:
            await self.sim_server.shutdown()
        await self.cable.stop()
        await self.csms.stop()

    def start_daemon(self) -> None:
        self.daemons += 1
        log = self.workdir / f"daemon-{self.daemons}.log"
        self.daemon = Process(["run", "--config", str(self.config_path), "--log-format", "json"], log)

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
        raise AssertionError(f"the station did not answer {accept} within {timeout} s; logs in {self.workdir}")

    def diag_status(self) -> dict[str, Any] | None:
        try:
            return client.ask(self.socket, {"command": "status"}, timeout=5)["status"]  # type: ignore[no-any-return]
        except (client.DiagError, ValueError):
            return None

    # ------------------------------------------------------------------ faults

    def later(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def inject(self, fault: str) -> None:
        assert self.sim is not None and self.daemon is not None
        self.report.faults[fault] += 1
        rng = self.rng
        if fault == "kill":
            await self.daemon.terminate(signal.SIGKILL)
            await asyncio.sleep(rng.uniform(0, 0.5))
            self.start_daemon()
        elif fault == "drop":
            await self.csms.drop_connections()
        elif fault == "csms_restart":
            port = self.csms.port
            await self.csms.stop()
            await self.csms.drop_connections()
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            self.csms.port = port
            await self.csms.start()
        elif fault in ("late", "callerror", "no_answer"):
            # 2.0.1: Started, Updated or Ended, whichever goes next
            action = "TransactionEvent" if self.ocpp == "2.0.1" else rng.choice(["StartTransaction", "StopTransaction"])
            if fault == "late":
                self.csms.behaviour.late[action] = rng.uniform(0.5, 3.0)  # the station waits 2 s
            elif fault == "callerror":
                self.csms.behaviour.call_errors[action] = 1
            else:
                self.csms.behaviour.silent[action] = 1
        elif fault == "meter_slow":
            self.sim.faults.latency = rng.uniform(0.02, 0.1)
            self.sim.signing_time = rng.uniform(1.0, 4.0)
            self.later(self._restore_meter_speed(rng.uniform(2, 6)))
        elif fault == "meter_busy":
            self.sim.faults.busy_next = rng.randint(1, 4)
        elif fault == "meter_silent":
            self.sim.faults.mute = True
            self.later(self._unmute(rng.uniform(0.5, 4)))
        elif fault == "corrupt":
            self.cable.faults.corrupt_to_a = rng.randint(1, 3)
        elif fault == "power_loss":
            self.later(self.sim.power_cycle(rng.uniform(0.3, 3)))

    async def _restore_meter_speed(self, after: float) -> None:
        await asyncio.sleep(after)
        assert self.sim is not None
        self.sim.faults.latency = 0.0
        self.sim.signing_time = 0.2

    async def _unmute(self, after: float) -> None:
        await asyncio.sleep(after)
        assert self.sim is not None
        self.sim.faults.mute = False

    # ------------------------------------------------------------------ one session

    async def session(self, number: int) -> None:
        rng = self.rng
        fault = rng.choices(list(FAULTS), weights=list(FAULTS.values()))[0]
        moment = rng.choice(MOMENTS)
        csms = self.csms

        async def at(this: str) -> None:
            if moment == this and fault != "none":
                await self.inject(fault)

        await at("before_start")
        if moment == "sending_stop" and fault in ("late", "callerror", "no_answer"):
            moment = "stopping"  # those are set up right before the stop instead
        mark = len(csms.received)
        tag = f"TAG-{number:05d}"
        # A start whose answer was lost may have started a transaction after all: those are stopped when the
        # station refuses the next start (connector busy).
        await self.retry(lambda: csms.start_session(STATION, tag), ("Accepted",), refused=self.stop_leftovers)
        await at("starting")
        transaction_id = await self.started(tag, mark)
        if transaction_id is None:
            return  # the start never got through (e.g. killed before the meter started): the ledger tells the rest
        self.report.starts_seen += 1
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
        with contextlib.suppress(TimeoutError):
            await csms.wait_until(lambda: transaction_id in {t for _, t in self.ends(mark)}, timeout=60)

    async def started(self, tag: str, mark: int, timeout: float = 30) -> str | None:
        """The CSMS's transaction id of this session's start; None once the station has shown Available for 2 s with
        no start on its way (the start was lost, e.g. the daemon was killed before the meter started)."""
        csms = self.csms
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            found = [m for m, _, id_tag in self.starts(mark) if id_tag == tag]
            if found:
                start = found[0]
                with contextlib.suppress(TimeoutError):  # 1.6: the id is the CSMS's answer to StartTransaction
                    await csms.wait_until(lambda s=start: self.transaction_of(s) is not None, timeout=60)
                return self.transaction_of(start)
            statuses = [m for m in csms.received[mark:] if m.action == "StatusNotification"]
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

    def diag_outbox_empty(self) -> bool:
        status = self.diag_status()
        return status is not None and status["ocpp"]["queue_depth"] == 0

    # ------------------------------------------------------------------ the end: settle and compare

    async def settle(self, timeout: float = 180) -> None:
        """No more faults: wait until the daemon has delivered everything and no transaction is open anywhere."""
        assert self.sim is not None
        self.sim.faults = Faults()
        self.sim.signing_time = 0.2
        self.cable.faults = LineFaults()
        self.csms.behaviour = CsmsBehaviour()
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
                if not running and not open_at_csms and status["ocpp"]["queue_depth"] == 0 and not self.sim.charging:
                    return
            await asyncio.sleep(1)
        raise AssertionError(f"the station did not settle within {timeout} s; logs in {self.workdir}")

    async def stop_leftovers(self) -> None:
        for transaction_id in self._open_at_csms():
            await self.ask(lambda t=transaction_id: self.csms.stop_session(STATION, t))

    def _open_at_csms(self) -> list[str]:
        stopped = {t for _, t in self.ends()}
        return sorted({t for _, t, _ in self.starts() if t is not None and t not in stopped})

    def compare(self) -> None:
        assert self.sim is not None
        report = self.report
        ledger = [json.loads(line) for line in self.ledger.read_text().splitlines()] if self.ledger.exists() else []
        ledger = [entry for entry in ledger if entry["end_wh"] is not None]  # end records (BAUER signs begins too)
        report.signed = len(ledger)
        by_record: dict[str, set[str]] = {}  # record_key -> ids of the messages that carried it
        as_delivered: dict[str, str] = {}  # record_key -> the text the CSMS received
        first_seen: list[str] = []
        for stop, _ in self.ends():
            if stop.unique_id in self.csms.refused:
                continue  # answered with a CALLERROR: the CSMS did not take it; the station sends it again
            try:
                text, _ = extract_signed_record(stop.payload)
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
        signed = [record_key(entry["ocmf"]) for entry in ledger]
        for entry, record in zip(ledger, signed, strict=True):
            ids = by_record.get(record, set())
            if not ids:
                report.lost += 1
                report.problems.append(f"lost: {entry['pagination']} was signed but never delivered")
                continue
            report.delivered += 1
            if len(ids) > 1:
                report.duplicated += 1
                report.problems.append(f"duplicated: {entry['pagination']} in messages {sorted(ids)}")
            if not ocmf.verify(ocmf.parse(as_delivered[record]), self.sim.public_key_hex).valid:
                report.not_verifying += 1
                report.problems.append(f"not verifying: {entry['pagination']} as the CSMS received it")
        phantom = [r for r in by_record if r not in set(signed)]
        report.phantom = len(phantom)
        delivered_order = [r for r in first_seen if r in set(signed)]
        expected_order = [r for r in signed if r in by_record]
        if delivered_order != expected_order:
            report.out_of_order = sum(1 for a, b in zip(delivered_order, expected_order, strict=False) if a != b)
            report.problems.append("records reached the CSMS in another order than the meter signed them")
        if self.ocpp == "2.0.1":
            self.check_seq_nos()

    def check_seq_nos(self) -> None:
        """2.0.1: the CSMS tells a lost TransactionEvent by a gap in seqNo; the station numbers each transaction's
        events from 0 (Part 2 E §1.3.2.1) and keeps a message's number across retries and restarts, so every number
        up to a transaction's last must have arrived."""
        seen: dict[str, set[int]] = {}
        for m in self.csms.messages("TransactionEvent"):
            if m.unique_id not in self.csms.refused:
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
            f"OCPP {self.ocpp}, meter {self.model}, work directory {self.workdir}"
        )
        began = time.monotonic()
        await self.start()
        try:
            for number in range(self.report.sessions):
                await self.session(number)
                if (number + 1) % 25 == 0:
                    self.say(f"  ... {number + 1} sessions, faults so far: {dict(self.report.faults)}")
            await self.settle()
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
    parser.add_argument("--model", choices=SIMULATED_MODELS, default="smartme")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs, store and ledger here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="station-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(Soak(workdir, seed, args.sessions, ocpp=args.ocpp, model=args.model).run())
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
