"""Bearer authentication for Starlette: RFC 6750 §2.1 parsing and §3 error responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.tokens.errors import (
    BearerError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
)
from bastion.tokens.starlette import (
    BearerAuthMiddleware,
    BearerToken,
    authorize,
    bearer_error_response,
    bearer_exception_handler,
    require_scopes,
)
from bastion.tokens.verify import TokenVerifier, VerifiedToken

from .conftest import Kit

pytestmark = pytest.mark.anyio

Headers = list[tuple[str, str]]


async def whoami(request: Request) -> Response:
    token: VerifiedToken = request.state.token
    return JSONResponse({"sub": token.subject, "scopes": sorted(token.scopes)})


@require_scopes("admin", realm="api")
async def admin(request: Request) -> Response:
    return PlainTextResponse("admin")


@require_scopes("read", roles=["ops"], realm="api")
async def ops(request: Request) -> Response:
    return PlainTextResponse("ops")


async def root_only(request: Request) -> Response:
    try:
        authorize(request, roles=["root"])
    except BearerError as err:
        return bearer_error_response(err, "api")
    return PlainTextResponse("root")


async def health(request: Request) -> Response:
    return PlainTextResponse("token" if "token" in request.scope.get("state", {}) else "anon")


def app_with_middleware(verifier: TokenVerifier) -> Starlette:
    routes = [Route("/me", whoami), Route("/admin", admin), Route("/ops", ops),
              Route("/root", root_only), Route("/health", health)]
    mw = Middleware(BearerAuthMiddleware, verifier=verifier, realm="api",
                    optional_paths=["/health"])
    return Starlette(routes=routes, middleware=[mw])


@pytest.fixture
def verifier(make_verifier: Callable[..., TokenVerifier]) -> TokenVerifier:
    return make_verifier()


async def request(app: Any, path: str, headers: Headers | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rs.test") as client:
        return await client.get(path, headers=headers)


def bearer(token: str, scheme: str = "Bearer") -> Headers:
    return [("Authorization", f"{scheme} {token}")]


def good(k: Kit) -> Headers:
    return bearer(k.forge())


# (id, path, headers builder, status, WWW-Authenticate, error code or None for success)
CASES: list[tuple[str, str, Callable[[Kit], Headers], int, str | None, str | None]] = [
    ("ok/bearer", "/me", good, 200, None, None),
    ("ok/scheme-lowercase", "/me", lambda k: bearer(k.forge(), "bearer"), 200, None, None),
    ("ok/scheme-uppercase", "/me", lambda k: bearer(k.forge(), "BEARER"), 200, None, None),
    ("ok/several-spaces", "/me", lambda k: [("Authorization", f"Bearer   {k.forge()}")], 200, None,
     None),
    ("ok/optional-path-without-token", "/health", lambda k: [], 200, None, None),
    ("ok/optional-path-ignores-bad-token", "/health", lambda k: bearer("x.y.z"), 200, None,
     None),
    ("no-credentials/no-header", "/me", lambda k: [], 401, 'Bearer realm="api"',
     "invalid_token"),
    ("no-credentials/basic-scheme", "/me",
     lambda k: [("Authorization", "Basic dXNlcjpwYXNz")], 401, 'Bearer realm="api"',
     "invalid_token"),
    ("no-credentials/scheme-prefix-only", "/me", lambda k: bearer(k.forge(), "Bearerx"), 401,
     'Bearer realm="api"', "invalid_token"),
    ("invalid_request/empty-credentials", "/me", lambda k: [("Authorization", "Bearer ")],
     400, 'Bearer realm="api", error="invalid_request", '
          'error_description="malformed bearer credentials"', "invalid_request"),
    ("invalid_request/scheme-only", "/me", lambda k: [("Authorization", "Bearer")], 400,
     None, "invalid_request"),
    ("invalid_request/space-inside-token", "/me",
     lambda k: bearer(k.forge()[:10] + " " + k.forge()[10:]), 400, None, "invalid_request"),
    ("invalid_request/not-token68", "/me", lambda k: bearer(k.forge() + "!"), 400, None,
     "invalid_request"),
    ("invalid_request/comma-separated-params", "/me",
     lambda k: bearer(f"token={k.forge()}, x=y"), 400, None, "invalid_request"),
    ("invalid_request/two-authorization-headers", "/me", lambda k: bearer(k.forge()) * 2, 400,
     'Bearer realm="api", error="invalid_request", '
     'error_description="more than one Authorization header"', "invalid_request"),
    ("invalid_request/token-in-query", "/me?access_token=abc", lambda k: [], 400,
     'Bearer realm="api", error="invalid_request", '
     'error_description="access token in the query string is not supported"',
     "invalid_request"),
    ("invalid_request/token-in-query-and-header", "/me?a=1&access_token=abc", good, 400,
     None, "invalid_request"),
    ("invalid_token/expired", "/me", lambda k: bearer(k.forge(claims={"exp": 1000})), 401,
     'Bearer realm="api", error="invalid_token", error_description="token expired"',
     "invalid_token"),
    ("invalid_token/garbage", "/me", lambda k: bearer("abc.def.ghi"), 401, None,
     "invalid_token"),
    ("invalid_token/not-a-jwt", "/me", lambda k: bearer("opaque-token"), 401,
     'Bearer realm="api", error="invalid_token", error_description="malformed token"',
     "invalid_token"),
    ("insufficient_scope/require_scopes", "/admin", good, 403,
     'Bearer realm="api", error="insufficient_scope", '
     'error_description="insufficient scope", scope="admin"', "insufficient_scope"),
    ("ok/require_scopes-with-role", "/ops", good, 200, None, None),
    ("insufficient_scope/authorize-role", "/root", good, 403,
     'Bearer realm="api", error="insufficient_scope", '
     'error_description="insufficient role"', "insufficient_scope"),
]


@pytest.mark.parametrize(("path", "headers", "status", "challenge", "error"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_middleware(kit: Kit, verifier: TokenVerifier, path: str,
                          headers: Callable[[Kit], Headers], status: int, challenge: str | None,
                          error: str | None) -> None:
    sent = headers(kit)
    resp = await request(app_with_middleware(verifier), path, sent)
    assert resp.status_code == status
    if error is None:
        assert "www-authenticate" not in resp.headers
        return
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["www-authenticate"].startswith('Bearer realm="api"')
    if challenge is not None:
        assert resp.headers["www-authenticate"] == challenge
    body = resp.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error
    for credentials in (v.split()[-1] for _, v in sent if len(v) > 40):  # never echoed back
        assert credentials not in resp.text
        assert credentials not in resp.headers["www-authenticate"]


async def test_verified_token_reaches_endpoint(kit: Kit, verifier: TokenVerifier) -> None:
    resp = await request(app_with_middleware(verifier), "/me", bearer(kit.forge()))
    assert resp.json() == {"sub": "user-42", "scopes": ["read", "write"]}


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)


async def _noop_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
async def test_non_http_scopes_pass_through(verifier: TokenVerifier, scope_type: str) -> None:
    app = Recorder()
    scope = {"type": scope_type, "path": "/me", "headers": []}
    await BearerAuthMiddleware(app, verifier=verifier)(scope, _noop_receive, _noop_send)
    assert app.scopes == [scope] and "state" not in scope


async def _noop_send(message: Any) -> None:
    pass


async def test_existing_state_is_kept(kit: Kit, verifier: TokenVerifier) -> None:
    app = Recorder()
    scope = {"type": "http", "method": "GET", "path": "/me", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {kit.forge()}".encode())],
             "state": {"db": "pool"}}
    await BearerAuthMiddleware(app, verifier=verifier)(scope, _noop_receive, _noop_send)
    state = app.scopes[0]["state"]
    assert state["db"] == "pool" and isinstance(state["token"], VerifiedToken)


async def test_app_not_called_on_failure(verifier: TokenVerifier) -> None:
    app = Recorder()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/me", "query_string": b"", "headers": []}
    await BearerAuthMiddleware(app, verifier=verifier)(scope, _noop_receive, send)
    assert app.scopes == [] and sent[0]["status"] == 401


def test_middleware_is_pure_asgi() -> None:
    assert not issubclass(BearerAuthMiddleware, BaseHTTPMiddleware)


@pytest.mark.parametrize("options", [{"realm": 'a"b'}, {"realm": "a\\b"}, {"realm": "a\nb"},
                                     {"optional_paths": "/health"}])
def test_middleware_invalid_options(verifier: TokenVerifier, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BearerAuthMiddleware(Recorder(), verifier=verifier, **options)


# ---------------------------------------------------------------- BearerToken dependency

def app_with_dependency(verifier: TokenVerifier) -> Starlette:
    read = BearerToken(verifier, scopes=["read"])
    admin = BearerToken(verifier, scopes=["admin"])
    ops = BearerToken(verifier, roles=["ops"])

    def endpoint(dep: BearerToken) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            token = await dep(request)
            assert request.state.token is token
            return PlainTextResponse(token.subject)

        return handle

    return Starlette(
        routes=[Route("/read", endpoint(read)), Route("/admin", endpoint(admin)),
                Route("/ops", endpoint(ops))],
        exception_handlers={BearerError: bearer_exception_handler},
    )


@pytest.mark.parametrize(("path", "with_token", "status", "error"), [
    pytest.param("/read", True, 200, None, id="ok/has-scope"),
    pytest.param("/ops", True, 200, None, id="ok/has-role"),
    pytest.param("/read", False, 401, "invalid_token", id="no-credentials"),
    pytest.param("/admin", True, 403, "insufficient_scope", id="missing-scope"),
    pytest.param("/read?access_token=x", False, 400, "invalid_request", id="token-in-query"),
])
async def test_bearer_token_dependency(kit: Kit, verifier: TokenVerifier, path: str,
                                       with_token: bool, status: int, error: str | None) -> None:
    headers = bearer(kit.forge()) if with_token else []
    resp = await request(app_with_dependency(verifier), path, headers)
    assert resp.status_code == status
    if error:
        assert resp.json()["error"] == error
        assert resp.headers["cache-control"] == "no-store"
    else:
        assert resp.text == "user-42"


def test_bearer_token_rejects_bare_string_scopes(verifier: TokenVerifier) -> None:
    with pytest.raises(ValueError):
        BearerToken(verifier, scopes="read")


# ---------------------------------------------------------------- the wire contract (RFC 6750 §3)

@pytest.mark.parametrize(("err", "status", "challenge"), [
    pytest.param(MissingToken(), 401, 'Bearer realm="r"', id="no-credentials-no-error-code"),
    pytest.param(InvalidRequest("bad"), 400,
                 'Bearer realm="r", error="invalid_request", error_description="bad"',
                 id="invalid_request"),
    pytest.param(InvalidToken("token expired"), 401,
                 'Bearer realm="r", error="invalid_token", error_description="token expired"',
                 id="invalid_token"),
    pytest.param(InsufficientScope(scope="a b"), 403,
                 'Bearer realm="r", error="insufficient_scope", '
                 'error_description="insufficient scope", scope="a b"',
                 id="insufficient_scope-with-scope"),
    pytest.param(InvalidToken('x"\\\r\nSet-Cookie: a=b'), 401,
                 'Bearer realm="r", error="invalid_token", error_description="xSet-Cookie: a=b"',
                 id="description-cannot-break-out-of-quotes-or-header"),
])
def test_www_authenticate(err: BearerError, status: int, challenge: str) -> None:
    assert err.status_code == status
    assert err.www_authenticate("r") == challenge
    assert err.headers("r") == {"WWW-Authenticate": challenge, "Cache-Control": "no-store"}


def test_explicit_scope_overrides() -> None:
    assert InvalidToken().www_authenticate("r", scope="s").endswith(', scope="s"')
    assert InsufficientScope(scope="a").www_authenticate("r", scope="b").endswith('scope="b"')


def test_default_realm_and_debug_stays_private() -> None:
    err = InvalidToken("token expired", debug="kid=abc secret detail")
    assert err.www_authenticate().startswith('Bearer realm="bastion"')
    assert "secret" not in err.www_authenticate() and err.body() == {
        "error": "invalid_token", "error_description": "token expired"}
    assert str(err) == "token expired"


def test_realm_cannot_inject() -> None:
    with pytest.raises(ValueError):
        InvalidToken().www_authenticate('x", error="none')
