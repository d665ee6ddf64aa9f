"""RFC 9700 — Best Current Practice for OAuth 2.0 Security: every requirement that binds the
authorization server, one case each, over HTTP on SQLite and PostgreSQL.
https://www.rfc-editor.org/rfc/rfc9700

Case ids name the section (``s2.1/…`` is RFC 9700 §2.1 unless another RFC is named).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from joserfc import jwt
from sqlalchemy import update

from bastion.app import build_app
from bastion.identity.clients import create_client
from bastion.identity.users import IdentityError
from bastion.store.models import AuthorizationCode
from tests.flows import (
    PASSWORD,
    REDIRECT,
    Registered,
    add_client,
    authorize,
    bearer,
    exchange,
    hidden_fields,
    pkce,
    query_of,
    tokens_for,
)

pytestmark = pytest.mark.anyio

ISSUER = "http://bastion.test"
HTTPS_REDIRECT = "https://app.example/cb"


# --- helpers -------------------------------------------------------------------------------

def auth_params(client: Registered, **over: str | None) -> dict[str, str]:
    """A valid authorization request; ``over`` replaces values, ``None`` drops a parameter."""
    _, challenge = pkce()
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uri, "scope": "openid order:view", "state": "st-1",
        "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


def assert_error_page(r: httpx.Response, status: int = 400) -> None:
    """RFC 6749 §4.1.2.1 / RFC 9700 §4.1.3: an error shown to the user, never a redirect."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html")


def assert_error_redirect(r: httpx.Response, redirect_uri: str, error: str,
                          state: str | None = "st-1") -> dict[str, str]:
    """RFC 6749 §4.1.2.1 error response at the client, with ``iss`` (RFC 9207 §2)."""
    assert r.status_code == 303, (r.status_code, r.text[:300])
    loc = r.headers["location"]
    assert loc.startswith(redirect_uri + "?"), loc
    q = query_of(loc)
    assert q["error"] == error, q
    assert q["iss"] == ISSUER
    assert "code" not in q
    if state is not None:
        assert q["state"] == state
    return q



def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def client_auth(client: Registered) -> dict[str, Any]:
    if client.secret:
        return {"auth": (client.client_id, client.secret)}
    return {}


