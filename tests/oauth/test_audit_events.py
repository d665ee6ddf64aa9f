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
