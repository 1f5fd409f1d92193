"""Client certificate renewal end to end, over real TLS on loopback (security profile 3): the operator's CA made in
the test signs the CSMS's server certificate and the station's certificates; the CSMS requires a client certificate
from that CA. The station renews on request (2.0.1 TriggerMessage SignChargingStationCertificate, 1.6
ExtendedTriggerMessage SignChargePointCertificate) and on its own before expiry, reconnects with the new certificate,
refuses a broken one, and falls back from one the CSMS will not take, with no transaction message lost."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.app import Station, running_station
from station.config import parse_config
from station.demo.csms import CsmsBehaviour, LocalCsms
from station.demo.session import extract_signed_record
from station.diag.client import print_status
from station.diag.server import status_report
from station.ocpp.client_certificate import CONFIG
from tests.security.pki import CertificateAuthority, pem_of, server_context

STATION = "CP-RENEW-1"
HOSTS = ("localhost", "127.0.0.1")
ORGANIZATION = "Operator AG"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    root = CertificateAuthority(directory, "operator-root")
    return {
        "root": root,
        "rogue": CertificateAuthority(directory, "rogue-root"),
        "server": root.issue("csms", "localhost", hosts=HOSTS),
        "factory": root.issue("factory", STATION, client=True, organization="Factory GmbH", valid_days=365),
        "expiring": root.issue("expiring", STATION, client=True, organization="Factory GmbH", valid_days=10),
    }


def config(tmp_path: Path, url: str, version: str, client: Any, **csms: Any) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {
            "url": url,
            "ocpp_version": version,
            "reconnect_min": 0.1,
            "reconnect_max": 1,
            "security_profile": 3,
            "ca_file": str(csms.pop("ca_file")),
            "client_cert": str(client.cert),
            "client_key": str(client.key),
            **csms,
        },
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
    }


@pytest_asyncio.fixture
async def csms_of(pki: dict[str, Any]) -> AsyncIterator[Any]:
    started: list[LocalCsms] = []

    async def start(version: str) -> LocalCsms:
        subprotocol = "ocpp2.0.1" if version == "2.0.1" else "ocpp1.6"
        context = server_context(pki["server"], client_ca=pki["root"].path)
        server = await LocalCsms(CsmsBehaviour(), tls=context, subprotocols=(subprotocol,)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
        assert server.violations == [], server.violations


def presented_serials(csms: LocalCsms) -> list[int]:
    """The serial number of the client certificate each TLS connection presented."""
    return [int(peer["serialNumber"], 16) for peer in csms.client_certificates]


def signed_by(ca: CertificateAuthority, **kw: Any) -> Any:
    return lambda csr: pem_of(ca.sign_csr(csr, **kw))


def events(csms: LocalCsms) -> list[str]:
    return [r.payload["type"] for r in csms.messages("SecurityEventNotification")]


async def set_organization(csms: LocalCsms, version: str) -> None:
    if version == "2.0.1":
        item = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"}}
        results = await csms.set_variables(STATION, [{**item, "attribute_value": ORGANIZATION}])
        assert results[0]["attribute_status"] == "Accepted"
    else:
        assert await csms.change_configuration(STATION, "CpoName", ORGANIZATION) == "Accepted"


async def trigger_renewal(csms: LocalCsms, version: str) -> str:
    if version == "2.0.1":
        return await csms.trigger_message(STATION, "SignChargingStationCertificate")
    return await csms.extended_trigger_message(STATION, "SignChargePointCertificate")


async def renewed(csms: LocalCsms, version: str, answers: int) -> x509.Certificate:
    """Trigger, check the CSR, wait for the CertificateSigned answer; the certificate the CSMS's CA made."""
    requests = len(csms.messages("SignCertificate"))
    assert await trigger_renewal(csms, version) == "Accepted"
    await csms.wait_until(lambda: len(csms.messages("SignCertificate")) > requests, timeout=20)
    request = csms.messages("SignCertificate")[-1]
    csr = x509.load_pem_x509_csr(request.payload["csr"].encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == STATION  # A00.FR.511
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORGANIZATION  # A00.FR.509
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= 224  # A00.FR.503
    if version == "2.0.1":
        assert request.payload["certificateType"] == "ChargingStationCertificate"  # A02.FR.13
    else:
        assert set(request.payload) == {"csr"}
    await csms.wait_until(lambda: len(csms.certificate_signed_answers) >= answers, timeout=20)
    return x509.load_pem_x509_certificate(csms.certificates_signed[answers - 1].encode())


async def charging(csms: LocalCsms, station: Station) -> Any:
    await csms.wait_for("StatusNotification", lambda p: (p.get("status") or p.get("connectorStatus")) == "Available")
    assert await csms.start_session(STATION, "TAG-RENEW") == "Accepted"
    _, transaction_id = await csms.wait_session_started(STATION)
    await csms.wait_until(lambda: station.runtime.core.evses[1].phase.value == "charging")
    return transaction_id


@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
async def test_renewal_on_request_reconnects_with_the_new_certificate_and_refuses_a_broken_one(
    tmp_path: Path, pki: dict[str, Any], csms_of: Any, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """TC_A_11_CS (A02.FR.02/03/06/08/09, F06.FR.04/05/10), 1.6 whitepaper A02: the CSMS triggers, the station
    sends a CSR made on its own new key, the CSMS's CA signs it, CertificateSigned is Accepted and the station
    reconnects presenting the new certificate (a signed session then runs over it). TC_A_14_CS (A02.FR.07): a chain
    from a CA that is not a CSMS root is Rejected, with the security event InvalidChargingStationCertificate (1.6
    InvalidChargePointCertificate), and the connection keeps its certificate. The private key is never logged
    (A02.FR.05)."""
    csms = await csms_of(version)
    root = pki["root"]
    cfg = config(tmp_path, csms.url, version, pki["factory"], ca_file=root.path)
    with caplog.at_level(logging.DEBUG):
        async with running_station(parse_config(cfg)) as station:
            await csms.wait_connected(STATION)
            factory = x509.load_pem_x509_certificate(pki["factory"].cert.read_bytes())
            assert presented_serials(csms) == [factory.serial_number]
            await set_organization(csms, version)
            csms.signer = signed_by(root)

            new = await renewed(csms, version, answers=1)
            assert csms.certificate_signed_answers[0]["status"] == "Accepted"
            await csms.wait_until(lambda: len(presented_serials(csms)) >= 2, timeout=20)  # A02.FR.08
            assert presented_serials(csms)[-1] == new.serial_number
            await csms.wait_connected(STATION)
            active = station.connection.security.client.active()
            assert active is not None and active.leaf == new
            await csms.wait_for("SecurityEventNotification", lambda p: "renewed" in str(p.get("techInfo")))

            connections = csms.connections
            csms.signer = signed_by(pki["rogue"])
            await renewed(csms, version, answers=2)
            answer = csms.certificate_signed_answers[1]
            assert answer["status"] == "Rejected"
            if version == "2.0.1":
                assert answer["status_info"]["reason_code"] == "InvalidCertificate"
            refusal = "InvalidChargingStationCertificate" if version == "2.0.1" else "InvalidChargePointCertificate"
            await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == refusal, timeout=20)
            assert station.connection.security.client.active().leaf == new  # type: ignore[union-attr]
            assert csms.connections == connections  # no reconnect for a refused chain

            transaction_id = await charging(csms, station)
            assert await csms.stop_session(STATION, transaction_id) == "Accepted"
            record, _ = extract_signed_record((await csms.wait_session_ended(STATION)).payload)
            assert record
    logged = caplog.text + "".join(str(r.msg) for r in caplog.records)
    assert "PRIVATE KEY" not in logged
    for key_file in (tmp_path / "certificates" / "ChargingStationCertificate").glob("*.key"):
        body = key_file.read_text().splitlines()[1]
        assert body not in logged


async def test_a_renewed_certificate_the_csms_refuses_falls_back_with_no_message_lost(
    tmp_path: Path, pki: dict[str, Any], csms_of: Any
) -> None:
    """The issue's fallback (A02.FR.10: keep the old certificate as fallback; 1.6 A05 error handling's spirit): a
    certificate the station must accept (it chains to a CSMS root the CSMS installed, M05) but the CSMS's TLS will
    not take. The station reconnects with it, is refused NetworkProfileConnectionAttempts times, falls back to the
    certificate that worked, and the transaction running meanwhile ends with one StartTransaction and one
    StopTransaction carrying the signed record."""
    csms = await csms_of("1.6")
    cfg = config(tmp_path, csms.url, "1.6", pki["factory"], ca_file=pki["root"].path)
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_connected(STATION)
        factory = x509.load_pem_x509_certificate(pki["factory"].cert.read_bytes())
        answer = await csms.install_certificate(STATION, "CentralSystemRootCertificate", pem_of(pki["rogue"].cert))
        assert answer["status"] == "Accepted"
        await set_organization(csms, "1.6")
        transaction_id = await charging(csms, station)

        csms.signer = signed_by(pki["rogue"])
        bad = await renewed(csms, "1.6", answers=1)
        assert csms.certificate_signed_answers[0]["status"] == "Accepted"
        client = station.connection.security.client
        await csms.wait_until(lambda: client.active() is not None and client.active().name == CONFIG, timeout=30)
        await csms.wait_until(
            lambda: presented_serials(csms)[-1] == factory.serial_number and station.connection.state.connected,
            timeout=30,
        )
        assert bad.serial_number not in presented_serials(csms)  # the CSMS's TLS never took it
        bad_name = next(c.name for c in client.credentials() if c.leaf == bad)
        assert client.failed() == [bad_name]
        out = io.StringIO()
        print_status(status_report(station), out)  # what `station diag status` shows the technician
        assert "client certificate O=Factory GmbH,CN=CP-RENEW-1 (from the config)" in out.getvalue()
        assert "1 refused by the CSMS" in out.getvalue()

        assert await csms.stop_session(STATION, transaction_id) == "Accepted"
        stop = await csms.wait_session_ended(STATION)
        record, _ = extract_signed_record(stop.payload)
        assert record
        assert len(csms.messages("StartTransaction")) == 1
        assert len(csms.messages("StopTransaction")) == 1


async def test_sign_certificate_is_resent_with_the_back_off_and_the_first_csr_still_signs(
    tmp_path: Path, pki: dict[str, Any], csms_of: Any
) -> None:
    """TC_A_23_CS (A02.FR.17/18): CertSigningWaitMinimum 1, CertSigningRepeatTimes 1, the CSMS accepts and sends
    nothing: the request again after at least 1 s, again after at least 2 s more, then no more; all three for the
    same key, and a certificate made from the first CSR is then Accepted."""
    csms = await csms_of("2.0.1")
    cfg = config(tmp_path, csms.url, "2.0.1", pki["factory"], ca_file=pki["root"].path)
    async with running_station(parse_config(cfg)):
        await csms.wait_connected(STATION)
        await set_organization(csms, "2.0.1")
        settings = [("CertSigningWaitMinimum", "1"), ("CertSigningRepeatTimes", "1")]
        results = await csms.set_variables(
            STATION,
            [
                {"component": {"name": "SecurityCtrlr"}, "variable": {"name": name}, "attribute_value": value}
                for name, value in settings
            ],
        )
        assert [r["attribute_status"] for r in results] == ["Accepted", "Accepted"]
        assert await trigger_renewal(csms, "2.0.1") == "Accepted"
        await csms.wait_until(lambda: len(csms.messages("SignCertificate")) >= 3, timeout=20)
        sent = csms.messages("SignCertificate")
        assert (sent[1].at - sent[0].at).total_seconds() >= 1.0
        assert (sent[2].at - sent[1].at).total_seconds() >= 2.0
        keys = {x509.load_pem_x509_csr(r.payload["csr"].encode()).public_key().public_numbers() for r in sent}
        assert len(keys) == 1
        answer = await csms.certificate_signed(STATION, pem_of(pki["root"].sign_csr(sent[0].payload["csr"])))
        assert answer["status"] == "Accepted"
        await csms.wait_until(lambda: len(csms.client_certificates) >= 2, timeout=20)
        assert len(csms.messages("SignCertificate")) == 3  # no more after the certificate came


async def test_a_rejected_signing_request_is_not_resent(tmp_path: Path, pki: dict[str, Any], csms_of: Any) -> None:
    """TC_A_15_CS: SignCertificateResponse Rejected: the TriggerMessage was Accepted and no request follows."""
    csms = await csms_of("2.0.1")
    csms.behaviour.sign_certificate_status = "Rejected"
    cfg = config(tmp_path, csms.url, "2.0.1", pki["factory"], ca_file=pki["root"].path)
    async with running_station(parse_config(cfg)):
        await csms.wait_connected(STATION)
        await set_organization(csms, "2.0.1")
        item = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "CertSigningWaitMinimum"}}
        await csms.set_variables(STATION, [{**item, "attribute_value": "1"}])
        assert await trigger_renewal(csms, "2.0.1") == "Accepted"
        await csms.wait_for("SignCertificate", timeout=20)
        await asyncio.sleep(2.5)  # a resend would come after 1 s
        assert len(csms.messages("SignCertificate")) == 1


