"""Rate limits at the edge: GCRA and sliding-window exactness, the memory and Redis backends (shared limits,
Redis down and back), the draft RateLimit header fields, 429 bodies, aggregated audit
records, passthrough of other scopes, refused configurations, and a real socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion.config import Settings
from bastion.edge.ratelimit import (
    SLIDING_LUA,
    US,
    MemoryBackend,
    RateLimit,
    RedisBackend,
    Rule,
    Verdict,
    basic_client_id,
    gcra,
    sliding,
    window_verdict,
)
from bastion.edge.request import RequestContext

pytestmark = pytest.mark.anyio
REDIS = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sink:
    """An audit sink that keeps the records and wakes waiters."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.event = asyncio.Event()

    async def emit(self, event_name: str, **fields: Any) -> None:
        self.records.append({"eventName": event_name, **fields})
        self.event.set()


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def make_app(rules: list[Rule], backend: Any, audit: Any = None, *,
             context: bool = True, **kw: Any) -> Starlette:
    middleware = [Middleware(RequestContext)] if context else []
    middleware.append(Middleware(RateLimit, rules=rules, backend=backend, audit=audit, **kw))
    routes = [Route(p, ok, methods=["GET", "POST"])
              for p in ("/token", "/login", "/login/mfa", "/loginx", "/orders", "/free")]
    return Starlette(routes=routes, middleware=middleware)


def client(app: Any, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 50000)),
                             base_url="http://test")


LOGIN = Rule("login", ("/login",), rate=60, period=60, burst=5, body="oauth")
ORDERS = Rule("orders", ("/orders",), rate=2, period=1, burst=2)


# --- GCRA -------------------------------------------------------------------------------

async def test_gcra_burst_then_steady_rate_exactly() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    interval = LOGIN.interval_us  # 1 s
    seen = [await backend.take("k", interval, 5) for _ in range(6)]
    assert [v.allowed for v in seen] == [True] * 5 + [False]
    assert [v.remaining for v in seen[:5]] == [4, 3, 2, 1, 0]
    assert seen[4].reset == 5.0  # full again in five intervals
    assert seen[5].retry_after == 1.0
    clock.now += 0.999_999
    assert not (await backend.take("k", interval, 5)).allowed
    clock.now += 0.000_001  # exactly one interval later: one more
    assert (await backend.take("k", interval, 5)).allowed
    assert not (await backend.take("k", interval, 5)).allowed
    clock.now += 3  # steady state: one per interval
    assert [(await backend.take("k", interval, 5)).allowed for _ in range(4)] == \
        [True, True, True, False]
    clock.now += 100  # long idle: the burst again, never more
    assert [(await backend.take("k", interval, 5)).allowed for _ in range(6)] == \
        [True] * 5 + [False]
    assert (await backend.take("other", interval, 5)).remaining == 4  # keys are separate


def test_gcra_step_is_integer_exact() -> None:
    # 600/min: T = 0.1 s is 100 000 µs, no float drift after many steps
    tat = None
    for _ in range(120):
        allowed, tat = gcra(tat, 0, 100_000, 120)
        assert allowed
    assert gcra(tat, 0, 100_000, 120)[0] is False
    assert gcra(tat, 100_000, 100_000, 120)[0] is True


async def test_memory_backend_is_bounded_and_forgets_full_buckets() -> None:
    clock = Clock()
    backend = MemoryBackend(max_keys=3, clock=clock)
    for i in range(10):
        await backend.take(f"k{i}", 1_000_000, 5)
    assert len(backend) == 3
    clock.now += 2  # every bucket is full again: nothing worth keeping
    await backend.take("new", 1_000_000, 5)
    assert len(backend) == 1


# --- the middleware ---------------------------------------------------------------------

async def test_headers_on_admitted_and_refused_responses() -> None:
    clock = Clock()
    app = make_app([LOGIN], MemoryBackend(clock=clock))
    async with client(app) as c:
        r = await c.post("/login")
        assert r.status_code == 200
        assert r.headers["ratelimit-policy"] == '"login";q=60;w=60;bastion-burst=5'
        assert r.headers["ratelimit"] == '"login";r=4;t=1'
        assert "retry-after" not in r.headers
        for _ in range(4):
            r = await c.post("/login")
        assert r.headers["ratelimit"] == '"login";r=0;t=5'
        r = await c.post("/login")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.headers["ratelimit"] == '"login";r=0;t=1'  # the Retry-After instant
        assert r.headers["ratelimit-policy"] == '"login";q=60;w=60;bastion-burst=5'
        assert r.headers["cache-control"] == "no-store"
        unlimited = await c.get("/free")
        assert "ratelimit" not in unlimited.headers


@pytest.mark.parametrize("path,limited", [
    ("/login", True), ("/login/mfa", True), ("/loginx", False), ("/free", False)],
    ids=["prefix-itself", "below-prefix", "not-a-segment", "unlisted"])
