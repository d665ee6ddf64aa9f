"""Load shedding over a real socket: a burst of slow handlers fills the slots and the queue,
the rest get 503 with Retry-After and a problem body naming the request id; queued requests
are served when slots free up or shed when their wait runs out; /healthz passes; slots are
never leaked (clients that give up, handlers that fail); refusals are counted and audited
in aggregate. And Bastion's app has the shedder in the right place."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.edge.counters import EdgeCounters
from bastion.edge.request import RequestContext
from bastion.edge.shed import Shed
from tests.edge.uvicorn_thread import served as uvicorn_served

pytestmark = pytest.mark.anyio


class Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def emit(self, event_name: str, **fields: Any) -> None:
        self.records.append({"eventName": event_name, **fields})


class Slow:
    """Handlers that wait for ``release``; ``started`` counts those running."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def wait(self, request: Request) -> Response:
        self.started += 1
        await self.release.wait()
        return PlainTextResponse("done")

    async def boom(self, request: Request) -> Response:
        raise RuntimeError("handler failed")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def make_app(slow: Slow, **shed: Any) -> Starlette:
    return Starlette(routes=[Route("/slow", slow.wait), Route("/boom", slow.boom),
                             Route("/healthz", healthz)],
                     middleware=[Middleware(RequestContext), Middleware(Shed, **shed)])


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with uvicorn_served(app) as base:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:
            yield client


async def until(condition: Any, within: float = 5.0) -> None:
    """Poll a counter of the server under test (it has no event to wait on)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_burst_beyond_slots_and_queue_is_shed_with_503() -> None:
    slow, counters, sink = Slow(), EdgeCounters(window=60), Sink()
    app = make_app(slow, max_in_flight=2, queue_size=2, queue_timeout=5, audit=sink,
                   counters=counters)
    async with served(app) as c:
        burst = [asyncio.create_task(c.get("/slow")) for _ in range(4)]
        await until(lambda: slow.started == 2 and counters.queued == 2)
        shed = await asyncio.gather(*(c.get("/slow") for _ in range(3)))
        health = await c.get("/healthz")  # exempt: answers while everything is busy
        slow.release.set()
        served_ = await asyncio.gather(*burst)
    assert [r.status_code for r in served_] == [200] * 4  # the queued two were served too
    assert health.status_code == 200
    for r in shed:
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == 503 and body["title"] == "Service Unavailable"
        assert body["instance"] == f"urn:bastion:request:{r.headers['x-request-id']}"
    assert counters.refusals[("shed", "overloaded")] == 3
    assert counters.in_flight == 0 and counters.queued == 0
    # the first refusal is recorded at once, with its request id; the others are counted
    assert len(sink.records) == 1
    first = sink.records[0]
    assert first["eventName"] == "LoadShed" and first["error_code"] == "Overloaded"
    assert first["request_parameters"]["path"] == "/slow"
    await counters.flush()
    assert [r["additional"]["refusals"] for r in sink.records] == [1, 2]
    assert sink.records[1]["additional"]["aggregated"] is True
    assert sink.records[1]["source_ip"] == "127.0.0.1"


async def test_a_queued_request_is_shed_when_its_wait_runs_out() -> None:
    slow, counters = Slow(), EdgeCounters()
    app = make_app(slow, max_in_flight=1, queue_size=5, queue_timeout=0.3, counters=counters)
    async with served(app) as c:
        first = asyncio.create_task(c.get("/slow"))
        await until(lambda: slow.started == 1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        waited = await c.get("/slow")
        took = loop.time() - start
        slow.release.set()
        assert (await first).status_code == 200
    assert waited.status_code == 503
    assert 0.2 < took < 5
    assert counters.in_flight == 0 and counters.queued == 0


async def test_slots_are_not_leaked_by_failing_handlers_or_clients_that_give_up() -> None:
    slow, counters = Slow(), EdgeCounters()
    shed = {"max_in_flight": 1, "queue_size": 3, "queue_timeout": 5, "counters": counters}
    async with served(make_app(slow, **shed)) as c:
        assert (await c.get("/boom")).status_code == 500
        holder = asyncio.create_task(c.get("/slow"))
        await until(lambda: slow.started == 1)
        quitters = [asyncio.create_task(c.get("/slow")) for _ in range(3)]
        await until(lambda: counters.queued == 3)
        for q in quitters:
            q.cancel()  # the clients give up while queued
        await asyncio.gather(*quitters, return_exceptions=True)
        slow.release.set()
        assert (await holder).status_code == 200
        await until(lambda: counters.in_flight == 0 and counters.queued == 0)
        after = await asyncio.gather(*(c.get("/slow") for _ in range(3)))
    assert [r.status_code for r in after] == [200] * 3


async def test_without_a_queue_the_overflow_is_shed_at_once() -> None:
    slow, counters = Slow(), EdgeCounters()
    async with served(make_app(slow, max_in_flight=1, counters=counters)) as c:
        holder = asyncio.create_task(c.get("/slow"))
        await until(lambda: slow.started == 1)
        r = await c.get("/slow")
        slow.release.set()
        await holder
    assert r.status_code == 503


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_in_flight": 1, "queue_size": -1}, "queue_size"),
    ({"max_in_flight": 1, "retry_after": 0}, "retry_after"),
    ({"max_in_flight": 1, "exempt": ["healthz"]}, "exempt"),
])
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shed(healthz, **kwargs)  # type: ignore[arg-type]


async def test_bastion_sheds_after_the_request_context_and_before_rate_limits(
        provider: Any) -> None:
    from bastion.app import build_app
    from bastion.edge.ratelimit import RateLimit

    app = build_app(provider)
    app.middleware_stack = app.build_middleware_stack()
    chain = []
    node: Any = app.middleware_stack
    while node is not None and len(chain) < 20:
        chain.append(type(node).__name__)
        node = getattr(node, "app", None)
    assert chain.index("RequestContext") < chain.index("Shed") < chain.index(RateLimit.__name__)
