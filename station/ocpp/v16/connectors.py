"""What the Central System asks of one connector: ChangeAvailability (§5.2), UnlockConnector (§5.18), and
reservations (§3.11, §5.13 ReserveNow, §5.1 CancelReservation; the rules are the core's).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
)

from station.core.model import (
    Reservation,
)
from station.ocpp.adapter import (
    reservation_expiry,
)
from station.ocpp.v16.base import (
    V16Base,
    log,
)


class Connectors(V16Base):
    @on(Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str, **_: Any) -> call_result.ChangeAvailability:
        # Connector 0 is the whole Charge Point (§5.2).
        where = (0, 0) if connector_id == 0 else self.runtime.core.layout.locate(connector_id)
        if where is None:
            return call_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        outcome = self.runtime.change_availability(where[0], type == "Operative", where[1])
        log.info("ChangeAvailability", connector_id=connector_id, to=type, accepted=outcome.accepted)
        if not outcome.accepted:
            return call_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        scheduled = outcome.reason == "scheduled"
        return call_result.ChangeAvailability(
            status=AvailabilityStatus.scheduled if scheduled else AvailabilityStatus.accepted
        )

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        """§5.18: a running transaction there is ended first (reason UnlockCommand), then the lock opens: Unlocked,
        or UnlockFailed when the lock says it did not; NotSupported for a fixed cable (no lock) and for a connector
        the station does not have."""
        where = self.runtime.core.layout.locate(connector_id)
        if where is None:
            return call_result.UnlockConnector(status="NotSupported")
        status = await self.runtime.unlock(where[0], where[1], end_transaction=True)
        log.info("UnlockConnector", connector_id=connector_id, status=status)
        return call_result.UnlockConnector(status="NotSupported" if status == "UnknownConnector" else status)

    # ---- reservations (§3.11, §5.13 ReserveNow, §5.1 CancelReservation)

    @on(Action.reserve_now)
    def on_reserve_now(
        self,
        connector_id: int,
        expiry_date: str,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
        **_: Any,
    ) -> call_result.ReserveNow:
        """§5.13: connector 0 only with ReserveConnectorZeroSupported (else Rejected); a connector reserves its EVSE
        (the unit with the meter: all of its connectors report Reserved); the answer is the core's (§7.40)."""
        where = None if connector_id == 0 else self.runtime.core.layout.locate(connector_id)
        if self.settings.value("ReservationEnabled") != "true":
            status, why = "Rejected", "reservations are disabled"
        elif connector_id == 0 and self.settings.value("ReserveConnectorZeroSupported") != "true":
            status, why = "Rejected", "ReserveConnectorZeroSupported is false"
        elif connector_id != 0 and where is None:
            status, why = "Rejected", f"no connector {connector_id}"
        else:
            evse_id = None if where is None else where[0]
            reservation = Reservation(reservation_id, evse_id, id_tag, reservation_expiry(expiry_date), parent_id_tag)
            outcome = self.runtime.reserve(reservation)
            status, why = outcome.answer or "Rejected", outcome.reason
        log.info("ReserveNow", reservation_id=reservation_id, connector_id=connector_id, status=status, reason=why)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> call_result.CancelReservation:
        """§5.1: Accepted for a reservation the station holds, else Rejected."""
        status = self.runtime.cancel_reservation(reservation_id).answer or "Rejected"
        log.info("CancelReservation", reservation_id=reservation_id, status=status)
        return call_result.CancelReservation(status=status)
