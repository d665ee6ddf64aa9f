"""Group roles apply to members: they reach access tokens and the Orders API."""

from __future__ import annotations

import pytest
from joserfc import jwt

from bastion.identity.users import add_member, create_group
from tests.flows import add_client, add_user, authorize, exchange

pytestmark = pytest.mark.anyio


async def test_group_roles_reach_tokens(http, provider):
    await add_user(provider, "erin", roles=())
    async with provider.sessions.begin() as db:
        await create_group(db, "buyers", ["order:create", "order:view"])
        await add_member(db, "buyers", "erin")
    client = await add_client(provider)
    tokens = (await exchange(http, client, await authorize(http, client, username="erin"))).json()
    claims = jwt.decode(tokens["access_token"], provider.keyring.signing).claims
    assert claims["roles"] == ["order:create", "order:view"]
    r = await http.post("/orders", json={"item": "pen", "quantity": 1, "unit_price_cents": 99},
                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 201
