"""The Modbus bus: one line (`ModbusBus`) shared by several devices (`ModbusDevice`), requests in priority order
(`BusScheduler`; `urgent()` marks transaction work), and the register codecs (`station.bus.codec`)."""

from station.bus.device import ModbusDevice
from station.bus.line import LineSettings, ModbusBus, PortUnavailable, read_frame_sizes, write_frame_sizes
from station.bus.scheduler import BusScheduler, Priority, current_priority, urgent

__all__ = [
    "BusScheduler",
    "LineSettings",
    "ModbusBus",
    "ModbusDevice",
    "PortUnavailable",
    "Priority",
    "current_priority",
    "read_frame_sizes",
    "urgent",
    "write_frame_sizes",
]
