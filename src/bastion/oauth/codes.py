"""Authorization code storage: a narrow interface the code grant depends on (fosite's
``AuthorizationCodeStorage``), and its SQL implementation. Records are keyed by the SHA-256
of the code, never the code itself."""

from __future__ import annotations

from typing import Protocol

from bastion.store.fast import Row, Tx


class AuthorizationCodes(Protocol):
    async def consume(self, tx: Tx, code_hash: str, now: int) -> Row | None:
        """Mark the code used and return its record. Atomic: of two concurrent calls for one
        code only one gets the record; the other, and every later call, gets None
        (RFC 6749 §4.1.2: single use). A code stays consumed even if the exchange fails."""
        ...

    async def family_of(self, tx: Tx, code_hash: str) -> str | None:
        """The token family issued from a code, if any (to revoke it on replay)."""
        ...

    async def bind_family(self, tx: Tx, code_hash: str, family_id: str) -> None:
        """Remember which token family the code was exchanged for."""
        ...


class SqlAuthorizationCodes:
    """``authorization_codes`` through the fast store (SQLite or PostgreSQL)."""

    async def consume(self, tx: Tx, code_hash: str, now: int) -> Row | None:
        # one conditional UPDATE … RETURNING: the database decides the single winner
        return await tx.one("UPDATE authorization_codes SET consumed_at = :now "
                            "WHERE code_hash = :h AND consumed_at IS NULL RETURNING *",
                            now=now, h=code_hash)

    async def family_of(self, tx: Tx, code_hash: str) -> str | None:
        row = await tx.one("SELECT family_id FROM authorization_codes WHERE code_hash = :h",
                           h=code_hash)
        return None if row is None else row["family_id"]

    async def bind_family(self, tx: Tx, code_hash: str, family_id: str) -> None:
        await tx.run("UPDATE authorization_codes SET family_id = :f WHERE code_hash = :h",
                     f=family_id, h=code_hash)
