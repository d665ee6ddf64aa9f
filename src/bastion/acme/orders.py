"""ACME orders (RFC 8555 §7.4): new orders with their authorizations, reading, and
finalization (§7.4: the CSR checked, then issued by the internal CA synchronously, so an
order is ``valid`` in its answer)."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import Response

from bastion.acme import jws as J
from bastion.acme.ari import cert_id
from bastion.acme.base import AcmeBase, Ctx, rfc3339
from bastion.acme.errors import (
    AcmeProblem,
    BadCSR,
    Malformed,
    NotFound,
    OrderNotReady,
    RejectedIdentifier,
    ServerInternal,
)
from bastion.acme.identifiers import csr_names, parse_identifiers
from bastion.acme.policy import FINALIZE, NEW_ORDER, account_arn
from bastion.acme.store import Authz, Order, new_id, now
from bastion.pki import PkiError


class OrderResources(AcmeBase):
    """Orders and their finalization (§7.4)."""

    def _order_json(self, o: Order, at: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": o.current_status(at), "expires": rfc3339(o.expires_at),
            "identifiers": o.identifiers,
            "authorizations": [f"{self.base}/authz/{z}" for z in o.authorizations],
            "finalize": f"{self.base}/order/{o.id}/finalize"}
        if o.error:
            out["error"] = o.error
        if o.certificate and o.status == "valid":
            out["certificate"] = f"{self.base}/cert/{o.certificate}"
        if o.replaces:
            out["replaces"] = o.replaces
        return out

    async def new_order(self, request: Request) -> Response:
        ctx = await self._post(request)
        a = ctx.acct
        payload = ctx.token.json()
        if not isinstance(payload, dict):
            raise Malformed("the newOrder payload must be an object")
        if payload.get("notBefore") is not None or payload.get("notAfter") is not None:
            raise Malformed("notBefore and notAfter are not supported")
        identifiers = parse_identifiers(payload.get("identifiers"))
        names = [i["value"] for i in identifiers]
        denied = self.policy.denied(a.id, a.policy, NEW_ORDER, names)
        if denied:
            problem = RejectedIdentifier(
                f"this account may not order {', '.join(denied[:5])}", subproblems=[
                    {"type": "urn:ietf:params:acme:error:rejectedIdentifier",
                     "detail": "not allowed by the account's policy",
                     "identifier": next(i for i in identifiers if i["value"] == n)}
                    for n in denied[:20]])
            await self._refused("CreateAcmeOrder", problem, a,
                                request_parameters={"identifiers": names[:20]})
            raise problem
        replaces = payload.get("replaces")
        if replaces is not None:  # RFC 9773 §5
            row = await self.store.certificate_by_cert_id(replaces) \
                if isinstance(replaces, str) and len(replaces) < 255 else None
            if row is None or row[1] != a.id:
                raise Malformed("replaces does not name a certificate of this account")
        at = now()
        expires = at + self.settings.acme_order_ttl
        order = Order(new_id(), a.id, "pending", expires, identifiers, [], replaces=replaces)
        authzs = []
        for ident in identifiers:
            value, wildcard = ident["value"], ident["value"].startswith("*.")
            if wildcard:
                kinds = ["dns-01"]  # §7.1.3: wildcards only through dns-01
                value = value[2:]
            elif ident["type"] == "ip":
                kinds = ["http-01", "tls-alpn-01"]  # RFC 8738 §7
            else:
                kinds = ["http-01", "dns-01", "tls-alpn-01"]
            z = Authz(new_id(), a.id, order.id, "pending", expires,
                      {"type": ident["type"], "value": value}, secrets.token_urlsafe(32),
                      [{"type": k, "status": "pending"} for k in kinds], wildcard)
            authzs.append(z)
            order.authorizations.append(z.id)
        async with self.store.fast.transaction() as tx:
            await self.store.insert_order(tx, order, authzs)
            await self.audit.record_in(tx, "CreateAcmeOrder", user_identity=self._identity(a),
                                       request_parameters={"identifiers": names[:20]},
                                       response_elements={"orderId": order.id})
        return await self._json(self._order_json(order, at), 201,
                                location=f"{self.base}/order/{order.id}")

    async def _own_order(self, ctx: Ctx, order_id: str) -> Order:
        order = await self.store.order(order_id) if len(order_id) <= 32 else None
        if order is None or order.account_id != ctx.acct.id:
            raise NotFound("no such order")
        return order

    async def order(self, request: Request) -> Response:
        ctx = await self._post(request)
        order = await self._own_order(ctx, request.path_params["id"])
        if order.status == "pending" and await self._settled(order.authorizations):
            order = await self._own_order(ctx, order.id)  # its validations have settled
        return await self._json(self._order_json(order, now()))

    async def finalize(self, request: Request) -> Response:
        ctx = await self._post(request)
        a = ctx.acct
        order = await self._own_order(ctx, request.path_params["id"])
        at = now()
        status = order.current_status(at)
        if status != "ready":  # §7.4: orderNotReady, 403
            raise OrderNotReady(f"the order is {status}, not ready")
        payload = ctx.token.json()
        csr_b64 = payload.get("csr") if isinstance(payload, dict) else None
        try:
            csr = x509.load_der_x509_csr(J.b64decode(csr_b64, "csr"))
            signed = csr.is_signature_valid
            asked = csr_names(csr)  # extensions parse lazily: a bad one raises here
            spki = csr.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat
                                                 .SubjectPublicKeyInfo)
        except (ValueError, Malformed, TypeError, UnsupportedAlgorithm):
            problem: AcmeProblem = BadCSR("the CSR is not a DER PKCS#10 request")
            await self._refused("FinalizeAcmeOrder", problem, a,
                                request_parameters={"orderId": order.id})
            raise problem from None
        wanted = {(i["type"], i["value"]) for i in order.identifiers}
        names = sorted(v for _, v in wanted)
        fault = ("the CSR's signature is invalid" if not signed
                 else "the CSR must name exactly the order's identifiers" if asked != wanted
                 # §11.1: the account key certifies requests, never a TLS server
                 else "the CSR's key is the account key" if spki == ctx.key.as_der(
                     private=False) else None)
        if fault is not None:
            problem = BadCSR(fault)
            await self._refused("FinalizeAcmeOrder", problem, a,
                                request_parameters={"orderId": order.id,
                                                    "names": sorted(v for _, v in asked)[:20]})
            raise problem
        denied = self.policy.denied(a.id, a.policy, FINALIZE, names)
        if denied:
            problem = RejectedIdentifier(f"this account may not finalize {denied[0]}")
            await self._refused("FinalizeAcmeOrder", problem, a,
                                request_parameters={"orderId": order.id})
            raise problem
        order.status = "processing"
        async with self.store.fast.transaction() as tx:
            if not await self.store.save_order(tx, order, expect="ready"):
                raise OrderNotReady("the order is being finalized")
        try:
            issued = await self._ca().issue_for_csr(
                csr, profile="server", ttl=self.settings.acme_certificate_ttl,
                requester=account_arn(a.id), allowed=names)
        except PkiError as exc:  # the CA's refusal: the order fails with it
            if exc.code == "unavailable":
                await self._unprocess(order)
                raise ServerInternal("the CA is unavailable") from None
            problem = (RejectedIdentifier if exc.code == "rejectedIdentifier" else BadCSR)(
                f"the CA refused the CSR: {str(exc)[:200]}")
            order.status, order.error = "invalid", problem.document()
            async with self.store.fast.transaction() as tx:
                await self.store.save_order(tx, order)
                await self.audit.record_in(tx, "FinalizeAcmeOrder",
                                           user_identity=self._identity(a),
                                           error_code=problem.type,
                                           error_message=problem.detail,
                                           request_parameters={"orderId": order.id})
            raise problem from None
        except BaseException:
            await self._unprocess(order)
            raise
        cert: x509.Certificate = issued.certificate
        serial = format(cert.serial_number, "x")
        chain_pem = issued.pem_chain()
        order.status, order.certificate = "valid", serial
        async with self.store.fast.transaction() as tx:
            await self.store.insert_certificate(
                tx, serial, a.id, order.id, cert_id(cert), chain_pem,
                int(cert.not_valid_before_utc.timestamp()),
                int(cert.not_valid_after_utc.timestamp()))
            await self.store.save_order(tx, order)
            await self.audit.record_in(tx, "FinalizeAcmeOrder",
                                       user_identity=self._identity(a),
                                       request_parameters={"orderId": order.id,
                                                           "names": names[:20]},
                                       response_elements={"serialNumber": serial})
        return await self._json(self._order_json(order, at),
                                location=f"{self.base}/order/{order.id}")

    async def _unprocess(self, order: Order) -> None:
        """An issuance that failed for no fault of the request: the order is ready again, so
        that the client may finalize once more."""
        order.status = "ready"
        async with self.store.fast.transaction() as tx:
            await self.store.save_order(tx, order, expect="processing")
