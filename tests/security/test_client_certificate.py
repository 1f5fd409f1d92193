"""The station's client certificate store and the SignCertificate back-off, without a network: what is generated, what
CertificateSigned chains are taken (2.0.1 / 1.6 security whitepaper A02.FR.06/07), which credential a connection
presents (A02.FR.08/09) and the fallback from one the CSMS refuses (A02.FR.10), and when a SignCertificate goes
(A02.FR.17-20, TC_A_23_CS, TC_A_15_CS)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.ocpp.certificates import Refused
from station.ocpp.client_certificate import CONFIG, ClientCertificates, Renewal
from tests.security.pki import CertificateAuthority, pem_of

STATION = "CP-RENEW"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, "operator-root")


@pytest.fixture
def client(tmp_path: Path, ca: CertificateAuthority) -> ClientCertificates:
    factory = ca.issue("factory", STATION, client=True, organization="Factory GmbH")
    return ClientCertificates(
        tmp_path / "state" / "ChargingStationCertificate",
        STATION,
        config_cert=str(factory.cert),
        config_key=str(factory.key),
    )


def files(client: ClientCertificates) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in client.directory.iterdir()}


def test_the_csr_is_made_on_the_station_with_the_subject_ocpp_asks_for(client: ClientCertificates) -> None:
    """A02.FR.02/03 and A00.FR.502/503/509/511 (1.6 A02.FR.13): a new EC P-256 key, a PEM PKCS#10 CSR with CN = the
    station id and O = OrganizationName; the key stays on the station, 0600, in a 0700 directory (A02.FR.05)."""
    csr = x509.load_pem_x509_csr(client.csr("Operator AG", fresh_key=True).encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == STATION
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Operator AG"
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size == 256
    pending = client.directory / "pending.key"
    assert stat.S_IMODE(os.stat(pending).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(client.directory).st_mode) == 0o700
    assert b"PRIVATE KEY" in pending.read_bytes()


def test_a_resend_keeps_the_key_and_a_new_renewal_makes_a_new_one(client: ClientCertificates) -> None:
    """A02.FR.17: the resend is "for the CSR" (TC_A_23_CS signs the first CSR after two resends); A02.FR.02: a new
    request (a new TriggerMessage) generates a new key."""

    def key_of(csr: str) -> bytes:
        public = x509.load_pem_x509_csr(csr.encode()).public_key()
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    first = key_of(client.csr("O", fresh_key=True))
    assert key_of(client.csr("O", fresh_key=False)) == first
    assert key_of(client.csr("O", fresh_key=True)) != first


def test_the_organization_comes_from_the_setting_else_from_the_certificate_in_use(client: ClientCertificates) -> None:
    """A00.FR.509: the O RDN; 1.6 A02/A03 prerequisite: CpoName. Without the setting, the O the certificate in use
    has."""
    assert client.organization("Operator AG") == "Operator AG"
    assert client.organization("") == "Factory GmbH"


def test_a_signed_chain_for_the_pending_key_is_installed_and_presented_next(
    client: ClientCertificates, ca: CertificateAuthority
) -> None:
    """A02.FR.06/08/09: checked, stored (key 0600), and the newest valid credential is what the next connection
    presents; the factory credential stays as the fallback."""
    assert client.active() is not None and client.active().name == CONFIG  # type: ignore[union-attr]
    signed = ca.sign_csr(client.csr("Operator AG", fresh_key=True))
    credential = client.accept(pem_of(signed), [ca.cert])
    assert credential.leaf == signed
    assert stat.S_IMODE(os.stat(credential.key).st_mode) == 0o600
    assert not (client.directory / "pending.key").exists()
    assert client.active() == credential
    assert {c.name for c in client.credentials()} == {credential.name, CONFIG}
    assert client.accept(pem_of(signed), [ca.cert]) == credential  # the same chain again changes nothing


def test_a_chain_through_a_sub_ca_it_carries_is_taken(
    client: ClientCertificates, ca: CertificateAuthority, tmp_path: Path
) -> None:
    """A00 certificate hierarchy: the station certificate may be issued by a sub-CA of the CSO's root; the chain
    carries it (certificateChain "can also contain the necessary sub CA certificates")."""
    sub = CertificateAuthority(tmp_path, "operator-sub", parent=ca)
    signed = sub.sign_csr(client.csr("Operator AG", fresh_key=True))
    with pytest.raises(Refused):
        client.accept(pem_of(signed), [ca.cert])  # without the sub-CA, no path to the root
    assert client.accept(pem_of(signed, sub.cert), [ca.cert]).leaf == signed


def refusals(ca: CertificateAuthority, other: CertificateAuthority, csr: str) -> dict[str, str]:
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.load_pem_x509_csr(csr.encode()).subject)
        .sign(stranger_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    now = datetime.now(UTC)
    no_o = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, STATION)])
    other_cn = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "CP-OTHER"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "O")]
    )
    return {
        "not PEM": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        "another key": pem_of(ca.sign_csr(stranger_csr)),
        "another CA": pem_of(other.sign_csr(csr)),
        "expired": pem_of(ca.sign_csr(csr, start=now - timedelta(days=10), days=5)),
        "a CA certificate": pem_of(ca.sign_csr(csr, ca=True)),
        "another common name": pem_of(ca.sign_csr(csr, subject=other_cn)),
        "no organization": pem_of(ca.sign_csr(csr, subject=no_o)),
        "too long": pem_of(ca.sign_csr(csr)) + " " * 10_000,
    }


def test_bad_chains_are_refused_with_a_reason_and_change_nothing(
    client: ClientCertificates, ca: CertificateAuthority, tmp_path: Path
) -> None:
    """A02.FR.06/07 (TC_A_14_CS), A02.FR.16: not PEM, for another key, from a CA outside the CSMS roots, expired, a
    CA, another station's name, no O, over MaxCertificateChainSize: Refused, nothing written, the pending key kept (a
    right chain for the same CSR is still taken)."""
    other = CertificateAuthority(tmp_path, "someone-else")
    csr = client.csr("Operator AG", fresh_key=True)
    before = files(client)
    for what, chain in refusals(ca, other, csr).items():
        with pytest.raises(Refused) as refused:
            client.accept(chain, [ca.cert])
        assert refused.value.reason, what
        assert files(client) == before, what
        assert client.active().name == CONFIG, what  # type: ignore[union-attr]
    assert client.accept(pem_of(ca.sign_csr(csr)), [ca.cert]).name != CONFIG
    with pytest.raises(Refused):
        client.accept(pem_of(ca.sign_csr(csr)), [])  # no CSMS root installed: nothing to check the chain against


def test_a_certificate_valid_from_tomorrow_is_presented_from_tomorrow(
    client: ClientCertificates, ca: CertificateAuthority
) -> None:
    """A02.FR.08: switch to the new certificate as soon as the time is after its 'Not valid before'."""
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    credential = client.accept(pem_of(ca.sign_csr(client.csr("O", fresh_key=True), start=tomorrow)), [ca.cert])
    assert client.active().name == CONFIG  # type: ignore[union-attr]
    assert client.active(tomorrow + timedelta(minutes=1)) == credential


def test_a_renewed_certificate_the_csms_refuses_falls_back_to_the_one_that_worked(
    client: ClientCertificates, ca: CertificateAuthority
) -> None:
    """A02.FR.10 (keep the old certificate as fallback) and the issue's fallback: refused `attempts` times, the
    renewed credential is marked failed and the one that last worked is presented again, and stays so after it
    connected; once every one has failed, the marks are cleared rather than leaving none."""
    factory = client.active()
    client.connected(factory)
    renewed = client.accept(pem_of(ca.sign_csr(client.csr("O", fresh_key=True))), [ca.cert])
    assert client.active() == renewed
    client.refused(renewed, attempts=3)
    client.refused(renewed, attempts=3)
    assert client.active() == renewed
    client.refused(renewed, attempts=3)
    assert client.active() == factory
    client.connected(factory)  # the fallback works: the refused one stays marked
    assert client.active() == factory
    for _ in range(3):  # and then the CSMS refuses that one too: every one marked, the cycle starts over
        client.refused(factory, attempts=3)
    assert client.active() == renewed


def test_once_a_renewed_certificate_worked_the_oldest_are_pruned(
    client: ClientCertificates, ca: CertificateAuthority
) -> None:
    """A02.FR.10: the old certificate MAY be discarded once the new one works; at most KEEP renewed ones stay (the
    factory's file is the operator's and never touched)."""
    made = []
    for n in range(5):
        start = datetime.now(UTC) - timedelta(hours=5 - n)
        made.append(client.accept(pem_of(ca.sign_csr(client.csr("O", fresh_key=True), start=start)), [ca.cert]))
    assert client.active() == made[-1]
    client.connected(made[-1])
    names = {c.name for c in client.credentials()}
    assert CONFIG in names and made[-1].name in names
    assert len(names - {CONFIG}) == 3
    assert made[0].name not in names


def test_sign_certificate_back_off_as_tc_a_23_cs() -> None:
    """A02.FR.17-19, TC_A_23_CS: CertSigningWaitMinimum W, CertSigningRepeatTimes 1: the request at once, again after
    W, again after 2W, then no more until the CSMS triggers again; the resends are for the same CSR (no fresh key)."""
    renewal, w = Renewal(), 10.0
    renewal.trigger(100.0)
    assert renewal.wait(100.0) == 0 and renewal.fresh_key
    renewal.answered(True, 100.0, w, 1)
    assert not renewal.fresh_key
    assert renewal.wait(100.0) == w
    renewal.answered(True, 110.0, w, 1)
    assert renewal.wait(110.0) == 2 * w
    renewal.answered(True, 130.0, w, 1)
    assert renewal.wait(130.0) is None


def test_a_rejected_request_or_a_refused_chain_ends_the_renewal() -> None:
    """TC_A_15_CS (SignCertificate Rejected), A02.FR.20 (a refused chain: no back-off until triggered again)."""
    renewal = Renewal()
    renewal.trigger(0.0)
    renewal.answered(False, 0.0, 10.0, 3)
    assert renewal.wait(5.0) is None
    renewal.trigger(20.0)
    renewal.answered(True, 20.0, 10.0, 3)
    renewal.stop()
    assert renewal.wait(100.0) is None


def test_the_station_renews_on_its_own_at_most_once_a_day() -> None:
    """A03.FR.02: the certificate expires soon -> a renewal; while it stays unanswered, one more a day, not one per
    look."""
    renewal = Renewal()
    assert renewal.expiring(0.0)
    renewal.answered(True, 0.0, 10.0, 0)
    renewal.answered(True, 10.0, 10.0, 0)  # the one resend, then none
    assert renewal.wait(10.0) is None
    assert not renewal.expiring(3600.0)
    assert renewal.expiring(Renewal.RETRY_ON_ITS_OWN + 1)


def test_the_pending_key_outlives_a_restart(client: ClientCertificates, ca: CertificateAuthority) -> None:
    """A CertificateSigned for a CSR sent before a restart is still taken: the pending key is a file, not memory."""
    csr = client.csr("O", fresh_key=True)
    again = ClientCertificates(client.directory, STATION, config_cert=client.config_cert, config_key=client.config_key)
    assert again.accept(pem_of(ca.sign_csr(csr)), [ca.cert]).name != CONFIG
