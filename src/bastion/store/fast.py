"""A thin SQL layer for the hot paths (token grants, revocation, the Orders API).

The ORM over async drivers costs 0.5–0.9 ms of CPU per statement here (greenlet switches and,
for SQLite, a thread hop per call), which capped the refresh grant near 150/s. The hot paths
instead run hand-written, portable SQL (``:name`` parameters; SQLite ≥ 3.35 and PostgreSQL
both speak ``RETURNING`` and ``ON CONFLICT``) straight on the driver:

- SQLite: ``sqlite3`` on the event loop's thread. A local WAL database answers in tens of
  microseconds, less than a hop to a worker thread. Writers take the lock up front
  (``BEGIN IMMEDIATE``) with a zero busy timeout, and wait for another process's writer by
  sleeping on the loop, never by blocking it. One connection writes, one reads.
- PostgreSQL: an ``asyncpg`` pool.

The schema stays owned by the SQLAlchemy models and Alembic migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import asyncpg


class Row(Protocol):
    """A result row: ``sqlite3.Row`` or ``asyncpg.Record``, indexed by name or position."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __len__(self) -> int: ...


BUSY_DEADLINE = 30.0  # seconds a writer waits for another process's write lock


class Reader(Protocol):
    """Reads: a transaction or the store itself."""

    async def one(self, sql: str, **params: Any) -> Row | None: ...
    async def all(self, sql: str, **params: Any) -> list[Row]: ...


class Tx(Protocol):
    """Statements inside one transaction."""

    async def one(self, sql: str, **params: Any) -> Row | None: ...
    async def all(self, sql: str, **params: Any) -> list[Row]: ...
    async def run(self, sql: str, **params: Any) -> int:
        """Execute; return the number of rows affected."""
        ...

    async def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set, in one round trip where the driver can."""
        ...


class FastStore(Protocol):
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A write transaction: committed on exit, rolled back on an exception."""
        ...

    async def one(self, sql: str, **params: Any) -> Row | None: ...
    async def all(self, sql: str, **params: Any) -> list[Row]: ...
    async def close(self) -> None: ...


# --- SQLite ---------------------------------------------------------------------------------
class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    async def one(self, sql: str, **params: Any) -> Row | None:
        row: Row | None = self._c.execute(sql, params).fetchone()
        return row

    async def all(self, sql: str, **params: Any) -> list[Row]:
        return list(self._c.execute(sql, params).fetchall())

    async def run(self, sql: str, **params: Any) -> int:
        return self._c.execute(sql, params).rowcount

    async def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self._c.executemany(sql, rows)


def _sqlite_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=0")
    return conn


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteStore:
    def __init__(self, path: str) -> None:
        self._write = _sqlite_connect(path)
        # a WAL checkpoint copies pages and fsyncs: never on the event loop. ``checkpoint``
        # runs it from a worker thread on its own connection instead.
        self._write.execute("PRAGMA wal_autocheckpoint=0")
        self._read = _sqlite_connect(path)
        self._checkpointer = _sqlite_connect(path)
        self._lock = asyncio.Lock()

    def checkpoint(self) -> None:
        """Blocking: run in a worker thread (``anyio.to_thread``)."""
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:  # one transaction at a time on the writer connection
            deadline = time.monotonic() + BUSY_DEADLINE
            delay = 0.0002
            while True:
                try:
                    self._write.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(delay)  # another process writes: wait on the loop
                    delay = min(delay * 2, 0.004)
            try:
                yield _SqliteTx(self._write)
            except BaseException:
                self._write.execute("ROLLBACK")
                raise
            await self._commit(deadline)

    async def _commit(self, deadline: float) -> None:
        while True:
            try:
                self._write.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    self._write.execute("ROLLBACK")
                    raise
                await asyncio.sleep(0.005)

    async def one(self, sql: str, **params: Any) -> Row | None:
        row: Row | None = await self._retry_read(lambda: self._read.execute(sql, params)
                                                 .fetchone())
        return row

    async def all(self, sql: str, **params: Any) -> list[Row]:
        rows: list[Row] = await self._retry_read(lambda: list(self._read.execute(sql, params)
                                                              .fetchall()))
        return rows

    async def _retry_read(self, fn: Any) -> Any:
        deadline = time.monotonic() + BUSY_DEADLINE
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:  # WAL reads block only on recovery
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._write.close()
        self._read.close()
        self._checkpointer.close()


# --- PostgreSQL -----------------------------------------------------------------------------
_PARAM = re.compile(r"(?<!:):([A-Za-z_]\w*)")


class _Compiled:
    """``:name`` SQL → asyncpg's ``$n``, cached per statement."""

    cache: dict[str, tuple[str, tuple[str, ...]]] = {}

    @classmethod
    def of(cls, sql: str) -> tuple[str, tuple[str, ...]]:
        hit = cls.cache.get(sql)
        if hit is None:
            names: list[str] = []

            def sub(m: re.Match[str]) -> str:
                if m.group(1) not in names:
                    names.append(m.group(1))
                return f"${names.index(m.group(1)) + 1}"

            hit = (_PARAM.sub(sub, sql), tuple(names))
            cls.cache[sql] = hit
        return hit


def _args(sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    text, names = _Compiled.of(sql)
    return text, [params[n] for n in names]


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn

    async def one(self, sql: str, **params: Any) -> Row | None:
        text, args = _args(sql, params)
        row: Row | None = await self._c.fetchrow(text, *args)
        return row

    async def all(self, sql: str, **params: Any) -> list[Row]:
        text, args = _args(sql, params)
        return list(await self._c.fetch(text, *args))

    async def run(self, sql: str, **params: Any) -> int:
        text, args = _args(sql, params)
        status: str = await self._c.execute(text, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        text, names = _Compiled.of(sql)
        await self._c.executemany(text, [[row[n] for n in names] for row in rows])


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        return cls(pool)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def one(self, sql: str, **params: Any) -> Row | None:
        text, args = _args(sql, params)
        row: Row | None = await self._pool.fetchrow(text, *args)
        return row

    async def all(self, sql: str, **params: Any) -> list[Row]:
        text, args = _args(sql, params)
        return list(await self._pool.fetch(text, *args))

    async def close(self) -> None:
        await self._pool.close()


async def open_fast_store(database_url: str) -> FastStore:
    """The fast store for a SQLAlchemy URL (``sqlite+aiosqlite:///…``,
    ``postgresql+asyncpg://…``)."""
    parts = urlsplit(database_url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        path = unquote(database_url.split(":///", 1)[1].split("?")[0])
        return SqliteStore(path)
    if scheme in ("postgresql", "postgres"):
        return await PostgresStore.open(database_url.replace(parts.scheme + "://",
                                                             "postgresql://", 1))
    raise ValueError(f"unsupported database URL scheme: {parts.scheme}")
