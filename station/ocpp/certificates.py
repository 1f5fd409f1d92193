"""The station's certificate store: the CA certificates it trusts, by use (OCPP 1.6 security whitepaper ed. 3 M03-M05,
2.0.1 Part 2 M03-M05), kept as PEM files in the state directory beside the SQLite store:

    <state dir>/certificates/<use>/<sha256 fingerprint>.pem      use: CSMSRootCertificate, ManufacturerRootCertificate,
                                                                  V2GRootCertificate, MORootCertificate
    <state dir>/certificates/seeded.json                         what the config's files were when they were imported

Files, not SQLite rows: the TLS context and the firmware check read them straight; they outlive a firmware rollback of
the store (releases.restore_store puts back the SQLite file as it was before an update, which would silently drop a
root installed since) and need no schema migration. Each is written whole (temporary file, fsync, rename, fsync of
the directory), so a crash leaves the old set or the new one. 1.6 CentralSystemRootCertificate is the store's
CSMSRootCertificate: a station that changes OCPP version keeps its roots.

The config's `[csms] ca_file` and `[firmware] manufacturer_root` are the seed: their certificates are imported when
the store is first made and again whenever such a file's contents change (so an operator on site can always add a
root), never deleted by it. Every call reads the directory afresh: the connection and the firmware updater each hold
a CertificateStore over the same directory and see each other's changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from station.config import Config
from station.ocpp.settings import CERTIFICATE_STORE_MAX

if TYPE_CHECKING:
    # cryptography's x509 (0.8 MB) is imported where a certificate is read: a station without any never loads it
    from cryptography import x509

log = structlog.get_logger("station.certificates")

CSMS_ROOT = "CSMSRootCertificate"
MANUFACTURER_ROOT = "ManufacturerRootCertificate"
V2G_ROOT = "V2GRootCertificate"
MO_ROOT = "MORootCertificate"
USES = (CSMS_ROOT, MANUFACTURER_ROOT, V2G_ROOT, MO_ROOT)
USE_16 = {"CentralSystemRootCertificate": CSMS_ROOT, MANUFACTURER_ROOT: MANUFACTURER_ROOT}  # 1.6 CertificateUse
USE_TO_16 = {v: k for k, v in USE_16.items()}
MAX_LENGTH = (
    CERTIFICATE_STORE_MAX  # CertificateStoreMaxLength (1.6) = SecurityCtrlr.CertificateEntries maxLimit (2.0.1)
)
MAX_PEM = 5500  # InstallCertificate certificate maxLength (2.0.1 InstallCertificateRequest; 1.6 whitepaper 5.11)
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
SEEDED = "seeded.json"


class Refused(Exception):
    """A certificate the station does not take: an InstallCertificate (M05.FR.06/07) or a CertificateSigned chain
    (A02.FR.07), Rejected; `reason` is the 2.0.1 reasonCode."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Installed:
    use: str
    cert: x509.Certificate
    path: Path

    def matches(self, data: dict[str, str], issuer: x509.Certificate | None = None) -> bool:
        algorithm = str(data.get("hash_algorithm") or data.get("hashAlgorithm") or "")
        if algorithm not in HASHES:
            return False
        mine = hash_data(self.cert, algorithm, issuer)
        serial = str(data.get("serial_number") or data.get("serialNumber") or "").lower().lstrip("0") or "0"
        name = str(data.get("issuer_name_hash") or data.get("issuerNameHash") or "").lower()
        key = str(data.get("issuer_key_hash") or data.get("issuerKeyHash") or "").lower()
        return (mine["serial_number"], mine["issuer_name_hash"], mine["issuer_key_hash"]) == (serial, name, key)


