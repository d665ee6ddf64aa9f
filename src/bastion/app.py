"""Composition of the ASGI application: identity provider endpoints, the Orders API and the
IAM admin API, behind the edge's request context (request ids, access log, fail-closed) and
its rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from functools import partial

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.acme import AcmeServer
from bastion.admin import iam_api
from bastion.config import Settings
from bastion.edge.authz import Guard, authenticate
from bastion.edge.challenge import Challenge, derive_key, flush_challenges
from bastion.edge.clientip import TrustedProxies
from bastion.edge.counters import COUNTERS
from bastion.edge.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from bastion.edge.proxy import Proxy
from bastion.edge.ratelimit import (
    Backend,
    MemoryBackend,
    RateLimit,
    RedisBackend,
    flush_refusals,
)
from bastion.edge.request import RequestContext
from bastion.edge.sharedlimits import SharedBackend, SharedTable
from bastion.edge.shed import Shed
from bastion.edge.waf.middleware import WafMiddleware
from bastion.edge.waf.settings import build_waf, middleware_options
from bastion.edge.workermetrics import WorkerMetrics
from bastion.iam.bootstrap import ADMIN_SCOPE
from bastion.iam.sts_wire import StsWireAPI
from bastion.kms.api import KmsAPI
from bastion.oauth import pages
from bastion.oauth.authorize import authorize_endpoint
from bastion.oauth.provider import Provider
from bastion.oauth.rfc7009 import revocation_endpoint
from bastion.oauth.rfc7662 import introspection_endpoint
from bastion.oauth.rfc8414 import metadata_endpoint
from bastion.oauth.sts import assume_role_endpoint
from bastion.oauth.token import TokenEndpoint, default_grants
from bastion.oidc.discovery import discovery_endpoint, jwks_endpoint
from bastion.oidc.logout import logout_endpoint
from bastion.oidc.userinfo import userinfo_endpoint
from bastion.orders import api as orders_api
from bastion.orders.sealing import OrderSealer
from bastion.pki.http import PkiHttp
from bastion.store.kv import RedisKV
from bastion.workers import SINGLE, Worker, run_dir, shared_limits_path


def limiter(provider: Provider, prefix: str = "bastion:rl:") -> Backend:
    """A rate limit backend: the provider's Redis when there is one, else a table the
    worker processes share (``bastion serve --workers N``), else memory."""
    if isinstance(provider.kv, RedisKV):
        return RedisBackend(provider.kv.client, prefix=prefix,
                            fail_mode=provider.settings.rate_limit_fail_mode)
    if provider.worker.shared:
        name = prefix.removeprefix("bastion:rl:").strip(":") or "edge"
        return SharedBackend(SharedTable(shared_limits_path(provider.settings.data_dir,
                                                            name)))
    return MemoryBackend()


def rate_limits(provider: Provider, metrics: Metrics | None = None) -> list[Middleware]:
    """The edge's rate limits (``rate_limits``/``rate_limit_rules``), shared through the
    provider's Redis when there is one, else this process's memory."""
    s = provider.settings
    if not s.rate_limits or not s.rate_limit_rules:
        return []
    backend = limiter(provider)
    if metrics is not None:
        metrics.watch_limiter("edge", backend)
    return [Middleware(RateLimit, rules=s.rate_limit_rules, backend=backend,
                       audit=provider.audit, metrics=metrics)]


def proxied_routes(provider: Provider, guard: Guard, metrics: Metrics) -> Proxy:
    """The reverse proxy's routes (``routes``, docs/edge.md), with their own limiter."""
    routes = provider.settings.routes
    backend = limiter(provider, "bastion:rl:route:")
    if any(r.rate_limits for r in routes):
        metrics.watch_limiter("routes", backend)
    return Proxy(routes, issuer=provider.issuer_url, keyring=lambda: provider.keyring,
                 guard=guard, audit=provider.audit, limiter=backend, metrics=metrics)


def edge_context(provider: Provider) -> Middleware:
    """Request ids and the one client IP (``trusted_proxies``, docs/edge.md)."""
    s = provider.settings
    return Middleware(RequestContext, trusted_proxies=TrustedProxies(
        s.trusted_proxies, header=s.trusted_proxy_header))


