"""Network connection profiles: where the station connects, in which order, and the fallback when a new one fails.

Owns the slots of OCPP 2.0.1 NetworkConnectionProfiles (B09, B10) and the choice of the profile each connection
attempt dials; the 1.6 SecurityProfile raise goes through the same choice.

- Slots "0", "1", "2" (B09.FR.06: at least two), each empty or holding a profile: URL, security profile, message
  timeout, OCPP version, interface. Slot 0 is the config file's [csms] table (with the security profile in force)
  until the CSMS stores a profile there. A stored profile is a settings row `network.slot.<n>` (JSON; "" = removed),
  so it survives restarts without a schema change.
- SetNetworkProfile is validated in full before anything is stored (B09.FR.01/02): a slot outside the valuesList
  (B09.FR.05), a security profile lower than SecurityProfile (B09.FR.04) or whose URL scheme does not fit it, SOAP,
  an OCPP version the configured one does not allow, a VPN or an APN (the station has neither: refused with the
  reason). A store that cannot take it answers Failed (B09.FR.03).
- NetworkConfigurationPriority (OCPPCommCtrlr) orders the slots; a value naming a slot without a valid profile is
  Rejected (B10.FR.02), and so is one naming a profile the station lacks what it needs for: a valid CSMS root
  installed for 2 and 3, a valid client certificate for 3, the password for 1 and 2 (A05.FR.02/03). A change takes
  effect at the next connection attempt (the next drop, or a Reset: B10.FR.04); the connection in use is left
  alone (B09 error handling: "not destructive to the current data connection").
- Each attempt dials the current entry; after NetworkProfileConnectionAttempts failed attempts the next entry
  (B10.FR.03); after every entry, the profile of the last successful connection (B10.FR.07, a snapshot kept in the
  store, so a slot overwritten since still has its working data), then the cycle again. Once a connection succeeded,
  reconnects dial that profile first (Part 4 §5.3 reconnecting), the cycle only after it failed as many times.
- On a successful connection: OCPPCommCtrlr.ActiveNetworkProfile is its slot; a profile with a higher security
  profile than SecurityProfile raises SecurityProfile and removes the slots below it (A05.FR.06); a lower one (the
  fallback after a 1.6 raise that could not connect, 1.6 security whitepaper A05.FR.08 and its error handling: "it
  SHOULD fallback to its previous security profile settings") lowers it back to the profile that works.

The outbox is the store's, whatever the profile: nothing queued is lost or repeated by a switch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

import structlog

from station.config import Config
from station.ocpp.security import RECONFIGURED, Security
from station.ocpp.settings import NETWORK_SLOTS, Settings
from station.store import Store, StoreError

log = structlog.get_logger("station.network")

SLOT_KEY = "network.slot.{}"
LAST_WORKING_KEY = "network.last_working"
INTERFACES = tuple(f"{kind}{n}" for kind in ("Wired", "Wireless") for n in range(4))  # OCPPInterfaceEnumType
VERSIONS = {"1.6": ("OCPP16",), "2.0.1": ("OCPP20",), "auto": ("OCPP16", "OCPP20")}  # what the config lets it speak
MAX_URL = 512  # NetworkConnectionProfileType.ocppCsmsUrl string[0..512]


@dataclass(frozen=True)
class NetworkProfile:
    slot: int
    url: str  # without the station id (B09: SecurityCtrlr.Identity is appended)
    security_profile: int
    message_timeout: int  # s
    ocpp_version: str = "OCPP20"  # OCPPVersionEnumType; the handshake decides the version (Part 2 §2.35)
    interface: str = "Wired0"  # OCPPInterfaceEnumType; the OS routes (the spec lets a station use another one)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NetworkProfile:
        data = json.loads(text)
        return cls(
            slot=int(data["slot"]),
            url=str(data["url"]),
            security_profile=int(data["security_profile"]),
            message_timeout=int(data["message_timeout"]),
            ocpp_version=str(data.get("ocpp_version", "OCPP20")),
            interface=str(data.get("interface", "Wired0")),
        )

    def same_connection(self, other: NetworkProfile) -> bool:
        return (self.url, self.security_profile) == (other.url, other.security_profile)


@dataclass(frozen=True)
class Answer:
    status: str  # SetNetworkProfileStatusEnumType
    reason_code: str = ""  # StatusInfoType.reasonCode (CiString20)
    reason: str = ""


class NetworkProfiles:
    def __init__(self, config: Config, settings: Settings, store: Store, security: Security) -> None:
        self.config = config
        self.settings = settings
        self.store = store
        self.security = security
        self.active: int | None = None  # the slot of the connection in use (ActiveNetworkProfile)
        self._sticky: NetworkProfile | None = None  # the profile that last connected in this run
        self._index = 0  # the entry of the cycle being dialled
        self._attempts = 0  # failed attempts on the profile being dialled
        settings.checks["NetworkConfigurationPriority"] = self._valid_priority
        settings.computed["ActiveNetworkProfile"] = lambda: str(
            self.active if self.active is not None else self.priority()[0]
        )
        settings.listeners.append(self._setting_changed)

    # ------------------------------------------------------------------ the slots

    def seed(self) -> NetworkProfile:
        """Slot 0 as the config file has it, with the security profile in force (raised by 1.6 SecurityProfile)."""
        csms = self.config.csms
        version = "OCPP16" if csms.ocpp_version == "1.6" else "OCPP20"
        return NetworkProfile(0, csms.endpoint, self.security.profile, int(csms.response_timeout), version)

    def slot(self, number: int) -> NetworkProfile | None:
        stored = self.store.setting(SLOT_KEY.format(number))
        if stored is None:
            return self.seed() if number == 0 else None
        if stored == "":
            return None  # removed (A05.FR.06)
        try:
            return NetworkProfile.from_json(stored)
        except (ValueError, KeyError, TypeError):
            log.error("a stored network profile does not read back; ignored", slot=number)
            return None

    def priority(self) -> list[int]:
        slots = [int(s) for s in self.settings.value("NetworkConfigurationPriority").split(",") if s.strip().isdigit()]
        return slots or [0]

    def last_working(self) -> NetworkProfile | None:
        stored = self.store.setting(LAST_WORKING_KEY)
        if not stored:
            return None
        try:
            return NetworkProfile.from_json(stored)
        except (ValueError, KeyError, TypeError):
            return None

    def problems(self, profile: NetworkProfile) -> list[str]:
        """Why this station cannot connect with `profile` (empty: it can)."""
        return self.security.missing_for(profile.security_profile, profile.url)

    def _valid_priority(self, value: str) -> bool:
        """B10.FR.01/02, A05.FR.02-04: every slot named holds a profile, none below SecurityProfile, and one above it
        only when the station has what that profile needs."""
        for item in value.split(","):
            profile = self.slot(int(item)) if item.strip().isdigit() else None
            if profile is None:
                log.warning("NetworkConfigurationPriority names an empty slot", slot=item)
                return False
            if profile.security_profile < self.security.profile:
                log.warning("NetworkConfigurationPriority names a profile below SecurityProfile", slot=item)
                return False
            # A05.FR.02/03 are about a raise: the profile in force is not checked again (its root may be the system's)
            if profile.security_profile > self.security.profile and self.problems(profile):
                log.warning("NetworkConfigurationPriority names a profile that cannot be used", slot=item)
                return False
        return True

    def set_profile(self, slot: int, data: dict[str, Any]) -> Answer:
        """SetNetworkProfile (B09): `data` is the NetworkConnectionProfileType as the library hands it (snake case)."""
        refusal = self._refusal(slot, data)
        if refusal is not None:
            log.warning("SetNetworkProfile rejected", slot=slot, reason=refusal.reason)
            return refusal
        profile = NetworkProfile(
            slot=slot,
            url=str(data["ocpp_csms_url"]).rstrip("/"),
            security_profile=int(data["security_profile"]),
            message_timeout=int(data["message_timeout"]),
            ocpp_version=str(data["ocpp_version"]),
            interface=str(data["ocpp_interface"]),
        )
        try:
            self.store.set_setting(SLOT_KEY.format(slot), profile.to_json())
            self.store.security_event(RECONFIGURED, f"network profile set in slot {slot}")
        except StoreError as exc:
            log.error("SetNetworkProfile: the store failed", error=str(exc))
            return Answer("Failed", "InternalError", "the station could not store the profile")  # B09.FR.03
        log.info("network profile stored", slot=slot, url=profile.url, security_profile=profile.security_profile)
        self.changed()
        return Answer("Accepted")

    def _refusal(self, slot: int, data: dict[str, Any]) -> Answer | None:
        def rejected(code: str, reason: str) -> Answer:
            return Answer("Rejected", code, reason)

        if str(slot) not in NETWORK_SLOTS:
            return rejected("InvalidValue", f"configurationSlot must be one of {','.join(NETWORK_SLOTS)}")  # FR.05
        if data.get("ocpp_transport") != "JSON":
            return rejected("UnsupportedParam", "only JSON over WebSockets (ocppTransport JSON)")
        version = str(data.get("ocpp_version"))
        if version not in VERSIONS[self.config.csms.ocpp_version]:
            allowed = " or ".join(VERSIONS[self.config.csms.ocpp_version])
            return rejected("UnsupportedParam", f"ocppVersion {version[:20]}: this station is set up for {allowed}")
        if data.get("vpn"):
            return rejected("UnsupportedParam", "this station has no VPN client; set up the VPN on the network side")
        if data.get("apn"):
            return rejected("UnsupportedParam", "this station has no cellular modem (APN)")
        if data.get("ocpp_interface") not in INTERFACES:
            return rejected("InvalidValue", "ocppInterface is not an OCPPInterfaceEnumType value")
        url = str(data.get("ocpp_csms_url", ""))
        parsed = urlparse(url)
        if len(url) > MAX_URL or parsed.scheme not in ("ws", "wss") or not parsed.hostname:
            return rejected("InvalidURL", "ocppCsmsUrl must be a ws:// or wss:// URL with a host")
        timeout = data.get("message_timeout")
        if not isinstance(timeout, int) or not 1 <= timeout <= 3600:
            return rejected("InvalidValue", "messageTimeout must be 1 to 3600 s")
        security = data.get("security_profile")
        if not isinstance(security, int) or not 0 <= security <= 3:
            return rejected("InvalidValue", "securityProfile must be 0 to 3")
        if security < self.security.profile:  # B09.FR.04: never a downgrade
            return rejected("InvalidValue", f"securityProfile {security} is below SecurityProfile")
        scheme = self.security.wrong_scheme(security, url)
        if scheme:
            return rejected("InvalidURL", f"securityProfile {security} needs {scheme}")
        # What the station lacks for the profile (a CSMS root, a client certificate, ...) does not refuse storing it:
        # it refuses the NetworkConfigurationPriority that would use it (A05.FR.02/03, TC_A_20_CS, TC_A_21_CS), so
        # the CSMS can install what is missing in between.
        return None

    # ------------------------------------------------------------------ which profile to dial

    def _cycle(self) -> list[NetworkProfile]:
        entries = [p for s in self.priority() if (p := self.slot(s)) is not None]
        fallback = self.last_working()
        if fallback is not None and not any(fallback.same_connection(p) for p in entries):
            entries.append(fallback)  # B10.FR.07
        return entries or [self.seed()]

    def current(self) -> NetworkProfile:
        if self._sticky is not None:
            return self._sticky
        cycle = self._cycle()
        return cycle[self._index % len(cycle)]

    def failed(self) -> None:
        """One attempt with current() failed; after NetworkProfileConnectionAttempts of them, the next profile."""
        self._attempts += 1
        if self._attempts < self.settings.int_value("NetworkProfileConnectionAttempts"):
            return
        was = self.current()
        self._attempts = 0
        if self._sticky is not None:
            self._sticky, self._index = None, 0
        else:
            self._index = (self._index + 1) % len(self._cycle())
        now = self.current()
        if now != was:
            log.warning(
                "network profile does not connect; trying the next one",
                failed_slot=was.slot,
                failed_url=was.url,
                next_slot=now.slot,
                next_url=now.url,
                security_profile=now.security_profile,
            )

    def connected(self, profile: NetworkProfile) -> None:
        self._sticky, self._attempts, self._index = profile, 0, 0
        self.active = profile.slot
        in_force = self.security.profile
        try:
            self.store.set_setting(LAST_WORKING_KEY, profile.to_json())
            if profile.security_profile > in_force:
                self._remove_below(profile)  # A05.FR.06
            if profile.security_profile != in_force:
                self.store.set_setting("ocpp16.SecurityProfile", str(profile.security_profile))
                self.store.security_event(
                    RECONFIGURED, f"security profile {in_force} -> {profile.security_profile} (connected)"
                )
                log.warning(
                    "security profile now the one of the connection that works",
                    was=in_force,
                    now=profile.security_profile,
                    slot=profile.slot,
                )
        except StoreError as exc:
            log.error("could not record the working network profile", error=str(exc))

    def _remove_below(self, profile: NetworkProfile) -> None:
        kept = []
        for number in (int(s) for s in NETWORK_SLOTS):
            existing = self.slot(number)
            if existing is not None and existing.security_profile < profile.security_profile:
                self.store.set_setting(SLOT_KEY.format(number), "")
                log.info("network profile below the new security profile removed", slot=number)
            elif existing is not None:
                kept.append(number)
        order = [s for s in self.priority() if s in kept] or [profile.slot]
        self.store.set_setting("ocpp16.NetworkConfigurationPriority", ",".join(map(str, order)))

    def changed(self) -> None:
        """The slots, their order or the security profile changed: the next attempt starts the cycle over."""
        self._sticky, self._index, self._attempts = None, 0, 0

    def _setting_changed(self, name: str, _value: str) -> None:
        if name in ("NetworkConfigurationPriority", "SecurityProfile"):
            self.changed()
