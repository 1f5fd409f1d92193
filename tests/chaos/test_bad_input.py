"""Property-based bad-input suites (hypothesis, fixed example budgets): frames from the CSMS, records from the meter,
config files and diagnostics requests. Whatever arrives gets a clear refusal, never a crash, and changes nothing.

The station runs once per module, in a thread with its own event loop, against a raw WebSocket CSMS on loopback (so
frames no OCPP library would send can be sent); each example is sent to it from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from station.app import Station, running_station
from station.config import ConfigError, load_config, parse_config
from station.meter import ocmf
from station.meter.records import begin_wh, end_wh, examine_record, record_facts
from tests.meter.test_ocmf_vectors import load as load_vectors
from tests.ocpp.raw_csms import RawCsms

T = TypeVar("T")
EXAMPLES = 150  # per property: the fixed budget CI runs

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=60)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


class StationThread:
    """The daemon's parts on an event loop of their own, and a raw CSMS it is connected to."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self.raw = RawCsms()
        self.station: Station | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self._run())
        except BaseException as exc:  # reported by the tests
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.raw.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
            port = server.sockets[0].getsockname()[1]
            config = parse_config(
                {
                    "station": {"id": "CP-FUZZ"},
                    "csms": {
                        "url": f"ws://127.0.0.1:{port}/ocpp",
                        "response_timeout": 5,
                        "reconnect_min": 0.2,
                        "reconnect_max": 1,
                    },
                    "meter": {"transport": "simulated", "simulator": {"state": str(self.workdir / "m.json")}},
                    "storage": {"path": str(self.workdir / "s.db")},
                    "diagnostics": {"socket": str(self.workdir / "diag.sock")},
                }
            )
            async with running_station(config) as station:
                self.station = station
                await asyncio.wait_for(self.raw.connected.wait(), 20)
                await asyncio.sleep(0.5)  # boot and first status reports
                self._ready.set()
                await self._stop.wait()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> StationThread:
        self.thread.start()
        self._ready.wait(60)
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a bad frame must not change."""
        assert self.station is not None
        store = self.station.store
        settings_rows = tuple(
            (r["key"], r["value"]) for r in store._read("SELECT key, value FROM settings WHERE key != 'store.probe'")
        )
        connectors = tuple(
            (e.phase, tuple(c.operative for c in e.connectors.values()), e.transaction)
            for e in self.station.runtime.core.evses.values()
        )
        transactions = len(store.recent_transactions(1000))
        return settings_rows, connectors, transactions, store.outbox_depth("transaction_started")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StationThread]:
    station = StationThread(tmp_path_factory.mktemp("fuzz")).start()
    yield station
    station.stop()


PROBE = '[2, "alive", "GetConfiguration", {"key": ["HeartbeatInterval"]}]'


def exchange(running: StationThread, frame: str) -> list[Any] | None:
    """Send a frame, then a probe; the station handles frames in order, so whatever arrives before the probe's
    answer is its answer to the frame (None: it rightly did not answer). The probe's answer proves it still works."""

    async def go() -> list[Any] | None:
        raw = running.raw
        assert raw.connection is not None
        while not raw.inbox.empty():
            raw.inbox.get_nowait()
        await raw.connection.send(frame)
        await raw.connection.send(PROBE)
        answers = []
        while True:
            message = await asyncio.wait_for(raw.inbox.get(), 10)
            if message[:2] == [3, "alive"]:
                assert message[2]["configurationKey"][0]["key"] == "HeartbeatInterval"
                break
            answers.append(message)
        assert len(answers) <= 1, answers
        return answers[0] if answers else None

    return running.run(go())


# ---------------------------------------------------------------------- frames from the CSMS

CSMS_ACTIONS = [
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "DataTransfer",
    "GetConfiguration",
    "GetLocalListVersion",
    "SendLocalList",
    "TriggerMessage",
    "UnlockConnector",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "Reset",
    "NoSuchAction",
    "",
]
# Fields that make a request valid and change charging: left out, so every such request is invalid.
REQUIRED_FOR_CHANGE = {"RemoteStartTransaction": "idTag", "RemoteStopTransaction": "transactionId", "Reset": "type"}
FIELDS = ["key", "value", "connectorId", "type", "vendorId", "messageId", "data", "listVersion", "updateType"]


