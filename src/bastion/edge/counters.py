"""Counters of the edge's flood protection (refusals per layer and reason, open connections,
requests in flight and queued) and their aggregated audit records.

    counters = EdgeCounters()
    counters.refused("server", "header_timeout", "192.0.2.1")    # no request exists yet
    await counters.refused_request("shed", "overloaded", "192.0.2.1")  # inside a request

One object is shared by the server protocol (``bastion.edge.server``) and the load shedder
(``bastion.edge.shed``); :data:`COUNTERS` is the process's, which a metrics exporter reads
(like ``prometheus_client``'s default registry). Refusals are audited in aggregate, so a
flood cannot flood the trail: per (layer, reason), the first refusal made inside a request
is recorded at once (with its request id), every other one is counted and written as one
summary record when its ``window`` ends, naming the sources that were refused most.
Connection-level refusals happen before any request exists: they are only summarised.
Logs are bounded the same way: the layers log the first refusal of a window, the window's
end logs one line for the rest.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("bastion.edge.flood")

EVENTS = {"server": "ConnectionRefused", "shed": "LoadShed"}
MAX_SOURCES = 1_000  # distinct sources tallied per summary; the rest go under "*"
TOP_SOURCES = 10  # named in a summary record


class AuditSink(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


def error_code(reason: str) -> str:
    """``header_timeout`` → ``HeaderTimeout`` (the record's errorCode)."""
    return "".join(part.capitalize() for part in reason.split("_"))


@dataclass
class _Window:
    loop: asyncio.AbstractEventLoop
    count: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    timer: asyncio.TimerHandle | None = None


class EdgeCounters:
    """Counts and aggregates the refusals of the server and shedding layers. Gauges
    (``connections``, ``in_flight``, ``queued``) are kept by the layers themselves."""

    def __init__(self, *, window: float = 1.0) -> None:
        if window <= 0:
            raise ValueError("window must be > 0")
        self.window = window
        self.refusals: Counter[tuple[str, str]] = Counter()  # (layer, reason) -> total
        self.connections = 0  # open connections (server layer)
        self.in_flight = 0  # requests being served (shed layer)
        self.queued = 0  # requests waiting for a slot (shed layer)
        self.audit: AuditSink | None = None
        self._open: dict[tuple[str, str], _Window] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def attach_audit(self, audit: AuditSink | None) -> None:
        """Where the aggregated records go (the app's trail, known once it is open)."""
        self.audit = audit

    def in_window(self, layer: str, reason: str) -> bool:
        """Whether refusals of ``reason`` are being summarised now (one was seen less than
        a window ago); the layers log only the first of a window."""
        entry = self._open.get((layer, reason))
        if entry is not None and entry.loop is not asyncio.get_running_loop():
            del self._open[(layer, reason)]  # left by a loop that is gone (tests)
            return False
        return entry is not None

    def refused(self, layer: str, reason: str, source: str | None) -> bool:
        """Count one refusal made outside any request; summarised (logged, audited) at the
        window's end. True for the first of its window (the caller logs that one)."""
        self.refusals[(layer, reason)] += 1
        first = not self.in_window(layer, reason)
        self._pend(layer, reason, source)
        return first

    async def refused_request(self, layer: str, reason: str, source: str | None,
                              **params: Any) -> None:
        """Count one refusal of a request; the first of its window is recorded now (in
        the request's audit context), the others are summarised."""
        self.refusals[(layer, reason)] += 1
        if self.in_window(layer, reason):
            self._pend(layer, reason, source)
            return
        self._window(layer, reason)
        if self.audit is None:
            return
        await self.audit.emit(
            EVENTS[layer], user_identity={"type": "Anonymous"},
            request_parameters={"layer": layer, "reason": reason, **params},
            error_code=error_code(reason), error_message=f"refused: {reason}",
            additional={"refusals": 1, "aggregated": False, "windowSeconds": self.window})

    def _window(self, layer: str, reason: str) -> _Window:
        key = (layer, reason)
        entry = self._open.get(key)
        if entry is None:
            loop = asyncio.get_running_loop()
            entry = self._open[key] = _Window(loop)
            # a fresh context: the summary belongs to no single request
            entry.timer = loop.call_later(
                self.window, self._due, key, context=contextvars.Context())
        return entry

    def _pend(self, layer: str, reason: str, source: str | None) -> None:
        entry = self._window(layer, reason)
        entry.count += 1
        name = source or "-"
        if name in entry.sources or len(entry.sources) < MAX_SOURCES:
            entry.sources[name] += 1
        else:
            entry.sources["*"] += 1

    def _due(self, key: tuple[str, str]) -> None:
        entry = self._open.pop(key, None)
        if entry is None or entry.count == 0:
            return
        task = asyncio.get_running_loop().create_task(self._summary(key, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _summary(self, key: tuple[str, str], entry: _Window) -> None:
        layer, reason = key
        top = dict(entry.sources.most_common(TOP_SOURCES))
        log.warning("%s: %d more refused (%s) in %gs from %d sources; most: %s", layer,
                    entry.count, reason, self.window, len(entry.sources),
                    ", ".join(f"{ip} ({n})" for ip, n in list(top.items())[:3]))
        if self.audit is None:
            return
        try:
            await self.audit.emit(
                EVENTS[layer], user_identity={"type": "Anonymous"},
                request_parameters={"layer": layer, "reason": reason},
                error_code=error_code(reason),
                error_message=f"refused: {reason} ({entry.count} in {self.window:g}s)",
                request_id=None, source_ip=next(iter(top), None), user_agent=None,
                additional={"refusals": entry.count, "aggregated": True,
                            "windowSeconds": self.window, "sources": top,
                            "distinctSources": len(entry.sources)})
        except Exception:
            log.exception("flood protection: an aggregated audit record could not be written")

    async def flush(self) -> None:
        """Write every pending summary now (shutdown, tests)."""
        for key in list(self._open):
            entry = self._open.pop(key)
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.count:
                await self._summary(key, entry)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


COUNTERS = EdgeCounters()
"""The process's counters: the default of the server protocol and of ``Shed``."""
