"""RAPI framing (station/ev/rapi.py) against the protocol document's own examples (rapi_proc.h, RAPIVER 5.2.1),
and what it does with garbage, bad checksums, over-long lines and answers nobody waits for."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from station.ev import rapi
from station.meter.nullmodem import VirtualNullModem

# Every checksummed example in the document, as it is printed there.
DOC_XOR = ["$F0 1^43", "$F0 0^42", "$SK 0^2C", "$ST 0 0 0 0^23", "$G0^53", "$G3^50", "$G4^57", "$GA^22", "$GC^20",
           "$GD^27", "$GE^26", "$GF^25", "$GG^24", "$GH^2B", "$GM^2E", "$GO^2C", "$GP^33", "$GS^30", "$GT^37",
           "$GU^36", "$GV^35"]  # fmt: skip
DOC_ADDITIVE = ["$FB 7*03", "$FD*AE", "$FE*AF", "$FR*BC", "$FS*BD", "$S0 0*F7", "$S0 1*F8", "$S2 0*F9", "$S2 1*FA",
                "$SL 1*14", "$SL 2*15", "$SL A*24"]  # fmt: skip


def _split(example: str) -> tuple[str, list[str]]:
    words = example[1:].split("^")[0].split("*")[0].split(" ")
    return words[0], words[1:]


@pytest.mark.parametrize("example", DOC_XOR)
def test_encode_reproduces_the_documents_xor_examples(example: str) -> None:
    command, args = _split(example)
    assert rapi.encode(command, args) == example.encode() + b"\r"


@pytest.mark.parametrize("example", DOC_ADDITIVE)
def test_encode_reproduces_the_documents_additive_examples(example: str) -> None:
    command, args = _split(example)
    assert rapi.encode(command, args, xor=False) == example.encode() + b"\r"


@pytest.mark.parametrize("example", DOC_XOR + DOC_ADDITIVE)
def test_the_documents_examples_parse_with_either_checksum(example: str) -> None:
    frame = rapi.parse_line(example.encode())
    command, args = _split(example)
    assert (frame.token, list(frame.args), frame.seq) == (command, args, None)
    assert frame.checksum == ("xor" if "^" in example else "additive")


def test_checksums_are_8_bit() -> None:
    assert rapi.additive_checksum(b"$FB 7") == 0x03  # 0x103: the sum wraps
    assert rapi.xor_checksum(b"$GS") == 0x30


def test_a_sequence_id_is_the_last_parameter_before_the_checksum() -> None:
    line = rapi.encode("SC", [16, "V"], seq=0x2A)
    assert line.startswith(b"$SC 16 V :2A^") and line.endswith(b"\r")
    assert rapi.xor_checksum(line[: line.index(b"^")]) == int(line[-3:-1], 16)
    answer = b"$OK 16 :2A"
    frame = rapi.parse_line(answer + b"^%02X" % rapi.xor_checksum(answer))
    assert (frame.token, frame.args, frame.seq, frame.is_answer) == ("OK", ("16",), 0x2A, True)


def test_sequence_id_00_is_reserved() -> None:
    with pytest.raises(ValueError, match=r"01\.\.FF"):
        rapi.encode("GS", seq=0)
    body = b"$OK :00"
    with pytest.raises(rapi.RapiFrameError, match="sequence id"):
        rapi.parse_line(body + b"^%02X" % rapi.xor_checksum(body))


def test_lower_case_checksum_digits_are_taken() -> None:
    assert rapi.parse_line(b"$GH^2b").token == "GH"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"$GS^31", "checksum"),  # one off
        (b"$FE*AE", "checksum"),
        (b"$GS^3", "checksum"),  # one digit
        (b"$GS^3G", "checksum"),
        (b"$GS^300", "checksum"),  # trailing junk after the checksum
        (b"$GS", "checksum"),  # none: the document's "FOR TESTING ONLY" form
        (b"GS^30", "garbage"),
        (b"$g", "checksum"),
        (b"$" + b"A" * 200, "too_long"),
    ],
)
def test_bad_lines_are_named(line: bytes, kind: str) -> None:
    with pytest.raises(rapi.RapiFrameError) as info:
        rapi.parse_line(line)
    assert info.value.kind == kind


def test_a_line_without_checksum_only_when_asked() -> None:
    assert rapi.parse_line(b"$GS", require_checksum=False).checksum == "none"


def test_malformed_frames() -> None:
    for body in (b"$gs 1", b"$OK  1", b"$OK \x01", b"$OK " + b" ".join([b"1"] * 12)):
        line = body + b"^%02X" % rapi.xor_checksum(body)
        with pytest.raises(rapi.RapiFrameError) as info:
            rapi.parse_line(line)
        assert info.value.kind == "malformed", body


def test_encode_refuses_what_the_firmware_would_drop_or_misread() -> None:
    with pytest.raises(ValueError, match="2 capital"):
        rapi.encode("gs")
    with pytest.raises(ValueError, match="reserved"):
        rapi.encode("FP", ["a^b"])
    with pytest.raises(ValueError, match="firmware takes 31"):
        rapi.encode("FP", ["0", "0", "x" * 20], seq=1)


class Sink:
    def __init__(self) -> None:
        self.bad: list[tuple[str, str]] = []

    def __call__(self, kind: rapi.BadKind, detail: str) -> None:
        self.bad.append((kind, detail))


def test_splitter_skips_garbage_and_lf_and_restarts_on_dollar() -> None:
    sink = Sink()
    splitter = rapi.LineSplitter(sink)
    lines = splitter.feed(b"\x00\xffnoise$GS^30\r\n$OK 0$AT 01 01 32 0100^0F\r")
    assert lines == [b"$GS^30", b"$AT 01 01 32 0100^0F"]
    assert [k for k, _ in sink.bad] == ["garbage", "garbage"]  # the bytes before '$', the line cut off by '$'


def test_splitter_drops_an_over_long_line_whole_and_takes_the_next() -> None:
    sink = Sink()
    splitter = rapi.LineSplitter(sink)
    assert splitter.feed(b"$" + b"9" * 5000) == []
    assert splitter.feed(b"9" * 5000 + b"\r$GS^30\r") == [b"$GS^30"]
    assert [k for k, _ in sink.bad] == ["too_long"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_splitter_and_parser_never_raise_on_any_bytes(chunks: list[bytes]) -> None:
    splitter = rapi.LineSplitter(lambda kind, detail: None)
    for chunk in chunks:
        for line in splitter.feed(chunk):
            assert len(line) <= rapi.LINE_MAX_CHARS
            try:
                rapi.parse_line(line)
            except rapi.RapiFrameError:
                pass


def test_bad_input_is_counted_per_kind_and_logged_once_per_kind() -> None:
    bad = rapi.BadInput("t")
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            bad("checksum", "x")
        bad("garbage", "y")
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["kind"]) for e in warnings] == [
        ("rapi.bad_input", "checksum"),
        ("rapi.bad_input", "garbage"),
    ]
    assert bad.counts == {"checksum": 5, "garbage": 1}


def test_payloads_of_at_gs_gc() -> None:
    at = rapi.parse_at(["03", "03", "16", "0140"])
    assert (at.evse_state, at.pilot_state, at.current_capacity, at.vflags) == (3, 3, 16, 0x140)
    gs = rapi.parse_gs(["fe", "1234", "02", "0100"])
    assert (gs.evse_state, gs.elapsed_s, gs.pilot_state, gs.vflags) == (0xFE, 1234, 2, 0x100)
    gc = rapi.parse_gc(["6", "80", "16", "32"])
    assert (gc.min_amps, gc.hw_max_amps, gc.pilot_amps, gc.configured_max_amps) == (6, 80, 16, 32)
    with pytest.raises(rapi.RapiFrameError, match="evsestate"):
        rapi.parse_at(["zz", "01"])
    with pytest.raises(rapi.RapiFrameError, match="vflags"):
        rapi.parse_gs(["03", "1", "02", "123456"])
    with pytest.raises(rapi.RapiFrameError, match="want 4"):
        rapi.parse_gc(["6", "80", "16"])
    with pytest.raises(rapi.RapiFrameError, match="cmaxamps"):
        rapi.parse_gc(["6", "80", "16", "9" * 20])


# --------------------------------------------------------------------------- the client on a real pty pair


def _answer(body: str) -> bytes:
    raw = body.encode()
    return raw + b"^%02X\r" % rapi.xor_checksum(raw)


class Peer:
    """The far end of the cable, raw: reads the client's lines, writes whatever the test says."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.buf = b""

    async def line(self) -> bytes:
        for _ in range(200):
            if b"\r" in self.buf:
                line, self.buf = self.buf.split(b"\r", 1)
                return line
            try:
                self.buf += os.read(self.fd, 256)
            except BlockingIOError:
                await asyncio.sleep(0.01)
        raise AssertionError("no line from the client")

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)


