"""RFC 7009 — Token Revocation, and RFC 7662 — Token Introspection, over HTTP.
https://www.rfc-editor.org/rfc/rfc7009 · https://www.rfc-editor.org/rfc/rfc7662
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bastion.app import build_app
from bastion.runtime import open_provider
from tests.flows import (
    Registered,
    add_client,
    bearer,
    tokens_for,
    works,
)

pytestmark = pytest.mark.anyio

ISSUER = "http://bastion.test"
HINTS = [pytest.param(None, id="no-hint"), pytest.param("refresh_token", id="hint-refresh"),
         pytest.param("access_token", id="hint-access")]



def auth_of(client: Registered) -> dict[str, Any]:
    return {"auth": (client.client_id, client.secret)} if client.secret else {}


def with_id(client: Registered, data: dict[str, str]) -> dict[str, str]:
    return data if client.secret else {**data, "client_id": client.client_id}


async def revoke(http: httpx.AsyncClient, client: Registered, token: str,
                 hint: str | None = None) -> httpx.Response:
    data = {"token": token} | ({"token_type_hint": hint} if hint else {})
    return await http.post("/revoke", data=with_id(client, data), **auth_of(client))


async def introspect(http: httpx.AsyncClient, client: Registered, token: str,
                     hint: str | None = None) -> httpx.Response:
    data = {"token": token} | ({"token_type_hint": hint} if hint else {})
    r = await http.post("/introspect", data=with_id(client, data), **auth_of(client))
    if r.status_code == 200:
        assert r.headers["cache-control"] == "no-store"  # RFC 7662 §2.2 (a token response)
    return r


async def refresh(http: httpx.AsyncClient, client: Registered, token: str) -> httpx.Response:
    return await http.post("/token", data=with_id(client, {"grant_type": "refresh_token",
                                                           "refresh_token": token}),
                           **auth_of(client))






@pytest.fixture
async def other(provider: Any, alice: str) -> Registered:
    return await add_client(provider)


# --- RFC 7009 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("hint", HINTS)
async def test_revoke_refresh_token_revokes_the_grant(http, app, hint):
    """RFC 7009 §2.1: revoking a refresh token SHOULD invalidate the access tokens of the same
    grant; the search extends past a wrong hint (§2.1 "MUST extend its search")."""
    first = await tokens_for(http, app)
    rotated = (await refresh(http, app, first["refresh_token"])).json()
    assert await works(http, first["access_token"]) and await works(http, rotated["access_token"])
    r = await revoke(http, app, rotated["refresh_token"], hint)
    assert r.status_code == 200
    assert not await works(http, first["access_token"])
    assert not await works(http, rotated["access_token"])
    assert (await http.get("/userinfo", headers=bearer(rotated["access_token"]))).status_code \
        == 401
    r = await refresh(http, app, rotated["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert (await introspect(http, app, rotated["refresh_token"])).json() == {"active": False}


@pytest.mark.parametrize("hint", HINTS)
async def test_revoke_access_token_is_denied_at_once(http, app, hint):
    """RFC 7009 §2: revoking an access token (a JWT) denies its jti until it expires:
    /orders and /userinfo refuse it on the next request."""
    tokens = await tokens_for(http, app)
    assert await works(http, tokens["access_token"])
    r = await revoke(http, app, tokens["access_token"], hint)
    assert r.status_code == 200
    assert not await works(http, tokens["access_token"])
    r = await http.get("/userinfo", headers=bearer(tokens["access_token"]))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert (await introspect(http, app, tokens["access_token"])).json() == {"active": False}


async def test_revoked_access_token_denied_by_another_instance(http, provider, settings, app):
    """The denylist reaches every instance sharing the database (no shared Redis): after its
    sync, a second instance refuses the token too."""
    tokens = await tokens_for(http, app)
    second = await open_provider(settings)
    try:
        transport = httpx.ASGITransport(app=build_app(second), client=("127.0.0.1", 50002))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http2:
            assert await works(http2, tokens["access_token"])
            assert (await revoke(http, app, tokens["access_token"])).status_code == 200
            await second.denylist.sync()
            assert not await works(http2, tokens["access_token"])
    finally:
        await second.close()


async def test_revoke_public_client_own_token(http, provider, alice):
    """RFC 7009 §2.1: public clients identify themselves with client_id."""
    client = await add_client(provider, public=True)
    tokens = await tokens_for(http, client)
    assert (await revoke(http, client, tokens["refresh_token"])).status_code == 200
    assert not await works(http, tokens["access_token"])
    assert (await refresh(http, client, tokens["refresh_token"])).status_code == 400


@pytest.mark.parametrize("token", [
    pytest.param("unknown-token", id="rfc7009-2.2/unknown"),
    pytest.param("eyJhbGciOiJFUzI1NiJ9.e30.sig", id="rfc7009-2.2/jwt-shaped-garbage"),
])
async def test_revoke_unknown_token_answers_200(http, app, token):
    """RFC 7009 §2.2: "invalid tokens do not cause an error response"."""
    r = await revoke(http, app, token)
    assert r.status_code == 200 and r.content in (b"", b"{}")


async def test_revoke_twice_answers_200(http, app):
    tokens = await tokens_for(http, app)
    assert (await revoke(http, app, tokens["refresh_token"])).status_code == 200
    assert (await revoke(http, app, tokens["refresh_token"])).status_code == 200


@pytest.mark.parametrize("kind", ["refresh_token", "access_token"])
async def test_revoke_another_clients_token_has_no_effect(http, app, other, kind):
    """RFC 7009 §2.1: "The authorization server first validates the client credentials ...
    and then verifies whether the token was issued to the client making the revocation
    request" — another client cannot revoke it."""
    tokens = await tokens_for(http, app)
    r = await revoke(http, other, tokens[kind])
    assert r.status_code in (200, 400, 401, 403)
    assert await works(http, tokens["access_token"])
    assert (await refresh(http, app, tokens["refresh_token"])).status_code == 200


