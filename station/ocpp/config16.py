"""OCPP 1.6 configuration keys: which exist, which are read-only, their values and how a change is checked.

Owns the key table (`KEYS`). Values the CSMS changes are kept in the store's settings, so they survive restarts;
read-only keys are computed (MeterPublicKey<N> from the meter). A change is validated before anything is stored:
a bad value is Rejected and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from station.ocpp.signed_value import PUBLIC_KEY_OPTIONS, oca_public_key
from station.store import Store


def _int_range(lo: int, hi: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            return lo <= int(value) <= hi
        except ValueError:
            return False

    return check


def _bool(value: str) -> bool:
    return value.lower() in ("true", "false")


def _one_of(options: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda value: value in options


@dataclass(frozen=True)
class KeySpec:
    default: str
    readonly: bool = False
    check: Callable[[str], bool] | None = None


KEYS: dict[str, KeySpec] = {
    "HeartbeatInterval": KeySpec("300", check=_int_range(1, 86400)),
    "NumberOfConnectors": KeySpec("1", readonly=True),
    "SupportedFeatureProfiles": KeySpec("Core", readonly=True),
    "TransactionMessageAttempts": KeySpec("3", check=_int_range(1, 100)),
    "TransactionMessageRetryInterval": KeySpec("10", check=_int_range(1, 86400)),
    "MeterValueSampleInterval": KeySpec("0", check=_int_range(0, 86400)),
    "StopTxnSampledData": KeySpec("Energy.Active.Import.Register"),
    "PublicKeyWithSignedMeterValue": KeySpec("OncePerTransaction", check=_one_of(PUBLIC_KEY_OPTIONS)),
    "SampledDataSignReadings": KeySpec("true", check=_bool),
    "WebSocketPingInterval": KeySpec("30", check=_int_range(0, 3600)),
}


class Configuration16:
    def __init__(self, store: Store, connector_ids: tuple[int, ...], public_key: Callable[[], str]) -> None:
        self.store = store
        self.connector_ids = connector_ids
        self.public_key = public_key
        self.listeners: list[Callable[[str, str], None]] = []

    def get(self, key: str) -> str | None:
        if key.startswith("MeterPublicKey"):
            suffix = key[len("MeterPublicKey") :]
            if suffix.isdigit() and int(suffix) in self.connector_ids:
                return oca_public_key(self.public_key())
            return None
        spec = KEYS.get(key)
        if spec is None:
            return None
        if key == "NumberOfConnectors":
            return str(len(self.connector_ids))
        return self.store.setting(f"ocpp16.{key}") or spec.default

    def _all_keys(self) -> list[str]:
        return [*KEYS, *(f"MeterPublicKey{c}" for c in self.connector_ids)]

    def read(self, keys: list[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        for key in keys or self._all_keys():
            value = self.get(key)
            if value is None:
                unknown.append(key)
                continue
            readonly = key.startswith("MeterPublicKey") or KEYS[key].readonly
            known.append({"key": key, "readonly": readonly, "value": value})
        return known, unknown

    def change(self, key: str, value: str) -> str:
        """Returns the 1.6 ConfigurationStatus: Accepted, Rejected or NotSupported."""
        if key.startswith("MeterPublicKey") and self.get(key) is not None:
            return "Rejected"
        spec = KEYS.get(key)
        if spec is None:
            return "NotSupported"
        if spec.readonly or (spec.check is not None and not spec.check(value)):
            return "Rejected"
        self.store.set_setting(f"ocpp16.{key}", value)
        for listener in self.listeners:
            listener(key, value)
        return "Accepted"

    def int_value(self, key: str) -> int:
        return int(self.get(key) or KEYS[key].default)
