"""The authorization code store's contract (oauth/codes.py), on SQLite and PostgreSQL:
``consume`` is atomic, so of concurrent redemptions exactly one gets the record."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest

from bastion.oauth.codes import SqlAuthorizationCodes
from bastion.store.models import AuthorizationCode

pytestmark = pytest.mark.anyio


async def stored_code(provider: Any, alice: str, client_id: str) -> str:
    h = hashlib.sha256(b"a code").hexdigest()
    async with provider.sessions.begin() as db:
        db.add(AuthorizationCode(
            code_hash=h, client_id=client_id, user_id=alice, sid=None, redirect_uri="",
            scope="openid", nonce=None, code_challenge=None, auth_time=int(time.time()),
            amr=["pwd"], expires_at=int(time.time()) + 60, consumed_at=None, family_id=None))
    return h


async def test_consume_is_single_use_under_concurrency(provider, alice, app):
    codes = SqlAuthorizationCodes()
    h = await stored_code(provider, alice, app.client_id)

    async def redeem() -> Any:
        async with provider.fast.transaction() as tx:
            return await codes.consume(tx, h, int(time.time()))

    rows = await asyncio.gather(*(redeem() for _ in range(8)))
    winners = [r for r in rows if r is not None]
    assert len(winners) == 1 and winners[0]["client_id"] == app.client_id
    async with provider.fast.transaction() as tx:
        assert await codes.consume(tx, h, int(time.time())) is None
        assert await codes.family_of(tx, h) is None


async def test_unknown_code(provider):
    codes = SqlAuthorizationCodes()
    async with provider.fast.transaction() as tx:
        assert await codes.consume(tx, "0" * 64, int(time.time())) is None
        assert await codes.family_of(tx, "0" * 64) is None
