"""The reverse proxy over real sockets: a real ``bastion serve`` (TLS) configured with a TOML
file (``BASTION_CONFIG``) in front of a real upstream (uvicorn + Starlette on a free port):
streaming both ways with flat memory, hop-by-hop and forwarding headers, the principal JWT
verified against Bastion's JWKS, 502/504, 401/403, route limits, refused paths, and the
configuration's errors."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bastion.config import ConfigError, load_settings
from bastion.edge.proxy import Forward, Proxy
from bastion.edge.routes import RouteConfig
from tests.conftest import raised_rate_limits
from tests.live import BASTION, LiveServer, free_port, start_live_server

CHUNK = bytes(range(256)) * 4096  # 1 MiB
STREAM_BYTES = int(os.environ.get("BASTION_TEST_PROXY_BYTES", str(1024 * 1024 * 1024)))
MAX_RSS_GROWTH = 64 * 1024 * 1024


# --- the upstream -------------------------------------------------------------------------

async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {"method": request.method, "path": request.url.path,
         "query": request.url.query, "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                                                 for k, v in request.headers.raw],
         "body": body.decode("latin-1")},
        headers={"connection": "x-upstream-hop", "x-upstream-hop": "1",
                 "keep-alive": "timeout=5", "proxy-authenticate": "Basic",
                 "x-request-id": "upstream-chosen", "x-upstream-kept": "yes"})


async def sink(request: Request) -> Response:
    digest, size = hashlib.sha256(), 0
    try:
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
    except ClientDisconnect:  # Bastion gave up forwarding (413): nobody to answer
        return Response(status_code=499)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


async def source(request: Request) -> Response:
    size = int(request.query_params["n"])

    async def chunks() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            yield CHUNK[:left]
            left -= len(CHUNK)

    return StreamingResponse(chunks(), media_type="application/octet-stream")


PRODUCED: dict[str, int] = {}  # bytes each /endless stream has produced, by tag


async def endless(request: Request) -> Response:
    tag = request.query_params["tag"]
    PRODUCED[tag] = 0

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            PRODUCED[tag] += len(CHUNK)
            yield CHUNK
            await anyio.lowlevel.checkpoint()  # Starlette then sees the disconnect

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def broken(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield CHUNK
        raise RuntimeError("the upstream dies mid-body")

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def slow(request: Request) -> Response:
    await anyio.sleep(float(request.query_params.get("s", "5")))
    return JSONResponse({"late": True})


upstream_app = Starlette(routes=[
    Route("/v1/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/v1/echo", echo, methods=["GET", "POST"]),
    Route("/api/echo/{rest:path}", echo, methods=["GET", "POST"]),
    Route("/v1/sink", sink, methods=["POST"]),
    Route("/v1/source", source, methods=["GET"]),
    Route("/v1/slow", slow, methods=["GET"]),
    Route("/v1/endless", endless, methods=["GET"]),
    Route("/v1/broken", broken, methods=["GET"]),
])


class Upstream:
    """uvicorn serving ``upstream_app`` on a free loopback port, in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            upstream_app, host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Upstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "upstream did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


OK_REPLY = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
SMUGGLER_REPLIES = {
    b"/smuggle/cl-te": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked"
                       b"\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"/smuggle/two-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 9"
                             b"\r\n\r\nok",
    b"/smuggle/extra": OK_REPLY + b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
    b"/smuggle/honest": b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhonest",
}


class Smuggler:
    """A raw keep-alive HTTP/1.1 upstream answering GETs with the bytes above, byte for
    byte (no server framework would send them); counts its connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                conn.sendall(SMUGGLER_REPLIES.get(path, OK_REPLY))

    def close(self) -> None:
        self.sock.close()


SMUGGLERS: dict[str, Smuggler] = {}  # by the URL of the live server whose route uses it


@pytest.fixture
def smuggler(live: LiveServer) -> Smuggler:
    return SMUGGLERS[live.url]


def config_toml(up: Upstream, dead_port: int, smuggler_port: int | None = None) -> str:
    smuggle = "" if smuggler_port is None else f"""
[[routes]]
name = "smuggle"
path_prefix = "/smuggle"
upstream = "http://127.0.0.1:{smuggler_port}"
auth = "none"
timeout = 5
"""
    return f"""