async def test_rules_match_path_segments(path: str, limited: bool) -> None:
    app = make_app([LOGIN], MemoryBackend(clock=Clock()))
    async with client(app) as c:
        r = await c.post(path)
    assert ("ratelimit" in r.headers) is limited


async def test_methods_restrict_a_rule() -> None:
    rule = Rule("posts", ("/login",), rate=1, period=60, burst=1, methods=("POST",))
    app = make_app([rule], MemoryBackend(clock=Clock()))
    async with client(app) as c:
        assert [(await c.get("/login")).status_code for _ in range(3)] == [200] * 3
        assert [(await c.post("/login")).status_code for _ in range(2)] == [200, 429]


async def test_oauth_body_of_a_refusal_carries_the_request_id() -> None:
    app = make_app([Rule("login", ("/login",), rate=1, period=60, burst=1, body="oauth")],
                   MemoryBackend(clock=Clock()))
    async with client(app) as c:
        await c.post("/login")
        r = await c.post("/login")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body == {"error": "rate_limited",
                    "error_description": "too many requests; retry after 60s",
                    "request_id": r.headers["x-request-id"]}
    assert r.headers["retry-after"] == "60"


async def test_problem_body_of_a_refusal_is_rfc9457() -> None:
    app = make_app([ORDERS], MemoryBackend(clock=Clock()))
    async with client(app) as c:
        await c.get("/orders")
        await c.get("/orders")
        r = await c.get("/orders")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "about:blank", "title": "Too Many Requests", "status": 429,
                        "detail": "too many requests; retry after 1s",
                        "instance": f"urn:bastion:request:{r.headers['x-request-id']}"}


async def test_limits_are_per_client_ip() -> None:
    backend = MemoryBackend(clock=Clock())
    app = make_app([ORDERS], backend)
    async with client(app, "192.0.2.1") as a, client(app, "192.0.2.2") as b:
        assert [(await a.get("/orders")).status_code for _ in range(3)] == [200, 200, 429]
        assert (await b.get("/orders")).status_code == 200
        # a forwarding header changes nothing: trusted proxies are not configured
        r = await a.get("/orders", headers={"x-forwarded-for": "198.51.100.7"})
        assert r.status_code == 429


def basic(user: str, password: str = "secret") -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_client_rule_counts_basic_client_ids_in_addition_to_the_ip() -> None:
    per_ip = Rule("token", ("/token",), rate=5, period=60, burst=5, body="oauth")
    per_client = Rule("token-client", ("/token",), rate=2, period=60, burst=2,
                      key="client", body="oauth")
    app = make_app([per_ip, per_client], MemoryBackend(clock=Clock()))
    async with client(app) as c:
        codes = [(await c.post("/token", headers=basic("app1"))).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = await c.post("/token", headers=basic("app2"))
        assert r.status_code == 200
        assert r.headers["ratelimit"] == '"token";r=1;t=48, "token-client";r=1;t=30'
        r = await c.post("/token")  # no Basic credentials: only the IP rule counts
        assert r.status_code == 200
        assert r.headers["ratelimit-policy"] == '"token";q=5;w=60;bastion-burst=5'
        assert (await c.post("/token", headers=basic("app3"))).status_code == 429  # IP spent


@pytest.mark.parametrize("header,expected", [
    ("Basic " + base64.b64encode(b"my%20app:pw").decode(), "my app"),
    ("basic " + base64.b64encode(b"app:").decode(), "app"),
    ("Basic !!!", None),
    ("Basic " + base64.b64encode(b":pw").decode(), None),
    ("Basic " + base64.b64encode(b"\xff\xfe:pw").decode(), None),
    ("Bearer abc", None),
    ("Basic " + base64.b64encode(b"a" * 300 + b":pw").decode(), None),
], ids=["form-encoded", "case-insensitive-scheme", "not-base64", "empty-user", "not-utf8",
        "bearer", "too-long"])
def test_basic_client_id(header: str, expected: str | None) -> None:
    from starlette.datastructures import Headers

    assert basic_client_id(Headers({"authorization": header})) == expected


async def test_other_scopes_pass_through_untouched() -> None:
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    class Refuse:
        async def take(self, *a: Any) -> Any:
            raise AssertionError("the backend must not be asked")

    mw = RateLimit(inner, rules=[Rule("all", ("/",), rate=1, period=1, burst=1)],
                   backend=Refuse())
    for scope in ({"type": "websocket", "path": "/", "headers": []},
                  {"type": "lifespan"}):
        await mw(scope, None, None)  # type: ignore[arg-type]
    assert [s["type"] for s in seen] == ["websocket", "lifespan"]


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "bad name"}, "rate limit name"),
    ({"name": ""}, "rate limit name"),
    ({"paths": ()}, "paths must be absolute"),
    ({"paths": ("token",)}, "paths must be absolute"),
    ({"methods": ("post",)}, "methods are upper-case"),
    ({"rate": 0}, ">= 1"),
    ({"period": 0}, ">= 1"),
    ({"burst": 0}, ">= 1"),
    ({"key": "header"}, "key is ip|client"),
    ({"body": "html"}, "key is ip|client, body oauth|problem"),
    ({"rate": 10_000_000, "period": 1}, "rate too high"),
], ids=["name-space", "name-empty", "no-paths", "relative-path", "lower-method", "rate-0",
        "period-0", "burst-0", "unknown-key", "unknown-body", "sub-microsecond"])
