"""JWT access token verification for resource servers: RFC 9068 — JSON Web Token (JWT)
Profile for OAuth 2.0 Access Tokens, following RFC 8725 — JSON Web Token Best Current Practices.

https://www.rfc-editor.org/rfc/rfc9068#section-4
https://www.rfc-editor.org/rfc/rfc8725#section-3

Checks run cheapest first and every failure is an ``InvalidToken`` (RFC 6750 §3.1): size cap,
compact JWS shape, header (``alg`` allowlist, ``typ``, no embedded or remote keys, no
``crit``), key lookup and key/algorithm match, signature (joserfc), then claims and the
denylist. Resource servers should always set ``audience``: without it a token minted for
another service of the same issuer is accepted (RFC 8725 §3.9, RFC 9068 §4).
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeGuard

from joserfc import jws
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key

from bastion.tokens.algorithms import ALLOWED, KEY_FOR_ALG
from bastion.tokens.errors import BearerError, InvalidToken
from bastion.tokens.jwks import JWKSource

__all__ = ["ALLOWED_ALGORITHMS", "Denylist", "TokenVerifier", "VerifiedToken"]

# RFC 8725 §3.1–3.2: the explicit allowlist of asymmetric algorithms, each bound to the key
# type (and curves) that may verify it. Never "none" or HS* (see bastion.tokens.algorithms).
_KEY_FOR_ALG = KEY_FOR_ALG
ALLOWED_ALGORITHMS = ALLOWED

# Header parameters whose presence alone refuses the token: keys are never taken from the
# token itself or fetched from where it points (RFC 8725 §3.10 spirit; RFC 7515 §4.1.2–4.1.6);
# we understand no extensions, so any "crit" is refused (RFC 7515 §4.1.11).
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A verified access token and the claims a resource server authorizes with."""

    claims: dict[str, Any]
    header: dict[str, Any]
    subject: str
    client_id: str | None
    scopes: frozenset[str]
    roles: frozenset[str]
    jti: str | None
    expires_at: int


class Denylist(Protocol):
    """Revoked token ids. ``is_revoked`` must answer for every ``jti`` it has been told about
    until that token's ``exp``; an exception refuses the token (fail closed)."""

    async def is_revoked(self, jti: str) -> bool: ...


class _Registry(jws.JWSRegistry):
    """A joserfc registry for our allowlist, vetted at construction: it neither emits
    joserfc's deprecation warnings (e.g. EdDSA per RFC 9864) nor refuses unknown header
    names (RFC 7515 §4: unknown non-critical parameters MUST be ignored)."""

    def __init__(self, algorithms: frozenset[str], max_bytes: int) -> None:
        super().__init__(algorithms=algorithms, strict_check_header=False)
        self.max_header_length = self.max_payload_length = max_bytes

    def get_alg(self, name: str) -> JWSAlgModel:
        if self.allowed is None or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError("algorithm not allowed")
        return self.algorithms[name]


def _fail(description: str, debug: str | None = None) -> NoReturn:
    raise InvalidToken(description, debug=debug or description)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # RFC 7515 §5.2 / RFC 7519 §4: reject duplicate names
        raise ValueError("duplicate member name")
    return obj


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-JSON constant {name}")


