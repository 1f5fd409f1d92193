"""OCMF (Open Charge Metering Format): parse a record, load a meter's public key, verify, check a transaction.

Owns the rules of `../shared/docs/meters-and-ocmf.md` §3–4: the signature covers the payload bytes exactly as
transmitted (between the first and second `|`), so this module never re-serialises a payload; SE may be hex (default)
or base64; signatures may be DER (also the non-minimal DER some meters emit) or raw r‖s; keys may be DER SPKI, raw
04‖X‖Y or raw X‖Y, in hex (whitespace ignored) or base64; the key's curve must be the SA's curve. SHA-256 is the hash
for every curve. secp192k1, which `cryptography` lacks, is verified by a small pure-Python ECDSA. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

DEFAULT_SA = "ECDSA-secp256r1-SHA256"


class OcmfError(ValueError):
    """The input cannot be used at all (not OCMF, broken JSON, an unreadable key). A bad signature is not an error."""


# ------------------------------------------------------------------------------------------------ curves


@dataclass(frozen=True)
class Curve:
    name: str  # canonical, as in the OCMF SA ("secp256r1", "brainpoolP384r1", ...)
    size: int  # coordinate size in bytes
    oid: str
    factory: type[ec.EllipticCurve] | None  # None: not in cryptography (secp192k1)


CURVES: dict[str, Curve] = {
    c.name: c
    for c in (
        Curve("secp192r1", 24, "1.2.840.10045.3.1.1", ec.SECP192R1),
        Curve("secp192k1", 24, "1.3.132.0.31", None),
        Curve("secp256r1", 32, "1.2.840.10045.3.1.7", ec.SECP256R1),
        Curve("secp256k1", 32, "1.3.132.0.10", ec.SECP256K1),
        Curve("brainpoolP256r1", 32, "1.3.36.3.3.2.8.1.1.7", ec.BrainpoolP256R1),
        Curve("secp384r1", 48, "1.3.132.0.34", ec.SECP384R1),
        Curve("brainpoolP384r1", 48, "1.3.36.3.3.2.8.1.1.11", ec.BrainpoolP384R1),
    )
}
_ALIASES = {"brainpool256r1": "brainpoolP256r1", "brainpool384r1": "brainpoolP384r1", "prime256v1": "secp256r1"}
_SA = re.compile(r"^ECDSA-([A-Za-z0-9]+)-SHA256$")
_CURVES_LOWER = {k.lower(): v for k, v in CURVES.items()}
_CURVES_BY_OID = {c.oid: c for c in CURVES.values()}


@functools.lru_cache(maxsize=32)
def curve_of_sa(sa: str) -> Curve:
    match = _SA.match(sa)
    if not match:
        raise OcmfError(f"unsupported signature algorithm SA={sa!r}; expected ECDSA-<curve>-SHA256")
    name = match.group(1)
    name = _ALIASES.get(name, name)
    curve = _CURVES_LOWER.get(name.lower())
    if curve is None:
        raise OcmfError(f"unsupported curve {match.group(1)!r} in SA={sa!r}")
    return curve


# secp192k1 (SEC 2 §2.2.1), for the pure-Python verifier
_K192 = {
    "p": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFEE37,
    "a": 0,
    "b": 3,
    "gx": 0xDB4FF10EC057E9AE26B07D0280B7F4341DA5D1B1EAE06C7D,
    "gy": 0x9B2F2F6D9C5628A7844163D015BE86344082AA88D95E2F9D,
    "n": 0xFFFFFFFFFFFFFFFFFFFFFFFE26F2FC170F69466A74DEFD8D,
}


def _ec_add(p1: tuple[int, int] | None, p2: tuple[int, int] | None, p: int) -> tuple[int, int] | None:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    if p1[0] == p2[0] and (p1[1] + p2[1]) % p == 0:
        return None
    if p1 == p2:
        lam = (3 * p1[0] * p1[0] + _K192["a"]) * pow(2 * p1[1], -1, p) % p
    else:
        lam = (p2[1] - p1[1]) * pow(p2[0] - p1[0], -1, p) % p
    x = (lam * lam - p1[0] - p2[0]) % p
    return x, (lam * (p1[0] - x) - p1[1]) % p


def _ec_mul(k: int, point: tuple[int, int] | None, p: int) -> tuple[int, int] | None:
    result: tuple[int, int] | None = None
    while k:
        if k & 1:
            result = _ec_add(result, point, p)
        point = _ec_add(point, point, p)
        k >>= 1
    return result


def _verify_k192(x: int, y: int, r: int, s: int, digest: bytes) -> bool:
    p, n = _K192["p"], _K192["n"]
    if (y * y - x * x * x - _K192["b"]) % p != 0:
        return False  # not on the curve
    if not (1 <= r < n and 1 <= s < n):
        return False
    e = int.from_bytes(digest, "big")
    if n.bit_length() < 256:
        e >>= 256 - n.bit_length()
    w = pow(s, -1, n)
    point = _ec_add(_ec_mul(e * w % n, (_K192["gx"], _K192["gy"]), p), _ec_mul(r * w % n, (x, y), p), p)
    return point is not None and point[0] % n == r


# ------------------------------------------------------------------------------------------------ keys


def _der_len(n: int) -> bytes:
    return (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | len(n.to_bytes((n.bit_length() + 7) // 8, "big"))])
        + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )


def _der_oid(dotted: str) -> bytes:
    parts = [int(x) for x in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for value in parts[2:]:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        body += bytes(reversed(chunk))
    return b"\x06" + _der_len(len(body)) + body


def _spki(curve: Curve, point: bytes) -> bytes:
    algorithm = _der_oid("1.2.840.10045.2.1") + _der_oid(curve.oid)
    algorithm = b"\x30" + _der_len(len(algorithm)) + algorithm
    bits = b"\x03" + _der_len(len(point) + 1) + b"\x00" + point
    body = algorithm + bits
    return b"\x30" + _der_len(len(body)) + body


@dataclass(frozen=True)
class MeterPublicKey:
    curve: str
    point: bytes  # uncompressed 04‖X‖Y
    der: bytes = field(repr=False)  # DER SubjectPublicKeyInfo

    @property
    def der_hex(self) -> str:
        return self.der.hex().upper()

    @property
    def xy(self) -> tuple[int, int]:
        size = CURVES[self.curve].size
        return int.from_bytes(self.point[1 : 1 + size], "big"), int.from_bytes(self.point[1 + size :], "big")


def _decode_text(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    cleaned = re.sub(r"[\s:]", "", text.strip())
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    if cleaned and re.fullmatch(r"[0-9A-Fa-f]+", cleaned) and len(cleaned) % 2 == 0:
        return bytes.fromhex(cleaned)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise OcmfError("public key is neither hex nor base64") from None


def _curve_by_oid(oid: str) -> Curve | None:
    return _CURVES_BY_OID.get(oid)


def _parse_spki(raw: bytes) -> MeterPublicKey | None:
    """Our own DER walk for SPKI (cryptography cannot load secp192k1 keys)."""

    def read(buf: bytes, pos: int) -> tuple[int, bytes, int]:
        tag = buf[pos]
        length = buf[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(buf[pos : pos + n], "big")
            pos += n
        return tag, buf[pos : pos + length], pos + length

    try:
        tag, body, end = read(raw, 0)
        if tag != 0x30 or end != len(raw):
            return None
        tag, algorithm, pos = read(body, 0)
        tag2, bits, _ = read(body, pos)
        if tag != 0x30 or tag2 != 0x03:
            return None
        _, oid1, p = read(algorithm, 0)
        _, oid2, _ = read(algorithm, p)
    except IndexError:
        return None

    def dotted(encoded: bytes) -> str:
        first = encoded[0]
        parts = [first // 40, first % 40]
        value = 0
        for byte in encoded[1:]:
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                parts.append(value)
                value = 0
        return ".".join(map(str, parts))

    if dotted(oid1) != "1.2.840.10045.2.1":
        return None
    curve = _curve_by_oid(dotted(oid2))
    if curve is None or not bits or bits[0] != 0:
        return None
    point = bits[1:]
    if len(point) != 1 + 2 * curve.size or point[0] != 4:
        return None
    return MeterPublicKey(curve.name, point, raw)


# A station verifies every record of its meter with the same key (and `station verify` a file of records with one):
# the parsed key and `cryptography`'s loaded key are kept, a few keys at most, keyed by the text as given.
KEY_CACHE_SIZE = 16


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def load_public_key(text: str | bytes, curve_hint: str | None = None) -> MeterPublicKey:
    """A meter key in any of the encodings seen in the wild; `curve_hint` (a curve name or an SA) for raw points.
    Parsed keys are cached (bounded); a key that cannot be used raises every time."""
    raw = _decode_text(text)
    if not raw:
        raise OcmfError("public key is empty")
    if raw[0] == 0x30:
        key = _parse_spki(raw)
        if key is not None:
            return key
        if len(raw) not in (48, 64, 96):  # a raw X‖Y whose X happens to begin with 0x30 is still a raw point
            raise OcmfError("public key looks like DER but is not an EC SubjectPublicKeyInfo on a supported curve")
    hint: Curve | None = None
    if curve_hint:
        hint = curve_of_sa(curve_hint) if curve_hint.startswith("ECDSA-") else curve_of_sa(f"ECDSA-{curve_hint}-SHA256")
    if raw[0] == 0x04 and len(raw) % 2 == 1:
        size = (len(raw) - 1) // 2
        point = raw
    elif len(raw) % 2 == 0:
        size = len(raw) // 2
        point = b"\x04" + raw
    else:
        raise OcmfError(f"public key of {len(raw)} bytes is no EC point")
    if hint is not None:
        if hint.size != size:
            raise OcmfError(f"a raw {size * 8}-bit public key cannot be on {hint.name}")
        curve = hint
    elif size in (24, 32, 48):
        # Without a hint a raw point is taken as a NIST curve of its size (P-256 is the common case).
        curve = CURVES[{24: "secp192r1", 32: "secp256r1", 48: "secp384r1"}[size]]
    else:
        raise OcmfError(f"cannot tell the curve of a raw {size * 8}-bit public key")
    return MeterPublicKey(curve.name, point, _spki(curve, point))


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class OcmfReading:
    time: str
    time_status: str | None
    tx: str | None
    value_text: str
    value: Decimal
    unit: str
    obis: str | None
    status: str
    error_flags: str | None


@dataclass(frozen=True)
class OcmfRecord:
    raw: str
    payload_text: str
    payload: dict[str, Any]
    signature: dict[str, Any]
    embedded_public_key: str | None = None

    @property
    def pagination(self) -> str:
        return str(self.payload.get("PG", ""))

    @property
    def signature_algorithm(self) -> str:
        return str(self.signature.get("SA") or DEFAULT_SA)

    @property
    def meter_serial(self) -> str:
        return str(self.payload.get("MS", ""))

    @property
    def identification(self) -> str:
        return str(self.payload.get("ID", ""))

    @property
    def is_transaction(self) -> bool:
        return self.pagination.startswith("T")

    @functools.cached_property
    def readings(self) -> tuple[OcmfReading, ...]:
        """Parsed once (by `parse`, which checks them) and kept: the record is immutable."""
        out: list[OcmfReading] = []
        previous: dict[str, Any] = {}
        for item in self.payload.get("RD", []):
            # Fields identical to the previous reading may be omitted within a record (OCMF §"RD").
            merged = {**{k: v for k, v in previous.items() if k in ("RI", "RU", "RT", "ST", "EF", "TM")}, **item}
            previous = merged
            tm = str(merged.get("TM", ""))
            status_letter = tm.rsplit(" ", 1)[-1] if " " in tm else None
            value_text = str(merged.get("RV"))
            out.append(
                OcmfReading(
                    time=tm,
                    time_status=status_letter,
                    tx=item.get("TX"),
                    value_text=value_text,
                    value=Decimal(value_text),
                    unit=str(merged.get("RU", "")),
                    obis=merged.get("RI"),
                    status=str(merged.get("ST", "")),
                    error_flags=merged.get("EF"),
                )
            )
        return tuple(out)

    def reading(self, tx: str) -> OcmfReading | None:
        return next((r for r in self.readings if r.tx == tx), None)

    @property
    def begin(self) -> OcmfReading | None:
        return self.reading("B")

    @property
    def end(self) -> OcmfReading | None:
        return next((r for r in self.readings if r.tx in END_CODES), None)

    def energy_wh(self) -> Decimal | None:
        begin, end = self.begin, self.end
        if begin is None or end is None or begin.unit != end.unit:
            return None
        factor = {"kWh": Decimal(1000), "Wh": Decimal(1)}.get(begin.unit)
        return None if factor is None else (end.value - begin.value) * factor


_PAYLOAD_DECODER = json.JSONDecoder(parse_float=Decimal)  # one decoder, not one per json.loads(parse_float=...)


def parse(text: str) -> OcmfRecord:
    if not isinstance(text, str):
        raise OcmfError("an OCMF record is text")
    try:
        text.encode("utf-8")  # what is hashed are the payload's UTF-8 bytes: text that has none is no record
    except UnicodeEncodeError:
        raise OcmfError("an OCMF record must be UTF-8 text (this one holds an unpaired surrogate)") from None
    text = text.strip()
    if not text.startswith("OCMF|"):
        raise OcmfError("not an OCMF record: it must start with 'OCMF|'")
    first = text.index("|")
    second = text.find("|", first + 1)
    if second < 0:
        raise OcmfError("OCMF record is truncated: no signature section after the payload")
    payload_text = text[first + 1 : second]
    rest = text[second + 1 :]
    embedded_key = None
    if "|" in rest:  # the optional fourth section (a public key), as the Transparenzsoftware accepts
        rest, embedded_key = rest.split("|", 1)
    try:
        if payload_text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", payload_text, 0)
        payload = _PAYLOAD_DECODER.decode(payload_text)
    except json.JSONDecodeError as exc:
        raise OcmfError(f"OCMF payload is not JSON: {exc}") from None
    try:
        signature = json.loads(rest)
    except json.JSONDecodeError as exc:
        raise OcmfError(f"OCMF signature section is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise OcmfError("OCMF payload must be a JSON object")
    if not isinstance(signature, dict):
        raise OcmfError("OCMF signature section must be a JSON object")
    if not isinstance(signature.get("SD"), str) or not signature["SD"]:
        raise OcmfError("OCMF signature section has no SD (signature data)")
    if "PG" not in payload:
        raise OcmfError("OCMF payload has no PG (pagination)")
    rd = payload.get("RD")
    if not isinstance(rd, list) or not rd or not all(isinstance(r, dict) for r in rd):
        raise OcmfError("OCMF payload has no readings (RD must be a non-empty list of objects)")
    record = OcmfRecord(text, payload_text, payload, signature, embedded_key)
    try:
        record.readings  # noqa: B018 - parse the readings now so that a broken RV is an error here, not later
    except (InvalidOperation, ValueError) as exc:
        raise OcmfError(f"OCMF reading has an invalid RV: {exc}") from None
    return record


# ------------------------------------------------------------------------------------------------ signatures


def normalize_der_signature(sig: bytes) -> bytes:
    """Re-encode a DER ECDSA signature minimally (some meters pad INTEGERs with zero bytes; strict parsers refuse)."""
    r, s = _der_integers(sig)
    return encode_dss_signature(r, s)


def _der_integers(sig: bytes) -> tuple[int, int]:
    if len(sig) < 8 or sig[0] != 0x30:
        raise ValueError("not a DER sequence")
    pos = 2 if sig[1] < 0x80 else 2 + (sig[1] & 0x7F)
    values = []
    for _ in range(2):
        if sig[pos] != 0x02:
            raise ValueError("not a DER integer")
        length = sig[pos + 1]
        values.append(int.from_bytes(sig[pos + 2 : pos + 2 + length], "big"))
        pos += 2 + length
    return values[0], values[1]


def _signature_bytes(record: OcmfRecord, curve: Curve) -> tuple[bytes, bool]:
    """The SD's bytes, and whether they are to be read as DER (else raw r||s)."""
    sd = str(record.signature["SD"])
    encoding = str(record.signature.get("SE", "hex")).lower()
    try:
        raw = base64.b64decode(sd, validate=True) if encoding == "base64" else bytes.fromhex(sd)
    except (binascii.Error, ValueError):
        raise OcmfError(f"signature SD is not valid {encoding}") from None
    sm = str(record.signature.get("SM", "application/x-der")).lower()
    return raw, not (len(raw) == 2 * curve.size and (sm != "application/x-der" or raw[0] != 0x30))


