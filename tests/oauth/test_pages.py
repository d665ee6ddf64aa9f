"""The login and consent pages under concurrency: a pending authorization request is
consumed with one atomic operation (KV GETDEL), so it yields at most one code."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from bastion.store.models import AuthorizationCode, Consent
from tests.flows import PASSWORD, Registered, hidden_fields, pkce, query_of

pytestmark = pytest.mark.anyio

POSTS = 6


async def consent_form(http: httpx.AsyncClient, app: Registered) -> dict[str, str]:
    """Signed in, at the consent page: its form's fields."""
    _, challenge = pkce()
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": app.client_id, "redirect_uri": app.redirect_uri,
        "scope": "openid order:view", "state": "st", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    page = await http.get(r.headers["location"])
    r = await http.post("/login", data={**hidden_fields(page.text), "username": "alice",
                                        "password": PASSWORD})
    assert urlsplit(r.headers["location"]).path == "/consent", r.headers
    page = await http.get(r.headers["location"])
    assert page.status_code == 200
    return hidden_fields(page.text)


def got_code(r: httpx.Response, app: Registered) -> bool:
    location = r.headers.get("location", "")
    return location.startswith(app.redirect_uri) and "code" in query_of(location)


async def codes(provider: Any) -> int:
    async with provider.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(AuthorizationCode)) or 0)


async def test_concurrent_consent_posts_yield_one_code(http, provider, app):
    """Issue 8 item 9: two consent posts of one pending request both got a code (the request
    was read, then deleted). Now one post takes it; the others see an expired request."""
    fields = await consent_form(http, app)
    answers = await asyncio.gather(*(http.post("/consent", data={**fields, "decision": "allow"})
                                     for _ in range(POSTS)))
    assert sum(got_code(r, app) for r in answers) == 1, [r.status_code for r in answers]
    assert all(r.status_code == 400 and "expired" in r.text
               for r in answers if not got_code(r, app))
    assert await codes(provider) == 1
    async with provider.sessions() as db:
        assert len((await db.scalars(select(Consent))).all()) == 1


async def test_concurrent_allow_and_deny_one_wins(http, provider, app):
    """An allow racing a deny: exactly one decision is applied and answered."""
    fields = await consent_form(http, app)
    answers = await asyncio.gather(*(http.post("/consent", data={**fields, "decision": d})
                                     for d in ("allow", "deny") * (POSTS // 2)))
    redirected = [r for r in answers if r.headers.get("location", "").startswith(
        app.redirect_uri)]
    assert len(redirected) == 1
    q = query_of(redirected[0].headers["location"])
    assert ("code" in q) != (q.get("error") == "access_denied")
    assert await codes(provider) == (1 if "code" in q else 0)


async def test_consent_form_single_use(http, provider, app):
    fields = await consent_form(http, app)
    first = await http.post("/consent", data={**fields, "decision": "allow"})
    assert got_code(first, app)
    again = await http.post("/consent", data={**fields, "decision": "allow"})
    assert again.status_code == 400 and not got_code(again, app)
    assert await codes(provider) == 1