async def test_without_an_organization_name_the_trigger_is_rejected(
    tmp_path: Path, pki: dict[str, Any], csms_of: Any
) -> None:
    """A00.FR.509 and the 1.6 A02/A03 prerequisite ("CpoName MUST be set"): with no OrganizationName and no O in
    the certificate in use there is no valid subject for the CSR: Rejected, no SignCertificate."""
    csms = await csms_of("2.0.1")
    plain = pki["root"].issue("plain", STATION, client=True)  # CN only
    cfg = config(tmp_path, csms.url, "2.0.1", plain, ca_file=pki["root"].path)
    async with running_station(parse_config(cfg)):
        await csms.wait_connected(STATION)
        assert await trigger_renewal(csms, "2.0.1") == "Rejected"
        assert await csms.trigger_message(STATION, "SignV2GCertificate") == "NotImplemented"  # no ISO 15118 here
        assert csms.messages("SignCertificate") == []


async def test_the_station_renews_on_its_own_before_the_certificate_expires(
    tmp_path: Path, pki: dict[str, Any], csms_of: Any
) -> None:
    """A03.FR.02/03 (1.6 whitepaper A03): the certificate in use expires in 10 days, within `client_cert_renew_days`
    (30): the station sends SignCertificate without being asked, with the O of the certificate in use, and moves to
    the new certificate."""
    csms = await csms_of("1.6")
    csms.signer = signed_by(pki["root"])
    cfg = config(tmp_path, csms.url, "1.6", pki["expiring"], ca_file=pki["root"].path)
    async with running_station(parse_config(cfg)) as station:
        request = await csms.wait_for("SignCertificate", timeout=20)
        csr = x509.load_pem_x509_csr(request.payload["csr"].encode())
        assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Factory GmbH"
        await csms.wait_until(lambda: len(csms.client_certificates) >= 2, timeout=20)
        active = station.connection.security.client.active()
        assert active is not None and active.name != CONFIG
        assert presented_serials(csms)[-1] == active.leaf.serial_number
        assert len(csms.messages("SignCertificate")) == 1


