"""``bastion serve --demo``: the chapter's example, seeded and explained.

A confidential client ``xyz``, a user ``alice`` with roles ``order:create`` and
``order:view``, a user ``bob`` with ``order:view`` only, and a few orders. Seeding is
idempotent: what exists is kept (a second start, or a second ``make run``, never resets a
password or a secret under a running server). What it creates gets fresh random
credentials, which the database keeps only as hashes; they are also kept, for the demo's
sake, in ``<data dir>/demo-credentials.json`` (mode 0600, like the key file beside it), so
that every ``--demo`` start can print them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bastion.identity.clients import create_client
from bastion.identity.users import create_user, get_user_by_name
from bastion.oauth.provider import Provider
from bastion.oauth.rfc7636 import s256
from bastion.store.models import Client, Order

CLIENT_ID = "xyz"
CREDENTIALS_FILE = "demo-credentials.json"
DEMO_SCOPES = ["openid", "profile", "email", "offline_access", "order:view", "order:create"]
USERS = {"alice": ["order:create", "order:view"], "bob": ["order:view"]}
ORDERS = {"alice": [("Espresso beans 1kg", 2, 1890), ("Milk frother", 1, 4900)],
          "bob": [("Green tea 250g", 3, 750)]}
SEEDER = {"type": "Bastion", "principalId": "demo-seed"}


@dataclass(frozen=True)
class DemoCredentials:
    """The demo's credentials as far as they are known (None: set by an earlier start
    whose credentials were not kept), and what this start created."""

    client_id: str
    client_secret: str | None
    redirect_uri: str
    passwords: dict[str, str | None]
    created: tuple[str, ...] = field(default=())  # "client", "alice", "bob"


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` readable by the owner only, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


async def seed(provider: Provider) -> DemoCredentials:
    """Create the demo's client, users and orders where missing; keep what exists. Each
    creation commits with its audit record (never with a secret in it)."""
    from bastion.runtime import record_change

    path = provider.settings.data_dir / CREDENTIALS_FILE
    kept = _load(path)
    redirect_uri = provider.url("/demo/callback")
    created: list[str] = []
    async with provider.sessions.begin() as db:
        client = await db.get(Client, CLIENT_ID)
        if client is None:
            client, secret = await create_client(
                db, provider.wrapper, name="Orders demo app (xyz)", client_id=CLIENT_ID,
                redirect_uris=[redirect_uri, "http://127.0.0.1/callback"],
                post_logout_redirect_uris=[redirect_uri], scopes=DEMO_SCOPES,
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
                roles=["order:view"])
            kept["client_secret"] = secret
            created.append("client")
            await record_change(provider, db, "CreateClient", user_identity=SEEDER,
                                request_parameters={"clientId": CLIENT_ID,
                                                    "redirectUris": client.redirect_uris})
        elif redirect_uri not in client.redirect_uris:  # served at another address this time
            client.redirect_uris = [*client.redirect_uris, redirect_uri]
            client.post_logout_redirect_uris = [*client.post_logout_redirect_uris,
                                                redirect_uri]
            await record_change(provider, db, "UpdateClient", user_identity=SEEDER,
                                request_parameters={"clientId": CLIENT_ID,
                                                    "addedRedirectUri": redirect_uri})
        if not isinstance(kept.get("passwords"), dict):
            kept["passwords"] = {}
        passwords: dict[str, Any] = kept["passwords"]
        for name, roles in USERS.items():
            if await get_user_by_name(db, name) is not None:
                continue
            password = secrets.token_urlsafe(12)
            user = await create_user(db, name, password, roles=roles, name=name.title(),
                                     email=f"{name}@example.com")
            now = int(time.time())
            for item, qty, price in ORDERS[name]:
                db.add(Order(id=secrets.token_hex(8), owner=user.id, item=item,
                             quantity=qty, unit_price_cents=price, status="placed",
                             created_at=now))
            passwords[name] = password
            created.append(name)
            await record_change(provider, db, "CreateUser", user_identity=SEEDER,
                                request_parameters={"userName": name, "roles": user.roles})
        if created:  # inside the transaction: no credentials file, no seed
            _save(path, kept)
    provider._clients.pop(CLIENT_ID, None)  # noqa: SLF001 — drop a cached client record
    secret = kept.get("client_secret")
    return DemoCredentials(
        CLIENT_ID, secret if isinstance(secret, str) else None, redirect_uri,
        {n: p if isinstance(p := passwords.get(n), str) else None for n in USERS},
        tuple(created))


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
    unknown = "(set by an earlier start, not kept)"
    users = "\n".join(f"    {n:6} password {p or unknown:16} roles {', '.join(USERS[n])}"
                      for n, p in creds.passwords.items())
    secret = creds.client_secret or "CLIENT_SECRET"
    where = provider.settings.data_dir / CREDENTIALS_FILE
    if creds.created:
        origin = f"Demo seeded: {', '.join(creds.created)} created (kept in {where}):"
    else:
        origin = f"Demo data kept from an earlier start (credentials from {where}):"
    missing = "" if creds.client_secret and all(creds.passwords.values()) else (
        "\n  Some credentials were set before they were kept: `make clean` (or delete the "
        "data dir) starts the demo afresh.")
    port = provider.settings.demo_inventory_port
    inventory = (f"\nNew orders are checked against the inventory service on port {port} "
                 "(mutual TLS, workload certificates; docs/pki.md, Service to service).\n"
                 if port else "")
    return f"""
{origin}
  client  {creds.client_id}  secret {creds.client_secret or unknown}
{users}{missing}

1. Open in a browser, sign in as alice, allow:
    {base}/authorize?{query}

2. Exchange the code shown on the callback page:
    curl{k} -s -u {creds.client_id}:{secret} {base}/token \\
      -d grant_type=authorization_code -d redirect_uri={creds.redirect_uri} \\
      -d code_verifier={verifier} -d code=PASTE_CODE

3. Call the Orders API with the access_token:
    curl{k} -s -H "Authorization: Bearer PASTE_ACCESS_TOKEN" {base}/orders
{inventory}"""


async def callback_page(request: Request) -> Response:
    """Where the demo client ``xyz`` is sent back: shows the code to paste into curl."""
    from bastion.oauth.pages import render

    keep = ("code", "state", "iss", "error", "error_description")
    params = [(k, v[:2000]) for k, v in request.query_params.items() if k in keep]
    response: HTMLResponse = render("demo.html", title="Demo callback", params=params)
    return response
