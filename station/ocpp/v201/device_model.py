"""GetVariables / SetVariables (B06, B05) within ItemsPerMessage and BytesPerMessage, GetBaseReport (B07) and the
physical part of the device model (ChargingStation, EVSE and Connector components, read from the runtime; the
configuration part is station/ocpp/settings.py's).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from station.ocpp.adapter import (
    CallRefused,
    iso,
)
from station.ocpp.settings import CONNECTOR_TYPE, SUPPLY_PHASES, VariableResult
from station.ocpp.v201.base import (
    AVAILABILITY_STATES,
    CONNECTOR_STATUS,
    EVSE_MAX_POWER_W,
    V201Base,
    log,
)


class DeviceModel(V201Base):
    def call_limits(self, action: str, payload: dict[str, Any], size: int) -> CallRefused | None:
        """What the station announces it takes per request (DeviceDataCtrlr ItemsPerMessage / BytesPerMessage):
        more items get OccurrenceConstraintViolation (B06.FR.16), more bytes FormatViolation (B06.FR.17)."""
        field = {"GetVariables": "getVariableData", "SetVariables": "setVariableData"}.get(action)
        if field is None:
            return None
        items = payload.get(field)
        limit = self.settings.int_value(f"ItemsPerMessage{action}")
        if isinstance(items, list) and len(items) > limit:
            return CallRefused("OccurrenceConstraintViolation", f"more than {limit} items (ItemsPerMessage{action})")
        byte_limit = self.settings.int_value(f"BytesPerMessage{action}")
        if size > byte_limit:
            return CallRefused("FormatViolation", f"more than {byte_limit} bytes (BytesPerMessage{action})")
        return None

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> call_result.GetVariables:
        results = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            attribute = item.get("attribute_type") or "Actual"
            got = self._physical_variable(component, variable, attribute) or self.settings.get_variable(
                component["name"],
                variable["name"],
                instance=variable.get("instance"),
                evse=(component.get("evse") or {}).get("id"),
                attribute=attribute,
            )
            result: dict[str, Any] = {
                "attribute_status": got.status,
                "attribute_type": attribute,
                "component": component,
                "variable": variable,
            }
            if got.value is not None:
                result["attribute_value"] = got.value[:2500]
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> call_result.SetVariables:
        results = []
        for item in set_variable_data:
            component, variable = item["component"], item["variable"]
            attribute = item.get("attribute_type") or "Actual"
            physical = self._physical_variable(component, variable, attribute)
            if physical is not None:
                # The physical components' variables are all ReadOnly (B05.FR.09); unknown ones keep their status.
                status = "Rejected" if physical.status == "Accepted" else physical.status
            else:
                status = self.settings.set_variable(
                    component["name"],
                    variable["name"],
                    str(item["attribute_value"]),
                    instance=variable.get("instance"),
                    evse=(component.get("evse") or {}).get("id"),
                    attribute=attribute,
                )
            log.info("SetVariables", component=component["name"], variable=variable["name"], status=status)
            results.append(
                {"attribute_status": status, "attribute_type": attribute, "component": component, "variable": variable}
            )
        return call_result.SetVariables(set_variable_result=results)

    # ------------------------------------------------------------------ the physical device model

    def _physical(self) -> list[tuple[dict[str, Any], str, str, dict[str, Any]]]:
        """(component, variable, value, characteristics) of the ChargingStation, each EVSE and its Connector, as
        Part 2 "Referenced Components and Variables" §2.13 requires them; all ReadOnly."""
        core = self.runtime.core
        options = {"dataType": "OptionList", "valuesList": AVAILABILITY_STATES}
        station_state = "Available"
        if all(not e.meter_link_up for e in core.evses.values()) or not core.store_ok:
            station_state = "Faulted"
        elif core.inoperative():
            station_state = "Unavailable"
        rows: list[tuple[dict[str, Any], str, str, dict[str, Any]]] = [
            ({"name": "ChargingStation"}, "AvailabilityState", station_state, options),
            ({"name": "ChargingStation"}, "Available", "true", {"dataType": "boolean"}),
            ({"name": "ChargingStation"}, "SupplyPhases", SUPPLY_PHASES, {"dataType": "integer"}),
        ]
        for evse_id, connector_ids in core.layout.evses:
            live = self.runtime.meter_state(evse_id).live
            charging = core.transaction_on(evse_id) is not None
            power = float(live.power_w) if live is not None and charging else 0.0
            evse = {"name": "EVSE", "evse": {"id": evse_id}}
            first = connector_ids[0]
            evse_state = CONNECTOR_STATUS[core.status_of(evse_id, first)]
            rows += [
                (evse, "AvailabilityState", evse_state, options),
                (evse, "Available", "true", {"dataType": "boolean"}),
                (evse, "Power", f"{power:.1f}", {"dataType": "decimal", "unit": "W", "maxLimit": EVSE_MAX_POWER_W}),
                (evse, "SupplyPhases", SUPPLY_PHASES, {"dataType": "integer"}),
            ]
            for connector_id in connector_ids:
                connector = {"name": "Connector", "evse": {"id": evse_id, "connectorId": connector_id}}
                rows += [
                    (connector, "AvailabilityState", CONNECTOR_STATUS[core.status_of(evse_id, connector_id)], options),
                    (connector, "Available", "true", {"dataType": "boolean"}),
                    (connector, "ConnectorType", CONNECTOR_TYPE, {"dataType": "string"}),
                    (connector, "SupplyPhases", SUPPLY_PHASES, {"dataType": "integer"}),
                ]
        return rows

    def _physical_variable(
        self, component: dict[str, Any], variable: dict[str, Any], attribute: str
    ) -> VariableResult | None:
        """GetVariables of a physical component; None when the component is not one of them."""
        name = component.get("name")
        if name not in ("ChargingStation", "EVSE", "Connector"):
            return None
        evse = component.get("evse") or {}
        wanted = {"name": name} if name == "ChargingStation" else {"name": name, "evse": evse}
        if name == "Connector":
            wanted["evse"] = {"id": evse.get("id"), "connectorId": evse.get("connector_id")}
        rows = [r for r in self._physical() if r[0] == wanted]
        if not rows:
            return VariableResult("UnknownComponent")
        row = next((r for r in rows if r[1] == variable.get("name") and not variable.get("instance")), None)
        if row is None:
            return VariableResult("UnknownVariable")
        if attribute != "Actual":
            return VariableResult("NotSupportedAttributeType")
        return VariableResult("Accepted", row[2])

    def _physical_report(self) -> list[dict[str, Any]]:
        return [
            {
                "component": component,
                "variable": {"name": variable},
                "variableAttribute": [
                    {"type": "Actual", "value": value, "mutability": "ReadOnly", "persistent": False}
                ],
                "variableCharacteristics": {**characteristics, "supportsMonitoring": False},
            }
            for component, variable, value, characteristics in self._physical()
        ]

    @on(Action.get_base_report)
    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> call_result.GetBaseReport:
        if report_base not in ("ConfigurationInventory", "FullInventory"):
            return call_result.GetBaseReport(status="NotSupported")
        configuration_only = report_base == "ConfigurationInventory"
        items = self.settings.report(configuration_only=configuration_only)
        if not configuration_only:
            items = self._physical_report() + items  # B07.FR.08: all component-variables
        if not self.follow_ups.later(self._notify_report(request_id, items), f"NotifyReport {request_id}"):
            return call_result.GetBaseReport(status="Rejected")
        return call_result.GetBaseReport(status="Accepted")

    async def _notify_report(self, request_id: int, items: list[dict[str, Any]]) -> None:
        """In parts of ItemsPerMessage[GetReport] items, seqNo from 0 (B07.FR.10), tbc on all but the last."""
        per_message = max(1, self.settings.int_value("ItemsPerMessageGetReport"))
        chunks = [items[i : i + per_message] for i in range(0, len(items), per_message)] or [[]]
        for seq_no, chunk in enumerate(chunks):
            await self.call(
                call.NotifyReport(
                    request_id=request_id,
                    generated_at=iso(None),
                    seq_no=seq_no,
                    report_data=chunk or None,
                    tbc=seq_no < len(chunks) - 1,
                ),
                suppress=False,
            )