async def refresh(http: httpx.AsyncClient, client: Registered, token: str,
                  **extra: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    if not client.secret:
        data["client_id"] = client.client_id
    return await http.post("/token", data=data, **client_auth(client))



async def to_login(http: httpx.AsyncClient, client: Registered, **over: str | None
                   ) -> tuple[str, dict[str, str]]:
    """Start an authorization request; return the login page URL and its hidden fields."""
    r = await http.get("/authorize", params=auth_params(client, **over))
    assert r.status_code == 303, r.text
    loc = r.headers["location"]
    assert urlsplit(loc).path == "/login"
    page = await http.get(loc)
    assert page.status_code == 200
    return loc, hidden_fields(page.text)


async def to_consent(http: httpx.AsyncClient, client: Registered, **over: str | None
                     ) -> tuple[str, dict[str, str]]:
    _, fields = await to_login(http, client, **over)
    r = await http.post("/login", data={**fields, "username": "alice", "password": PASSWORD})
    assert r.status_code == 303, r.text
    loc = r.headers["location"]
    assert urlsplit(loc).path == "/consent", loc
    page = await http.get(loc)
    assert page.status_code == 200
    return loc, hidden_fields(page.text)



@pytest.fixture
async def app(provider: Any, alice: str) -> Registered:
    return await add_client(provider, post_logout_redirect_uris=["http://127.0.0.1:9000/bye"])


@pytest.fixture
async def public_app(provider: Any, alice: str) -> Registered:
    return await add_client(provider, public=True)


# --- §2.1 / §4.1.3: exact redirect URI matching --------------------------------------------

REFUSED_LOOPBACK = [
    pytest.param("http://127.0.0.1:9000/cb/x", id="s2.1/path-appended"),
    pytest.param("http://127.0.0.1:9000/cb/", id="s2.1/trailing-slash"),
    pytest.param("http://127.0.0.1:9000/CB", id="s2.1/path-case-differs"),
    pytest.param("http://127.0.0.1:9000/%63b", id="s2.1/path-percent-encoded"),
    pytest.param("http://127.0.0.1:9000/x/../cb", id="s2.1/path-dot-segments"),
    pytest.param("http://127.0.0.1:9000/cb?next=https://evil.example", id="s2.1/query-added"),
    pytest.param("http://127.0.0.1:9000/cb#frag", id="s2.1/fragment-added"),
    pytest.param("http://localhost:9000/cb", id="s2.1/host-localhost-for-127.0.0.1"),
    pytest.param("http://127.0.0.2:9000/cb", id="s2.1/host-other-loopback-ip"),
    pytest.param("http://[::1]:9000/cb", id="s2.1/host-ipv6-loopback"),
    pytest.param("https://127.0.0.1:9000/cb", id="s2.1/scheme-differs"),
    pytest.param("http://evil@127.0.0.1:9000/cb", id="s2.1/userinfo-added"),
    pytest.param("http://127.0.0.1:9000@evil.example/cb", id="s2.1/host-hidden-in-userinfo"),
    pytest.param("http://127.0.0.1:9000\\@evil.example/cb", id="s2.1/backslash-userinfo"),
    pytest.param("http://evil.example/cb", id="s4.1.1/attacker-host"),
    pytest.param("http://127.0.0.1:abc/cb", id="rfc8252-7.3/loopback-port-not-a-number"),
    pytest.param("http://127.0.0.1:99999/cb", id="rfc8252-7.3/loopback-port-out-of-range"),
    pytest.param("http://127.0.0.1:" + "9" * 3000 + "/cb", id="rfc8252-7.3/loopback-port-huge"),
    pytest.param("http://127.0.0.1:9000:80/cb", id="rfc8252-7.3/loopback-two-ports"),
]


@pytest.mark.parametrize("redirect_uri", REFUSED_LOOPBACK)
async def test_redirect_uri_mismatch_never_redirects(http, app, redirect_uri):
    """§2.1: exact string matching; only the port of a loopback URI may vary (RFC 8252 §7.3).
    A mismatch is an error page (RFC 6749 §4.1.2.1: MUST NOT redirect)."""
    r = await http.get("/authorize", params=auth_params(app, redirect_uri=redirect_uri))
    assert_error_page(r)
    assert "evil" not in r.text


REFUSED_HTTPS = [
    pytest.param("https://app.example/cb/", id="s2.1/https-trailing-slash"),
    pytest.param("https://APP.example/cb", id="s2.1/https-host-case-differs"),
    pytest.param("https://app.example:443/cb", id="s2.1/https-explicit-default-port"),
    pytest.param("https://app.example:8443/cb", id="s2.1/https-port-varies-not-loopback"),
    pytest.param("https://evil.app.example/cb", id="s2.1/https-subdomain"),
    pytest.param("https://app.example.evil.example/cb", id="s2.1/https-host-suffix"),
    pytest.param("http://app.example/cb", id="s2.1/https-downgraded-to-http"),
    pytest.param("https://app.example/cb?x=1", id="s2.1/https-query-added"),
]


@pytest.mark.parametrize("redirect_uri", REFUSED_HTTPS)
async def test_https_redirect_uri_exact_match(http, provider, alice, redirect_uri):
    """§2.1: for non-loopback URIs nothing may vary, not even the port."""
    client = await add_client(provider, redirect_uris=[HTTPS_REDIRECT])
    r = await http.get("/authorize", params=auth_params(client, redirect_uri=redirect_uri))
    assert_error_page(r)


@pytest.mark.parametrize("redirect_uri", [
    pytest.param(REDIRECT, id="s2.1/exact"),
    pytest.param("http://127.0.0.1:9555/cb", id="rfc8252-7.3/loopback-other-port"),
    pytest.param("http://127.0.0.1/cb", id="rfc8252-7.3/loopback-no-port"),
])
async def test_loopback_port_may_vary(http, app, redirect_uri):
    """§2.1 "except for port numbers in localhost redirection URIs of native apps"."""
    r = await http.get("/authorize", params=auth_params(app, redirect_uri=redirect_uri))
    assert r.status_code == 303
    assert urlsplit(r.headers["location"]).path == "/login"


async def test_varied_loopback_port_is_bound_to_the_code(http, app):
    """§4.5 / RFC 6749 §4.1.3: the code is redeemed only with the redirect_uri it was
    issued for, including its port."""
    varied = Registered(app.client_id, app.secret, "http://127.0.0.1:9555/cb")
    result = await authorize(http, varied)
    assert result.code
    wrong = await exchange(http, app, result)  # the registered URI, not the one used
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    result = await authorize(http, varied)
    ok = await exchange(http, varied, result)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("uri", [
    pytest.param("http://app.example/cb", id="s2.6/http-not-loopback"),
    pytest.param("http://127.0.0.1.evil.example/cb", id="s2.6/http-loopback-lookalike"),
    pytest.param("http://localhost.evil.example/cb", id="s2.6/http-localhost-lookalike"),
    pytest.param("https://app.example/cb#frag", id="rfc6749-3.1.2/fragment"),
    pytest.param("/relative/cb", id="rfc6749-3.1.2/relative"),
    pytest.param("javascript:alert(1)", id="s4.1/javascript-scheme"),
    pytest.param("data:text/html,hi", id="s4.1/data-scheme"),
    pytest.param("file:///etc/passwd", id="s4.1/file-scheme"),
    pytest.param("https:///cb", id="rfc6749-3.1.2/https-without-host"),
])
async def test_registration_refuses_unsafe_redirect_uris(provider, uri):
    """§2.6: "Authorization servers MUST NOT allow clients to use redirect URIs using the
    http scheme" except loopback; RFC 6749 §3.1.2: absolute, no fragment."""
    with pytest.raises(IdentityError):
        async with provider.sessions.begin() as db:
            await create_client(db, provider.wrapper, name="x", redirect_uris=[uri])


@pytest.mark.parametrize("uri", [
    pytest.param("https://app.example/cb", id="https"),
    pytest.param("http://127.0.0.1:8080/cb", id="rfc8252-7.3/loopback-ipv4"),
    pytest.param("http://[::1]/cb", id="rfc8252-7.3/loopback-ipv6"),
    pytest.param("com.example.app:/cb", id="rfc8252-7.1/private-use-scheme"),
])
async def test_registration_accepts_safe_redirect_uris(provider, uri):
    async with provider.sessions.begin() as db:
        client, _ = await create_client(db, provider.wrapper, name="x", redirect_uris=[uri])
    assert client.redirect_uris == [uri]


# --- §4.1.3 / §4.11.2: the AS is never an open redirector ------------------------------------

@pytest.mark.parametrize("over", [
    pytest.param({"client_id": "no-such-client"}, id="s4.11.2/unknown-client"),
    pytest.param({"client_id": None}, id="s4.11.2/no-client_id"),
    pytest.param({"client_id": "no-such-client", "response_type": "token"},
                 id="s4.11.2/unknown-client-and-other-errors"),
    pytest.param({"redirect_uri": "https://evil.example/cb", "response_type": "token"},
                 id="s4.1.3/unregistered-uri-and-other-errors"),
    pytest.param({"redirect_uri": "https://evil.example/cb", "prompt": "none"},
                 id="s4.1.3/unregistered-uri-prompt-none"),
    pytest.param({"redirect_uri": "https://evil.example/cb", "scope": "admin"},
                 id="s4.1.3/unregistered-uri-bad-scope"),
])
async def test_unverified_redirect_is_never_followed(http, app, over):
    """§4.11.2: the AS MUST only automatically redirect to a URI it trusts; errors about the
    client or its redirect_uri are shown to the user."""
    r = await http.get("/authorize", params=auth_params(app, **over))
    assert_error_page(r)


async def test_redirect_uri_required_when_several_registered(http, provider, alice):
    """RFC 6749 §3.1.2.3: with several registered URIs the request MUST include one."""
    client = await add_client(provider, redirect_uris=[REDIRECT, "http://127.0.0.1:9000/cb2"])
    r = await http.get("/authorize", params=auth_params(client, redirect_uri=None,
                                                        scope="order:view"))
    assert_error_page(r)


# --- §2.1.1 / §4.8: PKCE ----------------------------------------------------------------------

_, GOOD_CHALLENGE = pkce()


@pytest.mark.parametrize("over", [
    pytest.param({"code_challenge": None, "code_challenge_method": None},
                 id="s2.1.1/challenge-missing"),
    pytest.param({"code_challenge_method": "plain"}, id="s2.1.1/method-plain"),
    pytest.param({"code_challenge": "a" * 43, "code_challenge_method": "plain"},
                 id="s2.1.1/plain-with-plain-shaped-challenge"),
    pytest.param({"code_challenge_method": None}, id="rfc7636-4.3/method-omitted-means-plain"),
    pytest.param({"code_challenge_method": "s256"}, id="rfc7636-4.3/method-wrong-case"),
    pytest.param({"code_challenge_method": "S512"}, id="rfc7636-4.3/method-unknown"),
    pytest.param({"code_challenge": None}, id="rfc7636-4.3/method-without-challenge"),
    pytest.param({"code_challenge": GOOD_CHALLENGE[:42]}, id="rfc7636-4.2/challenge-too-short"),
    pytest.param({"code_challenge": GOOD_CHALLENGE + "="}, id="rfc7636-4.2/challenge-padded"),
    pytest.param({"code_challenge": GOOD_CHALLENGE[:42] + "+"},
                 id="rfc7636-4.2/challenge-not-base64url"),
])
async def test_pkce_s256_required_at_authorize(http, app, over):
    """§2.1.1: PKCE is required of every client here, with S256 only (plain SHOULD NOT be
    used); a refused request is an error redirect with state and iss."""
    r = await http.get("/authorize", params=auth_params(app, **over))
    assert_error_redirect(r, app.redirect_uri, "invalid_request")


def _s256(verifier: str) -> str:
    import base64
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.mark.parametrize("make,errors", [
    pytest.param(lambda v: pkce()[0], {"invalid_grant"}, id="s2.1.1/wrong-verifier"),
    pytest.param(lambda v: v.swapcase(), {"invalid_grant"}, id="rfc7636-4.6/verifier-case-changed"),
    pytest.param(lambda v: _s256(v), {"invalid_grant"},
                 id="s2.1.1/challenge-sent-as-verifier-plain-downgrade"),
    pytest.param(lambda v: None, {"invalid_grant", "invalid_request"},
                 id="s2.1.1/verifier-missing"),
    pytest.param(lambda v: v[:42], {"invalid_grant", "invalid_request"},
                 id="rfc7636-4.1/verifier-too-short"),
    pytest.param(lambda v: v + "x" * 65, {"invalid_grant", "invalid_request"},
                 id="rfc7636-4.1/verifier-too-long"),
    pytest.param(lambda v: "é" * 43, {"invalid_grant", "invalid_request"},
                 id="rfc7636-4.1/verifier-not-unreserved"),
])
async def test_pkce_verifier_enforced_at_token(http, app, make, errors):
    """§2.1.1: "If a client sends a valid PKCE code_challenge parameter in the authorization
    request, the authorization server MUST enforce the correct usage of code_verifier"."""
    result = await authorize(http, app)
    data = {"grant_type": "authorization_code", "code": result.code,
            "redirect_uri": app.redirect_uri}
    verifier = make(result.verifier)
    if verifier is not None:
        data["code_verifier"] = verifier
    r = await http.post("/token", data=data, auth=(app.client_id, app.secret))
    assert r.status_code == 400
    assert r.json()["error"] in errors
    assert "access_token" not in r.json()


async def _insert_code(provider: Any, client: Registered, user_id: str, *,
                       challenge: str | None, expires_in: int = 60) -> str:
    code = secrets.token_urlsafe(32)
    now = int(time.time())
    async with provider.sessions.begin() as db:
        db.add(AuthorizationCode(
            code_hash=code_hash(code), client_id=client.client_id, user_id=user_id, sid=None,
            redirect_uri=client.redirect_uri, scope="openid order:view", nonce=None,
            code_challenge=challenge, auth_time=now, amr=["pwd"], expires_at=now + expires_in,
            consumed_at=None, family_id=None))
    return code


async def test_pkce_downgrade_verifier_without_challenge_refused(http, provider, app, alice):
    """§2.1.1 / §4.8.2: "a token request containing a code_verifier parameter is accepted only
    if a code_challenge parameter was present in the authorization request"."""
    code = await _insert_code(provider, app, alice, challenge=None)
    r = await http.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": pkce()[0]}, auth=(app.client_id, app.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_pkce_support_discoverable(http):
    """§2.1.1: "Authorization servers MUST provide a way to detect their support for PKCE"
    (RFC 8414 code_challenge_methods_supported), S256 only."""
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        meta = (await http.get(path)).json()
        assert meta["code_challenge_methods_supported"] == ["S256"]


# --- §2.1.2: no implicit grant; §2.4: no password grant ---------------------------------------

@pytest.mark.parametrize("response_type", [
    pytest.param("token", id="s2.1.2/token"),
    pytest.param("id_token", id="s2.1.2/id_token"),
    pytest.param("id_token token", id="s2.1.2/id_token-token"),
    pytest.param("code token", id="s2.1.2/code-token"),
    pytest.param("code id_token", id="s2.1.2/code-id_token"),
    pytest.param("none", id="s2.1.2/none"),
])
async def test_implicit_and_hybrid_not_offered(http, app, response_type):
    """§2.1.2: clients SHOULD NOT use the implicit grant; the AS issues no token in the front
    channel (RFC 6749 §4.1.2.1 unsupported_response_type)."""
    r = await http.get("/authorize", params=auth_params(app, response_type=response_type))
    q = assert_error_redirect(r, app.redirect_uri, "unsupported_response_type")
    assert not {"access_token", "id_token", "token_type"} & q.keys()
    assert "#" not in r.headers["location"]


async def test_metadata_offers_code_only_no_implicit_no_password(http):
    """§2.1.2 / §2.4: metadata lists the code response type only, and neither the implicit
    nor the password grant."""
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        meta = (await http.get(path)).json()
        assert meta["response_types_supported"] == ["code"]
        assert not {"implicit", "password"} & set(meta["grant_types_supported"])


@pytest.mark.parametrize("public", [False, True], ids=["s2.4/confidential", "s2.4/public"])
async def test_password_grant_refused(http, provider, alice, public):
    """§2.4: "The resource owner password credentials grant MUST NOT be used"."""
    client = await add_client(provider, public=public)
    data = {"grant_type": "password", "username": "alice", "password": PASSWORD,
            "scope": "order:view"}
    if public:
        data["client_id"] = client.client_id
    r = await http.post("/token", data=data, **client_auth(client))
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"
    assert PASSWORD not in r.text and "access_token" not in r.json()


# --- §2.2.2 / §4.14.2: refresh tokens of public clients are rotated, reuse revokes ----------

async def test_public_client_refresh_rotation_and_reuse_revokes_family(http, provider,
                                                                       public_app):
    """§4.14.2: refresh token rotation; a rotated token presented again revokes the active
    refresh token and the grant's access tokens."""
    first = await tokens_for(http, public_app)
    r1 = await refresh(http, public_app, first["refresh_token"])
    assert r1.status_code == 200, r1.text
    second = r1.json()
    assert second["refresh_token"] != first["refresh_token"]
    provider.settings.__dict__["refresh_grace_seconds"] = 0  # past the concurrency window
    reuse = await refresh(http, public_app, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    after = await refresh(http, public_app, second["refresh_token"])
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    for at in (first["access_token"], second["access_token"]):
        assert (await http.get("/orders", headers=bearer(at))).status_code == 401


async def test_refresh_token_bound_to_its_client(http, provider, app):
    """§4.14.2 / RFC 6749 §6: the AS MUST validate the refresh token was issued to the
    authenticated client; another client's attempt fails and harms nobody."""
    tokens = await tokens_for(http, app)
    other = await add_client(provider)
    r = await refresh(http, other, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert (await refresh(http, app, tokens["refresh_token"])).status_code == 200


async def test_refresh_cannot_widen_scope(http, app):
    """§4.14.2: the refresh token is bound to the scope the resource owner consented to
    (RFC 6749 §6: MUST NOT include any scope not originally granted)."""
    tokens = await tokens_for(http, app, scope="openid order:view offline_access")
    r = await refresh(http, app, tokens["refresh_token"], scope="order:view order:create")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


# --- §2.3: access token privilege restriction -------------------------------------------------

async def test_access_token_audience_and_scope_restricted(http, provider, app):
    """§2.3: access tokens are audience-restricted and carry only the requested scope."""
    tokens = await tokens_for(http, app, scope="openid order:view")
    claims = jwt.decode(tokens["access_token"], provider.keyring.signing).claims
    assert claims["aud"] == provider.api_audience
    assert claims["scope"].split() == ["openid", "order:view"]
    r = await http.post("/orders", json={"item": "tea", "quantity": 1, "unit_price_cents": 1},
                        headers=bearer(tokens["access_token"]))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


async def test_id_token_not_accepted_as_access_token(http, app):
    """§2.3 / RFC 9068 §4: a token meant for another audience (the ID token, aud=client)
    is refused by the resource server."""
    tokens = await tokens_for(http, app)
    r = await http.get("/orders", headers=bearer(tokens["id_token"]))
    assert r.status_code == 401


@pytest.mark.parametrize("scope", [
    pytest.param("openid order:view admin", id="s2.3/unregistered-scope"),
    pytest.param("openid order:delete", id="s2.3/unknown-scope"),
])
async def test_scope_limited_to_registered_scopes_at_authorize(http, provider, alice, scope):
    """§2.3: the AS restricts privileges to what the client is registered for."""
    client = await add_client(provider, scopes=["openid", "order:view"])
    r = await http.get("/authorize", params=auth_params(client, scope=scope))
    assert_error_redirect(r, client.redirect_uri, "invalid_scope")


@pytest.mark.parametrize("scope", [
    pytest.param("order:create", id="s2.3/unregistered-scope"),
    pytest.param("openid", id="s2.3/user-scope-for-a-client"),
])
async def test_scope_limited_to_registered_scopes_client_credentials(http, provider, scope):
    client = await add_client(provider, scopes=["openid", "order:view"], roles=["order:view"])
    r = await http.post("/token", data={"grant_type": "client_credentials", "scope": scope},
                        auth=(client.client_id, client.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


# --- §4.4: mix-up; RFC 9207 iss in every authorization response ------------------------------

async def test_iss_in_successful_response(http, app):
    """§4.4.2 / RFC 9207 §2: iss is in the authorization response."""
    result = await authorize(http, app)
    assert result.code and result.params["iss"] == ISSUER


@pytest.mark.parametrize("over,error", [
    pytest.param({"scope": "openid admin"}, "invalid_scope", id="rfc9207-2/invalid_scope"),
    pytest.param({"response_type": "token"}, "unsupported_response_type",
                 id="rfc9207-2/unsupported_response_type"),
    pytest.param({"code_challenge": None, "code_challenge_method": None}, "invalid_request",
                 id="rfc9207-2/invalid_request"),
    pytest.param({"prompt": "none"}, "login_required", id="rfc9207-2/login_required"),
    pytest.param({"request": "eyJ"}, "request_not_supported",
                 id="rfc9207-2/request_not_supported"),
])
async def test_iss_in_error_responses(http, app, over, error):
    """RFC 9207 §2: "the iss parameter ... MUST also be included in error responses"."""
    r = await http.get("/authorize", params=auth_params(app, **over))
    assert_error_redirect(r, app.redirect_uri, error)


async def test_iss_in_access_denied_response(http, app):
    """RFC 9207 §2 for the user's refusal at the consent page."""
    result = await authorize(http, app, consent=False)
    assert result.params["error"] == "access_denied"
    assert result.params["iss"] == ISSUER and result.params["state"] == result.state


async def test_metadata_announces_iss_parameter(http):
    """RFC 9207 §3: authorization_response_iss_parameter_supported, and the issuer is the
    one put in responses."""
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        meta = (await http.get(path)).json()
        assert meta["authorization_response_iss_parameter_supported"] is True
        assert meta["issuer"] == ISSUER


# --- §4.5: authorization code injection ---------------------------------------------------------

async def test_code_bound_to_client(http, provider, app):
    """§4.5 / RFC 6749 §4.1.3: a code is redeemed only by the client it was issued to."""
    result = await authorize(http, app)
    other = await add_client(provider)
    r = await exchange(http, other, result)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_code_bound_to_public_client(http, provider, public_app):
    result = await authorize(http, public_app)
    other = await add_client(provider, public=True)
    r = await exchange(http, other, result)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("redirect_uri", [
    pytest.param("http://127.0.0.1:9000/other", id="s4.5/other-uri"),
    pytest.param(None, id="rfc6749-4.1.3/uri-omitted"),
])
async def test_code_bound_to_redirect_uri(http, app, redirect_uri):
    result = await authorize(http, app)
    data = {"grant_type": "authorization_code", "code": result.code,
            "code_verifier": result.verifier}
    if redirect_uri is not None:
        data["redirect_uri"] = redirect_uri
    r = await http.post("/token", data=data, auth=(app.client_id, app.secret))
    assert r.status_code == 400 and r.json()["error"] in ("invalid_grant", "invalid_request")


# --- RFC 6749 §4.1.2 with §4.2.4 / §4.5: codes are single use and short-lived ----------------

async def test_code_replay_refused_and_tokens_revoked(http, app):
    """RFC 6749 §4.1.2: a code used twice MUST be denied and SHOULD revoke the tokens."""
    result = await authorize(http, app)
    first = await exchange(http, app, result)
    assert first.status_code == 200
    replay = await exchange(http, app, result)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    tokens = first.json()
    assert (await http.get("/orders", headers=bearer(tokens["access_token"]))).status_code == 401
    r = await refresh(http, app, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_code_expired_refused(http, provider, app):
    """RFC 6749 §4.1.2: "The authorization code MUST expire shortly after it is issued"."""
    result = await authorize(http, app)
    async with provider.sessions.begin() as db:
        await db.execute(update(AuthorizationCode)
                         .where(AuthorizationCode.code_hash == code_hash(result.code))
                         .values(expires_at=int(time.time()) - 1))
    r = await exchange(http, app, result)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_code_lifetime_is_short(http, provider, app):
    """RFC 6749 §4.1.2: a maximum lifetime of 10 minutes is RECOMMENDED; ours is the setting."""
    before = int(time.time())
    result = await authorize(http, app)
    async with provider.sessions() as db:
        row = await db.get(AuthorizationCode, code_hash(result.code))
    assert row is not None
    assert row.expires_at - before <= min(600, provider.settings.code_ttl) + 1


# --- §4.7: CSRF ----------------------------------------------------------------------------------

@pytest.mark.parametrize("state", [
    pytest.param("plain", id="s4.7/plain"),
    pytest.param("a b+c/=&d%e", id="s4.7/needs-encoding"),
    pytest.param("ü—漢字", id="s4.7/unicode"),
    pytest.param("x" * 2048, id="s4.7/longest-accepted"),
])
async def test_state_echoed_exactly(http, app, state):
    """RFC 6749 §4.1.2: state is returned exactly as received (the client's CSRF defence)."""
    result = await authorize(http, app, extra={"state": state})
    assert result.code and result.params["state"] == state


@pytest.mark.parametrize("csrf", [
    pytest.param(None, id="s4.7/csrf-missing"),
    pytest.param("0" * 64, id="s4.7/csrf-wrong"),
    pytest.param("other-request", id="s4.7/csrf-of-another-request"),
])
async def test_login_form_refuses_bad_csrf(http, app, csrf):
    _, fields = await to_login(http, app)
    if csrf == "other-request":
        _, other = await to_login(http, app)
        fields["csrf"] = other["csrf"]
    elif csrf is None:
        fields.pop("csrf")
    else:
        fields["csrf"] = csrf
    r = await http.post("/login", data={**fields, "username": "alice", "password": PASSWORD})
    assert r.status_code == 403
    assert "location" not in r.headers and "bastion_session" not in r.headers.get(
        "set-cookie", "")


@pytest.mark.parametrize("csrf", [
    pytest.param(None, id="s4.7/csrf-missing"),
    pytest.param("0" * 64, id="s4.7/csrf-wrong"),
])
async def test_consent_form_refuses_bad_csrf(http, app, csrf):
    _, fields = await to_consent(http, app)
    if csrf is None:
        fields.pop("csrf")
    else:
        fields["csrf"] = csrf
    r = await http.post("/consent", data={**fields, "decision": "allow"})
    assert r.status_code == 403
    assert "location" not in r.headers


async def test_forms_bound_to_the_browser(http, provider, app):
    """§4.7: a form replayed from another browser (another cookie jar) is refused."""
    _, fields = await to_login(http, app)
    transport = httpx.ASGITransport(app=build_app(provider), client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as attacker:
        r = await attacker.post("/login", data={**fields, "username": "alice",
                                                "password": PASSWORD})
    assert r.status_code in (400, 403)
    assert "location" not in r.headers


# --- §4.16 clickjacking and §4.2.4 Referer leakage -----------------------------------------------

async def _pages(http: httpx.AsyncClient, app: Registered) -> dict[str, httpx.Response]:
    login_url, _ = await to_login(http, app)
    consent_url, _ = await to_consent(http, app)
    return {
        "login": await http.get(login_url),
        "consent": await http.get(consent_url),
        "error": await http.get("/authorize", params={"client_id": "nope"}),
        "logout": await http.get("/logout"),
    }


@pytest.mark.parametrize("page", ["login", "consent", "error", "logout"])
async def test_pages_cannot_be_framed(http, app, page):
    """§4.16: "Authorization servers MUST prevent clickjacking attacks" — X-Frame-Options and
    CSP frame-ancestors."""
    r = (await _pages(http, app))[page]
    assert r.status_code in (200, 400)
    assert r.headers["x-frame-options"] == "DENY"
    csp = [d.strip() for d in r.headers["content-security-policy"].split(";")]
    assert "frame-ancestors 'none'" in csp


@pytest.mark.parametrize("page", ["login", "consent"])
async def test_pages_send_no_referrer(http, app, page):
    """§4.2.4: suppress the Referer header with a Referrer Policy."""
    r = (await _pages(http, app))[page]
    assert r.headers["referrer-policy"] == "no-referrer"


# --- §4.3.2: tokens never in URLs ------------------------------------------------------------

@pytest.mark.parametrize("path", ["/orders", "/userinfo"])
async def test_bearer_token_in_query_refused(http, app, path):
    """§4.3.2 / RFC 6750 §5.3: access tokens are not passed in URI query parameters."""
    tokens = await tokens_for(http, app)
    r = await http.get(path, params={"access_token": tokens["access_token"]})
    assert r.status_code in (400, 401)
    assert "www-authenticate" in r.headers


async def test_no_token_in_authorization_response(http, app):
    """§4.3.2: the front channel carries a code only."""
    result = await authorize(http, app)
    assert set(result.params) == {"code", "state", "iss"}


async def test_token_request_in_query_string_refused(http, app):
    """RFC 6749 §3.2: parameters travel in the POST body; a query string is not read, so
    secrets in URLs never authenticate anyone."""
    result = await authorize(http, app)
    r = await http.post("/token", data={"grant_type": "authorization_code"}, params={
        "code": result.code, "client_id": app.client_id, "client_secret": app.secret,
        "redirect_uri": app.redirect_uri, "code_verifier": result.verifier})
    assert r.status_code in (400, 401)
    assert "access_token" not in r.text


# --- §4.11.2: logout is no open redirector --------------------------------------------------

@pytest.mark.parametrize("target,with_client", [
    pytest.param("https://evil.example/", True, id="s4.11.2/unregistered"),
    pytest.param("http://127.0.0.1:9000/bye/x", True, id="s4.11.2/path-appended"),
    pytest.param("http://127.0.0.1:9000/bye?x=1", True, id="s4.11.2/query-added"),
    pytest.param(REDIRECT, True, id="s4.11.2/login-redirect-uri-not-logout-uri"),
    pytest.param("http://127.0.0.1:9000/bye", False, id="s4.11.2/no-client-identified"),
])
async def test_post_logout_redirect_must_be_registered(http, app, target, with_client):
    params = {"post_logout_redirect_uri": target}
    if with_client:
        params["client_id"] = app.client_id
    r = await http.get("/logout", params=params)
    assert_error_page(r)


async def test_post_logout_redirect_registered_is_followed(http, app):
    r = await http.get("/logout", params={"post_logout_redirect_uri": "http://127.0.0.1:9000/bye",
                                          "client_id": app.client_id, "state": "s"})
    assert r.status_code == 303
    assert r.headers["location"] == "http://127.0.0.1:9000/bye?state=s"


# --- §4.12: no 307 after a POST ----------------------------------------------------------------

async def test_posted_forms_answer_303(http, provider, app):
    """§4.12: a redirect after a POST carrying credentials MUST NOT be 307 (the browser would
    resend the password to the client); 303 is used."""
    statuses: list[int] = []
    _, fields = await to_login(http, app)
    r = await http.post("/login", data={**fields, "username": "alice", "password": PASSWORD})
    statuses.append(r.status_code)
    page = await http.get(r.headers["location"])
    r = await http.post("/consent", data={**hidden_fields(page.text), "decision": "allow"})
    statuses.append(r.status_code)
    assert r.headers["location"].startswith(app.redirect_uri)
    r = await http.post("/authorize", data=auth_params(app))
    statuses.append(r.status_code)
    page = await http.get("/logout")
    r = await http.post("/logout", data={**hidden_fields(page.text), "confirm": "yes",
                                         "client_id": app.client_id,
                                         "post_logout_redirect_uri": "http://127.0.0.1:9000/bye"})
    statuses.append(r.status_code)
    assert statuses == [303, 303, 303, 303], statuses
