"""What the CSMS asks of one EVSE or connector: ChangeAvailability (G03), UnlockConnector (F05) and reservations
(H01 ReserveNow, H02 CancelReservation; H03 and H04 are the core's and the runtime's).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from station.core.model import Reservation
from station.ocpp.adapter import reservation_expiry
from station.ocpp.settings import CONNECTOR_TYPE
from station.ocpp.v201.base import (
    V201Base,
    log,
)


class Evses(V201Base):
    # ---- reservations (H01 ReserveNow, H02 CancelReservation; H03 and H04 are the core's and the runtime's)

    @on(Action.reserve_now)
    def on_reserve_now(
        self,
        id: int,
        expiry_date_time: str,
        id_token: dict[str, Any],
        connector_type: str | None = None,
        evse_id: int | None = None,
        group_id_token: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ReserveNow:
        """H01: Rejected when ReservationCtrlr.Enabled is false (H01.FR.01), without an evseId unless NonEvseSpecific
        (H01.FR.18/19), for an EVSE or connector type the station does not have; else the core's answer (H01.FR.02-14;
        every connector here is of one type, so a connectorType reservation is one of any EVSE, H01.FR.06/09)."""
        if self.settings.value("ReservationEnabled") != "true":
            status, why = "Rejected", "ReservationCtrlr.Enabled is false"
        elif evse_id is None and self.settings.value("ReserveConnectorZeroSupported") != "true":
            status, why = "Rejected", "ReservationCtrlr.NonEvseSpecific is false"
        elif evse_id is not None and evse_id not in self.runtime.core.layout.evse_ids:
            status, why = "Rejected", f"no EVSE {evse_id}"
        elif connector_type is not None and connector_type not in (CONNECTOR_TYPE, "Unknown"):
            status, why = "Rejected", f"no connector of type {connector_type}"
        else:
            group = None if group_id_token is None else str(group_id_token.get("id_token", ""))
            token = str(id_token.get("id_token", ""))
            expiry = reservation_expiry(expiry_date_time)
            outcome = self.runtime.reserve(Reservation(id, evse_id, token, expiry, group or None, connector_type))
            status, why = outcome.answer or "Rejected", outcome.reason
        log.info("ReserveNow", reservation_id=id, evse_id=evse_id, status=status, reason=why)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> call_result.CancelReservation:
        """H02.FR.01 (Rejected for an unknown id), H02.FR.02 (cancelled; no ReservationStatusUpdate, H02 remark)."""
        status = self.runtime.cancel_reservation(reservation_id).answer or "Rejected"
        log.info("CancelReservation", reservation_id=reservation_id, status=status)
        return call_result.CancelReservation(status=status)

    @on(Action.change_availability)
    def on_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.ChangeAvailability:
        # G03: no evse is the whole station; an evse without connectorId is that EVSE with all its connectors.
        evse_id = int((evse or {}).get("id", 0))
        connector_id = int((evse or {}).get("connector_id", 0))
        layout = self.runtime.core.layout
        if evse_id != 0 and evse_id not in layout.evse_ids:
            return call_result.ChangeAvailability(status="Rejected", status_info={"reason_code": "UnknownEvse"})
        if evse_id != 0 and connector_id not in (0, *layout.connectors_of(evse_id)):
            return call_result.ChangeAvailability(status="Rejected", status_info={"reason_code": "UnknownConnector"})
        outcome = self.runtime.change_availability(evse_id, operational_status == "Operative", connector_id)
        log.info("ChangeAvailability", evse_id=evse_id, to=operational_status, accepted=outcome.accepted)
        if not outcome.accepted:
            return call_result.ChangeAvailability(status="Rejected")
        return call_result.ChangeAvailability(status="Scheduled" if outcome.reason == "scheduled" else "Accepted")

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        """F05: UnknownConnector for a connector the station does not have; OngoingAuthorizedTransaction while a
        transaction runs there (F05.FR.02: the CSMS ends it first); else the lock opens: Unlocked, or UnlockFailed
        when the lock says it did not (F05.FR.04). A fixed cable has no lock to open: nothing holds the plug."""
        status = await self.runtime.unlock(evse_id, connector_id, end_transaction=False)
        log.info("UnlockConnector", evse_id=evse_id, connector_id=connector_id, status=status)
        return call_result.UnlockConnector(status="Unlocked" if status == "NotSupported" else status)