async def test_a_key_that_cannot_be_stored_ends_the_renewal_not_the_session(
    tmp_path: Path, pki: dict[str, Any], csms_of: Any
) -> None:
    """Bad state on the station's side (here the key directory is a file) refuses the renewal with an error in the
    log and changes nothing else: no SignCertificate, the same connection, the factory certificate still in use."""
    csms = await csms_of("2.0.1")
    cfg = config(tmp_path, csms.url, "2.0.1", pki["factory"], ca_file=pki["root"].path)
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_connected(STATION)
        await set_organization(csms, "2.0.1")
        directory = station.connection.security.client.directory
        await csms.wait_until(lambda: (directory / "state.json").exists())  # the station noted what connected
        shutil.rmtree(directory)
        directory.write_text("not a directory")
        connections = csms.connections
        assert await trigger_renewal(csms, "2.0.1") == "Accepted"
        assert await csms.trigger_message(STATION, "Heartbeat") == "Accepted"
        await csms.wait_for("Heartbeat", timeout=10)
        await asyncio.sleep(0.5)
        assert csms.messages("SignCertificate") == []
        assert csms.connections == connections and station.connection.state.connected
        assert station.connection.security.renewal.wait(0.0) is None


async def test_renewed_on_profile_2_then_raised_to_profile_3_with_it(
    tmp_path: Path, pki: dict[str, Any], csms_of: Any
) -> None:
    """TC_A_19_CS with its memory state RenewChargingStationCertificate: a station on security profile 2 (TLS and
    Basic auth, no client certificate) gets a certificate over OCPP, then the CSMS sets a network profile with
    security profile 3 (A05.FR.03: now the station has what it needs, so the priority is Accepted), and the next
    connection (the test drops this one; TC_A_19_CS resets) goes to the profile-3 CSMS presenting the renewed
    certificate (A05.FR.06: SecurityProfile reads 3)."""
    password = "0123456789abcdef0123"
    profile_2 = await LocalCsms(
        CsmsBehaviour(),
        tls=server_context(pki["server"]),
        subprotocols=("ocpp2.0.1",),
        passwords={STATION: password},
    ).start()
    profile_3 = await csms_of("2.0.1")
    cfg = config(
        tmp_path, profile_2.url, "2.0.1", pki["factory"], ca_file=pki["root"].path, basic_auth_password=password
    )
    cfg["csms"].update(security_profile=2)
    del cfg["csms"]["client_cert"], cfg["csms"]["client_key"]
    try:
        async with running_station(parse_config(cfg)) as station:
            await profile_2.wait_connected(STATION)
            await set_organization(profile_2, "2.0.1")
            profile_2.signer = signed_by(pki["root"])
            new = await renewed(profile_2, "2.0.1", answers=1)
            assert profile_2.certificate_signed_answers[0]["status"] == "Accepted"
            assert profile_2.connections == 1  # profile 2 presents no client certificate: nothing to switch

            data = {
                "ocpp_version": "OCPP20",
                "ocpp_transport": "JSON",
                "ocpp_csms_url": profile_3.url,
                "message_timeout": 30,
                "security_profile": 3,
                "ocpp_interface": "Wired0",
            }
            assert (await profile_2.set_network_profile(STATION, 1, data))["status"] == "Accepted"
            item = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NetworkConfigurationPriority"}}
            result = await profile_2.set_variables(STATION, [{**item, "attribute_value": "1,0"}])
            assert result[0]["attribute_status"] in ("Accepted", "RebootRequired")
            await profile_2.drop_connections()  # the next connection attempt uses the new order (B10.FR.04)
            await profile_3.wait_connected(STATION, timeout=30)
            assert presented_serials(profile_3) == [new.serial_number]
            security = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}}
            await profile_3.wait_until(lambda: station.connection.security.profile == 3, timeout=10)
            [got] = await profile_3.get_variables(STATION, [security])
            assert got["attribute_value"] == "3"
    finally:
        await profile_2.stop()
