"""Signing keys: generation, rotation, and the in-memory key ring a server signs with.

Lifecycle: ``next`` (published in the JWKS, signs nothing) → ``active`` (signs) → ``retired``
(published until everything it signed has expired, then dropped). ``rotate`` promotes the
published ``next`` key, so resource servers already know a key before it signs anything.
Private keys are stored only wrapped by the key-encryption key.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey, KeyParameters, OKPKey, RSAKey
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.kms import KeyWrapper
from bastion.store.models import SigningKey
from bastion.tokens.algorithms import SIGNING

AnyKey = ECKey | RSAKey | OKPKey
ALGORITHMS = SIGNING  # the algorithms of keys Bastion generates (bastion.tokens.algorithms)
_PURPOSE = "signing-key"
RETIRE_MARGIN = 120  # seconds of clock skew allowance on top of the longest token lifetime


def generate_key(alg: str, kid: str) -> AnyKey:
    params: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params, private=True)
    if alg == "RS256":
        return RSAKey.generate_key(3072, parameters=params, private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", parameters=params, private=True)
    raise ValueError(f"unsupported signing algorithm: {alg}")


def _import(alg: str, pem: bytes, kid: str) -> AnyKey:
    params: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    cls: type[AnyKey] = {"ES256": ECKey, "RS256": RSAKey, "EdDSA": OKPKey}[alg]  # type: ignore[assignment]
    return cls.import_key(pem, parameters=params)


def _new_row(alg: str, status: str, wrapper: KeyWrapper, now: int) -> SigningKey:
    kid = secrets.token_urlsafe(12)
    key = generate_key(alg, kid)
    return SigningKey(
        kid=kid, alg=alg, status=status,
        private_key=wrapper.wrap(key.as_pem(private=True), _PURPOSE),
        public_jwk=key.as_dict(private=False),
        created_at=now, activated_at=now if status == "active" else None,
        retired_at=None, expires_at=None,
    )


async def bootstrap(db: AsyncSession, wrapper: KeyWrapper, alg: str) -> bool:
    """Create an active and a next key when there is no active key. True if created."""
    active = await db.scalar(select(SigningKey.kid).where(SigningKey.status == "active"))
    if active is not None:
        return False
    now = int(time.time())
    db.add(_new_row(alg, "active", wrapper, now))
    nxt = await db.scalar(select(SigningKey).where(SigningKey.status == "next"))
    if nxt is None:
        db.add(_new_row(alg, "next", wrapper, now))
    return True


async def rotate(db: AsyncSession, wrapper: KeyWrapper, alg: str, max_jwt_ttl: int) -> str:
    """Promote ``next`` to ``active``, retire the active key, publish a new ``next``.

    Returns the kid that now signs. The retired key stays in the JWKS for ``max_jwt_ttl``
    plus a margin, so every token it signed still verifies until it expires.
    """
    now = int(time.time())
    rows = (await db.scalars(select(SigningKey).where(
        SigningKey.status.in_(("active", "next"))).with_for_update())).all()
    nxt = next((r for r in rows if r.status == "next"), None)
    for row in rows:
        if row.status == "active":
            row.status, row.retired_at = "retired", now
            row.expires_at = now + max_jwt_ttl + RETIRE_MARGIN
    if nxt is None:  # no published successor (e.g. after an alg change): make one now
        nxt = _new_row(alg, "next", wrapper, now)
        db.add(nxt)
    nxt.status, nxt.activated_at = "active", now
    db.add(_new_row(alg, "next", wrapper, now))
    await db.flush()
    return nxt.kid


async def purge_expired(db: AsyncSession, now: int) -> None:
    await db.execute(delete(SigningKey).where(SigningKey.status == "retired",
                                              SigningKey.expires_at < now))


async def list_keys(db: AsyncSession) -> list[SigningKey]:
    return list((await db.scalars(select(SigningKey).order_by(SigningKey.created_at))).all())


@dataclass(frozen=True)
class KeyRing:
    """A snapshot: the key that signs and the public keys that verify."""

    signing: AnyKey
    signing_alg: str
    public: dict[str, AnyKey]  # kid -> public key, for local verification
    jwks: dict[str, Any]  # the published document
    fingerprint: tuple[tuple[str, str], ...]


async def load_keyring(db: AsyncSession, wrapper: KeyWrapper,
                       previous: KeyRing | None = None) -> KeyRing:
    now = int(time.time())
    rows = (await db.scalars(select(SigningKey).order_by(SigningKey.created_at))).all()
    live = [r for r in rows if r.status != "retired" or (r.expires_at or 0) > now]
    fingerprint = tuple((r.kid, r.status) for r in live)
    if previous is not None and previous.fingerprint == fingerprint:
        return previous
    active = [r for r in live if r.status == "active"]
    if not active:
        raise RuntimeError("no active signing key: run `bastion serve` once or "
                           "`bastion keys rotate`")
    row = max(active, key=lambda r: r.activated_at or 0)
    signing = _import(row.alg, wrapper.unwrap(row.private_key, _PURPOSE), row.kid)
    public: dict[str, AnyKey] = {}
    for r in live:
        key_cls = {"ES256": ECKey, "RS256": RSAKey, "EdDSA": OKPKey}[r.alg]
        public[r.kid] = key_cls.import_key(r.public_jwk)  # type: ignore[attr-defined]
    jwks = {"keys": [dict(r.public_jwk) for r in live]}
    return KeyRing(signing=signing, signing_alg=row.alg, public=public, jwks=jwks,
                   fingerprint=fingerprint)
