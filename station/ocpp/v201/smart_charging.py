"""Smart charging (K01, K05, K08-K10): Set/ClearChargingProfile, GetCompositeSchedule, GetChargingProfiles; not
offered at all where no EVSE's controller sets the current (K01.FR.29).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from station.ocpp import profile_codec
from station.ocpp.v201.base import (
    V201Base,
    _status_info,
    log,
)
from station.smart.book import Refusal
from station.smart.profiles import ChargingProfile, Purpose, RateUnit
from station.store import StoreError


class SmartCharging(V201Base):
    # ------------------------------------------------------------------ smart charging (K01, K05, K08-K10)

    def not_offered(self) -> frozenset[str]:
        return frozenset() if self.runtime.smart.available else SMART_ACTIONS

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        """K01: installed, stored (K01.FR.27) and applied at once (K01.FR.07); Rejected with a reasonCode for what
        the station cannot read or honour (K01.FR.09/26/28/31/35/38/40/41/43/48/52/53, the SmartChargingCtrlr
        limits). Not offered at all where no EVSE can limit the car (K01.FR.29: the adapter answers NotSupported)."""
        try:
            profile = profile_codec.from_v201(charging_profile, evse_id)
        except profile_codec.ProfileFormatError as exc:
            refusal: Refusal | None = Refusal(exc.reason_code, str(exc))
        else:
            refusal = self.runtime.smart.install(profile, ocpp16=False)
        log.info(
            "SetChargingProfile",
            evse_id=evse_id,
            accepted=refusal is None,
            reason=None if refusal is None else refusal.reason_code,
        )
        if refusal is None:
            return call_result.SetChargingProfile(status="Accepted")
        return call_result.SetChargingProfile(status="Rejected", status_info=_status_info(refusal))

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """K10: the profile with the id (K10.FR.03), or all matching every criterion given (K10.FR.04); Unknown when
        none matched (K10.FR.01); the limits are worked out again at once (K10.FR.05)."""
        criteria = charging_profile_criteria or {}
        purpose = criteria.get("charging_profile_purpose")
        removed: tuple[int, ...] = ()
        if purpose != "ChargingStationExternalConstraints":  # K10.FR.06/08: never cleared by the CSMS
            try:
                removed = self.runtime.smart.clear(
                    charging_profile_id,
                    criteria.get("evse_id"),
                    None if purpose is None else Purpose.parse(purpose),
                    criteria.get("stack_level"),
                )
            except StoreError as exc:
                log.error("ClearChargingProfile not stored", error=str(exc))
        log.info("ClearChargingProfile", id=charging_profile_id, removed=list(removed))
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        """K08: from now for `duration` s (K08.FR.02; EVSE 0: what the station draws, K08.FR.03); Rejected for an
        unknown EVSE (K08.FR.05) or a unit not in SmartChargingCtrlr.RateUnit (K08.FR.07)."""
        smart = self.runtime.smart
        unit = RateUnit(charging_rate_unit) if charging_rate_unit else RateUnit.A
        if unit not in smart.rules.allowed_units:
            why = Refusal("UnsupportedRateUnit", f"the station does not use {unit.value} (K08.FR.07)")
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_status_info(why))
        try:
            composite = smart.composite(evse_id, duration, unit)
        except ValueError as exc:
            why = Refusal("UnknownEVSE", str(exc))
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_status_info(why))
        return call_result.GetCompositeSchedule(status="Accepted", schedule=profile_codec.to_v201_schedule(composite))

    @on(Action.get_charging_profiles)
    def on_get_charging_profiles(
        self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None, **_: Any
    ) -> call_result.GetChargingProfiles:
        """K09: Accepted and then ReportChargingProfiles with the requestId (K09.FR.01), one per EVSE and source,
        tbc on all but the last (K09.FR.02); NoProfiles when none matches (K09 error handling)."""
        purpose = charging_profile.get("charging_profile_purpose")
        if purpose == "ChargingStationExternalConstraints":
            found: tuple[ChargingProfile, ...] = ()  # none exist here: no external control signals
        else:
            found = self.runtime.smart.book.select(
                evse_id,
                charging_profile.get("charging_profile_id"),
                None if purpose is None else Purpose.parse(purpose),
                charging_profile.get("stack_level"),
                charging_profile.get("charging_limit_source"),
            )
        if not found:
            return call_result.GetChargingProfiles(status="NoProfiles")
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for profile in sorted(found, key=lambda p: (p.evse_id, p.source, p.id)):
            groups.setdefault((profile.evse_id, profile.source), []).append(profile_codec.to_v201_profile(profile))
        if not self.follow_ups.later(self._report_profiles(request_id, groups), f"ReportChargingProfiles {request_id}"):
            return call_result.GetChargingProfiles(status="Rejected")
        return call_result.GetChargingProfiles(status="Accepted")

    async def _report_profiles(self, request_id: int, groups: dict[tuple[int, str], list[dict[str, Any]]]) -> None:
        reports = [(evse, source, chunk) for (evse, source), profiles in groups.items() for chunk in _chunks(profiles)]
        for n, (evse, source, chunk) in enumerate(reports):
            await self.call(
                call.ReportChargingProfiles(
                    request_id=request_id,
                    charging_limit_source=source,
                    charging_profile=chunk,
                    evse_id=evse,
                    tbc=n < len(reports) - 1,
                ),
                suppress=False,
            )


SMART_ACTIONS = frozenset({"SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule", "GetChargingProfiles"})
PROFILES_PER_REPORT = 16  # ReportChargingProfiles carry at most this many profiles (each up to 1024 periods)


def _chunks(profiles: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [profiles[i : i + PROFILES_PER_REPORT] for i in range(0, len(profiles), PROFILES_PER_REPORT)]
