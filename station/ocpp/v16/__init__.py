"""The OCPP 1.6J adapter: translates 1.6 messages to runtime requests and outbox entries to 1.6 messages.

Handlers are thin: they translate, ask the runtime (which decides synchronously), and answer. They never await the
meter or another CALL (the `ocpp` library reads no frames while a handler awaits). Outgoing transaction messages are
built from the store at send time, so a transaction started offline gets its real transactionId in its
StopTransaction. The RPC framework's rules (error codes, no answer while Rejected) are `RpcRules`'. This module knows
nothing about Modbus.
"""

from __future__ import annotations

from station.ocpp.v16.authorization import Authorization
from station.ocpp.v16.base import SUBPROTOCOL, id_tag_entry, sampled_values
from station.ocpp.v16.configuration import Configuration
from station.ocpp.v16.connectors import Connectors
from station.ocpp.v16.maintenance import Maintenance
from station.ocpp.v16.security import SecurityRequests
from station.ocpp.v16.smart_charging import SmartCharging
from station.ocpp.v16.transactions import Transactions
from station.ocpp.v16.triggers import Triggers

__all__ = ["SUBPROTOCOL", "V16Adapter", "id_tag_entry", "sampled_values"]


class V16Adapter(
    Triggers, Transactions, Configuration, SmartCharging, Maintenance, Authorization, Connectors, SecurityRequests
):
    """The 1.6 adapter, one part per functional block (each a module of this package)."""
