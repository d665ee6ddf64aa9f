"""What every ACME resource (RFC 8555) shares: the request's authentication (§6.2-§6.5:
the JWS, its key and account, the ``url`` and the one-use nonce), nonces, JSON answers and
problem documents, the audit record of a refusal. ``AcmeServer`` (``acme/server.py``) is
made of the resources built on ``AcmeBase``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion.acme import jws as J
from bastion.acme.errors import (
    PROBLEM_TYPE,
    AccountDoesNotExist,
    AcmeProblem,
    BadNonce,
    Malformed,
    Unauthorized,
    UnsupportedMediaType,
)
from bastion.acme.policy import IdentifierPolicy, account_arn
from bastion.acme.store import Account, AcmeStore
from bastion.acme.validate import Validator, parse_resolve
from bastion.edge.http import media_type, read_body
from bastion.pki import CertificateAuthority

NONCE_TTL = 3600.0
NONCE_PREFIX = "acme:nonce:"
JOSE_TYPE = "application/jose+json"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}", re.ASCII)
RETRY_AFTER_POLL = "1"  # validations take a round trip or two; lego waits 5 s without it
# a POST-as-GET of an authorization, challenge or order whose validation runs in this process
# waits at most this long for its outcome before answering (pebble answers as soon as it
# knows; without the wait a client that polls gets "pending" until its next request)
VALIDATION_WAIT = 1.0


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


class AcmeBase:
    """The state of the ACME server and the plumbing of its resources."""

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
        self._keys: dict[str, J.PublicKey] = {}  # account keys imported, by RFC 7638 thumbprint
        self._tasks: set[asyncio.Task[None]] = set()
        self._validating: dict[str, asyncio.Event] = {}  # authz id: set once settled
        meta: dict[str, Any] = {"externalAccountRequired": s.acme_eab_required,
                                "website": provider.issuer_url}
        if s.acme_terms_of_service:
            meta["termsOfService"] = s.acme_terms_of_service
        self._directory = json.dumps({
            "newNonce": self.base + "/new-nonce", "newAccount": self.base + "/new-account",
            "newOrder": self.base + "/new-order", "revokeCert": self.base + "/revoke-cert",
            "keyChange": self.base + "/key-change",
            "renewalInfo": self.base + "/renewal-info", "meta": meta}).encode()

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
            key = self._account_key(account)
            J.check_alg(key, token.alg)
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

    async def _settled(self, authz_ids: list[str]) -> bool:
        """Wait (at most ``VALIDATION_WAIT`` seconds) for the validations of ``authz_ids``
        running in this process; True if there was one to wait for (reread the state)."""
        events = [e for i in authz_ids if (e := self._validating.get(i)) is not None]
        if not events:
            return False
        try:
            async with asyncio.timeout(VALIDATION_WAIT):
                for event in events:
                    await event.wait()
        except TimeoutError:
            pass
        return True

    def _account_key(self, account: Account) -> J.PublicKey:
        """The account's public key, imported once per key (the thumbprint names the JWK's
        required members, all that the import reads)."""
        key = self._keys.get(account.thumbprint)
        if key is None:
            key = J.import_public_key(account.jwk)
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[account.thumbprint] = key
        return key

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

    def _ca(self) -> CertificateAuthority:
        ca: CertificateAuthority = self.p.ca
        return ca
