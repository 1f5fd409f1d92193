"""Smart charging (§3.13, §5.5 ClearChargingProfile, §5.7 GetCompositeSchedule, §5.16 SetChargingProfile); not
claimed where no EVSE's controller sets the current.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    GetCompositeScheduleStatus,
)

from station.ocpp import profile_codec
from station.ocpp.adapter import (
    iso,
)
from station.ocpp.v16.base import (
    V16Base,
    log,
)
from station.smart.profiles import Purpose, RateUnit
from station.store import StoreError


class SmartCharging(V16Base):
    # ------------------------------------------------------------------ smart charging (§3.13, §5.5, §5.7, §5.16)

    def not_offered(self) -> frozenset[str]:
        """What SupportedFeatureProfiles does not claim is NotSupported: without current control the SmartCharging
        requests (SetChargingProfile answers NotSupported in its own status, §6.44); without `[firmware]
        allow_unsigned_16` the plain UpdateFirmware, whose answer has no status to refuse it with (§6.51)."""
        offered = self.settings.value("SupportedFeatureProfiles").split(",")
        refused: set[str] = set()
        if "SmartCharging" not in offered:
            refused |= {"ClearChargingProfile", "GetCompositeSchedule"}
        if "FirmwareManagement" not in offered:
            refused.add("UpdateFirmware")
        return frozenset(refused)

    def _profile_evse(self, connector_id: int) -> int | None:
        """The EVSE a profile's connectorId names (0: the Charge Point), None for a connector the station lacks."""
        if connector_id == 0:
            return 0
        where = self.runtime.core.layout.locate(connector_id)
        return None if where is None else where[0]

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        """§5.16 / §6.43: NotSupported where no EVSE's current can be controlled (driver "meter-output"); Rejected
        for an unknown connector, a profile the station cannot read or honour (§3.13, §9.4 limits), a TxProfile
        without a transaction (§5.16.4); else installed, stored, and applied at once (§5.16.3 "re-evaluate")."""
        smart = self.runtime.smart
        if not smart.available:
            return call_result.SetChargingProfile(status=ChargingProfileStatus.not_supported)
        evse_id = self._profile_evse(connector_id)
        refusal: str | None = f"no connector {connector_id}" if evse_id is None else None
        if evse_id is not None:
            try:
                profile = profile_codec.from_v16(cs_charging_profiles, evse_id)
            except profile_codec.ProfileFormatError as exc:
                refusal = str(exc)
            else:
                refused = smart.install(profile, ocpp16=True)
                refusal = None if refused is None else f"{refused.reason_code}: {refused.text}"
        log.info("SetChargingProfile", connector_id=connector_id, accepted=refusal is None, reason=refusal)
        status = ChargingProfileStatus.accepted if refusal is None else ChargingProfileStatus.rejected
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """§5.5 / §6.13: one profile by id, or those matching every criterion given; Unknown when none matched."""
        evse_id = None if connector_id is None else self._profile_evse(connector_id)
        removed: tuple[int, ...] = ()
        if connector_id is None or evse_id is not None:
            purpose = None if charging_profile_purpose is None else Purpose.parse(charging_profile_purpose)
            try:
                removed = self.runtime.smart.clear(id, evse_id, purpose, stack_level)
            except StoreError as exc:
                log.error("ClearChargingProfile not stored", error=str(exc))
        log.info("ClearChargingProfile", id=id, connector_id=connector_id, removed=list(removed))
        status = ClearChargingProfileStatus.accepted if removed else ClearChargingProfileStatus.unknown
        return call_result.ClearChargingProfile(status=status)

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        """§5.7 / §6.21: the composite from now for `duration` s (connector 0: what the Charge Point as a whole
        draws); Rejected for an unknown connector or a unit the station does not use (§9.4.2)."""
        evse_id = self._profile_evse(connector_id)
        unit = RateUnit(charging_rate_unit) if charging_rate_unit else RateUnit.A
        if evse_id is None or not self.runtime.smart.available or unit not in self.runtime.smart.rules.allowed_units:
            return call_result.GetCompositeSchedule(status=GetCompositeScheduleStatus.rejected)
        composite = self.runtime.smart.composite(evse_id, duration, unit)
        return call_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted,
            connector_id=connector_id,
            schedule_start=iso(composite.start),
            charging_schedule=profile_codec.to_v16_schedule(composite),
        )
