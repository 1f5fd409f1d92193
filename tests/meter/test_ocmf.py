"""OCMF parsing, keys, signatures, transaction checks, the Transparenzsoftware container and `station verify`."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from station.meter import ocmf
from station.meter.transparency import read_transparency_xml, to_transparency_xml
from station.verify_command import run_verify

PAYLOAD = (
    '{"FV":"1.0","GI":"T","GS":"1","PG":"T7","MS":"M-1","IS":true,"IT":"CENTRAL","ID":"TAG",'
    '"RD":[{"TM":"2026-11-24T10:00:00,000+0000 S","TX":"B","RV":1.000,"RI":"1-b:1.8.0","RU":"kWh","ST":"G"},'
    '{"TM":"2026-11-24T10:30:00,000+0000 S","TX":"E","RV":1.250,"ST":"G"}]}'
)


def keypair(curve: ec.EllipticCurve | None = None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, der.hex().upper()


@pytest.mark.parametrize(
    "text, message",
    [
        ("OCMX|{}|{}", "must start with 'OCMF|'"),
        ("OCMF|" + PAYLOAD, "truncated"),
        ('OCMF|{"PG":"T1",|{"SD":"00"}', "payload is not JSON"),
        ('OCMF|{"PG":"T1","RD":[{"RV":1}]}|{"SA":"x"}', "no SD"),
        ('OCMF|{"RD":[{"RV":1}]}|{"SD":"00"}', "no PG"),
        ('OCMF|{"PG":"T1","RD":[]}|{"SD":"00"}', "no readings"),
        ('OCMF|["a"]|{"SD":"00"}', "must be a JSON object"),
    ],
)
def test_unusable_records_are_named(text: str, message: str) -> None:
    with pytest.raises(ocmf.OcmfError, match=message):
        ocmf.parse(text)


def test_readings_inherit_omitted_fields_and_energy_is_exact() -> None:
    key, _ = keypair()
    record = ocmf.parse(ocmf.sign_payload(PAYLOAD, key))
    assert record.end is not None and record.end.obis == "1-b:1.8.0" and record.end.unit == "kWh"
    assert record.begin is not None and record.begin.value_text == "1.000"
    assert record.energy_wh() == 250
    assert record.pagination == "T7" and record.meter_serial == "M-1"


@pytest.mark.parametrize(
    "curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP256K1(), ec.BrainpoolP256R1(), ec.BrainpoolP384R1()]
)
def test_sign_and_verify_round_trip_on_each_curve(curve: ec.EllipticCurve) -> None:
    key, pub = keypair(curve)
    text = ocmf.sign_payload(PAYLOAD, key)
    assert ocmf.verify(text, pub).valid
    _, other_pub = keypair(curve)
    assert not ocmf.verify(text, other_pub).valid


def test_the_exact_payload_bytes_are_signed_spaces_included() -> None:
    key, pub = keypair()
    spaced = PAYLOAD.replace(',"PG"', ', "PG"')
    text = ocmf.sign_payload(spaced, key)
    assert ocmf.verify(text, pub).valid
    compacted = text.replace(', "PG"', ',"PG"')
    assert not ocmf.verify(compacted, pub).valid


def test_tampered_reading_fails() -> None:
    key, pub = keypair()
    text = ocmf.sign_payload(PAYLOAD, key).replace('"RV":1.250', '"RV":1.251')
    assert not ocmf.verify(text, pub).valid


def test_key_encodings_are_all_accepted() -> None:
    key, der_hex = keypair()
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    text = ocmf.sign_payload(PAYLOAD, key)
    spaced = " ".join(der_hex[i : i + 4] for i in range(0, len(der_hex), 4))
    for form in (
        der_hex,
        der_hex.lower(),
        spaced,
        base64.b64encode(bytes.fromhex(der_hex)).decode(),
        point.hex(),
        point[1:].hex(),
    ):
        assert ocmf.verify(text, form).valid, form
    assert ocmf.load_public_key(point[1:].hex()).der_hex == der_hex


def test_key_on_another_curve_than_sa_is_refused() -> None:
    key, _ = keypair()
    _, k1_pub = keypair(ec.SECP256K1())
    verdict = ocmf.verify(ocmf.sign_payload(PAYLOAD, key), k1_pub)
    assert not verdict.valid and "secp256k1" in verdict.reason


def test_base64_signature_encoding() -> None:
    key, pub = keypair()
    text = ocmf.sign_payload(PAYLOAD, key, encoding="base64")
    assert '"SE":"base64"' in text and ocmf.verify(text, pub).valid


def test_non_minimal_der_is_normalised_and_still_verifies() -> None:
    key, pub = keypair()
    text = ocmf.sign_payload(PAYLOAD, key)
    record = ocmf.parse(text)
    der = bytes.fromhex(record.signature["SD"])
    r, s = ocmf.decode_signature(der)
    # pad r with a superfluous zero byte, as some meters do
    r_bytes = b"\x00" + r.to_bytes((r.bit_length() + 7) // 8 + (1 if r.bit_length() % 8 == 0 else 0), "big")
    s_bytes = s.to_bytes((s.bit_length() + 7) // 8 + (1 if s.bit_length() % 8 == 0 else 0), "big")
    body = b"\x02" + bytes([len(r_bytes)]) + r_bytes + b"\x02" + bytes([len(s_bytes)]) + s_bytes
    padded = b"\x30" + bytes([len(body)]) + body
    assert padded != der
    assert ocmf.normalize_der_signature(padded) == der
    padded_text = text.replace(record.signature["SD"], padded.hex().upper())
    assert ocmf.verify(padded_text, pub).valid


def test_transaction_checks_find_the_problems() -> None:
    key, _ = keypair()
    good = ocmf.parse(ocmf.sign_payload(PAYLOAD, key))
    assert ocmf.check_transaction([good]) == []
    backwards = ocmf.parse(ocmf.sign_payload(PAYLOAD.replace('"RV":1.250', '"RV":0.500'), key))
    assert any("decreased" in p for p in ocmf.check_transaction([backwards]))
    bad_status = ocmf.parse(ocmf.sign_payload(PAYLOAD.replace('"RV":1.250,"ST":"G"', '"RV":1.250,"ST":"E"'), key))
    assert any("ST=E" in p for p in ocmf.check_transaction([bad_status]))
    assert any("exactly one begin" in p for p in ocmf.check_transaction([good, good]))


def test_transparency_container_round_trip_and_doctype_refused() -> None:
    key, pub = keypair()
    text = ocmf.sign_payload(PAYLOAD, key)
    xml = to_transparency_xml([("Transaction.End", text)], ocmf.load_public_key(pub), "tx-1")
    entries = read_transparency_xml(xml)
    assert entries[0].ocmf == text and entries[0].public_key == pub and entries[0].context == "Transaction.End"
    with pytest.raises(ocmf.OcmfError, match="DOCTYPE"):
        read_transparency_xml('<!DOCTYPE x [<!ENTITY a "b">]><values/>')


def test_station_verify_exit_codes_and_json(tmp_path: Path) -> None:
    key, pub = keypair()
    text = ocmf.sign_payload(PAYLOAD, key)
    out = io.StringIO()
    assert run_verify([text], pub, False, out) == 0
    assert out.getvalue().startswith("VALID") and "250" in out.getvalue()
    out = io.StringIO()
    assert run_verify([text.replace("1.250", "1.251")], pub, True, out) == 1
    assert json.loads(out.getvalue())["all_valid"] is False
    lines = tmp_path / "records.txt"
    lines.write_text(text + "\n\n" + text + "\n")
    out = io.StringIO()
    assert run_verify([str(lines)], pub, True, out) == 0  # two whole transactions, each checked on its own
    assert json.loads(out.getvalue())["transaction_problems"] == []
    backwards = ocmf.sign_payload(PAYLOAD.replace('"RV":1.250', '"RV":0.500'), key)
    out = io.StringIO()
    assert run_verify([backwards], pub, False, out) == 0  # the signature is fine; the check flags the record
    assert "transaction check: meter reading decreased" in out.getvalue()
    xml = tmp_path / "t.xml"
    xml.write_text(to_transparency_xml([("Transaction.End", text)], ocmf.load_public_key(pub), "tx"))
    assert run_verify([str(xml)], None, False, io.StringIO()) == 0  # the key comes from the container
    assert run_verify(["not a record"], pub, False, io.StringIO()) == 2
    assert run_verify([text], "zz-not-a-key", False, io.StringIO()) == 2
    assert run_verify([text], None, False, io.StringIO()) == 2


def test_a_raw_point_that_begins_like_der_is_still_a_raw_point() -> None:
    """X‖Y whose first byte is 0x30 (one key in 256): found by CI, where a random key made it look like DER."""
    for _ in range(5000):
        key, der_hex = keypair()
        point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        if point[1] == 0x30:
            break
    else:
        pytest.fail("no key with X beginning with 0x30 in 5000 tries")
    assert ocmf.load_public_key(point[1:].hex()).der_hex == der_hex
    assert ocmf.verify(ocmf.sign_payload(PAYLOAD, key), point[1:].hex()).valid


def test_keys_are_parsed_once_and_the_cache_is_bounded() -> None:
    """A meter's records all verify with one key: it is parsed (and loaded into `cryptography`) once, not per record;
    the cache holds a few keys, and a key that cannot be used is refused every time."""
    key, pub = keypair()
    assert ocmf.load_public_key(pub, "secp256r1") is ocmf.load_public_key(pub, "secp256r1")
    for _ in range(ocmf.KEY_CACHE_SIZE + 5):
        _, other = keypair()
        ocmf.load_public_key(other, "secp256r1")
    assert ocmf.load_public_key.cache_info().currsize <= ocmf.KEY_CACHE_SIZE
    assert ocmf.verify(ocmf.sign_payload(PAYLOAD, key), pub).valid
    for _ in range(2):
        with pytest.raises(ocmf.OcmfError):
            ocmf.load_public_key("not a key!")


def test_a_signature_over_other_bytes_fails_also_after_re_encoding() -> None:
    """The fast path hands a minimal DER signature to OpenSSL as it is; one that does not verify is not tried again
    re-encoded into a success, and raw r||s still verifies."""
    key, pub = keypair()
    text = ocmf.sign_payload(PAYLOAD, key)
    other = ocmf.sign_payload(PAYLOAD.replace("1.250", "1.251"), key)
    forged = text.replace(ocmf.parse(text).signature["SD"], ocmf.parse(other).signature["SD"])
    assert ocmf.verify(forged, pub).reason == "signature does not match the payload and key"
    r, s = ocmf.decode_signature(bytes.fromhex(ocmf.parse(text).signature["SD"]))
    raw = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    raw_text = text.replace(ocmf.parse(text).signature["SD"], raw).replace('"SD"', '"SM":"raw","SD"')
    assert ocmf.verify(raw_text, pub).valid


def test_a_key_that_is_no_point_on_its_curve_does_not_verify() -> None:
    """The key's point goes to `cryptography` as a point (its SPKI read once, by load_public_key): one off the curve
    is refused as such, not taken."""
    key, pub = keypair()
    text = ocmf.sign_payload(PAYLOAD, key)
    point = ocmf.load_public_key(pub).point
    off_curve = point[:-1] + bytes([point[-1] ^ 0x01])
    verdict = ocmf.verify(text, off_curve.hex())
    assert not verdict.valid and verdict.reason == "public key is not a valid point on its curve"
