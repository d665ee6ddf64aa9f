"""WafMiddleware in a bare Starlette app, over a real socket (uvicorn): block, detect and
off modes, the body replayed to the app, 413/415/400 for what cannot be inspected, fail
closed (or open) on an engine error, audit records with redacted matches."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.edge.request import RequestContext
from bastion.edge.server import ServerLimits
from bastion.edge.waf import HttpRequest, Verdict, Waf, WafConfig
from bastion.edge.waf.middleware import WafMiddleware
from tests.edge.uvicorn_thread import serve

SQLI = "1' OR '1'='1"


class Sink:
    """An audit sink that keeps the records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def emit(self, event_name: str, **fields: Any) -> None:
        self.records.append({"eventName": event_name, **fields})


class BrokenWaf(Waf):
    """A real engine whose inspection fails (an engine bug)."""

    def inspect(self, request: HttpRequest, *, body_limit: int | None = None) -> Verdict:
        raise RuntimeError("engine bug")


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"path": request.url.path, "len": len(body),
                         "sha": __import__("hashlib").sha256(body).hexdigest()})


def app(mode: str = "block", sink: Sink | None = None, waf: Waf | None = None,
        **kw: Any) -> Starlette:
    return Starlette(routes=[Route("/{p:path}", echo, methods=["GET", "POST", "PUT"])],
                     middleware=[Middleware(RequestContext),
                                 Middleware(WafMiddleware, waf=waf or Waf(WafConfig(
                                     body_limit=kw.pop("limit", 65536))),
                                            mode=mode, audit=sink, **kw)])


@pytest.fixture
def live() -> Any:
    def start(application: Any) -> Any:
        return serve(application, ServerLimits())
    return start


def test_block_mode_over_a_real_socket(live: Any) -> None:
    sink = Sink()
    with live(app("block", sink)) as port, httpx.Client(
            base_url=f"http://127.0.0.1:{port}") as c:
        ok = c.get("/products", params={"q": "O'Brien's 12\" skillet"})
        assert ok.status_code == 200
        r = c.get("/anything/unknown", params={"id": SQLI})
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["instance"] == f"urn:bastion:request:{r.headers['x-request-id']}"
        assert "sqli" not in r.text and "110" not in r.text  # no rule detail
        attack = c.post("/x", content=json.dumps({"a": {"b": ["<script>alert(1)</script>"]}}),
                        headers={"content-type": "application/json"})
        assert attack.status_code == 403
        hdr = c.get("/", headers={"x-anything": "${jndi:ldap://e/a}"})
        assert hdr.status_code == 403
    blocks = [r for r in sink.records if r["eventName"] == "WafBlock"]
    assert len(blocks) == 3
    params = blocks[0]["request_parameters"]
    assert params["score"] >= 5 and params["mode"] == "block"
    assert {x["family"] for x in params["rules"]} == {"sqli"}
    assert all(x["location"] == "ARGS:id" for x in params["rules"])
    assert blocks[0]["error_code"] == "AnomalyScoreExceeded"


def test_the_inspected_body_is_replayed_to_the_app(live: Any) -> None:
    payload = json.dumps({"items": [{"n": i, "note": "a" * 50} for i in range(500)]}).encode()
    with live(app(limit=65536)) as port, httpx.Client(
            base_url=f"http://127.0.0.1:{port}") as c:
        def chunks() -> Any:
            for i in range(0, len(payload), 1000):
                yield payload[i:i + 1000]
        r = c.post("/x", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 200
        assert r.json()["len"] == len(payload)
        assert r.json()["sha"] == __import__("hashlib").sha256(payload).hexdigest()


def test_detect_mode_passes_and_audits(live: Any) -> None:
    sink = Sink()
    with live(app("detect", sink)) as port, httpx.Client(
            base_url=f"http://127.0.0.1:{port}") as c:
        assert c.get("/", params={"q": SQLI}).status_code == 200
    assert [r["eventName"] for r in sink.records] == ["WafMatch"]


def test_off_mode_does_nothing() -> None:
    sink = Sink()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app("off", sink)),
                               base_url="http://t")

    async def go() -> int:
        async with client:
            return (await client.get("/", params={"q": SQLI})).status_code
    assert asyncio.run(go()) == 200 and sink.records == []


