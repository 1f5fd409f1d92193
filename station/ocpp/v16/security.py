"""The security extension's certificates (whitepaper M03-M05) and client certificate renewal (A02/A03:
SignCertificate, CertificateSigned): the rules are station/ocpp/security.py's and client_certificate.py's.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    Action,
)

from station.ocpp.certificates import USE_16  # ---- certificates
from station.ocpp.security import (  # ---- certificates
    certificate_signed,
    delete_certificate,
    install_certificate,
    installed_certificates,
)
from station.ocpp.v16.base import (
    V16Base,
)


class SecurityRequests(V16Base):
    # ---- certificates (1.6 security whitepaper ed. 3: M03 GetInstalledCertificateIds, M04 DeleteCertificate, M05
    # InstallCertificate; the rules are version-neutral in station/ocpp/security.py)

    @on(Action.install_certificate)
    def on_install_certificate(
        self, certificate_type: str, certificate: str, **_: Any
    ) -> call_result.InstallCertificate:
        """CentralSystemRootCertificate is the store's CSMS root. Accepted / Rejected (invalid, full) / Failed."""
        if self.security is None:
            return call_result.InstallCertificate(status="Failed")
        use = USE_16[certificate_type]
        return call_result.InstallCertificate(status=install_certificate(self.security, use, certificate).status)

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(
        self, certificate_type: str, **_: Any
    ) -> call_result.GetInstalledCertificateIds:
        """M03: the hash data (SHA256) of each certificate of the type; NotFound when there is none."""
        found = installed_certificates(self.security, [USE_16[certificate_type]]) if self.security else []
        if not found:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data=[d for _, d in found])

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> call_result.DeleteCertificate:
        if self.security is None:
            return call_result.DeleteCertificate(status="Failed")
        return call_result.DeleteCertificate(status=delete_certificate(self.security, certificate_hash_data).status)

    # ---- end certificates

    # ---- client certificate (1.6 security whitepaper ed. 3 A02/A03: ExtendedTriggerMessage SignChargePointCertificate,
    # SignCertificate, CertificateSigned; the rules in station/ocpp/security.py and client_certificate.py)

    async def sign_certificate(self, csr: str) -> bool:
        """SignCertificate.req (whitepaper 5.17): True when the Central System accepted it (A02.FR.11)."""
        result = await self.call(call.SignCertificate(csr=csr), suppress=False)
        return str(result.status) == "Accepted"

    @on(Action.certificate_signed)
    def on_certificate_signed(self, certificate_chain: str, **_: Any) -> call_result.CertificateSigned:
        """A02.FR.06/07: Accepted for a chain for this station's pending key that chains to a CentralSystemRoot;
        Rejected (and InvalidChargePointCertificate) otherwise."""
        if self.security is None:
            return call_result.CertificateSigned(status="Rejected")
        return call_result.CertificateSigned(status=certificate_signed(self.security, certificate_chain).status)
