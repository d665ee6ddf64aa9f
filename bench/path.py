#!/usr/bin/env python3
"""The cost of each layer on a protected request (issue 13, item 1).

``GET /orders`` with a valid JWT, driven in-process straight into the ASGI app (no sockets,
no TLS, no HTTP parsing: those are the server's and are measured by bench/run.py), one
request at a time, on SQLite as ``bastion serve`` ships. The app is built up one layer at a
time, in the order a request meets them from the inside out:

    handler       the Orders handler alone (the principal resolved once, beforehand)
    + authn, IAM  bearer verification (signature, claims, denylist) and the IAM decision
    + context     request id, client IP, access log, the audit request context
    + metrics     the Prometheus middleware
    + shed        in-flight cap and queue
    + limits      the default rate-limit rules
    + WAF         the web application firewall (block, paranoia 1)
    + challenge   the under-attack check (auto) = the app `bastion serve` runs

Each row is the process CPU per request (all threads: the audit writer's commits included)
and what the layer added; then a cProfile breakdown of the full app by package (main thread
only). Figures go to bench/RESULTS.md with the commit.

    .venv/bin/python bench/path.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.routing import Route  # noqa: E402

from bastion.app import (  # noqa: E402
    build_app,
    close_app,
    edge_context,
    load_shedding,
    rate_limits,
    under_attack,
    web_firewall,
)
from bastion.config import Settings  # noqa: E402
from bastion.edge.authz import Guard, subject_of  # noqa: E402
from bastion.edge.metrics import Metrics, MetricsMiddleware  # noqa: E402
from bastion.orders import api as orders_api  # noqa: E402
from bastion.orders.sealing import OrderSealer  # noqa: E402
from bastion.runtime import open_provider  # noqa: E402

GROUPS = (("bastion/edge/waf", "WAF"), ("bastion/edge/ratelimit", "rate limits"),
          ("bastion/edge/shed", "shed"), ("bastion/edge/metrics", "metrics"),
          ("bastion/edge/request", "context"), ("bastion/edge/authz", "IAM (guard)"),
          ("bastion/iam", "IAM"), ("bastion/tokens", "authn (JWT)"),
          ("bastion/audit", "audit"), ("bastion/store", "store"),
          ("bastion/orders", "handler"), ("bastion/edge", "edge, other"),
          ("bastion/", "bastion, other"), ("starlette", "starlette"),
          ("prometheus_client", "metrics"), ("joserfc", "authn (JWT)"),
          ("cryptography", "authn (JWT)"), ("asyncio", "event loop"),
          ("sqlite3", "store"))


class Prepared:
    """Puts what the guard would leave in the scope, so the handler runs alone."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {}).update(self.state)
        await self.app(scope, receive, send)


async def request(app: Any, token: str) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "https", "path": "/orders", "raw_path": b"/orders",
             "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost:8443"), (b"accept", b"application/json"),
                         (b"user-agent", b"bench-path/1"),
                         (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8443)}
    await app(scope, receive, send)
    return status


async def measure(app: Any, token: str, n: int) -> tuple[float, float]:
    for _ in range(min(300, n)):
        assert await request(app, token) == 200
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await request(app, token)
    return ((time.process_time() - c0) / n * 1e6, (time.perf_counter() - w0) / n * 1e6)


async def token_for(p: Any) -> str:
    from bastion.identity.clients import create_client

    async with p.sessions.begin() as db:
        client, _ = await create_client(
            db, p.wrapper, name="bench", redirect_uris=[], grant_types=["client_credentials"],
            scopes=["order:view"], roles=["order:view"])
    return p.tokens.access_token(
        subject=client.client_id, client_id=client.client_id, audience=p.api_audience,
        scope="order:view", ttl=3600, roles=["order:view"],
        extra={"principal_arn": f"arn:bastion:iam::{p.settings.account_id}:client/"
                                f"{client.client_id}"}).token


def by_group(stats: pstats.Stats, n: int) -> list[tuple[str, float]]:
    out: dict[str, float] = defaultdict(float)
    for (filename, _line, _fn), (_cc, _nc, tottime, _ct, _callers) in \
            stats.stats.items():  # type: ignore[attr-defined]
        if filename == "~" and ("poll" in _fn or "select" in _fn or "acquire" in _fn):
            group = "waiting (idle)"  # the loop waiting for the audit writer's commit
        elif filename == "~":
            group = "builtins (C)"
        else:
            group = next((g for key, g in GROUPS if key in filename), "other")
        out[group] += tottime
    return sorted(((g, t / n * 1e6) for g, t in out.items()), key=lambda x: -x[1])


async def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-path-"))
    settings = Settings(data_dir=tmp / "data", issuer="https://localhost:8443",
                        tls_cert=None, dev=True)
    p = await open_provider(settings)
    try:
        token = await token_for(p)
        verified = await p.verifier.verify(token)
        subject = subject_of(verified, p.iam.account)
        principal = await p.iam.principal(subject)
        orders = orders_api.OrdersAPI(p.fast, p.audit, p.settings.account_id,
                                      OrderSealer(p.kms, p.settings.account_id))
        metrics = Metrics()
        guard = Guard(p.verifier, p.iam, p.audit, metrics)
        handler_only = Prepared(Starlette(routes=[Route("/orders", orders.list_orders)]),
                                {"token": verified, "subject": subject,
                                 "principal": principal})
        layers: list[tuple[str, list[Middleware]]] = [
            ("+ authn, IAM", []),
            ("+ context", [edge_context(p)]),
            ("+ metrics", [Middleware(MetricsMiddleware, metrics=metrics), edge_context(p)]),
        ]
        layers.append(("+ shed", [*layers[-1][1], load_shedding(p)]))
        layers.append(("+ limits", [*layers[-1][1], *rate_limits(p, metrics)]))
        layers.append(("+ WAF", [*layers[-1][1], *web_firewall(p, metrics)]))
        rows: list[tuple[str, float, float]] = [("handler", *await measure(handler_only,
                                                                             token, n))]
        for name, middleware in layers:
            app = Starlette(routes=orders_api.routes(orders, guard), middleware=middleware)
            rows.append((name, *await measure(app, token, n)))
        full = build_app(p)
        assert under_attack(p) is not None
        rows.append(("+ challenge (= serve)", *await measure(full, token, n)))
        print(f"GET /orders, in-process, {n} requests each, SQLite, one at a time")
        print(f"{'layers':<24}{'CPU µs/req':>12}{'added':>10}{'wall µs/req':>14}")
        prev = 0.0
        for name, cpu, wall in rows:
            print(f"{name:<24}{cpu:>12.0f}{cpu - prev:>+10.0f}{wall:>14.0f}")
            prev = cpu
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await request(full, token)
        prof.disable()
        print("\ncProfile of the full app, own time per request by package (main thread):")
        stats = pstats.Stats(prof)
        for group, us in by_group(stats, n):
            if us >= 1:
                print(f"  {group:<18}{us:>8.0f} µs")
        builtins = sorted(((t, fn) for (f, _l, fn), (_c, _n, t, _ct, _cl) in
                           stats.stats.items() if f == "~"),  # type: ignore[attr-defined]
                          reverse=True)[:6]
        print("  the largest C calls: " + ", ".join(
            f"{fn[:48]} {t / n * 1e6:.0f} µs" for t, fn in builtins))
        await close_app(full)
    finally:
        await p.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    asyncio.run(main(parser.parse_args().requests))
