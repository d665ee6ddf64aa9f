"""Shared fixtures: a Provider on SQLite or PostgreSQL, and an HTTP client on the ASGI app.

PostgreSQL is the machine's server at 127.0.0.1:5432 (``BASTION_TEST_PG`` overrides); each
test session creates its own database and drops it afterwards. It is required, not optional:
a missing server fails the PostgreSQL cases instead of skipping them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from bastion.app import build_app
from bastion.config import Settings
from bastion.oauth.provider import Provider
from bastion.runtime import open_provider

ISSUER = "http://bastion.test"
PG_ADMIN = os.environ.get("BASTION_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@contextlib.contextmanager
def pg_database(prefix: str = "bastion_test") -> Iterator[str]:
    """A new PostgreSQL database (its asyncpg URL), dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session: each test starts from a copy of it
    instead of running every migration again (``open_provider`` still runs ``migrate``,
    which finds it at head)."""
    from bastion.store.db import migrate_blocking

    path = tmp_path_factory.mktemp("sqlite-template") / "bastion.db"
    migrate_blocking(f"sqlite+aiosqlite:///{path}")
    return path


def sqlite_copy(template: Path, directory: Path) -> str:
    """A copy of the migrated ``template`` in ``directory``; returns its URL."""
    for part in template.parent.glob(template.name + "*"):  # with any -wal/-shm left
        shutil.copyfile(part, directory / part.name)
    return f"sqlite+aiosqlite:///{directory / template.name}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
    url: str = request.getfixturevalue("pg_url")
    return url


def make_settings(tmp_path: Path, database_url: str | None = None, **over: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data", "issuer": ISSUER, "dev": True,
        "database_url": database_url, "key_refresh_interval": 0.2, "client_cache_ttl": 0,
        "login_backoff_base": 0.05, "login_backoff_max": 0.2,
    }
    base.update(over)
    return Settings(**base)


def raised_rate_limits(factor: int = 100) -> tuple[Any, ...]:
    """The default rate limits times ``factor``: for fixtures whose tests legitimately send
    more sign-ins or token requests from 127.0.0.1 than a person or client would (the
    login-throttle tests drive dozens of guesses a second). Limits stay on."""
    from dataclasses import replace

    from bastion.config import DEFAULT_RATE_LIMITS

    return tuple(replace(r, rate=r.rate * factor, burst=r.burst * factor)
                 for r in DEFAULT_RATE_LIMITS)


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    # @pytest.mark.waf_off: the app's own answer to an attack-shaped input, which the WAF in
    # front would refuse first (the WAF's refusal is tested in tests/edge/waf)
    if request.node.get_closest_marker("waf_off"):
        return make_settings(tmp_path, database_url, waf_mode="off")
    return make_settings(tmp_path, database_url)


@pytest.fixture
async def provider(settings: Settings) -> AsyncIterator[Provider]:
    await _reset(settings.effective_database_url)
    p = await open_provider(settings)
    try:
        yield p
    finally:
        await p.close()


_migrated: set[str] = set()


async def _reset(url: str) -> None:
    """PostgreSQL is shared by the session's tests: start each one from empty tables.

    The schema is migrated on the first call for a database (``open_provider`` migrates
    again anyway); the tables are emptied with DELETE in one round trip, not TRUNCATE,
    which rewrites ~40 relations (~0.5 s against ~0.05 s on these tiny tables). In replica
    mode neither the audit trail's append-only triggers nor the foreign keys' fire, so the
    order of the statements does not matter."""
    if not url.startswith("postgresql"):
        return
    from bastion.store.db import create_engine, migrate
    from bastion.store.models import Base

    if url not in _migrated:
        engine = create_engine(url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        _migrated.add(url)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica;" + "".join(
                f' DELETE FROM "{t.name}";' for t in Base.metadata.sorted_tables))
    finally:
        await conn.close()


@pytest.fixture
async def http(provider: Provider) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(provider), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


@pytest.fixture
async def alice(provider: Provider) -> str:
    from tests.flows import add_user

    return await add_user(provider)


@pytest.fixture
async def app(provider: Provider, alice: str) -> Any:
    """A confidential client allowed every grant; files override it where they need more."""
    from tests.flows import add_client

    return await add_client(provider)
