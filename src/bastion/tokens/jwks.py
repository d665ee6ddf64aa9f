"""Verification key sources: JSON Web Key Sets (RFC 7517 §5) for a resource server.

https://www.rfc-editor.org/rfc/rfc7517#section-5

A source only ever holds *public signature* keys. When a set is loaded, each JWK is checked and
a key is ignored (and logged) when it:

- has a ``kty`` we do not verify with (RFC 7517 §5: "Implementations SHOULD ignore JWKs
  within a JWK Set that use "kty" values that are not understood by them"), or a curve that
  is not a signature curve, or an RSA modulus under 2048 bits (RFC 7518 §3.3);
- has ``use`` other than ``sig`` or ``key_ops`` without ``verify`` (RFC 7517 §4.2, §4.3);
- carries private members (``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``, ``oth``, ``k``):
  a published set with private keys is a leak, and we never hold secrets.

Refreshing sources refetch on an unknown ``kid`` (key rollover) at most once per
``min_refresh_interval``, so random ``kid`` values cannot amplify fetches; concurrent
refreshes coalesce behind one lock; a failed refresh keeps the keys already held.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import httpx
from joserfc.jwk import JWKRegistry, Key, RSAKey

from bastion.edge.http import is_loopback_host

__all__ = ["CallableJWKS", "JWKSource", "RemoteJWKS", "StaticJWKS", "parse_jwks"]

logger = logging.getLogger(__name__)

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_SIG_CURVES = {"EC": frozenset({"P-256", "P-384", "P-521"}), "OKP": frozenset({"Ed25519", "Ed448"})}
_MIN_RSA_BITS = 2048


class JWKSource(Protocol):
    """Where a verifier finds public keys.

    ``get_key(kid)`` returns the public signature key with that ``kid``, or ``None`` if it is
    unknown. With ``kid=None`` it returns the only key of the set, or ``None`` when the set
    does not hold exactly one key (the token must then name its key).
    """

    async def get_key(self, kid: str | None) -> Key | None: ...


@dataclass(frozen=True)
class _KeyTable:
    by_kid: dict[str, Key] = field(default_factory=dict)
    keys: tuple[Key, ...] = ()

    def get(self, kid: str | None) -> Key | None:
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return self.by_kid.get(kid)


def _refusal(jwk: dict[str, Any]) -> str | None:
    """Why this JWK cannot be a public signature key for us, or None if it may be one."""
    if jwk.get("kid") is not None and not isinstance(jwk.get("kid"), str):
        return "kid is not a string"
    if _PRIVATE_MEMBERS.intersection(jwk):
        return "contains private key members"
    kty = jwk.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        return "unsupported kty"
    if "use" in jwk and jwk["use"] != "sig":
        return "use is not sig"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops does not allow verify"
    if kty in _SIG_CURVES and jwk.get("crv") not in _SIG_CURVES[kty]:
        return "curve is not a signature curve"
    return None


def _import_public_key(jwk: object) -> Key | None:
    """One JWK → a public signature key, or None (with the reason logged) if unusable."""
    if not isinstance(jwk, dict):
        _skip("not a JSON object", None)
        return None
    reason = _refusal(jwk)
    key: Key | None = None
    if reason is None:
        try:
            key = JWKRegistry.import_key(dict(jwk))
        except Exception:  # malformed members: this key is unusable, the rest of the set is not
            reason = "malformed key"
    if key is not None and key.is_private:  # defence in depth; unreachable after _refusal
        reason = "is a private key"
    elif isinstance(key, RSAKey) and key.public_key.key_size < _MIN_RSA_BITS:  # RFC 7518 §3.3
        reason = "RSA modulus too small"
    if reason is not None:
        _skip(reason, jwk.get("kid"))
        return None
    return key


def _skip(reason: str, kid: object) -> None:
    logger.warning("ignoring JWK (kid=%r): %s", kid if isinstance(kid, str) else None, reason)


def parse_jwks(jwks: Mapping[str, Any]) -> list[Key]:
    """Import the usable public signature keys of a JWK Set (RFC 7517 §5).

    Raises ``ValueError`` if ``jwks`` is not a JWK Set; unusable keys are skipped.
    """
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ValueError('a JWK Set is a JSON object with a "keys" array (RFC 7517 §5)')
    return [key for key in map(_import_public_key, jwks["keys"]) if key is not None]


def _table(jwks: Mapping[str, Any]) -> _KeyTable:
    keys = parse_jwks(jwks)
    by_kid: dict[str, Key] = {}
    for key in keys:
        kid = key.get("kid")
        if isinstance(kid, str):
            if kid in by_kid:
                logger.warning("ignoring JWK (kid=%r): duplicate kid", kid)
                continue
            by_kid[kid] = key
    return _KeyTable(by_kid, tuple(keys))


class StaticJWKS:
    """A fixed JWK Set, e.g. from configuration; ``replace`` swaps it atomically."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._table = _table(jwks)

    def replace(self, jwks: Mapping[str, Any]) -> None:
        self._table = _table(jwks)

    async def get_key(self, kid: str | None) -> Key | None:
        return self._table.get(kid)