def test_bad_rules_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "r", "paths": ("/token",), "rate": 1, "period": 1,
                            "burst": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        Rule(**args)


def test_bad_middleware_options_are_refused_at_construction() -> None:
    backend = MemoryBackend()
    with pytest.raises(ValueError, match="unique"):
        RateLimit(ok, rules=[ORDERS, ORDERS], backend=backend)
    with pytest.raises(TypeError, match="Rule"):
        RateLimit(ok, rules=[{"name": "x"}], backend=backend)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="backend"):
        RateLimit(ok, rules=[ORDERS], backend=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audit_window"):
        RateLimit(ok, rules=[ORDERS], backend=backend, audit=Sink(), audit_window=0)
    with pytest.raises(ValueError, match="max_keys"):
        MemoryBackend(max_keys=0)
    with pytest.raises(ValueError, match="fail_mode"):
        RedisBackend(Redis.from_url(REDIS), fail_mode="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Settings(rate_limit_rules=[{"name": "x", "paths": ["/t"], "rate": 1, "period": 1,
                                    "burst": 1, "surprise": True}])
    with pytest.raises(ValueError):
        Settings(rate_limit_fail_mode="sometimes")


def test_default_settings_protect_the_identity_provider() -> None:
    s = Settings()
    assert s.rate_limits and s.rate_limit_fail_mode == "fail_open"
    paths = {p for r in s.rate_limit_rules for p in r.paths}
    assert {"/token", "/login", "/authorize", "/sts", "/introspect", "/revoke"} <= paths
    assert all(r.key == "ip" for r in s.rate_limit_rules)


# --- audit ------------------------------------------------------------------------------

async def test_refusals_are_audited_aggregated_per_key_and_rule() -> None:
    sink = Sink()
    app = make_app([ORDERS], MemoryBackend(clock=Clock()), sink, audit_window=60)
    mw = None
    async with client(app, "192.0.2.9") as c, client(app, "192.0.2.10") as d:
        codes = [(await c.get("/orders")).status_code for _ in range(22)]
        assert codes == [200, 200] + [429] * 20
        assert [(await d.get("/orders")).status_code for _ in range(3)] == [200, 200, 429]
        mw = _find(app)
    assert len(sink.records) == 2  # one per key, written with its first refusal
    first = sink.records[0]
    assert first["eventName"] == "RateLimitExceeded"
    assert first["error_code"] == "Throttled"
    assert first["source_ip"] == "192.0.2.9"
    assert first["request_parameters"] == {"method": "GET", "path": "/orders",
                                           "rule": "orders", "key": "ip"}
    assert first["additional"] == {"refusals": 1, "aggregated": False, "windowSeconds": 60}
    assert "request_id" not in first  # the trail takes it from the request context
    assert mw is not None and mw.refusals is not None
    await mw.refusals.flush()
    assert len(sink.records) == 3  # the 19 others of 192.0.2.9, in one record
    summary = sink.records[2]
    assert summary["additional"] == {"refusals": 19, "aggregated": True, "windowSeconds": 60}
    assert summary["source_ip"] == "192.0.2.9" and summary["request_id"] is None


async def test_aggregated_record_is_written_when_the_window_ends() -> None:
    sink = Sink()
    app = make_app([ORDERS], MemoryBackend(clock=Clock()), sink, audit_window=0.05)
    async with client(app) as c:
        for _ in range(5):
            await c.get("/orders")
        assert len(sink.records) == 1
        sink.event.clear()
        await asyncio.wait_for(sink.event.wait(), 5)
    assert [r["additional"]["refusals"] for r in sink.records] == [1, 2]


async def test_client_rule_refusal_records_the_client_id_never_the_secret() -> None:
    sink = Sink()
    rule = Rule("tc", ("/token",), rate=1, period=60, burst=1, key="client", body="oauth")
    app = make_app([rule], MemoryBackend(clock=Clock()), sink)
    async with client(app) as c:
        await c.post("/token", headers=basic("app1", "hunter2"))
        assert (await c.post("/token", headers=basic("app1", "hunter2"))).status_code == 429
    assert sink.records[0]["request_parameters"]["clientId"] == "app1"
    assert "hunter2" not in json.dumps(sink.records)


