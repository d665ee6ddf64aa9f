"""The client IP behind trusted proxies: the right-most untrusted hop of the one configured
header, only from a trusted peer; garbage, a thousand hops, IPv6 with brackets and ports,
obfuscated identifiers and forged headers fall back safely. Then the one value everywhere
(request state, ``scope["client"]``, the audit context, rate limits), and over real sockets
against ``bastion serve``: a forged X-Forwarded-For from an untrusted peer changes neither
the rate-limit bucket nor the audit record's source IP; a trusted proxy's header is used."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.audit.context import current_request
from bastion.edge.clientip import (
    MAX_HEADER_CHARS,
    MAX_HOPS,
    TrustedProxies,
    forwarded_for,
    parse_address,
    parse_networks,
)
from bastion.edge.ratelimit import MemoryBackend, RateLimit, Rule
from bastion.edge.request import RequestContext
from tests.live import BASTION, LiveServer, start_live_server

XFF = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
FWD = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"], header="forwarded")


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode("latin-1")) for v in values]


def fwd(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"forwarded", v.encode("latin-1")) for v in values]


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", "192.0.2.1"),
    (" 192.0.2.1 ", "192.0.2.1"),
    ("192.0.2.1:8080", "192.0.2.1"),
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("::ffff:192.0.2.9", "192.0.2.9"),
    ("unknown", None),
    ("_hidden", None),  # RFC 7239 §6.3 obfuscated identifier
    ("", None),
    ("[2001:db8::1", None),
    ("[2001:db8::1]x", None),
    ("[2001:db8::1]:", None),
    ("192.0.2.1:", None),
    ("192.0.2.1:http", None),
    ("192.0.2.1:99999999", None),
    ("192.0.2.256", None),
    ("example.com", None),
    ("1" * 1000, None),
    ("192.0.2.1\x00", None),
    ("١٩٢.٠.٢.١", None),  # non-ASCII digits
])
def test_parse_address(text: str, expected: str | None) -> None:
    ip = parse_address(text)
    assert (str(ip) if ip is not None else None) == expected


@pytest.mark.parametrize(("element", "expected"), [
    ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
    ('For="[2001:db8:cafe::17]:4711"', "[2001:db8:cafe::17]:4711"),
    ("proto=https", None),
    ("for=1.2.3.4;for=5.6.7.8", None),  # §4: a parameter occurs at most once
    ('for="1.2.3.4;by=x"', "1.2.3.4;by=x"),  # a separator inside a quoted-string
])
def test_forwarded_for(element: str, expected: str | None) -> None:
    assert forwarded_for(element) == expected


CASES: list[tuple[str, TrustedProxies, str | None, list[tuple[bytes, bytes]], str | None]] = [
    ("untrusted-peer-header-ignored", XFF, "198.51.100.7", xff("203.0.113.1"),
     "198.51.100.7"),
    ("untrusted-peer-forwarded-ignored", FWD, "198.51.100.7", fwd("for=203.0.113.1"),
     "198.51.100.7"),
    ("no-header", XFF, "10.0.0.1", [], "10.0.0.1"),
    ("one-hop", XFF, "10.0.0.1", xff("203.0.113.1"), "203.0.113.1"),
    ("rightmost-untrusted", XFF, "10.0.0.1", xff("6.6.6.6, 203.0.113.1, 10.0.0.2"),
     "203.0.113.1"),
    ("forged-left-part-ignored", XFF, "10.0.0.1", xff("10.9.9.9, 203.0.113.1"), "203.0.113.1"),
    ("all-trusted-leftmost", XFF, "10.0.0.1", xff("10.0.0.3, 10.0.0.2"), "10.0.0.3"),
    ("several-field-lines", XFF, "10.0.0.1", xff("6.6.6.6", "203.0.113.1"), "203.0.113.1"),
    ("garbage-rightmost-falls-back-to-peer", XFF, "10.0.0.1", xff("203.0.113.1, garbage"),
     "10.0.0.1"),
    ("garbage-behind-a-trusted-hop", XFF, "10.0.0.1", xff("junk, 10.0.0.2"), "10.0.0.2"),
    ("empty-elements", XFF, "10.0.0.1", xff(",,,"), "10.0.0.1"),
    ("ipv6-brackets-port", XFF, "10.0.0.1", xff("[2001:db8::5]:1234"), "2001:db8::5"),
    ("ipv4-port", XFF, "10.0.0.1", xff("203.0.113.1:5555"), "203.0.113.1"),
    ("ipv6-trusted-peer", XFF, "2001:db8:ffff::1", xff("203.0.113.1"), "203.0.113.1"),
    ("mapped-peer", XFF, "::ffff:10.0.0.1", xff("203.0.113.1"), "203.0.113.1"),
    ("unparsable-peer", XFF, "not-an-ip", xff("203.0.113.1"), "not-an-ip"),
    ("no-peer", XFF, None, xff("203.0.113.1"), None),
    ("forwarded", FWD, "10.0.0.1",
     fwd('for=6.6.6.6, for="[2001:db8::5]:80";proto=https, for=10.0.0.2;by=x'),
     "2001:db8::5"),
    ("forwarded-obfuscated", FWD, "10.0.0.1", fwd("for=203.0.113.1, for=_hidden"),
     "10.0.0.1"),
    ("forwarded-unknown", FWD, "10.0.0.1", fwd("for=unknown"), "10.0.0.1"),
    ("forwarded-quoted-comma", FWD, "10.0.0.1", fwd('for="6.6.6.6, 7.7.7.7"'), "10.0.0.1"),
    ("forwarded-reads-only-forwarded", FWD, "10.0.0.1", xff("203.0.113.1"), "10.0.0.1"),
    ("xff-reads-only-xff", XFF, "10.0.0.1", fwd("for=203.0.113.1"), "10.0.0.1"),
    ("unbalanced-quote", FWD, "10.0.0.1", fwd('for="203.0.113.1'), "10.0.0.1"),
    ("a-thousand-hops", XFF, "10.0.0.1",
     xff(", ".join(["203.0.113.9"] * 999 + ["203.0.113.1"])), "203.0.113.1"),
    ("a-thousand-trusted-hops", XFF, "10.0.0.1",
     xff(", ".join(["6.6.6.6"] + ["10.0.0.9"] * 1000)), "10.0.0.9"),
    ("huge-header-cut-on-the-left", XFF, "10.0.0.1",
     xff("1" * 100_000 + ", 203.0.113.1"), "203.0.113.1"),
]


@pytest.mark.parametrize(("proxies", "peer", "headers", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_client_ip(proxies: TrustedProxies, peer: str | None,
                   headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert proxies.client_ip(peer, headers) == expected


def test_hops_are_bounded() -> None:
    assert len(XFF.hops(xff(", ".join(["10.0.0.2"] * 5000)))) <= MAX_HOPS


def test_a_header_cut_on_the_left_drops_the_fragment() -> None:
    value = "21.2.3.4," + "a" * (MAX_HEADER_CHARS - 8)  # the cut leaves "1.2.3.4,aaa..."
    assert XFF.hops(xff(value)) == ["a" * (MAX_HEADER_CHARS - 8)]


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "banana", "10.0.0.0/33", ""])
def test_bad_networks_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR block"):
        parse_networks([bad])


def test_bad_header_name_is_refused() -> None:
    with pytest.raises(ValueError):
        TrustedProxies([], header="x-real-ip")  # type: ignore[arg-type]


# --- one value for everyone ---------------------------------------------------------------

async def whoami(request: Request) -> Response:
    info = current_request.get()
    return JSONResponse({"state": request.state.client_ip, "peer": request.state.peer_ip,
                         "client": request.client.host if request.client else None,
                         "audit": info.source_ip if info else None})


def context_app(proxies: TrustedProxies | None) -> Starlette:
    rule = Rule("who", ("/who",), rate=1, period=60, burst=1)
    return Starlette(routes=[Route("/who", whoami)], middleware=[
        Middleware(RequestContext, trusted_proxies=proxies),
        Middleware(RateLimit, rules=[rule], backend=MemoryBackend())])


@pytest.mark.anyio
@pytest.mark.parametrize(("peer", "forged", "expected"), [
    ("10.0.0.1", "203.0.113.1", "203.0.113.1"),  # trusted proxy: its header
    ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # anyone else: the peer
])
async def test_request_context_computes_the_one_value(peer: str, forged: str,
                                                      expected: str) -> None:
    app = context_app(XFF)
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/who", headers={"x-forwarded-for": forged})
        again = await c.get("/who", headers={"x-forwarded-for": "192.0.2.99"})
    assert r.json() == {"state": expected, "peer": peer, "client": expected,
                        "audit": expected}
    # the rate limit's bucket is that value: a new forged value is a new bucket only
    # when a trusted proxy says so
    assert again.status_code == (200 if peer == "10.0.0.1" else 429)


@pytest.mark.anyio
async def test_without_trusted_proxies_headers_are_never_read() -> None:
    transport = httpx.ASGITransport(app=context_app(None), client=("10.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/who", headers={"x-forwarded-for": "203.0.113.1",
                                         "forwarded": "for=203.0.113.1"})
    assert r.json()["state"] == "10.0.0.1" and r.json()["client"] == "10.0.0.1"


# --- over real sockets against bastion serve ----------------------------------------------

UNTRUSTED = "127.0.0.2"  # a client connecting straight to Bastion


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"BASTION_TRUSTED_PROXIES": '["127.0.0.1"]'}  # the "proxy" connects from here
    yield from start_live_server(tmp_path_factory.mktemp("clientip"), env_over=env)


def client(live: LiveServer, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(verify=live.ssl_context(), local_address=source)
    return httpx.Client(base_url=live.url, transport=transport, timeout=30)


def audit_record(live: LiveServer, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run([BASTION, "audit", "search", "--request-id", request_id,
                              "--data-dir", str(live.data_dir)], capture_output=True,
                             text=True, env=live.env, timeout=60, check=True)
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(lines) == 1, out.stdout
    record: dict[str, Any] = lines[0]
    return record


def exhaust_login(c: httpx.Client, forged: list[str | None]) -> list[httpx.Response]:
    out = []
    for value in forged:
        headers = {"x-forwarded-for": value} if value else {}
        out.append(c.post("/login", data={}, headers=headers))
    return out


def test_forged_xff_from_an_untrusted_peer_changes_nothing(live: LiveServer) -> None:
    forged: list[str | None] = [f"203.0.113.{i}" for i in range(11)]
    with client(live, UNTRUSTED) as c:
        answers = exhaust_login(c, forged)
    codes = [r.status_code for r in answers]
    assert 429 not in codes[:10] and codes[10] == 429  # one bucket: the peer's
    record = audit_record(live, answers[10].headers["x-request-id"])
    assert record["eventName"] == "RateLimitExceeded"
    assert record["sourceIPAddress"] == UNTRUSTED


def test_a_trusted_proxys_xff_is_the_client_ip(live: LiveServer) -> None:
    with client(live, "127.0.0.1") as c:
        # distinct clients behind the proxy: distinct buckets
        spread = exhaust_login(c, [f"198.51.100.{i}" for i in range(15)])
        # one client behind the proxy, forging on its own: the proxy appended its address
        one = exhaust_login(c, [f"6.6.6.{i}, 192.0.2.77" for i in range(11)])
    assert 429 not in [r.status_code for r in spread]
    assert 429 not in [r.status_code for r in one[:10]] and one[10].status_code == 429
    record = audit_record(live, one[10].headers["x-request-id"])
    assert record["sourceIPAddress"] == "192.0.2.77"


def test_the_server_layer_runs_under_bastion_serve(live: LiveServer) -> None:
    """`bastion serve` uses the guarded protocol: an oversized URL is 414 at the socket."""
    with client(live, UNTRUSTED) as c:
        r = c.get("/" + "a" * 9000)
    assert r.status_code == 414
