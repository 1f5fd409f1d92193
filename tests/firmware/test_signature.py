"""The firmware signature check against a throwaway manufacturer PKI (2.0.1 L01.FR.04, L01.FR.12, L01.FR.21/22)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from station.firmware import signature
from station.firmware.release import NotARelease, release_version, sign_file
from tests.firmware.kit import manufacturer


def _file(tmp_path: Path, data: bytes = b"a release" * 1000) -> Path:
    path = tmp_path / "station-9.9.9-py3-none-any.whl"
    path.write_bytes(data)
    return path


def test_a_signed_file_verifies_with_a_certificate_that_chains_to_the_root(tmp_path: Path) -> None:
    """L01.FR.04/L01.FR.12: the signature over the whole file, SHA-256, with the signing certificate, which chains to
    the ManufacturerRootCertificate (L01.FR.21)."""
    signer = manufacturer(tmp_path)
    path = _file(tmp_path)
    sig = sign_file(path, signer.key.read_bytes())
    roots = signature.load_roots(signer.root.read_bytes())
    cert = signature.check_certificate(signer.cert_pem, roots, datetime.now(UTC))
    signature.check_signature(signature.file_digest(str(path)), sig, cert)


def test_a_changed_file_or_a_foreign_signature_is_an_invalid_signature(tmp_path: Path) -> None:
    """L01.FR.03/04: one byte changed, or signed by another key, does not verify."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    signer = manufacturer(tmp_path / "a")
    other = manufacturer(tmp_path / "b", "Other Root")
    path = _file(tmp_path)
    sig = sign_file(path, signer.key.read_bytes())
    cert = signature.check_certificate(
        signer.cert_pem, signature.load_roots(signer.root.read_bytes()), datetime.now(UTC)
    )
    changed = _file(tmp_path, b"a release" * 999 + b"b release")
    with pytest.raises(signature.InvalidSignature):
        signature.check_signature(signature.file_digest(str(changed)), sig, cert)
    with pytest.raises(signature.InvalidSignature):
        signature.check_signature(signature.file_digest(str(path)), sign_file(path, other.key.read_bytes()), cert)
    with pytest.raises(signature.InvalidSignature):
        signature.check_signature(signature.file_digest(str(path)), "not base64!", cert)
    with pytest.raises(signature.InvalidSignature):
        signature.check_signature(signature.file_digest(str(path)), base64.b64encode(b"x" * 64).decode(), cert)


def test_a_certificate_of_another_root_or_out_of_its_validity_is_refused(tmp_path: Path) -> None:
    """L01.FR.21/22: the certificate is checked first; not chaining, not valid now, not PEM: InvalidCertificate."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    signer = manufacturer(tmp_path / "a")
    other = manufacturer(tmp_path / "b", "Other Root")
    roots = signature.load_roots(signer.root.read_bytes())
    with pytest.raises(signature.InvalidCertificate, match="does not chain"):
        signature.check_certificate(other.cert_pem, roots, datetime.now(UTC))
    with pytest.raises(signature.InvalidCertificate, match="not valid now"):
        signature.check_certificate(signer.cert_pem, roots, datetime.now(UTC) + timedelta(days=400))
    with pytest.raises(signature.InvalidCertificate, match="not a PEM"):
        signature.check_certificate("hello", roots, datetime.now(UTC))
    with pytest.raises(signature.InvalidCertificate, match="no ManufacturerRootCertificate"):
        signature.check_certificate(signer.cert_pem, [], datetime.now(UTC))
    # The signing certificate is no CA: a certificate it "issued" does not chain through it.
    with pytest.raises(signature.InvalidCertificate):
        signature.check_certificate(other.cert_pem + signer.cert_pem, roots, datetime.now(UTC))


def test_a_release_names_its_version() -> None:
    assert release_version(Path("station-1.2.3-py3-none-any.whl")) == "1.2.3"
    for name in ("other-1.0-py3-none-any.whl", "station-1.0.tar.gz", "station-../x-py3-none-any.whl"):
        with pytest.raises(NotARelease):
            release_version(Path(name))


def test_station_release_sign_writes_the_signature_beside_the_wheel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`station release sign FILE --key PEM`: FILE.sig holds the base64 the operator gives the CSMS as
    firmware.signature; it verifies with the signing certificate."""
    from station.cli import main

    signer = manufacturer(tmp_path)
    path = _file(tmp_path)
    assert main(["release", "sign", str(path), "--key", str(signer.key)]) == 0
    assert "release 9.9.9" in capsys.readouterr().out
    sig = path.with_name(path.name + ".sig").read_text().strip()
    cert = signature.check_certificate(
        signer.cert_pem, signature.load_roots(signer.root.read_bytes()), datetime.now(UTC)
    )
    signature.check_signature(signature.file_digest(str(path)), sig, cert)
