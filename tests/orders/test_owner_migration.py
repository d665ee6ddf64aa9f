"""Migration 0004 re-keys orders: users' rows stay theirs, rows stored under an ambiguous bare
``sub`` (a client id, a role session ARN) go to no caller. SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.store.db import _alembic_config, create_engine
from tests.conftest import PG_ADMIN

pytestmark = pytest.mark.anyio

USER_ID = "0123456789abcdef01234567"
SESSION = "arn:bastion:sts::000000000000:assumed-role/buyer/shared"


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request, tmp_path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        yield eng
        await eng.dispose()
        return
    name = f"bastion_mig_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    eng = create_engine(f"{base}/{name}")
    try:
        yield eng
    finally:
        await eng.dispose()
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _to(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: (command.downgrade if down else command.upgrade)(
            _alembic_config(c), revision))


async def _owners(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return {r[0]: r[1] for r in await conn.execute(text("SELECT id, owner FROM orders"))}


async def test_orders_rekeyed_users_keep_theirs_ambiguous_rows_go_to_no_one(engine):
    await _to(engine, "0003")
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO users (id, username, password_hash, roles, disabled, created_at) "
            "VALUES (:id, 'alice', 'x', '[]', false, 0)"), {"id": USER_ID})
        for order_id, owner in (("a", USER_ID), ("c", "svc-client"), ("s", SESSION)):
            await conn.execute(text(
                "INSERT INTO orders (id, owner, item, quantity, unit_price_cents, status, "
                "created_at) VALUES (:id, :owner, 'tea', 1, 1, 'placed', 0)"),
                {"id": order_id, "owner": owner})
    await _to(engine, "head")
    assert await _owners(engine) == {"a": USER_ID, "c": "legacy:svc-client",
                                     "s": f"legacy:{SESSION}"}
    long_key = f"{SESSION};act=arn:bastion:iam::000000000000:user/alice"
    async with engine.begin() as conn:  # the widened column takes session keys
        await conn.execute(text("UPDATE orders SET owner = :o WHERE id = 's'"), {"o": long_key})
    await _to(engine, "0003", down=True)
    owners = await _owners(engine)
    assert owners["a"] == USER_ID and owners["c"] == "svc-client"
    assert owners["s"] == long_key[:64]
