"""Rate limits at the edge: GCRA or a sliding window per rule and client key, in memory or
in Redis.

    RateLimit(app, rules=[Rule("login", ("/login",), rate=30, period=60, burst=10)],
              backend=MemoryBackend(), audit=trail)

GCRA (the generic cell rate algorithm, a token bucket with burst) keeps one number per key,
the *theoretical arrival time* (TAT): the instant the bucket would be full again. With the
emission interval ``T = period / rate``, a request at ``now`` is admitted when
``max(TAT, now) + T - burst * T <= now``, and then ``TAT = max(TAT, now) + T``: ``burst``
requests pass at once, then one every ``T``. All arithmetic is in integer microseconds, so
the memory and Redis backends agree exactly.

A ``sliding_window`` rule counts instead with the two-window approximation of a sliding
log: with the window ``W = period`` cut into fixed windows, a request ``e`` into the current
one is admitted when ``prev * (W - e) / W + cur + 1 <= rate`` (``prev``, ``cur``: the
requests admitted in the previous and the current fixed window; the previous one is weighed
by the share of it still inside the sliding window ending now). Three integers per key, one
decision in O(1), whatever the rate: an exact log would store ``rate`` timestamps per key
(600 per client IP for ``/token``) and cost O(rate) memory and Redis work per decision, for
a precision the approximation only misses when the previous window's requests were not
spread evenly (it assumes they were). Refused requests are not counted, so a flood cannot
lock a key out beyond the window. Again in integer microseconds, both backends agree.

Every admitted or refused response of a limited route carries the header fields of
draft-ietf-httpapi-ratelimit-headers-10 (the structured-field form of drafts -08 onward)::

    RateLimit-Policy: "login";q=30;w=60;bastion-burst=10
    RateLimit: "login";r=9;t=2

``q``/``w`` are the configured rate, ``bastion-burst`` the burst (a vendor parameter, as the
draft recommends for implementation-specific ones; a sliding window has none: up to ``q``
pass at once), ``r`` the requests that may be made at once now and ``t`` the seconds until
the full quota is available again (on a refusal: the same instant as ``Retry-After``, as
the draft says it SHOULD be). A refusal is ``429`` with
``Retry-After`` (whole seconds, at least 1) and a ``RateLimitExceeded`` audit record;
records are aggregated per rule and key: the first refusal of a key is recorded before the
429 leaves, the further ones of the next ``audit_window`` seconds are counted and written
as one record at its end, so a flood writes at most one record per key, rule and window.

Keys are the client IP (``scope["state"]["client_ip"]`` as ``RequestContext`` computed it,
trusted proxies applied; else the connection's peer, ``scope["client"]``) or, for a
``client`` rule, the client id in HTTP Basic credentials (RFC 6749 §2.3.1, form-encoded);
never a forwarding header read here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import unquote_plus

from cachetools import TLRUCache
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.edge.metrics import Refusals
from bastion.edge.problem import MEDIA_TYPE, problem_body

log = logging.getLogger("bastion.edge.ratelimit")

Clock = Callable[[], float]
KeyKind = Literal["ip", "client", "principal"]
BodyStyle = Literal["oauth", "problem", "aws"]
Algorithm = Literal["gcra", "sliding_window"]
FailMode = Literal["fail_open", "fail_closed"]
MAX_CLIENT_ID = 256
US = 1_000_000
EXACT = 2**53  # Redis's Lua numbers are doubles: integers are exact below this


@dataclass(frozen=True)
class Rule:
    """One limit: ``rate`` requests per ``period`` seconds with a burst of ``burst``, for
    requests whose path is one of ``paths`` or below it (``/login`` covers ``/login/mfa``,
    not ``/loginx``) and whose method is in ``methods`` (empty: every method), counted per
    ``key``: the client IP, or the OAuth client id of HTTP Basic credentials, or the
    principal of the verified bearer token (``principal``: only where the middleware runs
    after authentication, e.g. a proxied route's limits); requests without that key are
    not counted by such a rule. ``body``: the shape of the 429 body (``aws``: AWS STS's
    JSON error). ``algorithm``: ``gcra`` (``burst`` at once, then the steady rate) or
    ``sliding_window`` (at most ``rate`` in any ``period``; ``burst`` does not apply: leave
    it unset, or equal to ``rate``)."""

    name: str
    paths: tuple[str, ...]
    rate: int
    period: int
    burst: int = 0
    methods: tuple[str, ...] = ()
    key: KeyKind = "ip"
    body: BodyStyle = "problem"
    algorithm: Algorithm = "gcra"

    def __post_init__(self) -> None:
        if not (0 < len(self.name) <= 32 and all(c.isascii() and (c.isalnum() or c in "-_")
                                                 for c in self.name)):
            raise ValueError(f"rate limit name {self.name!r}: 1-32 of A-Z a-z 0-9 - _")
        if not self.paths or not all(p.startswith("/") and p.isprintable()
                                     for p in self.paths):
            raise ValueError(f"rate limit {self.name}: paths must be absolute, e.g. /token")
        if not all(m.isascii() and m.isalpha() and m.isupper() for m in self.methods):
            raise ValueError(f"rate limit {self.name}: methods are upper-case, e.g. POST")
        if self.key not in ("ip", "client", "principal") or self.body not in (
                "oauth", "problem", "aws"):
            raise ValueError(f"rate limit {self.name}: key is ip|client|principal, body "
                             "oauth|problem|aws")
        if self.algorithm == "sliding_window":
            if self.rate < 1 or self.period < 1:
                raise ValueError(f"rate limit {self.name}: rate and period must be >= 1")
            if self.burst not in (0, self.rate):
                raise ValueError(f"rate limit {self.name}: burst does not apply to a "
                                 "sliding_window (up to rate at once); leave it unset")
            if self.rate * self.period * US >= EXACT:
                raise ValueError(f"rate limit {self.name}: rate * period too large for a "
                                 "sliding_window")
        elif self.algorithm != "gcra":
            raise ValueError(f"rate limit {self.name}: algorithm is gcra|sliding_window")
        elif self.rate < 1 or self.period < 1 or self.burst < 1:
            raise ValueError(f"rate limit {self.name}: rate, period and burst must be >= 1")
        if self.period * US // self.rate < 1:
            raise ValueError(f"rate limit {self.name}: rate too high for its period")

    @property
    def interval_us(self) -> int:
        """GCRA's emission interval T, in microseconds."""
        return self.period * US // self.rate

    @property
    def window_us(self) -> int:
        """The sliding window's length W, in microseconds."""
        return self.period * US

    @property
    def bucket(self) -> str:
        """The key prefix of this rule's buckets: a changed rule starts afresh, and
        instances configured differently never share a bucket."""
        if self.algorithm == "sliding_window":
            return f"{self.name}/sw/{self.rate}/{self.period}"
        return f"{self.name}/{self.rate}/{self.period}/{self.burst}"

    @property
    def policy(self) -> str:
        """This rule's ``RateLimit-Policy`` item."""
        if self.algorithm == "sliding_window":
            return f'"{self.name}";q={self.rate};w={self.period}'
        return f'"{self.name}";q={self.rate};w={self.period};bastion-burst={self.burst}'

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.paths)

    def __str__(self) -> str:
        methods = " " + ",".join(self.methods) if self.methods else ""
        shape = ("sliding window" if self.algorithm == "sliding_window"
                 else f"burst {self.burst}")
        return (f"{self.name}: {','.join(self.paths)}{methods} {self.rate}/{self.period}s "
                f"{shape} per {self.key}")


