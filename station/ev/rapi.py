"""OpenEVSE's RAPI: the serial protocol of the open_evse firmware, as documented in the comment at the top of
`firmware/open_evse/rapi_proc.h` (RAPIVER "5.2.1", firmware VERSION "8.2.3" at the revision this was written from).

The wire format, from that document:

- A command is `$cc pp pp ...^xk\\r`: `$`, a 2-letter command, space-separated parameters, then the XOR checksum
  `^xk` (recommended; 8-bit XOR of every character before the `^`, as 2 hex digits) or the legacy additive checksum
  `*ck` (8-bit sum of every character before the `*`). A checksum-less form exists "FOR TESTING ONLY".
- From v3.0.0 on a command may carry a sequence id as its last parameter, `:ss` (2 hex digits, never 00); the answer
  then echoes it: `$OK [params] :ss^xk\\r` / `$NK [params] :ss^xk\\r`.
- From v2.0.0 on answers carry the XOR checksum; from v2.0.1 the asynchronous notifications too: `$AT` (EVSE state
  transition), `$AB` (boot), `$AN` (button press), `$WF` (wifi mode request). `$AT evsestate pilotstate
  currentcapacity vflags`; `$GS` answers `$OK evsestate elapsed pilotstate vflags` (states and flags in hex, the
  others decimal); `$GC` answers `$OK minamps hmaxamps pilotamps cmaxamps` (decimal).

What this module does with it: it encodes commands with the XOR checksum and a sequence id; it accepts answers and
notifications with either checksum (never without one: the checksum-less form is for typing at a terminal, and a
line without one from a noisy cable could be anything); it bounds every line; it matches an answer to its command
by sequence id, one command in flight at a time, each with a timeout, so a late answer to a command that timed out
is dropped instead of being taken for the answer to the next one. Bad input (bytes outside a frame, over-long lines,
bad checksums, malformed frames, answers nobody waits for) is counted per kind and logged once per kind; it never
raises out of the reader.

Older firmware (before v3.0.0, 2016) does not echo sequence ids and is not supported: its answers are counted as
`stray_answer` and every command times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

log = structlog.get_logger("station.ev.rapi")

SOC = 0x24  # '$': start of command / answer / notification
EOC = 0x0D  # CR: end of a line
SOS = ":"  # start of a sequence id
INVALID_SEQUENCE_ID = 0
# The firmware's own command buffer (ESRAPI_BUFLEN) holds 32 characters including the terminating NUL: a command
# longer than 31 characters before its CR is thrown away there. Ours are far shorter; encode() refuses longer ones.
COMMAND_MAX_CHARS = 31
# The longest line we accept from the controller (answers to $GV, $GI and $AB carry version strings; every documented
# answer fits in 64 characters). Anything longer is discarded up to the next `$` or CR.
LINE_MAX_CHARS = 96
MAX_ARGS = 10  # ESRAPI_MAX_ARGS: the firmware's token limit, the command included

BadKind = Literal["garbage", "too_long", "checksum", "malformed", "stray_answer", "unexpected"]

_TOKEN = re.compile(rb"[A-Z0-9]{2}")
_ARG = re.compile(r"[\x21-\x7e]{1,32}")  # printable, no space
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")


class RapiError(Exception):
    """A RAPI exchange failed; subclasses say how."""


class RapiTimeout(RapiError):
    """No answer to a command within its timeout."""


class RapiClosed(RapiError):
    """The serial line is closed (or was lost) while a command was in flight or about to be sent."""


class RapiFrameError(ValueError):
    """One received line is not a valid RAPI frame; `kind` says which rule it broke."""

    def __init__(self, kind: BadKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: BadKind = kind
        self.detail = detail


def xor_checksum(data: bytes) -> int:
    """8-bit XOR of every character (the `^xk` checksum)."""
    chk = 0
    for b in data:
        chk ^= b
    return chk


def additive_checksum(data: bytes) -> int:
    """8-bit sum of every character (the legacy `*ck` checksum)."""
    return sum(data) & 0xFF


@dataclass(frozen=True)
class Frame:
    """One received line: `token` is the 2-letter head (`OK`, `NK`, `AT`, `WF`, or a command's name)."""

    token: str
    args: tuple[str, ...]
    seq: int | None = None
    checksum: Literal["xor", "additive", "none"] = "xor"

    @property
    def is_answer(self) -> bool:
        return self.token in ("OK", "NK")

    @property
    def is_notification(self) -> bool:
        # The firmware's own RAPI_SENDER treats every A-prefixed token, and WF, as asynchronous.
        return self.token.startswith("A") or self.token == "WF"


def encode(command: str, args: Sequence[str | int] = (), *, seq: int | None = None, xor: bool = True) -> bytes:
    """`$cc pp pp :ss^xk\\r` (or `*ck` with xor=False). ValueError for a malformed command, parameter or id, or a
    line the firmware's 32-character buffer would throw away."""
    if not _TOKEN.fullmatch(command.encode("ascii", "replace")):
        raise ValueError(f"RAPI command {command!r} is not 2 capital letters or digits")
    parts = [command]
    for arg in args:
        text = str(arg)
        if not _ARG.fullmatch(text) or any(c in text for c in "$^*:"):
            raise ValueError(f"RAPI parameter {text!r} of {command} is empty, too long or has a reserved character")
        parts.append(text)
    if seq is not None:
        if not 1 <= seq <= 0xFF:
            raise ValueError(f"RAPI sequence id {seq} is not 01..FF")
        parts.append(f"{SOS}{seq:02X}")
    body = b"$" + " ".join(parts).encode("ascii")
    chk = xor_checksum(body) if xor else additive_checksum(body)
    line = body + (b"^" if xor else b"*") + f"{chk:02X}".encode("ascii")
    if len(line) > COMMAND_MAX_CHARS:
        raise ValueError(
            f"RAPI command line {line!r} is {len(line)} characters; the firmware takes {COMMAND_MAX_CHARS}"
        )
    return line + b"\r"


def parse_line(line: bytes, *, require_checksum: bool = True) -> Frame:
    """One line from `$` up to (not including) the CR. RapiFrameError naming what is wrong."""
    if len(line) > LINE_MAX_CHARS:
        raise RapiFrameError("too_long", f"{len(line)} characters, at most {LINE_MAX_CHARS}")
    if not line.startswith(b"$"):
        raise RapiFrameError("garbage", f"does not start with '$': {line[:16]!r}")
    checksum: Literal["xor", "additive", "none"] = "none"
    body = line
    for mark, kind in ((b"^", "xor"), (b"*", "additive")):
        at = line.rfind(mark)
        if at >= 0:
            digits = line[at + 1 :]
            if not _HEX2.fullmatch(digits):
                raise RapiFrameError("checksum", f"checksum {digits[:8]!r} after {mark.decode()} is not 2 hex digits")
            body = line[:at]
            want = int(digits, 16)
            got = xor_checksum(body) if kind == "xor" else additive_checksum(body)
            if want != got:
                raise RapiFrameError("checksum", f"{kind} checksum {want:02X}, computed {got:02X}: {line[:24]!r}")
            checksum = "xor" if kind == "xor" else "additive"
            break
    if checksum == "none" and require_checksum:
        raise RapiFrameError("checksum", f"no checksum: {line[:24]!r}")
    if any(b < 0x20 or b > 0x7E for b in body):
        raise RapiFrameError("malformed", f"non-printable character in {body[:24]!r}")
    text = body[1:].decode("ascii")
    tokens = text.split(" ")
    head = tokens[0]
    if not _TOKEN.fullmatch(head.encode("ascii")):
        raise RapiFrameError("malformed", f"head {head[:8]!r} is not 2 capital letters or digits")
    args = tokens[1:]
    if any(not a for a in args):
        raise RapiFrameError("malformed", f"empty parameter (double space) in {text[:24]!r}")
    if len(args) + 1 > MAX_ARGS + 1:  # an answer may carry the sequence id on top of the firmware's 10 tokens
        raise RapiFrameError("malformed", f"{len(args)} parameters")
    seq: int | None = None
    if args and args[-1].startswith(SOS):
        digits = args[-1][1:].encode("ascii")
        if not _HEX2.fullmatch(digits) or int(digits, 16) == INVALID_SEQUENCE_ID:
            raise RapiFrameError("malformed", f"sequence id {args[-1][:8]!r} is not 01..FF")
        seq = int(digits, 16)
        args = args[:-1]
    return Frame(token=head, args=tuple(args), seq=seq, checksum=checksum)


class LineSplitter:
    """Bytes in, complete lines out, bounded. A `$` starts a line (a `$` inside a line drops what came before, as
    the firmware's own reader does); CR ends it; LF (sent after each answer in the firmware's echo mode) and bytes
    outside a line are skipped, the latter counted as garbage; a line over LINE_MAX_CHARS is dropped whole."""

    def __init__(self, on_bad: Callable[[BadKind, str], None]) -> None:
        self._buf = bytearray()
        self._in_line = False
        self._overflow = False
        self._on_bad = on_bad

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        stray = 0
        for b in data:
            if b == SOC:
                if self._in_line and self._buf and not self._overflow:
                    self._on_bad("garbage", f"line cut off by a new '$': {bytes(self._buf[:16])!r}")
                self._buf = bytearray(b"$")
                self._in_line, self._overflow = True, False
            elif not self._in_line:
                if b not in (EOC, 0x0A):
                    stray += 1
            elif b == EOC:
                if not self._overflow:
                    lines.append(bytes(self._buf))
                self._buf = bytearray()
                self._in_line = self._overflow = False
            elif self._overflow:
                continue
            elif len(self._buf) >= LINE_MAX_CHARS:
                self._on_bad("too_long", f"line longer than {LINE_MAX_CHARS} characters: {bytes(self._buf[:16])!r}")
                self._overflow = True
                self._buf = bytearray()
            else:
                self._buf.append(b)
        if stray:
            self._on_bad("garbage", f"{stray} bytes outside a '$' line")
        return lines


class BadInput:
    """Counts bad input per kind; logs the first of each kind as a warning and the rest at debug level."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, int] = {}

    def __call__(self, kind: BadKind, detail: str) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if n == 1:
            log.warning("rapi.bad_input", controller=self.name, kind=kind, detail=detail, note="logged once per kind")
        else:
            log.debug("rapi.bad_input", controller=self.name, kind=kind, detail=detail, count=n)


@dataclass(frozen=True)
class Reply:
    ok: bool
    args: tuple[str, ...]


class RapiClient:
    """One RAPI line: one command in flight at a time, each with a sequence id and a timeout; notifications go to
    `on_notification` as they come. Never raises out of its reader; `closed` is set when the line is lost."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        name: str,
        on_notification: Callable[[Frame], None],
        bad: BadInput | None = None,
    ) -> None:
        self.name = name
        self.bad = bad or BadInput(name)
        self._reader, self._writer = reader, writer
        self._on_notification = on_notification
        self._splitter = LineSplitter(self.bad)
        self._lock = asyncio.Lock()
        self._seq = INVALID_SEQUENCE_ID
        self._pending: tuple[int, asyncio.Future[Reply]] | None = None
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read_loop(), name=f"rapi-reader-{name}")

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        if self._seq == INVALID_SEQUENCE_ID:
            self._seq = 1
        return self._seq

    async def command(self, command: str, *args: str | int, timeout: float) -> Reply:
        """Send one command and wait for its answer. RapiTimeout, RapiClosed; `$NK` is a Reply with ok=False."""
        async with self._lock:
            if self.closed.is_set():
                raise RapiClosed(f"{self.name}: the serial line is closed")
            seq = self._next_seq()
            line = encode(command, args, seq=seq)
            fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self._pending = (seq, fut)
            try:
                self._writer.write(line)
                await self._writer.drain()
                closed: asyncio.Future[Any] = asyncio.ensure_future(self.closed.wait())
                waiting: set[asyncio.Future[Any]] = {fut, closed}
                try:
                    done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                if fut in done:
                    return fut.result()
                if self.closed.is_set():
                    raise RapiClosed(f"{self.name}: the serial line was lost waiting for ${command}")
                raise RapiTimeout(f"{self.name}: no answer to ${command} within {timeout:g} s")
            except (OSError, ConnectionError) as exc:
                self.closed.set()
                raise RapiClosed(f"{self.name}: writing ${command} failed: {exc}") from exc
            finally:
                self._pending = None

    def _on_line(self, line: bytes) -> None:
        try:
            frame = parse_line(line)
        except RapiFrameError as exc:
            self.bad(exc.kind, exc.detail)
            return
        if frame.is_answer:
            pending = self._pending
            if pending is None or frame.seq != pending[0] or pending[1].done():
                self.bad("stray_answer", f"${frame.token} with sequence id {frame.seq} answers no command in flight")
                return
            pending[1].set_result(Reply(ok=frame.token == "OK", args=frame.args))
        elif frame.is_notification:
            try:
                self._on_notification(frame)
            except Exception:  # a bug in the consumer must not stop the reader
                log.exception("rapi.notification_handler_failed", controller=self.name, token=frame.token)
        else:
            self.bad("unexpected", f"${frame.token} is neither an answer nor a notification")

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(256)
                if not data:
                    break
                for line in self._splitter.feed(data):
                    self._on_line(line)
        except (OSError, ConnectionError) as exc:
            log.warning("rapi.line_lost", controller=self.name, error=str(exc))
        finally:
            self.closed.set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.closed.set()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


