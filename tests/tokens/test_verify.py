"""TokenVerifier: every rule of RFC 9068 §4 / RFC 8725 §3 as a table case."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import Key

from bastion.tokens.errors import InvalidToken
from bastion.tokens.jwks import StaticJWKS
from bastion.tokens.verify import TokenVerifier, VerifiedToken

from .conftest import AUDIENCE, DROP, ISSUER, Kit, b64, b64json

pytestmark = pytest.mark.anyio

Build = Callable[[Kit], str]


def _hs256(secret: bytes) -> Build:
    """The classic key-confusion forgery: HS256 keyed with the server's *public* key."""

    def build(k: Kit) -> str:
        head, body = b64json({"alg": "HS256", "typ": "at+jwt", "kid": "ec-1"}), b64json(k.claims())
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(mac)}"

    return build


def _pem(k: Kit) -> bytes:
    return k.ec.as_pem(private=False)


def _jwk_json(k: Kit) -> bytes:
    return json.dumps(k.ec.as_dict(private=False)).encode()


def _swap_payload(k: Kit) -> str:
    head, _, sig = k.forge().split(".")
    return f"{head}.{b64json(k.claims(scope='read write admin'))}.{sig}"


def _embedded_jwk(k: Kit) -> str:
    # The attacker signs with their own key and embeds it; we must never trust it.
    return k.forge({"jwk": k.rogue.as_dict(private=False)}, key=k.rogue)


def now() -> int:
    """Read at token-build time, not import time: boundary cases stay exact in long runs."""
    return int(time.time())

