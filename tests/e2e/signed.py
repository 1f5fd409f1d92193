"""The signed end record in what the CSMS received, in either OCPP version (shared by the end-to-end tests)."""

from __future__ import annotations

import base64
import json

from station.demo.csms import Received
from station.ocpp.signed_value import parse_oca_public_key


def signed_end_record(end: Received, version: str) -> tuple[str, str]:
    """(record text, public key hex) of the signed end value in a StopTransaction (1.6 transactionData, OCA
    envelope) or a TransactionEvent(Ended) (2.0.1 signedMeterValue)."""
    if version == "1.6":
        values = [sv for mv in end.payload["transactionData"] for sv in mv["sampledValue"]]
        envelope = json.loads(next(v["value"] for v in values if v.get("format") == "SignedData"))
    else:
        values = [sv for mv in end.payload["meterValue"] for sv in mv["sampledValue"]]
        envelope = next(v["signedMeterValue"] for v in values if "signedMeterValue" in v)
    return base64.b64decode(envelope["signedMeterData"]).decode(), parse_oca_public_key(envelope["publicKey"])
