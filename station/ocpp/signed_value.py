"""Encodes a meter's signed record for OCPP, per the OCA application note "Signed Meter Values in OCPP" v1.0.

Owns the three shapes a signed value takes on the wire: the 2.x `SignedMeterValueType` object, the 1.6 SampledValue
whose `value` is that object as JSON (format "SignedData"), and the raw-OCMF variant some CSMSes expect. It never
changes the record itself: `signedMeterData` is the record's exact bytes in base64.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from station.core.model import SignedMeterRecord

PUBLIC_KEY_NEVER = "Never"
PUBLIC_KEY_ONCE = "OncePerTransaction"
PUBLIC_KEY_EVERY = "EveryMeterValue"
PUBLIC_KEY_OPTIONS = (PUBLIC_KEY_NEVER, PUBLIC_KEY_ONCE, PUBLIC_KEY_EVERY)


def oca_public_key(der_hex: str) -> str:
    """App note §3.2.2: base64 of `oca:<encoding>:<content-type>:<printed key>`; we print hex DER SPKI."""
    if not der_hex:
        return ""
    return base64.b64encode(f"oca:base16:asn1:{der_hex.upper()}".encode("ascii")).decode("ascii")


def parse_oca_public_key(text: str) -> str:
    """Inverse of `oca_public_key`: the printed key (hex or base64 DER as the prefix says)."""
    decoded = base64.b64decode(text, validate=True).decode("ascii")
    scheme, encoding, content_type, key = decoded.split(":", 3)
    if scheme != "oca" or content_type != "asn1" or encoding not in ("base16", "base64"):
        raise ValueError(f"not an OCA public key string: {decoded[:40]!r}")
    return key


def signed_meter_value(record: SignedMeterRecord, public_key_hex: str, with_key: bool) -> dict[str, Any]:
    """The 2.x SignedMeterValueType (camelCase, as on the wire)."""
    return {
        "signedMeterData": base64.b64encode(record.data.encode("utf-8")).decode("ascii"),
        # "" when the method is inside the data (OCMF carries SA), app note §3.2.1
        "signingMethod": "" if record.encoding == "OCMF" else record.signing_method,
        "encodingMethod": record.encoding,
        "publicKey": oca_public_key(public_key_hex) if with_key else "",
    }


def v16_signed_sampled_value(
    record: SignedMeterRecord, public_key_hex: str, *, with_key: bool, raw: bool = False
) -> dict[str, Any]:
    """A 1.6 SampledValue carrying a signed record (snake_case keys, as the `ocpp` library expects)."""
    value = (
        record.data if raw else json.dumps(signed_meter_value(record, public_key_hex, with_key), separators=(",", ":"))
    )
    return {
        "value": value,
        "context": record.context,
        "format": "SignedData",
        "measurand": "Energy.Active.Import.Register",
        "location": "Outlet",
        "unit": "Wh",
    }
