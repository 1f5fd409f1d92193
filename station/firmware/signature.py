"""The signature check of a firmware file (2.0.1 L01.FR.04, L01.FR.12, L01.FR.21; 1.6 security whitepaper
SignedUpdateFirmware): the `signingCertificate` (PEM, possibly with its intermediates) must chain to one of the
configured ManufacturerRootCertificates, be valid now, and its key must verify the base64 `signature` over the whole
file with SHA-256: RSA-PSS for an RSA key, ECDSA for an EC key (ECSchnorr, which L01.FR.04 also names, has no
implementation in `cryptography`; ECDSA is what manufacturers' signing tools produce). Pure: no I/O beyond the caller
handing in bytes, no clock read (the time is passed in).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from station.ocpp.certificates import is_ca, issued_by, valid_at

if TYPE_CHECKING:
    # cryptography's x509 (0.8 MB) is imported where a certificate is read: a station without any never loads it
    from cryptography import x509

MAX_CHAIN = 4  # certificates in a signingCertificate (the signer and its intermediates)
MAX_CERTIFICATE_PEM = 5500  # UpdateFirmware firmware.signingCertificate maxLength (2.0.1 FirmwareType)
MAX_SIGNATURE = 800  # firmware.signature maxLength (2.0.1 FirmwareType)


class InvalidCertificate(Exception):
    """The signing certificate is unreadable, expired, or does not chain to a ManufacturerRootCertificate."""


class InvalidSignature(Exception):
    """The signature does not verify over the file with the signing certificate's key."""


def load_roots(pem: bytes) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidCertificate(f"no readable ManufacturerRootCertificate: {exc}") from None


def check_certificate(signing_pem: str, roots: Iterable[x509.Certificate], now: datetime) -> x509.Certificate:
    """The signing certificate once it chains to one of `roots` and every link is valid at `now`; InvalidCertificate
    otherwise (L01.FR.21/22)."""
    from cryptography import x509

    roots = list(roots)
    if not roots:
        raise InvalidCertificate("no ManufacturerRootCertificate is installed ([firmware] manufacturer_root)")
    if len(signing_pem) > MAX_CERTIFICATE_PEM:
        raise InvalidCertificate(f"signing certificate longer than {MAX_CERTIFICATE_PEM} characters")
    try:
        chain = x509.load_pem_x509_certificates(signing_pem.encode("ascii", "replace"))
    except ValueError:
        raise InvalidCertificate("signing certificate is not a PEM X.509 certificate") from None
    if len(chain) > MAX_CHAIN:
        raise InvalidCertificate(f"signing certificate chain longer than {MAX_CHAIN}")
    for cert in chain:
        if not valid_at(cert, now):
            raise InvalidCertificate(f"certificate {cert.subject.rfc4514_string()[:80]} is not valid now")
    for child, parent in itertools.pairwise(chain):
        _issued_by(child, parent)
    top = chain[-1]
    for root in roots:
        if root.fingerprint(hashes.SHA256()) == top.fingerprint(hashes.SHA256()):
            return chain[0]  # the chain ends with the root itself
        try:
            _issued_by(top, root)
        except InvalidCertificate:
            continue
        if not valid_at(root, now):
            raise InvalidCertificate("the ManufacturerRootCertificate is not valid now")
        return chain[0]
    raise InvalidCertificate(
        f"signing certificate {chain[0].subject.rfc4514_string()[:80]} does not chain to a ManufacturerRootCertificate"
    )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> None:
    if not is_ca(parent):
        raise InvalidCertificate(f"{parent.subject.rfc4514_string()[:80]} is not a CA")
    if not issued_by(child, parent):
        raise InvalidCertificate(
            f"{child.subject.rfc4514_string()[:80]} is not issued by {parent.subject.rfc4514_string()[:80]}"
        )


def file_digest(path: str) -> bytes:
    """SHA-256 of a file, read in chunks (a release is too big to hold in memory twice). Blocking."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.digest()


def check_signature(digest: bytes, signature_b64: str, signer: x509.Certificate) -> None:
    """The base64 `signature` over the file whose SHA-256 is `digest`, by the signer's key; InvalidSignature
    otherwise (L01.FR.04)."""
    if len(signature_b64) > MAX_SIGNATURE:
        raise InvalidSignature(f"signature longer than {MAX_SIGNATURE} characters")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("signature is not base64") from None
    key = signer.public_key()
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signature,
                digest,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                prehashed,
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            raise InvalidSignature(f"signing key of type {type(key).__name__} is not RSA or EC")
    except CryptoInvalidSignature:
        raise InvalidSignature("signature does not verify over the file with the signing certificate") from None
