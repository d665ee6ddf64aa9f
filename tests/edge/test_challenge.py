"""The under-attack challenge over real sockets: the page is served, a solution computed here
with hashlib gets the pass cookie and the request through; wrong, expired, forged or
other-IP solutions and cookies are refused; credentialed and exempt requests pass; the
auto mode turns on under a real flood of the load shedder and off after calm; the key comes
from the KEK (two instances accept each other's cookies); refusals counted and audited."""

from __future__ import annotations

import asyncio
import hashlib
import html
import os
import re
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.edge.challenge import VERIFY_PATH, Challenge, derive_key, leading_zero_bits
from bastion.edge.counters import EdgeCounters
from bastion.edge.metrics import Metrics
from bastion.edge.request import RequestContext
from bastion.edge.shed import Shed
from bastion.kms import KeyWrapper
from tests.edge.uvicorn_thread import served

pytestmark = pytest.mark.anyio
KEY = derive_key(KeyWrapper(os.urandom(32)).keyed_hash)
BITS = 8


class Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def emit(self, event_name: str, **fields: Any) -> None:
        self.records.append({"eventName": event_name, **fields})


async def page(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("sleep", "0")))
    return PlainTextResponse(f"real page {request.url.path}")


def make_app(*, shed: dict[str, Any] | None = None, **options: Any) -> Starlette:
    middleware = [Middleware(RequestContext)]
    if shed is not None:
        middleware.append(Middleware(Shed, **shed))
    options.setdefault("key", KEY)
    options.setdefault("difficulty", BITS)
    middleware.append(Middleware(Challenge, **options))
    return Starlette(routes=[Route("/{path:path}", page, methods=["GET", "POST"])],
                     middleware=middleware)


def client(base: str, source: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, timeout=10, transport=httpx.AsyncHTTPTransport(
        local_address=source, limits=httpx.Limits(max_connections=50)))


def challenge_of(body: str) -> tuple[str, int, str, str]:
    """(challenge, difficulty, action, next) from the page, as its script reads them."""
    def attr(name: str) -> str:
        m = re.search(rf'data-{name}="([^"]*)"', body)
        assert m, name
        return html.unescape(m.group(1))
    return attr("challenge"), int(attr("difficulty")), attr("action"), attr("next")


def solve(challenge: str, bits: int) -> str:
    n = 0
    while leading_zero_bits(hashlib.sha256(f"{challenge}{n}".encode()).digest()) < bits:
        n += 1
    return str(n)


def unsolve(challenge: str, bits: int) -> str:
    n = 0
    while leading_zero_bits(hashlib.sha256(f"{challenge}{n}".encode()).digest()) >= bits:
        n += 1
    return str(n)


async def pass_cookie(http: httpx.AsyncClient, path: str = "/docs?x=1") -> httpx.Response:
    first = await http.get(path, headers={"accept": "text/html"})
    assert first.status_code == 503
    c, bits, action, nxt = challenge_of(first.text)
    return await http.get(action, params={"c": c, "n": solve(c, bits), "r": nxt})