# --------------------------------------------------------------------------- the documented payloads


def _hex(value: str, what: str, digits: int) -> int:
    if not re.fullmatch(rf"[0-9A-Fa-f]{{1,{digits}}}", value):
        raise RapiFrameError("malformed", f"{what} {value[:12]!r} is not hex of at most {digits} digits")
    return int(value, 16)


def _dec(value: str, what: str, digits: int = 10) -> int:
    if not re.fullmatch(rf"-?[0-9]{{1,{digits}}}", value):
        raise RapiFrameError("malformed", f"{what} {value[:12]!r} is not a decimal of at most {digits} digits")
    return int(value)


@dataclass(frozen=True)
class EvseStatus:
    """`$AT evsestate pilotstate currentcapacity vflags` or `$OK evsestate elapsed pilotstate vflags` (to $GS)."""

    evse_state: int
    pilot_state: int | None = None
    vflags: int | None = None
    current_capacity: int | None = None  # from $AT only
    elapsed_s: int | None = None  # from $GS only


def parse_at(args: Sequence[str]) -> EvseStatus:
    if not 2 <= len(args) <= 4:
        raise RapiFrameError("malformed", f"$AT with {len(args)} parameters, want 2..4")
    return EvseStatus(
        evse_state=_hex(args[0], "$AT evsestate", 2),
        pilot_state=_hex(args[1], "$AT pilotstate", 2),
        current_capacity=_dec(args[2], "$AT currentcapacity", 3) if len(args) > 2 else None,
        vflags=_hex(args[3], "$AT vflags", 4) if len(args) > 3 else None,
    )


