"""The refresh grant checks and signs before its write transaction, then decides on what the
transaction reads: a change that lands in between (the grant revoked, the user disabled, new
roles) is never missed. Each case makes the change at that very moment, through the first
read of the user, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bastion.oauth.families import load_subject, revoke_families, token_hash
from bastion.oauth.grants import refresh_token as grant
from bastion.oauth.refresh import SqlRefreshTokens
from tests.flows import bearer, tokens_for
from tests.oauth.test_rfc9700 import refresh

pytestmark = pytest.mark.anyio

SCOPE = "openid profile order:view offline_access"


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def between(monkeypatch: pytest.MonkeyPatch, change: Callable[[], Awaitable[None]]) -> list[int]:
    """Run ``change`` right after the grant's first read of the user, before its
    transaction; returns the count of reads."""
    reads: list[int] = []

    async def first_read_then_change(reader: Any, user_id: str) -> Any:
        subject = await load_subject(reader, user_id)
        reads.append(1)
        if len(reads) == 1:
            await change()
        return subject

    monkeypatch.setattr(grant, "load_subject", first_read_then_change)
    return reads


async def family_id(provider: Any, refresh_token: str) -> str:
    family = await SqlRefreshTokens().family_of(provider.fast, token_hash(refresh_token))
    assert family is not None
    return family.id


async def test_a_grant_revoked_in_between_is_refused_and_issues_nothing(
        http, provider, app, monkeypatch):
    tokens = await tokens_for(http, app, scope=SCOPE)
    fid = await family_id(provider, tokens["refresh_token"])

    async def revoke() -> None:
        async with provider.fast.transaction() as tx:
            await revoke_families(provider, tx, "id = :fid", fid=fid)

    reads = between(monkeypatch, revoke)
    r = await refresh(http, app, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "access_token" not in r.text and reads == [1]  # refused before the second read
    row = await provider.fast.one("SELECT rotated_at FROM refresh_tokens WHERE token_hash = :h",
                                  h=token_hash(tokens["refresh_token"]))
    assert row["rotated_at"] is None  # not rotated: nothing was issued in a revoked grant
    n = await provider.fast.one("SELECT count(*) FROM refresh_tokens WHERE family_id = :f",
                                f=fid)
    assert n[0] == 1
    assert (await http.get("/orders", headers=bearer(tokens["access_token"]))).status_code == 401


async def test_a_user_disabled_in_between_gets_no_tokens(http, provider, app, alice,
                                                         monkeypatch):
    tokens = await tokens_for(http, app, scope=SCOPE)

    async def disable() -> None:
        async with provider.fast.transaction() as tx:
            await tx.run("UPDATE users SET disabled = :d WHERE id = :u", d=True, u=alice)

    between(monkeypatch, disable)
    r = await refresh(http, app, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "no longer active" in r.json()["error_description"]
    assert "access_token" not in r.text


async def test_roles_changed_in_between_are_in_the_new_tokens(http, provider, app, alice,
                                                              monkeypatch):
    tokens = await tokens_for(http, app, scope=SCOPE)
    before = claims(tokens["access_token"])["roles"]

    async def grant_role() -> None:
        async with provider.fast.transaction() as tx:
            await tx.run("UPDATE users SET roles = :r WHERE id = :u",
                         r=json.dumps([*before, "auditor"]), u=alice)

    reads = between(monkeypatch, grant_role)
    r = await refresh(http, app, tokens["refresh_token"])
    assert r.status_code == 200, r.text
    assert reads == [1, 1]
    assert claims(r.json()["access_token"])["roles"] == sorted({*before, "auditor"})
    assert "auditor" in claims(r.json()["id_token"])["roles"]


async def test_an_unchanged_grant_signs_once_outside_the_transaction(http, provider, app,
                                                                    monkeypatch):
    tokens = await tokens_for(http, app, scope=SCOPE)
    open_transactions = 0
    signed_inside: list[int] = []
    real_transaction, real_prepare = provider.fast.transaction, grant.prepare_tokens

    @contextlib.asynccontextmanager
    async def counted() -> Any:
        nonlocal open_transactions
        async with real_transaction() as tx:
            open_transactions += 1
            try:
                yield tx
            finally:
                open_transactions -= 1

    def prepare(*args: Any, **kw: Any) -> Any:
        signed_inside.append(open_transactions)
        return real_prepare(*args, **kw)

    monkeypatch.setattr(provider.fast, "transaction", counted)
    monkeypatch.setattr(grant, "prepare_tokens", prepare)
    r = await refresh(http, app, tokens["refresh_token"])
    assert r.status_code == 200, r.text
    assert signed_inside == [0]  # once, and in no write transaction
