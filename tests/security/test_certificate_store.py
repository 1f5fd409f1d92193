"""The certificate store on real files (station/ocpp/certificates.py): seeding from the config, M05 install rules,
the limit, M03 hash data, M04 lookup by any of the three hash algorithms."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.ocpp.certificates import CSMS_ROOT, MANUFACTURER_ROOT, CertificateStore, Refused
from tests.security.certs import expired_ca_pem, hash_data, pem
from tests.security.pki import CertificateAuthority


@pytest.fixture
def cas(tmp_path: Path) -> list[CertificateAuthority]:
    directory = tmp_path / "pki"
    directory.mkdir()
    return [CertificateAuthority(directory, f"ca-{n}") for n in range(4)]


def test_seeded_from_the_config_files_once_and_again_when_they_change(
    tmp_path: Path, cas: list[CertificateAuthority]
) -> None:
    seed = tmp_path / "csms-ca.pem"
    seed.write_text(pem(cas[0].path))
    maker = tmp_path / "maker.pem"
    maker.write_text(pem(cas[1].path))
    directory = tmp_path / "state" / "certificates"
    store = CertificateStore(directory, {CSMS_ROOT: str(seed), MANUFACTURER_ROOT: str(maker)})
    assert [c.subject for c in store.roots(CSMS_ROOT)] == [cas[0].cert.subject]
    assert [c.subject for c in store.roots(MANUFACTURER_ROOT)] == [cas[1].cert.subject]
    # A root deleted over OCPP stays deleted across restarts while the seed file is unchanged ...
    store.delete(store.installed([CSMS_ROOT])[0])
    assert CertificateStore(directory, {CSMS_ROOT: str(seed)}).roots(CSMS_ROOT) == []
    # ... and the operator on site can add one by changing the file.
    seed.write_text(pem(cas[0].path) + pem(cas[2].path))
    again = CertificateStore(directory, {CSMS_ROOT: str(seed)})
    assert {c.subject for c in again.roots(CSMS_ROOT)} == {cas[0].cert.subject, cas[2].cert.subject}
    assert not list(directory.rglob(".tmp-*"))


def test_install_checks_before_writing_and_replaces_the_same_certificate(
    tmp_path: Path, cas: list[CertificateAuthority]
) -> None:
    """M05.FR.07 (1.6 M05.FR.06): not PEM, expired, not a CA are refused and nothing is written; M05.FR.17: the same
    certificate again is Accepted and replaces itself."""
    store = CertificateStore(tmp_path / "certificates")
    leaf = cas[0].issue("leaf", "localhost", hosts=("localhost",))
    for bad, reason in (
        ("hello", "InvalidFormat"),
        (expired_ca_pem(), "InvalidCertificate"),
        (pem(leaf.cert), "InvalidCertificate"),
        (pem(cas[0].path) + pem(cas[1].path), "InvalidFormat"),
    ):
        with pytest.raises(Refused) as caught:
            store.install(CSMS_ROOT, bad)
        assert caught.value.reason == reason
    assert store.installed() == []
    store.install(CSMS_ROOT, pem(cas[0].path))
    store.install(CSMS_ROOT, pem(cas[0].path))
    assert len(store.installed()) == 1
    # Another instance over the same directory (the firmware updater's) sees it.
    assert CertificateStore(tmp_path / "certificates").roots(CSMS_ROOT) == [cas[0].cert]


def test_full_store_is_refused(tmp_path: Path, cas: list[CertificateAuthority]) -> None:
    """1.6 M05.FR.03 (count >= CertificateStoreMaxLength), 2.0.1 M05.FR.06 (CertificateEntries maxLimit)."""
    store = CertificateStore(tmp_path / "certificates", max_length=2)
    store.install(CSMS_ROOT, pem(cas[0].path))
    store.install(MANUFACTURER_ROOT, pem(cas[1].path))
    with pytest.raises(Refused) as caught:
        store.install(CSMS_ROOT, pem(cas[2].path))
    assert caught.value.reason == "OutOfStorage"
    store.install(CSMS_ROOT, pem(cas[0].path))  # a replacement takes no new room (M05.FR.17)
    assert store.entries() == 2


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA384", "SHA512"])
def test_hash_data_and_lookup(tmp_path: Path, cas: list[CertificateAuthority], algorithm: str) -> None:
    """M03.FR.04: hash data per certificate, as computed independently; M04: found by hash data in any algorithm."""
    store = CertificateStore(tmp_path / "certificates")
    store.install(CSMS_ROOT, pem(cas[0].path))
    store.install(MANUFACTURER_ROOT, pem(cas[1].path))
    listed = store.hash_data([CSMS_ROOT], algorithm)
    assert [data for _, data in listed] == [hash_data(cas[0], algorithm)]
    found = store.find(hash_data(cas[1], algorithm))
    assert found is not None and found.use == MANUFACTURER_ROOT
    assert store.find({**hash_data(cas[1], algorithm), "serial_number": "1"}) is None
    assert store.find(hash_data(cas[2], algorithm)) is None
