"""RFC 6749 §6 — Refreshing an Access Token, with rotation and reuse detection
(RFC 9700 §4.14.2): every refresh returns a new refresh token; presenting a rotated one
revokes the whole family, except inside a short grace window for the same client so that
two concurrent refreshes do not log the user out."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update

from bastion.oauth.errors import InvalidGrant, InvalidRequest, OAuthError, UnauthorizedClient
from bastion.oauth.families import issue_tokens, token_hash
from bastion.oauth.grants.base import TokenRequest, narrow_scope
from bastion.store.models import RefreshToken, TokenFamily, User


class RefreshTokenGrant:
    grant_type = "refresh_token"

    async def handle(self, request: TokenRequest) -> dict[str, Any]:
        client, provider, params = request.client, request.provider, request.params
        if self.grant_type not in client.grant_types:
            raise UnauthorizedClient("client may not use the refresh token grant")
        presented = params.get("refresh_token")
        if not presented:
            raise InvalidRequest("refresh_token required")
        h = token_hash(presented)
        now = int(time.time())
        failure: OAuthError | None = None
        body: dict[str, Any] = {}
        async with provider.sessions.begin() as db:
            token = await db.get(RefreshToken, h)
            family = await db.get(TokenFamily, token.family_id) if token else None
            if token is None or family is None:
                raise InvalidGrant("invalid refresh token")
            if family.client_id != client.client_id:
                # §6: the refresh token was issued to another client (not the owner's fault:
                # do not revoke on the owner's behalf, just refuse)
                raise InvalidGrant("invalid refresh token")
            if family.revoked_at is not None or family.expires_at <= now:
                raise InvalidGrant("refresh token revoked or expired")
            scopes = narrow_scope(params.get("scope"), family.scope.split(" "))
            rotated = (await db.execute(
                update(RefreshToken).where(RefreshToken.token_hash == h,
                                           RefreshToken.rotated_at.is_(None))
                .values(rotated_at=now).returning(RefreshToken.rotated_at))).scalar_one_or_none()
            if rotated is None:
                await db.refresh(token)
                grace = provider.settings.refresh_grace_seconds
                if token.rotated_at is None or now - token.rotated_at >= grace:
                    # reuse of a rotated token: someone holds a copy → revoke the family
                    await provider.revoke_families(db, TokenFamily.id == family.id)
                    failure = InvalidGrant("refresh token reuse detected; grant revoked")
            if failure is None:
                user = await db.get(User, family.user_id) if family.user_id else None
                if user is None or user.disabled:
                    failure = InvalidGrant("the user is no longer active")
                else:
                    body = await issue_tokens(db, provider, family, client, user, scopes)
        if failure is not None:
            raise failure
        return body
