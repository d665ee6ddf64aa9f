"""Attacks on the edge: the client IP behind trusted proxies (forged, malformed and huge
forwarding chains) and the reverse proxy (forged principal assertions, hop-by-hop abuse,
smuggling, encoded paths, the assertion replayed as a bearer token), against a real
``bastion serve`` and the upstream of ``tests/edge/test_proxy.py``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.edge.clientip import TrustedProxies
from tests.edge import test_proxy as edge
from tests.edge.test_proxy import Upstream, headers_of, raw_request
from tests.live import LiveServer, free_port, start_live_server

# the proxy tests' fixtures: their upstream, a server proxying to it, an admin token
upstream, live, admin_token = edge.upstream, edge.live, edge.admin_token

pytestmark = pytest.mark.interop
PROXY = "10.0.0.1"
CLIENT = "203.0.113.5"


def xff(*lines: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", line.encode()) for line in lines]


def fwd(*lines: str) -> list[tuple[bytes, bytes]]:
    return [(b"forwarded", line.encode()) for line in lines]


XFF = TrustedProxies(["10.0.0.0/8"])
FWD = TrustedProxies(["10.0.0.0/8"], header="forwarded")


# --- the client IP, as the component computes it ---------------------------------------------
@pytest.mark.parametrize("headers", [
    xff("1.2.3.4", CLIENT),                       # a forged left part
    xff("1.2.3.4, 10.9.9.9", CLIENT),             # a forged trusted hop on the left
    xff("unknown", CLIENT),
    xff("_hidden", CLIENT),
    xff(", , ,", CLIENT),
    xff("1.2.3.4, " * 5000 + "1.2.3.4", CLIENT),  # thousands of hops, far past 4096 chars
    xff("fe80::1%eth0", CLIENT),
    xff(f"{CLIENT}:443"),
    xff(f"[::ffff:{CLIENT}]:1"),
])
def test_client_is_the_rightmost_untrusted_hop(headers: list[tuple[bytes, bytes]]) -> None:
    assert XFF.client_ip(PROXY, headers) == CLIENT


@pytest.mark.parametrize("headers", [
    fwd("for=1.2.3.4", f"for={CLIENT}"),
    fwd('for="[2001:db8::1]:80";by=x', f"for={CLIENT};proto=https"),
    fwd("for=unknown", f"for={CLIENT}"),
    fwd("for=1.1.1.1;for=2.2.2.2", f"for={CLIENT}"),
    fwd("for=x, " * 3000 + "for=1.2.3.4", f'for="{CLIENT}"'),
])
def test_forwarded_rightmost_untrusted(headers: list[tuple[bytes, bytes]]) -> None:
    assert FWD.client_ip(PROXY, headers) == CLIENT


def test_untrusted_peer_headers_are_ignored() -> None:
    assert XFF.client_ip(CLIENT, xff("10.0.0.5")) == CLIENT
    assert FWD.client_ip(CLIENT, fwd("for=10.0.0.5")) == CLIENT
    assert XFF.client_ip(CLIENT, fwd(f"for={PROXY}")) == CLIENT


def test_the_other_header_is_ignored() -> None:
    both = [*fwd("for=198.51.100.1"), *xff(CLIENT)]
    assert XFF.client_ip(PROXY, both) == CLIENT


def test_zone_ids_cannot_forge_a_trusted_hop() -> None:
    trusted6 = TrustedProxies(["fe80::/10"])
    # a zone id never turns the right-most hop into a different address
    assert trusted6.client_ip("fe80::1", xff(CLIENT, "fe80::2%eth0")) == CLIENT


@pytest.mark.parametrize("forged", ['"', 'x"y', '1.2.3.4, "'])
def test_quote_in_xff_does_not_hide_the_client(forged: str) -> None:
    # the client sent `forged`; the proxy appended ", CLIENT" (or a second field line)
    assert XFF.client_ip(PROXY, xff(f"{forged}, {CLIENT}")) == CLIENT
    assert XFF.client_ip(PROXY, xff(forged, CLIENT)) == CLIENT


@pytest.mark.parametrize("forged", ['for="', 'for="1.2.3.4', 'for=x;by="'])
def test_quote_in_forwarded_does_not_hide_the_client(forged: str) -> None:
    assert FWD.client_ip(PROXY, fwd(forged, f"for={CLIENT}")) == CLIENT


# --- the same over HTTP: Bastion behind a trusted proxy (the test runner on 127.0.0.1) -------
@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
           ) -> Iterator[LiveServer]:
    tmp: Path = tmp_path_factory.mktemp("behind-proxy")
    config = tmp / "bastion.toml"
    config.write_text(f"""
