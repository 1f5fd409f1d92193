"""CA certificates over OCPP, end to end with real TLS on loopback (profile 2), per version: 1.6 security whitepaper
ed. 3 M03-M05, 2.0.1 M03-M05 (part 6 TC_M_01..TC_M_05 style: install, list by hash, delete; bad input Rejected with
nothing changed; a newly installed CSMS root trusted on the next connection, TC_A_ style root rollover)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509

from station.app import Station, running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.ocpp.certificates import MANUFACTURER_ROOT
from tests.firmware.kit import manufacturer
from tests.security.certs import expired_ca_pem, hash_data, pem
from tests.security.pki import CertificateAuthority, server_context
from tests.security.test_profiles import HOSTS, PASSWORD, STATION, config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki-store")
    ca, new_ca, maker = (CertificateAuthority(directory, n) for n in ("csms-ca", "new-csms-ca", "maker-ca"))
    return {
        "ca": ca,
        "new_ca": new_ca,
        "maker": maker,
        "good": ca.issue("csms", "localhost", hosts=HOSTS),
        "new_good": new_ca.issue("csms-new", "localhost", hosts=HOSTS),
        "leaf": ca.issue("leaf", "someone", hosts=("someone",)),
        "client": ca.issue("station", STATION, client=True),
    }


@pytest_asyncio.fixture
async def csms_tls(pki: dict[str, Any]) -> AsyncIterator[tuple[LocalCsms, Any]]:
    tls = server_context(pki["good"])
    server = await LocalCsms(tls=tls, passwords={STATION: PASSWORD}).start()
    yield server, tls
    await server.stop()
    assert server.violations == [], server.violations


def listed(answer: dict[str, Any], version: str) -> list[dict[str, str]]:
    if version == "1.6":
        return list(answer.get("certificate_hash_data") or [])
    return [chain["certificate_hash_data"] for chain in answer.get("certificate_hash_data_chain") or []]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_install_list_delete_and_switch_the_csms_to_a_new_root(
    tmp_path: Path, pki: dict[str, Any], csms_tls: tuple[LocalCsms, Any], version: str
) -> None:
    """Part 6 TC_M_01/02_CS, TC_M_07_CS, TC_M_12/13_CS, TC_M_18/19_CS, TC_M_20/22/23_CS.
    M05.FR.02 install Accepted; M03.FR.03/04 listed by hash (computed independently in the test), M03.FR.02
    NotFound; M05.FR.07 (1.6 M05.FR.06) bad input Rejected and nothing changed; the new root verifies the CSMS's new
    server certificate on the next connection; 1.6 M04.FR.06 / 2.0.1 M04.FR.03 the root in use and the last one are
    not deleted (Failed); M04.FR.02 Accepted, M04.FR.04 NotFound, M04.FR.07 deleted by the hash in SHA512."""
    csms, tls = csms_tls
    csms_root = "CentralSystemRootCertificate" if version == "1.6" else "CSMSRootCertificate"
    cfg = config(
        tmp_path,
        csms.url,
        version,
        security_profile=2,
        basic_auth_password=PASSWORD,
        ca_file=str(pki["ca"].path),
        client_cert=str(pki["client"].cert),
        client_key=str(pki["client"].key),
    )
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_for("BootNotification")
        assert await certificate_entries(csms, station, version) == 2  # the seeded root and the client certificate
        # The seed: the config's ca_file is the store's one CSMS root.
        answer = await csms.get_installed_certificate_ids(STATION, csms_root)
        assert answer["status"] == "Accepted" and listed(answer, version) == [hash_data(pki["ca"])]
        answer = await csms.get_installed_certificate_ids(STATION, "ManufacturerRootCertificate")
        assert answer["status"] == "NotFound" and not listed(answer, version)

        # Bad input: Rejected, with the reason on 2.0.1, and the store as it was.
        for bad in ("not a certificate", expired_ca_pem(), pem(pki["leaf"].cert)):
            answer = await csms.install_certificate(STATION, csms_root, bad)
            assert answer["status"] == "Rejected"
            if version == "2.0.1":
                assert answer["status_info"]["reason_code"] in ("InvalidFormat", "InvalidCertificate")
        assert listed(await csms.get_installed_certificate_ids(STATION, csms_root), version) == [hash_data(pki["ca"])]
        assert await certificate_entries(csms, station, version) == 2

        # Install a second CSMS root and a manufacturer root.
        assert (await csms.install_certificate(STATION, csms_root, pem(pki["new_ca"].path)))["status"] == "Accepted"
        answer = await csms.install_certificate(STATION, "ManufacturerRootCertificate", pem(pki["maker"].path))
        assert answer["status"] == "Accepted"
        shown = listed(await csms.get_installed_certificate_ids(STATION, csms_root), version)
        assert sorted(shown, key=str) == sorted([hash_data(pki["ca"]), hash_data(pki["new_ca"])], key=str)
        if version == "2.0.1":  # no filter: every type (M03)
            assert len(listed(await csms.get_installed_certificate_ids(STATION), version)) == 3
        # The firmware updater reads its ManufacturerRootCertificates from the same store.
        assert station.firmware is not None
        assert station.firmware.certificates.roots(MANUFACTURER_ROOT) == [pki["maker"].cert]

        assert await certificate_entries(csms, station, version) == 4
        # A full store: Rejected (1.6 M05.FR.03, 2.0.1 M05.FR.06), nothing written.
        station.connection.security.certificates.max_length = 4
        answer = await csms.install_certificate(STATION, "ManufacturerRootCertificate", pem(pki["ca"].path))
        assert answer["status"] == "Rejected"
        if version == "2.0.1":
            assert answer["status_info"]["reason_code"] == "OutOfStorage"
        assert (
            len(listed(await csms.get_installed_certificate_ids(STATION, "ManufacturerRootCertificate"), version)) == 1
        )
        station.connection.security.certificates.max_length = 24
        # The station's own certificate is not deleted by DeleteCertificate (1.6 M04.FR.05, 2.0.1 M04.FR.06).
        client = x509.load_pem_x509_certificate(pki["client"].cert.read_bytes())
        own = {**hash_data(pki["ca"]), "serial_number": f"{client.serial_number:x}"}
        assert (await csms.delete_certificate(STATION, own))["status"] == "Failed"

        # The root that verifies the current connection is not deleted (1.6 M04.FR.06).
        answer = await csms.delete_certificate(STATION, hash_data(pki["ca"]))
        assert answer["status"] == "Failed"

        # The CSMS switches to a server certificate from the new CA: the station reconnects and trusts it.
        tls.load_cert_chain(pki["new_good"].cert, pki["new_good"].key)
        before = csms.connections
        await csms.drop_connections()
        await csms.wait_until(lambda: csms.connections > before and station.connection.state.connected, timeout=20)
        assert csms.stations[STATION].version == version
        served = x509.load_der_x509_certificate(station.connection.security.server_certificate or b"")
        assert served.issuer == pki["new_ca"].cert.subject
        assert not [e for e in station.store.security_log() if e["type"] == "InvalidCsmsCertificate"]

        # Now the old root is not in use: deleted, named by its SHA512 hash data.
        assert (await csms.delete_certificate(STATION, hash_data(pki["ca"], "SHA512")))["status"] == "Accepted"
        assert (await csms.delete_certificate(STATION, hash_data(pki["ca"])))["status"] == "NotFound"
        assert listed(await csms.get_installed_certificate_ids(STATION, csms_root), version) == [
            hash_data(pki["new_ca"])
        ]
        # The last CSMS root, which the connection depends on, is not deleted.
        assert (await csms.delete_certificate(STATION, hash_data(pki["new_ca"])))["status"] == "Failed"
        # The manufacturer root may go (M04 remark: then no signed firmware can be installed).
        assert (await csms.delete_certificate(STATION, hash_data(pki["maker"])))["status"] == "Accepted"
        assert station.firmware.certificates.roots(MANUFACTURER_ROOT) == []
        reconfigured = [e for e in station.store.security_log() if e["type"] == "ReconfigurationOfSecurityParameters"]
        assert len(reconfigured) == 4  # two installs, two deletes

        # Item 4: the server certificate is checked against the store, not the config path. The config's ca_file
        # still names the old CA, but that root was deleted: the old CA's server certificate is now refused, a
        # security event, and nothing gets through until the CSMS serves the new one again.
        tls.load_cert_chain(pki["good"].cert, pki["good"].key)
        await csms.drop_connections()
        log = station.store.security_log
        await csms.wait_until(lambda: any(e["type"] == "InvalidCsmsCertificate" for e in log()), timeout=20)
        assert not station.connection.state.connected
        tls.load_cert_chain(pki["new_good"].cert, pki["new_good"].key)
        expected = "InvalidCentralSystemCertificate" if version == "1.6" else "InvalidCsmsCertificate"
        await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == expected, timeout=20)

    # A restart with the same config: the deleted seed root stays deleted (the seed file did not change), the
    # installed root is still trusted.
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_until(lambda: station.connection.state.connected, timeout=20)
        answer = await csms.get_installed_certificate_ids(STATION, csms_root)
        assert listed(answer, version) == [hash_data(pki["new_ca"])]


async def test_v2g_and_mo_roots_on_2_0_1_kept_apart_from_the_csms_roots(
    tmp_path: Path, pki: dict[str, Any], csms_tls: tuple[LocalCsms, Any]
) -> None:
    """TC_M_03/04_CS (M05: V2GRootCertificate, MORootCertificate), TC_M_14/16/17_CS (M03 filtered by type): each type
    separately; a V2G root is not a CSMS root (the TLS context does not trust it)."""
    csms, _ = csms_tls
    cfg = config(
        tmp_path, csms.url, "2.0.1", security_profile=2, basic_auth_password=PASSWORD, ca_file=str(pki["ca"].path)
    )
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_for("BootNotification")
        assert (await csms.install_certificate(STATION, "V2GRootCertificate", pem(pki["new_ca"].path)))[
            "status"
        ] == "Accepted"
        assert (await csms.install_certificate(STATION, "MORootCertificate", pem(pki["maker"].path)))[
            "status"
        ] == "Accepted"
        answer = await csms.get_installed_certificate_ids(STATION, ["V2GRootCertificate", "MORootCertificate"])
        chains = {c["certificate_type"]: c["certificate_hash_data"] for c in answer["certificate_hash_data_chain"]}
        assert chains == {"V2GRootCertificate": hash_data(pki["new_ca"]), "MORootCertificate": hash_data(pki["maker"])}
        answer = await csms.get_installed_certificate_ids(STATION, "CSMSRootCertificate")
        assert listed(answer, "2.0.1") == [hash_data(pki["ca"])]
        assert (await csms.get_installed_certificate_ids(STATION, "V2GCertificateChain"))["status"] == "NotFound"
        assert [c.subject for c in station.connection.security.certificates.roots("CSMSRootCertificate")] == [
            pki["ca"].cert.subject
        ]


async def certificate_entries(csms: LocalCsms, station: Station, version: str) -> int:
    """2.0.1 SecurityCtrlr.CertificateEntries as the CSMS reads it; 1.6 has no such key (CertificateStoreMaxLength is
    its limit), so there the station's own count."""
    if version == "1.6":
        assert (await csms.get_configuration(STATION, ["CertificateStoreMaxLength"])) == {
            "CertificateStoreMaxLength": "24"
        }
        return station.connection.security.certificates.entries()
    [read] = await csms.get_variables(
        STATION, [{"component": {"name": "SecurityCtrlr"}, "variable": {"name": "CertificateEntries"}}]
    )
    return int(read["attribute_value"])


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_manufacturer_root_installed_over_ocpp_is_what_signed_firmware_chains_to(
    tmp_path: Path, csms: LocalCsms, version: str
) -> None:
    """The firmware updater reads its ManufacturerRootCertificates from the store (L01.FR.22 / 1.6 whitepaper L01:
    InvalidCertificate without one): none configured, so refused; installed over OCPP (M05, TC_M_02_CS), accepted;
    deleted (M04, allowed for the last Manufacturer root by the M04 remark), refused again."""
    signer = manufacturer(tmp_path)
    cfg = config(tmp_path, csms.url, version)
    cfg["firmware"] = {"releases": str(tmp_path / "releases")}
    url = "http://127.0.0.1:9/station-5.0.0-py3-none-any.whl"  # never fetched: the retrieve time is an hour away
    retrieve = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds").replace("+00:00", "Z")

    async def update(request_id: int) -> str:
        return await csms.update_firmware(
            STATION,
            url,
            request_id=request_id,
            signing_certificate=signer.cert_pem,
            signature="AAAA",
            retrieve=retrieve,
        )

    async with running_station(parse_config(cfg)):
        await csms.wait_for("BootNotification")
        assert await update(1) == "InvalidCertificate"
        answer = await csms.install_certificate(STATION, "ManufacturerRootCertificate", signer.root.read_text())
        assert answer["status"] == "Accepted"
        assert await update(2) == "Accepted"
        root = x509.load_pem_x509_certificate(signer.root.read_bytes())
        assert (await csms.delete_certificate(STATION, hash_data(root)))["status"] == "Accepted"
        assert await update(3) == "InvalidCertificate"
