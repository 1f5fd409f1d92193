"""The local authorization list and cache (D01, D02, C11) and CustomerInformation (N09, N10)."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from station.ocpp.adapter import iso
from station.ocpp.v201.base import (
    CUSTOMER_DATA_LIMIT,
    V201Base,
    id_token_entry,
    log,
)
from station.store import IdTagEntry


class Authorization(V201Base):
    @on(Action.customer_information)
    def on_customer_information(
        self,
        request_id: int,
        report: bool,
        clear: bool,
        id_token: dict[str, Any] | None = None,
        customer_certificate: dict[str, Any] | None = None,
        customer_identifier: str | None = None,
        **_: Any,
    ) -> call_result.CustomerInformation:
        """N09/N10: what the station holds about a customer, reported and/or cleared. It holds data by idToken only:
        the authorization cache entry (cleared), the local list entry (the CSMS's: kept, N10.FR.03) and the
        transactions started with it (signed billing records: kept)."""
        references = [r for r in (id_token, customer_certificate, customer_identifier) if r is not None]
        if len(references) != 1:
            return call_result.CustomerInformation(status="Invalid")  # N09.FR.09
        if not report and not clear:
            return call_result.CustomerInformation(status="Rejected")  # N09.FR.07 / N10.FR.07
        held: list[str] = []
        if id_token is not None:
            held = self._customer_data(str(id_token.get("id_token", "")), clear=clear)
        if not held:
            parts = ["No data found for this customer."]  # N09.FR.06 / N10.FR.04
        elif report:
            parts = held  # N09.FR.05 / N10.FR.03
        else:
            parts = [f"Cleared: {line}" for line in held if line.startswith("authorization cache")] or [
                "Nothing to clear: only the local list entry and signed transactions, which are kept."
            ]
        self.follow_ups.later(self._notify_customer(request_id, parts), f"NotifyCustomerInformation {request_id}")
        log.info("CustomerInformation", request_id=request_id, report=report, clear=clear, items=len(held))
        return call_result.CustomerInformation(status="Accepted")

    def _customer_data(self, id_tag: str, *, clear: bool) -> list[str]:
        lines: list[str] = []
        cached = self.store.id_tag_entry("cache", id_tag)
        if cached is not None:
            expiry = f", valid until {iso(cached.expiry)}" if cached.expiry else ""
            lines.append(f"authorization cache: {id_tag} {cached.status}{expiry}" + (" (cleared)" if clear else ""))
            if clear:
                self.store.replace_id_tags("cache", [IdTagEntry(id_tag, None)], full=False, version=None)
        listed = self.store.id_tag_entry("list", id_tag)
        if listed is not None:
            lines.append(f"local authorization list: {id_tag} {listed.status} (kept: the list is the CSMS's)")
        count, recent = self.store.transactions_of(id_tag, limit=20)
        for stored in recent:
            tx = stored.transaction
            lines.append(
                f"transaction {tx.ref}: started {iso(tx.started_at or tx.requested_at)}"
                + (f", ended {iso(tx.stopped_at)}" if tx.stopped_at else ", running")
                + " (kept: signed billing record)"
            )
        if count > len(recent):
            lines.append(f"and {count - len(recent)} earlier transactions (kept: signed billing records)")
        return lines

    async def _notify_customer(self, request_id: int, lines: list[str]) -> None:
        """The lines in NotifyCustomerInformation parts of at most 512 characters, seqNo from 0, tbc on all but the
        last."""
        parts: list[str] = []
        for line in lines:
            while line:
                piece, line = line[:CUSTOMER_DATA_LIMIT], line[CUSTOMER_DATA_LIMIT:]
                if parts and len(parts[-1]) + 1 + len(piece) <= CUSTOMER_DATA_LIMIT:
                    parts[-1] = f"{parts[-1]}\n{piece}"
                else:
                    parts.append(piece)
        for seq_no, data in enumerate(parts):
            await self.call(
                call.NotifyCustomerInformation(
                    data=data, seq_no=seq_no, generated_at=iso(None), request_id=request_id, tbc=seq_no < len(parts) - 1
                ),
                suppress=False,
            )

    @on(Action.send_local_list)
    def on_send_local_list(
        self,
        version_number: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> call_result.SendLocalList:
        authorizer = self.runtime.authorizer
        if authorizer is None or self.settings.value("LocalAuthListEnabled") != "true":
            return call_result.SendLocalList(status="Failed", status_info={"reason_code": "Disabled"})
        items = local_authorization_list or []
        if len(items) > self.settings.int_value("SendLocalListMaxLength"):
            return call_result.SendLocalList(status="Failed", status_info={"reason_code": "TooManyEntries"})
        entries = [
            IdTagEntry(item["id_token"]["id_token"], None)
            if item.get("id_token_info") is None
            else id_token_entry(item["id_token"]["id_token"], item["id_token_info"])
            for item in items
        ]
        status = authorizer.update_list(version_number, entries, full=update_type == "Full")
        log.info("SendLocalList", version=version_number, update_type=update_type, entries=len(entries), status=status)
        return call_result.SendLocalList(status=status)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        authorizer = self.runtime.authorizer
        return call_result.GetLocalListVersion(version_number=authorizer.list_version() if authorizer else 0)

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        if self.runtime.authorizer is None:
            return call_result.ClearCache(status="Rejected")
        self.runtime.authorizer.clear_cache()
        return call_result.ClearCache(status="Accepted")
