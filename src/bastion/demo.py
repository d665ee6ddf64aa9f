"""``bastion serve --demo``: the chapter's example, seeded and explained.

A confidential client ``xyz``, a user ``alice`` with roles ``order:create`` and
``order:view``, a user ``bob`` with ``order:view`` only, and a few orders. Each ``--demo``
start issues fresh passwords and a fresh client secret (they are stored only as hashes, so
they cannot be shown again) and prints them with ready-to-paste commands.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bastion.identity.clients import create_client, secret_hash
from bastion.identity.passwords import hash_password
from bastion.identity.users import create_user, get_user_by_name
from bastion.oauth.provider import Provider
from bastion.oauth.rfc7636 import s256
from bastion.store.models import Client, Order

CLIENT_ID = "xyz"
DEMO_SCOPES = ["openid", "profile", "email", "offline_access", "order:view", "order:create"]
USERS = {"alice": ["order:create", "order:view"], "bob": ["order:view"]}
ORDERS = {"alice": [("Espresso beans 1kg", 2, 1890), ("Milk frother", 1, 4900)],
          "bob": [("Green tea 250g", 3, 750)]}


@dataclass(frozen=True)
class DemoCredentials:
    client_id: str
    client_secret: str
    redirect_uri: str
    passwords: dict[str, str]


async def seed(provider: Provider) -> DemoCredentials:
    redirect_uri = provider.url("/demo/callback")
    secret = secrets.token_urlsafe(32)
    passwords = {name: secrets.token_urlsafe(9) for name in USERS}
    changed: list[tuple[str, str]] = []  # (user, audit event)
    async with provider.sessions.begin() as db:
        client = await db.get(Client, CLIENT_ID)
        if client is None:
            client, _ = await create_client(
                db, provider.wrapper, name="Orders demo app (xyz)", client_id=CLIENT_ID,
                redirect_uris=[redirect_uri, "http://127.0.0.1/callback"],
                post_logout_redirect_uris=[provider.url("/demo/callback")],
                scopes=DEMO_SCOPES,
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
                roles=["order:view"])
        client.secret_hash = secret_hash(provider.wrapper, secret)
        for name, roles in USERS.items():
            user = await get_user_by_name(db, name)
            if user is None:
                user = await create_user(db, name, passwords[name], roles=roles,
                                         name=name.title(), email=f"{name}@example.com")
                changed.append((name, "CreateUser"))
                now = int(time.time())
                for item, qty, price in ORDERS[name]:
                    db.add(Order(id=secrets.token_hex(8), owner=user.id, item=item,
                                 quantity=qty, unit_price_cents=price, status="placed",
                                 created_at=now))
            else:
                user.password_hash = hash_password(passwords[name])
                changed.append((name, "ResetPassword"))
    provider._clients.pop(CLIENT_ID, None)  # noqa: SLF001 — drop the cached secret hash
    seeder = {"type": "Bastion", "principalId": "demo-seed"}
    await provider.audit.emit_many(
        [("RotateClientSecret", {"user_identity": seeder,
                                 "request_parameters": {"clientId": CLIENT_ID}})]
        + [(event, {"user_identity": seeder, "request_parameters": {"userName": name}})
           for name, event in changed])
    return DemoCredentials(CLIENT_ID, secret, redirect_uri, passwords)


def instructions(provider: Provider, creds: DemoCredentials, insecure: bool) -> str:
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(12)
    query = urlencode({"response_type": "code", "client_id": creds.client_id,
                       "redirect_uri": creds.redirect_uri,
                       "scope": "openid profile order:view order:create offline_access",
                       "state": state, "nonce": secrets.token_urlsafe(12),
                       "code_challenge": s256(verifier), "code_challenge_method": "S256"})
    k = " -k" if insecure else ""
    base = provider.issuer_url
    users = "\n".join(f"    {n:6} password {p:14} roles {', '.join(USERS[n])}"
                      for n, p in creds.passwords.items())
    return f"""
Demo seeded (fresh credentials on every --demo start):
  client  {creds.client_id}  secret {creds.client_secret}
{users}

1. Open in a browser, sign in as alice, allow:
    {base}/authorize?{query}

2. Exchange the code shown on the callback page:
    curl{k} -s -u {creds.client_id}:{creds.client_secret} {base}/token \\
      -d grant_type=authorization_code -d redirect_uri={creds.redirect_uri} \\
      -d code_verifier={verifier} -d code=PASTE_CODE

3. Call the Orders API with the access_token:
    curl{k} -s -H "Authorization: Bearer PASTE_ACCESS_TOKEN" {base}/orders
"""


async def callback_page(request: Request) -> Response:
    """Where the demo client ``xyz`` is sent back: shows the code to paste into curl."""
    from bastion.oauth.pages import render

    keep = ("code", "state", "iss", "error", "error_description")
    params = [(k, v[:2000]) for k, v in request.query_params.items() if k in keep]
    response: HTMLResponse = render("demo.html", title="Demo callback", params=params)
    return response
