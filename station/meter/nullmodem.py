"""A virtual null-modem cable: two pseudo-terminals joined back to back, in-process, no socat needed.

Each end is a real tty device path (`/dev/pts/N`) that pyserial opens like any serial port, so the daemon (end A)
and the meter simulator (end B) talk real RTU framing through the kernel's tty layer. Optionally the relay releases
each byte only after its transmission time at the configured baud rate (wire-time emulation,
docs/modbus-testing.md §3), and it can drop or corrupt frames for fault tests. It counts the bytes in each direction
for the benchmarks.

The relay is two threads, one per direction, that sleep to each byte's due time with the kernel's timer: an asyncio
timer on Linux waits in whole milliseconds (epoll), which released the bytes up to a millisecond late and put that
lateness, twice per exchange, into every latency the benchmarks compare with the wire.

With wire-time emulation the cable also keeps RTU's turnaround on end B's side: a frame towards A starts no sooner
than the inter-frame silence (t3.5) after the last byte towards B, because an RTU slave learns that a request has
ended only from that silence (Modbus over Serial Line v1.02 §2.5.1.1) and cannot answer sooner. The silence before
end A's own frames is end A's job (the daemon's bus keeps it) and is not imposed here, so that a master that
forgets it is seen.

A pty cannot carry parity or a baud-rate mismatch: those are covered by unit tests, not by this cable.
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass
from typing import Literal

from station.bus import LineSettings


@dataclass
class LineFaults:
    drop_to_a: bool = False  # frames from end B never reach end A (a dead meter seen from the daemon)
    corrupt_to_a: int = 0  # flip one bit in the next N chunks towards A (CRC error)
    delay_to_a: float = 0.0  # extra delay before chunks towards A are released


class VirtualNullModem:
    """End A and end B; bytes written to one come out of the other."""

    def __init__(self, *, baudrate: int | None = None, parity: Literal["N", "E", "O"] = "N", stopbits: int = 1) -> None:
        # The line's own rules: a byte's time and t3.5 (the turnaround), as the bus reckons them.
        line = LineSettings("virtual", baudrate=baudrate, parity=parity, stopbits=stopbits) if baudrate else None
        self.tbyte = line.byte_time if line else 0.0
        self.turnaround = line.inter_frame_silence if line else 0.0
        self.faults = LineFaults()
        self.bytes_a_to_b = 0
        self.bytes_b_to_a = 0
        self._fds: list[int] = []
        self._threads: list[threading.Thread] = []
        self._wake_r = self._wake_w = -1
        self._stopping = threading.Event()
        self._to_b_ends = 0.0  # when the last byte towards B is out (the turnaround counts from it)
        self.path_a = ""
        self.path_b = ""

    async def start(self) -> VirtualNullModem:
        master_a, slave_a = os.openpty()
        master_b, slave_b = os.openpty()
        for fd in (slave_a, slave_b):
            tty.setraw(fd, termios.TCSANOW)
        for fd in (master_a, master_b):
            os.set_blocking(fd, False)
        # We keep the slave ends open ourselves (like socat does) so that a port being closed and reopened by its
        # user does not hang up the master side.
        self._wake_r, self._wake_w = os.pipe()
        self._fds = [master_a, slave_a, master_b, slave_b, self._wake_r, self._wake_w]
        self.path_a, self.path_b = os.ttyname(slave_a), os.ttyname(slave_b)
        self._threads = [
            threading.Thread(target=self._relay, args=(master_a, master_b, False), name="nullmodem a->b", daemon=True),
            threading.Thread(target=self._relay, args=(master_b, master_a, True), name="nullmodem b->a", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _relay(self, fd_in: int, fd_out: int, to_a: bool) -> None:
        """One direction: read what one end wrote and release it at the other, byte by byte at its due time. Data
        that arrives while the line is busy starts when the line is free, as in a UART's transmit queue."""
        line_free = 0.0
        while not self._stopping.is_set():
            readable, _, _ = select.select([fd_in, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            try:
                data = os.read(fd_in, 4096)
            except (BlockingIOError, OSError):
                continue
            t_rx = time.monotonic()
            if not data:
                continue
            if to_a:
                self.bytes_b_to_a += len(data)
                if self.faults.drop_to_a:
                    continue
                if self.faults.corrupt_to_a:
                    self.faults.corrupt_to_a -= 1
                    k = max(0, len(data) - 3)
                    data = data[:k] + bytes([data[k] ^ 0x01]) + data[k + 1 :]
                if self.faults.delay_to_a:
                    time.sleep(self.faults.delay_to_a)
                    t_rx = time.monotonic()
            else:
                self.bytes_a_to_b += len(data)
            if not self.tbyte:
                self._write(fd_out, data)
                continue
            start = max(t_rx, line_free)
            if to_a:
                start = max(start, self._to_b_ends + self.turnaround)
            # Release each byte once its last bit would have left a real UART.
            i = 0
            while i < len(data):
                now = time.monotonic()
                due = min(len(data), int((now - start) / self.tbyte))
                if due > i:
                    self._write(fd_out, data[i:due])
                    i = due
                    continue
                time.sleep(start + (i + 1) * self.tbyte - now)
            line_free = start + len(data) * self.tbyte
            if not to_a:
                self._to_b_ends = line_free

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stopping.is_set():
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                time.sleep(0.001)  # a full pty buffer drains within a millisecond; frames are small
                continue
            view = view[n:]

    async def stop(self) -> None:
        if not self._fds:
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        for thread in self._threads:
            thread.join(timeout=5)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
