"""Load shedding: a cap on requests in flight with a short, bounded queue, so that overload
degrades (some clients get a quick ``503``) instead of collapsing (everyone times out).

    Shed(app, max_in_flight=256, queue_size=256, queue_timeout=1.0, audit=trail)

A request takes a slot if one is free; otherwise it waits, first come first served, for at
most ``queue_timeout`` seconds among at most ``queue_size`` others; otherwise (queue full,
or the wait ran out) it is answered ``503 Service Unavailable`` with ``Retry-After`` and an
RFC 9457 problem body whose ``instance`` names the request id. A slot is held until the
response is complete or the application returns. Refusals are counted in
:class:`~bastion.edge.counters.EdgeCounters` and audited in aggregate (``LoadShed``: the
first of each second at once, with its request id; the others summed).

``exempt`` paths (default ``/healthz``) bypass the cap: a load balancer's health check must
keep seeing a live process while it is busy, or it takes every busy instance out of
rotation and turns overload into an outage; it is cheap (no I/O). Overload shows in the
counters instead. Place ``Shed`` right after ``RequestContext``, before anything costly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.edge.counters import COUNTERS, AuditSink, EdgeCounters
from bastion.edge.problem import MEDIA_TYPE, problem_body

log = logging.getLogger("bastion.edge.shed")


class Shed:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, queue_size: int = 0,
                 queue_timeout: float = 0.0, retry_after: int = 1,
                 exempt: Sequence[str] = ("/healthz",), audit: AuditSink | None = None,
                 counters: EdgeCounters | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if queue_size < 0 or queue_timeout < 0:
            raise ValueError("queue_size and queue_timeout must be >= 0")
        if retry_after < 1:
            raise ValueError("retry_after must be >= 1")
        if not all(p.startswith("/") for p in exempt):
            raise ValueError("exempt paths must be absolute")
        self.app = app
        self.max_in_flight = max_in_flight
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after
        self.exempt = frozenset(exempt)
        self.counters = counters or COUNTERS
        if audit is not None:
            self.counters.attach_audit(audit)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if not await self._acquire():
            await self._shed(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    async def _acquire(self) -> bool:
        if self.in_flight < self.max_in_flight and not self._waiters:
            self._take()
            return True
        if len(self._waiters) >= self.queue_size or self.queue_timeout <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.counters.queued += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter  # _release hands the slot over: in_flight already counts it
            return True
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # handed over as the time ran out: ours
            return False
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed over, then cancelled: pass it on
            raise
        finally:
            self.counters.queued -= 1
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def _take(self) -> None:
        self.in_flight += 1
        self.counters.in_flight += 1

    def _release(self) -> None:
        while self._waiters:  # hand the slot to the oldest waiter still waiting
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1
        self.counters.in_flight -= 1

    async def _shed(self, scope: Scope, send: Send) -> None:
        state = scope.get("state", {})
        source = state.get("client_ip")
        if source is None and scope.get("client"):
            source = str(scope["client"][0])
        first = not self.counters.in_window("shed", "overloaded")
        log.log(logging.INFO if first else logging.DEBUG,
                "shed %s %s from %s: %d in flight, %d queued", scope["method"],
                scope["path"][:200], source or "-", self.in_flight, len(self._waiters))
        await self.counters.refused_request("shed", "overloaded", source,
                                            method=scope["method"], path=scope["path"][:200])
        body = problem_body(503, "the service is overloaded; retry later")
        request_id = state.get("request_id")
        if "instance" not in body and request_id:
            body["instance"] = f"urn:bastion:request:{request_id}"
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", MEDIA_TYPE.encode()),
                                (b"content-length", str(len(data)).encode()),
                                (b"cache-control", b"no-store"),
                                (b"retry-after", str(self.retry_after).encode())]})
        await send({"type": "http.response.body", "body": data})
