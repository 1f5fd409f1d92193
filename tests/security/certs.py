"""Certificates the certificate-store tests need beside tests/security/pki.py: an expired CA, and the hash data of a
certificate computed here, independently of station/ocpp/certificates.py."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.security.pki import CertificateAuthority


def pem(path: Path) -> str:
    return path.read_text()


def expired_ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired-ca")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=60))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def hash_data(ca: CertificateAuthority | x509.Certificate, algorithm: str = "SHA256") -> dict[str, str]:
    """CertificateHashDataType of a self-signed root: for an EC key the subjectPublicKey BIT STRING holds the
    uncompressed point (X9.62), so its hash is taken over that, not over anything the station's code produced."""
    cert = ca if isinstance(ca, x509.Certificate) else ca.cert
    h = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}[algorithm]
    point = cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {
        "hash_algorithm": algorithm,
        "issuer_name_hash": h(cert.issuer.public_bytes()).hexdigest(),
        "issuer_key_hash": h(point).hexdigest(),
        "serial_number": f"{cert.serial_number:x}",
    }
