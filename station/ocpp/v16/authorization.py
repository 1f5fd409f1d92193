"""The local authorization list and cache (§3.5, §5.4 ClearCache, §5.10 GetLocalListVersion, §5.15 SendLocalList)."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
)

from station.ocpp.v16.base import (
    V16Base,
    id_tag_entry,
    log,
)
from station.store import IdTagEntry


class Authorization(V16Base):
    @on(Action.send_local_list)
    def on_send_local_list(
        self,
        list_version: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> call_result.SendLocalList:
        if self.runtime.authorizer is None or self.settings.value("LocalAuthListEnabled") != "true":
            return call_result.SendLocalList(status="NotSupported")
        items = local_authorization_list or []
        if len(items) > self.settings.int_value("SendLocalListMaxLength"):
            return call_result.SendLocalList(status="Failed")
        entries = [
            IdTagEntry(item["id_tag"], None)
            if item.get("id_tag_info") is None
            else id_tag_entry(item["id_tag"], item["id_tag_info"])
            for item in items
        ]
        status = self.runtime.authorizer.update_list(list_version, entries, full=update_type == "Full")
        log.info("SendLocalList", version=list_version, update_type=update_type, entries=len(entries), status=status)
        return call_result.SendLocalList(status=status)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        if self.runtime.authorizer is None or self.settings.value("LocalAuthListEnabled") != "true":
            return call_result.GetLocalListVersion(list_version=-1)
        return call_result.GetLocalListVersion(list_version=self.runtime.authorizer.list_version())

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        if self.runtime.authorizer is None:
            return call_result.ClearCache(status="Rejected")
        self.runtime.authorizer.clear_cache()
        return call_result.ClearCache(status="Accepted")
