"""Looking up a presented token of either kind (shared by revocation and introspection)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.oauth.families import token_hash
from bastion.oauth.provider import Provider
from bastion.store.models import RefreshToken, TokenFamily
from bastion.tokens.errors import BearerError
from bastion.tokens.verify import VerifiedToken


@dataclass(frozen=True)
class FoundRefresh:
    token: RefreshToken
    family: TokenFamily


async def find_refresh(provider: Provider, db: object, presented: str) -> FoundRefresh | None:
    token = await db.get(RefreshToken, token_hash(presented))  # type: ignore[attr-defined]
    if token is None:
        return None
    family = await db.get(TokenFamily, token.family_id)  # type: ignore[attr-defined]
    return FoundRefresh(token, family) if family else None


async def find_access(provider: Provider, presented: str) -> VerifiedToken | None:
    try:
        return await provider.verifier.verify(presented)
    except BearerError:
        return None
