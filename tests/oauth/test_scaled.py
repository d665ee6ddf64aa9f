"""Two stateless instances sharing PostgreSQL and Redis behave as one server: a flow started
on one finishes on the other, and a revocation on one is enforced by the other at once."""

from __future__ import annotations

import secrets

import httpx
import pytest

from bastion.app import build_app
from bastion.runtime import open_provider
from tests.conftest import ISSUER, _reset, make_settings
from tests.flows import add_client, add_user, authorize, exchange

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair(tmp_path, pg_url):
    await _reset(pg_url)
    # one data dir: instances share the key-encryption key, as they would share an HSM
    common = {"redis_url": "redis://127.0.0.1:6379/0", "key_refresh_interval": 60}
    a = await open_provider(make_settings(tmp_path, pg_url, **common))
    b = await open_provider(make_settings(tmp_path, pg_url, **common))
    for p in (a, b):  # isolate this test's keys in the shared Redis
        p.kv._p = f"bastion-test:{secrets.token_hex(4)}:"  # noqa: SLF001
    b.kv._p = a.kv._p  # noqa: SLF001
    clients = []
    for p in (a, b):
        transport = httpx.ASGITransport(app=build_app(p), client=("127.0.0.1", 50000))
        clients.append(httpx.AsyncClient(transport=transport, base_url=ISSUER))
    yield (a, clients[0]), (b, clients[1])
    for c in clients:
        await c.aclose()
    await a.close()
    await b.close()


async def test_flow_across_instances_and_instant_revocation(pair):
    (a, http_a), (b, http_b) = pair
    await add_user(a)
    client = await add_client(a)
    result = await authorize(http_a, client)  # login + consent on A
    tokens = await exchange(http_b, client, result)  # code redeemed on B
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    assert (await http_a.get("/orders", headers=bearer)).status_code == 200
    revoked = await http_b.post("/revoke", data={"token": access},
                                auth=(client.client_id, client.secret))
    assert revoked.status_code == 200
    # no sync interval has passed (60 s): A sees B's revocation through Redis
    denied = await http_a.get("/orders", headers=bearer)
    assert denied.status_code == 401
