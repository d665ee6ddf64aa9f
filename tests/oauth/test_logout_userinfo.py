"""OpenID Connect UserInfo (Core §5.3) and RP-Initiated Logout 1.0, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from sqlalchemy import update

from bastion.app import build_app
from bastion.store.models import User
from tests.flows import (
    Registered,
    add_client,
    bearer,
    hidden_fields,
    tokens_for,
    works,
)

pytestmark = pytest.mark.anyio

ISSUER = "http://bastion.test"
BYE = "http://127.0.0.1:9000/bye"
BYE_Q = "http://127.0.0.1:9000/bye?from=bastion"





async def signed_in(http: httpx.AsyncClient, client: Registered) -> bool:
    """Whether this browser still has a login session (prompt=none gets a code)."""
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uri, "scope": "openid order:view", "prompt": "none",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256"})
    assert r.status_code == 303
    return "code=" in r.headers["location"]



@pytest.fixture
async def app(provider: Any, alice: str) -> Registered:
    return await add_client(provider, post_logout_redirect_uris=[BYE, BYE_Q])


@pytest.fixture
async def browser2(provider: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(provider), client=("127.0.0.1", 50003))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


# --- UserInfo -------------------------------------------------------------------------------------

@pytest.mark.parametrize("scope,present,absent", [
    pytest.param("openid", {"sub"}, {"name", "preferred_username", "email", "email_verified"},
                 id="oidc-core-5.4/openid-only"),
    pytest.param("openid profile", {"sub", "name", "preferred_username"},
                 {"email", "email_verified"}, id="oidc-core-5.4/profile"),
    pytest.param("openid email", {"sub", "email", "email_verified"},
                 {"name", "preferred_username"}, id="oidc-core-5.4/email"),
    pytest.param("openid profile email",
                 {"sub", "name", "preferred_username", "email", "email_verified"}, set(),
                 id="oidc-core-5.4/profile-and-email"),
])
async def test_userinfo_claims_follow_scope(http, provider, app, alice, scope, present, absent):
    """OIDC Core §5.4: each scope releases its claims, and only those."""
    tokens = await tokens_for(http, app, scope=scope)
    for method in ("GET", "POST"):  # §5.3.1: MUST support GET and POST
        r = await http.request(method, "/userinfo", headers=bearer(tokens["access_token"]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert present <= body.keys() and not absent & body.keys(), body
        assert r.headers["cache-control"] == "no-store"
    # §5.3.2: the sub MUST exactly match the ID token's sub
    assert body["sub"] == alice
    assert jwt.decode(tokens["id_token"], provider.keyring.signing).claims["sub"] == body["sub"]
    if "email" in present:
        assert body["email"] == "alice@example.com"
    if "name" in present:
        assert body["name"] == "Alice" and body["preferred_username"] == "alice"


async def test_userinfo_needs_openid_scope(http, app):
    """OIDC Core §5.3: the access token must carry openid; otherwise RFC 6750 §3.1
    insufficient_scope (403)."""
    tokens = await tokens_for(http, app, scope="order:view")
    r = await http.get("/userinfo", headers=bearer(tokens["access_token"]))
    assert r.status_code == 403
    assert r.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


async def test_userinfo_client_credentials_token_refused(http, provider):
    client = await add_client(provider, roles=["order:view"])
    r = await http.post("/token", data={"grant_type": "client_credentials"},
                        auth=(client.client_id, client.secret))
    r = await http.get("/userinfo", headers=bearer(r.json()["access_token"]))
    assert r.status_code == 403


@pytest.mark.parametrize("headers,error", [
    pytest.param({}, None, id="rfc6750-3.1/no-token"),
    pytest.param(bearer("abc.def.ghi"), "invalid_token", id="rfc6750-3.1/garbage"),
    pytest.param(bearer("a" * 10000), "invalid_token", id="rfc6750-3.1/oversized"),
])
async def test_userinfo_bad_token(http, headers, error):
    """OIDC Core §5.3.3 / RFC 6750 §3: 401 with a Bearer challenge."""
    r = await http.get("/userinfo", headers=headers)
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="')
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge


async def test_userinfo_disabled_user_refused(http, provider, app, alice):
    tokens = await tokens_for(http, app)
    async with provider.sessions.begin() as db:
        await db.execute(update(User).where(User.id == alice).values(disabled=True))
    r = await http.get("/userinfo", headers=bearer(tokens["access_token"]))
    assert r.status_code == 401


async def test_userinfo_id_token_is_not_an_access_token(http, app):
    tokens = await tokens_for(http, app)
    r = await http.get("/userinfo", headers=bearer(tokens["id_token"]))
    assert r.status_code == 401


# --- RP-Initiated Logout --------------------------------------------------------------------------

@pytest.mark.parametrize("target,state,expected", [
    pytest.param(BYE, "s-1", BYE + "?state=s-1", id="rp-logout-3/state-appended"),
    pytest.param(BYE, None, BYE, id="rp-logout-3/no-state"),
    pytest.param(BYE_Q, "a b&c", BYE_Q + "&state=a+b%26c", id="rp-logout-3/state-after-query"),
    pytest.param(None, None, None, id="rp-logout-2/no-redirect-signed-out-page"),
])
async def test_logout_with_hint_ends_session_and_revokes(http, app, target, state, expected):
    """RP-Initiated Logout §2–§3: an id_token_hint for the current session signs the user out
    without asking, the session's tokens stop working, and the user goes to the registered
    post_logout_redirect_uri with state."""
    tokens = await tokens_for(http, app)
    assert await works(http, tokens["access_token"]) and await signed_in(http, app)
    params = {"id_token_hint": tokens["id_token"]}
    if target:
        params["post_logout_redirect_uri"] = target
    if state:
        params["state"] = state
    r = await http.get("/logout", params=params)
    if expected:
        assert r.status_code == 303 and r.headers["location"] == expected
    else:
        assert r.status_code == 200 and "signed out" in r.text.lower()
    assert "bastion_session=" in r.headers.get("set-cookie", "")  # cookie cleared
    assert not await works(http, tokens["access_token"])
    refreshed = await http.post("/token", data={"grant_type": "refresh_token",
                                                "refresh_token": tokens["refresh_token"]},
                                auth=(app.client_id, app.secret))
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    assert not await signed_in(http, app)


@pytest.mark.parametrize("target,client_id", [
    pytest.param("https://evil.example/", "app", id="rp-logout-3/unregistered"),
    pytest.param(BYE + "/x", "app", id="rp-logout-3/path-appended"),
    pytest.param(BYE + "?x=1", "app", id="rp-logout-3/query-differs"),
    pytest.param("http://127.0.0.1:9001/bye", "app", id="rp-logout-3/port-differs"),
    pytest.param(BYE, None, id="rp-logout-3/no-client-to-check-against"),
    pytest.param(BYE, "other", id="rp-logout-3/registered-for-another-client"),
])
async def test_logout_redirect_must_be_registered(http, provider, app, target, client_id):
    """RP-Initiated Logout §3: the post_logout_redirect_uri MUST have been registered; an
    unregistered one is never followed and the user stays signed in."""
    tokens = await tokens_for(http, app)
    other = await add_client(provider)
    params = {"post_logout_redirect_uri": target}
    if client_id == "app":
        params["id_token_hint"] = tokens["id_token"]
    elif client_id == "other":
        params["client_id"] = other.client_id
    r = await http.get("/logout", params=params)
    assert r.status_code == 400 and "location" not in r.headers
    assert await works(http, tokens["access_token"]) and await signed_in(http, app)


async def test_logout_hint_client_mismatch(http, provider, app):
    tokens = await tokens_for(http, app)
    other = await add_client(provider)
    r = await http.get("/logout", params={"id_token_hint": tokens["id_token"],
                                          "client_id": other.client_id})
    assert r.status_code == 400 and "location" not in r.headers
    assert await works(http, tokens["access_token"])


async def test_logout_without_hint_asks_with_csrf(http, app):
    """RP-Initiated Logout §2: without a hint the OP asks the user; the confirmation form is
    CSRF-protected, and nothing ends until it is confirmed."""
    tokens = await tokens_for(http, app)
    page = await http.get("/logout", params={"client_id": app.client_id,
                                             "post_logout_redirect_uri": BYE, "state": "s"})
    assert page.status_code == 200
    fields = hidden_fields(page.text)
    assert len(fields.get("csrf", "")) >= 32
    assert fields["post_logout_redirect_uri"] == BYE and fields["state"] == "s"
    assert await works(http, tokens["access_token"]) and await signed_in(http, app)

    for bad in ({**fields, "confirm": "yes", "csrf": "0" * 64},
                {k: v for k, v in fields.items() if k != "csrf"} | {"confirm": "yes"},
                dict(fields)):  # no confirm
        r = await http.post("/logout", data=bad)
        assert r.status_code == 200 and "location" not in r.headers
        assert await works(http, tokens["access_token"]) and await signed_in(http, app)

    r = await http.post("/logout", data={**fields, "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == BYE + "?state=s"
    assert not await works(http, tokens["access_token"]) and not await signed_in(http, app)


async def test_logout_get_with_confirm_does_not_sign_out(http, app):
    """A cross-site GET (an <img> tag) cannot confirm a logout: confirmation is a POST."""
    tokens = await tokens_for(http, app)
    page = await http.get("/logout")
    fields = hidden_fields(page.text)
    r = await http.get("/logout", params={**fields, "confirm": "yes"})
    assert r.status_code == 200
    assert await works(http, tokens["access_token"]) and await signed_in(http, app)


async def test_logout_hint_of_another_session_asks(http, browser2, app):
    """A hint whose sid is not this browser's session does not sign it out silently (and
    does not touch the other session either)."""
    mine = await tokens_for(http, app)
    theirs = await tokens_for(browser2, app)
    r = await browser2.get("/logout", params={"id_token_hint": mine["id_token"]})
    assert r.status_code == 200 and 'name="csrf"' in r.text
    assert await works(http, mine["access_token"]) and await works(http, theirs["access_token"])
    assert await signed_in(http, app) and await signed_in(browser2, app)


async def test_logout_ends_only_this_session(http, browser2, app):
    """Logout revokes the tokens of the session it ends, not those of the user's other
    sessions."""
    mine = await tokens_for(http, app)
    theirs = await tokens_for(browser2, app)
    r = await http.get("/logout", params={"id_token_hint": mine["id_token"],
                                          "post_logout_redirect_uri": BYE})
    assert r.status_code == 303
    assert not await works(http, mine["access_token"])
    assert await works(http, theirs["access_token"]) and await signed_in(browser2, app)


async def test_logout_not_signed_in_redirects_to_registered_uri(http, provider, app):
    tokens = await tokens_for(http, app)
    transport = httpx.ASGITransport(app=build_app(provider), client=("127.0.0.1", 50004))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as fresh:
        r = await fresh.get("/logout", params={"id_token_hint": tokens["id_token"],
                                               "post_logout_redirect_uri": BYE, "state": "x"})
    assert r.status_code == 303 and r.headers["location"] == BYE + "?state=x"
    assert await works(http, tokens["access_token"])  # not this browser's session
