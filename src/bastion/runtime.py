"""Opening Bastion's state: database (migrated), KV, key-encryption key, signing keys, and
the ``Provider`` that endpoints use. Shared by the server and the CLI."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.config import Settings
from bastion.iam.bootstrap import bootstrap as bootstrap_iam
from bastion.identity.users import create_user, get_user_by_name
from bastion.kms import secrets as kms_secrets
from bastion.kms.keyfile import KEK_FILE, read_or_create_kek
from bastion.oauth.provider import Provider
from bastion.store.db import create_engine, migrate, sessionmaker
from bastion.store.fast import Row, open_fast_store
from bastion.store.kv import create_kv
from bastion.tokens import keys
from bastion.tokens.denylist import Denylist
from bastion.workers import SINGLE, Worker, shared_kv_path

ADMIN_USERNAME = "admin"


class NoState(Exception):
    """The data directory holds no Bastion state and was not to be created."""


def has_state(settings: Settings) -> bool:
    """Whether the data dir holds Bastion's state (its key-encryption key)."""
    return (settings.data_dir / KEK_FILE).is_file()


class _Row:
    """A SQLAlchemy row seen as the fast store's ``Row`` (by position or by name)."""

    __slots__ = ("_row",)

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getitem__(self, key: int | str, /) -> Any:
        return self._row._mapping[key] if isinstance(key, str) else self._row[key]

    def __len__(self) -> int:
        return len(self._row)


class SessionTx:
    """The fast store's ``Tx`` over a SQLAlchemy session's transaction, so that ORM changes
    and their audit record commit together (``AuditTrail.record_in``). Flush the change
    first: on SQLite that takes the write lock before the record reads the chain's head."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def one(self, sql: str, **params: Any) -> Row | None:
        row = (await self._db.execute(text(sql), params)).first()
        return None if row is None else _Row(row)

    async def all(self, sql: str, **params: Any) -> list[Row]:
        return [_Row(r) for r in (await self._db.execute(text(sql), params)).all()]

    async def run(self, sql: str, **params: Any) -> int:
        result: Any = await self._db.execute(text(sql), params)
        return int(result.rowcount)

    async def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self._db.execute(text(sql), [dict(r) for r in rows])


async def record_change(provider: Provider, db: AsyncSession, event: str,
                        **fields: Any) -> None:
    """Record ``event`` inside ``db``'s transaction: the change and its audit record commit
    together or not at all (as ``IamAdmin`` does)."""
    await db.flush()
    await provider.audit.record_in(SessionTx(db), event, **fields)


async def open_provider(settings: Settings, *, create: bool = True,
                        worker: Worker = SINGLE) -> Provider:
    """Open (and migrate) the state in ``settings.data_dir``; with ``create=False`` a data
    dir without state raises ``NoState`` instead of being created. ``worker``: one of
    several serving processes, which share their short-lived state (``workers``)."""
    if not create and not has_state(settings):
        raise NoState(str(settings.data_dir))
    # secrets are wrapped through the KMS hierarchy (kms/secrets.py): the wrapper is
    # attached to the secrets key once the KMS is open, before any secret is read
    wrapper = kms_secrets.SecretWrapper(read_or_create_kek(settings.data_dir))
    engine = create_engine(settings.effective_database_url)
    try:
        await migrate(engine)
        sessions = sessionmaker(engine)
    except BaseException:
        await engine.dispose()
        raise
    kv = create_kv(settings.redis_url,
                   shared=shared_kv_path(settings.data_dir) if worker.shared else None)
    fast = await open_fast_store(settings.effective_database_url)
    try:
        provider = Provider(settings=settings, engine=engine, sessions=sessions, kv=kv,
                            wrapper=wrapper, keyring=cast(keys.KeyRing, None),  # loaded below
                            denylist=Denylist(kv, sessions), fast=fast, worker=worker)
    except BaseException:  # the KMS root keeper could not be opened (fail closed)
        await kv.close()
        await fast.close()
        await engine.dispose()
        raise
    try:
        await kms_secrets.attach(provider.kms, wrapper)
        await kms_secrets.rewrap_legacy(fast, wrapper)
        async with sessions.begin() as db:
            await keys.bootstrap(db, wrapper, settings.signing_alg)
        async with sessions() as db:
            provider.keyring = await keys.load_keyring(db, wrapper)
        await provider.denylist.sync()
        await bootstrap_iam(provider.iam_admin)
    except BaseException:
        await provider.close()
        raise
    return provider


async def ensure_admin(provider: Provider) -> str | None:
    """Create the admin account on first start (audited in the same transaction). Returns
    the generated password (to print once), or None if the admin exists or its password
    came from the settings (which must pass the password rules)."""
    async with provider.sessions.begin() as db:
        if await get_user_by_name(db, ADMIN_USERNAME) is not None:
            return None
        given = provider.settings.admin_password
        password = given.get_secret_value() if given else secrets.token_urlsafe(18)
        user = await create_user(db, ADMIN_USERNAME, password, roles=["admin"],
                                 name="Administrator")
        await record_change(provider, db, "CreateUser",
                            user_identity={"type": "Bastion", "principalId": "first-start"},
                            request_parameters={"userName": ADMIN_USERNAME,
                                                "roles": user.roles})
    return None if given else password
