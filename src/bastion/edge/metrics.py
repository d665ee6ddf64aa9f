"""Prometheus metrics of one app: requests, latency, refusals per layer, limiter and audit
trail state, and the identity provider's counters (``GET /metrics``, text format 0.0.4).

    metrics = Metrics()                      # its own CollectorRegistry: no globals
    app = MetricsMiddleware(app, metrics=metrics)
    metrics.refused("waf", "sqli")           # any layer that says no

Labels are bounded by construction: the route *template* a request matched
(``/orders/{order_id}``, ``proxy:inventory``; ``<none>`` when no route was reached), the
method from a fixed list, the status class (``2xx``), refusal layers from
:data:`LAYERS`, and codes (OAuth errors, grant types, audit error codes) that pass
:func:`label` (at most :data:`MAX_VALUES` distinct values per label, then ``other``). No
value a client sends becomes a label as it is.

The per-request cost is one histogram observation on a cached child and two integer
updates (``docs/edge.md`` has the figure measured); everything else (limiter and trail
state) is read when Prometheus scrapes.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# "server": refusals before a request exists (edge/server.py, through EdgeCounters)
LAYERS = frozenset({"shed", "conn_cap", "server", "rate_limit", "waf", "authn", "iam",
                    "proxy", "challenge"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
GRANTS = frozenset({"authorization_code", "client_credentials", "refresh_token",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                    "urn:ietf:params:oauth:grant-type:device_code"})
MAX_VALUES = 64  # distinct values per free-form label
LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
NO_ROUTE = "<none>"


class Refusals(Protocol):
    """What a layer needs to count its refusals: ``metrics.refused(layer, reason)``."""

    def refused(self, layer: str, reason: str) -> None: ...


class _Bounded:
    """Values of one free-form label: known ones as they are, at most ``MAX_VALUES``,
    then ``other``; anything outside ``LABEL_CHARS`` (or over 64 characters) is ``other``."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = str(value)
        if text in self.seen:
            return text
        if (len(self.seen) >= MAX_VALUES or not 0 < len(text) <= 64
                or not set(text) <= LABEL_CHARS):
            return "other"
        self.seen.add(text)
        return text


class Exporter(Protocol):
    def exposition(self) -> bytes: ...