# (id, token builder, expected error_description)
REJECTED: list[tuple[str, Build, str]] = [
    # --- shape: RFC 7515 §7.1 compact serialization, checked before any crypto
    ("shape/empty-string", lambda k: "", "malformed token"),
    ("shape/two-segments", lambda k: k.forge().rsplit(".", 1)[0], "malformed token"),
    ("shape/four-segments", lambda k: k.forge() + ".AAAA", "malformed token"),
    ("shape/jwe-five-segments", lambda k: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "malformed token"),
    ("shape/empty-signature", lambda k: k.forge().rsplit(".", 1)[0] + ".", "malformed token"),
    ("shape/detached-payload", lambda k: "{0}..{2}".format(*k.forge().split(".")),
     "malformed token"),
    ("shape/base64-padding", lambda k: k.forge() + "==", "malformed token"),
    ("shape/standard-base64-chars", lambda k: k.forge().replace("-", "+").replace("_", "/")
     + "+/", "malformed token"),
    ("shape/whitespace", lambda k: " " + k.forge(), "malformed token"),
    ("shape/non-ascii", lambda k: k.forge() + "é", "malformed token"),
    ("size/over-max_token_bytes", lambda k: k.forge(claims={"pad": "x" * 9000}),
     "malformed token"),
    # --- header JSON
    ("header/not-base64url", lambda k: "A" + k.forge(), "malformed token"),
    ("header/not-json", lambda k: k.forge(raw_header=b"alg=ES256"), "malformed token"),
    ("header/json-array", lambda k: k.forge(raw_header=b'["ES256"]'), "malformed token"),
    ("header/json-string", lambda k: k.forge(raw_header=b'"ES256"'), "malformed token"),
    ("header/duplicate-alg-member",
     lambda k: k.forge(raw_header=b'{"alg":"ES256","typ":"at+jwt","kid":"ec-1","alg":"none"}'),
     "malformed token"),
    ("header/invalid-utf8", lambda k: k.forge(raw_header=b'{"alg":"\xff"}'), "malformed token"),
    # --- alg: RFC 8725 §3.1 allowlist
    ("alg/missing", lambda k: k.forge({"alg": DROP}, signature=b"x" * 64),
     "unsupported algorithm"),
    ("alg/none-empty-signature", lambda k: k.forge({"alg": "none"}, signature=b""),
     "malformed token"),
    ("alg/none-with-signature", lambda k: k.forge({"alg": "none"}, signature=b"x"),
     "unsupported algorithm"),
    ("alg/None-mixed-case", lambda k: k.forge({"alg": "nOnE"}, signature=b"x"),
     "unsupported algorithm"),
    ("alg/HS256-keyed-with-public-pem", lambda k: _hs256(_pem(k))(k), "unsupported algorithm"),
    ("alg/HS256-keyed-with-public-jwk", lambda k: _hs256(_jwk_json(k))(k),
     "unsupported algorithm"),
    ("alg/not-in-verifier-allowlist", lambda k: k.forge({"alg": "PS384"}, key=k.rsa),
     "unsupported algorithm"),
    ("alg/lowercase-es256", lambda k: k.forge({"alg": "es256"}, signature=b"x" * 64),
     "unsupported algorithm"),
    ("alg/non-string", lambda k: k.forge({"alg": ["ES256"]}, signature=b"x" * 64),
     "unsupported algorithm"),
    ("alg/unknown-name", lambda k: k.forge({"alg": "ES256K"}, signature=b"x" * 64),
     "unsupported algorithm"),
    # --- key must match alg: RFC 7518 §3.1
    ("key/RS256-header-naming-EC-key", lambda k: k.forge({"alg": "RS256", "kid": "ec-1"},
                                                         key=k.rsa), "unknown signing key"),
    ("key/ES256-header-naming-RSA-key", lambda k: k.forge({"kid": "rsa-1"}, key=k.ec),
     "unknown signing key"),
    ("key/ES384-header-naming-P-256-key", lambda k: k.forge({"alg": "ES384", "kid": "ec-1"},
                                                            key=k.ec384), "unknown signing key"),
    ("key/ES256-header-naming-P-384-key", lambda k: k.forge({"kid": "ec-384"}, key=k.ec),
     "unknown signing key"),
    ("key/EdDSA-header-naming-EC-key", lambda k: k.forge({"alg": "EdDSA", "kid": "ec-1"},
                                                         key=k.ed), "unknown signing key"),
    ("key/RS256-with-key-bound-to-PS256", lambda k: k.forge({"alg": "RS256"}, key=k.rsa_ps),
     "unknown signing key"),
    # --- typ: RFC 9068 §4 explicit typing (RFC 8725 §3.11)
    ("typ/missing", lambda k: k.forge({"typ": DROP}), "unsupported token type"),
    ("typ/JWT", lambda k: k.forge({"typ": "JWT"}), "unsupported token type"),
    ("typ/application-jwt", lambda k: k.forge({"typ": "application/jwt"}),
     "unsupported token type"),
    ("typ/id-token-style", lambda k: k.forge({"typ": "id_token+jwt"}), "unsupported token type"),
    ("typ/other-prefix", lambda k: k.forge({"typ": "text/at+jwt"}), "unsupported token type"),
    ("typ/non-string", lambda k: k.forge({"typ": ["at+jwt"]}), "unsupported token type"),
    # --- never trust keys carried or pointed at by the token; no extensions
    ("header/jku", lambda k: k.forge({"jku": "https://evil.test/jwks"}), "unsupported header"),
    ("header/x5u", lambda k: k.forge({"x5u": "https://evil.test/cert"}), "unsupported header"),
    ("header/jwk-embedded-attacker-key", _embedded_jwk, "unsupported header"),
    ("header/x5c", lambda k: k.forge({"x5c": ["MIIB"]}), "unsupported header"),
    ("header/crit-unknown-extension", lambda k: k.forge({"crit": ["exp"], "exp": 1}),
     "unsupported header"),
    ("header/crit-empty-list", lambda k: k.forge({"crit": []}), "unsupported header"),
    ("header/crit-b64-false-rfc7797", lambda k: k.forge({"crit": ["b64"], "b64": False}),
     "unsupported header"),
    ("header/b64-false-without-crit", lambda k: k.forge({"b64": False}), "unsupported header"),
    ("header/b64-string", lambda k: k.forge({"b64": "false"}), "unsupported header"),
    # --- kid lookup
    ("kid/unknown", lambda k: k.forge({"kid": "nope"}), "unknown signing key"),
    ("kid/non-string", lambda k: k.forge({"kid": 1}), "malformed token"),
    ("kid/missing-with-several-keys", lambda k: k.forge({"kid": DROP}), "unknown signing key"),
    # --- signature (joserfc)
    ("sig/rogue-key-reusing-published-kid", lambda k: k.forge(key=k.rogue),
     "invalid signature"),
    ("sig/payload-swapped", _swap_payload, "invalid signature"),
    ("sig/truncated", lambda k: k.forge()[:-4], "invalid signature"),
    ("sig/random-bytes", lambda k: k.forge(signature=b"\x01" * 64), "invalid signature"),
    ("sig/wrong-length", lambda k: k.forge(signature=b"\x01" * 70), "invalid signature"),
    ("sig/RS256-signed-by-other-RSA-key", lambda k: k.forge({"alg": "RS256", "kid": "rsa-1"},
                                                            key=k.rsa_ps), "invalid signature"),
    # --- payload
    ("claims/not-json", lambda k: k.forge(payload=b"not json"), "malformed token"),
    ("claims/json-array", lambda k: k.forge(payload=b"[1,2]"), "malformed token"),
    ("claims/duplicate-sub", lambda k: k.forge(
        payload=json.dumps(k.claims())[:-1].encode() + b',"sub":"admin"}'), "malformed token"),
    ("claims/NaN-exp", lambda k: k.forge(
        payload=json.dumps(k.claims(exp=DROP))[:-1].encode() + b',"exp":NaN}'),
     "malformed token"),
    ("claims/Infinity-exp", lambda k: k.forge(
        payload=json.dumps(k.claims(exp=DROP))[:-1].encode() + b',"exp":Infinity}'),
     "malformed token"),
    # --- exp / nbf / iat: RFC 7519 §4.1.4–4.1.6 with leeway 30s
    ("exp/expired-beyond-leeway", lambda k: k.forge(claims={"exp": now() - 120}), "token expired"),
    ("exp/missing", lambda k: k.forge(claims={"exp": DROP}), "missing claim"),
    ("exp/string", lambda k: k.forge(claims={"exp": str(now() + 300)}), "invalid claim"),
    ("exp/bool", lambda k: k.forge(claims={"exp": True}), "invalid claim"),
    ("exp/null", lambda k: k.forge(claims={"exp": None}), "invalid claim"),
    ("exp/huge-float-overflows-to-inf", lambda k: k.forge(
        payload=json.dumps(k.claims(exp=DROP))[:-1].encode() + b',"exp":1e999}'),
     "invalid claim"),
    ("nbf/in-the-future", lambda k: k.forge(claims={"nbf": now() + 600}), "token not yet valid"),
    ("nbf/string", lambda k: k.forge(claims={"nbf": "0"}), "invalid claim"),
    ("iat/in-the-future", lambda k: k.forge(claims={"iat": now() + 600}),
     "token issued in the future"),
    ("iat/bool", lambda k: k.forge(claims={"iat": False}), "invalid claim"),
    ("iat/missing", lambda k: k.forge(claims={"iat": DROP}), "missing claim"),
    # --- iss: exact match, RFC 9068 §4
    ("iss/other-issuer", lambda k: k.forge(claims={"iss": "https://evil.test"}),
     "invalid issuer"),
    ("iss/trailing-slash", lambda k: k.forge(claims={"iss": ISSUER + "/"}), "invalid issuer"),
    ("iss/case-differs", lambda k: k.forge(claims={"iss": ISSUER.upper()}), "invalid issuer"),
    ("iss/list", lambda k: k.forge(claims={"iss": [ISSUER]}), "invalid issuer"),
    ("iss/missing", lambda k: k.forge(claims={"iss": DROP}), "missing claim"),
    # --- aud: RFC 7519 §4.1.3
    ("aud/other-audience", lambda k: k.forge(claims={"aud": "https://other.test"}),
     "invalid audience"),
    ("aud/list-without-ours", lambda k: k.forge(claims={"aud": ["a", "b"]}),
     "invalid audience"),
    ("aud/empty-list", lambda k: k.forge(claims={"aud": []}), "invalid audience"),
    ("aud/list-with-non-string", lambda k: k.forge(claims={"aud": [AUDIENCE, 1]}),
     "invalid audience"),
    ("aud/number", lambda k: k.forge(claims={"aud": 1}), "invalid audience"),
    ("aud/missing", lambda k: k.forge(claims={"aud": DROP}), "invalid audience"),
    ("aud/prefix-of-ours", lambda k: k.forge(claims={"aud": AUDIENCE[:-1]}),
     "invalid audience"),
    # --- RFC 9068 §2.2 claims and their types
    ("sub/missing", lambda k: k.forge(claims={"sub": DROP}), "missing claim"),
    ("sub/number", lambda k: k.forge(claims={"sub": 42}), "invalid claim"),
    ("sub/empty", lambda k: k.forge(claims={"sub": ""}), "invalid claim"),
    ("jti/missing", lambda k: k.forge(claims={"jti": DROP}), "missing claim"),
    ("jti/number", lambda k: k.forge(claims={"jti": 1}), "invalid claim"),
    ("client_id/number", lambda k: k.forge(claims={"client_id": 7}), "invalid claim"),
    ("scope/list-not-string", lambda k: k.forge(claims={"scope": ["read"]}), "invalid claim"),
    ("roles/string-not-list", lambda k: k.forge(claims={"roles": "admin"}), "invalid claim"),
]


