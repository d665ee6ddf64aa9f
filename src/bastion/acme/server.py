"""The ACME server (RFC 8555) on the internal CA, at ``/acme/directory``.

Resources (§7.1): the directory, nonces (§7.2), accounts (§7.3, external account binding
§7.3.4, key change §7.3.5), orders (§7.4), authorizations and challenges (§7.5, §8),
finalization and certificate download (§7.4.2), revocation (§7.6), renewal information
(RFC 9773). Every POST is a JWS (``acme/jws.py``) whose nonce is consumed from the KV (one
use, across instances when the KV is Redis) and whose ``url`` must be the URL it was sent
to. Errors are RFC 8555 problem documents (``acme/errors.py``) with a fresh Replay-Nonce.

Validation runs in a task started by the challenge POST and writes its outcome; the order
becomes ``ready`` in the same transaction as its last authorization. A POST-as-GET of the
authorization, challenge or order while that task runs in this process waits for it (at
most ``VALIDATION_WAIT``, ``acme/base.py``), so a client's first poll gets the outcome. Issuance is
synchronous in finalize, so an order is ``valid`` in its answer.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bastion.acme.accounts import AccountResources
from bastion.acme.authorizations import AuthorizationResources
from bastion.acme.base import Handler
from bastion.acme.certificates import CertificateResources
from bastion.acme.errors import AcmeProblem, Malformed, MethodNotAllowed, ServerInternal
from bastion.acme.orders import OrderResources
from bastion.audit.trail import AuditUnavailable
from bastion.edge.http import BodyError

log = logging.getLogger("bastion.acme")


class AcmeServer(AccountResources, OrderResources, AuthorizationResources,
                 CertificateResources):
    """The resources (``acme/accounts.py``, ``orders.py``, ``authorizations.py``,
    ``certificates.py`` on ``acme/base.py``) and their routes."""

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

    # --- directory and nonces (§7.1.1, §7.2) ------------------------------------------------
    async def directory(self, request: Request) -> Response:
        del request
        return Response(self._directory, 200, {"Cache-Control": "public, max-age=300"},
                        "application/json")

    async def new_nonce(self, request: Request) -> Response:
        return Response(b"", 200 if request.method == "HEAD" else 204, {
            "Replay-Nonce": await self._nonce(), "Cache-Control": "no-store",
            "Link": f'<{self.base}/directory>;rel="index"'})

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["AcmeServer"]
