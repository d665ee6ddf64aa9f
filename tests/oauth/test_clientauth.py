"""Client authentication at the token endpoint: RFC 6749 §2.3 (``client_secret_basic`` with
form-urlencoded credentials, ``client_secret_post``), ``none`` for public clients (§2.1),
and ``private_key_jwt`` (RFC 7523 §2.2 / §3, OpenID Connect Core §9).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from tests.flows import Registered, add_client, add_user, authorize, exchange

pytestmark = pytest.mark.anyio

ISSUER = "http://bastion.test"
TOKEN_URL = ISSUER + "/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CC = {"grant_type": "client_credentials", "scope": "order:view"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def pct_all(value: str) -> str:
    """Percent-encode every character (valid form-urlencoding, RFC 6749 §2.3.1 / App. B)."""
    return "".join(f"%{b:02X}" for b in value.encode())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_key(kid: str = "k1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def make_assertion(key: Any, client_id: str, *, header: dict[str, Any] | None = None,
                   drop: tuple[str, ...] = (), **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": ISSUER,
                            "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    body.update(claims)
    for name in drop:
        body.pop(name, None)
    head = {"alg": "ES256", "kid": getattr(key, "kid", None) or "k1"}
    head.update(header or {})
    return jwt.encode(head, body, key, algorithms=[head["alg"]])


def unsigned(client_id: str) -> str:
    """alg=none (RFC 7519 §6): no signature at all."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER, "exp": now + 60,
              "iat": now, "jti": secrets.token_urlsafe(8)}
    return (b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "."
            + b64(json.dumps(claims).encode()) + ".")


def with_assertion(data: dict[str, str], assertion: str) -> dict[str, str]:
    return {**data, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}


def assert_invalid_client(r: httpx.Response, *, basic_used: bool = False) -> None:
    """RFC 6749 §5.2 invalid_client: 401; with Basic, a matching WWW-Authenticate challenge."""
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.json()["error"] == "invalid_client"
    assert r.headers["cache-control"] == "no-store"
    if basic_used:
        assert r.headers["www-authenticate"].startswith("Basic ")
    assert "access_token" not in r.json()


def assert_ok(r: httpx.Response) -> None:
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["access_token"] and r.headers["cache-control"] == "no-store"


# --- client_secret_basic ------------------------------------------------------------------------

async def test_client_secret_basic(http, provider):
    client = await add_client(provider, roles=["order:view"])
    r = await http.post("/token", data=CC, headers=basic(client.client_id, client.secret))
    assert_ok(r)


async def test_client_secret_basic_form_urlencoded_credentials(http, provider):
    """RFC 6749 §2.3.1: client_id and secret are encoded with application/x-www-form-urlencoded
    before Basic encoding; the server decodes them."""
    client = await add_client(provider, client_id="my.client~1_-x", roles=["order:view"])
    r = await http.post("/token", data=CC, headers=basic(pct_all(client.client_id),
                                                         pct_all(client.secret)))
    assert_ok(r)
    r = await http.post("/token", data=CC, headers=basic(quote(client.client_id, safe=""),
                                                         quote(client.secret, safe="")))
    assert_ok(r)


async def test_basic_scheme_case_insensitive(http, provider):
    """RFC 7235 §2.1: the auth-scheme is case-insensitive."""
    client = await add_client(provider, roles=["order:view"])
    header = basic(client.client_id, client.secret)["Authorization"].replace("Basic", "bAsIc")
    assert_ok(await http.post("/token", data=CC, headers={"Authorization": header}))


# --- client_secret_post -------------------------------------------------------------------------

async def test_client_secret_post(http, provider):
    client = await add_client(provider, auth_method="client_secret_post", roles=["order:view"])
    r = await http.post("/token", data={**CC, "client_id": client.client_id,
                                        "client_secret": client.secret})
    assert_ok(r)


