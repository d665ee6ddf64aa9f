"""ACME authorizations and challenges (RFC 8555 §7.5, §8): reading and deactivation, the
challenge POST that starts validation in a task, and the outcome written with the order's
(``ready`` in the same transaction as its last authorization)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion.acme import jws as J
from bastion.acme.base import AcmeBase, Ctx, rfc3339
from bastion.acme.errors import AcmeProblem, Malformed, NotFound, ServerInternal
from bastion.acme.policy import account_arn
from bastion.acme.store import Authz, Order, now

log = logging.getLogger("bastion.acme")


class AuthorizationResources(AcmeBase):
    """Authorizations and challenges (§7.5, §8)."""

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

    async def _own_authz_settled(self, ctx: Ctx, authz_id: str) -> Authz:
        """The authorization, once the validation running for it here has settled (bounded):
        a poll right after the challenge response gets the outcome, not ``pending``."""
        z = await self._own_authz(ctx, authz_id)
        if z.status == "pending" and await self._settled([z.id]):
            z = await self._own_authz(ctx, authz_id)
        return z

    async def authz(self, request: Request) -> Response:
        ctx = await self._post(request)
        payload = ctx.token.json()
        if payload is None or payload == {}:
            z = await self._own_authz_settled(ctx, request.path_params["id"])
        else:
            z = await self._own_authz(ctx, request.path_params["id"])
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
        payload = ctx.token.json()
        z = await (self._own_authz_settled if payload is None else self._own_authz)(
            ctx, request.path_params["id"])
        kind = request.path_params["type"]
        ch = next((c for c in z.challenges if c["type"] == kind), None)
        if ch is None:
            raise NotFound("no such challenge")
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
                self._validating[z.id] = asyncio.Event()
                task = asyncio.create_task(self._validate(z, kind, key_authorization))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return await self._json(self._challenge_json(z, ch), links=(up,))

    async def _validate(self, z: Authz, kind: str, key_authorization: str) -> None:
        """Validate ``z`` (as the challenge POST read it: identifier, token and order do not
        change) and settle the outcome."""
        try:
            problem = await self.validator.validate(kind, z.identifier["type"],
                                                    z.identifier["value"], z.token,
                                                    key_authorization)
            await self._settle(z.id, z.order_id, kind, problem)
        except Exception:
            log.exception("ACME validation of %s failed", z.id)
            await self._settle(z.id, z.order_id, kind, ServerInternal("validation failed"))
        finally:  # the polls waiting in _settled answer now, with the committed outcome
            event = self._validating.pop(z.id, None)
            if event is not None:
                event.set()

    async def _settle(self, authz_id: str, order_id: str, kind: str,
                      problem: AcmeProblem | None) -> None:
        """The validation's outcome, the authorization's, and the order's when this was its
        last authorization, in one transaction with the audit record."""
        async with self.store.fast.transaction() as tx:
            # the order's row lock serializes the settling of its authorizations: without it
            # two validations finishing together each see the other still pending (READ
            # COMMITTED on PostgreSQL) and neither makes the order ready
            await self.store.lock_order(tx, order_id)
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
