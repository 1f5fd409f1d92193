"""The real PC/SC stack for the tests: a pcscd of our own with vsmartcard's virtual reader driver (vpcd), and a
virtual card of our own that speaks the vpcd protocol over its socket.

vpcd (`libifdvpcd.so`, Debian package vsmartcard-vpcd) is a PC/SC reader driver that pcscd loads; with DEVICENAME
`/dev/null:PORT` it listens on PORT (slot 0) and PORT + 1 (slot 1), and a virtual card is "on the reader" while a
client is connected to that port. The protocol (vsmartcard's vpcd.c): every message in either direction is a 2-byte
big-endian length and that many bytes. vpcd sends 1-byte control messages (0x00 power off, 0x01 power on, 0x02 reset,
0x04 "your ATR?", the last one also its presence poll) and command APDUs; the card answers the ATR request with its
ATR and each APDU with a response APDU, and nothing else. `VirtualCard` answers the PC/SC part 3 GET DATA pseudo-APDU
(FF CA 00 00 00) with its UID and 90 00, as a contactless reader does for the card on it.

pcscd's socket is fixed at build time (/run/pcscd/pcscd.comm); so that our pcscd neither meets the machine's own nor
another test worker's, it runs in a mount namespace of its own (`unshare --mount`, root only) in which our directory
is bind-mounted on /run/pcscd; the client library finds it through PCSCLITE_CSOCK_NAME, which it reads once per
process (so one directory per test process, one pcscd per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
# A MIFARE Classic 1K as a PC/SC part 3 contactless reader shows it: 3B 8F 80 01 80 4F 0C (RID A0 00 00 03 06) ...
ATR = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
GET_UID = bytes.fromhex("FFCA000000")
SLOT_NAMES = ("Virtual PCD 00 00", "Virtual PCD 00 01")


def missing() -> str:
    """What this machine lacks to run the PC/SC stack ("" if nothing)."""
    if os.geteuid() != 0:
        return "needs root (pcscd runs in a mount namespace of its own)"
    for tool in ("pcscd", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt install pcscd vsmartcard-vpcd)"
    if not VPCD_DRIVER.exists():
        return f"{VPCD_DRIVER} is missing (apt install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install -e '.[pcsc]')"
    return ""


def two_free_ports() -> int:
    """A port P with P and P + 1 free on every address (vpcd listens on both, on INADDR_ANY)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("0.0.0.0", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("0.0.0.0", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free TCP ports")


class Pcscd:
    """Our pcscd with the vpcd driver on `port` (slot 0) and `port + 1` (slot 1)."""

    def __init__(self, home: Path) -> None:
        self.run_dir = home / "run"  # bind-mounted on /run/pcscd in pcscd's namespace
        self.conf_dir = home / "reader.conf.d"
        self.log_path = home / "pcscd.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "pcscd.comm"

    def start(self) -> None:
        """Starts pcscd; tries other ports when another process took ours between the check and vpcd's bind (vpcd
        then leaves the reader out)."""
        for attempt in range(3):
            try:
                self._start_once()
                return
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise

    def _start_once(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)  # a pid file or socket left by a pcscd killed hard
        self.run_dir.mkdir(parents=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.port = two_free_ports()
        (self.conf_dir / "vpcd").write_text(
            f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{self.port}\nLIBPATH {VPCD_DRIVER}\n'
            f"CHANNELID {self.port}\n"
        )
        script = (
            f'mkdir -p /run/pcscd && mount --bind "{self.run_dir}" /run/pcscd && '
            f'exec pcscd --foreground $PCSCD_DEBUG -c "{self.conf_dir}"'
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        from smartcard import scard

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pcscd exited with {self.proc.returncode}: {self.log()}")
            if self.socket_path.exists():
                hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
                if hresult == scard.SCARD_S_SUCCESS:
                    try:
                        hresult, readers = scard.SCardListReaders(context, [])
                    finally:
                        scard.SCardReleaseContext(context)
                    if hresult == scard.SCARD_S_SUCCESS and list(readers) == list(SLOT_NAMES):
                        return
            time.sleep(0.05)
        raise RuntimeError(f"pcscd did not come up with the virtual reader: {self.log()}")

    def wait_card(self, slot: int, present: bool, timeout: float = 10) -> None:
        """Blocks until pcscd sees a card on `slot` (or none). A card taken off and another put on between two of
        pcscd's presence polls is one presentation to pcscd (as with a real reader), so tests wait for the reader to
        be empty before they put the next card on."""
        from smartcard import scard

        hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
        try:
            deadline = time.monotonic() + timeout
            state = scard.SCARD_STATE_UNAWARE
            while time.monotonic() < deadline:
                hresult, states = scard.SCardGetStatusChange(context, 100, [(SLOT_NAMES[slot], state)])
                if hresult == scard.SCARD_S_SUCCESS:
                    state = states[0][1] & ~scard.SCARD_STATE_CHANGED
                    if bool(state & scard.SCARD_STATE_PRESENT) == present:
                        return
            raise TimeoutError(f"pcscd never saw {'a' if present else 'no'} card on {SLOT_NAMES[slot]}")
        finally:
            scard.SCardReleaseContext(context)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class VirtualCard:
    """A contactless card on vpcd's reader: on it while connected to the slot's port. `answer` is what it says to GET
    DATA (default: its UID and 90 00); `apdus` every command APDU it got, `atr_requests` how often vpcd asked for its
    ATR (pcscd's presence polls)."""

    def __init__(self, uid: bytes, *, answer: bytes | None = None) -> None:
        self.uid = uid
        self.answer = answer if answer is not None else uid + b"\x90\x00"
        self.apdus: list[bytes] = []
        self.atr_requests = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def insert(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._writer = writer
        self._task = asyncio.create_task(self._serve(reader, writer))

    async def remove(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._writer = self._task = None

    async def wait_for(self, what: Callable[[VirtualCard], bool], timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not what(self):
                self._changed.clear()
                await self._changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack(">H", await reader.readexactly(2))
                message = await reader.readexactly(length)
                if length == 1:
                    if message[0] == 0x04:
                        writer.write(struct.pack(">H", len(ATR)) + ATR)
                        self.atr_requests += 1
                    # 0x00 power off, 0x01 power on, 0x02 reset: no answer
                else:
                    self.apdus.append(message)
                    response = self.answer if message == GET_UID else b"\x6d\x00"  # INS not supported
                    writer.write(struct.pack(">H", len(response)) + response)
                await writer.drain()
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self._changed.set()