@pytest.mark.parametrize("registered,used", [
    pytest.param("client_secret_basic", "post", id="rfc6749-2.3/basic-client-uses-post"),
    pytest.param("client_secret_post", "basic", id="rfc6749-2.3/post-client-uses-basic"),
    pytest.param("client_secret_basic", "none", id="rfc9700-2.5/basic-client-downgrades-to-none"),
    pytest.param("client_secret_post", "none", id="rfc9700-2.5/post-client-downgrades-to-none"),
])
async def test_only_the_registered_method(http, provider, registered, used):
    """A client authenticates with the method it registered; a confidential client cannot
    downgrade itself to ``none`` (RFC 9700 §2.5)."""
    client = await add_client(provider, auth_method=registered, roles=["order:view"])
    kw: dict[str, Any] = {}
    data = dict(CC)
    if used == "post":
        data.update(client_id=client.client_id, client_secret=client.secret)
    elif used == "basic":
        kw["headers"] = basic(client.client_id, client.secret)
    else:
        data["client_id"] = client.client_id
    assert_invalid_client(await http.post("/token", data=data, **kw), basic_used=used == "basic")


def secret_request(client: Registered, used: str) -> tuple[dict[str, str], dict[str, Any]]:
    data, kw = dict(CC), {}
    if used == "post":
        data.update(client_id=client.client_id, client_secret=client.secret or "")
    elif used == "basic":
        kw["headers"] = basic(client.client_id, client.secret or "")
    else:
        data["client_id"] = client.client_id
    return data, kw


@pytest.mark.parametrize("used", ["basic", "post"])
async def test_client_registered_without_method_accepts_either_secret_method(
        http, provider, used):
    """Issue 8 item 16: openid-client's default is client_secret_post; a client made by
    ``bastion clients create`` without --auth-method only allowed client_secret_basic and
    answered with an opaque challenge. Without a chosen method, either secret method is
    accepted (as Keycloak does); the registered metadata stays the RFC 7591 default."""
    client = await add_client(provider, roles=["order:view"])
    info = await provider.client(client.client_id)
    assert info.auth_method == "client_secret_basic" and not info.auth_method_pinned
    data, kw = secret_request(client, used)
    assert_ok(await http.post("/token", data=data, **kw))


@pytest.mark.parametrize("used", [
    pytest.param("basic", id="basic-wrong-secret"),
    pytest.param("post", id="post-wrong-secret"),
    pytest.param("none", id="rfc9700-2.5/downgrade-to-none"),
])
async def test_client_registered_without_method_still_needs_its_secret(http, provider, used):
    client = await add_client(provider, roles=["order:view"])
    data, kw = secret_request(Registered(client.client_id, "x" + (client.secret or "")), used)
    assert_invalid_client(await http.post("/token", data=data, **kw),
                          basic_used=used == "basic")