def _find(app: Starlette) -> RateLimit | None:  # the built middleware instance
    node: Any = app.middleware_stack
    while node is not None:
        if isinstance(node, RateLimit):
            return node
        node = getattr(node, "app", None)
    return None


# --- Redis ------------------------------------------------------------------------------

@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"bastion-test:rl:{secrets.token_hex(4)}:"
    yield prefix
    r = Redis.from_url(REDIS)
    keys = [k async for k in r.scan_iter(match=prefix + "*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


async def test_two_instances_sharing_redis_enforce_one_limit(redis_prefix: str) -> None:
    r1, r2 = Redis.from_url(REDIS), Redis.from_url(REDIS)
    rule = Rule("orders", ("/orders",), rate=3, period=60, burst=3)
    a = make_app([rule], RedisBackend(r1, prefix=redis_prefix))
    b = make_app([rule], RedisBackend(r2, prefix=redis_prefix))
    try:
        async with client(a) as ca, client(b) as cb:
            codes = []
            for i in range(6):
                codes.append((await (ca if i % 2 else cb).get("/orders")).status_code)
            assert codes == [200, 200, 200, 429, 429, 429]
            r = await ca.get("/orders")
            assert r.headers["ratelimit"] == '"orders";r=0;t=20'
            assert r.headers["retry-after"] == "20"
    finally:
        await r1.aclose()
        await r2.aclose()


async def test_redis_and_memory_backends_agree(redis_prefix: str) -> None:
    r = Redis.from_url(REDIS)
    try:
        redis_backend = RedisBackend(r, prefix=redis_prefix)
        memory = MemoryBackend()
        for _ in range(7):
            got = await redis_backend.take("k", 60_000_000, 5)
            want = await memory.take("k", 60_000_000, 5)
            assert (got.allowed, got.remaining) == (want.allowed, want.remaining)
            assert abs(got.reset - want.reset) < 1 and abs(got.retry_after - want.retry_after) < 1
        assert 0 < await r.pttl(redis_prefix + "k") <= 300_001  # gone once the bucket is full
    finally:
        await r.aclose()


class Proxy:
    """A TCP forwarder to the real Redis that can be stopped and started on one port, so
    that Redis 'goes down' without touching the machine's Redis."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.close()
        await self.server.wait_closed()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for t in (asyncio.ensure_future(pipe(reader, up_writer)),
                  asyncio.ensure_future(pipe(up_reader, writer))):
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)


async def test_redis_down_falls_back_to_the_local_limiter_then_recovers(
        redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    proxy = Proxy()
    await proxy.start()
    clock = Clock()
    r = Redis(host="127.0.0.1", port=proxy.port, socket_connect_timeout=0.2)
    backend = RedisBackend(r, prefix=redis_prefix, retry_interval=5, clock=clock)
    rule = Rule("orders", ("/orders",), rate=60, period=60, burst=2)
    app = make_app([rule], backend)
    caplog.set_level(logging.WARNING, "bastion.edge.ratelimit")
    try:
        async with client(app) as c:
            assert (await c.get("/orders")).status_code == 200  # Redis: 1 of 2 used
            await proxy.stop()
            codes = [(await c.get("/orders")).status_code for _ in range(4)]
            assert codes == [200, 200, 429, 429]  # the local limiter, with its own bucket
            assert backend.degraded and backend.failures == 1
            assert backend.fallback_decisions == 4
            down = [m for m in caplog.messages if "Redis failed" in m]
            assert len(down) == 1 and "limiting per instance" in down[0]
            await proxy.start()
            clock.now += 1  # before the retry interval: still local (no new failure)
            assert (await c.get("/orders")).status_code == 200
            assert backend.failures == 1 and backend.fallback_decisions == 5
            clock.now += 5  # retry: Redis again, and its bucket (1 of 2 used before)
            assert (await c.get("/orders")).status_code == 200
            assert not backend.degraded
            assert (await c.get("/orders")).status_code == 429
            assert any("Redis is back" in m for m in caplog.messages)
    finally:
        await r.aclose()
        with contextlib.suppress(Exception):
            await proxy.stop()


async def test_redis_down_fail_closed_answers_503(redis_prefix: str) -> None:
    closed = Proxy()  # never started: its port is closed
    r = Redis(host="127.0.0.1", port=closed.port, socket_connect_timeout=0.2)
    backend = RedisBackend(r, prefix=redis_prefix, fail_mode="fail_closed", retry_interval=7)
    app = make_app([LOGIN, ORDERS], backend)
    try:
        async with client(app) as c:
            r1 = await c.post("/login")
            r2 = await c.get("/orders")
            free = await c.get("/free")
    finally:
        await r.aclose()
    assert r1.status_code == 503 and r1.headers["retry-after"] == "7"
    assert r1.json() == {"error": "temporarily_unavailable",
                         "error_description": "the rate limiter is unavailable",
                         "request_id": r1.headers["x-request-id"]}
    assert r2.status_code == 503
    assert r2.headers["content-type"] == "application/problem+json"
    assert free.status_code == 200  # unlimited routes are not affected
    assert backend.failures == 1


# --- over a real socket -----------------------------------------------------------------

async def test_over_a_real_socket_with_uvicorn() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app([LOGIN], MemoryBackend())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            codes = [(await c.post("/login")).status_code for _ in range(6)]
            r = await c.post("/login")
    finally:
        server.should_exit = True
        await task
    assert codes == [200] * 5 + [429]
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.headers["ratelimit-policy"] == '"login";q=60;w=60;bastion-burst=5'
    assert r.json()["request_id"] == r.headers["x-request-id"]


# --- in Bastion -------------------------------------------------------------------------

async def test_bastion_limits_login_by_default_and_audits(provider: Any, http: Any) -> None:
    codes = [(await http.post("/login", data={})).status_code for _ in range(11)]
    assert codes[-1] == 429 and 429 not in codes[:10]
    r = await http.post("/login", data={})
    assert r.json()["error"] == "rate_limited"
    assert r.headers["ratelimit-policy"] == '"login";q=30;w=60;bastion-burst=10'
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'RateLimitExceeded' ORDER BY seq")
    records = [json.loads(bytes(row[0])) for row in rows]
    assert len(records) == 1  # the second refusal is counted, not yet written
    assert records[0]["errorCode"] == "Throttled"
    assert records[0]["sourceIPAddress"] == "127.0.0.1"
    assert records[0]["eventType"] == "ServiceEvent"
    token = await http.post("/token", data={"grant_type": "client_credentials"})
    assert token.headers["ratelimit-policy"].startswith('"token";q=600;w=60')


async def test_pending_refusal_counts_are_flushed_from_a_built_stack() -> None:
    from bastion.edge.ratelimit import flush_refusals

    sink = Sink()
    app = make_app([ORDERS], MemoryBackend(clock=Clock()), sink, audit_window=60)
    async with client(app) as c:
        for _ in range(5):
            await c.get("/orders")
    await flush_refusals(app)
    assert [r["additional"]["refusals"] for r in sink.records] == [1, 2]
    await flush_refusals(object())  # nothing to flush: no error


# --- sliding window ---------------------------------------------------------------------

SW = Rule("sw", ("/orders",), rate=10, period=10, algorithm="sliding_window")


async def test_sliding_window_counts_at_window_boundaries_exactly() -> None:
    clock = Clock(1000.0)  # a fixed window starts here (1000 s is a multiple of 10 s)
    backend = MemoryBackend(clock=clock)
    w = SW.window_us

    async def take(n: int) -> list[Verdict]:
        return [await backend.window("k", w, 10) for _ in range(n)]

    seen = await take(11)
    assert [v.allowed for v in seen] == [True] * 10 + [False]
    assert [v.remaining for v in seen[:10]] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert seen[9].reset == 20.0  # these ten leave the sliding window at 1020
    # refused: 10 in this window; in the next one 10 * (W - e) / W + 1 <= 10 at e = 1 s
    assert seen[10].retry_after == 11.0
    clock.now = 1009.999_999
    assert not (await take(1))[0].allowed
    clock.now = 1010.0  # the boundary: the previous window still weighs fully
    refused = (await take(1))[0]
    assert not refused.allowed and refused.retry_after == 1.0
    clock.now = 1010.999_999
    assert not (await take(1))[0].allowed
    clock.now = 1011.0  # 10 * 0.9 + 1 <= 10: exactly one
    assert [v.allowed for v in await take(2)] == [True, False]
    clock.now = 1015.0  # half the previous window left: 5 + cur + 1 <= 10, cur 1 -> 5
    got = await take(5)
    assert [v.allowed for v in got] == [True] * 4 + [False]
    assert [v.remaining for v in got[:4]] == [3, 2, 1, 0]
    clock.now = 1020.0  # the previous window (5 admitted) weighs fully, none this one
    assert [v.allowed for v in await take(6)] == [True] * 5 + [False]
    clock.now = 1040.0  # two windows idle: nothing weighs, the full quota
    assert [v.allowed for v in await take(11)] == [True] * 10 + [False]
    assert (await backend.window("other", w, 10)).remaining == 9  # keys are separate


def test_sliding_step_is_integer_exact_and_never_admits_more_than_twice_the_rate() -> None:
    w, limit = 1_000_000, 7
    state = None
    admitted: list[int] = []
    for now in range(0, 5 * w, 997):  # every ~1 ms for five windows
        ok, new = sliding(state, now, w, limit)
        if ok:
            state = new
            admitted.append(now)
    # at most limit per fixed window, so at most 2 * limit in any sliding one; and the
    # weighted count keeps each sliding window close to the limit when load is uniform
    for i, t in enumerate(admitted):
        inside = sum(1 for u in admitted[i:] if u < t + w)
        assert inside <= 2 * limit
    assert 5 * limit - limit <= len(admitted) <= 5 * limit + 1


async def test_sliding_window_memory_backend_is_bounded_and_forgets_idle_keys() -> None:
    clock = Clock()
    backend = MemoryBackend(max_keys=3, clock=clock)
    for i in range(10):
        await backend.window(f"k{i}", 1_000_000, 5)
    assert len(backend) == 3
    clock.now += 1  # the counts still weigh in the next window: kept
    await backend.window("k9", 1_000_000, 5)
    assert len(backend) == 3
    clock.now += 2  # they have left every sliding window: nothing worth keeping
    await backend.window("new", 1_000_000, 5)
    assert len(backend) == 1


async def test_sliding_window_headers_say_the_window_and_no_burst() -> None:
    rule = Rule("sw", ("/orders",), rate=3, period=10, algorithm="sliding_window")
    app = make_app([rule, LOGIN], MemoryBackend(clock=Clock(1000.0)))
    async with client(app) as c:
        r = await c.get("/orders")
        assert r.status_code == 200
        assert r.headers["ratelimit-policy"] == '"sw";q=3;w=10'
        assert r.headers["ratelimit"] == '"sw";r=2;t=20'
        assert "retry-after" not in r.headers
        await c.get("/orders")
        await c.get("/orders")
        r = await c.get("/orders")
        assert r.status_code == 429
        # the next window at e = W - floor(2W / 3): 10 s + 3.333334 s
        assert r.headers["retry-after"] == "14"
        assert r.headers["ratelimit"] == '"sw";r=0;t=14'
        assert r.headers["ratelimit-policy"] == '"sw";q=3;w=10'
        assert r.headers["content-type"] == "application/problem+json"
        assert (await c.post("/login")).headers["ratelimit-policy"] == \
            '"login";q=60;w=60;bastion-burst=5'


async def test_gcra_and_sliding_window_rules_count_separately_on_one_path() -> None:
    both = [Rule("gcra", ("/orders",), rate=60, period=60, burst=2),
            Rule("sw", ("/orders",), rate=3, period=60, algorithm="sliding_window")]
    app = make_app(both, MemoryBackend(clock=Clock()))
    async with client(app) as c:
        codes = [(await c.get("/orders")).status_code for _ in range(3)]
        r = await c.get("/orders")
    assert codes == [200, 200, 429]  # GCRA's burst of 2 refuses first
    # each rule decides on its own: the sliding window admitted (and counted) the third,
    # so it refuses the fourth; 40 s into the fixed window [960, 1020), 3 of 3 admitted:
    # the next window at e = W - floor(2W / 3) = 20 s, i.e. 40 s from now
    assert r.headers["ratelimit"] == '"gcra";r=0;t=1, "sw";r=0;t=40'
    assert r.headers["retry-after"] == "40"  # the longest wait of the refusing rules


@pytest.mark.parametrize("kwargs,message", [
    ({"burst": 5}, "burst does not apply to a sliding_window"),
    ({"rate": 0}, "rate and period must be >= 1"),
    ({"period": 0}, "rate and period must be >= 1"),
    ({"rate": 100_000, "period": 100_000}, "too large for a sliding_window"),
    ({"algorithm": "leaky"}, "algorithm is gcra|sliding_window"),
], ids=["burst", "rate-0", "period-0", "beyond-2^53", "unknown"])
def test_bad_sliding_window_rules_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "r", "paths": ("/t",), "rate": 10, "period": 60,
                            "algorithm": "sliding_window", **kwargs}
    with pytest.raises(ValueError, match=message):
        Rule(**args)


def test_sliding_window_rules_in_settings() -> None:
    s = Settings(rate_limit_rules=[{"name": "t", "paths": ["/token"], "rate": 100,
                                    "period": 60, "algorithm": "sliding_window"}])
    (rule,) = s.rate_limit_rules
    assert rule.algorithm == "sliding_window" and rule.burst == 0
    assert str(rule) == "t: /token 100/60s sliding window per ip"
    assert Rule("t", ("/t",), 5, 60, burst=5, algorithm="sliding_window").burst == 5
    assert all(r.algorithm == "gcra" for r in Settings().rate_limit_rules)  # the default
    for bad in ({"algorithm": "leaky"}, {"algorithm": "sliding_window", "burst": 7},
                {"algorithm": None}):
        with pytest.raises(ValueError):
            Settings(rate_limit_rules=[{"name": "t", "paths": ["/t"], "rate": 10,
                                        "period": 60, **bad}])
    with pytest.raises(ValueError, match="burst must be >= 1"):  # GCRA still needs it
        Settings(rate_limit_rules=[{"name": "t", "paths": ["/t"], "rate": 10, "period": 60}])


def test_a_backend_without_windows_is_refused_for_sliding_window_rules() -> None:
    class GcraOnly:
        async def take(self, key: str, interval_us: int, burst: int) -> Verdict:
            raise AssertionError

    RateLimit(ok, rules=[ORDERS], backend=GcraOnly())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="window"):
        RateLimit(ok, rules=[ORDERS, SW], backend=GcraOnly())  # type: ignore[arg-type]


HOSTILE_KEYS = ["sw:" + k for k in (
    "", " ", "\n\r\x00", "{hash}tag", "*", "a" * 10_000, "\u202e\u0000é漢字",
    "'); redis.call('FLUSHALL') --", "KEYS[1]", "s", "%d%s%n")]


async def test_hostile_keys_are_opaque_and_separate(redis_prefix: str) -> None:
    r = Redis.from_url(REDIS)
    try:
        for backend in (MemoryBackend(), RedisBackend(r, prefix=redis_prefix)):
            for key in HOSTILE_KEYS:
                got = [await backend.window(key, 60 * US, 2) for _ in range(3)]
                assert [v.allowed for v in got] == [True, True, False], key
        assert await r.dbsize() > 0  # nothing was flushed
        stored = {k async for k in r.scan_iter(match=redis_prefix + "*")}
        assert len(stored) == len(set(HOSTILE_KEYS))
        assert {await r.type(k) for k in stored} == {b"hash"}
    finally:
        await r.aclose()


async def test_sliding_window_in_redis_is_shared_and_expires(redis_prefix: str) -> None:
    r1, r2 = Redis.from_url(REDIS), Redis.from_url(REDIS)
    rule = Rule("sw", ("/orders",), rate=3, period=60, algorithm="sliding_window")
    a = make_app([rule], RedisBackend(r1, prefix=redis_prefix))
    b = make_app([rule], RedisBackend(r2, prefix=redis_prefix))
    try:
        async with client(a) as ca, client(b) as cb:
            codes = [(await (ca if i % 2 else cb).get("/orders")).status_code
                     for i in range(5)]
            assert codes == [200, 200, 200, 429, 429]
            refused = await ca.get("/orders")
        assert 1 <= int(refused.headers["retry-after"]) <= 121
        assert refused.headers["ratelimit-policy"] == '"sw";q=3;w=60'
        (key,) = [k async for k in r1.scan_iter(match=redis_prefix + "*")]
        assert key.decode().startswith(redis_prefix + "sw/sw/3/60:")
        assert 0 < await r1.pttl(key) <= 120_001  # gone once it no longer weighs
        fields = await r1.hgetall(key)
        assert fields[b"c"] == b"3" and fields[b"p"] == b"0"
        assert int(fields[b"s"]) % (60 * US) == 0
    finally:
        await r1.aclose()
        await r2.aclose()


async def test_redis_and_memory_make_the_same_sliding_window_decisions(
        redis_prefix: str) -> None:
    """The same sequence at the same instants: the Lua step decides at Redis's TIME and
    says how far into its window that was; the memory backend is asked at that very
    instant and must answer the very same verdict."""
    r = Redis.from_url(REDIS)
    w, limit = 400_000, 4  # 0.4 s windows: the sequence crosses several
    script = r.register_script(SLIDING_LUA)
    clock = Clock()
    memory = MemoryBackend(clock=clock)
    t0, _ = await r.time()
    base = (t0 * US // w - 10) * w  # a window boundary: keeps the clock's floats small
    pauses = [0, 0, 0, 0, 0, 0.15, 0, 0.3, 0, 0, 0.1, 0.25, 0, 0, 0, 0.45, 0, 0, 0, 0, 0.9, 0]
    outcomes = []
    try:
        for pause in pauses:
            await asyncio.sleep(pause)
            sec, usec = await r.time()
            allowed, elapsed, cur, prev = await script(keys=[redis_prefix + "k"],
                                                        args=[w, limit])
            sec2, usec2 = await r.time()
            got = window_verdict(bool(allowed), int(elapsed), int(cur), int(prev), w, limit)
            before, after = sec * US + usec, sec2 * US + usec2
            # the instant the script ran: between the two, and `elapsed` into its window
            instants = [start + int(elapsed) for start in
                        range(before - before % w, after + 1, w)
                        if before <= start + int(elapsed) <= after]
            if len(instants) != 1:
                pytest.skip("Redis answered slower than a window: the instant is ambiguous")
            clock.now = (instants[0] - base) / US
            want = await memory.window("k", w, limit)
            assert got == want, (pause, got, want)
            outcomes.append(got.allowed)
    finally:
        await r.aclose()
    assert True in outcomes and False in outcomes  # both decisions were compared


async def test_sliding_window_over_real_time_in_redis_holds_the_limit(
        redis_prefix: str) -> None:
    """Hammered for ~2.2 s at 10 per 0.5 s: at most rate in each fixed window, so at most
    2 * rate in any sliding one, and about rate per window overall (generous bounds)."""
    r = Redis.from_url(REDIS)
    backend = RedisBackend(r, prefix=redis_prefix)
    loop = asyncio.get_running_loop()
    admitted: list[float] = []
    attempts = 0
    started = loop.time()
    try:
        while loop.time() - started < 2.2:
            attempts += 1
            if (await backend.window("k", 500_000, 10)).allowed:
                admitted.append(loop.time())
            await asyncio.sleep(0.002)
    finally:
        await r.aclose()
    spent = loop.time() - started
    windows = spent / 0.5
    assert len(admitted) <= 10 * (windows + 1)  # at most 10 per fixed window it touched
    # at least most of what was offered, up to the limit (a slow machine offers less)
    assert len(admitted) >= 0.8 * min(attempts, 10 * (windows - 1))
    assert attempts < 10 * (windows + 1) or len(admitted) < attempts  # it did refuse
    for i, t in enumerate(admitted):
        assert sum(1 for u in admitted[i:] if u < t + 0.5) <= 20


async def test_sliding_window_fail_open_uses_the_local_window(redis_prefix: str) -> None:
    closed = Proxy()  # never started: its port is closed
    r = Redis(host="127.0.0.1", port=closed.port, socket_connect_timeout=0.2)
    backend = RedisBackend(r, prefix=redis_prefix, retry_interval=60)
    rule = Rule("sw", ("/orders",), rate=2, period=60, algorithm="sliding_window")
    app = make_app([rule], backend)
    try:
        async with client(app) as c:
            codes = [(await c.get("/orders")).status_code for _ in range(3)]
            last = await c.get("/orders")
    finally:
        await r.aclose()
    assert codes == [200, 200, 429]
    assert last.headers["ratelimit-policy"] == '"sw";q=2;w=60'
    assert backend.degraded and backend.failures == 1 and backend.fallback_decisions == 4


async def test_sliding_window_fail_closed_answers_503(redis_prefix: str) -> None:
    closed = Proxy()
    r = Redis(host="127.0.0.1", port=closed.port, socket_connect_timeout=0.2)
    backend = RedisBackend(r, prefix=redis_prefix, fail_mode="fail_closed", retry_interval=7)
    rule = Rule("sw", ("/orders",), rate=2, period=60, algorithm="sliding_window",
                body="aws")
    app = make_app([rule], backend)
    try:
        async with client(app) as c:
            refused = await c.get("/orders")
            free = await c.get("/free")
    finally:
        await r.aclose()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
    assert refused.json() == {"Error": {"Code": "ServiceUnavailable",
                                        "Message": "the rate limiter is unavailable"},
                              "RequestId": refused.headers["x-request-id"]}
    assert free.status_code == 200
    assert len(backend.fallback) == 0  # nothing decided locally


# --- the aws body (/sts) ----------------------------------------------------------------

async def test_aws_body_is_sts_throttling_json() -> None:
    from bastion.oauth.sts import StsError

    rule = Rule("sts", ("/orders",), rate=60, period=60, burst=1, body="aws")
    app = make_app([rule], MemoryBackend(clock=Clock()))
    async with client(app) as c:
        assert (await c.post("/orders")).status_code == 200
        r = await c.post("/orders")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/json"
    assert r.headers["retry-after"] == "1" and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body == {"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                    "RequestId": r.headers["x-request-id"]}
    # the shape of /sts's own errors (bastion.oauth.sts), plus the request id
    sts = json.loads(bytes(StsError("Throttling", "Rate exceeded", 429).response().body))
    assert sts == {"Error": body["Error"]}


def test_default_sts_rule_answers_like_aws() -> None:
    (sts,) = [r for r in Settings().rate_limit_rules if r.name == "sts"]
    assert sts.body == "aws" and sts.paths == ("/sts",)
    assert {r.body for r in Settings().rate_limit_rules if r.name != "sts"} == {"oauth"}


async def test_bastion_throttles_sts_like_aws(provider: Any, http: Any) -> None:
    """The default ``sts`` rule (burst 120, then 10/s) in front of the real /sts
    endpoint: at least the burst reaches it (401: no bearer token), then AWS's throttling
    error."""
    codes: list[int] = []
    while 429 not in codes and len(codes) < 1000:
        r = await http.post("/sts", data={"Action": "AssumeRole"})
        codes.append(r.status_code)
    assert codes[-1] == 429 and len(codes) > 120 and set(codes[:-1]) == {401}
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json() == {"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                        "RequestId": r.headers["x-request-id"]}
    assert r.headers["ratelimit-policy"] == '"sts";q=600;w=60;bastion-burst=120'