@pytest_asyncio.fixture
async def wired() -> AsyncIterator[tuple[rapi.RapiClient, Peer, list[rapi.Frame]]]:
    import serial_asyncio_fast

    cable = await VirtualNullModem().start()
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=cable.path_a, baudrate=115200)
    notes: list[rapi.Frame] = []
    client = rapi.RapiClient(reader, writer, name="t", on_notification=notes.append)
    peer = Peer(cable.path_b)
    try:
        yield client, peer, notes
    finally:
        await client.close()
        os.close(peer.fd)
        await cable.stop()


async def test_one_command_gets_its_own_answer_and_notifications_go_aside(
    wired: tuple[rapi.RapiClient, Peer, list[rapi.Frame]],
) -> None:
    client, peer, notes = wired
    task = asyncio.create_task(client.command("GS", timeout=2))
    frame = rapi.parse_line(await peer.line())
    assert frame.token == "GS" and frame.seq is not None
    # A notification and garbage before the answer; an answer with a wrong id (a late one) is not taken either.
    peer.write(_answer("$AT 02 02 32 0100") + b"\x07junk\r" + _answer(f"$OK 01 0 01 0000 :{(frame.seq % 255) + 1:02X}"))
    peer.write(_answer(f"$OK 02 12 02 0100 :{frame.seq:02X}"))
    reply = await task
    assert reply == rapi.Reply(ok=True, args=("02", "12", "02", "0100"))
    assert [n.token for n in notes] == ["AT"]
    assert client.bad.counts == {"garbage": 1, "stray_answer": 1}