def _integers_of(raw: bytes, der: bool, curve: Curve) -> tuple[int, int]:
    if not der:
        return int.from_bytes(raw[: curve.size], "big"), int.from_bytes(raw[curve.size :], "big")
    try:
        return _der_integers(raw)
    except (ValueError, IndexError):
        if len(raw) == 2 * curve.size:
            return int.from_bytes(raw[: curve.size], "big"), int.from_bytes(raw[curve.size :], "big")
        raise OcmfError("signature is neither DER nor raw r||s of the curve's size") from None


def _signature_integers(record: OcmfRecord, curve: Curve) -> tuple[int, int]:
    raw, der = _signature_bytes(record, curve)
    return _integers_of(raw, der, curve)


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _crypto_key(curve: Curve, point: bytes) -> ec.EllipticCurvePublicKey | None:
    """`cryptography`'s key of an uncompressed point on `curve` (None: not a valid point on it), cached like the
    parsed keys. From the point, as the key's SPKI was already read (load_public_key): OpenSSL's DER decoder would
    only parse it again (and its code pages are 0.3 MB of the daemon's memory)."""
    assert curve.factory is not None
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve.factory(), point)
    except ValueError:
        return None


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True)
class Verification:
    valid: bool
    reason: str


def verify(record: OcmfRecord | str, public_key: str | bytes | MeterPublicKey) -> Verification:
    """Whether the record's signature verifies with the key. Raises OcmfError only for unusable input."""
    if isinstance(record, str):
        record = parse(record)
    curve = curve_of_sa(record.signature_algorithm)
    key = public_key if isinstance(public_key, MeterPublicKey) else load_public_key(public_key, curve.name)
    if key.curve != curve.name:
        return Verification(False, f"key is on {key.curve}, the record is signed with {curve.name} (SA)")
    raw, der = _signature_bytes(record, curve)
    data = record.payload_text.encode("utf-8")
    if curve.factory is None:
        r, s = _integers_of(raw, der, curve)
        x, y = key.xy
        ok = _verify_k192(x, y, r, s, hashlib.sha256(data).digest())
        return Verification(ok, "signature valid" if ok else "signature does not match the payload and key")
    crypto_key = _crypto_key(curve, key.point)
    if crypto_key is not None and der:
        # A minimal DER signature (what meters send) goes to OpenSSL as it is, which accepts only strict DER; any
        # other (non-minimal DER, trailing bytes, raw r||s that looks like DER) is re-encoded below.
        try:
            crypto_key.verify(raw, data, _ECDSA_SHA256)
        except InvalidSignature:
            pass
        else:
            return Verification(True, "signature valid")
    r, s = _integers_of(raw, der, curve)
    if crypto_key is None:
        return Verification(False, "public key is not a valid point on its curve")
    minimal = encode_dss_signature(r, s)
    if der and minimal == raw:  # the same bytes failed above
        return Verification(False, "signature does not match the payload and key")
    try:
        crypto_key.verify(minimal, data, _ECDSA_SHA256)
    except InvalidSignature:
        return Verification(False, "signature does not match the payload and key")
    return Verification(True, "signature valid")


