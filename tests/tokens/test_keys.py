"""Signing key lifecycle: next → active → retired, wrapped at rest, JWKS contents."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from sqlalchemy import select, update

from bastion.kms import KeyWrapper
from bastion.store.models import SigningKey
from bastion.tokens import keys

pytestmark = pytest.mark.anyio


async def _rows(provider):
    async with provider.sessions() as db:
        return {r.kid: r for r in await keys.list_keys(db)}


async def test_bootstrap_publishes_next_key_before_it_signs(provider):
    rows = await _rows(provider)
    assert sorted(r.status for r in rows.values()) == ["active", "next"]
    published = {k["kid"] for k in provider.keyring.jwks["keys"]}
    assert published == set(rows)  # the next key is in the JWKS already
    nxt = next(r for r in rows.values() if r.status == "next")
    assert provider.keyring.signing.kid != nxt.kid


async def test_rotate_promotes_published_next_and_keeps_retired_verifiable(provider):
    before = await _rows(provider)
    old_active = next(k for k, r in before.items() if r.status == "active")
    old_next = next(k for k, r in before.items() if r.status == "next")
    token = provider.tokens.access_token(subject="u", client_id="c", audience="a", scope="s",
                                         ttl=60)
    async with provider.sessions.begin() as db:
        kid = await keys.rotate(db, provider.wrapper, "ES256", provider.settings.max_jwt_ttl)
    assert kid == old_next
    await provider.refresh_keys()
    assert provider.keyring.signing.kid == old_next
    after = await _rows(provider)
    assert after[old_active].status == "retired"
    assert after[old_active].expires_at >= int(time.time()) + provider.settings.max_jwt_ttl
    assert {k["kid"] for k in provider.keyring.jwks["keys"]} == set(after)
    # a token signed before the rotation still verifies
    decoded = jwt.decode(token.token, provider.keyring.public[old_active])
    assert decoded.claims["sub"] == "u"


async def test_retired_key_leaves_jwks_after_expiry(provider):
    async with provider.sessions.begin() as db:
        await keys.rotate(db, provider.wrapper, "ES256", provider.settings.max_jwt_ttl)
        await db.execute(update(SigningKey).where(SigningKey.status == "retired")
                         .values(expires_at=int(time.time()) - 1))
    await provider.refresh_keys()
    statuses = {r.status for r in (await _rows(provider)).values()}
    assert "retired" in statuses  # still stored until purged
    assert len(provider.keyring.jwks["keys"]) == 2  # but no longer published
    await provider.purge()
    assert "retired" not in {r.status for r in (await _rows(provider)).values()}


async def test_private_keys_are_wrapped_at_rest(provider):
    async with provider.sessions() as db:
        blobs = (await db.scalars(select(SigningKey.private_key))).all()
    for blob in blobs:
        assert b"PRIVATE KEY" not in blob
        with pytest.raises(Exception):
            KeyWrapper(b"\x00" * 32).unwrap(blob, "signing-key")
    for jwk in provider.keyring.jwks["keys"]:
        assert "d" not in jwk


@pytest.mark.parametrize("alg", ["RS256", "EdDSA", "ES256"])
async def test_each_algorithm_signs_and_verifies(provider, alg):
    async with provider.sessions.begin() as db:
        await db.execute(update(SigningKey).where(SigningKey.status == "next")
                         .values(status="retired", expires_at=int(time.time()) + 60))
        await keys.rotate(db, provider.wrapper, alg, provider.settings.max_jwt_ttl)
        await keys.rotate(db, provider.wrapper, alg, provider.settings.max_jwt_ttl)
    await provider.refresh_keys()
    assert provider.keyring.signing_alg == alg
    issued = provider.tokens.access_token(subject="u", client_id="c",
                                          audience=provider.api_audience, scope="s", ttl=60)
    verified = await provider.verifier.verify(issued.token)
    assert verified.header["alg"] == alg and verified.subject == "u"
