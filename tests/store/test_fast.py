"""The fast SQL layer on SQLite and PostgreSQL: commit, rollback, waiting for another
process's write lock without blocking the event loop, and WAL checkpoints off the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from bastion.store.db import create_engine, migrate
from bastion.store.fast import SqliteStore, open_fast_store
from tests.conftest import _reset

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(database_url):
    await _reset(database_url)
    engine = create_engine(database_url)
    await migrate(engine)
    await engine.dispose()
    s = await open_fast_store(database_url)
    yield s
    await s.close()


INSERT = ("INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES (:j, :e, :r) "
          "ON CONFLICT (jti) DO NOTHING")


async def test_commit_and_read_back(store):
    async with store.transaction() as tx:
        assert await tx.run(INSERT, j="a", e=10, r=1) == 1
        assert await tx.run(INSERT, j="a", e=10, r=1) == 0  # conflict ignored
        row = await tx.one("SELECT jti FROM revoked_tokens WHERE jti = :j", j="a")
        assert row["jti"] == "a"
    assert [r["jti"] for r in await store.all("SELECT jti FROM revoked_tokens")] == ["a"]


async def test_exception_rolls_back(store):
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.run(INSERT, j="b", e=10, r=1)
            raise RuntimeError("boom")
    assert await store.one("SELECT jti FROM revoked_tokens WHERE jti = :j", j="b") is None


async def test_returning_and_repeated_parameters(store):
    async with store.transaction() as tx:
        await tx.run(INSERT, j="c", e=5, r=5)
        rows = await tx.all("UPDATE revoked_tokens SET expires_at = :v, revoked_at = :v "
                            "WHERE jti = :j RETURNING jti, expires_at", v=7, j="c")
    assert [(r["jti"], r["expires_at"]) for r in rows] == [("c", 7)]


async def test_sqlite_waits_for_another_writer_on_the_loop(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    store = await open_fast_store(url)
    assert isinstance(store, SqliteStore)
    other = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def writer() -> None:
        async with store.transaction() as tx:
            await tx.run(INSERT, j="w", e=10, r=1)

    tick_task = asyncio.create_task(ticker())
    write_task = asyncio.create_task(writer())
    await asyncio.sleep(0.2)
    assert not write_task.done()  # waiting for the lock...
    assert ticks >= 10  # ...while the loop keeps serving
    other.execute("COMMIT")
    await asyncio.wait_for(write_task, 5)
    tick_task.cancel()
    other.close()
    assert await store.one("SELECT jti FROM revoked_tokens WHERE jti = 'w'") is not None
    await store.close()


async def test_sqlite_checkpoint_runs_off_the_loop(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    store = await open_fast_store(url)
    for i in range(300):
        async with store.transaction() as tx:
            await tx.run(INSERT, j=f"k{i}", e=10, r=1)
    wal = tmp_path / "c.db-wal"
    assert wal.stat().st_size > 0
    started = time.monotonic()
    await asyncio.to_thread(store.checkpoint)
    assert time.monotonic() - started < 30
    busy, log, done = sqlite3.connect(tmp_path / "c.db").execute(
        "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log == done  # everything in the WAL reached the database
    await store.close()