def _json_object(data: bytes) -> dict[str, Any]:
    value = json.loads(
        data, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
    )
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _b64json(segment: str) -> dict[str, Any]:
    return _json_object(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _media_type(value: str) -> str:
    value = value.lower()
    return value.removeprefix("application/")


def _strings(value: Collection[str], what: str) -> frozenset[str]:
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a collection of non-empty strings")
    return frozenset(value)


class TokenVerifier:
    """Verifies JWT access tokens (RFC 9068) issued by one issuer.

    ``sub`` and ``exp`` are always required (``VerifiedToken.subject`` and ``expires_at``
    need them) on top of ``required_claims``. With a ``denylist``, a token without ``jti``
    is refused, since it could never be revoked.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Collection[str] | None,
        jwks: JWKSource,
        algorithms: Collection[str] = ("ES256",),
        leeway: int = 30,
        token_type: str | None = "at+jwt",  # noqa: S107 - a media type, not a secret
        denylist: Denylist | None = None,
        max_token_bytes: int = 8192,
        required_claims: Collection[str] = ("iss", "sub", "exp", "iat", "jti"),
        cache_size: int = 4096,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer must be a non-empty string")
        algs = _strings(algorithms, "algorithms")
        if not algs or not algs <= ALLOWED_ALGORITHMS:
            bad = sorted(algs - ALLOWED_ALGORITHMS) or "(empty)"
            raise ValueError(f"algorithms must be asymmetric JWS algorithms from "
                             f"{sorted(ALLOWED_ALGORITHMS)}; refused: {bad}")
        if audience is not None:
            audiences = _strings([audience] if isinstance(audience, str) else audience, "audience")
            if not audiences:
                raise ValueError("audience must not be empty (use None to skip the check)")
        if isinstance(leeway, bool) or not isinstance(leeway, int) or leeway < 0:
            raise ValueError("leeway must be a non-negative int (seconds)")
        if isinstance(max_token_bytes, bool) or not isinstance(max_token_bytes, int) \
                or max_token_bytes <= 0:
            raise ValueError("max_token_bytes must be a positive int")
        if token_type is not None and not token_type:
            raise ValueError("token_type must be a non-empty string or None")
        self.issuer = issuer
        self.audiences: frozenset[str] | None = audiences if audience is not None else None
        self.algorithms = algs
        self.leeway = leeway
        self.token_type = _media_type(token_type) if token_type is not None else None
        self.required_claims = _strings(required_claims, "required_claims") | {"sub", "exp"}
        self.max_token_bytes = max_token_bytes
        self._jwks = jwks
        self._denylist = denylist
        self._registry = _Registry(algs, max_token_bytes)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError("cache_size must be a non-negative int")
        self._cache_size = cache_size
        # token → (verified claims, the key object that verified it). A client sends the
        # same access token many times until it expires; a hit skips the signature check but
        # never the expiry, the key's continued presence in the JWKS, or the denylist.
        self._cache: dict[str, tuple[VerifiedToken, Key]] = {}

    async def verify(self, token: str) -> VerifiedToken:
        """Verify ``token``; raises ``InvalidToken`` for every kind of failure."""
        try:
            return await self._verify(token)
        except BearerError:
            raise
        except Exception as exc:  # never leak a stack trace; BaseException still propagates
            raise InvalidToken("invalid token", debug=f"unexpected {type(exc).__name__}") from None

    async def _verify(self, token: str) -> VerifiedToken:
        hit = self._cache.get(token) if isinstance(token, str) else None
        if hit is not None:
            verified, key = hit
            if time.time() < verified.expires_at + self.leeway and \
                    await self._jwks.get_key(verified.header.get("kid")) is key:
                await self._check_denylist(verified)
                return verified
            self._cache.pop(token, None)  # expired, or its key was rotated out or replaced
        header, key = await self._check_header(token)
        try:  # signature: joserfc (RFC 7515 §5.2)
            payload = jws.deserialize_compact(token, key, registry=self._registry).payload
        except Exception as exc:
            debug = f"signature check failed: {type(exc).__name__}"
            raise InvalidToken("invalid signature", debug=debug) from None
        try:
            claims = _json_object(payload)
        except ValueError:  # RFC 7519 §7.2 step 10
            raise InvalidToken("malformed token", debug="claims are not a JSON object") from None
        verified = self._check_claims(claims, header)
        await self._check_denylist(verified)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))  # oldest first
            self._cache[token] = (verified, key)
        return verified

    async def _check_denylist(self, verified: VerifiedToken) -> None:
        if self._denylist is not None:
            if verified.jti is None:
                _fail("missing claim", "jti required for revocation checks")
            if await self._denylist.is_revoked(verified.jti):
                _fail("token revoked")

    async def _check_header(self, token: str) -> tuple[dict[str, Any], Key]:
        # Size cap before any parsing or crypto.
        if not isinstance(token, str) or len(token) > self.max_token_bytes:
            _fail("malformed token", "not a string or over the size cap")
        segments = token.split(".")
        if len(segments) == 5:
            _fail("malformed token", "encrypted (JWE) tokens are not supported")
        # RFC 7515 §7.1: three base64url segments, no padding (RFC 7515 §2).
        if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) for s in segments):
            _fail("malformed token", "not a compact JWS")
        try:
            header = _b64json(segments[0])
        except ValueError:  # binascii.Error and JSONDecodeError are ValueErrors
            raise InvalidToken("malformed token", debug="header is not base64url JSON") from None

        alg = header.get("alg")  # RFC 8725 §3.1
        if not isinstance(alg, str) or alg not in self.algorithms:
            _fail("unsupported algorithm", f"alg {alg!r} not allowed"[:80])
        if self.token_type is not None:  # RFC 9068 §4, RFC 8725 §3.11
            typ = header.get("typ")
            if not isinstance(typ, str) or _media_type(typ) != self.token_type:
                _fail("unsupported token type")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                _fail("unsupported header", f"header {name!r} refused")
        if "b64" in header and header["b64"] is not True:  # RFC 7797 unencoded payloads
            _fail("unsupported header", "b64 refused")

        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            _fail("malformed token", "kid is not a string")
        key = await self._jwks.get_key(kid)
        if key is None:
            _fail("unknown signing key", "kid not found" if kid else "no kid and not one key")
        self._check_key(key, alg)
        return header, key

    @staticmethod
    def _check_key(key: Key, alg: str) -> None:
        """RFC 8725 §3.1: the key must be of the type (and curve) the algorithm uses."""
        kty, curves = _KEY_FOR_ALG[alg]
        if key.key_type != kty or (curves is not None and key.get("crv") not in curves):
            _fail("unknown signing key", f"key type does not match {alg}")
        key_alg = key.get("alg")  # RFC 7517 §4.4
        if key_alg is not None and key_alg != alg:
            _fail("unknown signing key", f"key is bound to another alg than {alg}")
        if key.get("use", "sig") != "sig":
            _fail("unknown signing key", "key use is not sig")

    def _check_claims(self, claims: dict[str, Any], header: dict[str, Any]) -> VerifiedToken:
        """RFC 7519 §4.1 registered claims and RFC 9068 §2.2 access token claims."""
        missing = [name for name in sorted(self.required_claims) if name not in claims]
        if missing:
            _fail("missing claim", f"missing {missing}")
        now = time.time()
        for name in ("exp", "nbf", "iat"):  # RFC 7519 §2 NumericDate
            if name in claims and not _is_number(claims[name]):
                _fail("invalid claim", f"{name} is not a NumericDate")
        if now >= claims["exp"] + self.leeway:  # RFC 7519 §4.1.4: "on or after" → reject
            _fail("token expired")
        if "nbf" in claims and now + self.leeway < claims["nbf"]:  # RFC 7519 §4.1.5
            _fail("token not yet valid")
        if "iat" in claims and now + self.leeway < claims["iat"]:  # RFC 9068 §4
            _fail("token issued in the future")
        if "iss" in claims or "iss" in self.required_claims:  # RFC 9068 §4, RFC 8725 §3.8
            if claims.get("iss") != self.issuer:
                _fail("invalid issuer")
        if self.audiences is not None:  # RFC 7519 §4.1.3, RFC 9068 §4
            self._check_audience(claims.get("aud"))
        elif "aud" in claims and not _is_str_or_str_list(claims["aud"]):
            _fail("invalid claim", "aud malformed")

        sub, jti, client_id = claims["sub"], claims.get("jti"), claims.get("client_id")
        if not isinstance(sub, str) or not sub:
            _fail("invalid claim", "sub is not a non-empty string")
        if jti is not None and (not isinstance(jti, str) or not jti):
            _fail("invalid claim", "jti is not a non-empty string")
        if client_id is not None and not isinstance(client_id, str):
            _fail("invalid claim", "client_id is not a string")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):  # RFC 9068 §2.2.3, RFC 8693 §4.2
            _fail("invalid claim", "scope is not a string")
        roles = claims.get("roles", [])
        if not isinstance(roles, list):  # RFC 9068 §2.2.3.1 (SCIM multi-valued)
            _fail("invalid claim", "roles is not an array")
        return VerifiedToken(
            claims=claims,
            header=header,
            subject=sub,
            client_id=client_id,
            scopes=frozenset(scope.split()),
            roles=frozenset(r for r in roles if isinstance(r, str)),
            jti=jti,
            expires_at=int(claims["exp"]),
        )

    def _check_audience(self, aud: object) -> None:
        assert self.audiences is not None
        if not _is_str_or_str_list(aud):
            _fail("invalid audience", "aud missing or malformed")
        values = {aud} if isinstance(aud, str) else set(aud)
        if not values & self.audiences:
            _fail("invalid audience")


def _is_str_or_str_list(value: object) -> TypeGuard[str | list[str]]:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
