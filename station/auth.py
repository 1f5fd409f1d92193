"""Who may charge: the CSMS when it is reachable, else the local authorization list and the authorization cache.

Owns the local list (SendLocalList / GetLocalListVersion in 1.6, D01-D02 in 2.0.1) and the cache of answers the CSMS
gave (Authorize, StartTransaction idTagInfo), both in the store so they survive restarts. The OCPP adapters translate
to and from this; the runtime asks it before a local start. An identifier the list knows takes precedence over the
cache (1.6 §3.5.3); an expired entry counts as Expired.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from station.store import IdTagEntry, Store

log = structlog.get_logger("station.auth")

LIST = "list"
CACHE = "cache"

# Ask the CSMS: its status for the identifier, or None when it cannot be asked (offline, timeout, CALLERROR).
AskCsms = Callable[[str], Awaitable[IdTagEntry | None]]


class Authorizer:
    def __init__(
        self,
        store: Store,
        *,
        offline_allowed: Callable[[], bool] = lambda: True,
        list_enabled: Callable[[], bool] = lambda: True,
        cache_enabled: Callable[[], bool] = lambda: True,
        pre_authorize: Callable[[], bool] = lambda: False,
        unknown_offline: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.offline_allowed = offline_allowed  # LocalAuthorizeOffline
        self.list_enabled = list_enabled  # LocalAuthListEnabled
        self.cache_enabled = cache_enabled  # AuthorizationCacheEnabled
        self.pre_authorize = pre_authorize  # LocalPreAuthorize
        self.unknown_offline = unknown_offline  # AllowOfflineTxForUnknownId
        self.ask_csms: AskCsms | None = None  # set by the CSMS connection while connected

    def list_version(self) -> int:
        return self.store.counter(f"{LIST}_version") or 0

    def update_list(self, version: int, entries: list[IdTagEntry], *, full: bool) -> str:
        """Returns "Accepted", "VersionMismatch" or "Failed" (both protocols use these words)."""
        if version <= 0:
            return "Failed"
        if not full and version <= self.list_version():
            return "VersionMismatch"
        if any(not e.id_tag or len(e.id_tag) > 36 for e in entries):
            return "Failed"
        self.store.replace_id_tags(LIST, entries, full=full, version=version)
        log.info("local authorization list updated", version=version, full=full, entries=len(entries))
        return "Accepted"

    def remember(self, entry: IdTagEntry) -> None:
        """Cache what the CSMS said about an identifier (never caches over the local list). Written only when it
        changes what the cache holds: every StartTransaction answer carries the identifier's status, nearly always the
        one cached at the previous start."""
        if not self.cache_enabled() or self.store.id_tag_entry(LIST, entry.id_tag) is not None:
            return
        if self.store.id_tag_entry(CACHE, entry.id_tag) == entry:
            return
        self.store.replace_id_tags(CACHE, [entry], full=False, version=None)

    def clear_cache(self) -> None:
        self.store.clear_id_tags(CACHE)

    def local_status(self, id_tag: str, now: datetime | None = None) -> str | None:
        now = now or datetime.now(UTC)
        sources = [src for src, on in ((LIST, self.list_enabled()), (CACHE, self.cache_enabled())) if on]
        for source in sources:
            entry = self.store.id_tag_entry(source, id_tag)
            if entry is not None:
                if entry.expiry is not None and entry.expiry < now:
                    return "Expired"
                return entry.status
        return None

    def parent_of(self, id_tag: str) -> str | None:
        """The parentIdTag / groupIdToken the list or the cache knows for an identifier."""
        for source in (LIST, CACHE):
            entry = self.store.id_tag_entry(source, id_tag)
            if entry is not None and entry.parent:
                return entry.parent
        return None

    def identification_flags(self, id_tag: str, why: str) -> tuple[str, ...]:
        """OCMF IF for a card authorized as `why` says (OCMF spec, identification flags): read plainly from the card
        (RFID_PLAIN), then who checked it: the CSMS (OCPP_AUTH), the local list (OCPP_WHITELIST), the cache
        (OCPP_CACHE), or nobody (OCPP_NONE, AllowOfflineTxForUnknownId)."""
        if why.startswith("CSMS"):
            return ("RFID_PLAIN", "OCPP_AUTH")
        if "unknown identifier" in why:
            return ("RFID_PLAIN", "OCPP_NONE")
        listed = self.list_enabled() and self.store.id_tag_entry(LIST, id_tag) is not None
        return ("RFID_PLAIN", "OCPP_WHITELIST" if listed else "OCPP_CACHE")

    async def authorize(self, id_tag: str) -> tuple[bool, str]:
        """(may charge, why). With LocalPreAuthorize an identifier the list or cache holds as valid starts at once
        (1.6 §3.5.1, 2.0.1 C02/C03); else the CSMS decides when it can be asked; else the list and cache, if
        allowed (LocalAuthorizeOffline), and an identifier neither knows only with AllowOfflineTxForUnknownId."""
        if self.pre_authorize() and self.local_status(id_tag) == "Accepted":
            return True, "local pre-authorization"
        if self.ask_csms is not None:
            answer = await self.ask_csms(id_tag)
            if answer is not None:
                self.remember(answer)
                return answer.status == "Accepted", f"CSMS: {answer.status}"
        if not self.offline_allowed():
            return False, "CSMS unreachable and LocalAuthorizeOffline is false"
        status = self.local_status(id_tag)
        if status is None and self.unknown_offline():
            return True, "offline, unknown identifier allowed (AllowOfflineTxForUnknownId)"
        if status is None:
            return False, "CSMS unreachable and the identifier is in neither the local list nor the cache"
        return status == "Accepted", f"offline, local: {status}"
