"""The S.A.F.E. Transparenzsoftware's XML container: write one for a transaction, read records out of one.

Owns the container format of `meters-and-ocmf.md` §5. It writes the meter's records untouched (plain encoding) with
the key as hex DER SubjectPublicKeyInfo, which is what the official tool expects. Reading refuses documents with a
DOCTYPE (no entity expansion from untrusted files).
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from station.meter.ocmf import MeterPublicKey, OcmfError


@dataclass(frozen=True)
class ContainerEntry:
    ocmf: str
    public_key: str | None
    context: str


def to_transparency_xml(entries: Sequence[tuple[str, str]], public_key: MeterPublicKey, transaction_id: str) -> str:
    """`entries` are (context, OCMF text) pairs, e.g. ("Transaction.End", "OCMF|…")."""
    root = ET.Element("values")
    for context, record in entries:
        value = ET.SubElement(root, "value", {"transactionId": transaction_id, "context": context})
        signed = ET.SubElement(value, "signedData", {"format": "OCMF", "encoding": "plain"})
        signed.text = record
        key = ET.SubElement(value, "publicKey", {"encoding": "hex"})
        key.text = public_key.der_hex
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _decode(text: str, encoding: str) -> str:
    if encoding in ("", "plain"):
        return text.strip()
    try:
        if encoding == "base64":
            return base64.b64decode(text.strip(), validate=True).decode("utf-8")
        if encoding == "hex":
            return bytes.fromhex(text.strip()).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise OcmfError(f"signedData is not valid {encoding}") from None
    raise OcmfError(f"unknown signedData encoding {encoding!r}")


def read_transparency_xml(text: str) -> list[ContainerEntry]:
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise OcmfError("XML with a DOCTYPE or entities is refused")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise OcmfError(f"not a valid XML file: {exc}") from None
    values = root.findall("value") if root.tag == "values" else root.findall(".//value")
    entries: list[ContainerEntry] = []
    for value in values:
        signed = value.find("signedData")
        if signed is None or not (signed.text or "").strip():
            continue
        if signed.get("format", "OCMF").upper() != "OCMF":
            raise OcmfError(f"signedData format {signed.get('format')!r} is not OCMF")
        key = value.find("publicKey")
        key_text = (key.text or "").strip() or None if key is not None else None
        entries.append(
            ContainerEntry(
                _decode(signed.text or "", signed.get("encoding", "plain")), key_text, value.get("context", "")
            )
        )
    if not entries:
        raise OcmfError("the XML file holds no signedData values")
    return entries
