"""OCPP security profiles for the CSMS connection, the Basic-auth password, and security events.

Owns what the connection needs to be trusted (OCPP 1.6 Security Whitepaper ed.3, 2.0.1 Part 2 A00-A04):
- profile 0: nothing; 1: HTTP Basic auth over ws:// (only where the config allows it); 2: TLS >= 1.2 with the CSMS
  certificate checked against the configured CA bundle and the host name, plus Basic auth; 3: TLS with the station's
  client certificate. A certificate that does not verify refuses the connection: never a fallback to less.
- the password: the config's `basic_auth_password` until the CSMS sets `AuthorizationKey` (1.6) /
  `SecurityCtrlr.BasicAuthPassword` (2.0.1); the CSMS's value is kept in the store, used from the next connection on,
  and never read back or logged.
- the profile: the config's, raised (never lowered) by the CSMS through 1.6 `SecurityProfile`, and only to a profile
  the config has what it needs for.
- security events: kept in the store's rolling security log and queued for SecurityEventNotification in one commit.
  A failure that repeats on every reconnect is recorded once, not once per attempt.
- certificates: the TLS context trusts the certificate store's CSMS roots (station/ocpp/certificates.py), read for
  each connection; InstallCertificate / GetInstalledCertificateIds / DeleteCertificate are answered here for both
  versions (1.6 security whitepaper M03-M05, 2.0.1 M03-M05).
- the client certificate: the TLS context presents the credential station/ocpp/client_certificate.py chooses; its
  renewal (TriggerMessage / ExtendedTriggerMessage, SignCertificate, CertificateSigned: A02/A03 of both versions) is
  answered here, and each connection's outcome goes back to the choice (the fallback from a renewed certificate the
  CSMS refuses).
"""

from __future__ import annotations

import base64
import socket
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog
from websockets.exceptions import InvalidStatus

from station.config import CsmsConfig
from station.ocpp import certificates as certs
from station.ocpp.client_certificate import DIRECTORY, ClientCertificates, Credential, Renewal
from station.ocpp.settings import Settings
from station.store import Store

log = structlog.get_logger("station.security")

# Security event types (2.0.1 names; the 1.6 adapter says "CentralSystem" where 2.0.1 says "Csms").
STARTUP = "StartupOfTheDevice"
RESET = "ResetOrReboot"
RECONFIGURED = "ReconfigurationOfSecurityParameters"
INVALID_CSMS_CERTIFICATE = "InvalidCsmsCertificate"
FAILED_TO_AUTHENTICATE = "FailedToAuthenticateAtCsms"
INVALID_TLS = "InvalidTLSVersion"
INVALID_TLS_CIPHER = "InvalidTLSCipherSuite"
INVALID_STATION_CERTIFICATE = "InvalidChargingStationCertificate"  # 1.6: InvalidChargePointCertificate

# The TLS 1.2 cipher suites OCPP allows (1.6 security whitepaper A00.FR.317-319 and A00.FR.421-423, 2.0.1 A00.FR.317):
# AES-GCM with ECDHE (preferred, forward secrecy) or RSA key exchange. TLS 1.3's suites are all AEAD and stay as
# OpenSSL has them.
ALLOWED_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
)
OLD_TLS_VERSIONS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class TlsOffer:
    """What the CSMS negotiates when the station accepts anything (found by a diagnostic handshake, see probe_tls)."""

    version: str
    cipher: str


def probe_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> TlsOffer | None:
    """After a TLS handshake the station's own rules refused, find out what the CSMS does offer, so that the refusal
    can say why (A00.FR.315 / A00.FR.322: InvalidTLSVersion, InvalidTLSCipherSuite). A handshake only: nothing is sent
    over it, no certificate is trusted because of it, and it is closed at once. Blocking; run it in a thread.
    First any version and any suite; a server that resets on a modern ClientHello gets a legacy one (TLS <= 1.1)."""
    for legacy_only in (False, True):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that is the point
            context.minimum_version = ssl.TLSVersion.TLSv1
            if legacy_only:
                context.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            context.set_ciphers("ALL:@SECLEVEL=0")
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                cipher = tls.cipher()
                return TlsOffer(tls.version() or "?", cipher[0] if cipher else "?")
        except (OSError, ValueError):
            continue
    return None


