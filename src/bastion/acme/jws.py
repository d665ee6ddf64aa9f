"""ACME request authentication: JWS in flattened JSON serialization (RFC 8555 §6.2, on
RFC 7515), verified with joserfc. Sizes are capped and the algorithm is checked against an
explicit allowlist before any crypto runs; ``none`` and MACs are refused
(``badSignatureAlgorithm``). Nonces (§6.5) and the ``url`` check (§6.4) are the server's:
this module only says what the protected header claims."""

from __future__ import annotations

import base64
import binascii
import json
import warnings
from dataclasses import dataclass
from typing import Any, cast

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, OctKey, OKPKey, RSAKey
from joserfc.jws import FlattenedJSONSerialization, JWSRegistry
from joserfc.registry import HeaderParameter, is_str

from bastion.acme.errors import BadPublicKey, BadSignatureAlgorithm, Malformed, Unauthorized

# RFC 8555 §6.2: "MUST NOT be none" nor a MAC; RS256 and ES256 are the MUST/SHOULD; ES384
# and EdDSA are what certbot, lego and acme.sh may send.
ALGORITHMS = ("ES256", "ES384", "RS256", "EdDSA")
_CURVES = {"ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}
MIN_RSA_BITS = 2048
MAX_JWS_BYTES = 64 * 1024
PublicKey = ECKey | RSAKey | OKPKey

_REGISTRY = JWSRegistry(header_registry={"nonce": HeaderParameter("Nonce", is_str),
                                         "url": HeaderParameter("URL", is_str)},
                        algorithms=list(ALGORITHMS))
_REGISTRY.max_header_length = 8192  # an RSA-4096 jwk is ~750 bytes; joserfc's default 512
_EAB_REGISTRY = JWSRegistry(header_registry={"url": HeaderParameter("URL", is_str)},
                            algorithms=["HS256", "HS384", "HS512"])
_EAB_REGISTRY.max_header_length = 4096


@dataclass(frozen=True)
class Jws:
    """A structurally valid flattened JWS and its decoded protected header."""

    value: dict[str, str]
    header: dict[str, Any]
    payload: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def nonce(self) -> str | None:
        n = self.header.get("nonce")
        return n if isinstance(n, str) else None

    @property
    def url(self) -> str | None:
        u = self.header.get("url")
        return u if isinstance(u, str) else None

    @property
    def kid(self) -> str | None:
        k = self.header.get("kid")
        return k if isinstance(k, str) else None

    @property
    def jwk(self) -> dict[str, Any] | None:
        k = self.header.get("jwk")
        return k if isinstance(k, dict) else None

    def json(self) -> Any:
        """The payload as JSON; ``b""`` (POST-as-GET, §6.3) is None."""
        if self.payload == b"":
            return None
        try:
            return json.loads(self.payload)
        except (ValueError, RecursionError):  # nested past the stack: not a 500
            raise Malformed("the JWS payload is not JSON") from None


def b64decode(value: object, what: str) -> bytes:
    """base64url without padding (RFC 7515 §2); anything else is ``malformed``."""
    if not isinstance(value, str) or "=" in value or len(value) > MAX_JWS_BYTES * 2:
        raise Malformed(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise Malformed(f"{what} is not base64url") from None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse(body: bytes | dict[str, Any], *, algorithms: tuple[str, ...] = ALGORITHMS) -> Jws:
    """A flattened JWS whose protected header has an allowed ``alg``, exactly one of
    ``jwk`` and ``kid`` (§6.2), and no unprotected header."""
    if isinstance(body, dict):
        value: Any = body
    else:
        if len(body) > MAX_JWS_BYTES:
            raise Malformed("the JWS is too large")
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise Malformed("the request body is not JSON") from None
    if not isinstance(value, dict) or set(value) != {"protected", "payload", "signature"} \
            or not all(isinstance(v, str) for v in value.values()):
        raise Malformed("the request is not a flattened JWS with exactly protected, payload "
                        "and signature")
    try:
        header = json.loads(b64decode(value["protected"], "protected"))
    except (ValueError, RecursionError):
        raise Malformed("the protected header is not JSON") from None
    if not isinstance(header, dict):
        raise Malformed("the protected header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise BadSignatureAlgorithm(f"the JWS algorithm must be one of {', '.join(algorithms)}")
    if any(k in header and not isinstance(header[k], str) for k in ("kid", "nonce", "url")):
        raise Malformed("kid, nonce and url must be strings")
    if ("jwk" in header) == ("kid" in header):
        raise Malformed("the protected header must have exactly one of jwk and kid")
    if "crit" in header:
        raise Malformed("no crit header parameter is understood")
    payload = b64decode(value["payload"], "payload")
    b64decode(value["signature"], "signature")
    return Jws(value, header, payload)


def import_public_key(jwk: object, alg: str | None = None) -> PublicKey:
    """An account or certificate public key from a JWK: EC P-256/P-384, RSA of 2048 bits
    or more, Ed25519; never a private key or a symmetric one (``badPublicKey``)."""
    if not isinstance(jwk, dict) or "d" in jwk or jwk.get("kty") not in ("EC", "RSA", "OKP"):
        raise BadPublicKey("the JWK must be an EC, RSA or OKP public key")
    try:
        key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        raise BadPublicKey("the JWK is not a valid public key") from None
    if isinstance(key, RSAKey):
        if key.raw_value.key_size < MIN_RSA_BITS:
            raise BadPublicKey(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    elif isinstance(key, (ECKey, OKPKey)):
        if key.get("crv") not in ("P-256", "P-384", "Ed25519"):
            raise BadPublicKey("unsupported curve")
    else:
        raise BadPublicKey("unsupported key type")
    if alg is not None:
        check_alg(key, alg)
    return key


def check_alg(key: PublicKey, alg: str) -> None:
    """``alg`` goes with ``key`` (RS256 with RSA, the curve's with EC and OKP), else
    ``badSignatureAlgorithm``."""
    if isinstance(key, RSAKey):
        if alg != "RS256":
            raise BadSignatureAlgorithm(f"{alg} does not go with an RSA key")
        return
    crv = key.get("crv")
    if _CURVES.get(alg) != crv:
        raise BadSignatureAlgorithm(f"{alg} does not go with a {crv} key")


def verify(token: Jws, key: PublicKey) -> None:
    """The signature, by ``key`` with the header's ``alg``; one opaque error otherwise."""
    try:
        with warnings.catch_warnings():
            # joserfc flags "EdDSA" as deprecated by RFC 9864 (fully-specified "Ed25519");
            # RFC 8555 clients send "EdDSA" with an Ed25519 key, which import_public_key
            # has checked
            warnings.simplefilter("ignore", SecurityWarning)
            jws.deserialize_json(cast(FlattenedJSONSerialization, token.value), key,
                                 algorithms=[token.alg], registry=_REGISTRY)
    except (JoseError, ValueError, TypeError):
        raise Malformed("JWS verification error") from None


def thumbprint(key: PublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url (key authorizations, §8.1)."""
    return str(key.thumbprint())


def verify_eab(binding: object, account_jwk: dict[str, Any], url: str,
               mac_key_for: Any) -> str:
    """The external account binding of newAccount (§7.3.4): a flattened JWS, HS256/384/512,
    ``kid`` an EAB key id, ``url`` the newAccount URL, payload the account's JWK, MACed by
    the key ``mac_key_for(kid)`` returns (None: unknown). Returns the key id."""
    if not isinstance(binding, dict):
        raise Malformed("externalAccountBinding must be a JWS object")
    inner = parse(binding, algorithms=("HS256", "HS384", "HS512"))
    kid = inner.kid
    if kid is None or "nonce" in inner.header or inner.url != url:
        raise Malformed("externalAccountBinding must have kid and url, and no nonce")
    mac = mac_key_for(kid)
    if mac is None:
        raise Unauthorized("unknown external account key id")
    try:
        jws.deserialize_json(cast(FlattenedJSONSerialization, inner.value),
                             OctKey.import_key(mac), algorithms=[inner.alg],
                             registry=_EAB_REGISTRY)
    except (JoseError, ValueError, TypeError):
        raise Unauthorized("externalAccountBinding verification error") from None
    try:
        bound = json.loads(inner.payload)
    except (ValueError, RecursionError):
        raise Malformed("externalAccountBinding payload is not JSON") from None
    if not isinstance(bound, dict) or \
            thumbprint(import_public_key(bound)) != thumbprint(import_public_key(account_jwk)):
        raise Unauthorized("externalAccountBinding does not bind the account key")
    return kid
