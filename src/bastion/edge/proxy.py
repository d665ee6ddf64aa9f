"""The reverse proxy: Bastion in front of an upstream API (routes from ``edge/routes.py``).

    Proxy(routes, issuer=..., keyring=..., guard=guard, audit=trail, metrics=metrics)
    Router(routes=[*bastion_routes, *proxy.routes()])

Each route is a Starlette route whose middleware is the route's rate limits, then (with
``auth = "required"``) bearer authentication and IAM authorization of the route's action
(``edge/authz.Guard``); what passes is forwarded over one keep-alive pool of HTTP/1.1
connections (``edge/upstream.py``), bodies streamed both ways chunk by chunk: the server's
flow control and the pool's read-ahead limit bound what is held in memory, never a whole
body.

Headers (RFC 9110 §7.6.1): ``Connection``, the fields it names, ``Keep-Alive``, ``TE``,
``Trailer``, ``Transfer-Encoding``, ``Upgrade`` and ``Proxy-*`` are hop-by-hop and dropped
both ways. ``X-Forwarded-For/-Proto/-Host`` and ``Forwarded`` (RFC 7239 §4) are rebuilt from
what Bastion established (the client IP of ``RequestInfo``, behind trusted proxies the
proxy that relayed the request too): whatever a client wrote there never reaches the
upstream. ``X-Bastion-Principal`` from the client is dropped; on authenticated routes it
carries a JWT Bastion signs with its token signing keys (verifiable with its JWKS):
``typ`` ``bastion-principal+jwt``, ``aud`` the route's upstream URL, 60 seconds. The
client's ``Authorization`` header is not forwarded on such routes (Bastion's access
tokens are not for the upstream: it could replay them).

Upstream failures are answered in RFC 9457's shape with the request id, naming no upstream
detail: ``504`` when connecting or waiting for the response headers times out, ``502``
when the upstream cannot be reached or breaks the protocol. A failure after the response
started closes the client's connection (a truncated body is never passed off as whole).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
from joserfc import jwt
from joserfc.errors import SecurityWarning
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.audit.context import current_request
from bastion.audit.trail import AuditTrail
from bastion.edge.authz import Guard, user_identity
from bastion.edge.metrics import Refusals
from bastion.edge.problem import MEDIA_TYPE, problem_body
from bastion.edge.ratelimit import Backend, RateLimit, Rule
from bastion.edge.routes import RouteConfig
from bastion.edge.upstream import (
    Broken,
    Origin,
    Response,
    Unavailable,
    UpstreamPool,
    UpstreamTimeout,
)
from bastion.tokens.keys import KeyRing
from bastion.tokens.verify import VerifiedToken

log = logging.getLogger("bastion.edge.proxy")

PRINCIPAL_HEADER = "x-bastion-principal"
PRINCIPAL_TYP = "bastion-principal+jwt"
PRINCIPAL_TTL = 60
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"proxy-connection", b"proxy-authenticate",
                        b"proxy-authorization", b"expect"})
# rebuilt by the proxy, never copied from the client
REBUILT = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                     b"forwarded", b"x-real-ip", b"x-request-id", PRINCIPAL_HEADER.encode()})
SAFE_PATH = "/!$&'()*+,;=:@~-._"  # RFC 3986 pchar without percent: kept as they are
MAX_HOST = 255


class UpstreamError(Exception):
    """The upstream failed before its response started: ``status`` 502 or 504."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _ClientGone(Exception):
    """The client disconnected while its body was being forwarded."""


class _TooLarge(Exception):
    """The request body grew past the route's ``max_body_bytes``."""


def sign_principal(keyring: KeyRing, claims: dict[str, Any]) -> str:
    """The JWT carrying the verified principal upstream, signed with the active key (RFC
    7515; explicit ``typ`` per RFC 8725 §3.11, so it is never taken for an access token)."""
    header = {"alg": keyring.signing_alg, "typ": PRINCIPAL_TYP, "kid": keyring.signing.kid}
    with warnings.catch_warnings():  # EdDSA's name is deprecated by RFC 9864; kept for RPs
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(header, claims, keyring.signing, algorithms=[keyring.signing_alg])


def connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The fields named by ``Connection`` (RFC 9110 §7.6.1), lower-case."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(named)


def end_to_end(headers: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes]
               ) -> list[tuple[bytes, bytes]]:
    """``headers`` (names lower-case) without hop-by-hop fields, ``Proxy-*`` and
    ``drop``."""
    headers = [(n.lower(), v) for n, v in headers]
    named = connection_tokens(headers)
    return [(n, v) for n, v in headers
            if n not in HOP_BY_HOP and n not in named and n not in drop
            and not n.startswith(b"proxy-")]