def refused_by_peer(exc: BaseException) -> bool:
    """The CSMS refused the station after the TCP connection stood: a TLS alert, the connection closed during the
    WebSocket handshake (with TLS 1.3 the server checks the client certificate after the handshake; a refusal
    reaches asyncio's TLS transport as an alert it does not pass on, and the HTTP response then ends at once: an
    EOFError under websockets' InvalidMessage), or HTTP 401/403. Not a network that is down (no TCP connection), and
    not the station refusing the CSMS's certificate."""
    seen: BaseException | None = exc
    for _ in range(6):  # the chain of causes, bounded
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return False
        if isinstance(seen, (ssl.SSLError, ConnectionResetError, EOFError)):
            return True
        if isinstance(seen, InvalidStatus) and seen.response.status_code in (401, 403):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tls_failure_worth_probing(exc: BaseException) -> bool:
    """A failure during the TLS handshake that may mean an old TLS version or a weak cipher suite on the CSMS: an alert
    from it, or the connection reset or closed mid-handshake (certificate problems are told apart already)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, (ssl.SSLError, ConnectionResetError, ConnectionAbortedError, ssl.SSLEOFError))


class Security:
    def __init__(
        self,
        config: CsmsConfig,
        station_id: str,
        settings: Settings,
        store: Store,
        certificates: certs.CertificateStore | None = None,
        client: ClientCertificates | None = None,
    ) -> None:
        self.config = config
        self.station_id = station_id
        self.settings = settings
        self.store = store
        # ---- certificates (the store's CSMS roots are what the TLS context trusts; station/ocpp/certificates.py)
        if certificates is None:
            seeds = {certs.CSMS_ROOT: config.ca_file}
            certificates = certs.CertificateStore(Path(store.path).parent / "certificates", seeds)
        self.certificates = certificates
        self.server_certificate: bytes | None = None  # DER of the CSMS's certificate on the current connection
        settings.computed["CertificateEntries"] = lambda: str(self.certificates.entries())
        # ---- end certificates
        # ---- client certificate (A02/A03): the credential each profile-3 connection presents, and its renewal
        if client is None:
            client = ClientCertificates(
                certificates.directory / DIRECTORY,
                station_id,
                config_cert=config.client_cert,
                config_key=config.client_key,
                key_algorithm=config.client_key_algorithm,
            )
        self.client = client
        certificates.extra_entries = client.count
        self.renewal = Renewal()
        self.credential: Credential | None = None  # what the current (or last) connection attempt presented
        self.renewal_listeners: list[Callable[[], None]] = []  # told when a SignCertificate may be due
        # ---- end client certificate
        self.reconnect_listeners: list[Callable[[], None]] = []  # told when a new profile needs a new connection
        self._last_failure: str | None = None
        settings.computed["SecurityProfile"] = lambda: str(self.profile)
        settings.checks["SecurityProfile"] = self._can_raise_to
        settings.listeners.append(self._changed)

    # ------------------------------------------------------------------ what is in force

    @property
    def profile(self) -> int:
        raised = self.settings.stored("SecurityProfile")
        return max(self.config.security_profile, int(raised) if raised and raised.isdigit() else 0)

    @property
    def password(self) -> str:
        return self.settings.stored("AuthorizationKey") or self.config.basic_auth_password

    def wrong_scheme(self, profile: int, url: str | None = None) -> str | None:
        """What is wrong with `url` (the config's by default) for `profile`: profiles 2 and 3 are wss://, 0 and 1 ws://."""
        scheme = urlparse(url or self.config.url).scheme
        if (scheme == "wss") != (profile >= 2):
            return f"a {'wss' if profile >= 2 else 'ws'}:// CSMS url (configured: {scheme}://)"
        return None

    def missing_for(self, profile: int, url: str | None = None) -> list[str]:
        """What this station lacks to connect with `profile` to `url` (the config's by default; empty: it can): the
        prerequisites of a raise (1.6 whitepaper A05.FR.02-04, 2.0.1 A05.FR.02/03): the password for 1 and 2, a valid
        CSMS root certificate installed for 2 and 3, a valid client certificate for 3."""
        missing: list[str] = []
        scheme = self.wrong_scheme(profile, url)
        if scheme:
            missing.append(scheme)
        if profile == 1 and not self.config.allow_basic_auth_over_ws:
            missing.append("allow_basic_auth_over_ws = true")
        if profile in (1, 2) and not self.password:
            missing.append("a Basic-auth password")
        now = datetime.now(UTC)
        if profile >= 2 and not any(certs.valid_at(c, now) for c in self.certificates.roots(certs.CSMS_ROOT)):
            missing.append("a valid CSMS root certificate installed")
        credential = self.client.active() if profile == 3 else None
        if profile == 3 and (credential is None or not credential.valid_at(now)):
            missing.append("a valid client certificate and key")
        return missing

    def _can_raise_to(self, value: str) -> bool:
        if not value.isdigit() or not self.profile < int(value) <= 3:
            return False  # lowering, or keeping, is not allowed remotely (A00.FR.001-005)
        missing = self.missing_for(int(value))
        if missing:
            log.warning("CSMS asked for a security profile this station cannot use", profile=value, missing=missing)
        return not missing

    def _changed(self, name: str, _value: str) -> None:
        if name not in ("AuthorizationKey", "SecurityProfile"):
            return
        self.store.security_event(RECONFIGURED, f"{name} changed by the CSMS")
        log.info("security setting changed by the CSMS; used from the next connection on", setting=name)
        if name == "SecurityProfile":
            for listener in self.reconnect_listeners:
                listener()

    # ------------------------------------------------------------------ the connection

    def connect_options(self, profile: int | None = None) -> dict[str, Any]:
        """Keyword arguments for websockets' connect(): the Authorization header and the TLS context, for `profile`
        (the one in force by default; a network profile's, station/ocpp/network.py)."""
        profile = self.profile if profile is None else profile
        options: dict[str, Any] = {}
        self.credential = None  # set by tls_context for profile 3
        if profile in (1, 2):
            credentials = base64.b64encode(f"{self.station_id}:{self.password}".encode()).decode("ascii")
            options["additional_headers"] = {"Authorization": f"Basic {credentials}"}
        if profile >= 2:
            options["ssl"] = self.tls_context(profile)
        return options

    def tls_context(self, profile: int) -> ssl.SSLContext:
        """Built for each connection attempt, so a root installed (or deleted) over OCPP is used from the next one.
        The trust anchors are the store's CSMS roots (seeded from `ca_file`); with no `ca_file` the system's CAs are
        trusted as well, as before the store existed. An installed sub-CA is a trust anchor of its own (partial
        chain), as the CSMS installed it to be."""
        # With `ca_file` set and every CSMS root deleted (M04 remark) nothing is trusted: the system's CAs are never
        # a fallback. https_context checks the CSMS's name too (A00.FR.309) and asks for TLS 1.2 or newer.
        context = certs.https_context(self.certificates, system=not self.config.ca_file)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.set_ciphers(":".join(ALLOWED_CIPHERS))
        self.credential = self.client.active() if profile == 3 else None
        if self.credential is not None:
            context.load_cert_chain(self.credential.cert, self.credential.key)
        return context

    def connected(self, ws: Any = None) -> None:
        self._last_failure = None
        self.client.connected(self.credential)
        ssl_object = ws.transport.get_extra_info("ssl_object") if ws is not None and ws.transport else None
        self.server_certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

    def connection_failed(self, exc: BaseException, offer: TlsOffer | None = None) -> str | None:
        """Classify a failed connection attempt; record a security event for the kinds that are one. Returns the
        plain-words reason for the log when it is a security problem, else None. `offer` is what a diagnostic
        handshake found the CSMS offering (probe_tls), when the failure was one worth probing."""
        if self.credential is not None and refused_by_peer(exc):
            self.client.refused(self.credential, self.settings.int_value("NetworkProfileConnectionAttempts"))
        if isinstance(exc, ssl.SSLCertVerificationError):
            kind, info = INVALID_CSMS_CERTIFICATE, f"{exc.verify_message} (code {exc.verify_code})"
            reason = f"the CSMS certificate is not trusted: {exc.verify_message}"
        elif offer is not None and offer.version in OLD_TLS_VERSIONS:
            kind, info = INVALID_TLS, f"CSMS offers {offer.version} only"
            reason = f"the CSMS offers only {offer.version}; OCPP requires TLS 1.2 or newer (A00.FR.315)"
        elif offer is not None and offer.version == "TLSv1.2" and offer.cipher not in ALLOWED_CIPHERS:
            kind, info = INVALID_TLS_CIPHER, f"CSMS offers {offer.cipher} only"
            reason = (
                f"the CSMS offers only the cipher suite {offer.cipher}, which OCPP does not allow; it needs one of "
                f"{', '.join(ALLOWED_CIPHERS)} (A00.FR.322)"
            )
        elif isinstance(exc, ssl.SSLError) and ("PROTOCOL_VERSION" in str(exc) or "UNSUPPORTED_PROTOCOL" in str(exc)):
            kind, info = INVALID_TLS, str(exc)[:200]
            reason = f"the CSMS does not offer TLS 1.2 or newer: {exc}"
        elif isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403):
            kind, info = FAILED_TO_AUTHENTICATE, f"HTTP {exc.response.status_code}"
            reason = f"the CSMS refused this station's credentials (HTTP {exc.response.status_code})"
        else:
            return None
        if self._last_failure != kind:  # once per kind of failure, not once per reconnect attempt
            self._last_failure = kind
            self.store.security_event(kind, info)
        return reason


