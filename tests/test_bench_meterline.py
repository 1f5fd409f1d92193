"""The daemon figures' meter (bench/meterline.py): the smart-me simulator in a process of its own on a paced pty
pair, the daemon's end a serial device that a driver on an `rtu` bus reads like a real meter."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.meterline import meter_line
from station.bus import LineSettings, ModbusBus, ModbusDevice
from station.meter.smartme import SmartMeMeter


async def test_the_meter_line_serves_a_real_serial_device_paced_at_its_baud_rate(tmp_path: Path) -> None:
    with meter_line(9600, tmp_path / "m.json", 0.5) as line:
        assert line.port.startswith("/dev/pts/") and os.path.exists(line.port)
        bus = ModbusBus(LineSettings(line.port, baudrate=9600))
        meter = SmartMeMeter(ModbusDevice(bus, 1))
        await meter.open()
        try:
            assert (await meter.identity()).serial_number
            before = line.bytes_on_line()
            assert before == bus.bytes_sent + bus.bytes_received > 0  # the line counts what the daemon's bus did
            t0 = time.perf_counter()
            key = await meter.public_key()  # 65 registers: 8 bytes out, 135 back, about 0.15 s at 9600 baud
            assert time.perf_counter() - t0 > 143 * 10 / 9600 * 0.9
            assert key.startswith("3059")  # DER SubjectPublicKeyInfo of a P-256 key
            assert line.bytes_on_line() - before == bus.bytes_sent + bus.bytes_received - before
        finally:
            await meter.close()
    assert (tmp_path / "m.json").exists()  # the simulator kept its memory where it was told
