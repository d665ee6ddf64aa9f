"""Login throttling per account and per client IP, with exponential backoff.

After ``max_failures`` failures in the window, each further attempt must wait
``base * 2**(failures - max_failures)`` seconds (capped). Counters live in the shared KV, so
every instance enforces the same limits. Unknown usernames are counted exactly like real
ones, so throttling reveals nothing about which accounts exist.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from bastion.store.kv import KV


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures_account: int
    max_failures_ip: int
    backoff_base: float
    backoff_max: float
    window: int


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
    return f"login:{kind}:{digest}"


class LoginThrottle:
    def __init__(self, kv: KV, policy: ThrottlePolicy) -> None:
        self._kv = kv
        self._p = policy

    async def retry_after(self, username: str, ip: str) -> float:
        """Seconds until a login attempt is allowed (0 when allowed now)."""
        now = time.time()
        wait = 0.0
        for kind, value in (("acct", username), ("ip", ip)):
            until = await self._kv.get(_key(kind, value) + ":until")
            if until is not None:
                wait = max(wait, float(until) - now)
        return max(0.0, wait)

    async def failure(self, username: str, ip: str) -> None:
        now = time.time()
        for kind, value, limit in (("acct", username, self._p.max_failures_account),
                                   ("ip", ip, self._p.max_failures_ip)):
            key = _key(kind, value)
            count = await self._kv.incr(key + ":n", self._p.window)
            if count >= limit:
                delay = min(self._p.backoff_max,
                            self._p.backoff_base * 2 ** (count - limit))
                await self._kv.set(key + ":until", str(now + delay).encode(), delay)

    async def success(self, username: str) -> None:
        key = _key("acct", username)
        await self._kv.delete(key + ":n")
        await self._kv.delete(key + ":until")