class _RefreshingJWKS:
    """Cache + rate-limited, coalesced refresh around an async ``_load`` of a JWK Set."""

    def __init__(self, *, cache_ttl: float, min_refresh_interval: float) -> None:
        if cache_ttl < 0 or min_refresh_interval < 0:
            raise ValueError("cache_ttl and min_refresh_interval must be >= 0")
        self._ttl = cache_ttl
        self._min_interval = min_refresh_interval
        self._table: _KeyTable | None = None
        self._loaded_at = 0.0  # monotonic time of the last successful load
        self._attempted_at: float | None = None  # monotonic time of the last attempt
        self._attempts = 0
        self._lock = anyio.Lock()
        self._clock: Callable[[], float] = time.monotonic

    async def _load(self) -> Mapping[str, Any]:
        raise NotImplementedError

    async def get_key(self, kid: str | None) -> Key | None:
        table = self._table
        if table is None or self._clock() - self._loaded_at >= self._ttl:
            await self._refresh(force=False)
        elif kid is not None and table.get(kid) is None:
            await self._refresh(force=True)  # unknown kid: maybe the issuer rolled its keys
        return self._table.get(kid) if self._table is not None else None

    async def _refresh(self, *, force: bool) -> None:
        seen = self._attempts
        async with self._lock:
            if self._attempts != seen:
                return  # coalesce: a refresh ran while we waited for the lock
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return  # rate limit: random kids cannot amplify fetches
            if not force and self._table is not None and now - self._loaded_at < self._ttl:
                return
            self._attempts += 1
            self._attempted_at = now
            try:
                table = _table(await self._load())
            except Exception as exc:  # keep serving what we have
                logger.warning("JWKS refresh failed, keeping cached keys: %s", type(exc).__name__)
                return
            self._table, self._loaded_at = table, self._clock()


class CallableJWKS(_RefreshingJWKS):
    """An in-process source: ``fn()`` returns the current JWK Set (e.g. the issuer's key ring
    in the same process). It is re-called when the cached set is older than
    ``min_refresh_interval`` (so removed keys stop verifying) and on an unknown ``kid``."""

    def __init__(
        self, fn: Callable[[], Awaitable[Mapping[str, Any]]], min_refresh_interval: float = 1.0
    ) -> None:
        super().__init__(cache_ttl=min_refresh_interval, min_refresh_interval=min_refresh_interval)
        self._fn = fn

    async def _load(self) -> Mapping[str, Any]:
        return await self._fn()




class RemoteJWKS(_RefreshingJWKS):
    """A JWK Set fetched over HTTPS from the issuer's ``jwks_uri`` (RFC 8414 §2).

    ``url`` must be ``https`` (``http`` is allowed for loopback hosts only, for tests and
    sidecars). Responses over ``max_bytes`` or with a content coding are refused (no
    decompression bombs). Redirects are not followed. ``verify`` configures TLS for the
    client created per fetch; when ``client`` is given, its own settings apply instead.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        cache_ttl: float = 300,
        min_refresh_interval: float = 5.0,
        max_bytes: int = 256 * 1024,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        super().__init__(cache_ttl=cache_ttl, min_refresh_interval=min_refresh_interval)
        parts = urlsplit(url)
        loopback = is_loopback_host(parts.hostname)
        if not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise ValueError("jwks url must be https (http only for loopback hosts)")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.url = url
        self._client = client
        self._max_bytes = max_bytes
        # httpx deprecates verify=<path>: build the context here, once.
        self._verify = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )

    async def _load(self) -> Mapping[str, Any]:
        if self._client is not None:
            return await self._fetch(self._client)
        async with httpx.AsyncClient(verify=self._verify, timeout=5.0) as client:
            return await self._fetch(client)

    async def _fetch(self, client: httpx.AsyncClient) -> Mapping[str, Any]:
        headers = {
            "Accept": "application/jwk-set+json, application/json",
            "Accept-Encoding": "identity",
        }
        async with client.stream("GET", self.url, headers=headers, follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise ValueError(f"JWKS fetch returned HTTP {resp.status_code}")
            if resp.headers.get("content-encoding", "identity").lower() != "identity":
                raise ValueError("JWKS response has a content coding")
            length = resp.headers.get("content-length")
            if length is not None and (not (length.isascii() and length.isdigit())
                                       or int(length) > self._max_bytes):
                raise ValueError("JWKS response too large")
            body = bytearray()
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > self._max_bytes:
                    raise ValueError("JWKS response too large")
        data = json.loads(bytes(body))
        if not isinstance(data, dict):
            raise ValueError("JWKS is not a JSON object")
        return data
