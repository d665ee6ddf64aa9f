"""Bad input at every endpoint, table-driven: never a 500, the registered error code, an error
page (never a redirect) when the client or redirect URI cannot be trusted, ``no-store`` on
token responses, and no secret (client secret, password, code, refresh token) echoed back.

Case ids cite the rule: RFC 6749 §3.1 / §3.2 (one value per parameter, form encoding),
§4.1.2.1 and §5.2 (error codes), OIDC Core §3.1.2 (prompt, max_age, request objects),
RFC 6750 §3.1 (bearer errors), RFC 9110 §15.5.14 (413 Content Too Large).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.flows import (
    PASSWORD,
    Registered,
    add_client,
    add_user,
    authorize,
    exchange,
    hidden_fields,
    pkce,
    query_of,
)

pytestmark = pytest.mark.anyio

ISSUER = "http://bastion.test"
BIG = 70 * 1024  # over the default max_body_bytes (64 KiB)
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Ctx:
    client: Registered
    public: Registered
    code: str = ""
    verifier: str = ""
    refresh_token: str = ""
    access_token: str = ""
    fields: dict[str, str] = field(default_factory=dict)  # hidden fields of a login/consent form

    def secrets(self) -> list[str]:
        values = [self.client.secret or "", PASSWORD, self.code, self.refresh_token]
        return [v for v in values if v]

    def basic(self) -> tuple[str, str]:
        assert self.client.secret
        return (self.client.client_id, self.client.secret)


Req = Callable[[Ctx], dict[str, Any]]


# --- expectations ---------------------------------------------------------------------------

def _common(r: httpx.Response, ctx: Ctx) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    blob = r.text + " ".join(f"{k}: {v}" for k, v in r.headers.items())
    for value in ctx.secrets():
        assert value not in blob, "a secret is echoed back"


@dataclass(frozen=True)
class OAuthError:
    """RFC 6749 §5.2 JSON error (or 405 from the router, which allows only POST)."""

    status: tuple[int, ...]
    errors: tuple[str, ...] = ()
    no_store: bool = True
    basic_challenge: bool = False

    def check(self, r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code in self.status, (r.status_code, r.text[:300])
        if r.status_code == 405:
            return
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"] in self.errors, r.json()
        if self.no_store:
            assert r.headers["cache-control"] == "no-store"  # RFC 6749 §5.1
        if r.status_code == 401:
            assert "www-authenticate" in r.headers
        if self.basic_challenge:
            # RFC 6749 §5.2: the challenge matches the scheme the client used
            assert r.headers["www-authenticate"].lower().startswith("basic")


@dataclass(frozen=True)
class Page:
    """An HTML error page, never a redirect (RFC 6749 §4.1.2.1, RFC 9700 §4.11.2)."""

    status: int = 400

    def check(self, r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code == self.status, (r.status_code, r.text[:300])
        assert "location" not in r.headers
        assert r.headers["content-type"].startswith("text/html")


@dataclass(frozen=True)
class Redirect:
    """RFC 6749 §4.1.2.1 error response to the registered redirect URI, with iss."""

    error: str
    state_echoed: bool = True

    def check(self, r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code == 303, (r.status_code, r.text[:300])
        loc = r.headers["location"]
        assert loc.startswith(ctx.client.redirect_uri + "?"), loc
        q = query_of(loc)
        assert q["error"] == self.error, q
        assert q["iss"] == ISSUER and "code" not in q
        assert ("state" in q) == self.state_echoed


@dataclass(frozen=True)
class To:
    """A redirect to one of Bastion's own pages (the request was accepted)."""

    path: str

    def check(self, r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code == 303, (r.status_code, r.text[:300])
        assert urlsplit(r.headers["location"]).path == self.path


@dataclass(frozen=True)
class Bearer:
    """RFC 6750 §3.1 error at a protected resource."""

    status: tuple[int, ...]
    error: str | None  # None: no error code in the challenge (RFC 6750 §3.1, no credentials)

    def check(self, r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code in self.status, (r.status_code, r.text[:300])
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="')
        if self.error is None:
            assert "error=" not in challenge
        else:
            assert f'error="{self.error}"' in challenge


@dataclass(frozen=True)
class Status:
    status: tuple[int, ...]

    def check(self, r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code in self.status, (r.status_code, r.text[:300])


Expect = OAuthError | Page | Redirect | To | Bearer | Status


# the WAF in front refuses these attack shapes first (tests/edge/waf); the app's own
# answer is tested behind a WAF that is off, as with waf_mode = "off" or "detect"
WAF_OFF = pytest.mark.waf_off


def case(id: str, req: Req, expect: Expect, *, marks: Any = ()) -> Any:
    return pytest.param(req, expect, id=id, marks=marks)


def body_of(data: Any) -> dict[str, Any]:
    """httpx request arguments for a form body; a list of pairs may repeat a name."""
    if isinstance(data, list):
        return {"content": urlencode(data).encode(), "headers": FORM}
    return {"data": data}


async def send(http: httpx.AsyncClient, req: dict[str, Any]) -> httpx.Response:
    if "data" in req and isinstance(req["data"], list):
        req = {**{k: v for k, v in req.items() if k != "data"}, **body_of(req["data"])}
    return await http.request(**req)


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
async def ctx(provider: Any) -> Ctx:
    await add_user(provider)
    client = await add_client(provider)
    public = await add_client(provider, public=True)
    return Ctx(client, public)


@pytest.fixture
async def ctx_code(http: httpx.AsyncClient, ctx: Ctx) -> Ctx:
    """A context holding a fresh code and a refresh token (so that their echo is caught)."""
    first = await exchange(http, ctx.client, await authorize(http, ctx.client))
    assert first.status_code == 200
    result = await authorize(http, ctx.client)
    ctx.code, ctx.verifier = result.code, result.verifier
    ctx.refresh_token = first.json()["refresh_token"]
    ctx.access_token = first.json()["access_token"]
    return ctx


def auth_params(ctx: Ctx, **over: str | None) -> dict[str, str]:
    _, challenge = pkce()
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": ctx.client.client_id,
        "redirect_uri": ctx.client.redirect_uri, "scope": "openid order:view",
        "state": "st-1", "nonce": "n-1", "code_challenge": challenge,
        "code_challenge_method": "S256"}
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


def repeated(params: dict[str, str], name: str, second: str = "x") -> list[tuple[str, str]]:
    return [*params.items(), (name, second)]


def basic_header(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def too_many(n: int = 150) -> str:
    return "&".join(f"p{i}=v" for i in range(n))


# --- /authorize ---------------------------------------------------------------------------------

def get_authorize(**over: str | None) -> Req:
    return lambda c: {"method": "GET", "url": "/authorize", "params": auth_params(c, **over)}


AUTHORIZE = [
    case("rfc6749-4.1.2.1/client_id-missing", get_authorize(client_id=None), Page()),
    case("rfc6749-4.1.2.1/client_id-unknown", get_authorize(client_id="nope"), Page()),
    case("rfc6749-4.1.2.1/client_id-malformed", get_authorize(client_id="a b/../c" * 20),
         Page()),
    case("rfc6749-3.1/client_id-repeated",
         lambda c: {"method": "GET", "url": "/authorize",
                    "params": repeated(auth_params(c), "client_id", c.client.client_id)},
         Page()),
    case("rfc6749-3.1/redirect_uri-repeated",
         lambda c: {"method": "GET", "url": "/authorize",
                    "params": repeated(auth_params(c), "redirect_uri", "https://evil.example/")},
         Page()),
    case("rfc6749-3.1/state-repeated",
         lambda c: {"method": "GET", "url": "/authorize",
                    "params": repeated(auth_params(c), "state")}, Page()),
    case("rfc6749-3.1/scope-repeated",
         lambda c: {"method": "GET", "url": "/authorize",
                    "params": repeated(auth_params(c), "scope", "openid")}, Page()),
    case("rfc6749-4.1.1/response_type-missing", get_authorize(response_type=None),
         Redirect("invalid_request")),
    case("rfc6749-4.1.2.1/response_type-unknown", get_authorize(response_type="foo"),
         Redirect("unsupported_response_type")),
    case("rfc6749-3.3/scope-missing", get_authorize(scope=None), Redirect("invalid_scope")),
    case("rfc6749-3.3/scope-double-space", get_authorize(scope="openid  order:view"),
         Redirect("invalid_scope")),
    case("rfc6749-3.3/scope-unknown", get_authorize(scope="openid root"),
         Redirect("invalid_scope")),
    case("oauth-multiple-response-types/response_mode-fragment",
         get_authorize(response_mode="fragment"), Redirect("invalid_request")),
    case("oauth-form-post/response_mode-form_post", get_authorize(response_mode="form_post"),
         Redirect("invalid_request")),
    case("oidc-core-6.1/request-object", get_authorize(request="eyJhbGciOiJub25lIn0.e30."),
         Redirect("request_not_supported")),
    case("oidc-core-6.2/request_uri", get_authorize(request_uri="https://evil.example/r"),
         Redirect("request_uri_not_supported")),
    case("oidc-core-3.1.2.1/prompt-none-with-login", get_authorize(prompt="none login"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/prompt-none-with-consent", get_authorize(prompt="consent none"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/prompt-unknown", get_authorize(prompt="bogus"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.6/prompt-none-not-signed-in", get_authorize(prompt="none"),
         Redirect("login_required")),
    case("oidc-core-3.1.2.1/max_age-negative", get_authorize(max_age="-1"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/max_age-word", get_authorize(max_age="abc"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/max_age-fraction", get_authorize(max_age="1.5"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/max_age-exponent", get_authorize(max_age="1e3"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/max_age-huge", get_authorize(max_age="9" * 30),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/max_age-space", get_authorize(max_age=" 5"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/max_age-superscript-digit", get_authorize(max_age="²"),
         Redirect("invalid_request")),
    case("oidc-core-3.1.2.1/max_age-zero-accepted", get_authorize(max_age="0"), To("/login")),
    case("rfc6749-4.1.1/state-too-long-not-echoed", get_authorize(state="s" * 3000),
         Redirect("invalid_request", state_echoed=False)),
    # issue 8 item 12: control characters in state were echoed back (NUL included)
    *[case(f"rfc6749-4.1.1/state-control-{name}-not-echoed", get_authorize(state=value),
           Redirect("invalid_request", state_echoed=False),
           marks=WAF_OFF if name == "crlf" else ())
      for name, value in (("nul", "\x00"), ("embedded-nul", "a\x00b"), ("lf", "st\n"),
                          ("crlf", "\r\nSet-Cookie: x=1"), ("tab", "a\tb"), ("del", "a\x7f"),
                          ("c1-nel", "a\x85"), ("escape", "\x1b[31m"))],
    *[case(f"oidc-core-3.1.2.1/nonce-control-{name}", get_authorize(nonce=value),
           Redirect("invalid_request"))
      for name, value in (("nul", "\x00"), ("lf", "n\n"), ("escape", "\x1b[31m"),
                          ("c1-csi", "a\x9b"))],
    # issue 8 item 12: "^...$" with .match accepted a trailing newline
    case("rfc7636-4.2/code_challenge-trailing-newline",
         lambda c: {"method": "GET", "url": "/authorize", "params": auth_params(
             c, code_challenge=auth_params(c)["code_challenge"] + "\n")},
         Redirect("invalid_request")),
    case("rfc6749-2.2/client_id-trailing-newline",
         lambda c: {"method": "GET", "url": "/authorize", "params": auth_params(
             c, client_id=c.client.client_id + "\n")}, Page()),
    case("rfc6749-3.1/state-over-parameter-cap", get_authorize(state="s" * 5000), Page()),
    case("oidc-core-3.1.2.1/nonce-too-long", get_authorize(nonce="n" * 600),
         Redirect("invalid_request")),
    case("rfc6749-3.1/nonce-over-parameter-cap", get_authorize(nonce="n" * 5000), Page()),
    case("rfc7636-4.3/code_challenge-huge", get_authorize(code_challenge="c" * 4000),
         Redirect("invalid_request")),
    case("rfc6749-3.1/non-utf8-percent-encoding",
         lambda c: {"method": "GET", "url": "/authorize?client_id=%FF%FE&response_type=code"},
         Page()),
    case("rfc6749-3.1/too-many-parameters",
         lambda c: {"method": "GET", "url": "/authorize?" + too_many()}, Page()),
    case("oidc-core-3.1.2.1/post-json-body",
         lambda c: {"method": "POST", "url": "/authorize", "json": auth_params(c)}, Page()),
    case("oidc-core-3.1.2.1/post-non-utf8-body",
         lambda c: {"method": "POST", "url": "/authorize", "content": b"client_id=\xff\xfe",
                    "headers": FORM}, Page()),
    case("rfc9110-15.5.14/post-oversized-body",
         lambda c: {"method": "POST", "url": "/authorize", "headers": FORM,
                    "content": b"state=" + b"s" * BIG}, Page(413)),
    case("rfc9110-15.5.14/post-oversized-content-length",
         lambda c: {"method": "POST", "url": "/authorize",
                    "headers": {**FORM, "content-length": str(10**9)}, "content": b"a=b"},
         Page(413)),
]


@pytest.mark.parametrize("req,expect", AUTHORIZE)
async def test_authorize_bad_input(http, ctx, req, expect):
    r = await send(http, req(ctx))
    _common(r, ctx)
    expect.check(r, ctx)


@pytest.mark.parametrize("signed_in,consented,prompt,expect", [
    pytest.param(False, False, "none", Redirect("login_required"), id="oidc-3.1.2.6/no-session"),
    pytest.param(True, False, "none", Redirect("consent_required"), id="oidc-3.1.2.6/no-consent"),
    pytest.param(True, True, "none", None, id="oidc-3.1.2.1/silent-success"),
    pytest.param(True, True, "none login", Redirect("invalid_request"),
                 id="oidc-3.1.2.1/none-login-signed-in"),
    pytest.param(True, True, "none select_account", Redirect("invalid_request"),
                 id="oidc-3.1.2.1/none-select_account"),
    pytest.param(True, True, "consent", To("/consent"), id="oidc-3.1.2.1/consent-forced"),
])
async def test_prompt_combinations(http, provider, ctx, signed_in, consented, prompt, expect):
    """OIDC Core §3.1.2.1: prompt=none never shows a page; it cannot be combined."""
    if signed_in:
        other = await add_client(provider)  # sign in through another client: no consent here
        await authorize(http, other, scope="openid order:view")
    if consented:
        await authorize(http, ctx.client, scope="openid order:view")
    r = await http.get("/authorize", params=auth_params(ctx, prompt=prompt))
    _common(r, ctx)
    if expect is None:
        assert r.status_code == 303
        q = query_of(r.headers["location"])
        assert r.headers["location"].startswith(ctx.client.redirect_uri) and q.get("code")
    else:
        expect.check(r, ctx)


@pytest.mark.parametrize("value", [
    pytest.param("\x00", id="nul"),
    pytest.param("a\x00b", id="embedded-nul"),
    pytest.param("\r\nSet-Cookie: x=1", id="crlf", marks=WAF_OFF),
    pytest.param("\U0001f510" * 100, id="emoji"),
    pytest.param("é ß \u00a0 \u2028", id="non-ascii-text"),
    pytest.param("\ud7ff\ue000\ufffd", id="edge-code-points"),
    pytest.param("n" * 512, id="longest-nonce"),
])
async def test_unusual_state_and_nonce_complete_or_refuse(http, provider, ctx, value):
    """OIDC Core §3.1.2.1 nonce and RFC 6749 §4.1.1 state are opaque strings: the flow ends
    with a code (state echoed, nonce in the ID token) or an invalid_request redirect, never a
    500 at any step."""
    r = await http.get("/authorize", params=auth_params(ctx, state=value, nonce=value))
    _common(r, ctx)
    assert r.status_code == 303
    if any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for ch in value):
        # control characters are refused, and such a state is never echoed back
        Redirect("invalid_request", state_echoed=False).check(r, ctx)
        return
    page = await http.get(r.headers["location"])
    r = await http.post("/login", data={**hidden_fields(page.text), "username": "alice",
                                        "password": PASSWORD})
    _common(r, ctx)
    page = await http.get(r.headers["location"])
    r = await http.post("/consent", data={**hidden_fields(page.text), "decision": "allow"})
    _common(r, ctx)
    assert r.status_code == 303 and r.headers["location"].startswith(ctx.client.redirect_uri)
    q = query_of(r.headers["location"])
    assert q["state"] == value and q["code"]


# --- /token -------------------------------------------------------------------------------------

def token(data: Any = None, *, auth: bool = True, **kw: Any) -> Req:
    def build(c: Ctx) -> dict[str, Any]:
        body = data(c) if callable(data) else data
        req: dict[str, Any] = {"method": "POST", "url": "/token", **kw}
        if body is not None:
            req["data"] = body
        if auth:
            req["auth"] = c.basic()
        return req
    return build


def code_grant(c: Ctx, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"grant_type": "authorization_code", "code": c.code,
                            "redirect_uri": c.client.redirect_uri, "code_verifier": c.verifier}
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def raw_token(content: bytes, headers: dict[str, str] | None = None, auth: bool = True) -> Req:
    return token(None, auth=auth, content=content, headers=headers if headers is not None
                 else FORM)


INVALID_REQUEST = OAuthError((400,), ("invalid_request",))
INVALID_GRANT = OAuthError((400,), ("invalid_grant",))
INVALID_CLIENT_BASIC = OAuthError((401,), ("invalid_client",), basic_challenge=True)
TOO_LARGE = OAuthError((413,), ("invalid_request",))

TOKEN = [
    case("rfc6749-3.2/method-get",
         lambda c: {"method": "GET", "url": "/token", "params": code_grant(c),
                    "auth": c.basic()}, OAuthError((405, 400), ("invalid_request",))),
    case("rfc6749-5.2/grant_type-missing", token(lambda c: code_grant(c, grant_type=None)),
         INVALID_REQUEST),
    case("rfc6749-3.1/grant_type-empty", token(lambda c: code_grant(c, grant_type="")),
         INVALID_REQUEST),
    case("rfc6749-5.2/grant_type-unknown",
         token({"grant_type": "urn:example:unknown"}),
         OAuthError((400,), ("unsupported_grant_type",))),
    case("rfc9700-2.1.2/grant_type-implicit", token({"grant_type": "implicit"}),
         OAuthError((400,), ("unsupported_grant_type",))),
    case("rfc9700-2.4/grant_type-password",
         token({"grant_type": "password", "username": "alice", "password": PASSWORD}),
         OAuthError((400,), ("unsupported_grant_type",))),
    case("rfc6749-3.1/grant_type-repeated",
         token(lambda c: [*code_grant(c).items(), ("grant_type", "authorization_code")]),
         INVALID_REQUEST),
    case("rfc6749-3.1/code-repeated",
         token(lambda c: [*code_grant(c).items(), ("code", c.code)]), INVALID_REQUEST),
    case("rfc6749-3.1/client_id-repeated-public",
         token(lambda c: [("grant_type", "refresh_token"), ("refresh_token", "x"),
                          ("client_id", c.public.client_id), ("client_id", c.public.client_id)],
               auth=False), INVALID_REQUEST),
    case("rfc6749-3.1/client_secret-repeated",
         token(lambda c: [("grant_type", "client_credentials"),
                          ("client_id", c.client.client_id),
                          ("client_secret", c.client.secret), ("client_secret", "x")],
               auth=False), INVALID_REQUEST),
    case("rfc6749-4.1.3/code-missing", token(lambda c: code_grant(c, code=None)),
         INVALID_REQUEST),
    case("rfc6749-5.2/code-unknown", token(lambda c: code_grant(c, code="nope")), INVALID_GRANT),
    case("rfc6749-5.2/code-long", token(lambda c: code_grant(c, code="c" * 4000)),
         INVALID_GRANT),
    case("rfc6749-3.1/code-over-parameter-cap",
         token(lambda c: code_grant(c, code="c" * 5000)), INVALID_REQUEST),
    case("rfc6749-5.2/code-with-nul", token(lambda c: code_grant(c, code="a\x00b")),
         INVALID_GRANT),
    case("rfc6749-5.2/code-non-ascii", token(lambda c: code_grant(c, code="ü漢")),
         INVALID_GRANT),
    case("rfc6749-6/refresh_token-missing", token({"grant_type": "refresh_token"}),
         INVALID_REQUEST),
    case("rfc6749-6/refresh_token-unknown",
         token({"grant_type": "refresh_token", "refresh_token": "nope"}), INVALID_GRANT),
    case("rfc6749-6/refresh_token-with-nul",
         token({"grant_type": "refresh_token", "refresh_token": "\x00"}), INVALID_GRANT),
    case("rfc6749-3.3/scope-double-space",
         token({"grant_type": "client_credentials", "scope": "order:view  order:view"}),
         OAuthError((400,), ("invalid_scope",))),
    case("rfc6749-3.2/json-body",
         token(None, json={"grant_type": "client_credentials"}), INVALID_REQUEST),
    case("rfc6749-3.2/text-plain",
         raw_token(b"grant_type=client_credentials", {"content-type": "text/plain"}),
         INVALID_REQUEST),
    case("rfc6749-3.2/multipart",
         token(None, files={"grant_type": (None, "client_credentials")}), INVALID_REQUEST),
    case("rfc6749-3.2/no-content-type", raw_token(b"grant_type=client_credentials", {}),
         INVALID_REQUEST),
    case("rfc6749-3.2/non-utf8-bytes", raw_token(b"grant_type=\xff\xfe"), INVALID_REQUEST),
    case("rfc6749-3.2/non-utf8-percent-encoding", raw_token(b"grant_type=%FF%FE"),
         INVALID_REQUEST),
    case("rfc6749-3.2/too-many-parameters", raw_token(too_many().encode()), INVALID_REQUEST),
    case("rfc9110-15.5.14/oversized-body",
         raw_token(b"grant_type=client_credentials&pad=" + b"x" * BIG), TOO_LARGE),
    case("rfc9110-15.5.14/oversized-content-length",
         raw_token(b"grant_type=client_credentials", {**FORM, "content-length": str(10**9)}),
         TOO_LARGE),
    case("rfc9110-8.6/content-length-not-a-number",
         raw_token(b"grant_type=client_credentials", {**FORM, "content-length": "abc"}),
         INVALID_REQUEST, marks=WAF_OFF),
    case("rfc6749-2.3.1/basic-without-credentials",
         token({"grant_type": "client_credentials"}, auth=False,
               headers={"Authorization": "Basic"}), INVALID_CLIENT_BASIC),
    case("rfc6749-2.3.1/basic-not-base64",
         token({"grant_type": "client_credentials"}, auth=False,
               headers={"Authorization": "Basic !!!not-base64!!!"}), INVALID_CLIENT_BASIC),
    case("rfc6749-2.3.1/basic-no-colon",
         token({"grant_type": "client_credentials"}, auth=False,
               headers=basic_header(b"just-an-id")), INVALID_CLIENT_BASIC),
    case("rfc6749-2.3.1/basic-not-utf8",
         token({"grant_type": "client_credentials"}, auth=False,
               headers=basic_header(b"\xff\xfe:\xff")), INVALID_CLIENT_BASIC),
    case("rfc6749-2.3.1/basic-empty-client-id",
         token({"grant_type": "client_credentials"}, auth=False,
               headers=basic_header(b":some-secret")), INVALID_CLIENT_BASIC),
    case("rfc6749-2.3.1/basic-empty-secret",
         lambda c: token({"grant_type": "client_credentials"}, auth=False,
                         headers=basic_header(c.client.client_id.encode() + b":"))(c),
         INVALID_CLIENT_BASIC),
    case("rfc6749-2.3.1/basic-wrong-secret",
         lambda c: token({"grant_type": "client_credentials"}, auth=False,
                         headers=basic_header(c.client.client_id.encode() + b":wrong"))(c),
         INVALID_CLIENT_BASIC),
    case("rfc6749-2.3.1/basic-huge",
         token({"grant_type": "client_credentials"}, auth=False,
               headers=basic_header(b"a" * 6000 + b":" + b"b" * 6000)), INVALID_CLIENT_BASIC),
    case("rfc6749-2.3/other-scheme",
         token({"grant_type": "client_credentials"}, auth=False,
               headers={"Authorization": "Digest username=x"}),
         OAuthError((401,), ("invalid_client",))),
    case("rfc6749-2.3/no-client-authentication",
         token({"grant_type": "client_credentials"}, auth=False),
         OAuthError((401,), ("invalid_client",))),
    case("rfc6749-2.3/client_id-mismatch-with-basic",
         token({"grant_type": "client_credentials", "client_id": "someone-else"}),
         OAuthError((400, 401), ("invalid_request", "invalid_client"))),
    case("rfc7523-2.2/assertion-type-unknown",
         lambda c: token({"grant_type": "client_credentials", "client_id": c.client.client_id,
                          "client_assertion_type": "urn:example", "client_assertion": "x.y.z"},
                         auth=False)(c),
         OAuthError((400, 401), ("invalid_request", "invalid_client"))),
    case("rfc7523-2.2/assertion-garbage",
         token({"grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": "not-a-jwt"}, auth=False),
         OAuthError((401,), ("invalid_client",))),
]


@pytest.mark.parametrize("req,expect", TOKEN)
async def test_token_bad_input(http, ctx_code, req, expect):
    r = await send(http, req(ctx_code))
    _common(r, ctx_code)
    expect.check(r, ctx_code)


# --- /revoke and /introspect ------------------------------------------------------------------

def post(path: str, data: Any = None, *, auth: bool = True, **kw: Any) -> Req:
    def build(c: Ctx) -> dict[str, Any]:
        req: dict[str, Any] = {"method": "POST", "url": path, **kw}
        body = data(c) if callable(data) else data
        if body is not None:
            req["data"] = body
        if auth:
            req["auth"] = c.basic()
        return req
    return build


def revoke_introspect_cases(path: str) -> list[Any]:
    p = path.strip("/")
    return [
        case(f"{p}/method-get", lambda c: {"method": "GET", "url": path, "auth": c.basic()},
             OAuthError((405, 400), ("invalid_request",))),
        case(f"{p}/token-missing", post(path, {"token_type_hint": "access_token"}),
             INVALID_REQUEST),
        case(f"{p}/token-repeated", post(path, lambda c: [("token", c.refresh_token),
                                                          ("token", "x")]), INVALID_REQUEST),
        case(f"{p}/no-client-authentication", post(path, {"token": "x"}, auth=False),
             OAuthError((401,), ("invalid_client",))),
        case(f"{p}/wrong-secret",
             lambda c: post(path, {"token": "x"}, auth=False,
                            headers=basic_header(c.client.client_id.encode() + b":no"))(c),
             INVALID_CLIENT_BASIC),
        case(f"{p}/json-body", post(path, None, json={"token": "x"}), INVALID_REQUEST),
        case(f"{p}/non-utf8-body", post(path, None, content=b"token=\xff", headers=FORM),
             INVALID_REQUEST),
        case(f"{p}/oversized-body",
             post(path, None, content=b"token=" + b"t" * BIG, headers=FORM), TOO_LARGE),
        case(f"{p}/oversized-content-length",
             post(path, None, content=b"token=x",
                  headers={**FORM, "content-length": str(10**9)}), TOO_LARGE),
    ]


@pytest.mark.parametrize("req,expect", revoke_introspect_cases("/revoke")
                         + revoke_introspect_cases("/introspect"))
async def test_revoke_introspect_bad_input(http, ctx_code, req, expect):
    r = await send(http, req(ctx_code))
    _common(r, ctx_code)
    expect.check(r, ctx_code)


@pytest.mark.parametrize("token", [
    pytest.param("nope", id="unknown"),
    pytest.param("a.b.c", id="jwt-shaped"),
    pytest.param("\x00", id="nul"),
    pytest.param("t" * 4000, id="long"),
    pytest.param("ü漢", id="non-ascii"),
])
@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token", "bogus_hint"])
async def test_revoke_and_introspect_garbage_tokens(http, ctx_code, token, hint):
    """RFC 7009 §2.2: invalid tokens get 200; RFC 7662 §2.2: {"active": false}."""
    data = {"token": token} | ({"token_type_hint": hint} if hint else {})
    r = await http.post("/revoke", data=data, auth=ctx_code.basic())
    _common(r, ctx_code)
    assert r.status_code == 200
    r = await http.post("/introspect", data=data, auth=ctx_code.basic())
    _common(r, ctx_code)
    assert r.status_code == 200 and r.json() == {"active": False}
    assert r.headers["cache-control"] == "no-store"


# --- /userinfo and /orders: RFC 6750 ------------------------------------------------------------

def get(path: str, headers: Any = None, **kw: Any) -> Req:
    return lambda c: {"method": "GET", "url": path, "headers": headers, **kw}


def resource_cases(path: str) -> list[Any]:
    p = path.strip("/")
    return [
        case(f"{p}/rfc6750-3.1/no-credentials", get(path), Bearer((401,), None)),
        case(f"{p}/rfc6750-3.1/other-scheme", get(path, {"Authorization": "Basic YTpi"}),
             Bearer((401,), None)),
        case(f"{p}/rfc6750-2.1/bearer-without-token", get(path, {"Authorization": "Bearer"}),
             Bearer((400, 401), "invalid_request")),
        case(f"{p}/rfc6750-2.1/bearer-two-tokens",
             get(path, {"Authorization": "Bearer a b"}), Bearer((400,), "invalid_request")),
        case(f"{p}/rfc6750-2.1/bearer-not-b64token",
             get(path, {"Authorization": b"Bearer \xff\xfe"}), Bearer((400,), "invalid_request")),
        case(f"{p}/rfc6750-3.1/two-authorization-headers",
             get(path, [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]),
             Bearer((400,), "invalid_request")),
        case(f"{p}/rfc6750-3.1/garbage-token",
             get(path, {"Authorization": "Bearer abc.def.ghi"}), Bearer((401,), "invalid_token")),
        case(f"{p}/rfc6750-3.1/huge-token",
             get(path, {"Authorization": "Bearer " + "a" * 20000}),
             Bearer((400, 401), "invalid_token")),
        case(f"{p}/rfc9700-4.3.2/token-in-query",
             lambda c: {"method": "GET", "url": path, "params": {"access_token": c.access_token}},
             Bearer((400, 401), "invalid_request")),
        case(f"{p}/rfc6750-2.2/token-in-form-body-not-read",
             lambda c: {"method": "POST", "url": path, "data": {"access_token": c.access_token}},
             Status((401, 405))),
    ]


@pytest.mark.parametrize("req,expect", resource_cases("/userinfo") + resource_cases("/orders"))
async def test_protected_resource_bad_input(http, ctx_code, req, expect):
    r = await send(http, req(ctx_code))
    _common(r, ctx_code)
    expect.check(r, ctx_code)


# --- /logout ------------------------------------------------------------------------------------

LOGOUT = [
    case("oidc-rpinitiated-2/id_token_hint-garbage",
         get("/logout", params={"id_token_hint": "abc.def.ghi"}), Page()),
    case("oidc-rpinitiated-2/id_token_hint-not-jwt",
         get("/logout", params={"id_token_hint": "garbage"}), Page()),
    case("oidc-rpinitiated-2/id_token_hint-alg-none",
         get("/logout", params={"id_token_hint": "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwOi8vYmFz"
                                                 "dGlvbi50ZXN0In0."}), Page()),
    case("oidc-rpinitiated-2/id_token_hint-huge",
         get("/logout", params={"id_token_hint": "a" * 4000}), Page()),
    case("rfc6749-3.1/state-repeated",
         get("/logout", params=[("state", "a"), ("state", "b")]), Page()),
    case("oidc-rpinitiated-3/redirect-without-client",
         get("/logout", params={"post_logout_redirect_uri": "https://evil.example/"}), Page()),
    case("oidc-rpinitiated-3/redirect-unknown-client",
         get("/logout", params={"post_logout_redirect_uri": "https://evil.example/",
                                "client_id": "nope"}), Page()),
    case("rfc6749-3.1/non-utf8-query",
         lambda c: {"method": "GET", "url": "/logout?state=%FF%FE"}, Page()),
    case("oidc-rpinitiated-2/confirm-csrf-non-ascii",
         lambda c: {"method": "POST", "url": "/logout", "data": {"confirm": "yes", "csrf": "é"}},
         Status((200, 400, 403))),
    case("oidc-rpinitiated-2/post-json",
         lambda c: {"method": "POST", "url": "/logout", "json": {"confirm": "yes"}}, Page()),
    case("oidc-rpinitiated-2/post-non-utf8",
         lambda c: {"method": "POST", "url": "/logout", "content": b"state=\xff",
                    "headers": FORM}, Page()),
    case("rfc9110-15.5.14/post-oversized-body",
         lambda c: {"method": "POST", "url": "/logout", "headers": FORM,
                    "content": b"state=" + b"s" * BIG}, Page(413)),
    case("rfc9110-15.5.14/post-oversized-content-length",
         lambda c: {"method": "POST", "url": "/logout", "content": b"a=b",
                    "headers": {**FORM, "content-length": str(10**9)}}, Page(413)),
]


@pytest.mark.parametrize("req,expect", LOGOUT)
async def test_logout_bad_input(http, ctx, req, expect):
    r = await send(http, req(ctx))
    _common(r, ctx)
    expect.check(r, ctx)


# --- /login, /consent, /login/mfa ---------------------------------------------------------------

@pytest.fixture
async def ctx_login(http: httpx.AsyncClient, ctx: Ctx) -> Ctx:
    r = await http.get("/authorize", params=auth_params(ctx))
    page = await http.get(r.headers["location"])
    ctx.fields = hidden_fields(page.text)
    assert set(ctx.fields) == {"r", "csrf"}
    return ctx


def form(path: str, data: Callable[[Ctx], Any], **kw: Any) -> Req:
    return lambda c: {"method": "POST", "url": path, "data": data(c), **kw}


def login_form(c: Ctx, **over: str | None) -> dict[str, str]:
    data: dict[str, str | None] = {**c.fields, "username": "alice", "password": PASSWORD}
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


WRONG_LOGIN = Status((401,))

LOGIN = [
    case("login/get-without-request", get("/login"), Page()),
    case("login/get-unknown-request", get("/login", params={"r": "nope"}), Page()),
    case("login/get-huge-request-id", get("/login", params={"r": "r" * 5000}), Page()),
    case("login/get-non-utf8", lambda c: {"method": "GET", "url": "/login?r=%FF"}, Page()),
    case("login/request-missing", form("/login", lambda c: login_form(c, r=None)), Page()),
    case("login/request-unknown", form("/login", lambda c: login_form(c, r="x" * 20)), Page()),
    case("rfc9700-4.7/csrf-missing", form("/login", lambda c: login_form(c, csrf=None)),
         Page(403)),
    case("rfc9700-4.7/csrf-wrong", form("/login", lambda c: login_form(c, csrf="0" * 64)),
         Page(403)),
    case("rfc9700-4.7/csrf-non-ascii", form("/login", lambda c: login_form(c, csrf="é" * 64)),
         Page(403)),
    case("rfc6749-3.1/password-repeated",
         form("/login", lambda c: [*login_form(c).items(), ("password", PASSWORD)]), Page()),
    case("login/username-missing", form("/login", lambda c: login_form(c, username=None)),
         WRONG_LOGIN),
    case("login/password-missing", form("/login", lambda c: login_form(c, password=None)),
         WRONG_LOGIN),
    case("login/username-with-nul",
         form("/login", lambda c: login_form(c, username="ali\x00ce")), WRONG_LOGIN),
    case("login/username-only-nul", form("/login", lambda c: login_form(c, username="\x00")),
         WRONG_LOGIN),
    case("login/username-long", form("/login", lambda c: login_form(c, username="u" * 4000)),
         WRONG_LOGIN),
    case("login/username-non-ascii", form("/login", lambda c: login_form(c, username="ålïçé")),
         WRONG_LOGIN),
    case("login/password-long", form("/login", lambda c: login_form(c, password="p" * 4000)),
         WRONG_LOGIN),
    case("login/password-with-nul",
         form("/login", lambda c: login_form(c, password=PASSWORD + "\x00")), WRONG_LOGIN),
    case("login/json-body",
         lambda c: {"method": "POST", "url": "/login", "json": login_form(c)}, Page()),
    case("login/non-utf8-body",
         lambda c: {"method": "POST", "url": "/login", "headers": FORM,
                    "content": b"r=" + c.fields["r"].encode() + b"&username=\xff"}, Page()),
    case("rfc9110-15.5.14/oversized-body",
         lambda c: {"method": "POST", "url": "/login", "headers": FORM,
                    "content": b"username=" + b"u" * BIG}, Page(413)),
    case("rfc9110-15.5.14/oversized-content-length",
         lambda c: {"method": "POST", "url": "/login", "content": b"a=b",
                    "headers": {**FORM, "content-length": str(10**9)}}, Page(413)),
]


@pytest.mark.parametrize("req,expect", LOGIN)
async def test_login_bad_input(http, ctx_login, req, expect):
    r = await send(http, req(ctx_login))
    _common(r, ctx_login)
    expect.check(r, ctx_login)
    assert "bastion_session" not in r.headers.get("set-cookie", "")


@pytest.fixture
async def ctx_consent(http: httpx.AsyncClient, ctx_login: Ctx) -> Ctx:
    r = await http.post("/login", data=login_form(ctx_login))
    assert urlsplit(r.headers["location"]).path == "/consent"
    page = await http.get(r.headers["location"])
    ctx_login.fields = hidden_fields(page.text)
    return ctx_login


CONSENT = [
    case("consent/get-without-request", get("/consent"), Page()),
    case("consent/get-unknown-request", get("/consent", params={"r": "nope"}), Page()),
    case("consent/request-missing",
         form("/consent", lambda c: {"csrf": c.fields["csrf"], "decision": "allow"}), Page()),
    case("rfc9700-4.7/csrf-missing",
         form("/consent", lambda c: {"r": c.fields["r"], "decision": "allow"}), Page(403)),
    case("rfc9700-4.7/csrf-non-ascii",
         form("/consent", lambda c: {"r": c.fields["r"], "csrf": "é" * 64,
                                     "decision": "allow"}), Page(403)),
    case("rfc6749-3.1/decision-repeated",
         form("/consent", lambda c: [*c.fields.items(), ("decision", "allow"),
                                     ("decision", "deny")]), Page()),
    case("consent/json-body",
         lambda c: {"method": "POST", "url": "/consent",
                    "json": {**c.fields, "decision": "allow"}}, Page()),
    case("consent/non-utf8-body",
         lambda c: {"method": "POST", "url": "/consent", "headers": FORM,
                    "content": b"decision=\xff"}, Page()),
    case("rfc9110-15.5.14/oversized-body",
         lambda c: {"method": "POST", "url": "/consent", "headers": FORM,
                    "content": b"decision=" + b"a" * BIG}, Page(413)),
    case("rfc9110-15.5.14/oversized-content-length",
         lambda c: {"method": "POST", "url": "/consent", "content": b"a=b",
                    "headers": {**FORM, "content-length": str(10**9)}}, Page(413)),
    case("consent/mfa-page-without-pending-second-factor",
         lambda c: {"method": "GET", "url": "/login/mfa", "params": {"r": c.fields["r"]}},
         Page()),
    case("rfc9110-15.5.14/mfa-oversized-body",
         lambda c: {"method": "POST", "url": "/login/mfa", "headers": FORM,
                    "content": b"code=" + b"1" * BIG}, Page(413)),
]


@pytest.mark.parametrize("req,expect", CONSENT)
async def test_consent_bad_input(http, ctx_consent, req, expect):
    r = await send(http, req(ctx_consent))
    _common(r, ctx_consent)
    expect.check(r, ctx_consent)


async def test_no_secret_in_any_error_of_a_flow(http, ctx):
    """Errors never echo a secret: a wrong client secret, the user's password and a
    presented code do not appear in any response (bodies or headers)."""
    result = await authorize(http, ctx.client)
    wrong_secret = secrets.token_urlsafe(32)
    ctx.code = result.code
    responses = [
        await http.post("/token", data={"grant_type": "authorization_code", "code": result.code,
                                        "redirect_uri": ctx.client.redirect_uri,
                                        "code_verifier": result.verifier},
                        auth=(ctx.client.client_id, wrong_secret)),
        await http.post("/token", data={"grant_type": "authorization_code", "code": result.code,
                                        "client_id": ctx.client.client_id,
                                        "client_secret": wrong_secret}),
        await http.post("/token", data={"grant_type": "authorization_code", "code": result.code},
                        auth=ctx.basic()),
    ]
    for r in responses:
        _common(r, ctx)
        assert wrong_secret not in r.text
        assert r.status_code in (400, 401)

