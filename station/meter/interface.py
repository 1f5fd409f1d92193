"""The one contract every meter driver fulfils, after EVerest's powermeter interface.

A driver turns `start_transaction` / `stop_transaction` into its meter's Modbus procedure and returns the meter's own
signed record untouched. Drivers know registers and nothing about OCPP; the core and the OCPP adapters know this
interface and nothing about registers. A driver must never invent, repair or re-serialise a signed record.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from station.core.model import SignedMeterRecord


class MeterError(Exception):
    """The meter could not do what was asked. The message says what, where (register) and what to check."""


class MeterLinkError(MeterError):
    """No (valid) answer from the meter: wrong wiring, wrong serial settings, wrong device id, or the meter is off."""


class MeterRefused(MeterError):
    """The meter answered, but refused or reported an error state."""


@dataclass(frozen=True)
class MeterIdentity:
    model: str
    vendor: str
    serial_number: str
    firmware_version: str


@dataclass(frozen=True)
class LiveValues:
    energy_import_wh: int
    energy_export_wh: int
    power_w: float
    voltage_v: tuple[float, ...]
    current_a: tuple[float, ...]


@dataclass(frozen=True)
class MeterTransactionRequest:
    """What the meter needs to know to open a transaction (OCMF identification and charge point fields)."""

    tx_ref: str
    connector_id: int
    id_tag: str
    charge_point_id: str
    at: datetime
    identification_type: str = "CENTRAL"  # OCMF IT: the token came from the CSMS (remote start)
    identification_flags: tuple[str, ...] = ("OCPP_RS",)


@dataclass(frozen=True)
class MeterTransactionStarted:
    meter_start_wh: int
    meter_reference: str = ""  # the meter's own id for the transaction (e.g. its PG counter), if it has one
    begin_record: SignedMeterRecord | None = None  # a signed begin record, for meters that make one at the start


@dataclass(frozen=True)
class MeterTransactionEnded:
    meter_stop_wh: int
    records: tuple[SignedMeterRecord, ...]


@dataclass
class MeterState:
    """What the daemon last learned about the meter, for diagnostics. Written only by the meter runner."""

    link_up: bool = False
    identity: MeterIdentity | None = None
    public_key_hex: str = ""
    last_error: str = ""
    live: LiveValues | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Meter(abc.ABC):
    """A fiscal meter with transaction support, reached over some link."""

    model: str = ""

    @abc.abstractmethod
    async def open(self) -> None:
        """Open the link. Does not fail when the meter is silent: that is reported by the first request."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def identity(self) -> MeterIdentity: ...

    @abc.abstractmethod
    async def public_key(self) -> str:
        """The meter's signing key as upper-case hex DER SubjectPublicKeyInfo."""

    @abc.abstractmethod
    async def live_values(self) -> LiveValues: ...

    @abc.abstractmethod
    async def start_transaction(self, request: MeterTransactionRequest) -> MeterTransactionStarted: ...

    @abc.abstractmethod
    async def stop_transaction(self, tx_ref: str) -> MeterTransactionEnded:
        """End the transaction, wait until the meter has signed it, read the record(s) back."""

    @abc.abstractmethod
    def set_link_listener(self, listener: Callable[[bool, str], None]) -> None:
        """Have `listener(up, reason)` called whenever the link to the meter goes up or down."""

    async def release_record(self, tx_ref: str) -> None:
        """The daemon has stored the record durably; a meter that keeps it until acknowledged may now free it."""
        return None

    async def fiscal_reading(self) -> SignedMeterRecord | None:
        """The meter's latest signed reading outside transactions (OCMF PG "F<n>"), for meters that make them
        (smart-me signs its registers every 15 minutes); None for meters that do not."""
        return None

    def transaction_work(self) -> contextlib.AbstractContextManager[None]:
        """A context for the transaction commands (start, stop, reading the signed record, release): `with
        meter.transaction_work(): await meter.stop_transaction(ref)`. A meter on a shared bus puts the requests made
        inside it ahead of sampling; the default does nothing."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    async def transaction_running(self) -> bool:
        """Whether the meter itself reports an open transaction (after a power loss or a daemon restart)."""