@pytest.mark.parametrize(("build", "description"), [c[1:] for c in REJECTED],
                         ids=[c[0] for c in REJECTED])
async def test_rejected(kit: Kit, make_verifier: Callable[..., TokenVerifier], build: Build,
                        description: str) -> None:
    token = build(kit)
    with pytest.raises(InvalidToken) as info:
        await make_verifier().verify(token)
    err = info.value
    assert (err.error, err.status_code, err.description) == ("invalid_token", 401, description)
    assert type(err) is InvalidToken
    if len(token) > 20:
        assert token not in err.description and token[-20:] not in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def _jwt_encode(k: Kit) -> str:
    """Interop: a token produced by joserfc's own JWT encoder."""
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}, k.claims(), k.ec)


# (id, token builder, verifier overrides)
ACCEPTED: list[tuple[str, Build, dict[str, Any]]] = [
    ("alg/ES256", lambda k: k.forge(), {}),
    ("alg/ES384", lambda k: k.forge(key=k.ec384), {}),
    ("alg/RS256", lambda k: k.forge(key=k.rsa), {}),
    ("alg/PS256-key-bound-to-PS256", lambda k: k.forge({"alg": "PS256"}, key=k.rsa_ps), {}),
    ("alg/PS256-unbound-RSA-key", lambda k: k.forge({"alg": "PS256"}, key=k.rsa), {}),
    ("alg/EdDSA-Ed25519", lambda k: k.forge(key=k.ed), {}),
    ("interop/joserfc-jwt-encode", _jwt_encode, {}),
    ("typ/application-at+jwt", lambda k: k.forge({"typ": "application/at+jwt"}), {}),
    ("typ/uppercase", lambda k: k.forge({"typ": "AT+JWT"}), {}),
    ("typ/not-checked-when-token_type-None", lambda k: k.forge({"typ": "JWT"}),
     {"token_type": None}),
    ("header/unknown-noncritical-member-ignored", lambda k: k.forge({"foo": "bar"}), {}),
    ("header/b64-true-is-the-default", lambda k: k.forge({"b64": True}), {}),
    ("exp/expired-within-leeway", lambda k: k.forge(claims={"exp": now() - 10}), {}),
    ("exp/float", lambda k: k.forge(claims={"exp": now() + 300.5}), {}),
    ("nbf/within-leeway", lambda k: k.forge(claims={"nbf": now() + 10}), {}),
    ("iat/within-leeway", lambda k: k.forge(claims={"iat": now() + 10}), {}),
    ("aud/list-containing-ours", lambda k: k.forge(claims={"aud": ["x", AUDIENCE]}), {}),
    ("aud/one-of-several-configured", lambda k: k.forge(claims={"aud": "urn:b"}),
     {"audience": ["urn:a", "urn:b"]}),
    ("aud/not-checked-when-audience-None", lambda k: k.forge(claims={"aud": DROP}),
     {"audience": None}),
    ("kid/missing-with-single-key", lambda k: k.forge({"kid": DROP}), {"jwks": "only ec-1"}),
    ("claims/optional-iat-jti-not-required", lambda k: k.forge(
        claims={"iat": DROP, "jti": DROP}), {"required_claims": ("iss", "sub", "exp")}),
]