async def test_client_registered_without_method_two_methods_at_once_refused(http, provider):
    """RFC 6749 §2.3: accepting either method never means accepting both in one request."""
    client = await add_client(provider, roles=["order:view"])
    data = {**CC, "client_id": client.client_id, "client_secret": client.secret}
    r = await http.post("/token", data=data, headers=basic(client.client_id, client.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_clients_registered_before_stay_pinned(http, provider):
    """Rows written before migration 0004 cannot tell a chosen method from the default:
    the column's server default keeps them pinned (their behaviour until now)."""
    client = await add_client(provider, roles=["order:view"])
    columns = ("name, secret_hash, auth_method, redirect_uris, post_logout_redirect_uris, "
               "grant_types, scopes, roles, jwks, created_at")
    async with provider.fast.transaction() as tx:  # an INSERT that predates the column
        await tx.run(f"INSERT INTO clients (client_id, {columns}) SELECT 'legacy-client', "
                     f"{columns} FROM clients WHERE client_id = :c", c=client.client_id)
    legacy = Registered("legacy-client", client.secret)
    info = await provider.client(legacy.client_id)
    assert info.auth_method_pinned and info.auth_methods == {"client_secret_basic"}
    data, kw = secret_request(legacy, "basic")
    assert_ok(await http.post("/token", data=data, **kw))
    data, kw = secret_request(legacy, "post")
    assert_invalid_client(await http.post("/token", data=data, **kw))


async def test_confidential_client_cannot_redeem_code_without_secret(http, provider):
    """RFC 6749 §4.1.3 / RFC 9700 §2.5: "require client authentication for confidential
    clients" — PKCE alone does not replace the secret."""
    await add_user(provider)
    client = await add_client(provider)
    result = await authorize(http, client)
    public_view = Registered(client.client_id, None)
    r = await exchange(http, public_view, result)
    assert_invalid_client(r)
    # the code was not burnt by the unauthenticated attempt
    assert (await exchange(http, client, result)).status_code == 200


# --- none: public clients -------------------------------------------------------------------------

async def test_public_client_none(http, provider):
    await add_user(provider)
    client = await add_client(provider, public=True)
    r = await exchange(http, client, await authorize(http, client))
    assert_ok(r)


@pytest.mark.parametrize("variant", [
    pytest.param("with-secret", id="rfc6749-2.1/public-client-sends-a-secret"),
    pytest.param("with-basic", id="rfc6749-2.1/public-client-sends-basic"),
    pytest.param("no-client_id", id="rfc6749-3.2.1/public-client-without-client_id"),
])
async def test_public_client_bad_authentication(http, provider, variant):
    await add_user(provider)
    client = await add_client(provider, public=True)
    result = await authorize(http, client)
    data = {"grant_type": "authorization_code", "code": result.code,
            "redirect_uri": client.redirect_uri, "code_verifier": result.verifier,
            "client_id": client.client_id}
    kw: dict[str, Any] = {}
    if variant == "with-secret":
        data["client_secret"] = "guess"
    elif variant == "with-basic":
        del data["client_id"]
        kw["headers"] = basic(client.client_id, "guess")
    else:
        del data["client_id"]
    assert_invalid_client(await http.post("/token", data=data, **kw),
                          basic_used=variant == "with-basic")


# --- several methods at once --------------------------------------------------------------------

@pytest.mark.parametrize("methods", [
    pytest.param(("basic", "post"), id="rfc6749-2.3/basic-and-post"),
    pytest.param(("basic", "jwt"), id="rfc6749-2.3/basic-and-private_key_jwt"),
    pytest.param(("post", "jwt"), id="rfc6749-2.3/post-and-private_key_jwt"),
])
async def test_two_methods_at_once_refused(http, provider, methods):
    """RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in each
    request" → invalid_request."""
    key = ec_key()
    client = await add_client(provider, roles=["order:view"])
    jwt_client = await add_client(provider, jwks={"keys": [key.as_dict(private=False)]},
                                  roles=["order:view"])
    data = dict(CC)
    kw: dict[str, Any] = {}
    if "basic" in methods:
        kw["headers"] = basic(client.client_id, client.secret)
    if "post" in methods:
        data.update(client_id=client.client_id, client_secret=client.secret)
    if "jwt" in methods:
        data = with_assertion(data, make_assertion(key, jwt_client.client_id))
        data.pop("client_id", None)
    r = await http.post("/token", data=data, **kw)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert "access_token" not in r.json()


# --- no client enumeration ----------------------------------------------------------------------

def _answer(r: httpx.Response) -> tuple[Any, ...]:
    return (r.status_code, r.json(), r.headers.get("www-authenticate"),
            r.headers.get("cache-control"))


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_wrong_secret_and_unknown_client_identical(http, provider, method):
    """RFC 6749 §5.2 invalid_client, and nothing that tells an unknown client from a wrong
    secret (RFC 6819 §5.2.3.1 / §4.4.1.1 guessing of credentials)."""
    client = await add_client(provider, auth_method=f"client_secret_{method}",
                              roles=["order:view"])

    async def attempt(client_id: str, secret: str) -> httpx.Response:
        if method == "basic":
            return await http.post("/token", data=CC, headers=basic(client_id, secret))
        return await http.post("/token", data={**CC, "client_id": client_id,
                                               "client_secret": secret})

    wrong = await attempt(client.client_id, "wrong-" + client.secret[:10])
    unknown = await attempt("unknown-client-xyz", "wrong-" + client.secret[:10])
    assert_invalid_client(wrong, basic_used=method == "basic")
    assert _answer(wrong) == _answer(unknown)


async def test_private_key_jwt_wrong_key_and_unknown_client_identical(http, provider):
    """The same no-enumeration rule for private_key_jwt: a known client with a bad
    signature answers like an unknown client."""
    key = ec_key()
    client = await add_client(provider, jwks={"keys": [key.as_dict(private=False)]})
    attacker = ec_key()
    wrong = await http.post("/token", data=with_assertion(
        CC, make_assertion(attacker, client.client_id)))
    unknown = await http.post("/token", data=with_assertion(
        CC, make_assertion(attacker, "unknown-client-xyz")))
    assert_invalid_client(wrong)
    assert _answer(wrong) == _answer(unknown)


# --- private_key_jwt ----------------------------------------------------------------------------

@pytest.fixture
async def jwt_client(provider: Any) -> tuple[Registered, ECKey]:
    key = ec_key()
    client = await add_client(provider, jwks={"keys": [key.as_dict(private=False)]},
                              roles=["order:view"])
    assert client.secret is None
    return client, key


async def test_private_key_jwt_ok(http, jwt_client):
    """rfc7523bis: aud is the issuer identifier, as a string."""
    client, key = jwt_client
    r = await http.post("/token", data=with_assertion(
        {**CC, "client_id": client.client_id}, make_assertion(key, client.client_id,
                                                              aud=ISSUER)))
    assert_ok(r)


@pytest.mark.parametrize("aud", [
    pytest.param(TOKEN_URL, id="rfc7523bis/aud-token-endpoint"),
    pytest.param(ISSUER + "/revoke", id="rfc7523bis/aud-revocation-endpoint"),
    pytest.param(ISSUER + "/introspect", id="rfc7523bis/aud-introspection-endpoint"),
    pytest.param([ISSUER], id="rfc7523bis/aud-array-of-the-issuer"),
    pytest.param([ISSUER, "https://other.example"], id="rfc7523bis/aud-array-with-issuer"),
    pytest.param([TOKEN_URL, "https://other.example"], id="rfc7523bis/aud-array"),
    pytest.param([], id="rfc7523bis/aud-empty-array"),
    pytest.param(ISSUER + "/", id="rfc7523bis/aud-issuer-trailing-slash"),
    pytest.param(ISSUER.upper(), id="rfc7523bis/aud-issuer-other-case"),
    pytest.param(ISSUER + "\n", id="rfc7523bis/aud-issuer-trailing-newline"),
    pytest.param({"aud": ISSUER}, id="rfc7523bis/aud-object"),
    pytest.param(None, id="rfc7523bis/aud-null"),
])
async def test_private_key_jwt_audience_injection_refused(http, jwt_client, aud):
    """The 2025 audience-injection class (draft-ietf-oauth-rfc7523bis): an assertion whose
    aud is an endpoint URL, or an array (that another server would also accept), is
    refused; only the issuer identifier as a single string is accepted. The jti is fresh
    each time, so the refusal is the audience's."""
    client, key = jwt_client
    for endpoint, data in (("/token", {**CC, "client_id": client.client_id}),
                           ("/revoke", {"token": "x"}), ("/introspect", {"token": "x"})):
        r = await http.post(endpoint, data=with_assertion(
            data, make_assertion(key, client.client_id, aud=aud)))
        assert_invalid_client(r)


def _hs256_with_public_key(key: ECKey, client_id: str) -> str:
    """Algorithm confusion: HMAC keyed with the client's public JWK (RFC 8725 §2.1)."""
    secret = OctKey.import_key(json.dumps(key.as_dict(private=False)))
    return make_assertion(secret, client_id, header={"alg": "HS256"})


BAD_ASSERTIONS = [
    ("rfc7523-3/expired", lambda k, c: make_assertion(k, c, exp=int(time.time()) - 120)),
    ("rfc7523-3/exp-missing", lambda k, c: make_assertion(k, c, drop=("exp",))),
    ("rfc7523-3/exp-not-a-number", lambda k, c: make_assertion(k, c, exp="soon")),
    ("rfc7523-3/lifetime-too-long", lambda k, c: make_assertion(k, c, exp=int(time.time())
                                                                + 86400)),
    ("rfc7523-3/iat-in-future", lambda k, c: make_assertion(k, c, iat=int(time.time()) + 3600)),
    ("rfc7523-3/aud-wrong", lambda k, c: make_assertion(k, c, aud="https://other.example/token")),
    ("rfc7523-3/aud-missing", lambda k, c: make_assertion(k, c, drop=("aud",))),
    ("rfc7523-3/aud-other-endpoint-of-another-server",
     lambda k, c: make_assertion(k, c, aud="http://bastion.test.evil.example/token")),
    ("rfc7523-3/iss-differs-from-sub", lambda k, c: make_assertion(k, c, iss="someone-else")),
    ("rfc7523-3/sub-missing", lambda k, c: make_assertion(k, c, drop=("sub",))),
    ("oidc-core-9/jti-missing", lambda k, c: make_assertion(k, c, drop=("jti",))),
    ("oidc-core-9/jti-huge", lambda k, c: make_assertion(k, c, jti="j" * 300)),
    ("rfc7515-5.2/wrong-key", lambda k, c: make_assertion(ec_key("k1"), c)),
    ("rfc7515-5.2/wrong-key-other-kid", lambda k, c: make_assertion(ec_key("k2"), c)),
    ("rfc8725-2.1/alg-none", lambda k, c: unsigned(c)),
    ("rfc8725-2.1/alg-hs256-with-public-key", lambda k, c: _hs256_with_public_key(k, c)),
    ("rfc8725-3.10/embedded-jwk-header",
     lambda k, c: (lambda a: make_assertion(a, c, header={"jwk": a.as_dict(private=False)}))(
         ec_key("k1"))),
    ("rfc7515-4.1.2/jku-header",
     lambda k, c: make_assertion(k, c, header={"jku": "https://evil.example/jwks"})),
    ("rfc7515/signature-stripped", lambda k, c: make_assertion(k, c).rsplit(".", 1)[0] + "."),
    ("rfc7515/payload-tampered", lambda k, c: (lambda p: p[0] + "." + b64(json.dumps(
        {"iss": c, "sub": c, "aud": ISSUER, "exp": int(time.time()) + 60,
         "jti": "x"}).encode()) + "." + p[2])(make_assertion(k, c).split("."))),
    ("rfc7523-2.2/not-a-jwt", lambda k, c: "garbage"),
    ("rfc7523-2.2/long-garbage", lambda k, c: "e" * 2000 + "." + "e" * 1000 + "." + "e" * 900),
]


@pytest.mark.parametrize("make", [m for _, m in BAD_ASSERTIONS],
                         ids=[i for i, _ in BAD_ASSERTIONS])
async def test_private_key_jwt_refused(http, jwt_client, make):
    client, key = jwt_client
    r = await http.post("/token", data=with_assertion(CC, make(key, client.client_id)))
    assert_invalid_client(r)


async def test_private_key_jwt_replayed_jti_refused(http, jwt_client):
    """RFC 7523 §3 item 7 / OIDC Core §9: the jti is single use; a replayed assertion fails,
    at the same endpoint or another one."""
    client, key = jwt_client
    assertion = make_assertion(key, client.client_id)
    assert_ok(await http.post("/token", data=with_assertion(CC, assertion)))
    assert_invalid_client(await http.post("/token", data=with_assertion(CC, assertion)))
    r = await http.post("/revoke", data=with_assertion({"token": "x"}, assertion))
    assert_invalid_client(r)


async def test_private_key_jwt_for_another_client_refused(http, provider, jwt_client):
    """An assertion naming another private_key_jwt client, signed with our key, fails."""
    client, key = jwt_client
    victim = await add_client(provider, jwks={"keys": [ec_key().as_dict(private=False)]},
                              roles=["order:view"])
    r = await http.post("/token", data=with_assertion(CC, make_assertion(key, victim.client_id)))
    assert_invalid_client(r)


async def test_private_key_jwt_client_id_mismatch(http, provider, jwt_client):
    """RFC 7523 §3 / RFC 6749 §2.3: a client_id parameter that names another client."""
    client, key = jwt_client
    other = await add_client(provider)
    r = await http.post("/token", data=with_assertion(
        {**CC, "client_id": other.client_id}, make_assertion(key, client.client_id)))
    assert r.status_code in (400, 401)
    assert r.json()["error"] in ("invalid_request", "invalid_client")


@pytest.mark.parametrize("used", ["basic", "post", "none"])
async def test_private_key_jwt_client_cannot_use_other_methods(http, jwt_client, used):
    client, _ = jwt_client
    data = dict(CC)
    kw: dict[str, Any] = {}
    if used == "basic":
        kw["headers"] = basic(client.client_id, "anything")
    elif used == "post":
        data.update(client_id=client.client_id, client_secret="anything")
    else:
        data["client_id"] = client.client_id
    assert_invalid_client(await http.post("/token", data=data, **kw), basic_used=used == "basic")


async def test_assertion_for_a_secret_client_refused(http, provider):
    """A client registered for client_secret_basic cannot switch to private_key_jwt with a key
    of the attacker's choosing."""
    client = await add_client(provider, roles=["order:view"])
    r = await http.post("/token", data=with_assertion(CC, make_assertion(ec_key(),
                                                                         client.client_id)))
    assert_invalid_client(r)
