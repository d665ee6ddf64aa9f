"""Helpers that drive Bastion like a user agent and a client would, over HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from bastion.identity.clients import create_client
from bastion.identity.users import create_user
from bastion.oauth.provider import Provider

REDIRECT = "http://127.0.0.1:9000/cb"
PASSWORD = "correct horse battery staple"
_HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


@dataclass
class Registered:
    client_id: str
    secret: str | None
    redirect_uri: str = REDIRECT


async def add_user(provider: Provider, name: str = "alice",
                   roles: tuple[str, ...] = ("order:view", "order:create")) -> str:
    async with provider.sessions.begin() as db:
        user = await create_user(db, name, PASSWORD, roles=list(roles), name=name.title(),
                                 email=f"{name}@example.com")
    return user.id


async def add_client(provider: Provider, **kw: Any) -> Registered:
    args: dict[str, Any] = {
        "name": "Test app", "redirect_uris": [REDIRECT],
        "scopes": ["openid", "profile", "email", "offline_access", "order:view",
                   "order:create"],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
    }
    if kw.get("public"):
        args["grant_types"] = ["authorization_code", "refresh_token"]
    args.update(kw)
    async with provider.sessions.begin() as db:
        client, secret = await create_client(db, provider.wrapper, **args)
    return Registered(client.client_id, secret)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def hidden_fields(html: str) -> dict[str, str]:
    return dict(_HIDDEN.findall(html))


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class CodeResult:
    code: str
    verifier: str
    state: str
    nonce: str
    params: dict[str, str]


async def authorize(http: httpx.AsyncClient, client: Registered, *,
                    scope: str = "openid profile order:view order:create offline_access",
                    username: str = "alice", password: str = PASSWORD, consent: bool = True,
                    extra: dict[str, str] | None = None) -> CodeResult:
    """Run /authorize → login → consent and return the code from the redirect."""
    verifier, challenge = pkce()
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    params = {"response_type": "code", "client_id": client.client_id,
              "redirect_uri": client.redirect_uri, "scope": scope, "state": state,
              "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(extra or {})
    r = await http.get("/authorize", params=params)
    while r.status_code in (302, 303):
        loc = r.headers["location"]
        if loc.startswith(client.redirect_uri):
            q = query_of(loc)
            return CodeResult(q.get("code", ""), verifier, state, nonce, q)
        page = await http.get(loc)
        assert page.status_code == 200, page.text
        fields = hidden_fields(page.text)
        if urlsplit(loc).path == "/login":
            fields.update(username=username, password=password)
            r = await http.post("/login", data=fields)
            assert r.status_code in (302, 303), r.text
        elif urlsplit(loc).path == "/consent":
            fields["decision"] = "allow" if consent else "deny"
            r = await http.post("/consent", data=fields)
        else:
            raise AssertionError(f"unexpected redirect {loc}")
    raise AssertionError(f"authorization ended with {r.status_code}: {r.text[:300]}")


async def exchange(http: httpx.AsyncClient, client: Registered, result: CodeResult,
                   **over: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": result.code,
            "redirect_uri": client.redirect_uri, "code_verifier": result.verifier}
    data.update(over)
    auth = (client.client_id, client.secret) if client.secret else None
    if auth is None:
        data["client_id"] = client.client_id
    return await http.post("/token", data=data, auth=auth)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def tokens_for(http: httpx.AsyncClient, client: Registered, **kw: Any) -> dict[str, Any]:
    """The token response of a full code flow (login, consent, exchange)."""
    r = await exchange(http, client, await authorize(http, client, **kw))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def works(http: httpx.AsyncClient, access_token: str) -> bool:
    """Whether the Orders API accepts ``access_token`` (401 means refused)."""
    r = await http.get("/orders", headers=bearer(access_token))
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200