[[routes]]
name = "pub"
path_prefix = "/pub"
upstream = "{upstream.url}/v1"
strip_prefix = true
auth = "none"
""")
    yield from start_live_server(tmp, env_over={
        "BASTION_CONFIG": str(config), "BASTION_TRUSTED_PROXIES": json.dumps(["127.0.0.1"])})


def seen_xff(server: LiveServer, value: str) -> list[str]:
    with server.http() as http:
        r = http.get("/pub/echo", headers={"X-Forwarded-For": value})
    assert r.status_code == 200, r.text
    return headers_of(r.json())["x-forwarded-for"]


def test_client_ip_behind_a_trusted_proxy(behind: LiveServer) -> None:
    # the runner plays the proxy: it appended CLIENT to what the client sent
    assert seen_xff(behind, f"6.6.6.6, 127.0.0.1, {CLIENT}") == [f"{CLIENT}, 127.0.0.1"]
    assert seen_xff(behind, f"unknown, {CLIENT}") == [f"{CLIENT}, 127.0.0.1"]


def test_quote_over_http_does_not_hide_the_client(behind: LiveServer) -> None:
    assert seen_xff(behind, f'", {CLIENT}') == [f"{CLIENT}, 127.0.0.1"]


# --- the proxy -----------------------------------------------------------------------------
def principal_of(live: LiveServer, token: str, **headers: str) -> list[str]:
    with live.http() as http:
        r = http.get("/api/inventory/echo/item-1",
                     headers={"Authorization": f"Bearer {token}", **headers})
    assert r.status_code == 200, r.text
    return headers_of(r.json()).get("x-bastion-principal", [])


def test_connection_naming_the_principal_header_does_not_drop_it(live: LiveServer,
                                                                 admin_token: str) -> None:
    seen = principal_of(live, admin_token, Connection="x-bastion-principal, keep-alive",
                        **{"X-Bastion-Principal": "forged"})
    assert len(seen) == 1 and seen[0] != "forged" and seen[0].count(".") == 2


def test_connection_cannot_drop_rebuilt_forwarding_headers(live: LiveServer) -> None:
    with live.http() as http:
        r = http.get("/pub/echo", headers={
            "Connection": "x-forwarded-for, forwarded, x-request-id",
            "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6"})
    seen = headers_of(r.json())
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["forwarded"][0].startswith('for="127.0.0.1"')
    assert seen["x-request-id"] == [r.headers["x-request-id"]]


def test_principal_assertion_is_no_bearer_token(live: LiveServer, admin_token: str) -> None:
    assertion = principal_of(live, admin_token)[0]
    with live.http() as http:
        for path in ("/api/inventory/echo/item-1", "/userinfo", "/orders"):
            r = http.get(path, headers={"Authorization": f"Bearer {assertion}"})
            assert r.status_code in (401, 404), (path, r.status_code)
            assert r.status_code != 200
        r = http.post("/introspect", data={"token": assertion})
        assert r.status_code in (200, 401)
        if r.status_code == 200:
            assert r.json() == {"active": False}


@pytest.mark.parametrize("path", ["/pub/echo", "/api/inventory/echo/item-1"])
def test_bastion_session_cookies_stay_at_the_edge(live: LiveServer, admin_token: str,
                                                  path: str) -> None:
    session = "s" * 43
    with live.http() as http:
        r = http.get(path, headers={
            "Authorization": f"Bearer {admin_token}",
            "Cookie": f"__Host-bastion_session={session}; app=1; __Host-bastion_browser=b"})
    assert r.status_code == 200, r.text
    cookies = "; ".join(headers_of(r.json()).get("cookie", []))
    assert "app=1" in cookies
    assert session not in cookies and "bastion_browser" not in cookies


def test_unauthenticated_route_gets_no_principal(live: LiveServer, admin_token: str) -> None:
    with live.http() as http:
        r = http.get("/pub/echo", headers={"Authorization": f"Bearer {admin_token}"})
    assert "x-bastion-principal" not in headers_of(r.json())


@pytest.mark.parametrize("path", [
    "/pub/%2e%2e/secret", "/pub/..%2fsecret", "/pub/%2E%2E%2Fsecret", "/pub/%5c..%5csecret",
    "/pub/a/%00", "/pub/.%2e/x"])
def test_encoded_traversal_is_refused(live: LiveServer, path: str) -> None:
    status, _, _ = raw_request(live, f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
                                     "Connection: close\r\n\r\n".encode())
    assert status in (400, 403)  # the proxy's path check, or the WAF before it


def test_double_encoding_stays_encoded_upstream(live: LiveServer) -> None:
    """``%25`` reaches the upstream still encoded: it decodes once, as the edge did."""
    with live.http() as http:
        r = http.get("/pub/echo/a%2541/b%252Fc")
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "/v1/echo/a%41/b%2Fc"
        assert http.get("/pub/%252e%252e/secret").status_code in (200, 403)


@pytest.mark.parametrize("request_bytes", [
    b"POST /pub/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    b"POST /pub/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
    b"Content-Length: 40\r\nConnection: close\r\n\r\nbody",
    b"POST /pub/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n"
    b"Connection: close\r\n\r\n0\r\n\r\n",
    b"POST /pub/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: +4\r\n"
    b"Connection: close\r\n\r\nbody",
    b"GET /pub/echo HTTP/1.1\r\nHost: localhost\r\nX-Foo: a\r\n b\r\nConnection: close\r\n\r\n",
])
def test_smuggling_shapes_are_refused(live: LiveServer, request_bytes: bytes) -> None:
    status, _, body = raw_request(live, request_bytes)
    assert status == 400, body[:300]


def test_host_header_games(live: LiveServer) -> None:
    """A forged Host cannot reach a host route by confusing the port split, nor be relayed
    unclean as X-Forwarded-Host."""
    with live.http() as http:
        for host in ("evil.shadow.test.attacker:443", "x.shadow.test@evil",
                     'a.shadow.test"', "a.shadow.test\\x"):
            r = http.get("/whatever", headers={"Host": host})
            assert r.status_code in (400, 404, 421), (host, r.status_code)
        ok = http.get("/echo", headers={"Host": "a.shadow.test:1234"})
    assert ok.status_code == 200 and ok.json()["path"] == "/v1/echo"
    assert headers_of(ok.json())["x-forwarded-host"] == ["a.shadow.test:1234"]


def test_upstream_hop_by_hop_response_headers_are_dropped(live: LiveServer) -> None:
    with live.http() as http:
        r = http.get("/pub/echo")
    assert "x-upstream-hop" not in r.headers and "proxy-authenticate" not in r.headers
    assert r.headers["x-request-id"] != "upstream-chosen"


def test_upstream_error_reveals_no_internals(live: LiveServer) -> None:
    with live.http() as http:
        r = http.get("/dead/x")
    assert r.status_code == 502
    assert "127.0.0.1" not in r.text and "Connect" not in r.text


def test_a_forged_principal_is_dropped_on_public_routes(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, verify=live.ssl_context(), timeout=30) as http:
        r = http.get("/pub/echo", headers=[("X-Bastion-Principal", "a"),
                                           ("x-bastion-principal", "b")])
    assert "x-bastion-principal" not in headers_of(r.json())


# --- a hostile upstream ----------------------------------------------------------------------
async def hostile(request: Request) -> Response:
    """Plants Bastion's own cookies in the browser through the proxy."""
    response = Response("owned", headers={"x-upstream": "1"})
    response.set_cookie("__Host-bastion_session", "planted-by-upstream-" + "x" * 20,
                        path="/", secure=True, httponly=True)
    response.set_cookie("__Host-bastion_browser", "planted", path="/", secure=True)
    response.set_cookie("app", "fine", path="/pub")
    return response


@pytest.fixture(scope="module")
def hostile_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        Starlette(routes=[Route("/{rest:path}", hostile)]), host="127.0.0.1", port=port,
        log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tmp: Path = tmp_path_factory.mktemp("hostile")
    (tmp / "bastion.toml").write_text(f"""
[[routes]]
name = "hostile"
path_prefix = "/pub"
upstream = "http://127.0.0.1:{port}"
auth = "none"
""")
    try:
        yield from start_live_server(tmp, env_over={"BASTION_CONFIG": str(tmp / "bastion.toml")})
    finally:
        server.should_exit = True
        thread.join(10)


def test_upstream_cannot_set_bastions_cookies(hostile_edge: LiveServer) -> None:
    with hostile_edge.http() as http:
        r = http.get("/pub/x")
    assert r.status_code == 200 and r.headers["x-upstream"] == "1"
    cookies = r.headers.get_list("set-cookie")
    assert any(c.startswith("app=") for c in cookies)
    assert not any("bastion_" in c for c in cookies)