# ---- certificates (1.6 security whitepaper M03-M05, 2.0.1 M03-M05): what both adapters answer, version-neutral


@dataclass(frozen=True)
class CertificateAnswer:
    status: str  # Accepted, Rejected, Failed, NotFound (each message's own enum)
    reason: str = ""  # 2.0.1 statusInfo reasonCode
    detail: str = ""


def install_certificate(security: Security, use: str, pem: str) -> CertificateAnswer:
    """M05: Accepted; Rejected for what is not a valid CA certificate (not PEM, expired, not a CA: M05.FR.07 / 1.6
    M05.FR.06) or a full store (M05.FR.06 / 1.6 M05.FR.03), nothing written; Failed when writing fails (M05.FR.03 /
    1.6 M05.FR.04). An accepted change of what the station trusts is a ReconfigurationOfSecurityParameters event."""
    try:
        installed = security.certificates.install(use, pem)
    except certs.Refused as exc:
        log.warning("InstallCertificate refused", use=use, reason=exc.reason, detail=str(exc))
        return CertificateAnswer("Rejected", exc.reason, str(exc))
    except OSError as exc:
        log.error("InstallCertificate failed to write", use=use, error=str(exc))
        return CertificateAnswer("Failed", "WriteError", str(exc)[:200])
    subject = installed.cert.subject.rfc4514_string()[:120]
    security.store.security_event(RECONFIGURED, f"{use} installed: {subject}")
    return CertificateAnswer("Accepted")


