"""Opening Bastion's state: database (migrated), KV, key-encryption key, signing keys, and
the ``Provider`` that endpoints use. Shared by the server and the CLI."""

from __future__ import annotations

import secrets

from bastion.config import Settings
from bastion.iam.bootstrap import bootstrap as bootstrap_iam
from bastion.identity.users import create_user, get_user_by_name
from bastion.kms import load_or_create_kek
from bastion.oauth.provider import Provider
from bastion.store.db import create_engine, migrate, sessionmaker
from bastion.store.fast import open_fast_store
from bastion.store.kv import create_kv
from bastion.tokens import keys
from bastion.tokens.denylist import Denylist

ADMIN_USERNAME = "admin"


async def open_provider(settings: Settings) -> Provider:
    wrapper = load_or_create_kek(settings.data_dir)
    engine = create_engine(settings.effective_database_url)
    try:
        await migrate(engine)
        sessions = sessionmaker(engine)
        async with sessions.begin() as db:
            await keys.bootstrap(db, wrapper, settings.signing_alg)
        async with sessions() as db:
            ring = await keys.load_keyring(db, wrapper)
    except BaseException:
        await engine.dispose()
        raise
    kv = create_kv(settings.redis_url)
    fast = await open_fast_store(settings.effective_database_url)
    provider = Provider(settings=settings, engine=engine, sessions=sessions, kv=kv,
                        wrapper=wrapper, keyring=ring, denylist=Denylist(kv, sessions),
                        fast=fast)
    try:
        await provider.denylist.sync()
        await bootstrap_iam(provider.iam_admin)
    except BaseException:
        await provider.close()
        raise
    return provider


async def ensure_admin(provider: Provider) -> str | None:
    """Create the admin account on first start. Returns the generated password (to print
    once), or None if the admin exists or its password came from the settings."""
    async with provider.sessions.begin() as db:
        if await get_user_by_name(db, ADMIN_USERNAME) is not None:
            return None
        given = provider.settings.admin_password
        password = given.get_secret_value() if given else secrets.token_urlsafe(18)
        await create_user(db, ADMIN_USERNAME, password, roles=["admin"], name="Administrator")
    return None if given else password