# Cookies named bastion_* or bastion-* (and their __Host-/__Secure- forms) are the edge's own: the
# session, the browser binding, the challenge pass. They never reach an upstream, and an
# upstream cannot set them (that would be session fixation on the edge's origin).
def _edge_cookie(name: bytes) -> bool:
    name = name.strip().lower()
    for prefix in (b"__host-", b"__secure-"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.startswith((b"bastion_", b"bastion-"))


def without_edge_cookies(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Request headers with the edge's cookies taken out of every ``Cookie`` line (a line
    left empty goes)."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == b"cookie":
            kept = [pair for pair in value.split(b";")
                    if pair.strip() and not _edge_cookie(pair.partition(b"=")[0])]
            if not kept:
                continue
            value = b";".join(kept).strip()
        out.append((name, value))
    return out


def sets_edge_cookie(name: bytes, value: bytes) -> bool:
    """Whether a response header sets one of the edge's cookies."""
    return name == b"set-cookie" and _edge_cookie(value.partition(b"=")[0])


def _quoted(value: str) -> str:
    """An RFC 7239 value: a quoted-string (always valid, whatever the value)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _clean_host(value: bytes | None) -> str | None:
    if value is None or len(value) > MAX_HOST:
        return None
    text = value.decode("latin-1")
    if not (text.isascii() and text.isprintable()) or any(c in text for c in '"\\ '):
        return None
    return text or None


class Proxy:
    """The proxied routes of one app and the pooled upstream client they share."""

    def __init__(self, routes: Sequence[RouteConfig], *, issuer: str,
                 keyring: Callable[[], KeyRing], guard: Guard | None = None,
                 audit: AuditTrail | None = None, limiter: Backend | None = None,
                 metrics: Refusals | None = None, max_connections: int = 512) -> None:
        if any(r.auth == "required" for r in routes) and guard is None:
            raise ValueError("routes with auth = required need a guard")
        self.configs = tuple(routes)
        self.issuer = issuer
        self.keyring = keyring
        self.guard = guard
        self.audit = audit
        self.limiter = limiter
        self.metrics = metrics
        self.max_connections = max_connections
        self._pool: UpstreamPool | None = None

    @property
    def pool(self) -> UpstreamPool:
        """The upstream connections, made on first use (HTTP/1.1, no redirects followed,
        no proxy from the environment, no header of its own but ``Host``)."""
        if self._pool is None:
            self._pool = UpstreamPool(max_connections=self.max_connections,
                                      max_idle=min(self.max_connections, 128))
        return self._pool

    def routes(self) -> list[BaseRoute]:
        """One Starlette route per configured route, most specific first (a host before
        any host; a longer prefix before a shorter one)."""
        def order(r: RouteConfig) -> tuple[int, int]:
            return (0 if r.host else 1, -len(r.path_prefix or ""))
        return [ProxyRoute(config, self._chain(config))
                for config in sorted(self.configs, key=order)]

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def _chain(self, config: RouteConfig) -> ASGIApp:
        """The route's layers: limits per IP or client, authentication, limits per
        principal, authorization, then the forwarding endpoint."""
        app: ASGIApp = Forward(self, config)
        before = [lim.rule(config.name) for lim in config.rate_limits if lim.key != "principal"]
        after = [lim.rule(config.name) for lim in config.rate_limits if lim.key == "principal"]
        middleware: list[Middleware] = []
        if before:
            middleware.append(self._limits(before))
        if config.auth == "required":
            assert self.guard is not None and config.action is not None
            authenticate, authorize = self.guard(config.action, config.resource,
                                                 scope=config.scope)
            middleware.append(authenticate)
            if after:
                middleware.append(self._limits(after))
            middleware.append(authorize)
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        return app

    def _limits(self, rules: list[Rule]) -> Middleware:
        if self.limiter is None:
            raise ValueError("routes with rate limits need a limiter backend")
        return Middleware(RateLimit, rules=rules, backend=self.limiter, audit=self.audit,
                          metrics=self.metrics)

    def refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refused("proxy", reason)


class ProxyRoute(BaseRoute):
    """A Starlette route matching a ``RouteConfig``'s host and path prefix. Path parameters
    for the resource ARN: ``route``, ``path`` (below the prefix, no leading slash),
    ``method``."""

    def __init__(self, config: RouteConfig, app: ASGIApp) -> None:
        self.config = config
        self.app = app
        self.name = f"proxy:{config.name}"
        self.path = config.path_prefix or "/"
        self.path_format = f"proxy:{config.name}"  # the metrics label: bounded

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        config = self.config
        remainder = config.remainder(scope["path"])
        if remainder is None:
            return Match.NONE, {}
        if config.host is not None:
            host = None
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value.decode("latin-1").lower()
                    break
            if host is not None:
                host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not config.matches_host(host):
                return Match.NONE, {}
        params = {**scope.get("path_params", {}), "route": config.name,
                  "path": remainder.lstrip("/"), "method": scope["method"]}
        return Match.FULL, {"endpoint": self.app, "path_params": params,
                            "proxy_remainder": remainder}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class Forward:
    """The endpoint of a proxied route: forwards one request and streams the answer."""

    def __init__(self, proxy: Proxy, config: RouteConfig) -> None:
        self.proxy = proxy
        self.config = config
        self.origin = Origin.parse(config.upstream)
        # _target's URL is the upstream URL (scheme://authority/base, no query: routes.py)
        # and the request's path: the request target is what follows the authority
        self._origin_len = len(config.upstream) - len(urlsplit(config.upstream).path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config
        target = self._target(scope)
        if target is None:
            self.proxy.refused("bad_path")
            await _problem(send, 400, "the request path cannot be forwarded (dot segments, "
                           "encoded slashes or control characters)")
            return
        headers, declared, has_body = self._headers(scope)
        limit = config.max_body_bytes
        if declared is None and has_body == "invalid":
            await _problem(send, 400, "malformed Content-Length")
            return
        if limit is not None and declared is not None and declared > limit:
            self.proxy.refused("body_too_large")
            await _problem(send, 413, f"the body exceeds {limit} bytes")
            return
        if config.auth == "required":
            await self._audit(scope)
        content = _body(receive, limit) if has_body == "yes" else None
        try:
            response = await self.proxy.pool.request(
                self.origin, scope["method"], target[self._origin_len:], headers, content,
                content_length=declared,
                connect_timeout=config.connect_timeout, read_timeout=config.timeout)
        except _ClientGone:
            return
        except _TooLarge:
            self.proxy.refused("body_too_large")
            await _problem(send, 413, f"the body exceeds {limit} bytes")
            return
        except UpstreamTimeout as exc:
            await self._failed(send, UpstreamError(504, "upstream_timeout"), exc)
            return
        except Unavailable as exc:
            await self._failed(send, UpstreamError(502, "upstream_unavailable"), exc)
            return
        try:
            await self._relay(response, receive, send)
        finally:
            await response.aclose()

    def _target(self, scope: Scope) -> str | None:
        """The upstream URL, or None for a path that would mean something else upstream
        (``..`` segments, ``%2F``, backslashes, control characters)."""
        path: str = scope["path"]
        raw = scope.get("raw_path")
        if raw is not None:
            lowered = bytes(raw).lower()
            if b"%2f" in lowered or b"%5c" in lowered or b"%00" in lowered:
                return None
        if "\\" in path or not path.isprintable() or any(
                seg in (".", "..") for seg in path.split("/")):
            return None
        if self.config.strip_prefix:
            path = scope.get("proxy_remainder", path)
        url = self.config.upstream + quote(path, safe=SAFE_PATH)
        query: bytes = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        return url

    def _headers(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], int | None, str]:
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        drop = REBUILT | {b"authorization"} if self.config.auth == "required" else REBUILT
        headers = without_edge_cookies(end_to_end(raw, drop))
        has_body = "no"
        declared: int | None = None
        host: bytes | None = None
        for name, value in raw:
            if name == b"content-length":
                text = value.strip()
                if not (text.isdigit() and len(text) < 19) or (
                        declared is not None and int(text) != declared):
                    return headers, None, "invalid"
                declared = int(text)
                has_body = "yes" if declared > 0 else has_body
            elif name == b"transfer-encoding":
                has_body = "yes"
            elif name == b"host" and host is None:
                host = value
        # the framing is the pool's (Content-Length as declared, or chunked in: chunked out)
        headers = [(n, v) for n, v in headers if n != b"content-length"]
        # RequestContext's client IP (trusted proxies applied) and the connection's peer
        state = scope.get("state", {})
        req = current_request.get()
        client = scope.get("client")
        peer = state.get("peer_ip") or (str(client[0]) if client else None)
        ip = state.get("client_ip") or (req.source_ip if req is not None else None) or peer
        proto = "https" if scope.get("scheme") in ("https", "wss") else "http"
        clean_host = _clean_host(host)
        hops = [h for h in (ip, peer if peer != ip else None) if h]
        if hops:
            headers.append((b"x-forwarded-for", ", ".join(hops).encode()))
        headers.append((b"x-forwarded-proto", proto.encode()))
        forwarded = [f"for={_quoted(_node(h))}" for h in hops] or ["for=unknown"]
        forwarded[-1] += f";proto={proto}"
        if clean_host is not None:
            headers.append((b"x-forwarded-host", clean_host.encode()))
            forwarded[-1] += f";host={_quoted(clean_host)}"
        headers.append((b"forwarded", ", ".join(forwarded).encode()))
        request_id = state.get("request_id")
        if request_id:
            headers.append((b"x-request-id", str(request_id).encode()))
        if self.config.auth == "required":
            headers.append((PRINCIPAL_HEADER.encode(),
                            self._principal(scope, request_id).encode()))
        return headers, declared, has_body

    def _principal(self, scope: Scope, request_id: str | None) -> str:
        # signed per request, never cached: jti and request_id name this one request (an
        # upstream may refuse a replayed jti); ES256/EdDSA cost ~0.05 ms (docs/edge.md)
        state = scope.get("state", {})
        token = state.get("token")
        principal = state.get("principal")
        if not isinstance(token, VerifiedToken):  # pragma: no cover - the guard ran
            raise RuntimeError("an authenticated route without a verified token")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.proxy.issuer, "aud": self.config.upstream, "sub": token.subject,
            "iat": now, "nbf": now, "exp": now + PRINCIPAL_TTL,
            "jti": secrets.token_urlsafe(12), "scope": " ".join(sorted(token.scopes)),
            "request_id": request_id}
        if principal is not None:
            claims["principal_arn"] = principal.arn
        if token.client_id is not None:
            claims["client_id"] = token.client_id
        return sign_principal(self.proxy.keyring(), claims)

    async def _audit(self, scope: Scope) -> None:
        """One record per allowed proxied request, written before it is forwarded (the
        trail's group commit; a trail that cannot record fails the request closed)."""
        if self.proxy.audit is None:
            return
        state = scope.get("state", {})
        subject, principal = state.get("subject"), state.get("principal")
        decision = state.get("decision")
        params = scope.get("path_params", {})
        account = self.proxy.guard.iam.account if self.proxy.guard is not None else ""
        resource = self.config.resource.format(account=account,
                                               **{k: str(v)[:256] for k, v in params.items()
                                                  if k in ("route", "path", "method")})
        await self.proxy.audit.emit(
            "ProxyRequest",
            user_identity=user_identity(subject, principal) if subject is not None else None,
            request_parameters={"route": self.config.name, "method": scope["method"],
                                "path": scope["path"][:200], "action": self.config.action},
            resources=[{"ARN": resource}],
            additional={"decision": decision.to_dict()} if decision is not None else None)

    async def _failed(self, send: Send, error: UpstreamError, exc: Exception) -> None:
        # the cause goes to the log, never to the client
        log.warning("proxy %s: %s (%s)", self.config.name, error.reason, type(exc).__name__)
        self.proxy.refused(error.reason)
        detail = ("the upstream did not answer in time" if error.status == 504
                  else "the upstream could not be reached")
        await _problem(send, error.status, detail)

    async def _relay(self, response: Response, receive: Receive, send: Send) -> None:
        """Stream the response; stop reading the upstream as soon as the client is gone
        (the request body is consumed by now: the next message is the disconnect)."""
        headers = end_to_end(response.headers, frozenset({b"x-request-id"}))
        if any(sets_edge_cookie(n, v) for n, v in headers):
            log.warning("proxy %s: the upstream tried to set an edge cookie; dropped",
                        self.config.name)
            headers = [(n, v) for n, v in headers if not sets_edge_cookie(n, v)]
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        whole = response.buffered()
        if whole is not None:  # already read to its end: nothing to wait for, no watcher
            last = whole.pop() if whole else b""
            for chunk in whole:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": last, "more_body": False})
            return
        broken: Broken | None = None
        async with anyio.create_task_group() as group:
            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()  # the client left: stop reading the upstream

            group.start_soon(watch)
            try:
                async for chunk in response.body():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except Broken as exc:
                broken = exc
            group.cancel_scope.cancel()
        if broken is not None:
            log.warning("proxy %s: the upstream broke off its response (%s)",
                        self.config.name, type(broken).__name__)
            self.proxy.refused("upstream_broken")
            # the server closes the connection: the client sees an incomplete body
            raise broken


async def _body(receive: Receive, limit: int | None) -> AsyncIterator[bytes]:
    """The request body as it arrives, never more than ``limit`` bytes."""
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise _TooLarge
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _problem(send: Send, status: int, detail: str) -> None:
    data = json.dumps(problem_body(status, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", MEDIA_TYPE.encode()),
                            (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": data})
