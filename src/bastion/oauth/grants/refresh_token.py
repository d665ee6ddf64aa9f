"""RFC 6749 §6 — Refreshing an Access Token, with rotation and reuse detection
(RFC 9700 §4.14.2): every refresh returns a new refresh token; presenting a rotated one
revokes the whole family, except inside a short grace window for the same client so that
two concurrent refreshes do not log the user out."""

from __future__ import annotations

import hmac
import time
from typing import Any

from bastion.oauth.errors import InvalidGrant, InvalidRequest, OAuthError, UnauthorizedClient
from bastion.oauth.families import (
    load_subject,
    prepare_tokens,
    revoke_family,
    store_tokens,
    token_hash,
)
from bastion.oauth.grants.base import TokenRequest, narrow_scope
from bastion.oauth.refresh import (
    Family,
    RefreshTokens,
    SqlRefreshTokens,
    SqlTokenFamilies,
    TokenFamilies,
)
from bastion.tokens.binding import BOUND_THUMBPRINT


class RefreshTokenGrant:
    grant_type = "refresh_token"

    def __init__(self, tokens: RefreshTokens | None = None,
                 families: TokenFamilies | None = None) -> None:
        self.tokens: RefreshTokens = tokens or SqlRefreshTokens()
        self.families: TokenFamilies = families or SqlTokenFamilies()

    async def handle(self, request: TokenRequest) -> dict[str, Any]:
        client, provider, params = request.client, request.provider, request.params
        if self.grant_type not in client.grant_types:
            raise UnauthorizedClient("client may not use the refresh token grant")
        presented = params.get("refresh_token")
        if not presented:
            raise InvalidRequest("refresh_token required")
        h = token_hash(presented)
        now = int(time.time())
        # Everything that needs no lock happens first, on the read connection: the checks
        # (so a bad token never waits for the write lock) and signing the new tokens. The
        # transaction then reads the family and the user again and decides on what it sees:
        # a change in between (revoked, disabled, new roles) is never missed.
        seen = _live(await self.tokens.family_of(provider.fast, h), client.client_id, now)
        scopes = narrow_scope(params.get("scope"), seen.scope.split(" "))
        seen_user = await load_subject(provider.fast, seen.user_id)
        prepared = None
        if seen_user is not None and not seen_user.disabled:
            prepared = prepare_tokens(provider, seen, client, seen_user, scopes)
        failure: OAuthError | None = None
        body: dict[str, Any] = {}
        async with provider.fast.transaction() as tx:
            family = _live(await self.tokens.family_of(tx, h), client.client_id, now)
            # atomic: of two concurrent refreshes with one token only one rotates it
            rotated = await self.tokens.rotate(tx, h, now)
            if rotated is None:
                prior = await self.tokens.get(tx, h)
                rotated_at = prior.rotated_at if prior else None
                grace = provider.settings.refresh_grace_seconds
                if rotated_at is None or now - rotated_at >= grace:
                    # reuse of a rotated token: someone holds a copy → revoke the family
                    await revoke_family(provider, tx, family.id, families=self.families)
                    failure = InvalidGrant("refresh token reuse detected; grant revoked")
            if failure is None:
                user = await load_subject(tx, family.user_id)
                if user is None or user.disabled:
                    failure = InvalidGrant("the user is no longer active")
                else:
                    if prepared is None or user != seen_user or family != seen:
                        prepared = prepare_tokens(provider, family, client, user, scopes)
                    body = await store_tokens(tx, prepared, refresh_tokens=self.tokens,
                                              families=self.families)
        if failure is not None:
            if "reuse detected" in (failure.description or ""):
                await provider.audit.emit(
                    "RefreshTokenReuseDetected",
                    user_identity={"type": "Client", "clientId": client.client_id},
                    request_parameters={"familyId": family.id},
                    error_code="invalid_grant", error_message="grant revoked")
            raise failure
        return body


def _live(family: Family | None, client_id: str, now: int) -> Family:
    """``family``, unless a refusal needs no rotation: an unknown token, another client's, a
    revoked or expired grant, a certificate-bound token without its certificate."""
    if family is None:
        raise InvalidGrant("invalid refresh token")
    if family.client_id != client_id:
        # §6: issued to another client (not the owner's fault: refuse, don't revoke)
        raise InvalidGrant("invalid refresh token")
    if family.revoked_at is not None or family.expires_at <= now:
        raise InvalidGrant("refresh token revoked or expired")
    if family.cnf_x5t is not None and not hmac.compare_digest(
            (BOUND_THUMBPRINT.get() or "").encode(), family.cnf_x5t.encode()):
        # RFC 8705 §4: without the certificate it is bound to (not the holder's mistake to
        # punish: refuse, don't revoke)
        raise InvalidGrant("the refresh token is bound to a client certificate")
    return family