async def test_a_late_answer_to_a_timed_out_command_is_not_taken_for_the_next(
    wired: tuple[rapi.RapiClient, Peer, list[rapi.Frame]],
) -> None:
    client, peer, _ = wired
    with pytest.raises(rapi.RapiTimeout, match=r"\$GC"):
        await client.command("GC", timeout=0.2)
    first = rapi.parse_line(await peer.line())
    task = asyncio.create_task(client.command("FS", timeout=2))
    second = rapi.parse_line(await peer.line())
    assert second.seq != first.seq
    peer.write(_answer(f"$OK 6 32 16 32 :{first.seq:02X}"))  # the late one
    peer.write(_answer(f"$NK :{second.seq:02X}"))
    assert await task == rapi.Reply(ok=False, args=())
    assert client.bad.counts == {"stray_answer": 1}


async def test_commands_queue_one_at_a_time(wired: tuple[rapi.RapiClient, Peer, list[rapi.Frame]]) -> None:
    client, peer, _ = wired
    tasks = [asyncio.create_task(client.command(c, timeout=3)) for c in ("GS", "GC", "GV")]
    for want in ("GS", "GC", "GV"):
        frame = rapi.parse_line(await peer.line())
        assert frame.token == want
        await asyncio.sleep(0.05)
        assert peer.buf == b"" and not _readable(peer)  # nothing else sent while this one waits
        peer.write(_answer(f"$OK {want} :{frame.seq:02X}"))
    assert [(await t).args for t in tasks] == [("GS",), ("GC",), ("GV",)]


def _readable(peer: Peer) -> bool:
    try:
        peer.buf += os.read(peer.fd, 256)
    except BlockingIOError:
        return False
    return True


async def test_a_burst_of_garbage_never_breaks_the_reader(
    wired: tuple[rapi.RapiClient, Peer, list[rapi.Frame]],
) -> None:
    client, peer, notes = wired
    peer.write(os.urandom(4000).replace(b"\r", b"") + b"\r" + b"$" + b"Z" * 3000 + b"\r" + _answer("$OK 1 :7F") * 3)
    peer.write(_answer("$AT 01 01 32 0200")[:-4] + b"^00\r")  # bad checksum
    peer.write(_answer("$WF 02"))
    task = asyncio.create_task(client.command("G0", timeout=2))
    frame = rapi.parse_line(await peer.line())
    peer.write(_answer(f"$OK 0 :{frame.seq:02X}"))
    assert (await task).args == ("0",)
    assert [n.token for n in notes] == ["WF"]
    assert {"too_long", "checksum", "stray_answer"} <= set(client.bad.counts)


def test_the_other_notifications() -> None:
    assert rapi.parse_ab(["00", "8.2.3"]) == rapi.BootNotification(0, "8.2.3")
    assert rapi.parse_ab(["07"]).postcode == 7
    assert rapi.parse_wf(["02"]) == 2 and rapi.WIFI_MODES[2] == "AP default"
    assert rapi.parse_an(["1"]) is True and rapi.parse_an(["0"]) is False
    for bad in (lambda: rapi.parse_ab([]), lambda: rapi.parse_wf(["x"]), lambda: rapi.parse_an(["2"])):
        with pytest.raises(rapi.RapiFrameError):
            bad()