def web_firewall(provider: Provider, metrics: Metrics | None = None) -> list[Middleware]:
    """The WAF on every request (``waf_*``, docs/waf.md); none with ``waf_mode = off``."""
    s = provider.settings
    if s.waf_mode == "off":
        return []
    return [Middleware(WafMiddleware, waf=build_waf(s), audit=provider.audit,
                       metrics=metrics, **middleware_options(s))]


def load_shedding(provider: Provider) -> Middleware:
    """The cap on requests in flight and its queue (docs/edge.md, flood protection)."""
    s = provider.settings
    return Middleware(Shed, max_in_flight=s.max_in_flight, queue_size=s.queue_size,
                      queue_timeout=s.queue_timeout, audit=provider.audit)


def under_attack(provider: Provider) -> list[Middleware]:
    """The proof-of-work challenge for browsers (``under_attack``, docs/edge.md); its key
    is derived from the KEK, so every instance accepts every other's cookie."""
    s = provider.settings
    if s.under_attack == "off":
        return []
    return [Middleware(Challenge, key=derive_key(provider.wrapper.keyed_hash),
                       mode=s.under_attack, difficulty=s.under_attack_difficulty,
                       cookie_ttl=s.under_attack_cookie_ttl,
                       challenge_ttl=s.under_attack_challenge_ttl,
                       trigger_rate=s.under_attack_trigger_rate,
                       trigger_seconds=s.under_attack_trigger_seconds,
                       calm_seconds=s.under_attack_calm_seconds,
                       exempt=s.under_attack_exempt_paths,
                       secure=provider.issuer_url.startswith("https://") or None,
                       audit=provider.audit)]


METRICS_ARN = "arn:bastion:bastion::{account}:metrics"  # the resource of bastion:GetMetrics


async def healthz(provider: Provider, request: Request) -> Response:
    del request
    return JSONResponse({"status": "ok", "issuer": provider.issuer_url})


def build_app(provider: Provider, *, demo: bool = False) -> Starlette:
    grants = default_grants()
    grant_names = [g.grant_type for g in grants]
    p = provider
    metrics = Metrics()
    metrics.watch_audit(p.audit)
    metrics.watch_edge(COUNTERS)
    bearer = [authenticate(p.verifier, p.audit, metrics)]
    guard = Guard(p.verifier, p.iam, p.audit, metrics)
    orders = orders_api.OrdersAPI(p.fast, p.audit, p.settings.account_id,
                                  OrderSealer.from_settings(p.kms, p.settings))
    kms_api, sts_api = KmsAPI(p), StsWireAPI(p)
    routes: list[BaseRoute] = [  # hottest first: Starlette matches routes in order
        Route("/token", TokenEndpoint(p, grants).handle, methods=["POST"]),
        *orders_api.routes(orders, guard),
        Route("/healthz", partial(healthz, p), methods=["GET"]),
        Route("/.well-known/openid-configuration", partial(discovery_endpoint, p, grant_names),
              methods=["GET"]),
        Route("/.well-known/oauth-authorization-server",
              partial(metadata_endpoint, p, grant_names), methods=["GET"]),
        Route("/jwks.json", partial(jwks_endpoint, p), methods=["GET"]),
        Route("/authorize", partial(authorize_endpoint, p), methods=["GET", "POST"]),
        Route("/login", partial(pages.login_page, p), methods=["GET"]),
        Route("/login", partial(pages.login_submit, p), methods=["POST"]),
        Route("/login/mfa", partial(pages.mfa_page, p), methods=["GET"]),
        Route("/login/mfa", partial(pages.mfa_submit, p), methods=["POST"]),
        Route("/consent", partial(pages.consent_page, p), methods=["GET"]),
        Route("/consent", partial(pages.consent_submit, p), methods=["POST"]),
        Route("/revoke", partial(revocation_endpoint, p), methods=["POST"]),
        Route("/introspect", partial(introspection_endpoint, p), methods=["POST"]),
        Route("/userinfo", partial(userinfo_endpoint, p), methods=["GET", "POST"],
              middleware=bearer),
        Route("/logout", partial(logout_endpoint, p), methods=["GET", "POST"]),
        *sts_api.routes(),  # POST /sts signed with SigV4 (AWS query protocol) first
        Route("/sts", partial(assume_role_endpoint, p), methods=["POST"], middleware=bearer),

    ]
    routes += iam_api.routes(iam_api.IamAPI(p.iam_admin, p.iam, p.fast), guard)
    routes += kms_api.routes()  # POST /kms, and POST / only with X-Amz-Target
    routes += PkiHttp(p.ca).routes(guard)  # /pki/...: CA certificates, CRL, OCSP, the API
    acme = AcmeServer(p) if p.settings.acme else None
    if acme is not None:
        routes += acme.routes()  # /acme/directory and what it names (docs/acme.md)
    exported: Metrics | WorkerMetrics = metrics
    if p.worker.shared:  # every worker's series in each scrape (edge/workermetrics.py)
        exported = WorkerMetrics(metrics, run_dir(p.settings.data_dir), p.worker.index,
                                 p.worker.count)
    if p.settings.metrics:
        routes.append(Route("/metrics", partial(metrics_endpoint, exported), methods=["GET"],
                            middleware=guard("bastion:GetMetrics", METRICS_ARN,
                                             scope=ADMIN_SCOPE)))
    proxy = proxied_routes(p, guard, metrics)
    routes += proxy.routes()  # after Bastion's own: they win a path both claim
    if demo:
        from bastion.demo import callback_page

        routes.append(Route("/demo/callback", callback_page, methods=["GET"]))
    app = Starlette(routes=routes,
                    middleware=[Middleware(MetricsMiddleware, metrics=metrics),
                                edge_context(provider), load_shedding(provider),
                                *under_attack(provider),
                                *rate_limits(provider, metrics),
                                *web_firewall(provider, metrics)])
    app.state.metrics, app.state.proxy = metrics, proxy
    app.state.exported = exported
    app.state.acme = acme  # its validation tasks end with the app (close_app)
    # the SigV4 refusal budgets: their last summaries are written by close_app
    app.state.refusal_audits = (kms_api.refusals, sts_api.refusals)
    return app


