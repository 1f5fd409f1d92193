"""Network connection profiles with real CSMSs on loopback (2.0.1 B09, B10, A05; 1.6 security whitepaper A05):
SetNetworkProfile stored in a slot, NetworkConfigurationPriority choosing the order, a dead profile falling back to
the one that works with nothing queued lost, a new CSMS after a Reset, refusals, and the 1.6 SecurityProfile raise
that cannot connect falling back to the profile before it."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from station.app import running_station
from station.config import parse_config
from station.core.model import StopReason
from station.demo.csms import LocalCsms
from tests.security.pki import CertificateAuthority, server_context

STATION = "CP-NET-1"
PASSWORD = "0123456789abcdef0123"


def config(tmp_path: Path, url: str, version: str = "2.0.1", **csms: Any) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "ocpp_version": version, "reconnect_min": 0.1, "reconnect_max": 1, **csms},
        "meter": {
            "transport": "simulated",
            "simulator": {"signing_time": 0.1, "state": str(tmp_path / "m.json")},
        },
        "storage": {"path": str(tmp_path / "s.db")},
    }


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


def dead_url() -> str:
    """A loopback port nothing listens on: every connection attempt is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ocpp"


def profile(url: str, security: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "ocpp_version": "OCPP20",
        "ocpp_transport": "JSON",
        "ocpp_csms_url": url,
        "message_timeout": 30,
        "security_profile": security,
        "ocpp_interface": "Wired0",
        **extra,
    }