def installed_certificates(security: Security, uses: list[str] | None) -> list[tuple[str, dict[str, str]]]:
    """M03: (use, hash data in SHA256) of each installed certificate of `uses` (all when None); empty: NotFound
    (M03.FR.02)."""
    wanted = certs.USES if not uses else [u for u in uses if u in certs.USES]
    return [(item.use, data) for item, data in security.certificates.hash_data(wanted)]


def delete_certificate(security: Security, data: dict[str, str]) -> CertificateAnswer:
    """M04: Accepted, NotFound (M04.FR.04), or Failed: the station's own certificate (2.0.1 M04.FR.06, 1.6
    M04.FR.05), the CSMS root that verified the current connection (1.6 M04.FR.06), the last CSMS root while the
    connection depends on the store's roots only (2.0.1 M04.FR.03 lets the station refuse the last of a type; without
    it the station could never connect again), or a failed delete (M04.FR.03)."""
    if _is_client_certificate(security, data):
        return CertificateAnswer("Failed", "NotAllowed", "the station's own certificate is not deleted this way")
    item = security.certificates.find(data)
    if item is None:
        return CertificateAnswer("NotFound")
    if item.use == certs.CSMS_ROOT and security.profile >= 2:
        roots = security.certificates.installed([certs.CSMS_ROOT])
        in_use = certs.issuing_root(security.server_certificate, roots) if security.server_certificate else None
        if in_use is not None and in_use.path == item.path:
            log.warning("DeleteCertificate refused: the CSMS root the connection is verified with")
            return CertificateAnswer("Failed", "InUse", "this CSMS root verifies the current connection")
        if len(roots) == 1 and security.config.ca_file:
            log.warning("DeleteCertificate refused: the last CSMS root")
            return CertificateAnswer("Failed", "LastCertificate", "the last CSMS root: no connection without it")
    try:
        security.certificates.delete(item)
    except OSError as exc:
        return CertificateAnswer("Failed", "WriteError", str(exc)[:200])
    security.store.security_event(RECONFIGURED, f"{item.use} deleted: {item.cert.subject.rfc4514_string()[:120]}")
    return CertificateAnswer("Accepted")


