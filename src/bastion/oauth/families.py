"""Token families: every token descending from one authorization code shares a family, so
that code replay, refresh-token reuse, logout and revocation can revoke them together
(RFC 9700 §4.14.2: refresh token rotation with reuse detection).

Runs on the fast store (``store/fast.py``): these statements are the token endpoint's hot path.
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
from bastion.store.fast import Reader, Row, Tx


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


@dataclass(frozen=True)
class Family:
    id: str
    client_id: str
    user_id: str
    sid: str | None
    scope: str
    auth_time: int | None
    amr: list[str]
    expires_at: int
    revoked_at: int | None

    @classmethod
    def of(cls, row: Row) -> Family:
        return cls(row["id"], row["client_id"], row["user_id"], row["sid"], row["scope"],
                   row["auth_time"], _json_list(row["amr"]), row["expires_at"],
                   row["revoked_at"])


async def create_family(tx: Tx, client: ClientInfo, user_id: str, scope: str,
                        sid: str | None, auth_time: int | None, amr: list[str],
                        ttl: int) -> Family:
    now = int(time.time())
    family = Family(secrets.token_hex(16), client.client_id, user_id, sid, scope, auth_time,
                    amr, now + ttl, None)
    await tx.run("INSERT INTO token_families (id, client_id, user_id, sid, scope, auth_time, "
                 "amr, created_at, expires_at, revoked_at) VALUES (:id, :client_id, :user_id, "
                 ":sid, :scope, :auth_time, :amr, :now, :exp, NULL)",
                 id=family.id, client_id=client.client_id, user_id=user_id, sid=sid,
                 scope=scope, auth_time=auth_time, amr=json.dumps(amr), now=now,
                 exp=family.expires_at)
    return family


async def revoke_families(provider: Provider, tx: Tx, where: str, **params: Any) -> int:
    """Revoke the unrevoked families matching ``where`` (SQL on ``token_families``) and deny
    their unexpired access tokens at once."""
    now = int(time.time())
    ids = [r["id"] for r in await tx.all(
        f"UPDATE token_families SET revoked_at = :now WHERE ({where}) "  # noqa: S608 — fixed
        "AND revoked_at IS NULL RETURNING id", now=now, **params)]
    denied: list[tuple[str, int]] = []
    for fid in ids:
        denied += [(r["jti"], r["expires_at"]) for r in await tx.all(
            "SELECT jti, expires_at FROM issued_access_tokens WHERE family_id = :f "
            "AND expires_at > :now", f=fid, now=now)]
    await provider.denylist.revoke(tx, denied)
    return len(ids)


async def issue_tokens(tx: Tx, provider: Provider, family: Family, client: ClientInfo,
                       user: Subject, scopes: list[str], *,
                       nonce: str | None = None) -> dict[str, Any]:
    """Issue an access token (and refresh / ID tokens where due) inside ``family``."""
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
    await tx.run("INSERT INTO issued_access_tokens (jti, family_id, expires_at) "
                 "VALUES (:jti, :f, :exp)", jti=access.jti, f=family.id,
                 exp=access.expires_at)
    body: dict[str, Any] = {"access_token": access.token, "token_type": "Bearer",
                            "expires_in": s.access_token_ttl, "scope": scope}
    if "refresh_token" in client.grant_types:
        refresh = secrets.token_urlsafe(32)
        await tx.run("INSERT INTO refresh_tokens (token_hash, family_id, created_at, "
                     "rotated_at) VALUES (:h, :f, :now, NULL)", h=token_hash(refresh),
                     f=family.id, now=access.issued_at)
        body["refresh_token"] = refresh
    if "openid" in scopes:
        body["id_token"] = provider.tokens.id_token(
            subject=user.id, client_id=client.client_id, ttl=s.id_token_ttl,
            auth_time=family.auth_time, nonce=nonce, sid=family.sid, amr=family.amr,
            access_token=access.token,
            extra=profile_claims(user, scopes, set(user.roles))).token
    return body


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
