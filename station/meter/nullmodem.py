"""A virtual null-modem cable: two pseudo-terminals joined back to back, in-process, no socat needed.

Each end is a real tty device path (`/dev/pts/N`) that pyserial opens like any serial port, so the daemon and the
meter simulator talk real RTU framing through the kernel's tty layer. Optionally the relay releases each byte only
after its transmission time at the configured baud rate (wire-time emulation, docs/modbus-testing.md §3), and it can
drop or corrupt frames for fault tests. It counts the bytes in each direction for the benchmarks.

A pty cannot carry parity or a baud-rate mismatch: those are covered by unit tests, not by this cable.
"""

from __future__ import annotations

import asyncio
import os
import termios
import time
import tty
from dataclasses import dataclass


def byte_time(baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    return (1 + bytesize + (0 if parity == "N" else 1) + stopbits) / baudrate


@dataclass
class LineFaults:
    drop_to_a: bool = False  # frames from end B never reach end A (a dead meter seen from the daemon)
    corrupt_to_a: int = 0  # flip one bit in the next N chunks towards A (CRC error)
    delay_to_a: float = 0.0  # extra delay before chunks towards A are released


class VirtualNullModem:
    """End A and end B; bytes written to one come out of the other."""

    def __init__(self, *, baudrate: int | None = None, parity: str = "N", stopbits: int = 1) -> None:
        self.tbyte = byte_time(baudrate, parity, stopbits) if baudrate else 0.0
        self.faults = LineFaults()
        self.bytes_a_to_b = 0
        self.bytes_b_to_a = 0
        self._fds: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.path_a = ""
        self.path_b = ""

    async def start(self) -> VirtualNullModem:
        loop = asyncio.get_running_loop()
        master_a, slave_a = os.openpty()
        master_b, slave_b = os.openpty()
        for fd in (slave_a, slave_b):
            tty.setraw(fd, termios.TCSANOW)
        for fd in (master_a, master_b):
            os.set_blocking(fd, False)
        # We keep the slave ends open ourselves (like socat does) so that a port being closed and reopened by its
        # user does not hang up the master side.
        self._fds = [master_a, slave_a, master_b, slave_b]
        self.path_a, self.path_b = os.ttyname(slave_a), os.ttyname(slave_b)
        self._master_a, self._master_b = master_a, master_b
        q_ab: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        q_ba: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop.add_reader(master_a, self._on_read, master_a, q_ab)
        loop.add_reader(master_b, self._on_read, master_b, q_ba)
        self._tasks = [
            asyncio.create_task(self._pump(q_ab, master_b, to_a=False)),
            asyncio.create_task(self._pump(q_ba, master_a, to_a=True)),
        ]
        return self

    def _on_read(self, fd: int, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            return
        if data:
            queue.put_nowait((time.monotonic(), data))

    async def _pump(self, queue: asyncio.Queue[tuple[float, bytes]], fd_out: int, *, to_a: bool) -> None:
        line_free = 0.0
        while True:
            t_rx, data = await queue.get()
            if to_a:
                self.bytes_b_to_a += len(data)
                if self.faults.drop_to_a:
                    continue
                if self.faults.corrupt_to_a:
                    self.faults.corrupt_to_a -= 1
                    k = max(0, len(data) - 3)
                    data = data[:k] + bytes([data[k] ^ 0x01]) + data[k + 1 :]
                if self.faults.delay_to_a:
                    await asyncio.sleep(self.faults.delay_to_a)
            else:
                self.bytes_a_to_b += len(data)
            if not self.tbyte:
                self._write(fd_out, data)
                continue
            # Release each byte once its last bit would have left a real UART.
            t, i = max(t_rx, line_free), 0
            while i < len(data):
                now = time.monotonic()
                done = int((now - t) / self.tbyte)
                if done > i:
                    j = min(done, len(data))
                    self._write(fd_out, data[i:j])
                    i = j
                    continue
                await asyncio.sleep(max(0.0, t + (i + 1) * self.tbyte - now))
            line_free = t + len(data) * self.tbyte

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                time.sleep(0.001)  # a full pty buffer drains within a millisecond; frames are small
                continue
            view = view[n:]

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._fds:
            loop.remove_reader(self._master_a)
            loop.remove_reader(self._master_b)
            for fd in self._fds:
                os.close(fd)
            self._fds = []