# the WAF inspects the first waf_body_limit bytes; the streaming route's bodies go on
waf_body_unlimited_paths = ["/big"]

[[routes]]
name = "inventory"
path_prefix = "/api/inventory"
upstream = "{up.url}/v1"
strip_prefix = true
action = "inventory:GetItem"
resource = "arn:bastion:inventory::{{account}}:item/{{path}}"

[[routes]]
name = "public"
path_prefix = "/pub"
upstream = "{up.url}/v1"
strip_prefix = true
auth = "none"
max_body_bytes = 1000000

[[routes]]
name = "nostrip"
path_prefix = "/api/echo"
upstream = "{up.url}"
auth = "none"

[[routes]]
name = "big"
path_prefix = "/big"
upstream = "{up.url}/v1"
strip_prefix = true
auth = "none"

[[routes]]
name = "dead"
path_prefix = "/dead"
upstream = "http://127.0.0.1:{dead_port}"
auth = "none"
connect_timeout = 2

[[routes]]
name = "slow"
path_prefix = "/slow"
upstream = "{up.url}/v1"
strip_prefix = true
auth = "none"
timeout = 1

[[routes]]
name = "limited"
path_prefix = "/limited"
upstream = "{up.url}/v1"
strip_prefix = true
auth = "none"
rate_limits = [{{name = "tight", rate = 1, period = 60, burst = 3}}]

[[routes]]
name = "windowed"
path_prefix = "/windowed"
upstream = "{up.url}/v1"
strip_prefix = true
auth = "none"
rate_limits = [{{name = "w", rate = 2, period = 60, algorithm = "sliding_window"}}]

[[routes]]
name = "by-host"
host = "*.shadow.test"
path_prefix = "/"
upstream = "{up.url}/v1"
strip_prefix = true
auth = "none"

[[routes]]
name = "per-principal"
path_prefix = "/pp"
upstream = "{up.url}/v1"
strip_prefix = true
action = "inventory:GetItem"
rate_limits = [{{name = "p", rate = 1, period = 60, burst = 2, key = "principal"}}]
""" + smuggle


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
         ) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("proxy")
    config = tmp / "bastion.toml"
    smuggler = Smuggler()
    config.write_text(config_toml(upstream, free_port(), smuggler.port))
    rules = json.dumps([asdict(r) for r in raised_rate_limits()])
    try:
        for server in start_live_server(tmp, env_over={
                "BASTION_CONFIG": str(config), "BASTION_RATE_LIMIT_RULES": rules,
                # the server layer's backstop on any body (1 GiB by default)
                "BASTION_MAX_REQUEST_BODY_BYTES": str(max(2**30, STREAM_BYTES))}):
            SMUGGLERS[server.url] = smuggler
            yield server
    finally:
        smuggler.close()


def client_token(live: LiveServer, name: str, scope: str, role: str) -> str:
    client = live.add_client(name, [], "--grant-type", "client_credentials", "--scope", scope,
                             "--role", role)
    with live.http() as http:
        r = http.post("/token", data={"grant_type": "client_credentials", "scope": scope},
                      auth=(client["client_id"], client["client_secret"]))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def admin_token(live: LiveServer) -> str:
    return client_token(live, "proxy-admin", "bastion:admin", "admin")


@pytest.fixture(scope="module")
def reader_token(live: LiveServer) -> str:
    return client_token(live, "proxy-reader", "order:view", "order:view")


def rss(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


class PeakRss:
    """The highest VmRSS of a process, sampled every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak = rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))


