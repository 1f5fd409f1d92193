"""Carrying out the core's decisions: the OCPP-facing runtime and the homes of its parts.

- `station.py`: `StationRuntime`, what the OCPP adapters call, the only caller of the core
- `meter_worker.py`: one EVSE's meter, its state and its procedures with their retries
- `sampling.py`: meter values (periodic, clock-aligned, for the end message, triggered)
- `recovery.py`: what a previous run left open, and transactions only a meter knows
- `store_guard.py`: no charging while the store cannot record; what it missed, recorded later
- `supervisor.py`: every task, by kind; loops restarted when they fail
- `policy.py`, `presence.py`: what the runtime reads of the settings and of the CSMS connection
"""

from station.runtime.meter_worker import MeterWorker
from station.runtime.policy import Fixed, RuntimePolicy
from station.runtime.station import Clock, StationRuntime, utc_now

__all__ = ["Clock", "Fixed", "MeterWorker", "RuntimePolicy", "StationRuntime", "utc_now"]