def sign_payload(
    payload_text: str, private_key: ec.EllipticCurvePrivateKey, *, encoding: str = "hex", sa: str | None = None
) -> str:
    """`OCMF|payload|{"SA":…,"SD":…}` signed over the exact payload text (simulators and tests)."""
    der = private_key.sign(payload_text.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    if sa is None:
        sa = {
            "secp256r1": "ECDSA-secp256r1-SHA256",
            "secp384r1": "ECDSA-secp384r1-SHA256",
            "secp256k1": "ECDSA-secp256k1-SHA256",
            "secp192r1": "ECDSA-secp192r1-SHA256",
            "brainpoolP256r1": "ECDSA-brainpool256r1-SHA256",
            "brainpoolP384r1": "ECDSA-brainpool384r1-SHA256",
        }[private_key.curve.name]
    sig: dict[str, str] = {"SA": sa}
    if encoding == "base64":
        sig["SE"] = "base64"
        sig["SD"] = base64.b64encode(der).decode()
    else:
        sig["SD"] = der.hex().upper()
    return f"OCMF|{payload_text}|{json.dumps(sig, separators=(',', ':'))}"


def decode_signature(sig: bytes) -> tuple[int, int]:
    return decode_dss_signature(sig)


# ------------------------------------------------------------------------------------------------ transaction checks

BAD_IDENTIFICATION_LEVELS = {"MISMATCH", "INVALID", "OUTDATED", "UNKNOWN"}
END_CODES = {"E", "L", "R", "A", "P"}


def check_transaction(records: Sequence[OcmfRecord]) -> list[str]:
    """The Transparenzsoftware's transaction checks; an empty list means the records form one sound transaction."""
    problems: list[str] = []
    readings = [(rec, r) for rec in records for r in rec.readings]
    begins = [r for _, r in readings if r.tx == "B"]
    ends = [r for _, r in readings if r.tx in END_CODES]
    if len(begins) != 1:
        problems.append(f"expected exactly one begin reading (TX=B), found {len(begins)}")
    if len(ends) != 1:
        problems.append(f"expected exactly one end reading (TX=E/L/R/A/P), found {len(ends)}")
    if len(begins) == 1 and len(ends) == 1:
        b, e = begins[0], ends[0]
        if b.unit == e.unit and b.value > e.value:
            problems.append(f"meter reading decreased: begin {b.value_text} > end {e.value_text} {b.unit}")
        if b.time[:23] > e.time[:23]:
            problems.append(f"begin time {b.time} is after end time {e.time}")
        if b.time_status == "R" and e.time_status != "R":
            problems.append("begin time is relative (R) but end time is not")
        if b.obis != e.obis:
            problems.append(f"begin and end readings name different registers ({b.obis} / {e.obis})")
    for _, r in readings:
        if r.status != "G":
            problems.append(f"reading {r.tx or '?'} at {r.time} has meter status ST={r.status}, not G (OK)")
        if r.error_flags and "E" in r.error_flags:
            problems.append(f"reading {r.tx or '?'} at {r.time} carries error flag E (energy)")
    for rec in records:
        level = rec.payload.get("IL")
        if isinstance(level, str) and level in BAD_IDENTIFICATION_LEVELS:
            problems.append(f"identification level IL={level}")
    serials = {rec.meter_serial for rec in records}
    if len(serials) > 1:
        problems.append(f"records come from different meters: {', '.join(sorted(serials))}")
    return problems
