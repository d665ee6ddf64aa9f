"""Looking up a presented token of either kind (shared by revocation and introspection)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.oauth.families import Family, token_hash
from bastion.oauth.provider import Provider
from bastion.tokens.errors import BearerError
from bastion.tokens.verify import VerifiedToken


@dataclass(frozen=True)
class FoundRefresh:
    created_at: int
    rotated_at: int | None
    family: Family


async def find_refresh(provider: Provider, presented: str) -> FoundRefresh | None:
    row = await provider.fast.one(
        "SELECT f.*, r.created_at AS token_created_at, r.rotated_at AS token_rotated_at "
        "FROM refresh_tokens r JOIN token_families f ON f.id = r.family_id "
        "WHERE r.token_hash = :h", h=token_hash(presented))
    if row is None:
        return None
    return FoundRefresh(row["token_created_at"], row["token_rotated_at"], Family.of(row))


async def find_access(provider: Provider, presented: str) -> VerifiedToken | None:
    try:
        return await provider.verifier.verify(presented)
    except BearerError:
        return None
