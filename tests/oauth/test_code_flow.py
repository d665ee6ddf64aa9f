"""The chapter's flow end to end over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from joserfc import jwt

from tests.flows import add_client, add_user, authorize, exchange

pytestmark = pytest.mark.anyio


async def test_code_flow_to_orders(http, provider):
    await add_user(provider)
    client = await add_client(provider)
    result = await authorize(http, client)
    assert result.code and result.params["state"] == result.state
    assert result.params["iss"] == provider.issuer_url  # RFC 9207
    r = await exchange(http, client, result)
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["cache-control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert {"access_token", "refresh_token", "id_token"} <= body.keys()
    at = jwt.decode(body["access_token"], provider.keyring.public[
        jwt.decode(body["access_token"], provider.keyring.signing).header["kid"]])
    assert at.header["typ"] == "at+jwt" and at.header["alg"] == "ES256"
    for claim in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "roles"):
        assert claim in at.claims
    assert set(at.claims["roles"]) == {"order:view", "order:create"}
    idt = jwt.decode(body["id_token"], provider.keyring.signing)
    assert idt.claims["nonce"] == result.nonce and idt.claims["aud"] == client.client_id

    orders = await http.get("/orders", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert orders.status_code == 200 and orders.json() == {"orders": []}
    created = await http.post("/orders", json={"item": "tea", "quantity": 2,
                                               "unit_price_cents": 350},
                              headers={"Authorization": f"Bearer {body['access_token']}"})
    assert created.status_code == 201, created.text
    listed = await http.get("/orders", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert [o["item"] for o in listed.json()["orders"]] == ["tea"]


async def test_refresh_rotation_and_reuse_detection(http, provider):
    await add_user(provider)
    client = await add_client(provider)
    tokens = (await exchange(http, client, await authorize(http, client))).json()
    auth = (client.client_id, client.secret)
    r1 = await http.post("/token", data={"grant_type": "refresh_token",
                                         "refresh_token": tokens["refresh_token"]}, auth=auth)
    assert r1.status_code == 200, r1.text
    new = r1.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    provider.settings.__dict__["refresh_grace_seconds"] = 0  # beyond the grace window
    replay = await http.post("/token", data={"grant_type": "refresh_token",
                                             "refresh_token": tokens["refresh_token"]}, auth=auth)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # the whole family is revoked: the legitimate new refresh token and access token too
    r2 = await http.post("/token", data={"grant_type": "refresh_token",
                                         "refresh_token": new["refresh_token"]}, auth=auth)
    assert r2.json()["error"] == "invalid_grant"
    orders = await http.get("/orders", headers={"Authorization": f"Bearer {new['access_token']}"})
    assert orders.status_code == 401
    assert 'error="invalid_token"' in orders.headers["www-authenticate"]


async def test_concurrent_refresh_within_grace(http, provider):
    await add_user(provider)
    client = await add_client(provider)
    tokens = (await exchange(http, client, await authorize(http, client))).json()
    auth = (client.client_id, client.secret)
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    first = await http.post("/token", data=data, auth=auth)
    second = await http.post("/token", data=data, auth=auth)
    assert first.status_code == 200 and second.status_code == 200
    again = await http.post("/token", data={"grant_type": "refresh_token",
                                            "refresh_token": first.json()["refresh_token"]},
                            auth=auth)
    assert again.status_code == 200


async def test_code_replay_revokes_tokens(http, provider):
    await add_user(provider)
    client = await add_client(provider)
    result = await authorize(http, client)
    first = await exchange(http, client, result)
    assert first.status_code == 200
    second = await exchange(http, client, result)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    at = first.json()["access_token"]
    r = await http.get("/orders", headers={"Authorization": f"Bearer {at}"})
    assert r.status_code == 401


async def test_client_credentials(http, provider):
    client = await add_client(provider, roles=["order:view"])
    r = await http.post("/token", data={"grant_type": "client_credentials", "scope": "order:view"},
                        auth=(client.client_id, client.secret))
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body and body["scope"] == "order:view"
