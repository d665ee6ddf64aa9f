"""The KV contract, on memory and on the machine's real Redis."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from bastion.store.kv import KV, MemoryKV, RedisKV

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def kv(request):
    store: KV = MemoryKV() if request.param == "memory" else RedisKV(
        "redis://127.0.0.1:6379/0", prefix=f"bastion-test:{secrets.token_hex(4)}:")
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
