"""The station's own TLS client certificate (security profile 3) and its renewal from the CSMS (OCPP 2.0.1 A02/A03,
1.6 security whitepaper ed. 3 A02/A03).

Owns the station's client credentials and the key of a pending certificate signing request, as files in the state
directory, and the choice of the credential each TLS connection presents:

    <state dir>/certificates/ChargingStationCertificate/        mode 0700 (it holds private keys)
        pending.key                   the key of the CSR the CSMS has not yet answered with a certificate (0600)
        <sha256 of the leaf>.pem      an accepted certificate chain (leaf first, then the sub-CAs it came with)
        <sha256 of the leaf>.key      its private key (0600)
        state.json                    which credential last connected, which one is on trial, which ones failed

- The config's `[csms] client_cert` / `client_key` are the factory credential: used until a renewed one exists, and
  the last fallback; never changed or copied.
- `csr()`: a new key (EC P-256 by default, `[csms] client_key_algorithm`; A00.FR.502/503) made on the station, kept
  only here (A02.FR.05), and a PKCS#10 CSR in PEM (A02.FR.03) whose subject is CN = the station id (A00.FR.511) and
  O = `SecurityCtrlr.OrganizationName` / 1.6 `CpoName` (A00.FR.509, 1.6 A02.FR.13), or the O of the certificate in
  use when that is not set. A resend of the same request reuses the key (2.0.1 A02.FR.17: "for the CSR"; the OCTT's
  TC_A_23_CS signs the CSR of the first request after two resends).
- `accept(chain)`: CertificateSigned (A02.FR.06): the chain must be PEM, at most MaxCertificateChainSize characters
  (A02.FR.16) and 5 certificates; its leaf must be for the pending key (or an installed credential's: a repeat), not a
  CA, not expired, with CN = the station id and an O; it must chain, through the sub-CAs it carries, to a CSMS root
  of the certificate store (the CSO's hierarchy; an installed sub-CA is an anchor too, as for the server's chain).
  Anything else raises Refused and writes nothing (A02.FR.07: the caller records the security event).
- `active()`: of the credentials valid now and not failed, the newest by the start of its validity (A02.FR.09,
  A03.FR.09); one whose validity has not begun is used once it has (A02.FR.08).
- Fallback: a connection the CSMS refused (a TLS alert, the connection closed in the WebSocket handshake, HTTP
  401/403: after the TCP connection stood) counts against the credential it presented; after
  NetworkProfileConnectionAttempts such refusals in a row it is marked failed and the newest credential not marked
  is presented: after a renewal the CSMS does not take, the one that worked before. The mark stays (the refused
  certificate is not tried again on every reconnect) until it connects. A network that is down counts against
  nothing. When every valid credential is marked, the marks are cleared and the cycle starts over rather than
  leaving the station with none.
- Once a newer credential has worked, expired ones are deleted and at most KEEP renewed ones are kept (A02.FR.10:
  "it is RECOMMENDED to store old certificates for one month, as fallback": the previous one stays until it expires).

Private keys are written whole (temporary file 0600, fsync, rename), never logged, and never read by anything but the
TLS context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from station.config import KEY_ALGORITHMS
from station.ocpp.certificates import Refused, atomic_write, is_ca, issued_by, load_pem, valid_at

if TYPE_CHECKING:
    # cryptography's x509 (0.8 MB) is imported where a certificate is read: a station without any never loads it
    from cryptography import x509

log = structlog.get_logger("station.client_certificate")

DIRECTORY = "ChargingStationCertificate"
PENDING_KEY = "pending.key"
STATE = "state.json"
CONFIG = "config"  # the name of the config file's credential
MAX_CHAIN_SIZE = 10000  # CertificateSigned certificateChain string[0..10000] (1.6 whitepaper 5.1, 2.0.1 1.7)
MAX_CHAIN_CERTIFICATES = 5  # leaf and sub-CAs: OCPP's hierarchies have at most two sub-CAs
KEEP = 3  # renewed credentials kept at most (the one in use, the previous one as fallback, one on trial)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Credential:
    """A client certificate chain and its key, as files the TLS context loads."""

    name: str  # the leaf's SHA-256 fingerprint, or CONFIG
    cert: Path
    key: Path
    leaf: x509.Certificate

    @property
    def not_before(self) -> datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    def valid_at(self, now: datetime) -> bool:
        return valid_at(self.leaf, now)


@dataclass
class _State:
    working: str | None = None  # the credential of the last connection that worked
    failed: list[str] = field(default_factory=list)  # credentials marked: refused `attempts` times in a row
    refusals: dict[str, int] = field(default_factory=dict)  # refusals in a row since the last working connection


def new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    return ec.generate_private_key(ec.SECP256R1())


def _spki(key: x509.Certificate | PrivateKey) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _first_certificate(data: bytes) -> x509.Certificate:
    from cryptography import x509

    return x509.load_pem_x509_certificates(data)[0]


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


class ClientCertificates:
    def __init__(
        self,
        directory: Path,
        station_id: str,
        *,
        config_cert: str = "",
        config_key: str = "",
        key_algorithm: str = "ec-p256",
    ) -> None:
        self.directory = directory
        self.station_id = station_id
        self.config_cert = config_cert
        self.config_key = config_key
        self.key_algorithm = key_algorithm if key_algorithm in KEY_ALGORITHMS else "ec-p256"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:  # a read-only state directory: the config's credential still works
            log.error("client certificate directory cannot be written", directory=str(directory), error=str(exc))

    # ------------------------------------------------------------------ what there is

    def credentials(self) -> list[Credential]:
        """Every readable credential: the renewed ones and the config's."""
        found: list[Credential] = []
        for cert_path in sorted(self.directory.glob("*.pem")):
            key_path = cert_path.with_suffix(".key")
            try:
                leaf = _first_certificate(cert_path.read_bytes())
            except (OSError, ValueError, IndexError) as exc:
                log.warning("unreadable client certificate; ignored", file=str(cert_path), error=str(exc))
                continue
            if key_path.is_file():
                found.append(Credential(cert_path.stem, cert_path, key_path, leaf))
        if self.config_cert and self.config_key:
            try:
                leaf = _first_certificate(Path(self.config_cert).read_bytes())
                found.append(Credential(CONFIG, Path(self.config_cert), Path(self.config_key), leaf))
            except (OSError, ValueError, IndexError) as exc:
                log.warning("the configured client certificate is unreadable", file=self.config_cert, error=str(exc))
        return found

    def count(self) -> int:
        """Client certificates the station holds (part of SecurityCtrlr.CertificateEntries)."""
        return len(self.credentials())

    def active(self, now: datetime | None = None) -> Credential | None:
        """The credential the next TLS connection presents (A02.FR.09: the newest valid one not failed)."""
        now = now or datetime.now(UTC)
        everything = self.credentials()
        if not everything:
            return None
        state = self._state()
        valid = [c for c in everything if c.valid_at(now)]
        usable = [c for c in valid if c.name not in state.failed]
        if valid and not usable:  # every one refused since the last connection that worked: start over
            log.warning("every client certificate was refused; trying them all again")
            state.failed.clear()
            state.refusals.clear()
            self._save(state)
            usable = valid
        chosen = usable or everything  # none valid now: the newest anyway, so the refusal is the CSMS's to say
        return max(chosen, key=lambda c: (c.not_before, c.name != CONFIG))

    def failed(self) -> list[str]:
        """The credentials the CSMS refused (not presented until every other one was refused too)."""
        return list(self._state().failed)

    def describe(self) -> dict[str, Any] | None:
        """For `station diag status`: the credential the next connection presents, and what else is held."""
        active = self.active()
        if active is None:
            return None
        return {
            "subject": active.leaf.subject.rfc4514_string()[:200],
            "issuer": active.leaf.issuer.rfc4514_string()[:200],
            "serial": format(active.leaf.serial_number, "x"),
            "valid_to": active.not_after.isoformat(),
            "renewed": active.name != CONFIG,
            "held": self.count(),
            "refused_by_csms": len(self.failed()),
            "renewal_pending": (self.directory / PENDING_KEY).exists(),
        }

    # ------------------------------------------------------------------ the signing request

    def csr(self, organization: str, *, fresh_key: bool) -> str:
        """A CSR in PEM for the pending key, made now when `fresh_key` or when there is none (A02.FR.02/03)."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        key = None if fresh_key else self._pending_key()
        if key is None:
            key = new_key(self.key_algorithm)
            atomic_write(self.directory / PENDING_KEY, _key_pem(key), 0o600)
            log.info("new client key generated", algorithm=self.key_algorithm)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, self.station_id)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes)).sign(key, hashes.SHA256())
        return request.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def organization(self, setting: str) -> str:
        """The O of the CSR: the setting, else the O of the certificate in use ("" when neither has one)."""
        from cryptography.x509.oid import NameOID

        if setting:
            return setting
        current = self.active()
        return _attribute(current.leaf.subject, NameOID.ORGANIZATION_NAME) if current else ""

    def _pending_key(self) -> PrivateKey | None:
        try:
            key = serialization.load_pem_private_key((self.directory / PENDING_KEY).read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        return key if isinstance(key, PrivateKey) else None

    # ------------------------------------------------------------------ CertificateSigned

    def accept(
        self, chain: str, roots: list[x509.Certificate], *, max_size: int = MAX_CHAIN_SIZE, now: datetime | None = None
    ) -> Credential:
        """Check a CertificateSigned chain (A02.FR.06) and install it; Refused, with nothing written, otherwise."""
        from cryptography import x509

        now = now or datetime.now(UTC)
        if len(chain) > max_size:
            raise Refused("ChainTooLong", f"the chain has {len(chain)} characters, more than {max_size}")
        certs = load_pem(chain, "certificate chain")
        if len(certs) > MAX_CHAIN_CERTIFICATES:
            raise Refused("InvalidFormat", f"{len(certs)} certificates; at most {MAX_CHAIN_CERTIFICATES} are taken")
        try:
            return self._install(certs, roots, now)
        except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
            # cryptography parses extensions and names lazily: a malformed one shows only here
            raise Refused("InvalidFormat", f"the certificate cannot be read: {type(exc).__name__}") from None

    def _install(self, certs: list[x509.Certificate], roots: list[x509.Certificate], now: datetime) -> Credential:
        from cryptography.x509.oid import NameOID

        leaf = certs[0]
        existing = next((c for c in self.credentials() if c.leaf == leaf), None)
        pending = self._pending_key()
        if existing is None and (pending is None or _spki(leaf) != _spki(pending)):
            raise Refused("InvalidCertificate", "the certificate is not for the key of this station's signing request")
        if is_ca(leaf):
            raise Refused("InvalidCertificate", "a CA certificate, not a station certificate")
        if leaf.not_valid_after_utc < now:
            raise Refused("InvalidCertificate", "the certificate has expired")
        if _attribute(leaf.subject, NameOID.COMMON_NAME) != self.station_id:
            raise Refused("InvalidCertificate", f"its common name is not the station id {self.station_id} (A00.FR.511)")
        if not _attribute(leaf.subject, NameOID.ORGANIZATION_NAME):
            raise Refused("InvalidCertificate", "its subject has no organization name (A00.FR.509)")
        self._check_hierarchy(certs, roots, now)
        if existing is not None:
            return existing  # the same certificate again: nothing to change
        assert pending is not None
        name = leaf.fingerprint(hashes.SHA256()).hex()
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        atomic_write(key_path, _key_pem(pending), 0o600)
        atomic_write(cert_path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), 0o644)
        (self.directory / PENDING_KEY).unlink(missing_ok=True)
        log.info(
            "client certificate installed",
            subject=leaf.subject.rfc4514_string()[:120],
            valid_from=leaf.not_valid_before_utc.isoformat(),
            valid_to=leaf.not_valid_after_utc.isoformat(),
        )
        return Credential(name, cert_path, key_path, leaf)

    @staticmethod
    def _check_hierarchy(certs: list[x509.Certificate], roots: list[x509.Certificate], now: datetime) -> None:
        """The leaf chains to one of `roots` through the sub-CAs of the chain (each a CA, valid now)."""
        if not roots:
            raise Refused("InvalidCertificate", "no CSMS root is installed to check the certificate against")
        current, carried = certs[0], certs[1:]
        for _ in range(MAX_CHAIN_CERTIFICATES + 1):
            if any(r == current or issued_by(current, r) for r in roots):
                return  # an installed root issued it, or it is an installed sub-CA (an anchor, as for TLS)
            parent = next((c for c in carried if issued_by(current, c)), None)
            if parent is None:
                break
            if not is_ca(parent) or not valid_at(parent, now):
                raise Refused("InvalidCertificate", "a sub-CA of the chain is not a valid CA certificate")
            carried = [c for c in carried if c is not parent]
            current = parent
        raise Refused("InvalidCertificate", "the certificate does not chain to an installed CSMS root")

    # ------------------------------------------------------------------ how connections went

    def connected(self, credential: Credential | None) -> None:
        """A connection presenting `credential` worked: it is the one to fall back to from now on. The marks of the
        others stay: a certificate the CSMS refused is not tried again on every reconnect."""
        if credential is None:
            return
        state = self._state()
        if state.working == credential.name and credential.name not in state.failed and not state.refusals:
            return
        if state.working != credential.name:
            log.info("client certificate works", credential=credential.name[:16])
        state.working = credential.name
        state.failed = [name for name in state.failed if name != credential.name]
        state.refusals = {}
        self._save(state)
        self._prune(credential)

    def refused(self, credential: Credential | None, attempts: int) -> None:
        """The CSMS refused a connection presenting `credential`; after `attempts` refusals in a row it is marked
        failed and the next connection presents the newest one not marked (the one that last worked, after a
        renewal the CSMS does not take)."""
        if credential is None:
            return
        state = self._state()
        count = state.refusals.get(credential.name, 0) + 1
        state.refusals[credential.name] = count
        if count >= attempts and credential.name not in state.failed:
            state.failed.append(credential.name)
            log.error(
                "the CSMS refused this client certificate; falling back to another one",
                credential=credential.name[:16],
                attempts=count,
                worked_before=credential.name == state.working,
            )
        self._save(state)

    def _prune(self, working: Credential) -> None:
        now = datetime.now(UTC)
        renewed = sorted(
            (c for c in self.credentials() if c.name != CONFIG),
            key=lambda c: c.not_before,
            reverse=True,
        )
        keep = {working.name}
        for credential in renewed:
            if credential.not_after < now and credential.name != working.name:
                self._delete(credential)
            elif len(keep) < KEEP or credential.name in keep:
                keep.add(credential.name)
            else:
                self._delete(credential)

    @staticmethod
    def _delete(credential: Credential) -> None:
        try:
            credential.key.unlink(missing_ok=True)
            credential.cert.unlink(missing_ok=True)
        except OSError as exc:  # kept, and tried again after the next connection: never a reason to fail one
            log.warning("old client certificate not deleted", credential=credential.name[:16], error=str(exc))
            return
        log.info("old client certificate deleted", credential=credential.name[:16])

    def _state(self) -> _State:
        try:
            raw = json.loads((self.directory / STATE).read_text())
            return _State(
                working=raw.get("working"),
                failed=[str(f) for f in raw.get("failed", [])][:16],
                refusals={str(k): int(v) for k, v in dict(raw.get("refusals", {})).items()},
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return _State()

    def _save(self, state: _State) -> None:
        data = {"working": state.working, "failed": state.failed, "refusals": state.refusals}
        try:
            atomic_write(self.directory / STATE, json.dumps(data).encode(), 0o600)
        except OSError as exc:
            log.error("client certificate state cannot be written", error=str(exc))


# ---------------------------------------------------------------------- when a SignCertificate goes


class Renewal:
    """The SignCertificate requests of one renewal, in loop time: version-neutral and without I/O (the connection
    sends, station/ocpp/connection.py).

    - `trigger()`: the CSMS asked (TriggerMessage SignChargingStationCertificate, 1.6 ExtendedTriggerMessage
      SignChargePointCertificate; A02.FR.02): a new key and a request now.
    - `expiring()`: the credential in use expires within the configured margin (A03.FR.02: one month): the same, on
      the station's own initiative, at most once a day once a request went unanswered.
    - After an Accepted SignCertificate with no CertificateSigned: the same CSR again after CertSigningWaitMinimum,
      doubled each time (A02.FR.17/18), until the back-off has been doubled CertSigningRepeatTimes times (A02.FR.19:
      with 1, the request goes three times: at once, after the minimum and after twice that, as TC_A_23_CS expects).
    - A Rejected SignCertificate (TC_A_15_CS) or a refused chain (A02.FR.20) ends it until the CSMS triggers again.
    """

    RETRY_ON_ITS_OWN = 86400.0  # s between renewals the station starts itself while no certificate comes

    def __init__(self) -> None:
        self.due_at: float | None = None  # loop time of the next SignCertificate; None: none is due
        self.fresh_key = False  # the next request needs a new key (a new renewal), not a resend of the last CSR
        self.sent_accepted = 0  # SignCertificate requests of this renewal the CSMS accepted
        self.own_not_before = 0.0  # loop time before which the station starts no renewal on its own
        self.reason = ""

    def trigger(self, now: float, reason: str = "triggered by the CSMS") -> None:
        self.due_at, self.fresh_key, self.sent_accepted, self.reason = now, True, 0, reason

    def expiring(self, now: float) -> bool:
        """The credential in use is about to expire: start a renewal unless one is under way or tried today."""
        if self.due_at is not None or now < self.own_not_before:
            return False
        self.trigger(now, "the client certificate expires soon")
        self.own_not_before = now + self.RETRY_ON_ITS_OWN
        return True

    def wait(self, now: float) -> float | None:
        """Seconds until the next request is due (0: now), None when none is."""
        return None if self.due_at is None else max(self.due_at - now, 0.0)

    def answered(self, accepted: bool, now: float, wait_minimum: float, repeat_times: int) -> None:
        self.fresh_key = False
        if not accepted:
            log.warning("the CSMS rejected the certificate signing request", reason=self.reason)
            self.due_at = None
            return
        self.sent_accepted += 1
        if self.sent_accepted <= repeat_times + 1:
            self.due_at = now + wait_minimum * 2 ** (self.sent_accepted - 1)
        else:
            log.warning("no certificate came for the signing request; not asking again", sent=self.sent_accepted)
            self.due_at = None

    def stop(self) -> None:
        """A certificate came (accepted or refused), or the CSMS cannot take the request at all."""
        self.due_at, self.sent_accepted = None, 0
