"""Token families: every token descending from one authorization code shares a family, so
that code replay, refresh-token reuse, logout and revocation can revoke them together
(RFC 9700 §4.14.2: refresh token rotation with reuse detection).

The storage itself (refresh tokens, families, their access tokens) is behind the
``RefreshTokens`` / ``TokenFamilies`` interfaces of ``oauth/refresh.py``, on the fast store
(``store/fast.py``): these statements are the token endpoint's hot path.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.iam.scheme import principal_arn
from bastion.identity.clients import ClientInfo
from bastion.oauth.provider import Provider
from bastion.oauth.refresh import (
    Family,
    RefreshTokens,
    SqlRefreshTokens,
    SqlTokenFamilies,
    TokenFamilies,
)
from bastion.store.fast import Reader, Tx
from bastion.tokens.binding import BOUND_THUMBPRINT

__all__ = ["Family", "Person", "Prepared", "Subject", "create_family", "issue_tokens",
           "load_subject", "prepare_tokens", "profile_claims", "revoke_families",
           "revoke_family", "store_tokens", "token_hash"]

_SQL_REFRESH_TOKENS = SqlRefreshTokens()
_SQL_FAMILIES = SqlTokenFamilies()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _json_list(value: Any) -> list[str]:
    data = json.loads(value) if isinstance(value, str) else value
    return [str(v) for v in data or []]


class Person(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...


@dataclass(frozen=True)
class Subject:
    """The user a grant acts for, with effective roles (own ∪ groups')."""

    id: str
    username: str
    name: str | None
    email: str | None
    disabled: bool
    roles: frozenset[str]


async def load_subject(tx: Reader, user_id: str) -> Subject | None:
    """The user and the roles their tokens carry (own and their groups')."""
    row = await tx.one("SELECT id, username, name, email, roles, disabled FROM users "
                       "WHERE id = :id", id=user_id)
    if row is None:
        return None
    roles = set(_json_list(row["roles"]))
    for g in await tx.all("SELECT g.roles FROM groups g JOIN group_members m "
                          "ON m.group_id = g.id WHERE m.user_id = :id", id=user_id):
        roles.update(_json_list(g["roles"]))
    return Subject(row["id"], row["username"], row["name"], row["email"],
                   bool(row["disabled"]), frozenset(roles))


async def create_family(tx: Tx, client: ClientInfo, user_id: str, scope: str,
                        sid: str | None, auth_time: int | None, amr: list[str],
                        ttl: int, *, families: TokenFamilies = _SQL_FAMILIES) -> Family:
    now = int(time.time())
    # RFC 8705 §4: a public client's refresh tokens obtained over mutual TLS are bound to
    # its certificate (a confidential client's are bound by its authentication already)
    family = Family(secrets.token_hex(16), client.client_id, user_id, sid, scope, auth_time,
                    amr, now + ttl, None, BOUND_THUMBPRINT.get() if client.public else None)
    await families.create(tx, family, now)
    return family


async def revoke_family(provider: Provider, tx: Tx, family_id: str, *,
                        families: TokenFamilies = _SQL_FAMILIES) -> int:
    """Revoke the family (unless already revoked) and deny its unexpired access tokens at
    once. Returns how many families were revoked: 0 or 1."""
    now = int(time.time())
    return await _deny(provider, tx, families,
                       await families.revoke(tx, now, family_id=family_id), now)


async def revoke_families(provider: Provider, tx: Tx, where: str, **params: Any) -> int:
    """Revoke the unrevoked families matching ``where`` (a fixed SQL condition on
    ``token_families``, values in ``params``) and deny their unexpired access tokens at once."""
    now = int(time.time())
    return await _deny(provider, tx, _SQL_FAMILIES,
                       await _SQL_FAMILIES.revoke_where(tx, now, where, **params), now)


async def _deny(provider: Provider, tx: Tx, families: TokenFamilies, ids: list[str],
                now: int) -> int:
    denied: list[tuple[str, int]] = []
    for fid in ids:
        denied += await families.live_access_tokens(tx, fid, now)
    await provider.denylist.revoke(tx, denied)
    return len(ids)


@dataclass(frozen=True)
class Prepared:
    """Signed tokens not yet stored (``prepare_tokens``): signing needs no lock, so a grant
    can do it before its write transaction and hold the database's write lock for less."""

    body: dict[str, Any]
    family_id: str
    jti: str
    access_expires_at: int
    issued_at: int
    refresh_hash: str | None


def prepare_tokens(provider: Provider, family: Family, client: ClientInfo, user: Subject,
                   scopes: list[str], *, nonce: str | None = None) -> Prepared:
    """Sign an access token (and a refresh / ID token where due) inside ``family``."""
    s = provider.settings
    scope = " ".join(scopes)
    extra: dict[str, Any] = {"principal_arn": principal_arn("user", user.username,
                                                            s.account_id)}
    if family.auth_time:
        extra["auth_time"] = family.auth_time
    if family.amr:  # RFC 9068 §2.2.1: aws:MultiFactorAuthPresent comes from it
        extra["amr"] = family.amr
    access = provider.tokens.access_token(
        subject=user.id, client_id=client.client_id, audience=provider.api_audience,
        scope=scope, ttl=s.access_token_ttl, roles=user.roles, extra=extra)
    body: dict[str, Any] = {"access_token": access.token, "token_type": "Bearer",
                            "expires_in": s.access_token_ttl, "scope": scope}
    refresh_hash = None
    if "refresh_token" in client.grant_types:
        refresh = secrets.token_urlsafe(32)
        refresh_hash = token_hash(refresh)
        body["refresh_token"] = refresh
    if "openid" in scopes:
        body["id_token"] = provider.tokens.id_token(
            subject=user.id, client_id=client.client_id, ttl=s.id_token_ttl,
            auth_time=family.auth_time, nonce=nonce, sid=family.sid, amr=family.amr,
            access_token=access.token,
            extra=profile_claims(user, scopes, set(user.roles))).token
    return Prepared(body, family.id, access.jti, access.expires_at, access.issued_at,
                    refresh_hash)


async def store_tokens(tx: Tx, prepared: Prepared, *,
                       refresh_tokens: RefreshTokens = _SQL_REFRESH_TOKENS,
                       families: TokenFamilies = _SQL_FAMILIES) -> dict[str, Any]:
    """Record prepared tokens in their family (revoking it then denies the access token;
    the refresh token becomes usable); returns the token response body."""
    await families.record_access_token(tx, prepared.jti, prepared.family_id,
                                       prepared.access_expires_at)
    if prepared.refresh_hash is not None:
        await refresh_tokens.add(tx, prepared.refresh_hash, prepared.family_id,
                                 prepared.issued_at)
    return prepared.body


async def issue_tokens(tx: Tx, provider: Provider, family: Family, client: ClientInfo,
                       user: Subject, scopes: list[str], *,
                       nonce: str | None = None,
                       refresh_tokens: RefreshTokens = _SQL_REFRESH_TOKENS,
                       families: TokenFamilies = _SQL_FAMILIES) -> dict[str, Any]:
    """Issue an access token (and refresh / ID tokens where due) inside ``family``."""
    return await store_tokens(tx, prepare_tokens(provider, family, client, user, scopes,
                                                 nonce=nonce),
                              refresh_tokens=refresh_tokens, families=families)


def profile_claims(user: Person, scopes: list[str], roles: set[str] | frozenset[str]
                   ) -> dict[str, Any]:
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
