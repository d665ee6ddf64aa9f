"""The ACME server (RFC 8555) on the internal CA, at ``/acme/directory``.

Resources (§7.1): the directory, nonces (§7.2), accounts (§7.3, external account binding
§7.3.4, key change §7.3.5), orders (§7.4), authorizations and challenges (§7.5, §8),
finalization and certificate download (§7.4.2), revocation (§7.6), renewal information
(RFC 9773). Every POST is a JWS (``acme/jws.py``) whose nonce is consumed from the KV (one
use, across instances when the KV is Redis) and whose ``url`` must be the URL it was sent
to. Errors are RFC 8555 problem documents (``acme/errors.py``) with a fresh Replay-Nonce.

Validation runs in a task started by the challenge POST and writes its outcome; the order
becomes ``ready`` in the same transaction as its last authorization. Issuance is
synchronous in finalize, so an order is ``valid`` in its answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bastion.acme import jws as J
from bastion.acme.ari import cert_id, suggested_window
from bastion.acme.eab import EAB_AAD
from bastion.acme.errors import (
    PROBLEM_TYPE,
    AccountDoesNotExist,
    AcmeProblem,
    AlreadyRevoked,
    BadCSR,
    BadNonce,
    BadRevocationReason,
    ExternalAccountRequired,
    Malformed,
    MethodNotAllowed,
    NotFound,
    OrderNotReady,
    RejectedIdentifier,
    ServerInternal,
    Unauthorized,
    UnsupportedMediaType,
)
from bastion.acme.identifiers import csr_names, parse_identifiers
from bastion.acme.policy import FINALIZE, NEW_ORDER, IdentifierPolicy, account_arn
from bastion.acme.store import Account, AcmeStore, Authz, Order, new_id, now
from bastion.acme.validate import Validator, parse_resolve
from bastion.audit.trail import AuditUnavailable
from bastion.edge.http import BodyError, media_type, read_body
from bastion.pki import CertificateAuthority, PkiError

log = logging.getLogger("bastion.acme")

NONCE_TTL = 3600.0
NONCE_PREFIX = "acme:nonce:"
JOSE_TYPE = "application/jose+json"
PEM_CHAIN_TYPE = "application/pem-certificate-chain"
# RFC 5280 §5.3.1 codes a subscriber may give (not cACompromise 2, certificateHold 6,
# removeFromCRL 8, aACompromise 10), by the names the CA takes
REVOCATION_REASONS = {0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged",
                      4: "superseded", 5: "cessationOfOperation", 9: "privilegeWithdrawn"}
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}", re.ASCII)
RETRY_AFTER_ARI = "21600"
RETRY_AFTER_POLL = "1"  # validations take a round trip or two; lego waits 5 s without it


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Ctx:
    """An authenticated request: the JWS, its key, and the account (None with ``jwk``)."""

    token: J.Jws
    key: J.PublicKey
    account: Account | None

    @property
    def acct(self) -> Account:
        if self.account is None:
            raise Malformed("this request must be signed with the account's kid")
        return self.account


Handler = Callable[[Request], Awaitable[Response]]


class AcmeServer:
    def __init__(self, provider: Any) -> None:
        s = provider.settings
        self.p = provider
        self.settings = s
        self.store = AcmeStore(provider.fast)
        self.kv = provider.kv
        self.audit = provider.audit
        self.base = provider.issuer_url + "/acme"
        self.policy = IdentifierPolicy(
            [x.strip() for x in s.acme_allowed_identifiers.split(",") if x.strip()])
        self.validator = Validator(parse_resolve(s.acme_resolve), s.acme_http01_port,
                                   s.acme_tls_alpn01_port, s.acme_dns_resolver,
                                   s.acme_validation_timeout)
        self._accounts: dict[str, tuple[float, Account]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        meta: dict[str, Any] = {"externalAccountRequired": s.acme_eab_required,
                                "website": provider.issuer_url}
        if s.acme_terms_of_service:
            meta["termsOfService"] = s.acme_terms_of_service
        self._directory = json.dumps({
            "newNonce": self.base + "/new-nonce", "newAccount": self.base + "/new-account",
            "newOrder": self.base + "/new-order", "revokeCert": self.base + "/revoke-cert",
            "keyChange": self.base + "/key-change",
            "renewalInfo": self.base + "/renewal-info", "meta": meta}).encode()

    # --- composition ------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        def e(path: str, fn: Handler, *methods: str) -> Route:
            # every method routes here, so that a wrong one gets a problem document (§6.3)
            return Route(path, self._endpoint(fn, frozenset(methods or ("POST",))),
                         methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])

        return [
            e("/acme/directory", self.directory, "GET", "HEAD"),
            e("/acme/new-nonce", self.new_nonce, "GET", "HEAD"),
            e("/acme/new-account", self.new_account),
            e("/acme/acct/{id}", self.account),
            e("/acme/acct/{id}/orders", self.orders),
            e("/acme/key-change", self.key_change),
            e("/acme/new-order", self.new_order),
            e("/acme/order/{id}", self.order),
            e("/acme/order/{id}/finalize", self.finalize),
            e("/acme/authz/{id}", self.authz),
            e("/acme/chall/{id}/{type}", self.challenge),
            e("/acme/cert/{serial}", self.certificate),
            e("/acme/revoke-cert", self.revoke),
            e("/acme/renewal-info/{cert_id}", self.renewal_info, "GET", "HEAD"),
        ]

    def _endpoint(self, fn: Handler, methods: frozenset[str]) -> Handler:
        async def handle(request: Request) -> Response:
            try:
                if request.method not in methods:
                    raise MethodNotAllowed(
                        "use POST (POST-as-GET to read, RFC 8555 §6.3)" if "POST" in methods
                        else f"use {' or '.join(sorted(methods))}")
                return await fn(request)
            except AcmeProblem as problem:
                return await self._problem(problem)
            except BodyError as exc:
                return await self._problem(Malformed(str(exc)), status=exc.status)
            except AuditUnavailable:
                raise  # the edge answers 503: a decision that cannot be recorded
            except Exception:
                log.exception("ACME %s failed", request.url.path)
                return await self._problem(ServerInternal("internal error"))
        return handle

    async def _problem(self, problem: AcmeProblem, status: int | None = None) -> Response:
        headers = {"Replay-Nonce": await self._nonce(), "Cache-Control": "no-store",
                   "Link": f'<{self.base}/directory>;rel="index"'}
        return Response(json.dumps(problem.document()).encode(),
                        status or problem.status, headers, PROBLEM_TYPE)

    async def _nonce(self) -> str:
        nonce = secrets.token_urlsafe(16)
        await self.kv.set(NONCE_PREFIX + nonce, b"1", NONCE_TTL)
        return nonce

    async def _json(self, value: Any, status: int = 200, *, location: str | None = None,
                    links: tuple[str, ...] = ()) -> Response:
        headers = {"Replay-Nonce": await self._nonce(), "Cache-Control": "no-store"}
        link = [f'<{self.base}/directory>;rel="index"', *links]
        headers["Link"] = ", ".join(link)
        if location is not None:
            headers["Location"] = location
        if isinstance(value, dict) and value.get("status") == "processing":
            headers["Retry-After"] = RETRY_AFTER_POLL  # §7.4, §8.2: when to look again
        return Response(json.dumps(value).encode(), status, headers, "application/json")

    # --- request authentication (§6.2-§6.5) -----------------------------------------------
    async def _post(self, request: Request, *, jwk: bool = False, kid: bool = True) -> Ctx:
        if media_type(request) != JOSE_TYPE:
            raise UnsupportedMediaType(f"send {JOSE_TYPE}")
        token = J.parse(await read_body(request, J.MAX_JWS_BYTES))
        account: Account | None = None
        if token.jwk is not None:
            if not jwk:
                raise Malformed("this request must be signed with the account's kid")
            key = J.import_public_key(token.jwk, token.alg)
        else:
            if not kid:
                raise Malformed("this request must carry the public key as jwk")
            account = await self._account_for_kid(token.kid or "")
            key = J.import_public_key(account.jwk, token.alg)
        try:
            J.verify(token, key)
        except Malformed as exc:
            await self._refused("AcmeAuthenticate", exc, account)
            raise
        url = self.p.issuer_url + request.url.path
        if token.url != url:  # §6.4
            raise Unauthorized("the JWS url is not the URL of this request")
        nonce = token.nonce
        if nonce is None or not _NONCE.fullmatch(nonce) or \
                await self.kv.pop(NONCE_PREFIX + nonce) is None:  # §6.5: one use
            raise BadNonce("the nonce is unknown, used or expired")
        if account is not None and account.status != "valid":
            raise Unauthorized(f"the account is {account.status}")
        return Ctx(token, key, account)

    async def _account_for_kid(self, kid: str) -> Account:
        prefix = self.base + "/acct/"
        if not kid.startswith(prefix):
            raise AccountDoesNotExist("kid is not an account URL of this server")
        account_id = kid[len(prefix):]
        t = time.monotonic()
        hit = self._accounts.get(account_id)
        if hit is not None and hit[0] > t:
            return hit[1]
        account = await self.store.account(account_id) if len(account_id) <= 32 else None
        if account is None:
            raise AccountDoesNotExist("no such account")
        if len(self._accounts) > 10_000:
            self._accounts.clear()
        self._accounts[account_id] = (t + self.settings.client_cache_ttl, account)
        return account

    async def _refused(self, event: str, problem: AcmeProblem,
                       account: Account | None, **fields: Any) -> None:
        await self.audit.emit(event, user_identity=self._identity(account),
                              error_code=problem.type, error_message=problem.detail, **fields)

    @staticmethod
    def _identity(account: Account | None) -> dict[str, Any]:
        if account is None:
            return {"type": "AcmeAccount", "principalId": "anonymous"}
        return {"type": "AcmeAccount", "principalId": account.id,
                "arn": account_arn(account.id)}

    # --- directory and nonces (§7.1.1, §7.2) ------------------------------------------------
    async def directory(self, request: Request) -> Response:
        del request
        return Response(self._directory, 200, {"Cache-Control": "public, max-age=300"},
                        "application/json")

    async def new_nonce(self, request: Request) -> Response:
        return Response(b"", 200 if request.method == "HEAD" else 204, {
            "Replay-Nonce": await self._nonce(), "Cache-Control": "no-store",
            "Link": f'<{self.base}/directory>;rel="index"'})

    # --- accounts (§7.3) --------------------------------------------------------------------
    def _account_url(self, a: Account) -> str:
        return f"{self.base}/acct/{a.id}"

    def _account_json(self, a: Account) -> dict[str, Any]:
        return {"status": a.status, "contact": a.contact, "orders":
                self._account_url(a) + "/orders", "termsOfServiceAgreed": True}

    @staticmethod
    def _contact(value: object) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > 10 or not all(
                isinstance(c, str) and c.startswith("mailto:") and 7 < len(c) <= 254
                and "," not in c for c in value):
            raise Malformed("contact must be a list of mailto: URLs")  # §7.3: unsupported
        return list(value)

    async def new_account(self, request: Request) -> Response:
        ctx = await self._post(request, jwk=True, kid=False)
        payload = ctx.token.json()
        if not isinstance(payload, dict):
            raise Malformed("the newAccount payload must be an object")
        assert ctx.token.jwk is not None
        thumb = J.thumbprint(ctx.key)
        existing = await self.store.account_by_thumbprint(thumb)
        if existing is not None and existing.status != "valid":  # §7.3.6: not accepted
            raise Unauthorized(f"the account is {existing.status}")
        if existing is not None:  # §7.3.1: the existing account, 200
            return await self._json(self._account_json(existing),
                                    location=self._account_url(existing))
        if payload.get("onlyReturnExisting") is True:
            raise AccountDoesNotExist("no account has this key")
        contact = self._contact(payload.get("contact"))
        if self.settings.acme_terms_of_service and \
                payload.get("termsOfServiceAgreed") is not True:
            raise Malformed("the terms of service must be agreed to")  # §7.3.3
        binding = payload.get("externalAccountBinding")
        eab_kid: str | None = None
        account_policy: str | None = None
        if binding is not None:
            keys: dict[str, tuple[bytes, str | None, str | None] | None] = {}

            async def lookup(k: str) -> None:
                keys[k] = await self.store.eab_key(k) if len(k) <= 64 else None

            inner = J.parse(binding, algorithms=("HS256", "HS384", "HS512")) \
                if isinstance(binding, dict) else None
            if inner is not None and inner.kid is not None:
                await lookup(inner.kid)

            def mac_for(k: str) -> bytes | None:
                hit = keys.get(k)
                if hit is None:  # unknown; one already used is refused once its MAC verifies
                    return None
                return self.p.wrapper.unwrap(hit[0], EAB_AAD)  # type: ignore[no-any-return]

            try:
                eab_kid = J.verify_eab(binding, ctx.token.jwk, self.p.issuer_url +
                                       request.url.path, mac_for)
            except AcmeProblem as problem:
                await self._refused("CreateAcmeAccount", problem, None)
                raise
            hit = keys[eab_kid]
            account_policy = hit[1] if hit is not None else None
        elif self.settings.acme_eab_required:
            raise ExternalAccountRequired("an external account binding is required")
        account = Account(new_id(), thumb, ctx.token.jwk, "valid", contact, eab_kid,
                          account_policy)
        async with self.store.fast.transaction() as tx:
            bound = eab_kid is None or await self.store.bind_eab(tx, eab_kid, account.id)
            if bound:
                await self.store.insert_account(tx, account)
                await self.audit.record_in(tx, "CreateAcmeAccount",
                                           user_identity=self._identity(account),
                                           response_elements={"accountId": account.id,
                                                              "eabKeyId": eab_kid})
        if not bound:  # §7.3.4: each key binds one account
            used = Unauthorized("the external account key has been used")
            await self._refused("CreateAcmeAccount", used, None,
                                request_parameters={"eabKeyId": eab_kid})
            raise used
        return await self._json(self._account_json(account), 201,
                                location=self._account_url(account))

    async def account(self, request: Request) -> Response:
        ctx = await self._post(request)
        a = ctx.acct
        if request.path_params["id"] != a.id:
            raise Unauthorized("the account URL is not the signer's")
        payload = ctx.token.json()
        if payload is None or payload == {}:
            return await self._json(self._account_json(a), location=self._account_url(a))
        if not isinstance(payload, dict):
            raise Malformed("the account update must be an object")
        event = "UpdateAcmeAccount"
        if "contact" in payload:
            a.contact = self._contact(payload["contact"])
        if "status" in payload:
            if payload["status"] != "deactivated":  # §7.3.6
                raise Malformed("the only status a client may set is deactivated")
            a.status, event = "deactivated", "DeactivateAcmeAccount"
        async with self.store.fast.transaction() as tx:
            await self.store.update_account(tx, a)
            await self.audit.record_in(tx, event, user_identity=self._identity(a))
        self._accounts.pop(a.id, None)
        return await self._json(self._account_json(a), location=self._account_url(a))

    async def orders(self, request: Request) -> Response:
        ctx = await self._post(request)
        if request.path_params["id"] != ctx.acct.id:
            raise Unauthorized("the account URL is not the signer's")
        ids = await self.store.orders_of(ctx.acct.id, now())
        return await self._json({"orders": [f"{self.base}/order/{i}" for i in ids]})

    async def key_change(self, request: Request) -> Response:
        """§7.3.5: the outer JWS by the old key (kid), the inner by the new key (jwk)."""
        ctx = await self._post(request)
        a = ctx.acct
        outer = ctx.token.json()
        inner = J.parse(outer if isinstance(outer, dict) else b"")
        new_jwk = inner.jwk
        if new_jwk is None or inner.url != ctx.token.url or "nonce" in inner.header:
            raise Malformed("the inner JWS needs jwk and the outer url, and no nonce")
        new_key = J.import_public_key(new_jwk, inner.alg)
        J.verify(inner, new_key)
        body = inner.json()
        if not isinstance(body, dict) or body.get("account") != self._account_url(a):
            raise Malformed("the inner payload must name the signer's account")
        old = body.get("oldKey")
        if J.thumbprint(J.import_public_key(old)) != a.thumbprint:
            raise Unauthorized("oldKey is not the account's key")
        thumb = J.thumbprint(new_key)
        other = await self.store.account_by_thumbprint(thumb)
        if other is not None:  # §7.3.5: 409 with the other account's URL
            problem = Malformed("the new key is another account's")
            response = await self._problem(problem, status=409)
            response.headers["Location"] = self._account_url(other)
            return response
        a.jwk, a.thumbprint = new_jwk, thumb
        async with self.store.fast.transaction() as tx:
            await self.store.update_account(tx, a)
            await self.audit.record_in(tx, "ChangeAcmeAccountKey",
                                       user_identity=self._identity(a),
                                       response_elements={"thumbprint": thumb})
        self._accounts.pop(a.id, None)
        return await self._json(self._account_json(a), location=self._account_url(a))

    # --- orders (§7.4) ----------------------------------------------------------------------
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

    def _ca(self) -> CertificateAuthority:
        ca: CertificateAuthority = self.p.ca
        return ca

    # --- authorizations and challenges (§7.5, §8) -------------------------------------------
    def _challenge_json(self, z: Authz, ch: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": ch["type"], "url":
                               f"{self.base}/chall/{z.id}/{ch['type']}", "token": z.token,
                               "status": ch["status"]}
        if ch.get("validated"):
            out["validated"] = rfc3339(ch["validated"])
        if ch.get("error"):
            out["error"] = ch["error"]
        return out

    def _authz_json(self, z: Authz, at: int) -> dict[str, Any]:
        status = z.current_status(at)
        challenges = z.challenges
        if status == "valid":  # §7.1.4: the challenges that were not used may be left out
            challenges = [c for c in challenges if c["status"] == "valid"] or challenges
        out: dict[str, Any] = {"identifier": z.identifier, "status": status,
                               "expires": rfc3339(z.expires_at),
                               "challenges": [self._challenge_json(z, c) for c in challenges]}
        if z.wildcard:
            out["wildcard"] = True
        return out

    async def _own_authz(self, ctx: Ctx, authz_id: str) -> Authz:
        z = await self.store.authz(authz_id) if len(authz_id) <= 32 else None
        if z is None or z.account_id != ctx.acct.id:
            raise NotFound("no such authorization")
        return z

    async def authz(self, request: Request) -> Response:
        ctx = await self._post(request)
        z = await self._own_authz(ctx, request.path_params["id"])
        payload = ctx.token.json()
        if isinstance(payload, dict) and payload.get("status") == "deactivated":  # §7.5.2
            if z.current_status(now()) not in ("pending", "valid"):
                raise Malformed("only a pending or valid authorization can be deactivated")
            z.status = "deactivated"
            async with self.store.fast.transaction() as tx:
                await self.store.lock_order(tx, z.order_id)  # first, as _settle does
                await self.store.save_authz(tx, z)
                order = await tx.one("SELECT id, account_id, status, expires_at, body FROM "
                                     "acme_orders WHERE id = :id", id=z.order_id)
                if order is not None:
                    o = Order.from_row(order)
                    if o.status in ("pending", "ready"):
                        o.status = "invalid"
                        await self.store.save_order(tx, o)
                await self.audit.record_in(tx, "DeactivateAcmeAuthorization",
                                           user_identity=self._identity(ctx.acct),
                                           request_parameters={"authzId": z.id})
        elif payload not in (None, {}):
            raise Malformed("an authorization accepts POST-as-GET or deactivation")
        return await self._json(self._authz_json(z, now()))

    async def challenge(self, request: Request) -> Response:
        ctx = await self._post(request)
        z = await self._own_authz(ctx, request.path_params["id"])
        kind = request.path_params["type"]
        ch = next((c for c in z.challenges if c["type"] == kind), None)
        if ch is None:
            raise NotFound("no such challenge")
        payload = ctx.token.json()
        up = f'<{self.base}/authz/{z.id}>;rel="up"'
        if payload is None:  # POST-as-GET
            return await self._json(self._challenge_json(z, ch), links=(up,))
        if not isinstance(payload, dict):
            raise Malformed("a challenge response must be an object")
        if z.current_status(now()) == "pending" and ch["status"] == "pending":
            ch["status"] = "processing"
            async with self.store.fast.transaction() as tx:
                started = await self.store.save_authz(tx, z, expect="pending")
            if started:
                key_authorization = f"{z.token}.{J.thumbprint(ctx.key)}"
                task = asyncio.create_task(self._validate(z.id, kind, key_authorization))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return await self._json(self._challenge_json(z, ch), links=(up,))

    async def _validate(self, authz_id: str, kind: str, key_authorization: str) -> None:
        try:
            z = await self.store.authz(authz_id)
            if z is None:
                return
            problem = await self.validator.validate(kind, z.identifier["type"],
                                                    z.identifier["value"], z.token,
                                                    key_authorization)
            await self._settle(authz_id, kind, problem)
        except Exception:
            log.exception("ACME validation of %s failed", authz_id)
            await self._settle(authz_id, kind, ServerInternal("validation failed"))

    async def _settle(self, authz_id: str, kind: str, problem: AcmeProblem | None) -> None:
        """The validation's outcome, the authorization's, and the order's when this was its
        last authorization, in one transaction with the audit record."""
        first = await self.store.authz(authz_id)
        if first is None:
            return
        async with self.store.fast.transaction() as tx:
            # the order's row lock serializes the settling of its authorizations: without it
            # two validations finishing together each see the other still pending (READ
            # COMMITTED on PostgreSQL) and neither makes the order ready
            await self.store.lock_order(tx, first.order_id)
            row = await tx.one("SELECT id, account_id, order_id, status, expires_at, body FROM "
                               "acme_authzs WHERE id = :id", id=authz_id)
            if row is None:
                return
            z = Authz.from_row(row)
            if z.status != "pending":
                return
            for ch in z.challenges:
                if ch["type"] == kind:
                    ch["status"] = "invalid" if problem else "valid"
                    if problem:
                        ch["error"] = problem.document()
                    else:
                        ch["validated"] = now()
            z.status = "invalid" if problem else "valid"
            await self.store.save_authz(tx, z)
            orow = await tx.one("SELECT id, account_id, status, expires_at, body FROM "
                                "acme_orders WHERE id = :id", id=z.order_id)
            if orow is not None:
                o = Order.from_row(orow)
                if o.status == "pending":
                    if problem:
                        o.status = "invalid"
                        o.error = problem.document()
                        o.error["identifier"] = z.identifier
                        await self.store.save_order(tx, o)
                    elif all(s.status == "valid" for s in
                             await self.store.authzs_of(tx, o.id)):
                        o.status = "ready"
                        await self.store.save_order(tx, o)
            fields: dict[str, Any] = {
                "user_identity": {"type": "AcmeAccount", "principalId": z.account_id,
                                  "arn": account_arn(z.account_id)},
                "request_parameters": {"authzId": z.id, "challenge": kind,
                                       "identifier": z.identifier}}
            if problem:
                fields["error_code"], fields["error_message"] = problem.type, problem.detail
            await self.audit.record_in(tx, "ValidateAcmeChallenge", **fields)

    # --- certificates (§7.4.2, §7.6; RFC 9773) -----------------------------------------------
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

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

