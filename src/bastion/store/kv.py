"""Short-lived shared state with expiry: in memory (one process) or Redis (many instances).

Used for pending authorization requests, login throttling counters, single-use JWT ids
(``private_key_jwt`` assertions) and the access-token denylist cache. Values are bytes.

Three stores: ``MemoryKV`` (one process), ``SqliteKV`` (the worker processes of one host:
``bastion serve --workers N`` without Redis) and ``RedisKV`` (every instance).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis

from bastion.store.fast import BUSY_DEADLINE, _busy


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


class SqliteKV:
    """The KV the worker processes of one host share, in a SQLite file of its own (WAL, no
    fsync: the state is short-lived). Every operation is one statement, so atomic across
    processes; reads never wait for a writer (WAL). A writer finding another process's
    write lock waits by sleeping on the event loop, never by blocking it. Expiry is by the
    wall clock, the one clock every process reads alike."""

    SWEEP_EVERY = 10_000  # writes between two deletions of expired keys

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   timeout=10)  # set up once; operations never block (below)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB "
                         "NOT NULL, expires REAL NOT NULL) WITHOUT ROWID")
        self._db.execute("PRAGMA busy_timeout=0")
        self._writes = 0

    async def _run(self, sql: str, params: tuple[Any, ...], *, write: bool = True) -> Any:
        if write:
            self._writes += 1
            if self._writes % self.SWEEP_EVERY == 0:
                await self._run("DELETE FROM kv WHERE expires <= ?", (time.time(),),
                                write=False)
        deadline = time.monotonic() + BUSY_DEADLINE
        delay = 0.0005
        while True:
            try:
                cursor = self._db.execute(sql, params)
                return cursor.fetchone(), cursor.rowcount
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)  # another process writes: wait on the loop
                delay = min(delay * 2, 0.02)

    async def get(self, key: str) -> bytes | None:
        row, _ = await self._run("SELECT value FROM kv WHERE key = ? AND expires > ?",
                                 (key, time.time()), write=False)
        return None if row is None else _blob(row[0])

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._run("INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
                        (key, value, time.time() + ttl))

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        _, changed = await self._run(
            "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO "
            "UPDATE SET value = excluded.value, expires = excluded.expires "
            "WHERE kv.expires <= ?", (key, value, now + ttl, now))
        return bool(changed == 1)

    async def pop(self, key: str) -> bytes | None:
        row, _ = await self._run("DELETE FROM kv WHERE key = ? RETURNING value, expires",
                                 (key,))
        return _blob(row[0]) if row is not None and row[1] > time.time() else None

    async def delete(self, key: str) -> None:
        await self._run("DELETE FROM kv WHERE key = ?", (key,))

    async def incr(self, key: str, ttl: float, by: int = 1) -> int:
        now = time.time()
        row, _ = await self._run(
            "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO "
            "UPDATE SET value = CASE WHEN kv.expires <= ? THEN excluded.value "
            "ELSE CAST(CAST(kv.value AS TEXT) AS INTEGER) + ? END, "
            "expires = CASE WHEN kv.expires <= ? THEN excluded.expires ELSE kv.expires END "
            "RETURNING value", (key, by, now + ttl, now, by, now))
        return int(row[0])

    async def close(self) -> None:
        self._db.close()


def _blob(value: bytes | str | int) -> bytes:
    """A stored value as bytes (counters are stored as integers)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def create_kv(redis_url: str | None, prefix: str = "bastion:", *,
              shared: Path | None = None) -> KV:
    """Redis when there is a URL; else ``shared`` (a file the worker processes of this host
    share), else this process's memory."""
    if redis_url:
        return RedisKV(redis_url, prefix)
    return SqliteKV(shared) if shared is not None else MemoryKV()
