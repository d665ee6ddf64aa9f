"""Token families: every token descending from one authorization code shares a family, so
that code replay, refresh-token reuse, logout and revocation can revoke them together
(RFC 9700 §4.14.2: refresh token rotation with reuse detection)."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bastion.identity.clients import ClientInfo
from bastion.identity.users import effective_roles
from bastion.oauth.provider import Provider
from bastion.store.models import IssuedAccessToken, RefreshToken, TokenFamily, User


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_family(client: ClientInfo, user: User, scope: str, sid: str | None,
               auth_time: int | None, amr: list[str], ttl: int) -> TokenFamily:
    now = int(time.time())
    return TokenFamily(id=secrets.token_hex(16), client_id=client.client_id, user_id=user.id,
                       sid=sid, scope=scope, auth_time=auth_time, amr=amr, created_at=now,
                       expires_at=now + ttl, revoked_at=None)


async def issue_tokens(db: AsyncSession, provider: Provider, family: TokenFamily,
                       client: ClientInfo, user: User, scopes: list[str], *,
                       nonce: str | None = None) -> dict[str, Any]:
    """Issue an access token (and refresh / ID tokens where due) inside ``family``."""
    s = provider.settings
    scope = " ".join(scopes)
    roles = await effective_roles(db, user)
    access = provider.tokens.access_token(
        subject=user.id, client_id=client.client_id, audience=provider.api_audience,
        scope=scope, ttl=s.access_token_ttl, roles=roles,
        extra={"auth_time": family.auth_time} if family.auth_time else None)
    db.add(IssuedAccessToken(jti=access.jti, family_id=family.id, expires_at=access.expires_at))
    body: dict[str, Any] = {"access_token": access.token, "token_type": "Bearer",
                            "expires_in": s.access_token_ttl, "scope": scope}
    if "refresh_token" in client.grant_types:
        refresh = secrets.token_urlsafe(32)
        db.add(RefreshToken(token_hash=token_hash(refresh), family_id=family.id,
                            created_at=access.issued_at, rotated_at=None))
        body["refresh_token"] = refresh
    if "openid" in scopes:
        body["id_token"] = provider.tokens.id_token(
            subject=user.id, client_id=client.client_id, ttl=s.id_token_ttl,
            auth_time=family.auth_time, nonce=nonce, sid=family.sid, amr=family.amr,
            access_token=access.token,
            extra=profile_claims(user, scopes, roles)).token
    return body


def profile_claims(user: User, scopes: list[str], roles: set[str]) -> dict[str, Any]:
    """Standard claims released per scope (OIDC Core §5.4)."""
    out: dict[str, Any] = {}
    if "profile" in scopes:
        out["preferred_username"] = user.username
        if user.name:
            out["name"] = user.name
        out["roles"] = sorted(roles)
    if "email" in scopes and user.email:
        out["email"] = user.email
        out["email_verified"] = False
    return out
