"""The core's vocabulary: events in, commands out, and the transaction record they talk about.

Every type here is plain data, frozen, version-neutral and free of I/O: no OCPP message names, no Modbus registers,
no SQL. Adapters translate their world into these events and carry out these commands; they must never reach into
the core's state any other way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Phase(enum.StrEnum):
    """Where a connector is in its charging cycle. Faults and availability are kept beside it, not in it."""

    AVAILABLE = "available"
    WAITING = "waiting"  # authorized; waiting for the car to be plugged in (EVSEs that see the plug)
    STARTING = "starting"  # the meter has been asked to start a transaction
    CHARGING = "charging"  # the meter confirmed the start; energy is metered (power flows when the car and EVSE allow)
    OPENING = "opening"  # the stop is asked for; the relay is opening, the meter ends once it has (feedback)
    STOPPING = "stopping"  # the meter has been asked to end and sign; waiting for the signed record


class Pilot(enum.StrEnum):
    """IEC 61851-1 control pilot states, as the charge controller reads them."""

    A = "A"  # +12 V: no vehicle
    B = "B"  # +9 V: vehicle connected, not ready to charge
    C = "C"  # +6 V: vehicle ready, charging asked for
    D = "D"  # +3 V: ready, ventilation required
    E = "E"  # 0 V: no power on the pilot (EVSE off, short circuit)
    F = "F"  # -12 V: EVSE not available (fault)

    @property
    def plugged(self) -> bool:
        return self in (Pilot.B, Pilot.C, Pilot.D)

    @property
    def wants_power(self) -> bool:
        return self in (Pilot.C, Pilot.D)


class LockState(enum.StrEnum):
    UNLOCKED = "unlocked"
    LOCKED = "locked"
    FAILED = "failed"  # the lock did not reach the state asked for (or reports a fault)
    NONE = "none"  # no lock (a fixed cable, or a socket without one)


class Fault(enum.StrEnum):
    """Faults a charge controller reports (EVerest evse_board_support's error kinds, in our words)."""

    RCD = "rcd"  # residual current device tripped
    DIODE = "diode"  # the vehicle's pilot diode is missing or shorted
    OVERCURRENT = "overcurrent"
    OVERTEMPERATURE = "overtemperature"
    RELAY_WELDED = "relay_welded"  # the contactor stays closed when told to open
    LOCK_FAILURE = "lock_failure"
    NO_GROUND = "no_ground"
    CONTROLLER_SILENT = "controller_silent"  # the controller stopped answering


class ConnectorStatus(enum.StrEnum):
    """What the CSMS is told (1.6 ChargePointStatus / 2.0.1 ConnectorStatus are both derived from it)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    FAULTED = "Faulted"
    UNAVAILABLE = "Unavailable"
    RESERVED = "Reserved"  # held for a reservation (1.6 §5.13, 2.0.1 H01.FR.20 / H01.FR.23)


class StopReason(enum.StrEnum):
    """Why a transaction ended, in the 1.6 vocabulary (the 2.0.1 adapter maps it)."""

    REMOTE = "Remote"
    LOCAL = "Local"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    SOFT_RESET = "SoftReset"
    HARD_RESET = "HardReset"
    EMERGENCY_STOP = "EmergencyStop"
    EV_DISCONNECTED = "EVDisconnected"
    DE_AUTHORIZED = "DeAuthorized"
    UNLOCK_COMMAND = "UnlockCommand"
    OTHER = "Other"
    # 2.0.1 reasons without a 1.6 word (1.6 sends Other for them)
    GROUND_FAULT = "GroundFault"
    OVERCURRENT_FAULT = "OvercurrentFault"
    TIMEOUT = "Timeout"
    STOPPED_BY_EV = "StoppedByEV"

    @property
    def ocpp16(self) -> str:
        """The 1.6 Reason (§7.43) for this stop."""
        only_201 = (StopReason.GROUND_FAULT, StopReason.OVERCURRENT_FAULT, StopReason.TIMEOUT, StopReason.STOPPED_BY_EV)
        return "Other" if self in only_201 else self.value


class StartSource(enum.StrEnum):
    REMOTE = "remote"
    LOCAL = "local"


@dataclass(frozen=True)
class SignedMeterRecord:
    """What the meter signed, exactly as it produced it, plus our check of it.

    `data` is the meter's record byte for byte (an OCMF string for every meter we support). The record is the legal
    truth: it is forwarded even when our check fails, with `verified` False and the `problems` found.
    """

    data: str
    encoding: str = "OCMF"
    signing_method: str = ""
    context: str = "Transaction.End"  # Transaction.Begin for a meter that signs begin and end separately
    verified: bool = False
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeterStamp:
    """Which meter metered and signed a transaction, stored with it in the same commit: the bill stays verifiable
    with this key after the meter has been swapped."""

    model: str
    serial: str
    firmware: str
    public_key: str  # upper-case hex DER SubjectPublicKeyInfo; "" when the meter gave none


@dataclass(frozen=True)
class Transaction:
    """One charging transaction as the core knows it. `ref` is ours (a UUID), stable before the CSMS knows it.
    It runs on one EVSE (the unit with the fiscal meter), on one of that EVSE's connectors."""

    ref: str
    evse_id: int
    id_tag: str
    source: StartSource
    requested_at: datetime
    remote_start_id: int | None = None
    started_at: datetime | None = None
    meter_start_wh: int | None = None
    stopped_at: datetime | None = None
    meter_stop_wh: int | None = None
    stop_reason: StopReason | None = None
    signed_records: tuple[SignedMeterRecord, ...] = ()
    connector_id: int = 1  # the connector of the EVSE (2.0.1 numbering: 1.. within the EVSE)
    start_trigger: str = ""  # what completed the start when it was not the authorization: "CablePluggedIn"
    identification: tuple[str, tuple[str, ...]] = ("CENTRAL", ("OCPP_RS",))  # OCMF IT and IF for the meter
    meter: MeterStamp | None = None  # the meter of the EVSE when it started the transaction
    reservation_id: int | None = None  # the reservation this transaction used (ended), for the CSMS to hear


@dataclass(frozen=True)
class Layout:
    """The station's EVSEs and the connectors of each (ids from 1, in order). Connectors also have a station-wide
    number, counted over the EVSEs in order: what a protocol with flat connector ids (OCPP 1.6) calls them."""

    evses: tuple[tuple[int, tuple[int, ...]], ...]

    @classmethod
    def one_connector_each(cls, n_evses: int) -> Layout:
        return cls(tuple((e, (1,)) for e in range(1, n_evses + 1)))

    def __post_init__(self) -> None:
        ids = [e for e, _ in self.evses]
        if ids != list(range(1, len(ids) + 1)):
            raise ValueError(f"EVSE ids must be 1..N in order, got {ids}")
        for evse, connectors in self.evses:
            if list(connectors) != list(range(1, len(connectors) + 1)):
                raise ValueError(f"EVSE {evse}: connector ids must be 1..N in order, got {list(connectors)}")

    @property
    def evse_ids(self) -> tuple[int, ...]:
        return tuple(e for e, _ in self.evses)

    def connectors_of(self, evse_id: int) -> tuple[int, ...]:
        return dict(self.evses)[evse_id]

    def numbered(self) -> list[tuple[int, int, int]]:
        """(station-wide number, EVSE id, connector id) of every connector."""
        out: list[tuple[int, int, int]] = []
        for evse, connectors in self.evses:
            out.extend((len(out) + 1, evse, c) for c in connectors)
        return out

    def number_of(self, evse_id: int, connector_id: int = 1) -> int:
        for number, evse, connector in self.numbered():
            if (evse, connector) == (evse_id, connector_id):
                return number
        raise KeyError(f"no connector {connector_id} on EVSE {evse_id}")

    def locate(self, number: int) -> tuple[int, int] | None:
        """(EVSE id, connector id) of a station-wide connector number; None when there is no such connector."""
        for n, evse, connector in self.numbered():
            if n == number:
                return evse, connector
        return None


# ---- reservations (1.6 §5.13, 2.0.1 H01-H04)


@dataclass(frozen=True)
class Reservation:
    """An EVSE (or, with `evse_id` None, any EVSE: 1.6 connector 0, 2.0.1 no evseId) held for an identifier until
    `expires_at`. `group_id` is the 1.6 parentIdTag / 2.0.1 groupIdToken: an identifier of that group may use it."""

    id: int
    evse_id: int | None
    id_tag: str
    expires_at: datetime
    group_id: str | None = None
    connector_type: str | None = None  # 2.0.1 connectorType asked for (every connector here has the same type)

    def matches(self, id_tag: str, group_id: str | None) -> bool:
        """1.6 §5.13: the incoming idTag or its parent idTag match the reservation's; 2.0.1 H03.FR.01-06."""
        if id_tag == self.id_tag:
            return True
        return self.group_id is not None and group_id is not None and group_id == self.group_id


# ---------------------------------------------------------------- events (adapters -> core)


@dataclass(frozen=True)
class StartRequested:
    evse_id: int
    id_tag: str
    at: datetime
    tx_ref: str
    source: StartSource = StartSource.REMOTE
    remote_start_id: int | None = None
    connector_id: int = 1
    # 2.0.1 TxStartPoint / TxStopPoint for this transaction (the runtime reads them from the settings):
    start_on_authorization: bool = False  # TxStartPoint Authorized: the meter starts before the car is plugged in
    # How the identifier was obtained and checked, as the meter signs it (OCMF IT and IF)
    identification: tuple[str, tuple[str, ...]] = ("CENTRAL", ("OCPP_RS",))
    stop_when_energy_stops: bool = False  # TxStopPoint EnergyTransfer: the transaction ends when the energy stops
    group_id: str | None = None  # the identifier's parentIdTag / groupIdToken, as the local list or cache knows it


@dataclass(frozen=True)
class MeterStarted:
    tx_ref: str
    meter_start_wh: int
    at: datetime
    begin_record: SignedMeterRecord | None = None  # the meter's signed begin record, where it makes one at the start
    meter: MeterStamp | None = None  # the meter that started it (serial, key), kept with the transaction


@dataclass(frozen=True)
class MeterStartFailed:
    tx_ref: str
    reason: str


@dataclass(frozen=True)
class StopRequested:
    tx_ref: str
    reason: StopReason
    at: datetime


@dataclass(frozen=True)
class MeterStopped:
    tx_ref: str
    meter_stop_wh: int
    at: datetime
    signed_records: tuple[SignedMeterRecord, ...]
    meter: MeterStamp | None = None  # the meter that signed; kept only where the start did not name one


@dataclass(frozen=True)
class MeterLinkChanged:
    """The link to one EVSE's meter went up or down: only that EVSE's connectors fault."""

    evse_id: int
    up: bool
    reason: str = ""


@dataclass(frozen=True)
class StoreHealthChanged:
    """The store can (again) or cannot record: a station that cannot record must not offer charging."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class StationAccepted:
    """The CSMS accepted our boot: charging may be offered (1.6 §4.2.1: never before the first Accepted)."""


@dataclass(frozen=True)
class AvailabilityChanged:
    """The CSMS (or the technician) makes the station (EVSE 0), an EVSE (connector 0: all of its connectors) or one
    connector operative or inoperative. While a transaction runs on an EVSE the change is scheduled for its connectors
    and takes effect when it has ended (1.6 ChangeAvailability Scheduled, 2.0.1 G03/G04)."""

    evse_id: int
    operative: bool
    connector_id: int = 0


@dataclass(frozen=True)
class EvPilotChanged:
    """The control pilot of an EVSE changed (the car plugged in, asks for power, pauses, is unplugged). The
    runtime adds what the settings say about an unplug during a transaction."""

    evse_id: int
    pilot: Pilot
    stop_on_ev_disconnect: bool = True  # 1.6 StopTransactionOnEVSideDisconnect / 2.0.1 StopTxOnEVSideDisconnect
    unlock_on_ev_disconnect: bool = True  # 1.6 UnlockConnectorOnEVSideDisconnect / 2.0.1 UnlockOnEVSideDisconnect


@dataclass(frozen=True)
class EvRelayChanged:
    evse_id: int
    closed: bool


@dataclass(frozen=True)
class EvLockChanged:
    evse_id: int
    state: LockState


@dataclass(frozen=True)
class EvFaultChanged:
    evse_id: int
    fault: Fault
    active: bool
    detail: str = ""


@dataclass(frozen=True)
class ConnectionTimedOut:
    """The ConnectionTimeOut of a watch (WatchConnection) ran out: a start with no plug in time, or a plug never
    authorized. Stale tokens (the situation has changed meanwhile) are ignored."""

    evse_id: int
    token: str


@dataclass(frozen=True)
class UnlockRequested:
    """Unlock the connector now (UnlockConnector, or the car unplugged with UnlockOnEVSideDisconnect)."""

    evse_id: int


@dataclass(frozen=True)
class CurrentLimitChanged:
    """Smart charging set the most this EVSE may offer the car, in amperes per phase (the composite schedule of its
    charging profiles, shared under the station's maximum); None: no profile limits it (the controller's maximum).
    A limit below the car's minimum (IEC 61851-1: 6 A) pauses the car: SuspendedEVSE (1.6 §3.13, 2.0.1 K01)."""

    evse_id: int
    amps: float | None


# ---- reservations (events)


@dataclass(frozen=True)
class ReserveRequested:
    """ReserveNow: place (or, with the id of one held, replace) a reservation. The Outcome's `answer` is the
    ReservationStatus: Accepted, Occupied, Faulted, Unavailable or Rejected."""

    reservation: Reservation
    at: datetime


@dataclass(frozen=True)
class ReservationCancelled:
    """CancelReservation (answer Accepted, or Rejected when no reservation has this id)."""

    reservation_id: int


@dataclass(frozen=True)
class ReservationExpired:
    """The watch of a reservation (WatchReservation) reached its expiry; stale when the reservation is gone or was
    replaced by one with another expiry."""

    reservation_id: int
    expires_at: datetime


Event = (
    StartRequested
    | MeterStarted
    | MeterStartFailed
    | StopRequested
    | MeterStopped
    | MeterLinkChanged
    | StoreHealthChanged
    | StationAccepted
    | AvailabilityChanged
    | EvPilotChanged
    | EvRelayChanged
    | EvLockChanged
    | EvFaultChanged
    | ConnectionTimedOut
    | UnlockRequested
    | CurrentLimitChanged
    | ReserveRequested
    | ReservationCancelled
    | ReservationExpired
)


# ---------------------------------------------------------------- commands (core -> adapters)


@dataclass(frozen=True)
class StartMeterTransaction:
    evse_id: int
    transaction: Transaction


@dataclass(frozen=True)
class StopMeterTransaction:
    evse_id: int
    transaction: Transaction


@dataclass(frozen=True)
class RecordTransactionStarted:
    """Persist the transaction and queue StartTransaction / TransactionEvent(Started) for the CSMS."""

    transaction: Transaction


@dataclass(frozen=True)
class RecordTransactionEnded:
    """Persist the signed end and queue StopTransaction / TransactionEvent(Ended) for the CSMS."""

    transaction: Transaction


@dataclass(frozen=True)
class RecordTransactionAborted:
    """The meter never started: nothing was metered, nothing is owed; the CSMS hears nothing about it."""

    transaction: Transaction
    reason: str


@dataclass(frozen=True)
class ReportStatus:
    evse_id: int
    status: ConnectorStatus
    error_code: str = "NoError"
    info: str = ""
    connector_id: int = 1  # within the EVSE


@dataclass(frozen=True)
class AllowPower:
    """Close (on) or open the EVSE's relay. Closed only while the meter's transaction runs, so the signed record
    covers every Wh; opened before the meter is told to end."""

    evse_id: int
    on: bool


@dataclass(frozen=True)
class LockConnector:
    evse_id: int
    locked: bool


@dataclass(frozen=True)
class WatchConnection:
    """Start the ConnectionTimeOut clock for `token` (the runtime reports ConnectionTimedOut when it runs out)."""

    evse_id: int
    token: str


@dataclass(frozen=True)
class RecordChargingState:
    """The charging state of a running transaction changed (2.0.1 TransactionEvent Updated, ChargingStateChanged)."""

    transaction: Transaction
    state: str  # 2.0.1 ChargingStateEnumType: EVConnected, Charging, SuspendedEV, SuspendedEVSE, Idle
    trigger: str = "ChargingStateChanged"  # 2.0.1 TriggerReasonEnumType: also CablePluggedIn, EVCommunicationLost


@dataclass(frozen=True)
class OfferCurrent:
    """Offer the car at most `amps` per phase (PWM duty); below the car's minimum it is paused. None: the
    controller's maximum."""

    evse_id: int
    amps: float | None


# ---- reservations (commands)


@dataclass(frozen=True)
class RecordReservation:
    """Keep a placed (or replaced) reservation in the store: it outlives a restart."""

    reservation: Reservation


@dataclass(frozen=True)
class RecordReservationEnded:
    """A reservation ended: `status` Used (a transaction started with it), Cancelled (CancelReservation), Expired
    (2.0.1 ReservationStatusUpdate Expired, H04.FR.01) or Removed (its EVSE went Faulted or Unavailable: 2.0.1
    ReservationStatusUpdate Removed, H01.FR.16/17)."""

    reservation: Reservation
    status: str


@dataclass(frozen=True)
class WatchReservation:
    """Start the clock of a reservation: the runtime reports ReservationExpired at its expiry."""

    reservation: Reservation


Command = (
    StartMeterTransaction
    | StopMeterTransaction
    | RecordTransactionStarted
    | RecordTransactionEnded
    | RecordTransactionAborted
    | ReportStatus
    | AllowPower
    | LockConnector
    | WatchConnection
    | RecordChargingState
    | OfferCurrent
    | RecordReservation
    | RecordReservationEnded
    | WatchReservation
)


@dataclass(frozen=True)
class Outcome:
    """The core's answer to one event: what it decided and what the edges must now do, in order."""

    accepted: bool
    commands: tuple[Command, ...] = ()
    reason: str = ""
    transaction: Transaction | None = field(default=None)
    answer: str = ""  # a reservation's ReservationStatus / CancelReservationStatus
