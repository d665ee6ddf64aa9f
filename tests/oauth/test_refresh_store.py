"""The refresh token and token family stores' contract (oauth/refresh.py), on SQLite and
PostgreSQL: ``rotate`` is atomic, so of concurrent exchanges of one token exactly one wins;
a rotated token is recognisable for reuse detection; revoking a family is idempotent and
yields its live access tokens. Plus a guard on the refresh grant's statement count."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Any

import pytest

from bastion.oauth.refresh import Family, SqlRefreshTokens, SqlTokenFamilies
from bastion.store import fast
from tests.flows import tokens_for

pytestmark = pytest.mark.anyio

tokens = SqlRefreshTokens()
families = SqlTokenFamilies()


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def stored_family(provider: Any, alice: str, client_id: str, *, sid: str | None = None,
                        refresh: str = "a refresh token",
                        access: tuple[tuple[str, int], ...] = ()) -> Family:
    now = int(time.time())
    family = Family(secrets.token_hex(16), client_id, alice, sid, "openid offline_access",
                    now, ["pwd"], now + 3600, None)
    async with provider.fast.transaction() as tx:
        await families.create(tx, family, now)
        await tokens.add(tx, digest(refresh), family.id, now)
        for jti, exp in access:
            await families.record_access_token(tx, jti, family.id, exp)
    return family


async def test_family_of_a_stored_token(provider, alice, app):
    family = await stored_family(provider, alice, app.client_id, sid="s1")
    async with provider.fast.transaction() as tx:
        assert await tokens.family_of(tx, digest("a refresh token")) == family
        record = await tokens.get(tx, digest("a refresh token"))
    assert record is not None and record.family_id == family.id and record.rotated_at is None
    # the store is keyed by the hash: the token itself finds nothing
    assert await tokens.family_of(provider.fast, "a refresh token") is None


async def test_rotate_is_single_use_under_concurrency(provider, alice, app):
    family = await stored_family(provider, alice, app.client_id)
    h, now = digest("a refresh token"), int(time.time())

    async def exchange() -> Any:
        async with provider.fast.transaction() as tx:
            return await tokens.rotate(tx, h, now)

    won = [r for r in await asyncio.gather(exchange(), exchange()) if r is not None]
    assert len(won) == 1
    assert won[0].family_id == family.id and won[0].rotated_at == now
    async with provider.fast.transaction() as tx:
        assert await tokens.rotate(tx, h, now + 1) is None  # and every later call loses


async def test_reuse_is_detectable(provider, alice, app):
    """A second exchange gets None, and ``get`` tells when the token was rotated: what the
    grant needs to tell a concurrent refresh (inside the grace window) from reuse."""
    await stored_family(provider, alice, app.client_id)
    h, then = digest("a refresh token"), int(time.time()) - 100
    async with provider.fast.transaction() as tx:
        assert await tokens.rotate(tx, h, then) is not None
    async with provider.fast.transaction() as tx:
        assert await tokens.rotate(tx, h, then + 100) is None
        record = await tokens.get(tx, h)
    assert record is not None and record.rotated_at == then  # the first rotation stands


async def test_reuse_through_the_grant_revokes_the_family(http, provider, app):
    first = await tokens_for(http, app)
    auth = (app.client_id, app.secret)
    data = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    assert (await http.post("/token", data=data, auth=auth)).status_code == 200
    provider.settings.__dict__["refresh_grace_seconds"] = 0  # past the concurrency window
    reuse = await http.post("/token", data=data, auth=auth)
    assert reuse.status_code == 400 and "reuse" in reuse.json()["error_description"]
    family = await tokens.family_of(provider.fast, digest(first["refresh_token"]))
    assert family is not None and family.revoked_at is not None


async def test_revoke_family_is_idempotent(provider, alice, app):
    now = int(time.time())
    family = await stored_family(provider, alice, app.client_id,
                                 access=(("live", now + 300), ("expired", now - 1)))
    other = await stored_family(provider, alice, app.client_id, refresh="another token")
    async with provider.fast.transaction() as tx:
        assert await families.live_access_tokens(tx, family.id, now) == [("live", now + 300)]
        assert await families.revoke(tx, now, family_id=family.id) == [family.id]
        assert await families.revoke(tx, now, family_id=family.id) == []
        revoked = await tokens.family_of(tx, digest("a refresh token"))
        untouched = await tokens.family_of(tx, digest("another token"))
    assert revoked is not None and revoked.revoked_at == now
    assert untouched == other


async def test_revoke_by_session(provider, alice, app):
    now = int(time.time())
    a = await stored_family(provider, alice, app.client_id, sid="s1", refresh="a")
    b = await stored_family(provider, alice, app.client_id, sid="s1", refresh="b")
    c = await stored_family(provider, alice, app.client_id, sid="s2", refresh="c")
    async with provider.fast.transaction() as tx:
        assert sorted(await families.revoke(tx, now, sid="s1")) == sorted([a.id, b.id])
        assert await families.revoke(tx, now, sid="s1") == []
        assert await tokens.family_of(tx, digest("c")) == c
        with pytest.raises(ValueError):
            await families.revoke(tx, now)
        with pytest.raises(ValueError):
            await families.revoke(tx, now, family_id=c.id, sid="s2")


async def test_unknown_token(provider):
    h = digest("never issued")
    async with provider.fast.transaction() as tx:
        assert await tokens.family_of(tx, h) is None
        assert await tokens.rotate(tx, h, int(time.time())) is None
        assert await tokens.get(tx, h) is None
        assert await families.revoke(tx, int(time.time()), family_id="0" * 32) == []
        assert await families.live_access_tokens(tx, "0" * 32, int(time.time())) == []


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL run in fast-store transactions, audit trail excluded."""
    seen: list[str] = []
    for cls in (fast._SqliteTx, fast._PgTx):
        for name in ("one", "all", "run", "many"):
            def wrap(orig: Any) -> Any:
                async def counted(self: Any, sql: str, *args: Any, **kw: Any) -> Any:
                    if "audit_events" not in sql and "pg_advisory_xact_lock" not in sql:
                        seen.append(sql)
                    return await orig(self, sql, *args, **kw)
                return counted
            monkeypatch.setattr(cls, name, wrap(getattr(cls, name)))
    return seen


async def test_refresh_hot_path_statement_count(http, app, statements):
    """Family and token lookup, rotation, user, groups, access token jti, new refresh token:
    six statements per refresh, seven inside the concurrency grace window."""
    first = await tokens_for(http, app)
    data = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    auth = (app.client_id, app.secret)
    statements.clear()
    assert (await http.post("/token", data=data, auth=auth)).status_code == 200
    assert len(statements) == 6, statements
    statements.clear()
    assert (await http.post("/token", data=data, auth=auth)).status_code == 200  # grace
    assert len(statements) == 7, statements
