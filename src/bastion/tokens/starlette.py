"""Bearer token authentication for Starlette and FastAPI resource servers (RFC 6750).

https://www.rfc-editor.org/rfc/rfc6750#section-2.1

Only the ``Authorization: Bearer`` header method is accepted. The URI query method is refused
(RFC 9700 §4.3.2 / RFC 6750 §5.3: tokens in URLs leak through logs and ``Referer``), and the
form body method is not read.

- ``BearerAuthMiddleware`` (pure ASGI) verifies every HTTP request and stores the
  ``VerifiedToken`` in ``scope["state"]["token"]`` (``request.state.token``).
- ``authorize`` / ``require_scopes`` check scopes and roles of the stored token.
- ``BearerToken`` is a dependency callable (``Depends(BearerToken(verifier))`` in FastAPI);
  it raises ``BearerError``, which ``bearer_exception_handler`` renders.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.tokens.binding import check_binding
from bastion.tokens.errors import (
    BearerError,
    InsufficientScope,
    InvalidRequest,
    MissingToken,
    check_realm,
)
from bastion.tokens.verify import TokenVerifier, VerifiedToken

__all__ = [
    "BearerAuthMiddleware",
    "BearerToken",
    "authorize",
    "bearer_error_response",
    "bearer_exception_handler",
    "extract_bearer_token",
    "require_scopes",
]

logger = logging.getLogger(__name__)

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

Endpoint = Callable[[Request], Awaitable[Response]]


def bearer_error_response(err: BearerError, realm: str = "bastion") -> Response:
    """The error response: status, ``WWW-Authenticate`` challenge, ``Cache-Control:
    no-store`` and a JSON body ``{"error", "error_description"}`` (RFC 6750 §3)."""
    return JSONResponse(err.body(), status_code=err.status_code, headers=err.headers(realm))


async def bearer_exception_handler(request: Request, exc: Exception) -> Response:
    """Exception handler for ``BearerError`` (``app.add_exception_handler(BearerError, …)``)."""
    if not isinstance(exc, BearerError):  # pragma: no cover - registered for BearerError only
        raise exc
    return bearer_error_response(exc)


def extract_bearer_token(headers: Headers, query_string: bytes = b"") -> str:
    """The bearer token of a request, per RFC 6750 §2.1; raises ``BearerError``."""
    # RFC 6750 §2.3 is not supported: refuse rather than ignore, so the client learns why.
    if any(name == "access_token" for name, _ in parse_qsl(query_string.decode("latin-1"))):
        raise InvalidRequest("access token in the query string is not supported")
    values = headers.getlist("authorization")
    if not values:
        raise MissingToken()  # RFC 6750 §3.1: no error code when no credentials at all
    if len(values) > 1:
        raise InvalidRequest("more than one Authorization header")
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":  # RFC 7235 §2.1: the scheme is case-insensitive
        raise MissingToken(debug="unsupported authentication scheme")
    credentials = credentials.strip(" ")
    if not _B64TOKEN.fullmatch(credentials):
        raise InvalidRequest("malformed bearer credentials")
    return credentials


class BearerAuthMiddleware:
    """Pure ASGI middleware: authenticate every HTTP request with a bearer access token.

    Paths in ``optional_paths`` (exact match on ``scope["path"]``) pass through without
    authentication; non-HTTP scopes (lifespan, websocket) pass through untouched. CORS
    preflights carry no credentials: put ``CORSMiddleware`` outside this one. ``on_failure``
    is awaited with each refusal before it is answered (an audit hook).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        realm: str = "bastion",
        optional_paths: Collection[str] = (),
        on_failure: Callable[[BearerError], Awaitable[None]] | None = None,
    ) -> None:
        if isinstance(optional_paths, str):
            raise ValueError("optional_paths must be a collection of paths, not a string")
        self.app = app
        self.verifier = verifier
        self.realm = check_realm(realm)
        self.optional_paths = frozenset(optional_paths)
        self.on_failure = on_failure  # e.g. record the refusal in an audit trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.optional_paths:
            await self.app(scope, receive, send)
            return
        try:
            raw = extract_bearer_token(Headers(scope=scope), scope.get("query_string", b""))
            token = await self.verifier.verify(raw)
            check_binding(token.claims, scope)  # RFC 8705 §3: a bound token needs its cert
        except BearerError as err:
            logger.info("bearer authentication failed: %s (%s)", err.error, err.debug)
            if self.on_failure is not None:
                await self.on_failure(err)
            await bearer_error_response(err, self.realm)(scope, receive, send)
            return
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)


def _check(token: VerifiedToken, scopes: Collection[str], roles: Collection[str]) -> None:
    missing = [s for s in scopes if s not in token.scopes]
    if missing:
        raise InsufficientScope(scope=" ".join(scopes), debug=f"missing scopes {missing}")
    if any(r not in token.roles for r in roles):
        raise InsufficientScope("insufficient role", scope=" ".join(scopes) or None)


def authorize(
    request: Request, *, scopes: Collection[str] = (), roles: Collection[str] = ()
) -> VerifiedToken:
    """The request's verified token, if it has every scope and role; else ``BearerError``
    (``InsufficientScope`` → 403, ``MissingToken`` → 401 when no token was verified)."""
    token = request.scope.get("state", {}).get("token")
    if not isinstance(token, VerifiedToken):
        raise MissingToken(debug="no verified token on the request")
    _check(token, scopes, roles)
    return token


def require_scopes(
    *scopes: str, roles: Collection[str] = (), realm: str = "bastion"
) -> Callable[[Endpoint], Endpoint]:
    """Decorate a Starlette endpoint behind ``BearerAuthMiddleware`` so that it runs only
    for tokens with all ``scopes`` (and ``roles``); other requests get the RFC 6750 error."""
    check_realm(realm)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            try:
                authorize(request, scopes=scopes, roles=roles)
            except BearerError as err:
                return bearer_error_response(err, realm)
            return await endpoint(request)

        return wrapper

    return decorate


class BearerToken:
    """Dependency callable: ``async (request) -> VerifiedToken``.

    Extracts and verifies the bearer token itself (no middleware needed), stores it in
    ``request.state.token``, then checks ``scopes`` and ``roles``. Raises ``BearerError``;
    register ``bearer_exception_handler`` for it. FastAPI: ``Depends(BearerToken(v))``.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        scopes: Collection[str] = (),
        roles: Collection[str] = (),
    ) -> None:
        if isinstance(scopes, str) or isinstance(roles, str):
            raise ValueError("scopes and roles must be collections of strings")
        self.verifier = verifier
        self.scopes = tuple(scopes)
        self.roles = tuple(roles)

    async def __call__(self, request: Request) -> VerifiedToken:
        raw = extract_bearer_token(request.headers, request.scope.get("query_string", b""))
        token = await self.verifier.verify(raw)
        check_binding(token.claims, request.scope)
        request.scope.setdefault("state", {})["token"] = token
        _check(token, self.scopes, self.roles)
        return token
