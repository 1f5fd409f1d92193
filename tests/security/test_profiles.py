"""OCPP security profiles 1-3 with real TLS on loopback: a CA and certificates made in the test, a CSMS serving
wss:// with them, and the station daemon connecting with each profile. A full signed session on each profile, and
every refusal case: wrong CA, expired certificate, wrong host name, wrong password, each a security event that reaches
the CSMS once the connection is good again."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog

from station.app import Station, running_station
from station.config import ConfigError, parse_config
from station.demo.csms import LocalCsms
from station.demo.session import extract_signed_record
from station.logs import configure
from station.meter import ocmf
from station.ocpp.signed_value import parse_oca_public_key
from tests.security.pki import CertificateAuthority, Issued, server_context

STATION = "CP-SEC-1"
PASSWORD = "0123456789abcdef0123"
HOSTS = ("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "csms-ca")
    other_ca = CertificateAuthority(directory, "other-ca")
    station_ca = CertificateAuthority(directory, "station-ca")
    return {
        "ca": ca,
        "station_ca": station_ca,
        "good": ca.issue("csms", "localhost", hosts=HOSTS),
        "expired": ca.issue("csms-expired", "localhost", hosts=HOSTS, expired=True),
        "wrong_host": ca.issue("csms-elsewhere", "csms.example.com", hosts=("csms.example.com",)),
        "untrusted": other_ca.issue("csms-other-ca", "localhost", hosts=HOSTS),
        "client": station_ca.issue("station", STATION, client=True),
    }


def config(tmp_path: Path, url: str, version: str = "1.6", **csms: Any) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1, **csms},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


def profile_3_config(tmp_path: Path, url: str, pki: dict[str, Any]) -> dict[str, Any]:
    client: Issued = pki["client"]
    return config(
        tmp_path,
        url,
        security_profile=3,
        ca_file=str(pki["ca"].path),
        client_cert=str(client.cert),
        client_key=str(client.key),
    )


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[list[LocalCsms]]:
    started: list[LocalCsms] = []
    yield started
    for server in started:
        await server.stop()
        assert server.violations == [], server.violations


async def serve(servers: list[LocalCsms], **kw: Any) -> LocalCsms:
    server = await LocalCsms(**kw).start()
    servers.append(server)
    return server


async def signed_session(csms: LocalCsms, station: Station) -> None:
    """RemoteStart/RequestStart, charge, stop; the end carries a signed OCMF record that verifies."""
    await csms.wait_connected(STATION)
    await csms.wait_for("StatusNotification", lambda p: (p.get("status") or p.get("connectorStatus")) == "Available")
    assert await csms.start_session(STATION, "TAG-SEC") == "Accepted"
    _, transaction_id = await csms.wait_session_started(STATION)
    await csms.wait_until(lambda: station.runtime.core.evses[1].phase.value == "charging")
    assert await csms.stop_session(STATION, transaction_id) == "Accepted"
    stop = await csms.wait_session_ended(STATION)
    record, _ = extract_signed_record(stop.payload)
    key = parse_oca_public_key(await csms.meter_public_key(STATION))
    assert ocmf.verify(ocmf.parse(record), key).valid


def events(csms: LocalCsms) -> list[str]:
    return [r.payload["type"] for r in csms.messages("SecurityEventNotification")]


# ---------------------------------------------------------------------- a signed session on each profile


async def test_profile_1_basic_auth_over_ws(tmp_path: Path, servers: list[LocalCsms]) -> None:
    csms = await serve(servers, passwords={STATION: PASSWORD})
    cfg = config(tmp_path, csms.url, security_profile=1, basic_auth_password=PASSWORD, allow_basic_auth_over_ws=True)
    async with running_station(parse_config(cfg)) as station:
        await signed_session(csms, station)
        assert csms.refused_credentials == 0
        assert "StartupOfTheDevice" in events(csms)


async def test_profile_2_tls_with_basic_auth_on_2_0_1(
    tmp_path: Path, servers: list[LocalCsms], pki: dict[str, Any]
) -> None:
    csms = await serve(servers, tls=server_context(pki["good"]), passwords={STATION: PASSWORD})
    assert csms.url.startswith("wss://")
    cfg = config(
        tmp_path, csms.url, "2.0.1", security_profile=2, basic_auth_password=PASSWORD, ca_file=str(pki["ca"].path)
    )
    async with running_station(parse_config(cfg)) as station:
        await signed_session(csms, station)
        assert station.connection.security.profile == 2


async def test_profile_3_tls_with_client_certificate(
    tmp_path: Path, servers: list[LocalCsms], pki: dict[str, Any]
) -> None:
    csms = await serve(servers, tls=server_context(pki["good"], client_ca=pki["station_ca"].path))
    cfg = profile_3_config(tmp_path, csms.url, pki)
    async with running_station(parse_config(cfg)) as station:
        await signed_session(csms, station)
    subjects = [dict(x[0] for x in cert["subject"]) for cert in csms.client_certificates]
    assert subjects and all(s["commonName"] == STATION for s in subjects)


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize("served", ["untrusted", "expired", "wrong_host"])
@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_bad_csms_certificate_is_refused_reported_and_retried(
    tmp_path: Path, servers: list[LocalCsms], pki: dict[str, Any], served: str, version: str
) -> None:
    tls = server_context(pki[served])
    csms = await serve(servers, tls=tls, passwords={STATION: PASSWORD})
    cfg = config(
        tmp_path, csms.url, version, security_profile=2, basic_auth_password=PASSWORD, ca_file=str(pki["ca"].path)
    )
    async with running_station(parse_config(cfg)) as station:
        log = station.store.security_log
        await csms.wait_until(lambda: any(e["type"] == "InvalidCsmsCertificate" for e in log()), timeout=20)
        failed_at = station.connection.state.last_error
        assert "certificate" in failed_at
        # It keeps trying with back-off; every attempt is refused, the event is recorded once, nothing got through.
        await csms.wait_until(lambda: station.connection.state.failures >= 3, timeout=20)
        assert [e["type"] for e in log()].count("InvalidCsmsCertificate") == 1
        assert csms.connections == 0 and csms.received == [] and not station.connection.state.connected

        # The CSMS fixes its certificate: the station connects and reports what happened.
        tls.load_cert_chain(pki["good"].cert, pki["good"].key)
        expected = "InvalidCentralSystemCertificate" if version == "1.6" else "InvalidCsmsCertificate"
        report = await csms.wait_for("SecurityEventNotification", lambda p: p["type"] == expected, timeout=20)
        assert report.payload.get("techInfo")
        await signed_session(csms, station)


async def test_wrong_password_is_refused_and_reported(tmp_path: Path, servers: list[LocalCsms]) -> None:
    passwords = {STATION: "the-right-password-1234"}
    csms = await serve(servers, passwords=passwords)
    cfg = config(tmp_path, csms.url, security_profile=1, basic_auth_password=PASSWORD, allow_basic_auth_over_ws=True)
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_until(lambda: station.connection.state.failures >= 3, timeout=20)
        assert csms.refused_credentials >= 3
        assert csms.connections == 0
        assert "credentials" in station.connection.state.last_error
        assert [e["type"] for e in station.store.security_log()].count("FailedToAuthenticateAtCsms") == 1
        passwords[STATION] = PASSWORD  # the operator fixes the CSMS side
        report = await csms.wait_for(
            "SecurityEventNotification", lambda p: p["type"] == "FailedToAuthenticationAtCentralSystem", timeout=20
        )
        assert report.payload["techInfo"] == "HTTP 401"


async def test_profile_3_without_a_trusted_client_certificate_gets_nowhere(
    tmp_path: Path, servers: list[LocalCsms], pki: dict[str, Any]
) -> None:
    # The CSMS trusts only station certificates from "csms-ca"; ours is from "station-ca".
    csms = await serve(servers, tls=server_context(pki["good"], client_ca=pki["ca"].path))
    cfg = profile_3_config(tmp_path, csms.url, pki)
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_until(lambda: bool(station.connection.state.last_error), timeout=20)
        assert csms.connections == 0 and not station.connection.state.connected


# ---------------------------------------------------------------------- secrets and profile changes from the CSMS


async def test_authorization_key_is_write_only_used_next_time_and_never_logged(
    tmp_path: Path, servers: list[LocalCsms], capsys: pytest.CaptureFixture[str]
) -> None:
    configure(level="debug", fmt="json")
    new_key = "fedcba9876543210fedcba98"
    passwords = {STATION: PASSWORD}
    csms = await serve(servers, passwords=passwords)
    cfg = config(tmp_path, csms.url, security_profile=1, basic_auth_password=PASSWORD, allow_basic_auth_over_ws=True)
    try:
        async with running_station(parse_config(cfg)) as station:
            await csms.wait_for("BootNotification")
            assert await csms.change_configuration(STATION, "AuthorizationKey", "short") == "Rejected"
            assert await csms.change_configuration(STATION, "AuthorizationKey", new_key) == "Accepted"
            shown = await csms.get_configuration(STATION, ["AuthorizationKey"])
            assert shown == {} or shown.get("AuthorizationKey") in (None, "")
            everything = await csms.get_configuration(STATION)
            assert new_key not in json.dumps(everything) and PASSWORD not in json.dumps(everything)
            await csms.wait_for(
                "SecurityEventNotification", lambda p: p["type"] == "ReconfigurationOfSecurityParameters"
            )
            # The next connection uses the new key: the CSMS now accepts only that one.
            passwords[STATION] = new_key
            before = csms.connections
            await csms.drop_connections()
            await csms.wait_until(lambda: csms.connections > before, timeout=20)
            await signed_session(csms, station)
            assert station.connection.security.password == new_key
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    out = capsys.readouterr()
    assert "AuthorizationKey" in out.err  # the frames were logged ...
    assert new_key not in out.err + out.out and PASSWORD not in out.err + out.out  # ... without the secret


async def test_basic_auth_password_on_2_0_1_is_write_only(tmp_path: Path, servers: list[LocalCsms]) -> None:
    csms = await serve(servers, subprotocols=("ocpp2.0.1",))
    async with running_station(parse_config(config(tmp_path, csms.url, "2.0.1"))) as station:
        await csms.wait_for("BootNotification")
        variable = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}}
        [result] = await csms.set_variables(STATION, [{**variable, "attribute_value": "fedcba9876543210fedcba98"}])
        assert result["attribute_status"] == "Accepted"
        [read] = await csms.get_variables(STATION, [variable])
        assert read["attribute_status"] == "Rejected" and not read.get("attribute_value")
        profile = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}}
        [raised] = await csms.set_variables(STATION, [{**profile, "attribute_value": "1"}])
        assert raised["attribute_status"] == "Rejected"  # 2.0.1 changes the profile through a network profile only
        assert station.connection.security.password == "fedcba9876543210fedcba98"


async def test_security_profile_can_only_be_raised_and_only_to_one_the_station_can_use(
    tmp_path: Path, servers: list[LocalCsms], pki: dict[str, Any]
) -> None:
    client: Issued = pki["client"]
    # The CSMS asks for a client certificate but accepts connections without one (as during a migration 2 -> 3).
    tls = server_context(pki["good"], client_ca=pki["station_ca"].path)
    tls.verify_mode = ssl.CERT_OPTIONAL
    csms = await serve(servers, tls=tls, passwords={STATION: PASSWORD})
    cfg = config(
        tmp_path,
        csms.url,
        security_profile=2,
        basic_auth_password=PASSWORD,
        ca_file=str(pki["ca"].path),
        client_cert=str(client.cert),
        client_key=str(client.key),
    )
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_for("BootNotification")
        assert (await csms.get_configuration(STATION, ["SecurityProfile"]))["SecurityProfile"] == "2"
        assert csms.client_certificates == []
        for lower in ("0", "1", "2", "4", "x"):
            assert await csms.change_configuration(STATION, "SecurityProfile", lower) == "Rejected"
        csms.passwords = None  # profile 3 authenticates by certificate, not password
        assert await csms.change_configuration(STATION, "SecurityProfile", "3") == "Accepted"
        # It reconnects with the new profile: the client certificate, and no Basic auth any more.
        await csms.wait_until(lambda: len(csms.client_certificates) == 1, timeout=20)
        await signed_session(csms, station)
        assert station.connection.security.profile == 3
        assert (await csms.get_configuration(STATION, ["SecurityProfile"]))["SecurityProfile"] == "3"


async def test_raising_to_a_profile_the_station_cannot_use_is_rejected(
    tmp_path: Path, servers: list[LocalCsms]
) -> None:
    csms = await serve(servers)
    async with running_station(parse_config(config(tmp_path, csms.url))) as station:
        await csms.wait_for("BootNotification")
        # Profile 1 needs a password and the explicit permission for Basic auth over ws://; 2 and 3 need wss://.
        for wanted in ("1", "2", "3"):
            assert await csms.change_configuration(STATION, "SecurityProfile", wanted) == "Rejected"
        assert station.connection.security.profile == 0


# ---------------------------------------------------------------------- the config file


def test_config_refuses_a_profile_that_does_not_fit(tmp_path: Path, pki: dict[str, Any]) -> None:
    def problems(**csms: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            parse_config(config(tmp_path, **csms))
        return "\n".join(caught.value.problems)

    assert "wss://" in problems(url="ws://h/ocpp", security_profile=2, basic_auth_password=PASSWORD)
    assert "ws://" in problems(url="wss://h/ocpp", security_profile=1, basic_auth_password=PASSWORD)
    assert "allow_basic_auth_over_ws" in problems(url="ws://h/ocpp", security_profile=1, basic_auth_password=PASSWORD)
    assert "basic_auth_password: missing" in problems(url="wss://h/ocpp", security_profile=2)
    assert "16 to 40" in problems(url="wss://h/ocpp", security_profile=2, basic_auth_password="short")
    text = problems(url="wss://h/ocpp", security_profile=3)
    assert "client_cert: missing" in text and "client_key: missing" in text
    assert "not a readable file" in problems(
        url="wss://h/ocpp", security_profile=2, basic_auth_password=PASSWORD, ca_file=str(tmp_path / "nope.pem")
    )
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki["client"].key.read_bytes())
    loose.chmod(0o644)
    text = problems(url="wss://h/ocpp", security_profile=3, client_cert=str(pki["client"].cert), client_key=str(loose))
    assert "chmod 600" in text
    assert (
        parse_config(
            config(
                tmp_path,
                "wss://h/ocpp",
                security_profile=3,
                client_cert=str(pki["client"].cert),
                client_key=str(pki["client"].key),
            )
        ).csms.security_profile
        == 3
    )