async def test_revoke_requires_client_authentication(http, app):
    """RFC 7009 §2.1: the client authenticates as at the token endpoint."""
    tokens = await tokens_for(http, app)
    r = await http.post("/revoke", data={"token": tokens["refresh_token"],
                                         "client_id": app.client_id})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await http.post("/revoke", data={"token": tokens["refresh_token"]},
                        auth=(app.client_id, "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert await works(http, tokens["access_token"])


# --- RFC 7662 -------------------------------------------------------------------------------------

async def test_introspect_active_access_token(http, provider, app, alice):
    """RFC 7662 §2.2: active, and the token's scope, client_id, sub, exp, iat, iss, aud, jti."""
    tokens = await tokens_for(http, app)
    caller = await add_client(provider)  # a resource server's own credentials
    r = await introspect(http, caller, tokens["access_token"])
    assert r.status_code == 200
    body = r.json()
    assert body["active"] is True
    assert body["client_id"] == app.client_id and body["sub"] == alice
    assert body["scope"] == tokens["scope"] and body["iss"] == ISSUER
    assert body["aud"] == provider.api_audience and body["jti"]
    assert body["iat"] <= time.time() < body["exp"]
    assert body["token_type"] in ("Bearer", "access_token")


async def test_introspect_client_credentials_token(http, provider):
    client = await add_client(provider, roles=["order:view"])
    r = await http.post("/token", data={"grant_type": "client_credentials",
                                        "scope": "order:view"},
                        auth=(client.client_id, client.secret))
    body = (await introspect(http, client, r.json()["access_token"])).json()
    assert body["active"] is True and body["sub"] == client.client_id
    assert body["scope"] == "order:view"


async def test_introspect_refresh_token_only_for_its_client(http, app, other, alice):
    """RFC 7662 §4: refresh tokens are described to the client they were issued to only."""
    tokens = await tokens_for(http, app)
    own = (await introspect(http, app, tokens["refresh_token"], "refresh_token")).json()
    assert own["active"] is True and own["client_id"] == app.client_id
    assert own["sub"] == alice and own["exp"] > time.time()
    assert (await introspect(http, other, tokens["refresh_token"])).json() == {"active": False}


async def test_introspect_rotated_refresh_token_inactive(http, provider, app):
    """RFC 9700 §4.14.2: once rotated (past the grace window) a refresh token is inactive."""
    tokens = await tokens_for(http, app)
    assert (await refresh(http, app, tokens["refresh_token"])).status_code == 200
    provider.settings.__dict__["refresh_grace_seconds"] = 0
    assert (await introspect(http, app, tokens["refresh_token"])).json() == {"active": False}


@pytest.mark.parametrize("make", [
    pytest.param(lambda p, t: "garbage", id="rfc7662-2.2/garbage"),
    pytest.param(lambda p, t: t["id_token"], id="rfc7662-2.2/id-token-is-not-an-access-token"),
    pytest.param(lambda p, t: p.tokens.access_token(
        subject="u", client_id="c", audience=p.api_audience, scope="order:view",
        ttl=-3600).token, id="rfc7662-2.2/expired-access-token"),
    pytest.param(lambda p, t: p.tokens.access_token(
        subject="u", client_id="c", audience="https://elsewhere.example", scope="order:view",
        ttl=300).token, id="rfc7662-2.2/access-token-for-another-audience"),
])
async def test_introspect_inactive_tokens(http, provider, app, make):
    """RFC 7662 §2.2: an inactive token gets {"active": false} and nothing else."""
    tokens = await tokens_for(http, app)
    r = await introspect(http, app, make(provider, tokens))
    assert r.status_code == 200 and r.json() == {"active": False}


async def test_introspect_refused_to_public_clients(http, provider, alice):
    """RFC 7662 §2.1: "the endpoint MUST also require some form of authorization"; a public
    client has no credentials."""
    client = await add_client(provider, public=True)
    tokens = await tokens_for(http, client)
    r = await introspect(http, client, tokens["access_token"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "active" not in r.json()


async def test_introspect_requires_client_authentication(http, app):
    tokens = await tokens_for(http, app)
    r = await http.post("/introspect", data={"token": tokens["access_token"]})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await http.post("/introspect", data={"token": tokens["access_token"]},
                        auth=(app.client_id, "wrong"))
    assert r.status_code == 401 and "active" not in r.json()