def test_a_body_past_the_limit_is_refused_unless_the_path_opts_out(live: Any) -> None:
    sink = Sink()
    big = b"a=" + b"x" * 5000
    form = {"content-type": "application/x-www-form-urlencoded"}
    with live(app(sink=sink, limit=4096, unlimited_paths=["/upload"])) as port, httpx.Client(
            base_url=f"http://127.0.0.1:{port}") as c:
        r = c.post("/x", content=big, headers=form)
        assert r.status_code == 413 and r.json()["status"] == 413
        up = c.post("/upload/file", content=big, headers=form)
        assert up.status_code == 200 and up.json()["len"] == len(big)
        head = c.post("/upload/file", content=big, headers={**form, "x-a": SQLI})
        assert head.status_code == 403  # its head is still inspected
    assert sink.records[0]["error_code"] == "BodyTooLarge"


def test_compressed_bodies(live: Any) -> None:
    with live(app(limit=65536)) as port, httpx.Client(
            base_url=f"http://127.0.0.1:{port}") as c:
        j = {"content-type": "application/json"}
        ok = gzip.compress(json.dumps({"q": "hello"}).encode())
        assert c.post("/x", content=ok, headers={**j, "content-encoding": "gzip"}
                      ).status_code == 200
        bad = gzip.compress(json.dumps({"q": SQLI}).encode())
        assert c.post("/x", content=bad, headers={**j, "content-encoding": "gzip"}
                      ).status_code == 403
        bomb = gzip.compress(b" " * (20 * 1024 ** 2))
        assert c.post("/x", content=bomb, headers={**j, "content-encoding": "gzip"}
                      ).status_code == 413
        assert c.post("/x", content=b"x", headers={"content-encoding": "br"}
                      ).status_code == 415


def test_broken_multipart_and_deep_json_get_400(live: Any) -> None:
    with live(app()) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        r = c.post("/x", content=b"--B\r\nbroken", headers={
            "content-type": "multipart/form-data; boundary=B"})
        assert r.status_code == 400 and "multipart" in r.json()["detail"]
        r = c.post("/x", content=b"[" * 5000 + b"]" * 5000,
                   headers={"content-type": "application/json"})
        assert r.status_code == 400


def test_raw_smuggling_attempt_over_the_socket(live: Any) -> None:
    with live(app()) as port:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                  b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n")
        data = s.recv(4096)
        s.close()
    assert data.split(b" ", 2)[1] in (b"400", b"403")  # the server or the WAF refuses


def test_engine_errors_fail_closed_or_open(live: Any) -> None:
    for fail_open, status in ((False, 503), (True, 200)):
        sink = Sink()
        broken = BrokenWaf(WafConfig())
        with live(app(sink=sink, waf=broken, fail_open=fail_open)) as port, httpx.Client(
                base_url=f"http://127.0.0.1:{port}") as c:
            r = c.get("/x")
            assert r.status_code == status
            if status == 503:
                assert r.json()["instance"].endswith(r.headers["x-request-id"])
                assert "engine bug" not in r.text
        assert sink.records[0]["eventName"] == "WafBlock"
        assert sink.records[0]["error_code"] == "EngineError"


def test_websocket_and_lifespan_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    mw = WafMiddleware(inner, waf=Waf(WafConfig()))
    asyncio.run(mw({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    asyncio.run(mw({"type": "websocket"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"mode": "panic"}, "mode"), ({"unlimited_paths": ["upload"]}, "absolute"),
])
def test_bad_options_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WafMiddleware(echo, waf=Waf(WafConfig()), **kw)
    with pytest.raises(TypeError):
        WafMiddleware(echo, waf="not a waf")  # type: ignore[arg-type]
