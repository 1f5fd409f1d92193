"""1.6 §9.1.33 SupportedFeatureProfiles claims only what this station can do (issues 19 and 20): SmartCharging where
an EVSE's controller sets the car's current, FirmwareManagement where the plain UpdateFirmware is allowed
(`[firmware] allow_unsigned_16`); 2.0.1 SmartChargingCtrlr.Available says the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.core.model import Layout
from station.ocpp.settings import Settings
from station.store import Store


@pytest.mark.parametrize(("smart", "firmware"), [(False, False), (True, False), (False, True), (True, True)])
def test_the_claimed_profiles_follow_the_hardware_and_the_config(tmp_path: Path, smart: bool, firmware: bool) -> None:
    store = Store(str(tmp_path / "s.db"))
    try:
        settings = Settings(
            store, Layout.one_connector_each(1), lambda _: "", smart_charging=smart, firmware_management=firmware
        )
        claimed = settings.get("SupportedFeatureProfiles")
        assert claimed is not None
        profiles = claimed.split(",")
        assert profiles[0] == "Core" and {"LocalAuthListManagement", "Reservation", "RemoteTrigger"} <= set(profiles)
        assert ("SmartCharging" in profiles) is smart
        assert ("FirmwareManagement" in profiles) is firmware
        available = settings.get_variable("SmartChargingCtrlr", "Available").value
        assert available == ("true" if smart else "false")
    finally:
        store.close()
