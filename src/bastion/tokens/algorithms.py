"""The one JWS algorithm allow-list (RFC 8725 §3.1–3.2): asymmetric algorithms only, each
bound to the key type (and curves) that may verify it (RFC 7518 §3.1, RFC 8037 §3.1).

``none`` and the HMAC algorithms (``HS*``) are never in it: with a public key used as an HMAC
secret, or no signature at all, anyone could mint a token (the algorithm-confusion attacks).
Every JWT Bastion verifies — access tokens at resource servers, ``private_key_jwt`` client
assertions, ``id_token_hint`` — is checked against this list; Bastion's own keys sign with
the ``SIGNING`` subset.
"""

from __future__ import annotations

KEY_FOR_ALG: dict[str, tuple[str, frozenset[str] | None]] = {
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    **{f"{p}{n}": ("RSA", None) for p in ("RS", "PS") for n in (256, 384, 512)},
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
ALLOWED: frozenset[str] = frozenset(KEY_FOR_ALG)
# sorted, for metadata (RFC 8414 *_signing_alg_values_supported)
ALLOWED_SORTED: tuple[str, ...] = tuple(sorted(ALLOWED))

# what Bastion's signing keys use (``bastion keys``, ``signing_alg``): a subset of ALLOWED
SIGNING: tuple[str, ...] = ("ES256", "RS256", "EdDSA")

if not set(SIGNING) <= ALLOWED or any(a == "none" or a.startswith("HS") for a in ALLOWED):
    raise RuntimeError("JWS allow-list misconfigured")  # pragma: no cover
