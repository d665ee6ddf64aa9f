"""OAuth clients: registration rules, secrets (256 random bits, stored as keyed SHA-256).

A keyed hash is right for generated high-entropy secrets: a slow hash buys nothing against
guessing 256 bits and would cap the token endpoint's throughput.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.edge.http import is_loopback_host
from bastion.identity.users import IdentityError
from bastion.kms import KeyWrapper
from bastion.store.models import Client, User

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none",
                "tls_client_auth")
#: RFC 8705 §2.1.2 client metadata, without the tls_client_auth_ prefix
TLS_CLIENT_AUTH_NAMES = ("subject_dn", "san_dns", "san_uri", "san_ip", "san_email")
SECRET_METHODS = frozenset({"client_secret_basic", "client_secret_post"})
# patterns are used with fullmatch: "$" would also match before a trailing newline
SCOPE_TOKEN_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 §3.3 scope-token
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_SECRET_PURPOSE = "client-secret"  # noqa: S105 — a label, not a secret


@dataclass(frozen=True)
class ClientInfo:
    """An immutable view of a client, safe to cache."""

    client_id: str
    name: str
    secret_hash: str | None
    auth_method: str  # registered token_endpoint_auth_method (RFC 7591 §2)
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    scopes: frozenset[str]
    roles: tuple[str, ...]
    jwks: dict[str, Any] | None
    auth_method_pinned: bool = True
    tls_client_auth: dict[str, str] | None = None  # RFC 8705: {"san_uri": "spiffe://..."}

    @property
    def public(self) -> bool:
        return self.auth_method == "none"

    @property
    def auth_methods(self) -> frozenset[str]:
        """The methods the client may authenticate with: its registered one, or either secret
        method when it was registered without choosing (as Keycloak does)."""
        return accepted_methods(self.auth_method, self.auth_method_pinned)

    @classmethod
    def of(cls, c: Client) -> ClientInfo:
        return cls(c.client_id, c.name, c.secret_hash, c.auth_method, tuple(c.redirect_uris),
                   tuple(c.post_logout_redirect_uris), frozenset(c.grant_types),
                   frozenset(c.scopes), tuple(c.roles), c.jwks,
                   c.auth_method_pinned is not False, c.tls_client_auth)


def accepted_methods(auth_method: str, pinned: bool) -> frozenset[str]:
    if auth_method in SECRET_METHODS and not pinned:
        return SECRET_METHODS
    return frozenset({auth_method})


CLIENT_SQL = ("SELECT client_id, name, secret_hash, auth_method, auth_method_pinned, "
              "redirect_uris, post_logout_redirect_uris, grant_types, scopes, roles, jwks, "
              "tls_client_auth "
              "FROM clients WHERE client_id = :client_id")


def client_from_row(row: Any) -> ClientInfo:
    """A ``ClientInfo`` from a raw row (JSON columns arrive as text or decoded)."""

    def js(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return ClientInfo(row["client_id"], row["name"], row["secret_hash"], row["auth_method"],
                      tuple(js(row["redirect_uris"]) or ()),
                      tuple(js(row["post_logout_redirect_uris"]) or ()),
                      frozenset(js(row["grant_types"]) or ()), frozenset(js(row["scopes"]) or ()),
                      tuple(js(row["roles"]) or ()), js(row["jwks"]),
                      # SQLite returns 0/1; anything but an explicit false stays pinned
                      row["auth_method_pinned"] not in (False, 0), js(row["tls_client_auth"]))




def check_redirect_uri(uri: str) -> str:
    """RFC 9700 §2.1 / RFC 8252: absolute, no fragment; https, or http on loopback only,
    or a private-use scheme (reverse domain name) for native apps."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or "#" in uri or len(uri) > 2000:
        raise IdentityError(f"invalid redirect URI: {uri!r}")
    if parts.scheme == "https" and parts.netloc:
        return uri
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return uri
    if parts.scheme not in ("http", "https", "javascript", "data", "file") and "." in parts.scheme:
        return uri
    raise IdentityError(f"redirect URI must be https, http on loopback, or a private-use "
                        f"scheme: {uri!r}")


def check_scopes(scopes: list[str]) -> list[str]:
    for s in scopes:
        if not isinstance(s, str) or not SCOPE_TOKEN_RE.fullmatch(s):
            raise IdentityError(f"invalid scope: {s!r}")
    return sorted(set(scopes))


def secret_hash(wrapper: KeyWrapper, secret: str) -> str:
    return wrapper.keyed_hash(secret, _SECRET_PURPOSE)


def secret_matches(wrapper: KeyWrapper, client: ClientInfo, presented: str) -> bool:
    if client.secret_hash is None:
        return False
    return hmac.compare_digest(secret_hash(wrapper, presented), client.secret_hash)


