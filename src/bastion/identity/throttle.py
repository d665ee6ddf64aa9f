"""Login throttling per account and per client IP, with exponential backoff.

After ``max_failures`` failures in the window, each further attempt must wait
``base * 2**(failures - max_failures)`` seconds (capped). Counters live in the shared KV, so
every instance enforces the same limits. Unknown usernames are counted exactly like real
ones, so throttling reveals nothing about which accounts exist.

An attempt is *reserved* before the password or code is verified (RFC 6819 §5.1.4.2.3,
NIST SP 800-63B §5.2.2): the counter is incremented first and the answer decided on the value
the increment returned, so concurrent guesses cannot all pass the check before any failure
is counted. Past the free attempts, one attempt at a time holds a ``busy`` gate (an atomic
set-if-absent). The reservation then ends in one of three ways: ``failed`` (it stays
counted), ``released`` (a step that is not the last, e.g. the password before a second
factor: no failure, no reset) or ``succeeded`` (full authentication: the account counter is
reset). A reservation never ended (a crashed worker) stays counted until the window ends:
fail closed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from bastion.store.kv import KV

BUSY_TTL = 30.0  # seconds a gate outlives a worker that died while verifying


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


@dataclass
class _Slot:
    key: str
    count: int  # the counter's value once this attempt was added
    limit: int
    gated: bool = False  # holds ``key:busy``


@dataclass
class Attempt:
    """A reserved login attempt; verify only when ``allowed``."""

    username: str
    wait: float = 0.0  # seconds until an attempt may be made, when refused
    slots: list[_Slot] = field(default_factory=list)
    ended: bool = False

    @property
    def allowed(self) -> bool:
        return self.wait <= 0 and not self.ended


class LoginThrottle:
    def __init__(self, kv: KV, policy: ThrottlePolicy) -> None:
        self._kv = kv
        self._p = policy

    async def reserve(self, username: str, ip: str) -> Attempt:
        """Count an attempt before it is verified; refused (``wait`` > 0) while backing off,
        or while another attempt past the free ones is being verified."""
        attempt = Attempt(username)
        for kind, value, limit in (("acct", username, self._p.max_failures_account),
                                   ("ip", ip, self._p.max_failures_ip)):
            key = _key(kind, value)
            slot = _Slot(key, await self._kv.incr(key + ":n", self._p.window), limit)
            attempt.slots.append(slot)
            if slot.count > limit:
                # past the free attempts: one at a time. The gate is taken *before* reading
                # the backoff, and ``failed`` writes the backoff before opening the gate, so
                # an attempt that wins the gate always sees the latest backoff.
                slot.gated = await self._kv.add(key + ":busy", b"1", BUSY_TTL)
            until = await self._kv.get(key + ":until")
            wait = float(until) - time.time() if until is not None else 0.0
            if slot.count > limit and until is None:
                # the failure that starts the backoff is still being verified
                wait = max(wait, 1.0)
            if slot.count > limit and not slot.gated:
                wait = max(wait, 1.0)
            if wait > 0:
                attempt.wait = wait
                await self._release(attempt)
                break
        return attempt

    async def failed(self, attempt: Attempt) -> None:
        """The attempt failed: it stays counted; past the limit it starts (or doubles) the
        backoff."""
        if attempt.ended:
            return
        attempt.ended = True
        now = time.time()
        for slot in attempt.slots:
            if slot.count >= slot.limit:
                delay = min(self._p.backoff_max,
                            self._p.backoff_base * 2 ** (slot.count - slot.limit))
                # kept for the window: a missing value means "not yet decided" (see reserve)
                await self._kv.set(slot.key + ":until", str(now + delay).encode(),
                                   max(float(self._p.window), delay))
            if slot.gated:
                await self._kv.delete(slot.key + ":busy")

    async def released(self, attempt: Attempt) -> None:
        """The attempt neither failed nor completed a sign-in (a first factor that was right):
        it is uncounted and resets nothing."""
        await self._release(attempt)

    async def succeeded(self, attempt: Attempt) -> None:
        """Full authentication: the account's counter and backoff are reset; the IP's
        reservation is given back (an address's failures are kept)."""
        if attempt.ended:
            return
        await self._release(attempt)
        key = _key("acct", attempt.username)
        await self._kv.delete(key + ":n")
        await self._kv.delete(key + ":until")

    async def _release(self, attempt: Attempt) -> None:
        attempt.ended = True
        for slot in attempt.slots:
            await self._kv.incr(slot.key + ":n", self._p.window, -1)
            if slot.gated:
                await self._kv.delete(slot.key + ":busy")
