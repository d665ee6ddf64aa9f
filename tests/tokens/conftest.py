"""Fixtures for token tests: real keys generated per session and a hand-forging token kit."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.tokens.jwks import StaticJWKS
from bastion.tokens.verify import TokenVerifier

ISSUER = "https://id.example.test"
AUDIENCE = "https://api.example.test"
DROP = object()  # header/claim override value meaning "remove this member"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")))


def _alg_for(key: Key) -> str:
    if isinstance(key, RSAKey):
        return "RS256"
    if isinstance(key, OKPKey):
        return "EdDSA"
    return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[str(key.get("crv"))]


def _merge(base: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
    out = {**base, **(over or {})}
    return {k: v for k, v in out.items() if v is not DROP}


@dataclass
class Kit:
    """Keys plus a forger that builds compact JWS by hand, signing with joserfc's algorithm
    models directly so any header (even ones joserfc would refuse to emit) can be signed."""

    ec: ECKey = field(default_factory=lambda: _ec("P-256", "ec-1"))
    ec384: ECKey = field(default_factory=lambda: _ec("P-384", "ec-384"))
    rsa: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, {"kid": "rsa-1", "use": "sig"})
    )
    rsa_ps: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(
            2048, {"kid": "rsa-ps", "use": "sig", "alg": "PS256"}
        )
    )
    ed: OKPKey = field(
        default_factory=lambda: OKPKey.generate_key("Ed25519", {"kid": "ed-1", "use": "sig"})
    )
    # Not published: an attacker's key that reuses a published kid.
    rogue: ECKey = field(default_factory=lambda: _ec("P-256", "ec-1"))

    @property
    def published(self) -> list[Key]:
        return [self.ec, self.ec384, self.rsa, self.rsa_ps, self.ed]

    @staticmethod
    def jwks(*keys: Key) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in keys]}

    @staticmethod
    def claims(**over: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": ISSUER,
            "sub": "user-42",
            "aud": AUDIENCE,
            "exp": now + 300,
            "iat": now,
            "jti": "jti-1",
            "client_id": "client-7",
            "scope": "read write",
            "roles": ["admin", 7, "ops"],
        }
        return _merge(base, over)

    def forge(
        self,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        *,
        key: Key | None = None,
        payload: bytes | None = None,
        raw_header: bytes | None = None,
        signature: bytes | None = None,
    ) -> str:
        key = key or self.ec
        hdr = _merge({"alg": _alg_for(key), "typ": "at+jwt", "kid": key.kid}, header)
        head = b64(raw_header) if raw_header is not None else b64json(hdr)
        body = b64(payload) if payload is not None else b64json(self.claims(**(claims or {})))
        signing_input = f"{head}.{body}".encode()
        if signature is None:
            signature = JWSRegistry.algorithms[hdr["alg"]].sign(signing_input, key)
        return f"{head}.{body}.{b64(signature)}"


def _ec(crv: str, kid: str) -> ECKey:
    return ECKey.generate_key(crv, {"kid": kid, "use": "sig"})


@pytest.fixture(scope="session")
def kit() -> Kit:
    return Kit()


@pytest.fixture
def make_verifier(kit: Kit) -> Callable[..., TokenVerifier]:
    def make(**over: Any) -> TokenVerifier:
        options: dict[str, Any] = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks": StaticJWKS(kit.jwks(*kit.published)),
            "algorithms": ("ES256", "ES384", "RS256", "PS256", "EdDSA"),
        }
        options.update(over)
        return TokenVerifier(**options)

    return make
