"""The verified-token cache skips only the signature: expiry, key presence and the denylist
are checked on every use."""

from __future__ import annotations

import pytest

from bastion.tokens import verify as verify_mod
from bastion.tokens.errors import InvalidToken
from bastion.tokens.jwks import StaticJWKS
from tests.tokens.conftest import Kit

pytestmark = pytest.mark.anyio


class Deny:
    def __init__(self) -> None:
        self.revoked: set[str] = set()

    async def is_revoked(self, jti: str) -> bool:
        return jti in self.revoked


def _count_signature_checks(monkeypatch) -> list[int]:
    calls = [0]
    real = verify_mod.jws.deserialize_compact

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(verify_mod.jws, "deserialize_compact", counting)
    return calls


async def test_second_use_skips_signature_only(kit: Kit, make_verifier, monkeypatch):
    calls = _count_signature_checks(monkeypatch)
    verifier = make_verifier()
    token = kit.forge()
    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert first == second and calls[0] == 1


async def test_cached_token_still_expires(kit: Kit, make_verifier, monkeypatch):
    verifier = make_verifier(leeway=0)
    token = kit.forge()
    verified = await verifier.verify(token)
    monkeypatch.setattr(verify_mod.time, "time", lambda: verified.expires_at + 1)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_cached_token_revoked_is_refused(kit: Kit, make_verifier):
    deny = Deny()
    verifier = make_verifier(denylist=deny)
    token = kit.forge()
    verified = await verifier.verify(token)
    deny.revoked.add(verified.jti)
    with pytest.raises(InvalidToken, match="revoked"):
        await verifier.verify(token)


async def test_key_removed_from_jwks_invalidates_cache(kit: Kit, make_verifier):
    jwks = StaticJWKS(kit.jwks(kit.ec))
    verifier = make_verifier(jwks=jwks)
    token = kit.forge()
    await verifier.verify(token)
    jwks.replace(kit.jwks(kit.rsa))  # the signing key is no longer published
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await verifier.verify(token)


async def test_cache_is_bounded_and_can_be_disabled(kit: Kit, make_verifier, monkeypatch):
    calls = _count_signature_checks(monkeypatch)
    small = make_verifier(cache_size=2)
    tokens = [kit.forge(claims={"jti": f"j{i}"}) for i in range(3)]
    for t in tokens:
        await small.verify(t)
    assert len(small._cache) == 2  # noqa: SLF001
    off = make_verifier(cache_size=0)
    await off.verify(tokens[0])
    await off.verify(tokens[0])
    assert calls[0] == 5


@pytest.mark.parametrize("size", [-1, True, 1.5])
def test_cache_size_validated(make_verifier, size):
    with pytest.raises(ValueError, match="cache_size"):
        make_verifier(cache_size=size)
