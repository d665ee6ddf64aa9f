"""The KV contract, on memory, on the SQLite file worker processes share, and on the
machine's real Redis; and the SQLite KV across real processes."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from bastion.store.kv import KV, MemoryKV, RedisKV, SqliteKV
from tests.racers import race

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def kv(request, tmp_path):
    store: KV
    if request.param == "memory":
        store = MemoryKV()
    elif request.param == "sqlite":
        store = SqliteKV(tmp_path / "run" / "kv.sqlite3")
    else:
        store = RedisKV("redis://127.0.0.1:6379/0",
                        prefix=f"bastion-test:{secrets.token_hex(4)}:")
    yield store
    await store.close()


async def test_set_get_delete(kv):
    assert await kv.get("a") is None
    await kv.set("a", b"1", 10)
    assert await kv.get("a") == b"1"
    await kv.delete("a")
    assert await kv.get("a") is None


async def test_expiry(kv):
    await kv.set("e", b"1", 0.05)
    await asyncio.sleep(0.1)
    assert await kv.get("e") is None


async def test_add_is_set_once(kv):
    results = await asyncio.gather(*[kv.add("once", b"x", 10) for _ in range(20)])
    assert results.count(True) == 1


async def test_pop_gives_value_once(kv):
    await kv.set("p", b"v", 10)
    results = await asyncio.gather(*[kv.pop("p") for _ in range(10)])
    assert results.count(b"v") == 1


async def test_incr_counts_and_keeps_first_expiry(kv):
    assert [await kv.incr("n", 0.2) for _ in range(3)] == [1, 2, 3]
    await asyncio.sleep(0.3)
    assert await kv.incr("n", 0.2) == 1


async def test_values_and_counters_read_back_as_bytes(kv):
    await kv.set("b", b"\x00\xffbin", 10)
    assert await kv.get("b") == b"\x00\xffbin"
    await kv.incr("c", 10, by=5)
    await kv.incr("c", 10, by=-2)
    assert await kv.get("c") == b"3"
    assert await kv.pop("c") == b"3"
    assert await kv.pop("c") is None


async def test_add_takes_an_expired_key_again(kv):
    assert await kv.add("x", b"1", 0.05)
    assert not await kv.add("x", b"2", 10)
    await asyncio.sleep(0.1)
    assert await kv.add("x", b"3", 10)
    assert await kv.get("x") == b"3"


def _hammer(path, start, results) -> None:
    """One worker process: 200 increments and 50 claims of shared single-use keys."""
    async def main() -> int:
        kv = SqliteKV(path)
        start.wait()
        for _ in range(200):
            await kv.incr("counter", 60)
        won = sum([await kv.add(f"once:{i}", b"1", 60) for i in range(50)])
        await kv.close()
        return won
    results.put(asyncio.run(main()))


def test_sqlite_kv_is_atomic_across_processes(tmp_path):
    """Four processes on one file: no increment lost, every single-use key claimed once."""
    path = tmp_path / "kv.sqlite3"
    assert sum(race(_hammer, path)) == 50

    async def read() -> bytes | None:
        kv = SqliteKV(path)
        try:
            return await kv.get("counter")
        finally:
            await kv.close()
    assert asyncio.run(read()) == b"800"