def parse_gs(args: Sequence[str]) -> EvseStatus:
    if not 1 <= len(args) <= 4:
        raise RapiFrameError("malformed", f"answer to $GS with {len(args)} parameters, want 1..4")
    return EvseStatus(
        evse_state=_hex(args[0], "$GS evsestate", 2),
        elapsed_s=_dec(args[1], "$GS elapsed") if len(args) > 1 else None,
        pilot_state=_hex(args[2], "$GS pilotstate", 2) if len(args) > 2 else None,
        vflags=_hex(args[3], "$GS vflags", 4) if len(args) > 3 else None,
    )


@dataclass(frozen=True)
class CurrentCapacity:
    """The answer to `$GC`: `minamps hmaxamps pilotamps cmaxamps`."""

    min_amps: int
    hw_max_amps: int
    pilot_amps: int
    configured_max_amps: int


def parse_gc(args: Sequence[str]) -> CurrentCapacity:
    if len(args) != 4:
        raise RapiFrameError("malformed", f"answer to $GC with {len(args)} parameters, want 4")
    values = [_dec(a, what, 3) for a, what in zip(args, ("minamps", "hmaxamps", "pilotamps", "cmaxamps"), strict=True)]
    return CurrentCapacity(*values)


def parse_amps(args: Sequence[str], what: str) -> int:
    """The `ampsset` of an answer to `$SC`."""
    if len(args) != 1:
        raise RapiFrameError("malformed", f"{what} with {len(args)} parameters, want 1")
    return _dec(args[0], what, 3)


