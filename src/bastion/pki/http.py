"""The CA over HTTP (docs/pki.md).

Public, as a CA publishes them (RFC 5280 §4.2.1.13, RFC 6960 Appendix A):
``GET /pki/ca.crt`` (the trust bundle, PEM), ``GET /pki/chain`` (the current
intermediate), ``GET /pki/ca/{id}.crt`` (one authority, DER: the AIA caIssuers URL),
``GET /pki/crl`` and ``GET /pki/crl/{id}`` (DER CRLs), ``POST /pki/ocsp`` and
``GET /pki/ocsp/{base64}``.

Protected by a bearer token and IAM (actions ``bastion:IssueCertificate``,
``bastion:RevokeCertificate``, ``bastion:GetCertificate`` on
``arn:bastion:pki::<account>:certificate/<serial>``): ``POST /pki/certificates`` (a CSR;
the CA never hands out private keys over the network), ``GET /pki/certificates/{serial}``,
``POST /pki/certificates/{serial}/revoke``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.edge.http import BodyError, read_body
from bastion.pki.ca import normalise_serial
from bastion.pki.errors import PkiError

if TYPE_CHECKING:
    from bastion.edge.authz import Guard
    from bastion.pki.ca import CertificateAuthority

log = logging.getLogger("bastion.pki")
CERT_ARN = "arn:bastion:pki::{account}:certificate/*"
ACTION_ISSUE = "bastion:IssueCertificate"
MAX_OCSP_REQUEST = 8192
MAX_API_BODY = 65536
_STATUS = {"badCSR": 400, "rejectedIdentifier": 403, "notFound": 404, "alreadyRevoked": 409,
           "invalidRequest": 400, "unavailable": 503}
_CACHE = {"Cache-Control": "public, max-age=300"}


def _problem(code: str, message: str, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": message},
                        status_code=status or _STATUS.get(code, 400),
                        headers={"Cache-Control": "no-store"})


def _requester(request: Request) -> str:
    principal = request.scope.get("state", {}).get("principal")
    return str(getattr(principal, "arn", None) or "unknown")


def _canonical_serial(request: Request) -> str:
    """The path's serial, only in the form the IAM resource ARN was built from and policies
    name (lower-case hex, no leading zeros): "ABC", "0abc" or "ab:c" would be another ARN
    for the same certificate, outside a Deny on ``certificate/abc``."""
    serial = str(request.path_params["serial"])
    if normalise_serial(serial) != serial:
        raise PkiError("invalidRequest", "the serial number must be lower-case hexadecimal "
                       "without leading zeros or colons")
    return serial


class PkiHttp:
    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    def routes(self, guard: Guard) -> list[BaseRoute]:
        def protected(path: str, fn: Any, method: str, action: str) -> Route:
            arn = CERT_ARN.replace("*", "{serial}") if "{serial}" in path else CERT_ARN
            return Route(path, self._safe(fn), methods=[method],
                         middleware=guard(action, arn))

        return [
            Route("/pki/ca.crt", self._safe(self.trust_bundle), methods=["GET"]),
            Route("/pki/chain", self._safe(self.chain), methods=["GET"]),
            Route("/pki/ca/{ca_id}.crt", self._safe(self.authority), methods=["GET"]),
            Route("/pki/crl", self._safe(self.crl), methods=["GET"]),
            Route("/pki/crl/{ca_id}", self._safe(self.crl), methods=["GET"]),
            Route("/pki/ocsp", self._safe(self.ocsp_post), methods=["POST"]),
            Route("/pki/ocsp/{request:path}", self._safe(self.ocsp_get), methods=["GET"]),
            protected("/pki/certificates", self.issue, "POST", ACTION_ISSUE),
            protected("/pki/certificates/{serial}", self.get, "GET",
                      "bastion:GetCertificate"),
            protected("/pki/certificates/{serial}/revoke", self.revoke, "POST",
                      "bastion:RevokeCertificate"),
        ]

    def _safe(self, fn: Any) -> Any:
        async def handle(request: Request) -> Response:
            try:
                return await fn(request)  # type: ignore[no-any-return]
            except PkiError as exc:
                return _problem(exc.code, str(exc))
            except BodyError as exc:
                return _problem("invalidRequest", str(exc), exc.status)
        return handle

    # --- publication ----------------------------------------------------------------------
    async def trust_bundle(self, request: Request) -> Response:
        return Response(await self.ca.trust_bundle_pem(), 200, _CACHE,
                        "application/x-pem-file")

    async def chain(self, request: Request) -> Response:
        return Response(await self.ca.chain_pem(), 200, _CACHE, "application/x-pem-file")

    async def authority(self, request: Request) -> Response:
        cert = await self.ca.authority(request.path_params["ca_id"])
        if cert is None:
            return _problem("notFound", "no such certificate authority")
        return Response(cert.public_bytes(serialization.Encoding.DER), 200, _CACHE,
                        "application/pkix-cert")

    async def crl(self, request: Request) -> Response:
        der = await self.ca.crl_der(request.path_params.get("ca_id"))
        return Response(der, 200, {"Cache-Control": "public, max-age=60"},
                        "application/pkix-crl")

    async def ocsp_post(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != \
                "application/ocsp-request":
            return _problem("invalidRequest", "Content-Type must be application/ocsp-request",
                            415)
        body = await read_body(request, MAX_OCSP_REQUEST)
        return await self._ocsp(body)

    async def ocsp_get(self, request: Request) -> Response:
        text = unquote(request.path_params["request"])
        if len(text) > MAX_OCSP_REQUEST * 2:
            return _problem("invalidRequest", "the OCSP request is too long", 414)
        try:
            der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            der = b""  # answered as malformedRequest, as any undecodable request
        return await self._ocsp(der)

    async def _ocsp(self, der: bytes) -> Response:
        return Response(await self.ca.ocsp_response(der), 200,
                        {"Cache-Control": "no-cache"}, "application/ocsp-response")

    # --- the certificate API ------------------------------------------------------------
    async def _json(self, request: Request) -> dict[str, Any]:
        body = await read_body(request, MAX_API_BODY)
        try:
            value = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise PkiError("invalidRequest", "the body is not JSON") from None
        if not isinstance(value, dict):
            raise PkiError("invalidRequest", "the body must be a JSON object")
        return value

    async def issue(self, request: Request) -> Response:
        body = await self._json(request)
        csr_pem = body.get("csr")
        if not isinstance(csr_pem, str) or len(csr_pem) > MAX_API_BODY:
            raise PkiError("invalidRequest", "csr (a PEM certificate signing request) is "
                           "required")
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError:
            raise PkiError("badCSR", "csr is not a PEM certificate signing request") from None
        profile = body.get("profile", "server")
        ttl = body.get("ttl")
        if not isinstance(profile, str) or (ttl is not None and (
                not isinstance(ttl, int) or isinstance(ttl, bool))):
            raise PkiError("invalidRequest", "profile is a string and ttl an integer")
        names = await self._authorize_names(request, csr, profile)
        issued = await self.ca.issue_for_csr(csr, profile=profile, ttl=ttl,
                                             requester=_requester(request), allowed=names)
        return JSONResponse({"serial": issued.serial, "certificate": issued.pem(),
                             "chain": issued.pem_chain(),
                             "notAfter": int(issued.certificate.not_valid_after_utc
                                             .timestamp())}, status_code=201)

    async def _authorize_names(self, request: Request, csr: x509.CertificateSigningRequest,
                               profile: str) -> list[str]:
        """Every name the CSR asks for must be allowed to the caller on its own ARN,
        ``arn:bastion:pki::<account>:name/<name>`` (a DNS name, an IP, a SPIFFE ID), for
        ``bastion:IssueCertificate``: the route's ``certificate/*`` only lets it use the API,
        it does not let one workload take another's identity. Refusals are audited."""
        from bastion.audit.context import current_request
        from bastion.edge.authz import user_identity
        from bastion.edge.tls import mtls_spiffe_id
        from bastion.pki import build

        dns, ips, spiffe = build.csr_names(csr)
        values = build.names(dns, ips, spiffe, profile=profile,
                             trust_domain=self.ca.trust_domain).values()
        state = request.scope.get("state", {})
        subject = state.get("subject")
        if subject is None:  # pragma: no cover - the route's guard always runs first
            raise PkiError("unavailable", "the caller is not authenticated")
        iam, req = self.ca.p.iam, current_request.get()
        extra = {"bastion:MtlsSpiffeId": sid} if (sid := mtls_spiffe_id(request.scope)) \
            else None
        for value in values:
            arn = f"arn:bastion:pki::{iam.account}:name/{value}"
            principal, decision = await iam.decide(
                subject, ACTION_ISSUE, arn, source_ip=req.source_ip if req else None,
                secure=req.secure if req else True, extra=extra)
            if not decision.allowed:
                await self.ca.p.audit.emit(
                    "AccessDenied", user_identity=user_identity(subject, principal),
                    request_parameters={"action": ACTION_ISSUE}, resources=[{"ARN": arn}],
                    error_code="AccessDenied", error_message=decision.reason[:300],
                    additional={"decision": decision.to_dict()})
                raise PkiError("rejectedIdentifier", f"not authorized to perform "
                               f"{ACTION_ISSUE} on {arn[:300]}")
        return list(values)

    async def get(self, request: Request) -> Response:
        row = await self.ca.get(_canonical_serial(request))
        return JSONResponse({**row.as_dict(), "certificate": row.certificate})

    async def revoke(self, request: Request) -> Response:
        body = await self._json(request)
        reason = body.get("reason", "unspecified")
        if not isinstance(reason, str):
            raise PkiError("invalidRequest", "reason is an RFC 5280 reason name")
        await self.ca.revoke(_canonical_serial(request), reason, _requester(request))
        return Response(status_code=204)