def hash_data(cert: x509.Certificate, algorithm: str, issuer: x509.Certificate | None) -> dict[str, str]:
    issuer_key = (
        (issuer or cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "hash_algorithm": algorithm,
        "issuer_name_hash": _digest(algorithm, cert.issuer.public_bytes()),
        "issuer_key_hash": _digest(algorithm, _key_bits(issuer_key)),
        "serial_number": format(cert.serial_number, "x"),
    }


def _digest(algorithm: str, data: bytes) -> str:
    h = hashes.Hash(HASHES[algorithm]())
    h.update(data)
    return h.finalize().hex()


def _key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey BIT STRING's value (without its unused-bits octet) from a DER SubjectPublicKeyInfo."""

    def read(data: bytes, at: int) -> tuple[int, int, int]:  # tag, start of value, end of value
        tag, length, at = data[at], data[at + 1], at + 2
        if length & 0x80:
            count = length & 0x7F
            length, at = int.from_bytes(data[at : at + count], "big"), at + count
        return tag, at, at + length

    _, body, _ = read(spki, 0)  # SEQUENCE
    _, _, after_algorithm = read(spki, body)  # AlgorithmIdentifier
    tag, start, end = read(spki, after_algorithm)
    if tag != 0x03:
        raise ValueError("SubjectPublicKeyInfo without a BIT STRING")
    return spki[start + 1 : end]


def load_pem(text: str, what: str) -> list[x509.Certificate]:
    """The certificates of a PEM text a peer sent; Refused (InvalidFormat) for anything else."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise Refused("InvalidFormat", f"not a PEM X.509 {what}") from None


# ---- the rules every certificate check shares (the store, the client certificate, signed firmware)


def valid_at(cert: x509.Certificate, now: datetime) -> bool:
    """Within its validity period at `now` (not expired, not yet to come)."""
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints CA:TRUE (a certificate without the extension is no CA)."""
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """`parent` issued `child`: the names match and `parent`'s key verifies `child`'s signature."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_ca(pem: str, now: datetime) -> x509.Certificate:
    """One PEM CA certificate, valid now, self-signature intact when self-issued; Refused otherwise (M05.FR.07)."""
    from cryptography import x509

    if len(pem) > MAX_PEM:
        raise Refused("InvalidCertificate", f"certificate longer than {MAX_PEM} characters")
    certs = load_pem(pem, "certificate")
    if len(certs) != 1:
        raise Refused("InvalidFormat", f"{len(certs)} certificates where one is expected")
    cert = certs[0]
    if not valid_at(cert, now):
        raise Refused("InvalidCertificate", "the certificate is not valid now (expired or not yet valid)")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise Refused("InvalidCertificate", "not a CA certificate (no basicConstraints)") from None
    if not constraints.ca:
        raise Refused("InvalidCertificate", "not a CA certificate (basicConstraints CA:FALSE)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            raise Refused("InvalidCertificate", "not a CA certificate (keyUsage without keyCertSign)")
    except x509.ExtensionNotFound:
        pass
    if cert.issuer == cert.subject:
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature):
            raise Refused("InvalidCertificate", "the self-signature does not verify") from None
    return cert


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file whole: a temporary file (created 0600, then `mode`), fsync, rename, fsync of the directory. A
    crash leaves the old file or the new one. 0644 for certificates (public), 0600 for keys."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CertificateStore:
    def __init__(self, directory: Path, seeds: dict[str, str] | None = None, max_length: int = MAX_LENGTH) -> None:
        self.directory = directory
        self.max_length = max_length
        # certificates counted in CertificateEntries that are not here (the station's own: client_certificate.py)
        self.extra_entries: Callable[[], int] = lambda: 0
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            for use in USES:
                (directory / use).mkdir(mode=0o750, exist_ok=True)
            self._seed(seeds or {})
        except OSError as exc:  # a read-only state directory: the station still runs on what is there
            log.error("certificate store cannot be written", directory=str(directory), error=str(exc))

    @classmethod
    def for_config(cls, config: Config) -> CertificateStore:
        """The store beside the SQLite file (/var/lib/station: the unit's StateDirectory, writable under
        ProtectSystem=strict), seeded from the config's certificate files."""
        seeds = {CSMS_ROOT: config.csms.ca_file, MANUFACTURER_ROOT: config.firmware.manufacturer_root}
        return cls(Path(config.storage.path).parent / "certificates", seeds)

    # ------------------------------------------------------------------ reading

    def installed(self, uses: Iterable[str] = USES) -> list[Installed]:
        from cryptography import x509

        found: list[Installed] = []
        for use in uses:
            for path in sorted((self.directory / use).glob("*.pem")):
                try:
                    found.append(Installed(use, x509.load_pem_x509_certificate(path.read_bytes()), path))
                except (OSError, ValueError) as exc:
                    log.warning("unreadable file in the certificate store; ignored", file=str(path), error=str(exc))
        return found

    def pem(self, use: str) -> str:
        """The certificates of one use as one PEM bundle ("" when there is none)."""
        return "".join(i.cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for i in self.installed([use]))

    def roots(self, use: str) -> list[x509.Certificate]:
        return [i.cert for i in self.installed([use])]

    def entries(self) -> int:
        """SecurityCtrlr.CertificateEntries: the CA certificates here plus the station's own (extra_entries)."""
        return len(self.installed()) + self.extra_entries()

    def hash_data(
        self, uses: Iterable[str] = USES, algorithm: str = "SHA256"
    ) -> list[tuple[Installed, dict[str, str]]]:
        """CertificateHashDataType (2.0.1 2.6; 1.6 whitepaper 6.1.4) of each certificate of `uses`: over the DER
        issuer name, over the issuer's public key bits (the BIT STRING's value, as OCSP's CertID), and the serial in
        hex without leading zeroes. A root is its own issuer; a sub-CA's issuer is looked for in the store (its own
        key stands in when the issuer is not installed)."""
        everything = self.installed()
        wanted = set(uses)
        return [
            (item, hash_data(item.cert, algorithm, _issuer_of(item, everything)))
            for item in everything
            if item.use in wanted
        ]

    def find(self, data: dict[str, str]) -> Installed | None:
        """The certificate a CertificateHashDataType names, in whichever of SHA256/384/512 it uses (M04.FR.07)."""
        everything = self.installed()
        return next((item for item in everything if item.matches(data, _issuer_of(item, everything))), None)

    # ------------------------------------------------------------------ changing

    def install(self, use: str, pem: str, now: datetime | None = None) -> Installed:
        """M05: check, then write. Refused for what is not a valid CA certificate or when the store is full (both
        before anything is written); OSError when the write fails (Failed, M05.FR.03). The same certificate again
        replaces itself (M05.FR.17)."""
        if use not in USES:
            raise Refused("InvalidCertificate", f"unknown certificate type {use}")
        cert = check_ca(pem, now or datetime.now(UTC))
        path = self.directory / use / f"{_fingerprint(cert)}.pem"
        if not path.exists() and self.entries() >= self.max_length:
            raise Refused("OutOfStorage", f"the store holds {self.entries()} of at most {self.max_length}")
        atomic_write(path, cert.public_bytes(serialization.Encoding.PEM))
        log.info("certificate installed", use=use, subject=cert.subject.rfc4514_string()[:120])
        return Installed(use, cert, path)

    def delete(self, item: Installed) -> None:
        item.path.unlink()
        _fsync_dir(item.path.parent)
        log.info("certificate deleted", use=item.use, subject=item.cert.subject.rfc4514_string()[:120])

    def _seed(self, seeds: dict[str, str]) -> None:
        record_path = self.directory / SEEDED
        try:
            record: dict[str, str] = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        changed = False
        for use, file in seeds.items():
            if not file:
                continue
            try:
                data = Path(file).read_bytes()
            except OSError as exc:
                log.warning("certificate seed unreadable", use=use, file=file, error=str(exc))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if record.get(use) == digest:
                continue
            from cryptography import x509

            try:
                certs = x509.load_pem_x509_certificates(data)
            except ValueError as exc:
                log.warning("certificate seed holds no readable certificate", use=use, file=file, error=str(exc))
                continue
            for cert in certs:  # the operator's own files: taken as they are, limits and checks do not apply
                path = self.directory / use / f"{_fingerprint(cert)}.pem"
                if not path.exists():
                    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM))
            log.info("certificate store seeded from the config", use=use, file=file, certificates=len(certs))
            record[use] = digest
            changed = True
        if changed:
            atomic_write(record_path, json.dumps(record, indent=1).encode())


def https_context(store: CertificateStore, *, system: bool) -> ssl.SSLContext:
    """A client TLS context (1.2 or newer, the server's name checked) that trusts the store's CSMS roots (the CSMS's
    trust chain, as installed over OCPP) and, with `system`, the operating system's CAs as well: the CSMS connection
    (station/ocpp/security.py adds its cipher suites and client certificate), HTTPS log uploads (2.0.1 N01.FR.15/16)
    and firmware downloads (L01)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH) if system else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    roots = store.pem(CSMS_ROOT)
    if roots:
        context.load_verify_locations(cadata=roots)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _issuer_of(item: Installed, everything: list[Installed]) -> x509.Certificate:
    if item.cert.issuer == item.cert.subject:
        return item.cert
    return next((o.cert for o in everything if issued_by(item.cert, o.cert)), item.cert)


def issuing_root(server_der: bytes, roots: Iterable[Installed]) -> Installed | None:
    """The installed root that directly issued the CSMS's server certificate (the one the connection depends on)."""
    from cryptography import x509

    try:
        server = x509.load_der_x509_certificate(server_der)
    except ValueError:
        return None
    return next((r for r in roots if issued_by(server, r.cert)), None)