def headers_of(body: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["instance"] == f"urn:bastion:request:{r.headers['x-request-id']}"
    return body


# --- streaming -----------------------------------------------------------------------------

def test_streams_large_bodies_both_ways_with_flat_memory(live: LiveServer):
    pid = live.process.pid  # type: ignore[union-attr]
    with live.http() as http:
        http.get("/big/echo")  # connections and code paths warm
        before = rss(pid)
        sent = hashlib.sha256()

        def body() -> Iterator[bytes]:
            left = STREAM_BYTES
            while left > 0:
                piece = CHUNK[:left]
                sent.update(piece)
                left -= len(piece)
                yield piece

        start = time.monotonic()
        with PeakRss(pid) as during_up:
            up = http.post("/big/sink", content=body(), timeout=600)
        assert up.status_code == 200, up.text
        assert up.json() == {"size": STREAM_BYTES, "sha256": sent.hexdigest()}
        upload_s = time.monotonic() - start

        got, size = hashlib.sha256(), 0
        start = time.monotonic()
        with PeakRss(pid) as during_down, \
                http.stream("GET", f"/big/source?n={STREAM_BYTES}", timeout=600) as down:
            assert down.status_code == 200
            assert "content-length" not in down.headers  # chunked through, not buffered
            for chunk in down.iter_raw():
                got.update(chunk)
                size += len(chunk)
        download_s = time.monotonic() - start
    expected = hashlib.sha256()
    left = STREAM_BYTES
    while left > 0:
        expected.update(CHUNK[:left])
        left -= len(CHUNK)
    assert size == STREAM_BYTES and got.hexdigest() == expected.hexdigest()
    mib = STREAM_BYTES / 2**20
    print(f"\nproxy streaming {mib:.0f} MiB: upload {mib / upload_s:.0f} MiB/s, download "
          f"{mib / download_s:.0f} MiB/s; bastion RSS before {before / 2**20:.1f} MiB, "
          f"peak while uploading {during_up.peak / 2**20:.1f} MiB, while downloading "
          f"{during_down.peak / 2**20:.1f} MiB")
    assert during_up.peak - before < MAX_RSS_GROWTH
    assert during_down.peak - before < MAX_RSS_GROWTH


def test_a_client_that_leaves_stops_the_upstream_stream(live: LiveServer):
    tag = secrets.token_hex(4)
    with live.http() as http, http.stream("GET", f"/big/endless?tag={tag}") as r:
        assert r.status_code == 200
        for i, _ in enumerate(r.iter_raw()):
            if i == 8:
                break
    deadline = time.monotonic() + 5
    while True:  # the proxy stops reading; the upstream's buffers fill and it stalls
        first = PRODUCED[tag]
        time.sleep(0.5)
        if PRODUCED[tag] == first:
            break
        assert time.monotonic() < deadline, "the upstream kept streaming"
    assert PRODUCED[tag] < 256 * 2**20


def test_an_upstream_dying_mid_body_breaks_the_clients_response(live: LiveServer):
    with live.http() as http, pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012
        with http.stream("GET", "/big/broken") as r:
            assert r.status_code == 200
            for _ in r.iter_raw():
                pass


# --- headers -------------------------------------------------------------------------------

def test_hop_by_hop_headers_are_dropped_both_ways(live: LiveServer):
    with live.http() as http:
        r = http.post("/pub/echo/x?a=1&b=%20", content=b"hello", headers={
            "Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "secret",
            "Keep-Alive": "timeout=5", "TE": "trailers", "Trailer": "X-T",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==", "Proxy-Foo": "1",
            "X-Kept": "yes"})
    assert r.status_code == 200, r.text
    body = r.json()
    seen = headers_of(body)
    for hop in ("connection", "x-client-hop", "keep-alive", "te", "trailer",
                "proxy-authorization", "proxy-foo", "transfer-encoding", "upgrade"):
        assert hop not in seen or hop == "connection" and seen[hop] == ["keep-alive"], hop
    assert seen["x-kept"] == ["yes"]
    assert body["path"] == "/v1/echo/x" and body["query"] == "a=1&b=%20"
    assert body["body"] == "hello"
    # the upstream's hop-by-hop fields do not reach the client; its request id is Bastion's
    for hop in ("x-upstream-hop", "keep-alive", "proxy-authenticate"):
        assert hop not in r.headers, hop
    assert r.headers["x-upstream-kept"] == "yes"
    assert r.headers["x-request-id"] != "upstream-chosen"
    assert r.headers.get_list("x-request-id") == [r.headers["x-request-id"]]


def test_forwarding_headers_are_rebuilt_and_forged_ones_ignored(live: LiveServer,
                                                               upstream: Upstream):
    port = live.url.rsplit(":", 1)[1]
    with live.http() as http:
        r = http.get("/pub/echo", headers={
            "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6;proto=http",
            "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http",
            "X-Real-IP": "6.6.6.6", "X-Request-Id": "forged-id"})
    seen = headers_of(r.json())
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == [f"localhost:{port}"]
    assert seen["forwarded"] == [f'for="127.0.0.1";proto=https;host="localhost:{port}"']
    assert "x-real-ip" not in seen
    assert seen["x-request-id"] == [r.headers["x-request-id"]]  # Bastion's, for correlation
    assert seen["host"] == [f"127.0.0.1:{upstream.port}"]  # the upstream's own name


def test_path_prefix_without_strip_keeps_the_path(live: LiveServer):
    with live.http() as http:
        r = http.get("/api/echo/a/b%20c")
    assert r.status_code == 200
    assert r.json()["path"] == "/api/echo/a/b c"


@pytest.mark.parametrize("raw_path", [
    b"/pub/echo/%2e%2e/%2e%2e/secret", b"/pub/echo/..%2Fsecret", b"/pub/echo%2f..",
    b"/pub/echo/%5c..", b"/pub/echo/a%00b", b"/pub/./echo", b"/pub/echo/../../secret"],
    ids=["encoded-dot-segments", "encoded-slash", "encoded-slash-lower", "backslash", "nul",
         "dot-segment", "dot-dot-segments"])
def test_paths_that_would_mean_something_else_upstream_are_refused(live: LiveServer,
                                                                   raw_path: bytes):
    """Over the wire (the WAF may refuse first, 403: either way nothing is forwarded)..."""
    status, head, body = raw_request(live, b"GET " + raw_path + b" HTTP/1.1\r\n"
                                     b"Host: localhost\r\nConnection: close\r\n\r\n")
    assert status in (400, 403), body
    assert b"application/problem+json" in head
    assert b"cannot be forwarded" in body or b"web application firewall" in body


@pytest.mark.parametrize(("path", "raw"), [
    ("/pub/echo/../../secret", b"/pub/echo/%2e%2e/%2e%2e/secret"),
    ("/pub/echo/../secret", b"/pub/echo/..%2Fsecret"),
    ("/pub/echo/..", b"/pub/echo%2f.."),
    ("/pub/echo/\\..", b"/pub/echo/%5c.."),
    ("/pub/echo/a\x00b", b"/pub/echo/a%00b"),
    ("/pub/./echo", b"/pub/./echo"),
    ("/pub/echo/\x7f", b"/pub/echo/%7f"),
], ids=["dot-segments", "encoded-slash", "encoded-slash-lower", "backslash", "nul", "dot",
        "control"])
def test_the_proxy_itself_refuses_such_paths(path: str, raw: bytes):
    """...and the proxy's own check, behind any WAF configuration."""
    forward = Forward(Proxy([], issuer="https://issuer", keyring=lambda: None),  # type: ignore[arg-type,return-value]
                      RouteConfig(name="pub", path_prefix="/pub", upstream="http://u/v1",
                                  auth="none", strip_prefix=True))
    assert forward._target({"path": path, "raw_path": raw, "query_string": b""}) is None
    assert forward._target({"path": "/pub/echo/a b", "raw_path": b"/pub/echo/a%20b",
                            "proxy_remainder": "/echo/a b",
                            "query_string": b"x=1"}) == "http://u/v1/echo/a%20b?x=1"


def raw_request(live: LiveServer, request: bytes) -> tuple[int, bytes, bytes]:
    """One request written byte for byte (no client normalises the path), over TLS."""
    port = int(live.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            live.ssl_context().wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(request)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.lower(), body


def test_a_body_over_the_route_limit_is_413(live: LiveServer):
    with live.http() as http:
        declared = http.post("/pub/echo", content=b"x" * 1_000_001)
        assert_problem(declared, 413)

        def chunked() -> Iterator[bytes]:
            for _ in range(20):
                yield b"y" * 100_000

        streamed = http.post("/pub/sink", content=chunked())
        assert_problem(streamed, 413)


# --- the principal ---------------------------------------------------------------------------

def test_forged_principal_header_is_stripped(live: LiveServer, admin_token: str):
    with live.http() as http:
        public = http.get("/pub/echo", headers={"X-Bastion-Principal": "forged"})
        assert "x-bastion-principal" not in headers_of(public.json())
        authed = http.get("/api/inventory/echo/item-1", headers={
            "Authorization": f"Bearer {admin_token}", "x-bastion-principal": "forged"})
    assert authed.status_code == 200, authed.text
    seen = headers_of(authed.json())
    assert len(seen["x-bastion-principal"]) == 1
    assert seen["x-bastion-principal"][0] != "forged"
    assert "authorization" not in seen  # Bastion's access token stays at the edge


def test_upstream_verifies_the_principal_jwt_with_bastions_jwks(live: LiveServer,
                                                                upstream: Upstream,
                                                                admin_token: str):
    with live.http() as http:
        r = http.get("/api/inventory/echo/item-7", headers={
            "Authorization": f"Bearer {admin_token}"})
        assert r.status_code == 200, r.text
        jwks = KeySet.import_key_set(http.get("/jwks.json").json())
    assertion = headers_of(r.json())["x-bastion-principal"][0]
    # what an upstream does: verify the signature with the JWKS, then the claims
    token = jwt.decode(assertion, jwks, algorithms=["ES256", "RS256", "EdDSA"])
    assert token.header["typ"] == "bastion-principal+jwt"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": live.url},
        aud={"essential": True, "value": f"{upstream.url}/v1"},
        exp={"essential": True}, sub={"essential": True}).validate(token.claims)
    claims = token.claims
    assert claims["exp"] - claims["iat"] == 60
    assert claims["principal_arn"].startswith("arn:bastion:iam::")
    assert claims["scope"] == "bastion:admin"
    assert claims["request_id"] == r.headers["x-request-id"]
    # the assertion is no access token: Bastion's own API refuses it
    with live.http() as http:
        refused = http.get("/orders", headers={"Authorization": f"Bearer {assertion}"})
    assert refused.status_code == 401


def test_allowed_proxied_requests_are_audited(live: LiveServer, admin_token: str):
    with live.http() as http:
        r = http.get("/api/inventory/echo/item-9", headers={
            "Authorization": f"Bearer {admin_token}"})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    with sqlite3.connect(f"file:{live.data_dir / 'bastion.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT event_name, body FROM audit_events WHERE request_id = ?",
                          (rid,)).fetchall()
    assert [name for name, _ in rows] == ["ProxyRequest"]
    record = json.loads(rows[0][1])
    assert record["requestParameters"]["route"] == "inventory"
    assert record["resources"][0]["ARN"].endswith(":item/echo/item-9")
    assert record["additionalEventData"]["decision"]["allowed"] is True


# --- refusals ------------------------------------------------------------------------------

def test_auth_required_route_without_token_is_401(live: LiveServer):
    with live.http() as http:
        missing = http.get("/api/inventory/echo/x")
        bad = http.get("/api/inventory/echo/x", headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert bad.status_code == 401
    assert "invalid_token" in bad.headers["www-authenticate"]


def test_iam_deny_is_403_and_audited(live: LiveServer, reader_token: str):
    with live.http() as http:
        r = http.get("/api/inventory/echo/x", headers={"Authorization": f"Bearer {reader_token}"})
    assert r.status_code == 403, r.text
    assert "inventory:GetItem" in r.json()["error_description"]
    with sqlite3.connect(f"file:{live.data_dir / 'bastion.db'}?mode=ro", uri=True) as db:
        names = [n for (n,) in db.execute(
            "SELECT event_name FROM audit_events WHERE request_id = ?",
            (r.headers["x-request-id"],))]
    assert names == ["AccessDenied"]


def test_dead_upstream_is_502_without_internals(live: LiveServer):
    with live.http() as http:
        r = http.get("/dead/anything")
    body = assert_problem(r, 502)
    assert body["detail"] == "the upstream could not be reached"
    assert "127.0.0.1" not in r.text and "Connect" not in r.text


@pytest.mark.parametrize("path", ["/smuggle/cl-te", "/smuggle/two-lengths"])
def test_an_upstream_framing_a_response_two_ways_is_502(live: LiveServer, path: str):
    """RFC 9112 §6.3, §11.2: a response an intermediary could read two ways is refused."""
    with live.http() as http:
        body = assert_problem(http.get(path), 502)
    assert "smuggle" not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)


def test_bytes_after_an_upstream_response_never_answer_another_request(
        live: LiveServer, smuggler: Smuggler):
    with live.http() as http:
        r = http.get("/smuggle/extra")
        assert (r.status_code, r.content) == (200, b"ok")
        for _ in range(5):
            r = http.get("/smuggle/honest")
            assert (r.status_code, r.content) == (200, b"honest")


def test_upstream_connections_are_kept_alive(live: LiveServer, smuggler: Smuggler):
    with live.http() as http:
        http.get("/smuggle/honest")
        before = smuggler.connections
        for _ in range(20):
            assert http.get("/smuggle/honest").content == b"honest"
    assert smuggler.connections - before <= 1


def test_slow_upstream_is_504(live: LiveServer):
    with live.http() as http:
        start = time.monotonic()
        r = http.get("/slow/slow?s=5")
        took = time.monotonic() - start
    body = assert_problem(r, 504)
    assert body["detail"] == "the upstream did not answer in time"
    assert took < 4


def test_route_rate_limit_is_429_with_ratelimit_headers(live: LiveServer):
    with live.http() as http:
        codes = [http.get("/limited/echo").status_code for _ in range(5)]
        last = http.get("/limited/echo")
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    assert last.status_code == 429
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["ratelimit-policy"] == '"limited-tight";q=1;w=60;bastion-burst=3'


def test_route_sliding_window_limit(live: LiveServer):
    with live.http() as http:
        codes = [http.get("/windowed/echo").status_code for _ in range(4)]
        last = http.get("/windowed/echo")
    assert codes == [200, 200, 429, 429]
    assert last.headers["ratelimit-policy"] == '"windowed-w";q=2;w=60'
    assert int(last.headers["retry-after"]) >= 1
    assert_problem(last, 429)


def test_route_rate_limit_per_principal(live: LiveServer, admin_token: str):
    other = client_token(live, "proxy-admin-2", "bastion:admin", "admin")
    with live.http() as http:
        def get(token: str | None) -> int:
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            return http.get("/pp/echo", headers=auth).status_code

        assert [get(admin_token) for _ in range(3)] == [200, 200, 429]
        assert get(other) == 200  # the same IP, another principal: its own bucket
        assert get(None) == 401  # counted only once authenticated
        refused = http.get("/pp/echo", headers={"Authorization": f"Bearer {admin_token}"})
    assert refused.headers["ratelimit-policy"] == '"per-principal-p";q=1;w=60;bastion-burst=2'
    assert_problem(refused, 429)


def test_host_routes_and_bastions_own_endpoints_first(live: LiveServer):
    with live.http() as http:
        def get(path: str, host: str) -> httpx.Response:
            return http.get(path, headers={"Host": host})

        proxied = get("/echo/z", "api.shadow.test:443")
        assert proxied.status_code == 200 and proxied.json()["path"] == "/v1/echo/z"
        assert get("/echo/z", "API.Shadow.Test").status_code == 200  # case-insensitive
        assert get("/healthz", "api.shadow.test").json()["status"] == "ok"  # Bastion's
        assert get("/echo/z", "shadow.test").status_code == 404  # *. needs a label
        assert get("/echo/z", "evilshadow.test").status_code == 404
        assert http.get("/nowhere").status_code == 404


# --- configuration ---------------------------------------------------------------------------

BASE = {"name": "r", "path_prefix": "/api", "upstream": "http://127.0.0.1:9000",
        "auth": "none"}


@pytest.mark.parametrize(("over", "message"), [
    ({"upstream": "ftp://127.0.0.1/"}, "upstream must be an http:// or https:// URL"),
    ({"upstream": "http://u:p@127.0.0.1/"}, "must not carry user info"),
    ({"upstream": "http://@127.0.0.1/"}, "must not carry user info"),
    ({"upstream": "http://127.0.0.1/?a=1"}, "must not have a query or fragment"),
    ({"upstream": "http://127.0.0.1/#f"}, "must not have a query or fragment"),
    ({"upstream": "http://127.0.0.1:99999/"}, "not a valid URL"),
    ({"upstream": "http:///x"}, "must name a host"),
    ({"upstream": "http://127.0.0.1/a/../b"}, ". or .. segments"),
    ({"path_prefix": "api"}, "absolute path"),
    ({"path_prefix": "/a/../b"}, "empty, . or .. segments"),
    ({"path_prefix": "/a%2fb"}, "no percent-encoding"),
    ({"path_prefix": None}, "give path_prefix, host or both"),
    ({"host": "exa mple.com"}, "host must be a DNS name"),
    ({"host": "example.com:443"}, "host must be a DNS name"),
    ({"name": "Bad Name"}, "route name"),
    ({"auth": "required"}, "needs the IAM action"),
    ({"action": "inventory:GetItem"}, "action and scope need auth = required"),
    ({"auth": "required", "action": "inventory:*"}, "no wildcards"),
    ({"auth": "required", "action": "x:Y", "resource": "arn:x:{secret}"},
     "may use only {account}"),
    ({"auth": "required", "action": "x:Y", "resource": "arn:x:{path!r}"}, "format spec"),
    ({"auth": "required", "action": "x:Y", "resource": "arn:x:{path"}, "unbalanced"),
    ({"auth": "required", "action": "x:Y", "resource": "urn:x"}, "ARN template"),
    ({"strip_prefix": True, "path_prefix": None, "host": "a.example"},
     "strip_prefix needs path_prefix"),
    ({"timeout": 0}, "greater than 0"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
    ({"rate_limits": [{"name": "x", "rate": 1, "period": 1, "burst": 1},
                      {"name": "x", "rate": 2, "period": 1, "burst": 1}]},
     "rate limit names must be unique"),
    ({"rate_limits": [{"name": "x", "rate": 2_000_000, "period": 1, "burst": 1}]},
     "rate too high"),
    ({"rate_limits": [{"name": "x", "rate": 1, "period": 1, "burst": 1, "key": "principal"}]},
     "needs auth = required"),
    ({"name": "a" * 30, "rate_limits": [{"name": "limit", "rate": 1, "period": 1, "burst": 1}]},
     "rate limit name"),
    ({"rate_limits": [{"name": "x", "rate": 1, "period": 1}]}, "gcra needs a burst"),
    ({"rate_limits": [{"name": "x", "rate": 5, "period": 1, "burst": 2,
                       "algorithm": "sliding_window"}]}, "burst does not apply"),
    ({"rate_limits": [{"name": "x", "rate": 5, "period": 1, "algorithm": "leaky"}]},
     "algorithm"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_routes_are_refused_with_a_clear_message(tmp_path, monkeypatch, over, message):
    route = {k: v for k, v in {**BASE, **over}.items() if v is not None}
    config = tmp_path / "bastion.toml"
    config.write_text(toml_routes([route]))
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path)
    assert "routes.0" in str(err.value)
    assert message in str(err.value)


def test_duplicate_routes_are_refused(tmp_path, monkeypatch):
    config = tmp_path / "bastion.toml"
    config.write_text(toml_routes([BASE, {**BASE, "path_prefix": "/other"}]))
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    with pytest.raises(ConfigError, match="route names must be unique: r appears twice"):
        load_settings(data_dir=tmp_path)
    config.write_text(toml_routes([BASE, {**BASE, "name": "s"}]))
    with pytest.raises(ConfigError, match="same host and path_prefix"):
        load_settings(data_dir=tmp_path)


def test_serve_refuses_a_bad_route_before_starting(tmp_path):
    config = tmp_path / "bastion.toml"
    config.write_text(toml_routes([{**BASE, "upstream": "http://admin:hunter2@10.0.0.1/"}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_CONFIG"] = str(config)
    out = subprocess.run([BASTION, "serve", "--data-dir", str(tmp_path / "d"), "--dev",
                          "--port", str(free_port())], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert out.returncode == 2
    assert "routes.0.upstream" in out.stderr and "user info" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans are spelled alike


def toml_routes(routes: list[dict[str, Any]]) -> str:
    lines = []
    for route in routes:
        lines.append("[[routes]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in route.items()]
    return "\n".join(lines) + "\n"
