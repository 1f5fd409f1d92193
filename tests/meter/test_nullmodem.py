"""The virtual null-modem cable (station/meter/nullmodem.py): wire time, RTU turnaround on the meter's side, its
byte counts and its end. Lower bounds only (the physics of the emulated line): an upper bound would be a wall-clock
test on a shared machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator

from station.bus import LineSettings
from station.meter.nullmodem import VirtualNullModem


def _open(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    os.set_blocking(fd, True)
    return fd


async def _read_exactly(fd: int, n: int) -> tuple[bytes, float, float]:
    """n bytes from fd; with the times the first and the last byte came."""

    def read() -> tuple[bytes, float, float]:
        data, first = b"", 0.0
        while len(data) < n:
            data += os.read(fd, n - len(data))
            first = first or time.monotonic()
        return data, first, time.monotonic()

    return await asyncio.to_thread(read)


@contextlib.asynccontextmanager
async def _cable(baud: int) -> AsyncIterator[tuple[VirtualNullModem, int, int]]:
    """A wire-time cable at `baud` with both ends open: (cable, fd of end A, fd of end B)."""
    cable = await VirtualNullModem(baudrate=baud).start()
    a, b = _open(cable.path_a), _open(cable.path_b)
    try:
        yield cable, a, b
    finally:
        os.close(a)
        os.close(b)
        await cable.stop()


async def test_each_byte_comes_out_after_its_wire_time_and_is_counted() -> None:
    async with _cable(9600) as (cable, a, b):
        frame = bytes(range(96))
        t0 = time.monotonic()
        os.write(a, frame)
        data, _, last = await _read_exactly(b, len(frame))
        assert data == frame
        # 96 bytes of 10 bits at 9600 baud: 0.1 s
        assert last - t0 >= len(frame) * LineSettings("x", baudrate=9600).byte_time
        assert (cable.bytes_a_to_b, cable.bytes_b_to_a) == (96, 0)


async def test_an_answer_towards_a_starts_no_sooner_than_t35_after_the_request() -> None:
    """Modbus over Serial Line v1.02 §2.5.1.1: a slave learns that a request ended from 3.5 characters of silence,
    so its answer cannot start before; the cable keeps that for end B however fast the simulator answers."""
    line = LineSettings("x", baudrate=19200)
    async with _cable(19200) as (cable, a, b):
        t0 = time.monotonic()
        os.write(a, b"\x01\x03\x00\x00\x00\x01\x84\x0a")
        await _read_exactly(b, 8)
        os.write(b, b"\x01\x03\x02\x00\x00\xb8\x44")  # at once: faster than any RTU slave could
        _, first, _ = await _read_exactly(a, 7)
        assert first - t0 >= 8 * line.byte_time + line.inter_frame_silence + line.byte_time
        assert (cable.bytes_a_to_b, cable.bytes_b_to_a) == (8, 7)


async def test_stopping_ends_the_relay_threads() -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("nullmodem")}
    cable = await VirtualNullModem(baudrate=9600).start()
    assert {t for t in threading.enumerate() if t.name.startswith("nullmodem")} - before
    await cable.stop()
    assert not {t for t in threading.enumerate() if t.name.startswith("nullmodem") and t.is_alive()} - before