class Metrics:
    """The metrics of one app, in ``self.registry`` (a fresh ``CollectorRegistry``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._duration = Histogram(
            "bastion_http_request_duration_seconds", "Requests by route template, method "
            "and status class: latency until the response is sent (_count is the number of "
            "requests).", ("route", "method", "status"), buckets=LATENCY_BUCKETS, registry=r)
        self._events = Counter("bastion_audit_events", "Audit records by event name and "
                               "outcome (success or the error code).", ("event", "outcome"),
                               registry=r)
        self._tokens = Counter("bastion_token_requests", "Token endpoint requests by grant "
                               "type and outcome (issued or the OAuth error).",
                               ("grant", "outcome"), registry=r)
        self._logins = Counter("bastion_logins", "Sign-in steps (password, mfa) by outcome "
                               "(success or the error code).", ("step", "outcome"),
                               registry=r)
        self._commit = Histogram("bastion_audit_commit_seconds", "Duration of each group "
                                 "commit of the audit trail (how long a decision waits for "
                                 "its record to be durable).", registry=r,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25,
                                          .5, 1, 2.5, 5))
        self.in_flight = 0
        Gauge("bastion_http_requests_in_flight", "Requests being served.",
              registry=r).set_function(lambda: self.in_flight)
        self._state = _State()
        r.register(self._state)
        self._children: dict[tuple[str, str, str], Any] = {}
        self._reasons = _Bounded()
        self._codes = _Bounded()
        self._event_children: dict[tuple[str, str], Any] = {}

    # --- the API the layers call -------------------------------------------------------
    def refused(self, layer: str, reason: str) -> None:
        """Count one refusal by ``layer`` (one of :data:`LAYERS`) for ``reason`` (a short
        code of the layer's own: ``rule name``, ``invalid_token``, ``sqli``...)."""
        refusals = self._state.refusals
        key = (layer, reason)
        if key in refusals:
            refusals[key] += 1
            return
        if layer not in LAYERS:
            raise ValueError(f"unknown refusal layer {layer!r}; one of {sorted(LAYERS)}")
        refusals[(layer, self._reasons(reason))] += 1

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in METHODS else "OTHER",
               "5xx" if status == 0 else f"{status // 100}xx")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._duration.labels(*key)
        child.observe(seconds)

    # --- what is read at scrape time ----------------------------------------------------
    def watch_limiter(self, name: str, backend: object) -> None:
        """Export a rate limit backend's state under ``limiter=name``."""
        self._state.limiters[name] = backend

    def watch_edge(self, counters: object) -> None:
        """Export an ``edge.counters.EdgeCounters`` (server and shedding layers): its
        refusals join ``bastion_edge_refusals_total``; its gauges are read when scraped."""
        self._state.edge.append(counters)

    def watch_audit(self, trail: Any) -> None:
        """Count the trail's records (IdP counters among them) and time its commits."""
        self._state.trails.append(trail)
        trail.observers.append(self._on_record)
        trail.commit_observers.append(self._commit.observe)

    def unwatch(self) -> None:
        """Stop observing the trails (the app is going away)."""
        for trail in self._state.trails:
            if self._on_record in trail.observers:
                trail.observers.remove(self._on_record)
            if self._commit.observe in trail.commit_observers:
                trail.commit_observers.remove(self._commit.observe)
        self._state.trails.clear()

    def _on_record(self, record: Mapping[str, Any]) -> None:
        name = str(record.get("eventName", ""))
        error = record.get("errorCode")
        outcome = "success" if error is None else self._codes(error)
        key = (name, outcome)
        child = self._event_children.get(key)
        if child is None:
            child = self._event_children[key] = self._events.labels(name, outcome)
        child.inc()
        if name in ("IssueToken", "RefreshToken"):
            params = record.get("requestParameters")
            grant = params.get("grantType") if isinstance(params, Mapping) else None
            self._tokens.labels(grant if grant in GRANTS else "other",
                                "issued" if error is None else outcome).inc()
        elif name in ("Login", "VerifyMfa"):
            self._logins.labels("password" if name == "Login" else "mfa", outcome).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _State(Collector):
    """Limiter backends and audit trails, read when scraped."""

    def __init__(self) -> None:
        self.limiters: dict[str, object] = {}
        self.trails: list[Any] = []
        self.edge: list[Any] = []
        self.refusals: collections.Counter[tuple[str, str]] = collections.Counter()

    def collect(self) -> Iterable[Metric]:
        refusals = CounterMetricFamily("bastion_edge_refusals", "Requests (or connections) "
                                       "refused by an edge layer, by reason.",
                                       labels=["layer", "reason"])
        totals = collections.Counter(self.refusals)
        for counters in self.edge:
            totals.update(getattr(counters, "refusals", {}))
        for (layer, reason), count in sorted(totals.items()):
            refusals.add_metric([layer, reason], count)
        yield refusals
        gauges = {name: GaugeMetricFamily(f"bastion_edge_{name}", doc) for name, doc in (
            ("connections", "Open client connections (server layer)."),
            ("shed_in_flight", "Requests holding a slot of the load shedder."),
            ("shed_queued", "Requests waiting for a slot of the load shedder."))}
        for counters in self.edge[:1]:
            gauges["connections"].add_metric([], getattr(counters, "connections", 0))
            gauges["shed_in_flight"].add_metric([], getattr(counters, "in_flight", 0))
            gauges["shed_queued"].add_metric([], getattr(counters, "queued", 0))
        yield from gauges.values()
        up = GaugeMetricFamily("bastion_ratelimit_redis_up", "1 while the shared (Redis) "
                               "limiter decides, 0 while it falls back or refuses.",
                               labels=["limiter", "fail_mode"])
        failures = CounterMetricFamily("bastion_ratelimit_redis_failures", "Redis errors "
                                       "seen by the limiter.", labels=["limiter"])
        fallback = CounterMetricFamily("bastion_ratelimit_fallback_decisions", "Decisions "
                                       "made without Redis (fail_open: in memory; "
                                       "fail_closed: refused).", labels=["limiter"])
        memory = GaugeMetricFamily("bastion_ratelimit_memory_keys", "Keys held by "
                                   "in-process limiters.", labels=["limiter"])
        for name, backend in self.limiters.items():
            if hasattr(backend, "degraded"):
                up.add_metric([name, str(getattr(backend, "fail_mode", ""))],
                              0 if backend.degraded else 1)
                failures.add_metric([name], getattr(backend, "failures", 0))
                fallback.add_metric([name], getattr(backend, "fallback_decisions", 0))
                backend = getattr(backend, "fallback", None)
            if backend is not None and hasattr(backend, "__len__"):
                memory.add_metric([name], len(backend))
        yield from (up, failures, fallback, memory)
        queued = GaugeMetricFamily("bastion_audit_queued_records", "Records waiting for "
                                   "the next group commit.")
        appended = CounterMetricFamily("bastion_audit_records_appended", "Records this "
                                       "process committed to the trail.")
        spooled = CounterMetricFamily("bastion_audit_records_spooled", "Records spooled "
                                      "to disk while the database failed.")
        lost = CounterMetricFamily("bastion_audit_records_lost", "Records neither written "
                                   "nor spooled (each request got 503).")
        for trail in self.trails[:1]:
            queued.add_metric([], trail.queued)
            appended.add_metric([], trail.appended)
            spooled.add_metric([], trail.spooled)
            lost.add_metric([], trail.lost)
        yield from (queued, appended, spooled, lost)


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request by the route it matched. Place it
    outermost, so refusals of the other layers are counted too."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        metrics.in_flight += 1
        status = 0
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_flight -= 1
            route = scope.get("route")
            template = getattr(route, "path_format", None) if route is not None else None
            metrics.observe(template or NO_ROUTE, scope["method"], status,
                            time.perf_counter() - start)


async def metrics_endpoint(metrics: Exporter, request: Request) -> Response:
    """``GET /metrics``: the Prometheus text exposition format (version 0.0.4)."""
    del request
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4,
                    headers={"Cache-Control": "no-store"})
