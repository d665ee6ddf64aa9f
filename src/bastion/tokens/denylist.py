"""The access-token ``jti`` denylist: revoked tokens stop working before they expire.

Revocations are written to the database (the record) and to the KV (the fast path checked
on every request). Instances without a shared Redis pull new database rows into their local
KV every few seconds (``sync``), so a revocation reaches every instance either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.store.fast import Tx
from bastion.store.kv import KV
from bastion.store.models import RevokedToken


class Denylist:
    def __init__(self, kv: KV, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._kv = kv
        self._sessions = sessions
        self._synced_to = 0

    async def is_revoked(self, jti: str) -> bool:
        return await self._kv.get(f"deny:{jti}") is not None

    async def revoke(self, tx: Tx, items: Iterable[tuple[str, int]]) -> None:
        """Deny each (jti, expires_at) inside the caller's transaction; the KV is updated at
        once (a denial that outlives a rolled-back transaction is harmless)."""
        now = int(time.time())
        for jti, exp in items:
            if exp <= now or not jti:
                continue
            await tx.run("INSERT INTO revoked_tokens (jti, expires_at, revoked_at) "
                         "VALUES (:jti, :exp, :now) ON CONFLICT (jti) DO NOTHING",
                         jti=jti, exp=exp, now=now)
            await self._kv.set(f"deny:{jti}", b"1", exp - now + 1)

    async def sync(self) -> int:
        """Copy revocations made elsewhere into the KV. Returns how many were loaded."""
        now = int(time.time())
        since = max(0, self._synced_to - 5)  # overlap: rows committed out of order
        async with self._sessions() as db:
            rows = (await db.execute(select(RevokedToken.jti, RevokedToken.expires_at,
                                            RevokedToken.revoked_at)
                                     .where(RevokedToken.revoked_at >= since,
                                            RevokedToken.expires_at > now))).all()
        for jti, exp, revoked_at in rows:
            await self._kv.set(f"deny:{jti}", b"1", exp - now + 1)
            self._synced_to = max(self._synced_to, revoked_at)
        return len(rows)

    @staticmethod
    async def purge(db: AsyncSession, now: int) -> None:
        await db.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
