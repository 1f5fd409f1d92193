"""Certificates (M03-M05), the client certificate's renewal (A02/A03: SignCertificate, CertificateSigned) and
network profiles (B09): station/ocpp/security.py, client_certificate.py and network.py hold the rules.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from station.ocpp.network import NetworkProfiles
from station.ocpp.security import (  # ---- certificates
    CertificateAnswer,
    certificate_signed,
    delete_certificate,
    install_certificate,
    installed_certificates,
)
from station.ocpp.v201.base import V201Base


class SecurityRequests(V201Base):
    # ---- certificates (M03 GetInstalledCertificateIds, M04 DeleteCertificate, M05 InstallCertificate; the rules are
    # version-neutral in station/ocpp/security.py)

    @on(Action.install_certificate)
    def on_install_certificate(
        self, certificate_type: str, certificate: str, **_: Any
    ) -> call_result.InstallCertificate:
        """M05: Accepted / Rejected (invalid: M05.FR.07, full: M05.FR.06) / Failed (M05.FR.03), with the reason."""
        if self.security is None:
            return call_result.InstallCertificate(status="Failed")
        answer = install_certificate(self.security, certificate_type, certificate)
        return call_result.InstallCertificate(status=answer.status, status_info=_certificate_info(answer))

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(
        self, certificate_type: list[str] | None = None, **_: Any
    ) -> call_result.GetInstalledCertificateIds:
        """M03: every installed certificate of the types asked (all without a filter); NotFound (M03.FR.02) when
        none. V2GCertificateChain (M03.FR.05) is the station's own ISO 15118 chain, which it does not have."""
        found = installed_certificates(self.security, certificate_type) if self.security else []
        if not found:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        chains = [{"certificate_type": use, "certificate_hash_data": data} for use, data in found]
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data_chain=chains)

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> call_result.DeleteCertificate:
        """M04: Accepted / NotFound (M04.FR.04) / Failed (M04.FR.03, M04.FR.06)."""
        if self.security is None:
            return call_result.DeleteCertificate(status="Failed")
        answer = delete_certificate(self.security, certificate_hash_data)
        return call_result.DeleteCertificate(status=answer.status, status_info=_certificate_info(answer))

    # ---- end certificates

    # ---- client certificate (A02/A03: SignCertificate, CertificateSigned; the rules in station/ocpp/security.py
    # and client_certificate.py)

    async def sign_certificate(self, csr: str) -> bool:
        """SignCertificateRequest for the ChargingStationCertificate (A02.FR.03/13); True when Accepted (A02.FR.11)."""
        result = await self.call(
            call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate"), suppress=False
        )
        return str(result.status) == "Accepted"

    @on(Action.certificate_signed)
    def on_certificate_signed(
        self, certificate_chain: str, certificate_type: str | None = None, **_: Any
    ) -> call_result.CertificateSigned:
        """A02.FR.06-08: Accepted for a chain for this station's pending key that chains to a CSMS root, used from
        the next connection; Rejected with the reason and InvalidChargingStationCertificate (A02.FR.07) otherwise."""
        if self.security is None:
            return call_result.CertificateSigned(status="Rejected")
        answer = certificate_signed(self.security, certificate_chain, certificate_type)
        return call_result.CertificateSigned(status=answer.status, status_info=_certificate_info(answer))

    # ---- end client certificate

    # ---- network profiles (B09 Setting a new NetworkConnectionProfile): station/ocpp/network.py does the work

    network: NetworkProfiles | None = None  # set by the connection

    @on(Action.set_network_profile)
    def on_set_network_profile(
        self, configuration_slot: int, connection_data: dict[str, Any], **_: Any
    ) -> call_result.SetNetworkProfile:
        """B09.FR.01-05: validated in full, stored, Accepted; Rejected with the reason (a slot outside the valuesList
        of NetworkConfigurationPriority, a lower security profile, what the station cannot do); Failed when the
        store cannot take it. Used from the next connection attempt that reaches its slot (B10)."""
        if self.network is None:
            return call_result.SetNetworkProfile(status="Failed")
        answer = self.network.set_profile(configuration_slot, connection_data)
        info = {"reason_code": answer.reason_code, "additional_info": answer.reason[:512]} if answer.reason else None
        return call_result.SetNetworkProfile(status=answer.status, status_info=info)


def _certificate_info(answer: CertificateAnswer) -> dict[str, str] | None:
    if not answer.reason:
        return None
    return {"reason_code": answer.reason[:20], "additional_info": answer.detail[:512]}