async def create_client(db: AsyncSession, wrapper: KeyWrapper, *, name: str,
                        redirect_uris: list[str], public: bool = False,
                        scopes: list[str] | None = None, grant_types: list[str] | None = None,
                        auth_method: str | None = None, roles: list[str] | None = None,
                        jwks: dict[str, Any] | None = None,
                        post_logout_redirect_uris: list[str] | None = None,
                        client_id: str | None = None,
                        tls_client_auth: dict[str, str] | None = None
                        ) -> tuple[Client, str | None]:
    """Register a client; returns it with its secret (shown once; None for public clients).

    ``auth_method`` None: ``none`` for public clients, ``private_key_jwt`` with a JWKS, else
    a secret accepted with either ``client_secret_basic`` or ``client_secret_post`` (the
    registered value is ``client_secret_basic``, RFC 7591 §2's default). An explicit method
    pins the client to it."""
    grant_types = sorted(set(grant_types or ["authorization_code", "refresh_token"]))
    for g in grant_types:
        if g not in GRANT_TYPES:
            raise IdentityError(f"unsupported grant type: {g!r} "
                                f"(allowed: {', '.join(GRANT_TYPES)})")
    method = auth_method or ("none" if public else
                             "private_key_jwt" if jwks else "client_secret_basic")
    if method not in AUTH_METHODS:
        raise IdentityError(f"unsupported token_endpoint_auth_method: {method!r}")
    if public != (method == "none"):
        raise IdentityError("public clients authenticate with 'none', and only they do")
    if public and "client_credentials" in grant_types:
        raise IdentityError("a public client cannot use client_credentials")
    if method == "private_key_jwt" and not (jwks and isinstance(jwks.get("keys"), list)):
        raise IdentityError("private_key_jwt needs a JWKS with the client's public keys")
    if (method == "tls_client_auth") != (tls_client_auth is not None):
        raise IdentityError("tls_client_auth needs exactly one certificate name "
                            "(tls_client_auth_subject_dn, _san_dns, _san_uri, _san_ip or "
                            "_san_email), and only it takes one")
    if tls_client_auth is not None:
        tls_client_auth = check_tls_client_auth(tls_client_auth)
    if "authorization_code" in grant_types and not redirect_uris:
        raise IdentityError("authorization_code needs at least one redirect URI")
    uris = [check_redirect_uri(u) for u in redirect_uris]
    logout_uris = [check_redirect_uri(u) for u in post_logout_redirect_uris or []]
    cid = client_id or new_client_id()
    if not CLIENT_ID_RE.fullmatch(cid):
        raise IdentityError("client_id must be 1-128 unreserved characters")
    if await db.get(Client, cid) is not None:
        raise IdentityError(f"client {cid!r} already exists")
    if await db.scalar(select(User.id).where((User.id == cid) | (User.username == cid))):
        raise IdentityError(f"client_id {cid!r} names a user; choose another")  # sub == client_id
    secret = None if method in ("none", "private_key_jwt", "tls_client_auth") \
        else secrets.token_urlsafe(32)
    client = Client(
        client_id=cid, name=name[:256],
        secret_hash=secret_hash(wrapper, secret) if secret else None,
        auth_method=method,
        auth_method_pinned=auth_method is not None or method not in SECRET_METHODS,
        redirect_uris=uris, post_logout_redirect_uris=logout_uris,
        grant_types=grant_types,
        scopes=check_scopes(scopes if scopes is not None else ["openid", "profile", "email"]),
        roles=sorted(set(roles or [])), jwks=jwks, created_at=int(time.time()),
        tls_client_auth=tls_client_auth,
    )
    db.add(client)
    await db.flush()
    return client, secret


def new_client_id() -> str:
    """128 random bits, URL-safe, never starting with "-" (a command line would read
    ``bastion iam attach client -xyz`` as an option)."""
    while (cid := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return cid


def check_tls_client_auth(meta: dict[str, str]) -> dict[str, str]:
    """RFC 8705 §2.1.2: exactly one of the names, well formed (the DN parses, the IP is an
    address, the URI is absolute)."""
    import ipaddress

    from cryptography import x509

    if not isinstance(meta, dict) or len(meta) != 1:
        raise IdentityError("tls_client_auth takes exactly one certificate name")
    (kind, value), = meta.items()
    if kind not in TLS_CLIENT_AUTH_NAMES or not isinstance(value, str) or \
            not 0 < len(value) <= 2048 or not value.isprintable():
        raise IdentityError(f"tls_client_auth_{str(kind)[:20]}: not a valid certificate name")
    try:
        if kind == "subject_dn":
            value = x509.Name.from_rfc4514_string(value).rfc4514_string()
        elif kind == "san_ip":
            value = str(ipaddress.ip_address(value))
        elif kind == "san_uri" and not urlsplit(value).scheme:
            raise ValueError("not absolute")
        elif kind == "san_dns":
            value = value.lower().rstrip(".")
    except ValueError:
        raise IdentityError(f"tls_client_auth_{kind}: {value[:80]!r} is not valid") from None
    return {kind: value}


async def list_clients(db: AsyncSession) -> list[Client]:
    return list((await db.scalars(select(Client).order_by(Client.created_at))).all())
