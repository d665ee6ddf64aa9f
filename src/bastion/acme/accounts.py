"""ACME accounts (RFC 8555 §7.3): creation with an optional external account binding
(§7.3.4), reading, update and deactivation, the account's orders, key change (§7.3.5)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion.acme import jws as J
from bastion.acme.base import AcmeBase
from bastion.acme.eab import EAB_AAD
from bastion.acme.errors import (
    AccountDoesNotExist,
    AcmeProblem,
    ExternalAccountRequired,
    Malformed,
    Unauthorized,
)
from bastion.acme.store import Account, new_id, now


class AccountResources(AcmeBase):
    """Accounts (§7.3)."""

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
