"""Audit records of requests refused before anyone was authenticated, with a budget.

A request whose SigV4 signature does not verify (unknown key, wrong secret, expired session,
clock skew, a replay) costs its sender nothing, yet each refusal is worth a record
(CloudTrail records them with ``errorCode``). One durable write per refusal would let a
flood of garbage become a flood of audit writes, so the records are budgeted:

* per source (an IPv4 address, an IPv6 /64: one host owns a whole /64) a token bucket of
  ``per_source_burst`` records, refilled at ``per_source_rate`` a second;
* across all sources one bucket of ``burst`` records, refilled at ``rate`` a second.

A refusal beyond either is counted, not written. Within ``summary_every`` seconds of the
first one counted, a single summary record is written (``errorCode`` ``Throttled``, the
suppressed count, the busiest ``SUMMARY_SOURCES`` sources with their counts per error code,
and how many others), and one at shutdown with what is counted then (``close``). The next
record written for a source carries ``suppressedBefore``. So refusal records number at most
``burst + rate * t + t / summary_every + 1`` in ``t`` seconds, whatever the request rate;
the summaries keep the counts, so nothing is hidden. Counting costs memory bounded by
``max_sources`` (least recently refused sources are folded into one "other sources" count).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cachetools import LRUCache

log = logging.getLogger("bastion.kms")
SUMMARY_SOURCES = 20
MAX_CODES = 16  # error codes counted per source (names come from a fixed set; a cap anyway)
THROTTLED = "Throttled"  # audit/events.py's errorCode for an outcome that was throttled


class Recorder(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


def source_key(ip: str | None) -> str:
    """The bucket of an address: itself for IPv4, its /64 for IPv6, ``unknown`` when the
    edge gave none."""
    if not ip:
        return "unknown"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) \
        else str(addr)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def take(self, now: float, rate: float, burst: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RefusalAudit:
    """Writes ``event`` records of refused requests within the budget above."""

    def __init__(self, audit: Recorder, *, service: str, per_source_rate: float = 1.0,
                 per_source_burst: int = 30, rate: float = 20.0, burst: int = 100,
                 summary_every: float = 5.0, max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min(per_source_rate, per_source_burst, rate, burst, summary_every,
               max_sources) <= 0:
            raise ValueError("refusal audit budgets must be positive")
        self.audit = audit
        self.service = service
        self.per_source = (per_source_rate, float(per_source_burst))
        self.overall = (rate, float(burst))
        self.summary_every = summary_every
        self.clock = clock
        self._global = _Bucket(float(burst), clock())
        self._sources: LRUCache[str, _Bucket] = LRUCache(max_sources)
        self._pending: dict[str, _Bucket] = {}  # sources with suppressed refusals
        self._others = 0  # suppressed refusals of sources evicted from _pending's cap
        self._flusher: asyncio.Task[None] | None = None
        self._writing = False  # the flusher is past its sleep, writing a summary
        self.suppressed_total = 0  # for tests and metrics

    async def refused(self, event: str, source_ip: str | None, error_code: str,
                      **fields: Any) -> bool:
        """Record one refusal (``fields`` as for ``audit.emit``) or count it; True when a
        record was written."""
        now = self.clock()
        key = source_key(source_ip)
        bucket = self._sources.get(key)
        if bucket is None:
            bucket = _Bucket(self.per_source[1], now)
            self._sources[key] = bucket
        # the source's token first: one source's flood must not spend the others' budget
        if bucket.take(now, *self.per_source) and self._global.take(now, *self.overall):
            if bucket.suppressed:
                extra = dict(fields.get("additional") or {})
                extra["suppressedBefore"] = bucket.suppressed
                fields["additional"] = extra
                bucket.suppressed = 0
                bucket.codes = {}
            await self.audit.emit(event, error_code=error_code, **fields)
            return True
        self._count(key, bucket, error_code)
        return False

    def _count(self, key: str, bucket: _Bucket, error_code: str) -> None:
        self.suppressed_total += 1
        bucket.suppressed += 1
        if error_code in bucket.codes or len(bucket.codes) < MAX_CODES:
            bucket.codes[error_code] = bucket.codes.get(error_code, 0) + 1
        if key not in self._pending:
            if len(self._pending) >= self._sources.maxsize:
                self._others += 1
            else:
                self._pending[key] = bucket
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._summary_later())

    async def _summary_later(self) -> None:
        await asyncio.sleep(self.summary_every)  # close() cancels it here, not later
        self._writing = True
        try:
            await self.write_summary()
        except Exception:  # the trail's own failure policy already reported it
            log.warning("could not write the summary of suppressed %s refusals",
                        self.service, exc_info=True)
        finally:
            self._writing = False

    async def write_summary(self) -> None:
        """One record with the counts suppressed since the last (none when there are none)."""
        pending, others = self._pending, self._others
        self._pending, self._others = {}, 0
        counted = [(k, b.suppressed, dict(b.codes)) for k, b in pending.items()
                   if b.suppressed]
        for _, bucket in pending.items():
            bucket.suppressed, bucket.codes = 0, {}
        total = sum(n for _, n, _ in counted) + others
        if not total:
            return
        counted.sort(key=lambda item: -item[1])
        shown = counted[:SUMMARY_SOURCES]
        rest = sum(n for _, n, _ in counted[SUMMARY_SOURCES:]) + others
        await self.audit.emit(
            "Authenticate", user_identity={"type": "Unknown"}, error_code=THROTTLED,
            error_message=f"{total} refused {self.service} requests were counted, not "
                          "recorded one by one (the refusal audit budget)",
            additional={"service": self.service, "suppressed": total,
                        # a list, not {code: n}: a code such as ExpiredTokenException
                        # is a secret-sounding key the trail's redaction would blank
                        "sources": [{"source": k, "count": n, "errorCodes": [
                            {"errorCode": c, "count": m} for c, m in sorted(codes.items())]}
                                    for k, n, codes in shown],
                        "otherSourcesCount": rest})

    async def close(self) -> None:
        """Write what is counted now (at shutdown: ``app.close_app``, before the audit
        trail closes). A summary the trail refuses is logged at error level, not raised:
        the rest of the shutdown (the trail's own final flush) still runs."""
        task = self._flusher
        if task is not None and not task.done():
            if not self._writing:  # asleep: cancelled (a summary being written completes)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.write_summary()
        except Exception:
            log.error("could not write the summary of suppressed %s refusals at shutdown",
                      self.service, exc_info=True)


__all__ = ["RefusalAudit", "source_key"]
