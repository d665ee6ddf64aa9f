"""Short-lived shared state with expiry: in memory (one process) or Redis (many instances).

Used for pending authorization requests, login throttling counters, single-use JWT ids
(``private_key_jwt`` assertions) and the access-token denylist cache. Values are bytes.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aioredis


class KV(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Set only if absent; True if this call set it (atomic: a second call gets False)."""
        ...
    async def pop(self, key: str) -> bytes | None:
        """Get and delete atomically: of two concurrent calls, only one gets the value."""
        ...
    async def delete(self, key: str) -> None: ...
    async def incr(self, key: str, ttl: float, by: int = 1) -> int:
        """Add ``by`` (may be negative) to a counter atomically and return the new value;
        the expiry is set when the counter is created."""
        ...
    async def close(self) -> None: ...


class MemoryKV:
    """Process-local KV. Expired entries are dropped lazily and by ``sweep``."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._ops = 0

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item[0]

    def _tick(self) -> None:
        self._ops += 1
        if self._ops % 10_000 == 0:
            self.sweep()

    def sweep(self) -> None:
        now = time.monotonic()
        for k in [k for k, (_, exp) in self._data.items() if exp <= now]:
            del self._data[k]

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._tick()
        self._data[key] = (value, time.monotonic() + ttl)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        self._tick()
        if self._live(key) is not None:
            return False
        self._data[key] = (value, time.monotonic() + ttl)
        return True

    async def pop(self, key: str) -> bytes | None:
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def incr(self, key: str, ttl: float, by: int = 1) -> int:
        self._tick()
        current = self._live(key)
        if current is None:
            self._data[key] = (str(by).encode(), time.monotonic() + ttl)
            return by
        value = int(current) + by
        self._data[key] = (str(value).encode(), self._data[key][1])
        return value

    async def close(self) -> None:
        self._data.clear()


class RedisKV:
    """Redis-backed KV shared by every instance. Keys are namespaced with ``prefix``."""

    def __init__(self, url: str, prefix: str = "bastion:") -> None:
        self._r = aioredis.Redis.from_url(url)
        self._p = prefix

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool, for other users of the same Redis (the rate limiter)."""
        return self._r

    async def get(self, key: str) -> bytes | None:
        return _bytes(await self._r.get(self._p + key))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._r.set(self._p + key, value, px=max(1, int(ttl * 1000)))

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self._r.set(self._p + key, value, px=max(1, int(ttl * 1000)), nx=True))

    async def pop(self, key: str) -> bytes | None:
        return _bytes(await self._r.getdel(self._p + key))

    async def delete(self, key: str) -> None:
        await self._r.delete(self._p + key)

    async def incr(self, key: str, ttl: float, by: int = 1) -> int:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.incrby(self._p + key, by)
            pipe.pexpire(self._p + key, max(1, int(ttl * 1000)), nx=True)
            value, _ = await pipe.execute()
        return int(value)

    async def close(self) -> None:
        await self._r.aclose()


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def create_kv(redis_url: str | None, prefix: str = "bastion:") -> KV:
    return RedisKV(redis_url, prefix) if redis_url else MemoryKV()
