"""Every security decision of the identity provider is in the trail, correlated by request
id, and no password, code, token or secret ever reaches it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.flows import PASSWORD, authorize, exchange, hidden_fields, tokens_for

pytestmark = pytest.mark.anyio


async def trail(provider: Any) -> list[dict[str, Any]]:
    await provider.audit.flush()
    return [json.loads(bytes(r[0])) for r in await provider.fast.all(
        "SELECT body FROM audit_events ORDER BY seq")]


def names(records: list[dict[str, Any]]) -> list[str]:
    return [r["eventName"] for r in records]


async def test_a_whole_grant_is_in_the_trail_without_secrets(provider, http, app):
    result = await authorize(http, app)
    r = await exchange(http, app, result)
    tokens = r.json()
    refreshed = (await http.post("/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(app.client_id, app.secret))).json()
    # reuse of the rotated refresh token: detected, family revoked
    provider.settings.__dict__["refresh_grace_seconds"] = 0  # beyond the grace window
    reuse = await http.post("/token", data={"grant_type": "refresh_token",
                                            "refresh_token": tokens["refresh_token"]},
                            auth=(app.client_id, app.secret))
    assert reuse.status_code == 400
    await http.post("/introspect", data={"token": refreshed["access_token"]},
                    auth=(app.client_id, app.secret))
    await http.post("/revoke", data={"token": refreshed["access_token"]},
                    auth=(app.client_id, app.secret))
    replay = await exchange(http, app, result)
    assert replay.status_code == 400
    records = await trail(provider)
    seen = names(records)
    for event in ("Login", "GrantConsent", "Authorize", "IssueToken", "RefreshToken",
                  "RefreshTokenReuseDetected", "IntrospectToken", "RevokeToken",
                  "CodeReplayDetected"):
        assert event in seen, event
    login = next(r for r in records if r["eventName"] == "Login")
    assert login["userIdentity"]["userName"] == "alice" and "errorCode" not in login
    issued = next(r for r in records if r["eventName"] == "IssueToken")
    assert issued["responseElements"]["issued"] == ["access_token", "refresh_token",
                                                    "id_token"]
    assert issued["requestParameters"]["clientId"] == app.client_id
    blob = "\n".join(json.dumps(r) for r in records)
    secrets = [PASSWORD, app.secret, result.code, result.verifier, tokens["access_token"],
               tokens["refresh_token"], tokens["id_token"], refreshed["access_token"],
               refreshed["refresh_token"]]
    for secret in secrets:
        assert secret and secret not in blob
    ids = [r["requestID"] for r in records if r["eventName"] in ("IssueToken", "RefreshToken")]
    assert len(ids) == len(set(ids))  # one request, one id


async def test_failed_and_throttled_logins(provider, http, app):
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": app.client_id, "redirect_uri": app.redirect_uri,
        "code_challenge": "x" * 43, "code_challenge_method": "S256", "scope": "openid"},
        follow_redirects=True)
    form = hidden_fields(r.text)
    outcomes = []
    for _ in range(7):
        r = await http.post("/login", data={**form, "username": "alice",
                                            "password": "not the password"})
        outcomes.append(r.status_code)
    assert 401 in outcomes and 429 in outcomes
    records = [x for x in await trail(provider) if x["eventName"] == "Login"]
    codes = {x.get("errorCode") for x in records}
    assert {"InvalidCredentials", "Throttled"} <= codes
    assert "not the password" not in json.dumps(records)


async def test_client_credentials_and_bad_client(provider, http, app):
    await tokens_for(http, app)
    r = await http.post("/token", data={"grant_type": "client_credentials"},
                        auth=(app.client_id, "wrong-secret"))
    assert r.status_code == 401
    failed = [x for x in await trail(provider)
              if x["eventName"] == "IssueToken" and x.get("errorCode")]
    assert failed and failed[-1]["errorCode"] == "invalid_client"
    assert "wrong-secret" not in json.dumps(failed)


# --- refusals that had no record (issue 8 item 11) ----------------------------------------------

def refusals(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r["eventName"] == event and r.get("errorCode")]


@pytest.mark.parametrize("endpoint,event", [("/introspect", "IntrospectToken"),
                                            ("/revoke", "RevokeToken")])
@pytest.mark.parametrize("how", ["basic", "post", "unknown-client"])
async def test_failed_client_authentication_audited(provider, http, app, endpoint, event, how):
    """A wrong secret (or an unknown client) at /introspect and /revoke left no record:
    now the refusal is in the trail, with the claimed client id and never the secret or
    the token."""
    token = (await tokens_for(http, app))["access_token"]
    wrong = "wrong-" + app.secret[:12]
    client_id = "no-such-client" if how == "unknown-client" else app.client_id
    if how == "post":
        r = await http.post(endpoint, data={"token": token, "client_id": client_id,
                                            "client_secret": wrong})
    else:
        r = await http.post(endpoint, data={"token": token}, auth=(client_id, wrong))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    records = refusals(await trail(provider), event)
    assert len(records) == 1, records
    rec = records[0]
    assert rec["errorCode"] == "invalid_client"
    assert rec["requestParameters"]["clientId"] == client_id
    assert rec["userIdentity"]["type"] == "Anonymous"
    blob = json.dumps(rec)
    assert wrong not in blob and token not in blob and app.secret not in blob


async def test_public_client_introspection_refusal_audited(provider, http, app):
    from tests.flows import add_client

    public = await add_client(provider, public=True)
    r = await http.post("/introspect", data={"token": "x" * 40, "client_id": public.client_id})
    assert r.status_code == 401
    rec = refusals(await trail(provider), "IntrospectToken")[-1]
    assert rec["userIdentity"]["clientId"] == public.client_id
    assert "x" * 40 not in json.dumps(rec)


async def test_bad_id_token_hint_audited(provider, http, app):
    hint = (await tokens_for(http, app))["id_token"]
    forged = hint[:-8] + ("A" * 8 if not hint.endswith("A" * 8) else "B" * 8)
    r = await http.get("/logout", params={"id_token_hint": forged})
    assert r.status_code == 400
    rec = refusals(await trail(provider), "Logout")[-1]
    assert rec["errorCode"] == "InvalidIdTokenHint"
    assert forged not in json.dumps(rec) and hint not in json.dumps(rec)


async def test_unregistered_post_logout_redirect_uri_audited(provider, http, app):
    r = await http.get("/logout", params={"client_id": app.client_id,
                                          "post_logout_redirect_uri": "https://evil.example/"})
    assert r.status_code == 400 and "location" not in r.headers
    rec = refusals(await trail(provider), "Logout")[-1]
    assert rec["errorCode"] == "UnregisteredPostLogoutRedirectUri"
    assert rec["requestParameters"]["clientId"] == app.client_id
    assert rec["requestParameters"]["postLogoutRedirectUri"] == "https://evil.example/"


@pytest.mark.parametrize("over,code", [
    pytest.param({"redirect_uri": "https://evil.example/cb"}, "UnregisteredRedirectUri",
                 id="unknown-redirect_uri"),
    pytest.param({"client_id": "no-such-client"}, "UnknownClient", id="unknown-client"),
    pytest.param({"scope": "openid admin"}, "invalid_scope", id="scope-not-allowed"),
])
async def test_refused_authorization_request_audited(provider, http, app, over, code):
    """An unknown redirect_uri at /authorize (an open-redirect or code-theft probe) left no
    record; it and the other refusals are now in the trail (never state or nonce)."""
    params = {"response_type": "code", "client_id": app.client_id,
              "redirect_uri": app.redirect_uri, "scope": "openid", "state": "secret-state",
              "nonce": "secret-nonce", "code_challenge": "c" * 43,
              "code_challenge_method": "S256", **over}
    r = await http.get("/authorize", params=params)
    assert r.status_code in (303, 400)
    rec = refusals(await trail(provider), "Authorize")[-1]
    assert rec["errorCode"] == code
    if "redirect_uri" in over:
        assert rec["requestParameters"]["redirectUri"] == over["redirect_uri"]
    blob = json.dumps(rec)
    assert "secret-state" not in blob and "secret-nonce" not in blob