def _is_client_certificate(security: Security, data: dict[str, str]) -> bool:
    algorithm = str(data.get("hash_algorithm") or "")
    if algorithm not in certs.HASHES:
        return False
    serial = str(data.get("serial_number") or "").lower().lstrip("0") or "0"
    for credential in security.client.credentials():
        mine = certs.hash_data(credential.leaf, algorithm, None)
        if (mine["serial_number"], mine["issuer_name_hash"]) == (serial, str(data.get("issuer_name_hash")).lower()):
            return True
    return False


# ---- end certificates


# ---- client certificate renewal (1.6 security whitepaper A02/A03, 2.0.1 A02/A03): what both adapters answer


def renew_client_certificate(security: Security, now: float) -> bool:
    """TriggerMessage SignChargingStationCertificate / ExtendedTriggerMessage SignChargePointCertificate (A02.FR.02):
    a new key and a SignCertificate once the answer is out. False (Rejected) when the CSR would have no organization
    name: neither OrganizationName (1.6 CpoName) is set nor does the certificate in use have one (A00.FR.509; 1.6
    A02/A03 prerequisite: "The configuration variable CpoName MUST be set")."""
    if not security.client.organization(security.settings.value("OrganizationName")):
        log.warning("certificate renewal refused: set SecurityCtrlr.OrganizationName (1.6: CpoName) first")
        return False
    security.renewal.trigger(now)
    for listener in security.renewal_listeners:
        listener()
    return True


def signing_request(security: Security) -> str:
    """The CSR of the renewal under way (a new key at its start, the same one for its resends). Blocking (an RSA key
    takes a while): run it in a thread."""
    organization = security.client.organization(security.settings.value("OrganizationName"))
    return security.client.csr(organization, fresh_key=security.renewal.fresh_key)


def certificate_signed(security: Security, chain: str, certificate_type: str | None = None) -> CertificateAnswer:
    """CertificateSigned (A02.FR.06-08): Accepted, the chain installed and used from the next connection (at once
    when the current one presents a client certificate: the connection is closed once the answer is out); Rejected
    with nothing written and the security event InvalidChargingStationCertificate (1.6 InvalidChargePointCertificate,
    A02.FR.07) otherwise. Either way the renewal's resends end (A02.FR.20 after a refusal)."""
    if certificate_type not in (None, "ChargingStationCertificate"):
        log.warning("CertificateSigned refused: no ISO 15118 certificates here", certificate_type=certificate_type)
        return CertificateAnswer("Rejected", "NotSupported", f"{certificate_type} is not used by this station")
    try:
        credential = security.client.accept(
            chain,
            security.certificates.roots(certs.CSMS_ROOT),
            max_size=security.settings.int_value("CertificateSignedMaxChainSize"),
        )
    except certs.Refused as exc:
        log.warning("CertificateSigned refused", reason=exc.reason, detail=str(exc))
        security.store.security_event(INVALID_STATION_CERTIFICATE, str(exc)[:200])
        security.renewal.stop()
        return CertificateAnswer("Rejected", exc.reason, str(exc))
    except OSError as exc:
        log.error("CertificateSigned could not be stored", error=str(exc))
        return CertificateAnswer("Rejected", "WriteError", str(exc)[:200])
    security.renewal.stop()
    security.store.security_event(
        RECONFIGURED, f"client certificate renewed: {credential.leaf.subject.rfc4514_string()[:100]}"
    )
    for listener in security.renewal_listeners:
        listener()  # the connection checks whether the credential to present has changed (A02.FR.08)
    return CertificateAnswer("Accepted")


# ---- end client certificate renewal