@pytest.mark.parametrize(("build", "overrides"), [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
async def test_accepted(kit: Kit, make_verifier: Callable[..., TokenVerifier], build: Build,
                        overrides: dict[str, Any]) -> None:
    if "jwks" in overrides:  # the single-key set must hold the key that signs
        overrides = {**overrides, "jwks": StaticJWKS(kit.jwks(kit.ec))}
    token = await make_verifier(**overrides).verify(build(kit))
    assert isinstance(token, VerifiedToken)
    assert token.subject == "user-42"
    assert token.claims["iss"] == ISSUER


async def test_verified_token_fields(kit: Kit, make_verifier: Callable[..., TokenVerifier]) -> None:
    exp = now() + 300
    token = await make_verifier().verify(kit.forge(claims={"exp": exp, "scope": " read  write "}))
    assert token.subject == "user-42"
    assert token.client_id == "client-7"
    assert token.scopes == frozenset({"read", "write"})
    assert token.roles == frozenset({"admin", "ops"})  # non-strings ignored
    assert token.jti == "jti-1"
    assert token.expires_at == exp
    assert token.header == {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}
    assert token.claims["aud"] == AUDIENCE


async def test_defaults_for_absent_optional_claims(
    kit: Kit, make_verifier: Callable[..., TokenVerifier]
) -> None:
    token = await make_verifier().verify(
        kit.forge(claims={"client_id": DROP, "scope": DROP, "roles": DROP})
    )
    assert (token.client_id, token.scopes, token.roles) == (None, frozenset(), frozenset())


class CountingJWKS:
    def __init__(self, inner: StaticJWKS) -> None:
        self.inner, self.calls = inner, 0

    async def get_key(self, kid: str | None) -> Key | None:
        self.calls += 1
        return await self.inner.get_key(kid)


@pytest.mark.parametrize("build", [
    pytest.param(lambda k: k.forge(claims={"pad": "x" * 9000}), id="over-size-cap"),
    pytest.param(lambda k: "a.b.c.d.e", id="jwe"),
    pytest.param(lambda k: k.forge({"alg": "none"}, signature=b"x"), id="alg-none"),
    pytest.param(lambda k: _hs256(_pem(k))(k), id="hs256"),
    pytest.param(lambda k: k.forge({"jku": "https://evil.test/"}), id="jku"),
])
async def test_refused_before_key_lookup(kit: Kit, make_verifier: Callable[..., TokenVerifier],
                                         build: Build) -> None:
    jwks = CountingJWKS(StaticJWKS(kit.jwks(*kit.published)))
    with pytest.raises(InvalidToken):
        await make_verifier(jwks=jwks).verify(build(kit))
    assert jwks.calls == 0


async def test_custom_max_token_bytes(
    kit: Kit, make_verifier: Callable[..., TokenVerifier]
) -> None:
    token = kit.forge()
    await make_verifier(max_token_bytes=len(token)).verify(token)
    with pytest.raises(InvalidToken, match="malformed token"):
        await make_verifier(max_token_bytes=len(token) - 1).verify(token)


class SetDenylist:
    def __init__(self, *revoked: str) -> None:
        self.revoked = set(revoked)
        self.asked: list[str] = []

    async def is_revoked(self, jti: str) -> bool:
        self.asked.append(jti)
        return jti in self.revoked


class BrokenDenylist:
    async def is_revoked(self, jti: str) -> bool:
        raise ConnectionError("redis down")


@pytest.mark.parametrize(("denylist", "claims", "required", "description"), [
    pytest.param(SetDenylist("jti-1"), {}, None, "token revoked", id="revoked-jti"),
    pytest.param(BrokenDenylist(), {}, None, "invalid token", id="denylist-error-fails-closed"),
    pytest.param(SetDenylist(), {"jti": DROP}, ("iss", "sub", "exp"), "missing claim",
                 id="no-jti-cannot-be-checked"),
])
async def test_denylist_rejects(kit: Kit, make_verifier: Callable[..., TokenVerifier],
                                denylist: Any, claims: dict[str, Any], required: Any,
                                description: str) -> None:
    extra = {"required_claims": required} if required else {}
    verifier = make_verifier(denylist=denylist, **extra)
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(kit.forge(claims=claims))
    assert info.value.description == description


async def test_denylist_allows_unrevoked(
    kit: Kit, make_verifier: Callable[..., TokenVerifier]
) -> None:
    denylist = SetDenylist("other")
    await make_verifier(denylist=denylist).verify(kit.forge())
    assert denylist.asked == ["jti-1"]


async def test_denylist_not_asked_for_bad_signature(
    kit: Kit, make_verifier: Callable[..., TokenVerifier]
) -> None:
    denylist = SetDenylist()
    with pytest.raises(InvalidToken):
        await make_verifier(denylist=denylist).verify(kit.forge(key=kit.rogue))
    assert denylist.asked == []


class RaisingJWKS:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def get_key(self, kid: str | None) -> Key | None:
        raise self.exc


async def test_unexpected_exception_becomes_invalid_token(
    kit: Kit, make_verifier: Callable[..., TokenVerifier]
) -> None:
    secret = "s3cret-detail"
    with pytest.raises(InvalidToken) as info:
        await make_verifier(jwks=RaisingJWKS(RuntimeError(secret))).verify(kit.forge())
    assert info.value.description == "invalid token"
    assert secret not in str(info.value) and info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize("exc", [asyncio.CancelledError(), KeyboardInterrupt()],
                         ids=["CancelledError", "KeyboardInterrupt"])
async def test_base_exceptions_propagate(kit: Kit, make_verifier: Callable[..., TokenVerifier],
                                         exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        await make_verifier(jwks=RaisingJWKS(exc)).verify(kit.forge())


async def test_non_string_token(make_verifier: Callable[..., TokenVerifier]) -> None:
    with pytest.raises(InvalidToken, match="malformed token"):
        await make_verifier().verify(b"a.b.c")  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides", [
    pytest.param({"algorithms": ("none",)}, id="alg-none"),
    pytest.param({"algorithms": ("HS256",)}, id="alg-HS256"),
    pytest.param({"algorithms": ("ES256", "HS512")}, id="alg-HS512-among-good"),
    pytest.param({"algorithms": ("RSA-OAEP",)}, id="alg-JWE-algorithm"),
    pytest.param({"algorithms": ("ES256K",)}, id="alg-not-in-allowlist"),
    pytest.param({"algorithms": ()}, id="alg-empty"),
    pytest.param({"algorithms": "ES256"}, id="alg-bare-string"),
    pytest.param({"audience": []}, id="audience-empty-list"),
    pytest.param({"audience": [""]}, id="audience-empty-string"),
    pytest.param({"issuer": ""}, id="issuer-empty"),
    pytest.param({"leeway": -1}, id="leeway-negative"),
    pytest.param({"max_token_bytes": 0}, id="max-token-bytes-zero"),
    pytest.param({"token_type": ""}, id="token-type-empty"),
    pytest.param({"required_claims": "exp"}, id="required-claims-bare-string"),
])
def test_invalid_configuration(make_verifier: Callable[..., TokenVerifier],
                               overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_verifier(**overrides)


def test_all_asymmetric_algorithms_accepted(make_verifier: Callable[..., TokenVerifier]) -> None:
    algs = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "EdDSA")
    assert make_verifier(algorithms=algs).algorithms == frozenset(algs)
