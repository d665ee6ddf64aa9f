"""Housekeeping and hygiene: expired state is purged; no secret ever reaches a log line."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import func, select, update

from bastion.store.models import (
    AuthorizationCode,
    IssuedAccessToken,
    RefreshToken,
    RevokedToken,
    Session,
    TokenFamily,
)
from tests.flows import PASSWORD, add_client, add_user, authorize, exchange

pytestmark = pytest.mark.anyio


async def _count(provider, model) -> int:
    async with provider.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(model)))


async def test_purge_removes_only_expired_state(http, provider):
    await add_user(provider)
    client = await add_client(provider)
    live = await exchange(http, client, await authorize(http, client))
    old = await exchange(http, client, await authorize(http, client))
    await http.post("/revoke", data={"token": old.json()["access_token"]},
                    auth=(client.client_id, client.secret))
    past = int(time.time()) - 1
    async with provider.sessions.begin() as db:
        fams = (await db.scalars(select(TokenFamily.id).order_by(TokenFamily.created_at))).all()
        await db.execute(update(TokenFamily).where(TokenFamily.id == fams[-1])
                         .values(expires_at=past))
        await db.execute(update(AuthorizationCode).values(expires_at=past))
        await db.execute(update(Session).values(expires_at=past))
        await db.execute(update(IssuedAccessToken).where(IssuedAccessToken.family_id == fams[-1])
                         .values(expires_at=past))
        await db.execute(update(RevokedToken).values(expires_at=past))
    await provider.purge()
    assert await _count(provider, AuthorizationCode) == 0
    assert await _count(provider, Session) == 0
    assert await _count(provider, RevokedToken) == 0
    assert await _count(provider, TokenFamily) == 1  # the live family stays
    assert await _count(provider, RefreshToken) == 1  # cascade removed the expired family's
    refreshed = await http.post("/token", data={"grant_type": "refresh_token",
                                                "refresh_token": live.json()["refresh_token"]},
                                auth=(client.client_id, client.secret))
    assert refreshed.status_code == 200


async def test_no_secret_in_any_log_line(http, provider, caplog):
    caplog.set_level(logging.DEBUG)
    await add_user(provider)
    client = await add_client(provider)
    result = await authorize(http, client)
    tokens = (await exchange(http, client, result)).json()
    await exchange(http, client, result)  # replay, logged as a refusal
    await http.post("/login", data={"username": "alice", "password": "wrong-" + PASSWORD})
    await http.post("/token", data={"grant_type": "refresh_token",
                                    "refresh_token": tokens["refresh_token"]},
                    auth=(client.client_id, client.secret + "x"))
    await http.get("/orders", headers={"Authorization": "Bearer " + tokens["access_token"] + "x"})
    await http.post("/revoke", data={"token": tokens["refresh_token"]},
                    auth=(client.client_id, client.secret))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "expected some log output"
    for secret in (PASSWORD, client.secret, result.code, result.verifier,
                   tokens["access_token"], tokens["refresh_token"], tokens["id_token"],
                   tokens["access_token"].split(".")[2]):
        assert secret not in text
