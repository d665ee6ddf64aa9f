"""Issuing JWTs: access tokens per RFC 9068 and ID tokens per OpenID Connect Core §2.

The token format is a strategy kept apart from the grant logic: grants hand over who and what,
this module decides the claims layout and signs with the key ring's active key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import SecurityWarning

from bastion.tokens.binding import bound_claims
from bastion.tokens.keys import KeyRing


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int
    issued_at: int


class TokenIssuer:
    def __init__(self, *, issuer: str, keyring: Callable[[], KeyRing]) -> None:
        self.issuer = issuer
        self._keyring = keyring

    def _sign(self, typ: str, claims: dict[str, Any]) -> str:
        ring = self._keyring()
        header = {"alg": ring.signing_alg, "typ": typ, "kid": ring.signing.kid}
        if ring.signing_alg == "EdDSA":
            # RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519"; relying
            # parties still expect "EdDSA", so we keep it and silence joserfc's warning.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SecurityWarning)
                return jwt.encode(header, claims, ring.signing, algorithms=["EdDSA"])
        return jwt.encode(header, claims, ring.signing, algorithms=[ring.signing_alg])

    def access_token(self, *, subject: str, client_id: str, audience: str | list[str],
                     scope: str, ttl: int, roles: Iterable[str] = (),
                     extra: dict[str, Any] | None = None) -> IssuedToken:
        """RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti (+ scope, auth_time...)."""
        now = int(time.time())
        jti = secrets.token_urlsafe(18)
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": subject, "aud": audience, "exp": now + ttl,
            "iat": now, "nbf": now, "jti": jti, "client_id": client_id, "scope": scope,
            "roles": sorted(set(roles)),
        }
        if extra:
            claims.update(extra)
        claims.update(bound_claims())  # RFC 8705 §3.1: cnf.x5t#S256 on an mTLS request
        # RFC 9068 §2.1: typ MUST be "at+jwt"
        return IssuedToken(self._sign("at+jwt", claims), jti, now + ttl, now)

    def id_token(self, *, subject: str, client_id: str, ttl: int, auth_time: int | None,
                 nonce: str | None, sid: str | None, amr: Iterable[str] = (),
                 access_token: str | None = None, code: str | None = None,
                 extra: dict[str, Any] | None = None) -> IssuedToken:
        """OIDC Core §2 and §3.1.3.6 (at_hash, c_hash)."""
        now = int(time.time())
        jti = secrets.token_urlsafe(18)
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": subject, "aud": client_id, "azp": client_id,
            "exp": now + ttl, "iat": now, "jti": jti,
        }
        if auth_time is not None:
            claims["auth_time"] = auth_time
        if nonce is not None:
            claims["nonce"] = nonce
        if sid is not None:
            claims["sid"] = sid
        amr_list = list(amr)
        if amr_list:
            claims["amr"] = amr_list
        alg = self._keyring().signing_alg
        if access_token is not None:
            claims["at_hash"] = left_half_hash(access_token, alg)
        if code is not None:
            claims["c_hash"] = left_half_hash(code, alg)
        if extra:
            claims.update(extra)
        return IssuedToken(self._sign("JWT", claims), jti, now + ttl, now)


def left_half_hash(value: str, alg: str) -> str:
    """OIDC Core §3.1.3.6: base64url of the left half of the hash used by ``alg``."""
    digest = hashlib.sha512(value.encode()).digest() if alg == "EdDSA" else \
        hashlib.sha256(value.encode()).digest()
    half = digest[: len(digest) // 2]
    return base64.urlsafe_b64encode(half).rstrip(b"=").decode()