@st.composite
def ocpp_frames(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["text", "array", "call"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "array":
        return json.dumps(draw(st.lists(json_values, max_size=6)))
    action = draw(st.sampled_from(CSMS_ACTIONS) | st.text(max_size=30))
    fields = [f for f in [*FIELDS, "idTag", "transactionId", "chargingProfile"] if f != REQUIRED_FOR_CHANGE.get(action)]
    payload = draw(
        st.dictionaries(st.sampled_from(fields) | st.text(max_size=10), json_values | st.text(min_size=500), max_size=5)
    )
    for name in list(payload):
        if name == REQUIRED_FOR_CHANGE.get(action):
            del payload[name]
    message_type = draw(st.sampled_from([2, 2, 2, 3, 4, 5, -1, "2", None]))
    unique_id = draw(st.text(min_size=1, max_size=40) | st.integers() | st.just("x" * 100))
    return json.dumps([message_type, unique_id, action, payload], ensure_ascii=draw(st.booleans()))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=ocpp_frames())
def test_any_frame_from_the_csms_gets_the_right_answer_and_changes_nothing(running: StationThread, frame: str) -> None:
    before = running.snapshot()
    answer = exchange(running, frame)
    try:
        message = json.loads(frame)
    except ValueError:
        message = None
    if answer is not None:
        assert answer[0] in (3, 4), answer  # a CALLRESULT or a CALLERROR, to the message that was sent
        if isinstance(message, list) and len(message) > 1 and isinstance(message[1], str):
            assert answer[1] == message[1], (frame[:100], answer)
    if answer is None or answer[0] == 4:
        assert running.snapshot() == before, frame[:200]  # refused or ignored: nothing changed


# ---------------------------------------------------------------------- hostile frames against a live connection

HOSTILE_EXAMPLES = 30


def nested(depth: int, opener: str) -> str:
    closer = "]" if opener == "[" else "}"
    head = "[" if opener == "[" else '{"a":'
    return head * depth + "0" + closer * depth


@st.composite
def hostile_bursts(draw: st.DrawFn) -> list[str | bytes]:
    """What an attacker sends rather than what a buggy CSMS sends: deep nesting (balanced or not), huge strings (up to
    beyond the 1 MiB frame limit, which closes the connection), answers to nothing, binary frames, bursts of valid
    requests, and garbage, in bursts of several frames sent back to back."""
    kind = draw(st.sampled_from(["deep", "huge", "stale", "binary", "burst", "garbage", "mixed"]))
    if kind == "deep":
        depth = draw(st.sampled_from([33, 100, 1_000, 10_000, 100_000]))
        frame = nested(depth, draw(st.sampled_from(["[", "{"])))
        if draw(st.booleans()):
            frame = frame[: len(frame) // 2]  # unbalanced: never closes
        if draw(st.booleans()):
            frame = '[2, "deep", "DataTransfer", {"vendorId": "v", "data": ' + frame + "}]"
        return [frame]
    if kind == "huge":
        size = draw(st.sampled_from([10_000, 100_000, 900_000, 1_100_000]))
        letter = draw(st.sampled_from(["a", "é", "\\", '"', "ws://a:b@", "AuthorizationKey"]))
        data = (letter * (size // len(letter) + 1))[:size]
        return [json.dumps([2, "huge", "DataTransfer", {"vendorId": "v", "data": data}])]
    if kind == "stale":
        count = draw(st.integers(1, 2000))
        ids = draw(st.lists(st.text(max_size=40), min_size=1, max_size=5))
        return [json.dumps([3 if i % 3 else 4, ids[i % len(ids)], {}]) for i in range(count)]
    if kind == "binary":
        return [draw(st.binary(min_size=1, max_size=5000))]
    if kind == "burst":
        count = draw(st.integers(10, 3000))
        request = draw(
            st.sampled_from(
                [
                    '{"requestedMessage": "Heartbeat"}',
                    '{"requestedMessage": "StatusNotification"}',
                    '{"requestedMessage": "MeterValues", "connectorId": 1}',
                ]
            )
        )
        return [f'[2, "b{i}", "TriggerMessage", {request}]' for i in range(count)]
    if kind == "garbage":
        return draw(st.lists(st.text(max_size=300), min_size=1, max_size=20))
    return [draw(st.sampled_from(["[", "]", "[2]", "[3]", "[4,", "{}", "null", "[2, null]"])) for _ in range(20)]


def settle(running: StationThread, timeout: float = 20) -> None:
    """Connected (again, after a drop within the back-off), and answering on the connection it has now."""

    async def go() -> None:
        raw = running.raw
        assert running.station is not None
        async with asyncio.timeout(timeout):
            while True:
                if running.station.connection.state.connected and raw.connection is not None:
                    try:
                        while not raw.inbox.empty():
                            raw.inbox.get_nowait()
                        await raw.connection.send(PROBE)
                        while True:
                            message = await asyncio.wait_for(raw.inbox.get(), 2)
                            if message[:2] == [3, "alive"]:
                                return
                    except (TimeoutError, ConnectionError, ConnectionClosed):
                        pass
                await asyncio.sleep(0.1)

    running.run(go(), timeout=timeout + 5)


def full_session(running: StationThread) -> None:
    """A remote start is accepted, reaches the CSMS, and its stop brings the signed record."""

    async def go() -> None:
        raw = running.raw
        assert running.station is not None and raw.connection is not None
        starts, stops = len(raw.called("StartTransaction")), len(raw.called("StopTransaction"))
        await raw.connection.send('[2, "rs", "RemoteStartTransaction", {"idTag": "FUZZ", "connectorId": 1}]')
        async with asyncio.timeout(30):
            while len(raw.called("StartTransaction")) == starts or not raw.transaction_ids:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            connector = running.station.runtime.core.evses[1]
            while connector.phase.value != "charging":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            stop = {"transactionId": raw.transaction_ids[-1]}
            await raw.connection.send(json.dumps([2, "rt", "RemoteStopTransaction", stop]))
            while len(raw.called("StopTransaction")) == stops:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        end = raw.called("StopTransaction")[-1][3]
        assert any(s.get("format") == "SignedData" for mv in end["transactionData"] for s in mv["sampledValue"])

    running.run(go(), timeout=40)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


@pytest.fixture(scope="module")
def hostile_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StationThread]:
    station = StationThread(tmp_path_factory.mktemp("hostile")).start()
    station.baseline_rss = rss_mb()  # type: ignore[attr-defined]
    yield station
    station.stop()


@pytest.mark.slow  # about a minute: megabyte frames, reconnects, a signed session every few examples
@settings(max_examples=HOSTILE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(burst=hostile_bursts())
def test_hostile_frames_never_take_the_station_offline(hostile_target: StationThread, burst: list[str | bytes]) -> None:
    """Issue 14: whatever frames a hostile CSMS sends, the station is still connected, or reconnects within the
    back-off (a frame beyond the 1 MiB limit closes the connection, rightly), it still answers, a remote start still
    becomes a signed session, and its memory stays bounded."""
    running = hostile_target
    first = burst[0]
    event(f"{len(burst)} frame(s), the first {len(first)} long" if len(burst) == 1 else f"a burst of {len(burst)}")

    async def send() -> None:
        raw = running.raw
        assert raw.connection is not None
        with contextlib.suppress(ConnectionClosed):
            for frame in burst:
                await raw.connection.send(frame)

    running.run(send(), timeout=60)
    settle(running)
    running.examples = getattr(running, "examples", 0) + 1  # type: ignore[attr-defined]
    if running.examples % 10 == 1:  # type: ignore[attr-defined]
        full_session(running)
    assert running.station is not None
    assert not any(task.done() for task in running.station.tasks)
    assert running.station.connection.trace.chars <= 512 * 1024
    assert rss_mb() - running.baseline_rss < 150, "memory grew with what the CSMS sent"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- diagnostics requests


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    line=st.binary(max_size=300)
    | st.builds(
        lambda command, extra: json.dumps({"command": command, **extra}).encode(),
        st.sampled_from(["status", "transactions", "transaction", "export", "log", "security-log", "x", ""]),
        st.dictionaries(st.sampled_from(["last", "id", "format", "follow"]), json_values, max_size=3),
    )
)
def test_any_diagnostics_request_gets_an_answer_and_changes_nothing(running: StationThread, line: bytes) -> None:
    assert running.station is not None
    before = running.snapshot()

    async def ask() -> dict[str, Any]:
        from station.diag.server import DiagnosticsServer

        assert running.station is not None
        return await DiagnosticsServer(running.station, str(running.workdir / "unused.sock")).answer(line)

    answer = running.run(ask())
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool)
    if not answer["ok"]:
        assert isinstance(answer["error"], str) and answer["error"]
    assert running.snapshot() == before


# ---------------------------------------------------------------------- records from the meter

VECTORS = [v for v in load_vectors() if v.get("expected_valid") and v.get("public_key")]


@st.composite
def damaged_records(draw: st.DrawFn) -> tuple[str, str, str]:
    vector = draw(st.sampled_from(VECTORS))
    text = vector["ocmf"]
    how = draw(st.sampled_from(["truncate", "flip", "insert", "garbage", "swap_section"]))
    if how == "truncate":
        damaged = text[: draw(st.integers(0, len(text) - 1))]
    elif how == "flip":
        i = draw(st.integers(0, len(text) - 1))
        damaged = text[:i] + draw(st.characters(blacklist_characters=text[i])) + text[i + 1 :]
    elif how == "insert":
        i = draw(st.integers(0, len(text)))
        damaged = text[:i] + draw(st.text(min_size=1, max_size=20)) + text[i:]
    elif how == "garbage":
        damaged = draw(st.text(max_size=300) | st.just("OCMF|") | st.just("OCMF|{}|{}") | st.just("OCMF|[1]|{}"))
    else:
        other = draw(st.sampled_from(VECTORS))["ocmf"]
        damaged = text.rsplit("|", 1)[0] + "|" + other.rsplit("|", 1)[1]  # another record's signature
    return text, damaged, vector["public_key"]


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(case=damaged_records())
def test_a_damaged_record_is_never_taken_as_valid_and_never_crashes(case: tuple[str, str, str]) -> None:
    original, damaged, key = case
    result = examine_record(damaged, key, context="Transaction.End")
    assert result.data == damaged  # forwarded untouched, whatever it is
    if result.verified:  # only if the damage did not touch what is signed (e.g. hex case of the signature)
        assert ocmf.parse(damaged).payload_text == ocmf.parse(original).payload_text
        assert ocmf.verify(ocmf.parse(damaged), key).valid
    else:
        assert result.problems
    record_facts(damaged)
    begin_wh(damaged)
    end_wh(damaged)


@settings(max_examples=EXAMPLES, deadline=None)
@given(case=damaged_records(), pagination=st.text(min_size=1, max_size=8))
def test_a_record_of_another_transaction_is_flagged(case: tuple[str, str, str], pagination: str) -> None:
    original, _, key = case
    record = ocmf.parse(original)
    result = examine_record(original, key, context="Transaction.End", expected_pagination=pagination)
    if pagination != record.pagination:
        assert not result.verified and any("expected" in p for p in result.problems)


# ---------------------------------------------------------------------- config files

config_tables = st.dictionaries(
    st.sampled_from(["station", "csms", "meter", "storage", "diagnostics", "extra"]),
    st.dictionaries(
        st.sampled_from(["id", "url", "model", "port", "baudrate", "path", "security_profile", "http", "x"]),
        st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=60),
        max_size=5,
    ),
    max_size=6,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=config_tables)
def test_any_config_is_either_accepted_or_refused_with_named_problems(data: dict[str, Any]) -> None:
    try:
        parse_config(data, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert all("." in p.split(":")[0] or p.startswith("[") for p in exc.problems), exc.problems


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300) | st.binary(max_size=300))
def test_any_config_file_gives_ok_or_a_config_error(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "fuzz.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems


# ---------------------------------------------------------------------- garbage from the meter's registers


class GarbageLine:
    """Each model's driver on a real pty pair, facing its simulator with the register contents replaced by whatever
    the example draws: every read the driver makes gets garbage of the right size."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.drivers: dict[str, Any] = {}
        self.sims: dict[str, Any] = {}
        self.garbage: list[int] = [0]
        self._closers: list[Any] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        from station.bus import LineSettings, ModbusBus, ModbusDevice
        from station.meter.models import MODELS, build_driver
        from station.meter.nullmodem import VirtualNullModem
        from station.meter.sim.server import build_simulator, serve

        for model in MODELS:
            cable = await VirtualNullModem().start()
            sim = build_simulator(model, state=self.workdir / f"{model}.json", ledger=None, signing_time=0.1)

            def garbage(put: Any, address: int, count: int) -> None:
                put(address, [self.garbage[i % len(self.garbage)] for i in range(count)])

            sim.refresh = garbage  # type: ignore[method-assign]
            server = await serve(sim, cable.path_b)
            device = ModbusDevice(ModbusBus(LineSettings(cable.path_a, retries=0)), sim.device_id, latency=0.05)
            driver = build_driver(model, device, {}, 0.01)
            await driver.open()
            self.drivers[model], self.sims[model] = driver, sim
            self._closers += [driver.close, server.shutdown, cable.stop]

    def start(self) -> GarbageLine:
        self.thread.start()
        self.run(self._start())
        return self

    def stop(self) -> None:
        async def close() -> None:
            for closer in self._closers:
                await closer()

        self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def garbage_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GarbageLine]:
    line = GarbageLine(tmp_path_factory.mktemp("garbage")).start()
    yield line
    line.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(registers=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40) | st.just([0xFFFF]) | st.just([0]))
def test_garbage_registers_give_meter_errors_never_crashes(garbage_line: GarbageLine, registers: list[int]) -> None:
    from station.meter.interface import MeterError

    garbage_line.garbage = registers

    async def read_everything(driver: Any) -> None:
        driver._public_key = None  # read the key again (drivers cache it)
        for read in (
            driver.identity,
            driver.public_key,
            driver.live_values,
            driver.transaction_running,
            driver.fiscal_reading,
        ):
            try:
                await read()
            except MeterError:
                pass  # a clear refusal is the right answer to garbage

    for model, driver in garbage_line.drivers.items():
        try:
            garbage_line.run(read_everything(driver))
        except Exception as exc:
            raise AssertionError(f"{model}: garbage registers raised {exc!r}") from exc