async def test_browser_gets_page_and_a_solution_lets_it_through() -> None:
    sink, counters = Sink(), EdgeCounters()
    async with served(make_app(audit=sink, counters=counters)) as base, client(base) as http:
        r = await http.get("/docs?x=1", headers={"accept": "text/html"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.headers["content-type"].startswith("text/html")
        assert "script-src 'sha256-" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        c, bits, action, nxt = challenge_of(r.text)
        assert (bits, action, nxt) == (BITS, VERIFY_PATH, "/docs?x=1")
        assert "crypto.subtle.digest" in r.text

        ok = await http.get(action, params={"c": c, "n": solve(c, bits), "r": nxt})
        assert ok.status_code == 303 and ok.headers["location"] == "/docs?x=1"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith("bastion-pass=")
        for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"):
            assert attribute in cookie
        assert "Secure" not in cookie  # plain http here; the browser test covers TLS
        real = await http.get("/docs", params={"x": "1"})
        assert real.status_code == 200 and real.text == "real page /docs"
        posted = await http.post("/docs", content=b"x")
        assert posted.status_code == 200
    assert counters.refusals[("challenge", "challenged")] == 1
    metrics = Metrics()
    metrics.watch_edge(counters)
    exported = generate_latest(metrics.registry).decode()
    assert ('bastion_edge_refusals_total{layer="challenge",reason="challenged"} 1.0'
            in exported)
    assert [r["eventName"] for r in sink.records] == ["UnderAttackChallenge"]
    assert sink.records[0]["request_parameters"]["reason"] == "challenged"


async def test_non_browser_requests_without_a_pass_get_503_problem() -> None:
    async with served(make_app()) as base, client(base) as http:
        for method, accept in (("POST", "text/html"), ("GET", "application/json"),
                               ("DELETE", "*/*")):
            r = await http.request(method, "/api", headers={"accept": accept})
            assert r.status_code == 503, method
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "1"
            assert r.json()["instance"] == "urn:bastion:request:" + r.headers["x-request-id"]
        head = await http.head("/docs")
        assert head.status_code == 503 and head.content == b""


@pytest.mark.parametrize("credential", [
    "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig", "bearer abc", "DPoP abc", "Basic YTpi",
    "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kms/aws4_request, "
    "SignedHeaders=host, Signature=00"])
async def test_credentialed_requests_pass(credential: str) -> None:
    async with served(make_app()) as base, client(base) as http:
        r = await http.post("/orders", headers={"authorization": credential})
        assert r.status_code == 200 and r.text == "real page /orders"


async def test_other_schemes_presigned_urls_and_exempt_paths() -> None:
    async with served(make_app(exempt=("/healthz", "/token"))) as base, client(base) as http:
        for scheme in ("Negotiate abc", "Digest x", "Bearerx", ""):
            r = await http.get("/x", headers={"authorization": scheme})
            assert r.status_code == 503, scheme
        presigned = await http.get("/bucket/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
                                   "X-Amz-Credential=a&X-Amz-Signature=00")
        assert presigned.status_code == 200
        for path, status in (("/token", 200), ("/token/x", 200), ("/tokenx", 503),
                             ("/healthz", 200)):
            r = await http.post(path, data={"client_id": "c", "client_secret": "s"})
            assert r.status_code == status, path


async def test_bad_solutions_are_refused_and_audited() -> None:
    sink, counters = Sink(), EdgeCounters()
    now = [1_800_000_000.0]
    gate = Challenge(page, key=KEY, difficulty=BITS, clock=lambda: now[0])
    ip = "127.0.0.1"
    good = gate.make_challenge(ip)
    assert gate.check_solution(good, solve(good, BITS), ip) is None
    other_key = Challenge(page, key=bytes(32), difficulty=BITS)
    forged = other_key.make_challenge(ip)
    expiry, rnd, _, mac = good.split(".")
    cases = {
        "wrong nonce": (good, unsolve(good, BITS), ip, "insufficient_work"),
        "other ip": (good, solve(good, BITS), "127.0.0.2", "bad_signature"),
        "forged key": (forged, solve(forged, BITS), ip, "bad_signature"),
        "easier difficulty": (f"{expiry}.{rnd}.1.{mac}", "0", ip, "bad_signature"),
        "longer expiry": (f"{int(expiry) + 999}.{rnd}.{BITS}.{mac}", "0", ip,
                          "bad_signature"),
        "not a challenge": ("abc", "1", ip, "malformed"),
        "non-digit nonce": (good, "１２", ip, "malformed"),
        "huge nonce": (good, "1" * 30, ip, "malformed"),
        "empty": ("", "", ip, "malformed"),
    }
    for name, (c, n, addr, reason) in cases.items():
        assert gate.check_solution(c, n, addr) == reason, name
    now[0] += gate.challenge_ttl + 1
    assert gate.check_solution(good, solve(good, BITS), ip) == "expired"

    async with served(make_app(audit=sink, counters=counters)) as base, client(base) as http:
        r = await http.get("/", headers={"accept": "text/html"})
        c, bits, action, nxt = challenge_of(r.text)
        for params in ({"c": c, "n": unsolve(c, bits), "r": nxt}, {"c": forged, "n": "1"},
                       {"c": c + "x", "n": solve(c, bits)}, {}, {"c": "\x00" * 5000}):
            bad = await http.get(action, params=params)
            assert bad.status_code == 403, params
            assert bad.headers["content-type"] == "application/problem+json"
            assert "set-cookie" not in bad.headers
        posted = await http.post(action, data={"c": c, "n": solve(c, bits)})
        assert posted.status_code == 405
        # a challenge solved on one address is no good on another
        async with client(base, "127.0.0.2") as other:
            stolen = await other.get(action, params={"c": c, "n": solve(c, bits)})
            assert stolen.status_code == 403
    assert counters.refusals[("challenge", "invalid_solution")] == 6
    records = [r for r in sink.records if r["request_parameters"]["reason"] ==
               "invalid_solution"]
    assert records[0]["additional"]["aggregated"] is False  # the first at once...
    assert sum(r["additional"]["refusals"] for r in records) <= 6  # ...the rest summed


async def test_open_redirects_are_not_followed() -> None:
    async with served(make_app()) as base, client(base) as http:
        r = await http.get("/", headers={"accept": "text/html"})
        c, bits, action, _ = challenge_of(r.text)
        n = solve(c, bits)
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example",
                       "/a\r\nSet-Cookie: x=1", "javascript:alert(1)"):
            ok = await http.get(action, params={"c": c, "n": n, "r": target})
            assert ok.status_code == 303 and ok.headers["location"] == "/", target


async def test_cookies_bound_to_ip_expiry_and_key() -> None:
    now = [1_800_000_000.0]
    sink = Sink()
    async with served(make_app(audit=sink, clock=lambda: now[0])) as base:
        async with client(base) as http:
            assert (await pass_cookie(http)).status_code == 303
            value = http.cookies["bastion-pass"]
            assert (await http.get("/docs")).status_code == 200
            expiry, mac = value.split(".")
            # the same cookie from another address
            async with client(base, "127.0.0.2") as other:
                other.cookies.set("bastion-pass", value)
                assert (await other.get("/docs")).status_code == 503
            forged = {
                "tampered mac": f"{expiry}.{mac[:-2]}AA",
                "extended expiry": f"{int(expiry) + 3600}.{mac}",
                "other key": Challenge(page, key=bytes(32)).make_cookie("127.0.0.1"),
                "garbage": "x" * 300, "no mac": expiry, "empty mac": f"{expiry}.",
                "far future": f"{10 ** 11}.{mac}",
            }
            for name, cookie in forged.items():
                http.cookies.clear()
                http.cookies.set("bastion-pass", cookie)
                r = await http.get("/docs", headers={"accept": "text/html"})
                assert r.status_code == 503, name
            http.cookies.clear()
            http.cookies.set("bastion-pass", value)
            assert (await http.get("/docs")).status_code == 200
            now[0] += 3601  # expired
            assert (await http.get("/docs")).status_code == 503
    reasons = {r["request_parameters"]["reason"] for r in sink.records}
    assert reasons == {"challenged", "invalid_cookie"}


async def test_every_instance_sharing_the_kek_accepts_the_cookie() -> None:
    kek = os.urandom(32)  # two instances, one KEK
    first = derive_key(KeyWrapper(kek).keyed_hash)
    assert first == derive_key(KeyWrapper(kek).keyed_hash)
    assert first != derive_key(KeyWrapper(os.urandom(32)).keyed_hash)
    async with served(make_app(key=first)) as a, served(make_app(key=first)) as b, \
            served(make_app(key=KEY)) as c:
        async with client(a) as http:
            assert (await pass_cookie(http)).status_code == 303
            value = http.cookies["bastion-pass"]
        for base, status in ((b, 200), (c, 503)):
            async with client(base) as http:
                http.cookies.set("bastion-pass", value)
                assert (await http.get("/docs")).status_code == status, base


async def test_tls_cookie_is_secure_and_host_prefixed() -> None:
    async with served(make_app(secure=True)) as base, client(base) as http:
        r = await pass_cookie(http)
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-bastion-pass=") and "; Secure" in cookie


async def test_off_passes_everything() -> None:
    async with served(make_app(mode="off")) as base, client(base) as http:
        assert (await http.get("/docs", headers={"accept": "text/html"})).status_code == 200


def test_bad_options_are_refused() -> None:
    for options in ({"key": b"short"}, {"key": KEY, "mode": "maybe"},
                    {"key": KEY, "difficulty": 0}, {"key": KEY, "difficulty": 33},
                    {"key": KEY, "exempt": ("token",)}, {"key": KEY, "trigger_rate": 0}):
        with pytest.raises(ValueError):
            Challenge(page, **options)


async def test_auto_mode_turns_on_under_a_flood_and_off_after_calm() -> None:
    sink, counters = Sink(), EdgeCounters()
    app = make_app(shed={"max_in_flight": 2, "queue_size": 0, "counters": counters},
                   mode="auto", trigger_rate=5, trigger_seconds=1.0, calm_seconds=1.5,
                   audit=sink, counters=counters)
    async with served(app) as base, client(base) as http, client(base, "127.0.0.3") as flood:
        assert (await http.get("/docs", headers={"accept": "text/html"})).status_code == 200

        async def flooder() -> None:
            while True:
                await asyncio.gather(*(flood.get("/slow", params={"sleep": "0.05"})
                                       for _ in range(20)))

        task = asyncio.create_task(flooder())
        try:
            async with asyncio.timeout(15):
                while True:  # the well-behaved browser sees the page once the mode is on
                    r = await http.get("/docs", headers={"accept": "text/html"})
                    if r.status_code == 503 and "data-challenge" in r.text:
                        break
                    await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert counters.refusals[("shed", "overloaded")] >= 5
        # a browser that solves the challenge gets through while it lasts
        assert (await pass_cookie(http)).status_code == 303
        assert (await http.get("/docs")).status_code == 200
        http.cookies.clear()
        async with asyncio.timeout(10):
            while True:  # calm: the mode turns itself off
                r = await http.get("/docs", headers={"accept": "text/html"})
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.2)
    transitions = [r["additional"]["transition"] for r in sink.records
                   if "transition" in r.get("additional", {})]
    assert transitions == ["on", "off"]