@dataclass(frozen=True)
class Verdict:
    """A backend's decision. ``remaining``: requests that may be made at once now;
    ``reset``: seconds until the full burst is available; ``retry_after``: seconds until
    a refused request would be admitted (0 when admitted)."""

    allowed: bool
    remaining: int
    reset: float
    retry_after: float


def verdict(allowed: bool, ahead_us: int, interval_us: int, burst: int) -> Verdict:
    """The verdict from GCRA's outcome; ``ahead_us`` is ``TAT - now`` after the decision
    (the new TAT when admitted, the unchanged one when refused)."""
    ahead_us = max(0, ahead_us)
    if allowed:
        remaining = max(0, (burst * interval_us - ahead_us) // interval_us)
        return Verdict(True, remaining, ahead_us / US, 0.0)
    wait = max(0, ahead_us + interval_us - burst * interval_us) / US
    return Verdict(False, 0, wait, wait)


def gcra(tat_us: int | None, now_us: int, interval_us: int, burst: int) -> tuple[bool, int]:
    """One GCRA step: (admitted, the TAT to store; unchanged when refused)."""
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = tat + interval_us
    if now_us < new_tat - burst * interval_us:
        return False, tat
    return True, new_tat


def sliding(state: tuple[int, int, int] | None, now_us: int, window_us: int,
            limit: int) -> tuple[bool, tuple[int, int, int]]:
    """One sliding-window step. ``state``: (start of the current fixed window, requests
    admitted in it, in the one before). Returns (admitted, the state as of ``now_us``, with
    this request counted when admitted); the caller stores it only when admitted."""
    start = now_us - now_us % window_us
    if state is None or state[0] < start - window_us:
        cur = prev = 0
    elif state[0] < start:  # the stored window is now the previous one
        cur, prev = 0, state[1]
    else:
        cur, prev = state[1], state[2]
    elapsed = now_us - start
    if prev * (window_us - elapsed) + (cur + 1) * window_us > limit * window_us:
        return False, (start, cur, prev)
    return True, (start, cur + 1, prev)


def window_verdict(allowed: bool, elapsed_us: int, cur: int, prev: int, window_us: int,
                   limit: int) -> Verdict:
    """The verdict of a sliding-window step, from the state after it (``elapsed_us``: how
    far into its current fixed window). Integer arithmetic: both backends agree."""
    w, e = window_us, elapsed_us
    remaining = max(0, (limit * w - prev * (w - e)) // w - cur)
    if allowed:
        # the full quota is back once the current window's requests have left the sliding
        # window (at the end of the next fixed window), or else the previous window's
        full = 2 * w - e if cur else (w - e if prev else 0)
        return Verdict(True, remaining, full / US, 0.0)
    # the first instant prev * (W - e') + (cur + 1) * W <= limit * W holds: later in this
    # window, or else in the next (where prev' = cur, cur' = 0)
    room = limit - cur - 1
    if room >= 0 and prev:
        wait = w - (room * w) // prev - e
    else:
        wait = w - e + (w - ((limit - 1) * w) // cur if cur else 0)
    wait_s = max(0, wait) / US
    return Verdict(False, 0, wait_s, wait_s)


class BackendUnavailable(Exception):
    """The shared limiter cannot decide and the policy is ``fail_closed`` (answered 503)."""


class Backend(Protocol):
    """Where the counts live. ``take`` is one atomic GCRA step for ``key``, ``window`` one
    sliding-window step: of two concurrent calls, each sees the other's effect (no lost
    updates)."""

    async def take(self, key: str, interval_us: int, burst: int) -> Verdict: ...

    async def window(self, key: str, window_us: int, limit: int) -> Verdict: ...


class MemoryBackend:
    """One process's limiter. Bounded: at most ``max_keys`` keys of each algorithm, each
    dropped once it is full again (a GCRA key once its TAT has passed, a sliding-window key
    once its counts have left the window); beyond the bound the least recently used key
    goes first (it starts again with a full quota). ``clock``: seconds, monotonic."""

    def __init__(self, *, max_keys: int = 100_000, clock: Clock = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._clock = clock
        self._tat: TLRUCache[str, int] = TLRUCache(
            maxsize=max_keys, ttu=lambda _k, tat, _now: tat / US, timer=clock)
        # key -> (start, cur, prev, the instant its counts no longer matter)
        self._windows: TLRUCache[str, tuple[int, int, int, int]] = TLRUCache(
            maxsize=max_keys, ttu=lambda _k, state, _now: state[3] / US, timer=clock)

    def __len__(self) -> int:
        return len(self._tat) + len(self._windows)

    async def window(self, key: str, window_us: int, limit: int) -> Verdict:
        now = round(self._clock() * US)
        stored = self._windows.get(key)
        allowed, (start, cur, prev) = sliding(
            None if stored is None else stored[:3], now, window_us, limit)
        if allowed:
            self._windows[key] = (start, cur, prev, start + 2 * window_us)
        return window_verdict(allowed, now - start, cur, prev, window_us, limit)

    async def take(self, key: str, interval_us: int, burst: int) -> Verdict:
        now = round(self._clock() * US)
        allowed, tat = gcra(self._tat.get(key), now, interval_us, burst)
        if allowed:
            self._tat[key] = tat
        return verdict(allowed, tat - now, interval_us, burst)


# KEYS[1] the bucket; ARGV: interval (µs), burst. The server's clock decides, so instances
# whose clocks disagree still share one limit. Returns {admitted, TAT - now in µs}.
GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
if now < new_tat - burst * interval then
  return {0, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
           math.floor((new_tat - now) / 1000) + 1)
return {1, new_tat - now}
"""


# KEYS[1] the key's hash {s: start of the current fixed window, c: its count, p: the
# previous window's}; ARGV: window (µs), limit. The same step as ``sliding``; every number
# stays below 2^53 (Rule checks rate * period), so Lua's doubles are exact. Returns
# {admitted, µs into the current window, cur, prev}; the state is written only when
# admitted, kept until its counts have left the window.
SLIDING_LUA = """
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local start = now - (now % window)
local s = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local stored, cur, prev = tonumber(s[1]), 0, 0
if stored ~= nil and stored >= start - window then
  if stored < start then
    prev = tonumber(s[2]) or 0
  else
    cur = tonumber(s[2]) or 0
    prev = tonumber(s[3]) or 0
  end
end
local elapsed = now - start
if prev * (window - elapsed) + (cur + 1) * window > limit * window then
  return {0, elapsed, cur, prev}
end
cur = cur + 1
redis.call('HSET', KEYS[1], 's', string.format('%d', start), 'c',
           string.format('%d', cur), 'p', string.format('%d', prev))
redis.call('PEXPIRE', KEYS[1], math.floor((start + 2 * window - now) / 1000) + 1)
return {1, elapsed, cur, prev}
"""


class RedisBackend:
    """The limiter every instance shares: one ``EVALSHA`` per decision (each algorithm's
    script is registered once). When Redis fails, the failure is logged once and counted, decisions
    go to ``fallback`` (``fail_open``, the default) or raise ``BackendUnavailable``
    (``fail_closed``) for ``retry_interval`` seconds, then Redis is tried again."""

    def __init__(self, redis: Redis, *, prefix: str = "bastion:rl:",
                 fallback: MemoryBackend | None = None, fail_mode: FailMode = "fail_open",
                 retry_interval: float = 5.0, timeout: float = 0.5,
                 clock: Clock = time.monotonic) -> None:
        if fail_mode not in ("fail_open", "fail_closed"):
            raise ValueError("fail_mode must be fail_open or fail_closed")
        if retry_interval <= 0 or timeout <= 0:
            raise ValueError("retry_interval and timeout must be > 0")
        self._script = redis.register_script(GCRA_LUA)
        self._sliding = redis.register_script(SLIDING_LUA)
        self._prefix = prefix
        self.fallback = fallback or MemoryBackend(clock=clock)
        self.fail_mode = fail_mode
        self.retry_interval = retry_interval
        self.timeout = timeout
        self._clock = clock
        self._down_until: float | None = None  # set while Redis is considered down
        self.failures = 0  # Redis errors seen
        self.fallback_decisions = 0  # decisions made without Redis

    @property
    def degraded(self) -> bool:
        return self._down_until is not None

    async def take(self, key: str, interval_us: int, burst: int) -> Verdict:
        reply = await self._run(self._script, key, interval_us, burst)
        if reply is None:
            return await self.fallback.take(key, interval_us, burst)
        allowed, ahead = reply
        return verdict(bool(allowed), int(ahead), interval_us, burst)

    async def window(self, key: str, window_us: int, limit: int) -> Verdict:
        reply = await self._run(self._sliding, key, window_us, limit)
        if reply is None:
            return await self.fallback.window(key, window_us, limit)
        allowed, elapsed, cur, prev = reply
        return window_verdict(bool(allowed), int(elapsed), int(cur), int(prev), window_us,
                              limit)

    async def _run(self, script: Any, key: str, *args: int) -> list[Any] | None:
        """One EVALSHA; None when the decision goes to the fallback (``fail_open``)."""
        if self._down_until is None or self._clock() >= self._down_until:
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await script(keys=[self._prefix + key], args=list(args))
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
            else:
                if self._down_until is not None:
                    log.warning("rate limits: Redis is back; shared limits apply again")
                    self._down_until = None
                return list(reply)
        self.fallback_decisions += 1
        if self.fail_mode == "fail_closed":
            raise BackendUnavailable("the shared rate limiter is unavailable")
        return None

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self._down_until is None:  # once per outage
            log.warning("rate limits: Redis failed (%s: %s); %s, retrying every %.0fs",
                        type(exc).__name__, exc,
                        "limiting per instance" if self.fail_mode == "fail_open"
                        else "refusing limited routes (503)", self.retry_interval)
        self._down_until = self._clock() + self.retry_interval


class AuditSink(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


@dataclass
class _Open:
    """A (rule, key) recorded recently: refusals counted since its last record."""
    rule: Rule
    fields: dict[str, Any]
    pending: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class RefusalLog:
    """Aggregates ``RateLimitExceeded`` records: at most one per rule and key per
    ``window`` seconds, each carrying the number of refusals it stands for; at most
    ``max_keys`` keys tracked (refusals of further keys are summed in one record per
    window under the key ``*``)."""

    audit: AuditSink
    window: float = 1.0
    max_keys: int = 10_000
    _open: dict[tuple[str, str], _Open] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def refused(self, rule: Rule, key: str, fields: dict[str, Any]) -> None:
        ident = (rule.name, key)
        entry = self._open.get(ident)
        if entry is not None:
            entry.pending += 1
            return
        if len(self._open) >= self.max_keys:
            ident = (rule.name, "*")
            entry = self._open.get(ident)
            if entry is None:
                entry = self._open[ident] = _Open(rule, {**fields, "source_ip": None})
                self._schedule(ident, entry)
            entry.pending += 1
            return
        entry = self._open[ident] = _Open(rule, fields)
        self._schedule(ident, entry)
        await self._write(rule, fields, 1)

    def _schedule(self, ident: tuple[str, str], entry: _Open) -> None:
        # a fresh context: the summary belongs to no single request
        entry.timer = asyncio.get_running_loop().call_later(
            self.window, self._due, ident, context=contextvars.Context())

    def _due(self, ident: tuple[str, str]) -> None:
        entry = self._open.get(ident)
        if entry is None:
            return
        if entry.pending == 0:
            del self._open[ident]
            return
        count, entry.pending = entry.pending, 0
        self._schedule(ident, entry)
        task = asyncio.get_running_loop().create_task(
            self._write(entry.rule, entry.fields, count, summary=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, rule: Rule, fields: dict[str, Any], count: int, *,
                     summary: bool = False) -> None:
        params = {k: v for k, v in fields.items() if k != "source_ip"}
        extra: dict[str, Any] = {}
        if summary:  # the record of several requests: none of their ids
            extra = {"request_id": None, "source_ip": fields.get("source_ip"),
                     "user_agent": None}
        elif fields.get("source_ip") is not None:
            extra = {"source_ip": fields["source_ip"]}
        try:
            await self.audit.emit(
                "RateLimitExceeded", user_identity={"type": "Anonymous"},
                request_parameters=params, error_code="Throttled",
                error_message=f"rate limit {rule.name} exceeded: {rule.rate} requests per "
                              f"{rule.period}s, burst {rule.burst}",
                additional={"refusals": count, "aggregated": summary,
                            "windowSeconds": self.window}, **extra)
        except Exception:
            if not summary:
                raise  # the request's own record: the edge answers 503 (fail closed)
            log.exception("rate limits: an aggregated audit record could not be written")

    async def flush(self) -> None:
        """Write every pending count now (shutdown, tests) and stop the timers."""
        for ident, entry in list(self._open.items()):
            if entry.timer is not None:
                entry.timer.cancel()
            del self._open[ident]
            if entry.pending:
                await self._write(entry.rule, entry.fields, entry.pending, summary=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def basic_client_id(headers: Headers) -> str | None:
    """The client id of HTTP Basic credentials (form-decoded, RFC 6749 §2.3.1), unverified:
    a rate-limit key only."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic" or not token or len(token) > 4 * MAX_CLIENT_ID:
        return None
    try:
        user = base64.b64decode(token.strip(), validate=True).decode("utf-8").split(":", 1)[0]
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = unquote_plus(user)
    if not user or len(user) > MAX_CLIENT_ID or not user.isprintable():
        return None
    return user


def principal_of(scope: Scope) -> str | None:
    """Who the verified bearer token speaks for (``BearerAuthMiddleware`` left it in
    ``scope["state"]["token"]``): its principal ARN, else its subject."""
    token = scope.get("state", {}).get("token")
    claims = getattr(token, "claims", None)
    if not isinstance(claims, dict):
        return None
    arn = claims.get("principal_arn")
    return str(arn) if isinstance(arn, str) and arn else getattr(token, "subject", None)


def _header_list(items: Sequence[str]) -> bytes:
    return ", ".join(items).encode()


class RateLimit:
    """Pure ASGI middleware applying ``rules`` (every matching rule counts the request;
    any refusal refuses it). Usable in any Starlette app; see the module docstring."""

    def __init__(self, app: ASGIApp, *, rules: Sequence[Rule], backend: Backend,
                 audit: AuditSink | None = None, audit_window: float = 1.0,
                 metrics: Refusals | None = None) -> None:
        rules = tuple(rules)
        if not all(isinstance(r, Rule) for r in rules):
            raise TypeError("rules must be Rule instances")
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError("rate limit names must be unique")
        if not callable(getattr(backend, "take", None)):
            raise TypeError("backend must have an async take(key, interval_us, burst)")
        if any(r.algorithm == "sliding_window" for r in rules) and not callable(
                getattr(backend, "window", None)):
            raise TypeError("backend must have an async window(key, window_us, limit) for "
                            "sliding_window rules")
        if audit_window <= 0:
            raise ValueError("audit_window must be > 0")
        self.app = app
        self.rules = rules
        self.backend = backend
        self.refusals = RefusalLog(audit, audit_window) if audit is not None else None
        self.metrics = metrics  # refusals counted as ("rate_limit", rule name)
        self._policy = {r.name: r.policy for r in rules}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        matched = [r for r in self.rules if r.matches(method, path)]
        if not matched:
            await self.app(scope, receive, send)
            return
        ip = scope.get("state", {}).get("client_ip")  # RequestContext's, proxies applied
        if ip is None:
            client = scope.get("client")
            ip = str(client[0]) if client else "-"
        headers = Headers(scope=scope)
        client_id = basic_client_id(headers) if any(r.key == "client" for r in matched) \
            else None
        results: list[tuple[Rule, str, Verdict]] = []
        for rule in matched:
            if rule.key == "ip":
                key = ip
            elif rule.key == "principal":
                who = principal_of(scope)
                if who is None:
                    continue
                key = hashlib.sha256(who.encode()).hexdigest()[:32]
            elif client_id is not None:
                key = hashlib.sha256(client_id.encode()).hexdigest()[:32]
            else:
                continue
            try:
                if rule.algorithm == "sliding_window":
                    result = await self.backend.window(f"{rule.bucket}:{key}",
                                                       rule.window_us, rule.rate)
                else:
                    result = await self.backend.take(f"{rule.bucket}:{key}",
                                                     rule.interval_us, rule.burst)
            except BackendUnavailable:
                if self.metrics is not None:
                    self.metrics.refused("rate_limit", "backend_unavailable")
                await self._unavailable(scope, send, rule)
                return
            results.append((rule, key, result))
        if not results:
            await self.app(scope, receive, send)
            return
        fields = self._headers(results)
        refused = [(r, k, v) for r, k, v in results if not v.allowed]
        if refused:
            worst = max(refused, key=lambda item: item[2].retry_after)
            if self.metrics is not None:
                self.metrics.refused("rate_limit", worst[0].name)
            if self.refusals is not None:
                for rule, key, _ in refused:
                    params: dict[str, Any] = {"method": method, "path": path[:200],
                                              "rule": rule.name, "key": rule.key,
                                              "source_ip": ip}
                    if rule.key == "client":
                        params["clientId"] = client_id
                    await self.refusals.refused(rule, key, params)
            await self._refuse(scope, send, worst[0], worst[2], fields)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *fields]
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _headers(self, results: list[tuple[Rule, str, Verdict]]) -> list[tuple[bytes, bytes]]:
        policies = [self._policy[r.name] for r, _, _ in results]
        states = [f'"{r.name}";r={v.remaining};t={math.ceil(v.reset)}' for r, _, v in results]
        return [(b"ratelimit-policy", _header_list(policies)),
                (b"ratelimit", _header_list(states))]

    async def _refuse(self, scope: Scope, send: Send, rule: Rule, result: Verdict,
                      fields: list[tuple[bytes, bytes]]) -> None:
        retry = max(1, math.ceil(result.retry_after))
        detail = f"too many requests; retry after {retry}s"
        await _answer(scope, send, 429, rule.body, "rate_limited", detail,
                      [(b"retry-after", str(retry).encode()), *fields])

    async def _unavailable(self, scope: Scope, send: Send, rule: Rule) -> None:
        retry = getattr(self.backend, "retry_interval", 5.0)
        await _answer(scope, send, 503, rule.body, "temporarily_unavailable",
                      "the rate limiter is unavailable",
                      [(b"retry-after", str(max(1, math.ceil(retry))).encode())])


# The ``aws`` body: AWS STS answers throttling with the code ``Throttling`` and the message
# "Rate exceeded" (as HTTP 400); here it is 429 with Retry-After, like every other refusal of
# the edge, which AWS SDKs retry either way (they classify by the code).
AWS_ERRORS = {429: ("Throttling", "Rate exceeded"),
              503: ("ServiceUnavailable", "the rate limiter is unavailable")}


async def _answer(scope: Scope, send: Send, status: int, style: BodyStyle, error: str,
                  detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    request_id = scope.get("state", {}).get("request_id")
    body: Mapping[str, Any]
    if style == "aws":  # bastion.oauth.sts's error shape, AWS's codes
        code, message = AWS_ERRORS[status]
        body = {"Error": {"Code": code, "Message": message}, "RequestId": request_id}
        media = "application/json"
    elif style == "oauth":
        body = {"error": error, "error_description": detail, "request_id": request_id}
        media = "application/json"
    else:
        body = problem_body(status, detail)
        if "instance" not in body and request_id:
            body = {**body, "instance": f"urn:bastion:request:{request_id}"}
        media = MEDIA_TYPE
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media.encode()),
                            (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": data})


async def flush_refusals(app: object) -> None:
    """Write the pending aggregated refusal counts of every ``RateLimit`` in a built
    middleware stack (at shutdown, before the audit trail closes)."""
    node = getattr(app, "middleware_stack", None) or app
    for _ in range(64):  # a stack, not a cycle
        if isinstance(node, RateLimit) and node.refusals is not None:
            await node.refusals.flush()
        node = getattr(node, "app", None)
        if node is None:
            return
