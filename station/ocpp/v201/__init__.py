"""The OCPP 2.0.1 adapter: translates 2.0.1 messages to runtime requests and outbox entries to TransactionEvents.

Same shape as the 1.6 adapter (boot, heartbeat, status, deliver, thin handlers that never await the meter or another
CALL); work a request asks for after its answer (a NotifyReport, a triggered message) runs in a task. The station
generates the transactionId (our transaction ref); each transaction's events are numbered from seqNo 0. Signed
records go into TransactionEvent(Ended) as `signedMeterValue` beside the numeric value. Owns the physical part of the
device model (ChargingStation, EVSE and Connector components, read from the runtime); the configuration part is
station/ocpp/settings.py's. This module knows nothing about Modbus.
"""

from __future__ import annotations

from station.ocpp.v201.authorization import Authorization
from station.ocpp.v201.base import STOPPED, SUBPROTOCOL, id_token_entry
from station.ocpp.v201.device_model import DeviceModel
from station.ocpp.v201.evses import Evses
from station.ocpp.v201.maintenance import Maintenance
from station.ocpp.v201.security import SecurityRequests
from station.ocpp.v201.smart_charging import SmartCharging
from station.ocpp.v201.transactions import Transactions
from station.ocpp.v201.triggers import Triggers

__all__ = ["STOPPED", "SUBPROTOCOL", "V201Adapter", "id_token_entry"]


class V201Adapter(
    Triggers, Transactions, DeviceModel, SmartCharging, Maintenance, Authorization, Evses, SecurityRequests
):
    """The 2.0.1 adapter, one part per functional block (each a module of this package)."""
