"""Refresh token and token family storage: the narrow interfaces the grants depend on
(fosite's ``RefreshTokenStorage`` and ``TokenRevocationStorage``), and their SQL
implementation on the fast store (``store/fast.py``: the token endpoint's hot path).

A token family is one grant: every token descending from one authorization code. Refresh
tokens are rotated on every use and a rotated one presented again revokes its whole family
(RFC 9700 §4.14.2); the policy (grace window, client binding, expiry) lives in the grant,
these interfaces only store and atomically transition. Records are keyed by the SHA-256 of
the token, never the token itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.store.fast import Reader, Row, Tx


def _json_list(value: Any) -> list[str]:
    data = json.loads(value) if isinstance(value, str) else value
    return [str(v) for v in data or []]


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
    cnf_x5t: str | None = None  # RFC 8705 §4: the certificate its refresh tokens need

    @classmethod
    def of(cls, row: Row) -> Family:
        return cls(row["id"], row["client_id"], row["user_id"], row["sid"], row["scope"],
                   row["auth_time"], _json_list(row["amr"]), row["expires_at"],
                   row["revoked_at"], row["cnf_x5t"])


@dataclass(frozen=True)
class RefreshRecord:
    """A stored refresh token (by hash): ``rotated_at`` is set once it has been exchanged."""

    token_hash: str
    family_id: str
    created_at: int
    rotated_at: int | None

    @classmethod
    def of(cls, row: Row) -> RefreshRecord:
        return cls(row["token_hash"], row["family_id"], row["created_at"], row["rotated_at"])


class RefreshTokens(Protocol):
    async def add(self, tx: Tx, token_hash: str, family_id: str, now: int) -> None:
        """Store a new, unrotated refresh token of ``family_id``."""
        ...

    async def family_of(self, tx: Reader, token_hash: str) -> Family | None:
        """The family the token belongs to, as stored: whether the token is rotated or the
        family revoked, expired or another client's, the caller judges. None for a token
        never issued (or purged with its family)."""
        ...

    async def rotate(self, tx: Tx, token_hash: str, now: int) -> RefreshRecord | None:
        """Mark the token exchanged at ``now`` and return its record. ``rotate`` is atomic: of
        two concurrent calls for one token only one gets the record; a second call with the
        same token returns None, as does an unknown token. None therefore means "already
        exchanged": either reuse of a stolen copy or a concurrent refresh; ``get`` tells when
        it was rotated so the caller can apply its grace window."""
        ...

    async def get(self, tx: Reader, token_hash: str) -> RefreshRecord | None:
        """The token's record, None if unknown. Not a substitute for ``rotate``: reading
        ``rotated_at`` then writing it would let two concurrent exchanges both win."""
        ...


class TokenFamilies(Protocol):
    async def create(self, tx: Tx, family: Family, now: int) -> None:
        """Store a new, unrevoked family created at ``now``."""
        ...

    async def revoke(self, tx: Tx, now: int, *, family_id: str | None = None,
                     sid: str | None = None) -> list[str]:
        """Revoke the unrevoked families with this id, or of this login session (exactly one
        of the two), and return their ids. Atomic and idempotent: a family already revoked is
        neither revoked again nor returned, so of concurrent revocations one reports it.
        Revoking a family invalidates all its refresh tokens (``family_of`` shows
        ``revoked_at``); its access tokens are the caller's to deny
        (``live_access_tokens``)."""
        ...

    async def live_access_tokens(self, tx: Reader, family_id: str,
                                 now: int) -> list[tuple[str, int]]:
        """``(jti, expires_at)`` of the family's access tokens not yet expired at ``now``."""
        ...

    async def record_access_token(self, tx: Tx, jti: str, family_id: str,
                                  expires_at: int) -> None:
        """Remember an access token issued inside the family, so revoking it can deny it."""
        ...


class SqlRefreshTokens:
    """``refresh_tokens`` (joined to ``token_families``) through the fast store."""

    async def add(self, tx: Tx, token_hash: str, family_id: str, now: int) -> None:
        await tx.run("INSERT INTO refresh_tokens (token_hash, family_id, created_at, "
                     "rotated_at) VALUES (:h, :f, :now, NULL)", h=token_hash, f=family_id,
                     now=now)

    async def family_of(self, tx: Reader, token_hash: str) -> Family | None:
        row = await tx.one("SELECT f.* FROM refresh_tokens r JOIN token_families f "
                           "ON f.id = r.family_id WHERE r.token_hash = :h", h=token_hash)
        return None if row is None else Family.of(row)

    async def rotate(self, tx: Tx, token_hash: str, now: int) -> RefreshRecord | None:
        # one conditional UPDATE … RETURNING: the database decides the single winner
        row = await tx.one("UPDATE refresh_tokens SET rotated_at = :now "
                           "WHERE token_hash = :h AND rotated_at IS NULL "
                           "RETURNING token_hash, family_id, created_at, rotated_at",
                           now=now, h=token_hash)
        return None if row is None else RefreshRecord.of(row)

    async def get(self, tx: Reader, token_hash: str) -> RefreshRecord | None:
        row = await tx.one("SELECT token_hash, family_id, created_at, rotated_at "
                           "FROM refresh_tokens WHERE token_hash = :h", h=token_hash)
        return None if row is None else RefreshRecord.of(row)


class SqlTokenFamilies:
    """``token_families`` and ``issued_access_tokens`` through the fast store."""

    async def create(self, tx: Tx, family: Family, now: int) -> None:
        await tx.run("INSERT INTO token_families (id, client_id, user_id, sid, scope, "
                     "auth_time, amr, created_at, expires_at, revoked_at, cnf_x5t) VALUES "
                     "(:id, :client_id, :user_id, :sid, :scope, :auth_time, :amr, :now, "
                     ":exp, NULL, :cnf)",
                     id=family.id, client_id=family.client_id, user_id=family.user_id,
                     sid=family.sid, scope=family.scope, auth_time=family.auth_time,
                     amr=json.dumps(family.amr), now=now, exp=family.expires_at,
                     cnf=family.cnf_x5t)

    async def revoke(self, tx: Tx, now: int, *, family_id: str | None = None,
                     sid: str | None = None) -> list[str]:
        if (family_id is None) == (sid is None):
            raise ValueError("revoke by family_id or by sid, exactly one")
        if family_id is not None:
            return await self.revoke_where(tx, now, "id = :fid", fid=family_id)
        return await self.revoke_where(tx, now, "sid = :sid", sid=sid)

    async def revoke_where(self, tx: Tx, now: int, where: str, **params: Any) -> list[str]:
        """``revoke`` for the families matching ``where``, a fixed SQL condition on
        ``token_families`` (never built from input: values go in ``params``)."""
        return [r["id"] for r in await tx.all(
            f"UPDATE token_families SET revoked_at = :now WHERE ({where}) "  # noqa: S608 — fixed
            "AND revoked_at IS NULL RETURNING id", now=now, **params)]

    async def live_access_tokens(self, tx: Reader, family_id: str,
                                 now: int) -> list[tuple[str, int]]:
        return [(r["jti"], r["expires_at"]) for r in await tx.all(
            "SELECT jti, expires_at FROM issued_access_tokens WHERE family_id = :f "
            "AND expires_at > :now", f=family_id, now=now)]

    async def record_access_token(self, tx: Tx, jti: str, family_id: str,
                                  expires_at: int) -> None:
        await tx.run("INSERT INTO issued_access_tokens (jti, family_id, expires_at) "
                     "VALUES (:jti, :f, :exp)", jti=jti, f=family_id, exp=expires_at)
