"""Metrics: one registry per app, bounded labels, the refusal API, the limiter's Redis state
against a real Redis (up) and a dead port (down), the IdP's counters through a real code
flow, the middleware's cost per request, and ``GET /metrics`` on a real ``bastion serve``:
401/403 without the right credentials, parsed with ``prometheus_client``'s parser and
moving as traffic flows."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bastion.app import build_app, close_app
from bastion.edge.metrics import MAX_VALUES, Metrics, MetricsMiddleware
from bastion.edge.ratelimit import RedisBackend
from tests.conftest import ISSUER, raised_rate_limits
from tests.edge.test_proxy import Upstream, client_token, config_toml
from tests.flows import PASSWORD, add_client, add_user, hidden_fields, tokens_for
from tests.live import LiveServer, free_port, start_live_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(data: Samples, name: str, **labels: str) -> float:
    return data.get((name, tuple(sorted(labels.items()))), 0.0)


# --- the object ------------------------------------------------------------------------------

def test_each_metrics_has_its_own_registry():
    one, two = Metrics(), Metrics()
    one.refused("waf", "sqli")
    one.refused("waf", "sqli")
    first, second = samples(one.exposition().decode()), samples(two.exposition().decode())
    key = "bastion_edge_refusals_total"
    assert value(first, key, layer="waf", reason="sqli") == 2
    assert value(second, key, layer="waf", reason="sqli") == 0


def test_an_unknown_layer_is_an_error():
    with pytest.raises(ValueError, match="unknown refusal layer 'firewall'"):
        Metrics().refused("firewall", "x")


def test_free_form_labels_are_bounded():
    m = Metrics()
    for i in range(3 * MAX_VALUES):
        m.refused("waf", f"rule-{i}")
    m.refused("waf", 'bad"label\nwith newline')
    m.refused("waf", "x" * 65)
    data = samples(m.exposition().decode())
    reasons = {dict(labels)["reason"] for (name, labels) in data
               if name == "bastion_edge_refusals_total"}
    assert len(reasons) == MAX_VALUES + 1
    assert value(data, "bastion_edge_refusals_total", layer="waf", reason="other") == \
        2 * MAX_VALUES + 2


def test_route_labels_come_from_templates_not_raw_paths():
    m = Metrics()
    m.observe("/orders/{order_id}", "GET", 200, 0.01)
    m.observe("/orders/{order_id}", "BREW", 404, 0.01)
    m.observe("<none>", "GET", 0, 0.01)  # no response started: the server answers 500
    for i in range(1000):  # made-up methods share one label and one cached child
        m.observe("<none>", f"M{i}", 404, 0.01)
    assert len(m._children) == 4
    data = samples(m.exposition().decode())
    name = "bastion_http_request_duration_seconds_count"
    assert value(data, name, route="/orders/{order_id}", method="GET", status="2xx") == 1
    assert value(data, name, route="/orders/{order_id}", method="OTHER", status="4xx") == 1
    assert value(data, name, route="<none>", method="GET", status="5xx") == 1


@pytest.mark.anyio
async def test_limiter_state_with_a_real_redis_and_a_dead_one():
    m = Metrics()
    up = Redis.from_url("redis://127.0.0.1:6379/0")
    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    prefix = f"test:metrics:{secrets.token_hex(6)}:"
    try:
        good = RedisBackend(up, prefix=prefix)
        bad = RedisBackend(down, prefix=prefix, fail_mode="fail_open")
        m.watch_limiter("good", good)
        m.watch_limiter("bad", bad)
        assert (await good.take("k", 1_000_000, 5)).allowed
        assert (await bad.take("k", 1_000_000, 5)).allowed  # from memory, fail_open
        data = samples(m.exposition().decode())
    finally:
        keys = [k async for k in up.scan_iter(prefix + "*")]
        if keys:
            await up.delete(*keys)
        await up.aclose()
        await down.aclose()
    assert value(data, "bastion_ratelimit_redis_up", limiter="good", fail_mode="fail_open") == 1
    assert value(data, "bastion_ratelimit_redis_up", limiter="bad", fail_mode="fail_open") == 0
    assert value(data, "bastion_ratelimit_redis_failures_total", limiter="bad") == 1
    assert value(data, "bastion_ratelimit_fallback_decisions_total", limiter="bad") == 1
    assert value(data, "bastion_ratelimit_memory_keys", limiter="bad") == 1


# --- the IdP's counters, in process ----------------------------------------------------------

@pytest.mark.anyio
async def test_token_login_and_audit_counters_move(provider):
    app = build_app(provider)
    metrics: Metrics = app.state.metrics
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            await add_user(provider)
            client = await add_client(provider)
            await failed_login(http, client.client_id, client.redirect_uri)
            await tokens_for(http, client)  # a password login and a code exchange
            r = await http.post("/token", data={"grant_type": "client_credentials",
                                                "scope": "order:view"},
                                auth=(client.client_id, client.secret or ""))
            assert r.status_code == 200
            r = await http.post("/token", data={"grant_type": "password"},
                                auth=(client.client_id, client.secret or ""))
            assert r.status_code == 400
        await provider.audit.flush()
        data = samples(metrics.exposition().decode())
    finally:
        await close_app(app)
    assert value(data, "bastion_token_requests_total", grant="authorization_code",
                 outcome="issued") == 1
    assert value(data, "bastion_token_requests_total", grant="client_credentials",
                 outcome="issued") == 1
    assert value(data, "bastion_token_requests_total", grant="other",
                 outcome="unsupported_grant_type") == 1
    assert value(data, "bastion_logins_total", step="password", outcome="success") == 1
    assert value(data, "bastion_logins_total", step="password",
                 outcome="InvalidCredentials") == 1
    assert value(data, "bastion_audit_events_total", event="GrantConsent",
                 outcome="success") == 1
    assert value(data, "bastion_audit_records_appended_total") >= 5
    assert value(data, "bastion_audit_commit_seconds_count") >= 1
    assert value(data, "bastion_audit_queued_records") == 0
    # closing the app unhooks it from the trail: a later record is not counted
    await provider.audit.emit("Logout", user_identity={"type": "Anonymous"})
    later = samples(metrics.exposition().decode())
    assert value(later, "bastion_audit_events_total", event="Logout", outcome="success") == 0


async def failed_login(http: httpx.AsyncClient, client_id: str, redirect_uri: str) -> None:
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": "openid", "state": "s", "code_challenge": "x" * 43,
        "code_challenge_method": "S256"})
    assert r.status_code in (302, 303), r.text
    page = await http.get(r.headers["location"])
    fields = hidden_fields(page.text)
    fields.update(username="alice", password=PASSWORD + "-wrong")
    r = await http.post("/login", data=fields)
    assert r.status_code == 401


# --- the cost per request ----------------------------------------------------------------------

def test_middleware_cost_per_request():
    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    class Routed:
        path_format = "/orders/{order_id}"

    async def sent(message: Any) -> None:
        return None

    async def received() -> Any:
        return {"type": "http.request"}

    async def run(app: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await app({"type": "http", "method": "GET", "route": Routed}, received, sent)
        return time.perf_counter() - start

    wrapped = MetricsMiddleware(endpoint, metrics=Metrics())
    n = 20_000

    async def measure() -> tuple[float, float]:
        await run(wrapped, 1000)
        bare = min([await run(endpoint, n) for _ in range(3)])
        timed = min([await run(wrapped, n) for _ in range(3)])
        return bare, timed

    bare, timed = asyncio.run(measure())
    added_us = (timed - bare) / n * 1e6
    print(f"\nmetrics middleware: {added_us:.2f} µs added per request")
    assert added_us < 50  # generous: a shared 2-core machine; typically a few µs


# --- GET /metrics on a real server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("metrics")
    config = tmp / "bastion.toml"
    config.write_text(config_toml(upstream, free_port()))
    rules = json.dumps([asdict(r) for r in raised_rate_limits()])
    # one worker: these tests count exact moves of one process's series (a scrape shows
    # the other workers' samples as of their last second; tests/test_workers.py sums them)
    yield from start_live_server(tmp, "--workers", "1",
                                 env_over={"BASTION_CONFIG": str(config),
                                           "BASTION_RATE_LIMIT_RULES": rules})


@pytest.fixture(scope="module")
def admin_token(live: LiveServer) -> str:
    return client_token(live, "metrics-admin", "bastion:admin", "admin")


def scrape(http: httpx.Client, token: str) -> Samples:
    r = http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


def test_metrics_needs_a_token_with_the_admin_scope_that_iam_allows(live: LiveServer):
    reader = client_token(live, "metrics-reader", "order:view", "order:view")
    # the admin scope without a policy allowing bastion:GetMetrics
    scoped = client_token(live, "metrics-scoped", "bastion:admin", "order:view")
    with live.http() as http:
        missing = http.get("/metrics")
        wrong = http.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
        denied = http.get("/metrics", headers={"Authorization": f"Bearer {scoped}"})
    assert missing.status_code == 401
    assert "bastion_" not in missing.text
    assert wrong.status_code == 403
    assert "bastion:GetMetrics" in wrong.json()["error_description"]
    assert denied.status_code == 403
    assert "bastion_" not in denied.text


def test_a_least_privilege_scraper(live: LiveServer, tmp_path):
    """The setup docs/edge.md recommends: a client whose only policy allows
    bastion:GetMetrics, with the bastion:admin scope the route requires."""
    policy = tmp_path / "metrics-read.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "bastion:GetMetrics",
        "Resource": "arn:bastion:bastion::*:metrics"}]}))
    live.cli("iam", "policies", "create", "MetricsRead", str(policy))
    client = live.add_client("prometheus", [], "--grant-type", "client_credentials",
                             "--scope", "bastion:admin")
    live.cli("iam", "attach", "client", client["client_id"], "MetricsRead")
    with live.http() as http:
        r = http.post("/token", data={"grant_type": "client_credentials",
                                      "scope": "bastion:admin"},
                      auth=(client["client_id"], client["client_secret"]))
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert "bastion_http_request_duration_seconds" in {
            name.rsplit("_", 1)[0] if name.endswith(("_count", "_sum", "_bucket")) else name
            for name, _ in scrape(http, token)}
        admin = http.get("/admin/iam/policies", headers={"Authorization": f"Bearer {token}"})
    assert admin.status_code == 403  # nothing else


def test_metrics_move_as_traffic_flows(live: LiveServer, admin_token: str):
    reader = client_token(live, "metrics-reader2", "order:view", "order:view")
    with live.http() as http:
        before = scrape(http, admin_token)
        for _ in range(5):
            assert http.get("/healthz").status_code == 200
        assert http.get("/orders").status_code == 401
        assert http.get("/api/inventory/echo/x",
                        headers={"Authorization": f"Bearer {reader}"}).status_code == 403
        assert http.get("/dead/x").status_code == 502
        codes = [http.get("/limited/echo").status_code for _ in range(5)]
        assert 429 in codes
        assert http.get("/pub/echo/a").status_code == 200
        client_token(live, "metrics-cc", "order:view", "order:view")
        after = scrape(http, admin_token)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    count = "bastion_http_request_duration_seconds_count"
    assert moved(count, route="/healthz", method="GET", status="2xx") == 5
    assert moved(count, route="proxy:public", method="GET", status="2xx") == 1  # by name
    assert moved(count, route="proxy:dead", method="GET", status="5xx") == 1
    assert moved(count, route="proxy:limited", method="GET", status="4xx") == codes.count(429)
    refusals = "bastion_edge_refusals_total"
    assert moved(refusals, layer="authn", reason="invalid_token") == 1  # RFC 6750 code
    assert moved(refusals, layer="iam", reason="implicitDeny") == 1
    assert moved(refusals, layer="proxy", reason="upstream_unavailable") == 1
    assert moved(refusals, layer="rate_limit", reason="limited-tight") == codes.count(429)
    assert moved("bastion_token_requests_total", grant="client_credentials",
                 outcome="issued") == 1
    assert moved("bastion_audit_records_appended_total") >= 3
    assert value(after, "bastion_http_requests_in_flight") == 1  # the scrape itself
    assert value(after, "bastion_ratelimit_memory_keys", limiter="routes") == 1  # one IP
    # the histogram's buckets are cumulative and end at +Inf = _count
    inf = value(after, "bastion_http_request_duration_seconds_bucket", route="/healthz",
                method="GET", status="2xx", le="+Inf")
    assert inf == value(after, count, route="/healthz", method="GET", status="2xx")