async def close_app(app: ASGIApp) -> None:
    """Release what ``build_app`` opened: the proxy's upstream connections, the metrics'
    hooks on the audit trail; and write the SigV4 refusals still counted, not recorded
    (before the provider's audit trail closes)."""
    state = getattr(app, "state", None)
    for refusals in getattr(state, "refusal_audits", ()):
        await refusals.close()
    if state is not None and hasattr(state, "proxy"):
        await state.proxy.aclose()
        state.metrics.unwatch()
    if state is not None and getattr(state, "acme", None) is not None:
        await state.acme.close()


class BastionServer:
    """The served ASGI application. State is opened at lifespan startup, on the server's
    event loop, then every request goes straight to the composed app."""

    def __init__(self, settings: Settings, *, demo: bool = False,
                 worker: Worker = SINGLE) -> None:
        self.settings = settings
        self.demo = demo
        self.worker = worker
        self.provider: Provider | None = None
        self.app: ASGIApp | None = None
        self._tasks: list[asyncio.Future[None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:
            raise RuntimeError("lifespan startup has not run")
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        from bastion.runtime import open_provider

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.provider = await open_provider(self.settings, worker=self.worker)
                    # the CA exists from the first start; certificates the CLI issues point
                    # their CRL/OCSP URLs at this server
                    await self.provider.ca.ensure()
                    await self.provider.ca.publish_at(self.provider.issuer_url)
                except Exception as exc:  # reported by the server, which then exits
                    if self.provider is not None:
                        await self.provider.close()
                        self.provider = None
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.provider.start_background()
                self.app = app = build_app(self.provider, demo=self.demo)
                exported = app.state.exported
                if isinstance(exported, WorkerMetrics):
                    self._tasks.append(asyncio.ensure_future(exported.run()))
                # long-lived start-up objects leave the collector's view: full collections
                # then scan only per-request garbage (shorter pauses, lower p99)
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self._tasks:
                    task.cancel()
                for task in self._tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if self.app is not None:
                    await flush_refusals(self.app)  # the last second's refusal counts
                    await flush_challenges(self.app)
                    await COUNTERS.flush()  # and the flood protection's
                    await close_app(self.app)
                if self.provider is not None:
                    await self.provider.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