def variable(name: str, value: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": name}}
    if value is not None:
        item["attribute_value"] = value
    return item


async def read(csms: LocalCsms, name: str) -> str:
    [got] = await csms.get_variables(STATION, [variable(name)])
    return str(got["attribute_value"])


async def set_var(csms: LocalCsms, name: str, value: str) -> str:
    [result] = await csms.set_variables(STATION, [variable(name, value)])
    return str(result["attribute_status"])


async def test_dead_profile_falls_back_to_the_working_one_and_nothing_queued_is_lost(
    tmp_path: Path, servers: list[LocalCsms]
) -> None:
    """B09.FR.01, B10.FR.01, B10.FR.03 (NetworkProfileConnectionAttempts per entry), B10.FR.07 (back to the profile
    of the last successful connection); a transaction that ends while the station tries the dead profile reaches the
    CSMS in full, each message once (the outbox is the store's)."""
    csms = await serve(servers)
    async with running_station(parse_config(config(tmp_path, csms.url))) as station:
        await csms.wait_for("BootNotification")
        await csms.wait_connected(STATION)
        assert (await csms.get_variables(STATION, [variable("NetworkConfigurationPriority")]))[0][
            "attribute_value"
        ] == "0"
        assert (await csms.set_network_profile(STATION, 1, profile(dead_url())))["status"] == "Accepted"
        assert await set_var(csms, "NetworkProfileConnectionAttempts", "4") == "Accepted"
        assert await set_var(csms, "NetworkConfigurationPriority", "1,0") == "Accepted"
        assert await read(csms, "ActiveNetworkProfile") == "0"  # the connection in use is left alone (B09)

        assert await csms.start_session(STATION, "TAG-NET") == "Accepted"
        _, transaction_id = await csms.wait_session_started(STATION)
        await csms.wait_until(lambda: station.runtime.core.evses[1].phase.value == "charging")
        [tx] = station.runtime.core.running_transactions()
        connections = csms.connections
        await csms.drop_connections()
        await csms.wait_until(lambda: not station.connection.state.connected, timeout=10)
        station.runtime.remote_stop(tx.ref, StopReason.LOCAL)  # ends while the station dials the dead slot 1
        await csms.wait_until(lambda: csms.connections > connections, timeout=30)
        await csms.wait_until(lambda: station.connection.state.connected, timeout=30)
        assert station.connection.network.active == 0
        ended = await csms.wait_session_ended(STATION)
        assert ended.payload["transactionInfo"]["transactionId"] == transaction_id
        await csms.wait_until(lambda: station.store.next_message("transaction") is None, timeout=30)
        assert len(csms.messages("BootNotification")) == 1  # the same CSMS: no second boot

    events = [
        m for m in csms.messages("TransactionEvent") if m.payload["transactionInfo"]["transactionId"] == transaction_id
    ]
    ids = [m.unique_id for m in events]
    assert len(ids) == len(set(ids)), "a message arrived twice"
    seq = [m.payload["seqNo"] for m in events]
    assert seq == list(range(len(seq))), seq  # every message, in order, once
    assert [m.payload["eventType"] for m in events].count("Ended") == 1


async def test_new_profile_first_in_priority_is_used_after_reset(tmp_path: Path, servers: list[LocalCsms]) -> None:
    """B10 (TC_B_45_CS): SetNetworkProfile (B09.FR.01), NetworkConfigurationPriority "1,0" Accepted (B10.FR.01),
    Reset OnIdle; after the restart the station connects to the first entry (B10.FR.04), CSMS 2, and boots there;
    ActiveNetworkProfile says slot 1."""
    old = await serve(servers)
    new = await serve(servers)
    cfg = parse_config(config(tmp_path, old.url))
    async with running_station(cfg) as station:
        await old.wait_for("BootNotification")
        await old.wait_connected(STATION)
        assert (await old.set_network_profile(STATION, 1, {**profile(new.url), "message_timeout": 17}))[
            "status"
        ] == "Accepted"
        [values] = await old.get_variables(STATION, [variable("NetworkConfigurationPriority")])
        assert values["attribute_value"] == "0"
        assert await set_var(old, "NetworkConfigurationPriority", "1,0") == "Accepted"
        assert new.connections == 0  # the connection in use stays until the Reset
        assert await old.reset(STATION, "OnIdle") == "Accepted"
        await old.wait_until(station.runtime.reset_requested.is_set, timeout=10)
    async with running_station(cfg) as station:
        await new.wait_for("BootNotification")
        await new.wait_connected(STATION)
        assert await read(new, "ActiveNetworkProfile") == "1"
        [timeout] = await new.get_variables(
            STATION, [{**variable("MessageTimeout"), "variable": {"name": "MessageTimeout", "instance": "Default"}}]
        )
        assert timeout["attribute_value"] == "17"  # the profile's messageTimeout is the response timeout in use
        assert await read(new, "NetworkConfigurationPriority") == "1,0"
        assert station.connection.url == f"{new.url}/{STATION}"


async def test_refusals(tmp_path: Path, servers: list[LocalCsms]) -> None:
    """B09.FR.04 (a lower securityProfile than SecurityProfile: Rejected), B09.FR.05 / TC_B_43_CS (a slot outside the
    valuesList), B09.FR.02 (invalid content: SOAP, a VPN or an APN the station has not, no usable URL, a scheme that
    does not fit the profile), B10.FR.02 (a priority naming an empty slot): nothing is stored. A05.FR.02/03 (TC_A_20_CS,
    TC_A_21_CS): a profile the station lacks a CSMS root or a client certificate for is stored, and the priority that
    would use it is Rejected."""
    csms = await serve(servers, passwords={STATION: PASSWORD})
    cfg = config(tmp_path, csms.url, security_profile=1, basic_auth_password=PASSWORD, allow_basic_auth_over_ws=True)
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_for("BootNotification")
        await csms.wait_connected(STATION)

        async def answer(slot: int, data: dict[str, Any]) -> tuple[str, str]:
            got = await csms.set_network_profile(STATION, slot, data)
            info = got["status_info"] or {}
            return got["status"], str(info.get("additional_info", ""))

        assert (await answer(1, profile(csms.url, security=0)))[0] == "Rejected"  # a downgrade (B09.FR.04)
        assert (await answer(999, profile(csms.url, security=1)))[0] == "Rejected"  # B09.FR.05
        assert (await answer(1, profile(csms.url, security=1, ocpp_transport="SOAP")))[0] == "Rejected"
        status, reason = await answer(
            1,
            profile(
                csms.url, security=1, vpn={"server": "v", "user": "u", "key": "k", "password": "p", "type": "IPSec"}
            ),
        )
        assert status == "Rejected" and "VPN" in reason
        status, reason = await answer(1, profile(csms.url, security=1, apn={"apn": "x", "apn_authentication": "AUTO"}))
        assert status == "Rejected" and "APN" in reason
        assert (await answer(1, profile(csms.url, security=3)))[0] == "Rejected"  # ws:// for profile 3
        assert (await answer(1, profile("http://127.0.0.1/ocpp", security=1)))[0] == "Rejected"
        assert await set_var(csms, "NetworkConfigurationPriority", "2,0") == "Rejected"  # B10.FR.02: slot 2 empty
        assert await set_var(csms, "NetworkConfigurationPriority", "0,7") == "Rejected"  # not in the valuesList
        assert station.store.setting("network.slot.1") is None
        assert await read(csms, "NetworkConfigurationPriority") == "0"
        # TC_A_20_CS / TC_A_21_CS (A05.FR.02/03): a profile the station lacks a CSMS root or a client certificate
        # for is stored, and the priority that would use it is Rejected.
        wss = csms.url.replace("ws://", "wss://")
        assert (await answer(1, profile(wss, security=2)))[0] == "Accepted"
        assert await set_var(csms, "NetworkConfigurationPriority", "1,0") == "Rejected"  # no CSMS root installed
        assert (await answer(1, profile(wss, security=3)))[0] == "Accepted"
        assert await set_var(csms, "NetworkConfigurationPriority", "1,0") == "Rejected"  # no client certificate
        assert await read(csms, "NetworkConfigurationPriority") == "0"
        # The same security profile is no downgrade.
        assert (await answer(2, profile(csms.url, security=1)))[0] == "Accepted"
        assert await set_var(csms, "NetworkConfigurationPriority", "2,0") == "Accepted"


async def test_16_security_profile_raise_that_cannot_connect_falls_back(
    tmp_path: Path, servers: list[LocalCsms]
) -> None:
    """1.6 security whitepaper A05.FR.05-07 (the raise Accepted, the station reconnects with it) and A05.FR.08 with
    A05's error handling: the CSMS does not trust the station's client certificate, so profile 3 cannot connect;
    after NetworkProfileConnectionAttempts attempts the station falls back to profile 2, the last that worked, and
    SecurityProfile reads 2 again."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = CertificateAuthority(pki, "csms-ca")
    other = CertificateAuthority(pki, "station-ca")
    untrusted_by_csms = CertificateAuthority(pki, "csms-trusts-this-one")
    server = ca.issue("csms", "localhost", hosts=("localhost", "127.0.0.1"))
    client = other.issue("station", STATION, client=True)
    tls = server_context(server, client_ca=untrusted_by_csms.path)
    tls.verify_mode = ssl.CERT_OPTIONAL  # no certificate is fine (profile 2); one it does not trust is refused
    csms = await serve(servers, tls=tls, passwords={STATION: PASSWORD})
    cfg = config(
        tmp_path,
        csms.url,
        "1.6",
        security_profile=2,
        basic_auth_password=PASSWORD,
        ca_file=str(ca.path),
        client_cert=str(client.cert),
        client_key=str(client.key),
    )
    async with running_station(parse_config(cfg)) as station:
        await csms.wait_for("BootNotification")
        await csms.wait_connected(STATION)
        connections = csms.connections
        csms.passwords = None
        assert await csms.change_configuration(STATION, "SecurityProfile", "3") == "Accepted"
        await csms.wait_until(lambda: csms.connections > connections, timeout=60)
        await csms.wait_until(lambda: station.connection.state.connected, timeout=30)
        assert station.connection.state.failures == 0
        assert station.connection.security.profile == 2
        assert (await csms.get_configuration(STATION, ["SecurityProfile"]))["SecurityProfile"] == "2"
        assert station.connection.network.current().security_profile == 2
        assert len(csms.messages("BootNotification")) == 1
        await csms.wait_for(
            "SecurityEventNotification", lambda p: "2 (connected)" in str(p.get("techInfo")), timeout=30
        )


async def test_connecting_with_a_higher_security_profile_raises_it_and_removes_the_lower_slots(
    tmp_path: Path, servers: list[LocalCsms]
) -> None:
    """A05 (2.0.1) through B09/B10: a profile with securityProfile 1 in slot 1, first in NetworkConfigurationPriority,
    Reset; once it connects SecurityProfile is 1 and slot 0 (profile 0) is removed from the slots and the priority
    (A05.FR.06); a profile 0 is then a downgrade (B09.FR.04)."""
    old = await serve(servers)
    new = await serve(servers, passwords={STATION: PASSWORD})
    cfg = parse_config(
        config(tmp_path, old.url, basic_auth_password=PASSWORD, allow_basic_auth_over_ws=True, security_profile=0)
    )
    async with running_station(cfg) as station:
        await old.wait_connected(STATION)
        assert (await old.set_network_profile(STATION, 1, profile(new.url, security=1)))["status"] == "Accepted"
        assert await set_var(old, "NetworkConfigurationPriority", "1,0") == "Accepted"
        assert await old.reset(STATION, "Immediate") == "Accepted"
        await old.wait_until(station.runtime.reset_requested.is_set, timeout=10)
    async with running_station(cfg) as station:
        await new.wait_for("BootNotification")
        await new.wait_connected(STATION)
        [got] = await new.get_variables(
            STATION, [{"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}}]
        )
        assert got["attribute_value"] == "1"
        assert await read(new, "NetworkConfigurationPriority") == "1"
        assert station.connection.network.slot(0) is None
        assert (await new.set_network_profile(STATION, 2, profile(old.url, security=0)))["status"] == "Rejected"
        assert await set_var(new, "NetworkConfigurationPriority", "1,0") == "Rejected"  # slot 0 is empty now


def test_dial_order_attempts_per_entry_then_the_last_working_profile(tmp_path: Path) -> None:
    """B10.FR.03 (NetworkProfileConnectionAttempts per entry of NetworkConfigurationPriority), B10.FR.07 (then the
    profile of the last successful connection), and reconnects to the profile that worked first."""
    from station.core.model import Layout
    from station.ocpp.network import LAST_WORKING_KEY, NetworkProfile, NetworkProfiles
    from station.ocpp.security import Security
    from station.ocpp.settings import Settings
    from station.store import Store

    cfg = parse_config(config(tmp_path, "ws://127.0.0.1:1/ocpp"))
    store = Store(cfg.storage.path)
    settings = Settings(store, Layout(((1, (1,)),)), lambda _: "")
    security = Security(cfg.csms, STATION, settings, store)
    network = NetworkProfiles(cfg, settings, store, security)
    assert network.set_profile(1, profile("ws://127.0.0.1:2/ocpp")).status == "Accepted"
    assert network.set_profile(2, profile("ws://127.0.0.1:3/ocpp")).status == "Accepted"
    working = NetworkProfile(0, "ws://127.0.0.1:9/ocpp", 0, 30)  # slot 0 as it was when it last worked
    store.set_setting(LAST_WORKING_KEY, working.to_json())
    assert settings.set_variable("OCPPCommCtrlr", "NetworkConfigurationPriority", "2,1") == "Accepted"
    assert settings.set_variable("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", "2") == "Accepted"
    dialled = []
    for _ in range(8):
        dialled.append(network.current().url.split(":")[2][0])
        network.failed()
    assert dialled == ["3", "3", "2", "2", "9", "9", "3", "3"]
    works = network.current()
    assert works.slot == 1
    network.connected(works)  # slot 1 connects
    assert network.last_working() == works and network.active == 1
    network.failed()
    assert network.current() == works  # after one failure: the profile that worked again
    network.failed()
    assert network.current().slot == 2  # after NetworkProfileConnectionAttempts: the cycle over from its first entry
    store.close()
