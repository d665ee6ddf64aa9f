"""ACME certificates (RFC 8555 §7.4.2 download, §7.6 revocation) and renewal information
(RFC 9773)."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import Response

from bastion.acme import jws as J
from bastion.acme.ari import suggested_window
from bastion.acme.base import AcmeBase, rfc3339
from bastion.acme.errors import (
    AcmeProblem,
    AlreadyRevoked,
    BadRevocationReason,
    Malformed,
    NotFound,
    ServerInternal,
    Unauthorized,
)
from bastion.acme.policy import account_arn
from bastion.acme.store import now
from bastion.pki import PkiError

PEM_CHAIN_TYPE = "application/pem-certificate-chain"
# RFC 5280 §5.3.1 codes a subscriber may give (not cACompromise 2, certificateHold 6,
# removeFromCRL 8, aACompromise 10), by the names the CA takes
REVOCATION_REASONS = {0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged",
                      4: "superseded", 5: "cessationOfOperation", 9: "privilegeWithdrawn"}
RETRY_AFTER_ARI = "21600"


class CertificateResources(AcmeBase):
    """Certificates, revocation and renewal information (§7.4.2, §7.6; RFC 9773)."""

    async def certificate(self, request: Request) -> Response:
        ctx = await self._post(request)
        serial = request.path_params["serial"]
        row = await self.store.certificate(serial) if len(serial) <= 64 else None
        if row is None or row[1] != ctx.acct.id:
            raise NotFound("no such certificate")
        return Response(row[4].encode(), 200, {
            "Replay-Nonce": await self._nonce(), "Cache-Control": "no-store",
            "Link": f'<{self.base}/directory>;rel="index"'}, PEM_CHAIN_TYPE)

    async def revoke(self, request: Request) -> Response:
        ctx = await self._post(request, jwk=True)
        payload = ctx.token.json()
        if not isinstance(payload, dict):
            raise Malformed("the revokeCert payload must be an object")
        reason = payload.get("reason", 0)
        if not isinstance(reason, int) or isinstance(reason, bool) or \
                reason not in REVOCATION_REASONS:
            raise BadRevocationReason("reason must be one of 0, 1, 3, 4, 5, 9")  # §7.6
        try:
            cert = x509.load_der_x509_certificate(J.b64decode(payload.get("certificate"),
                                                              "certificate"))
        except ValueError:
            raise Malformed("certificate is not a DER certificate") from None
        serial = format(cert.serial_number, "x")
        row = await self.store.certificate(serial)
        if row is None or row[4].split("-----END CERTIFICATE-----")[0] + \
                "-----END CERTIFICATE-----\n" != cert.public_bytes(
                    serialization.Encoding.PEM).decode():
            raise NotFound("no such certificate")  # not issued here
        if ctx.account is not None:  # §7.6: the account that holds it
            if row[1] != ctx.account.id:
                problem: AcmeProblem = Unauthorized("this account did not order the "
                                                    "certificate")
                await self._refused("RevokeAcmeCertificate", problem, ctx.account,
                                    request_parameters={"serialNumber": serial})
                raise problem
        else:  # §7.6: signed by the certificate's key
            spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat
                                                  .SubjectPublicKeyInfo)
            signer = ctx.key.as_der(private=False)
            if spki != signer:
                raise Unauthorized("the JWS is not signed by the certificate's key")
        if row[7] is not None:
            raise AlreadyRevoked("the certificate is already revoked")
        requester = account_arn(ctx.account.id) if ctx.account else "acme:certificate-key"
        try:
            await self._ca().revoke(cert.serial_number, REVOCATION_REASONS[reason], requester)
        except PkiError as exc:
            if exc.code == "alreadyRevoked":
                raise AlreadyRevoked("the certificate is already revoked") from None
            raise ServerInternal("the CA could not revoke the certificate",
                                 debug=str(exc)) from None
        async with self.store.fast.transaction() as tx:
            if not await self.store.mark_revoked(tx, serial):
                raise AlreadyRevoked("the certificate is already revoked")
            await self.audit.record_in(tx, "RevokeAcmeCertificate",
                                       user_identity=self._identity(ctx.account),
                                       request_parameters={"serialNumber": serial,
                                                           "reason": reason})
        return Response(b"", 200, {"Replay-Nonce": await self._nonce(),
                                   "Link": f'<{self.base}/directory>;rel="index"'})

    async def renewal_info(self, request: Request) -> Response:
        cid = request.path_params["cert_id"]
        row = await self.store.certificate_by_cert_id(cid) if len(cid) < 255 else None
        if row is None:
            raise NotFound("no certificate has this identifier")
        start, end = suggested_window(row[5], row[6], revoked=row[7] is not None,
                                      now=now())
        body = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
        return Response(json.dumps(body).encode(), 200, {"Retry-After": RETRY_AFTER_ARI},
                        "application/json")
