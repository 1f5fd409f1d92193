"""GetConfiguration (at most GetConfigurationMaxKeys keys) and ChangeConfiguration (§5.8, §5.3): the keys are
station/ocpp/settings.py's.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
    ConfigurationStatus,
)

from station.ocpp.adapter import (
    CallRefused,
)
from station.ocpp.v16.base import (
    V16Base,
    log,
)


class Configuration(V16Base):
    def call_limits(self, action: str, payload: dict[str, Any], size: int) -> CallRefused | None:
        keys = payload.get("key")
        if action == "GetConfiguration" and isinstance(keys, list):
            limit = self.settings.int_value("GetConfigurationMaxKeys")
            if len(keys) > limit:
                # §9.1.9 GetConfigurationMaxKeys: more keys than the station takes in one request.
                return CallRefused("OccurenceConstraintViolation", f"more than {limit} keys (GetConfigurationMaxKeys)")
        return None

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> call_result.GetConfiguration:
        known, unknown = self.settings.read(key)
        return call_result.GetConfiguration(configuration_key=known or None, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> call_result.ChangeConfiguration:
        status = self.settings.change(key, value)
        log.info("ChangeConfiguration", key=key, status=status)
        return call_result.ChangeConfiguration(status=ConfigurationStatus(status))