@dataclass(frozen=True)
class BootNotification:
    """`$AB postcode fwrev`: postcode 00 boot OK, else 07 bad ground, 08 stuck relay, 09 GFI test failed."""

    postcode: int
    firmware: str


def parse_ab(args: Sequence[str]) -> BootNotification:
    if not 1 <= len(args) <= 2:
        raise RapiFrameError("malformed", f"$AB with {len(args)} parameters, want 1..2")
    return BootNotification(_hex(args[0], "$AB postcode", 2), args[1] if len(args) > 1 else "")


WIFI_MODES = {0: "AP", 1: "client", 2: "AP default"}  # WIFI_MODE_AP, WIFI_MODE_CLIENT, WIFI_MODE_AP_DEFAULT


def parse_wf(args: Sequence[str]) -> int:
    """`$WF mode`: the wifi mode the board asks its wifi module for (a long press of its menu button)."""
    if len(args) != 1:
        raise RapiFrameError("malformed", f"$WF with {len(args)} parameters, want 1")
    return _hex(args[0], "$WF mode", 2)


def parse_an(args: Sequence[str]) -> bool:
    """`$AN type`: a front-panel button press while the button is disabled; True for a long press."""
    if len(args) != 1 or args[0] not in ("0", "1"):
        raise RapiFrameError("malformed", f"$AN {' '.join(args)[:12]!r}: want 0 or 1")
    return args[0] == "1"
