"""The provider's client cache: fresh within its TTL, one lookup for a herd of misses."""

from __future__ import annotations

import asyncio

import pytest

from tests.flows import add_client

pytestmark = pytest.mark.anyio


async def test_concurrent_misses_share_one_lookup(provider, monkeypatch):
    client = await add_client(provider)
    calls = 0
    real = provider.fast.one

    async def counting(sql, **params):
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)  # keep the lookup in flight while the herd arrives
        return await real(sql, **params)

    monkeypatch.setattr(provider.fast, "one", counting)
    infos = await asyncio.gather(*[provider.client(client.client_id) for _ in range(50)])
    assert calls == 1
    assert all(i is not None and i.client_id == client.client_id for i in infos)
    assert infos[0].redirect_uris and "authorization_code" in infos[0].grant_types


async def test_unknown_and_malformed_client_ids(provider):
    assert await provider.client("no-such-client") is None
    assert await provider.client("bad id with spaces") is None
    assert await provider.client("x" * 500) is None
