"""Authlib (a relying-party library nobody here wrote) against a real ``bastion serve`` over
TLS: discovery, authorization code + PKCE S256, ID token validation with Authlib's OIDC
claims classes, UserInfo, refresh, revocation and introspection — with client_secret_basic,
client_secret_post, private_key_jwt and a public client.

Authlib builds every protocol message (authorization URL and PKCE challenge, token, refresh,
revocation and introspection requests, client authentication and the private_key_jwt
assertion); the tests only drive the login and consent pages like a browser would and check
what comes back.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import authlib.deprecate  # noqa: F401  (its own "always" filter goes first; ours below wins)
import httpx
import pytest
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import ECKey, KeySet

# Authlib 1.9's httpx integration warns at import that plain ``httpx`` (rather than the
# ``httpx2`` fork) is deprecated. It is the only Authlib warning these tests see; it is
# ignored for this import only, by its exact message.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r"The httpx module is deprecated; please use httpx2 instead\.",
        category=DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client, OAuthError

from authlib.common.security import generate_token  # noqa: E402
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign  # noqa: E402
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # noqa: E402
from authlib.oidc.core import CodeIDToken, UserInfo  # noqa: E402

from tests.interop.conftest import (  # noqa: E402
    SCOPE,
    SCOPES,
    Person,
    UserAgent,
    register,
    register_with_auth_method,
    tls,
)
from tests.live import LiveServer  # noqa: E402

pytestmark = pytest.mark.interop

REDIRECT = "http://127.0.0.1:9/cb"
LEEWAY = 30


# --- helpers: Authlib does the protocol, these only sequence it ---------------------------------
def discover(oauth: OAuth2Client, live: LiveServer) -> dict[str, Any]:
    resp = oauth.request("GET", live.url + "/.well-known/openid-configuration",
                         withhold_token=True)
    assert resp.status_code == 200, resp.text
    meta: dict[str, Any] = resp.json()
    # OIDC Discovery §4.3: the issuer MUST be identical to the URL discovery was done with
    assert meta["issuer"] == live.url
    oauth.metadata.update(token_endpoint=meta["token_endpoint"])
    return meta


def fetch_jwks(oauth: OAuth2Client, meta: dict[str, Any]) -> KeySet:
    resp = oauth.request("GET", meta["jwks_uri"], withhold_token=True)
    assert resp.status_code == 200, resp.text
    jwks = resp.json()
    assert all("d" not in k for k in jwks["keys"]), "JWKS publishes private key material"
    return KeySet.import_key_set(jwks)


def validate_id_token(id_token: str, meta: dict[str, Any], keys: KeySet, client_id: str, *,
                      nonce: str | None, access_token: str) -> CodeIDToken:
    """As Authlib's own OpenID RP does it (``OpenIDMixin.parse_id_token``): verify the JWS
    with the provider's JWKS and advertised algorithms, then validate with ``CodeIDToken``
    (iss, aud, exp, iat, nonce, azp, at_hash)."""
    decoded = jwt.decode(id_token, keys, algorithms=meta["id_token_signing_alg_values_supported"])
    options = {"iss": {"essential": True, "value": meta["issuer"]},
               "aud": {"essential": True, "value": client_id}}
    claims = CodeIDToken(decoded.claims, decoded.header, options,
                         {"nonce": nonce, "client_id": client_id, "access_token": access_token})
    claims.validate(leeway=LEEWAY)
    # Authlib checks at_hash only when present; Bastion issues it, so insist on it
    assert "at_hash" in claims
    return claims


def new_client(live: LiveServer, client_id: str, client_secret: Any = None,
               **kw: Any) -> OAuth2Client:
    return OAuth2Client(client_id=client_id, client_secret=client_secret, scope=SCOPE,
                        redirect_uri=REDIRECT, code_challenge_method="S256",
                        verify=tls(live), timeout=30, **kw)


def authorize(oauth: OAuth2Client | AsyncOAuth2Client, meta: dict[str, Any], live: LiveServer,
              person: Person, steps: list[str]) -> tuple[str, str, str, str]:
    """Authlib builds the authorization URL (PKCE S256 from the verifier, nonce, state);
    the user agent signs in and consents. Returns (callback URL, state, verifier, nonce)."""
    verifier = generate_token(64)
    nonce = generate_token(24)
    url, state = oauth.create_authorization_url(meta["authorization_endpoint"],
                                                code_verifier=verifier, nonce=nonce)
    sent = parse_qs(urlsplit(url).query)
    assert sent["code_challenge_method"] == ["S256"]
    assert sent["code_challenge"] == [create_s256_code_challenge(verifier)]
    assert "code_verifier" not in sent
    agent = UserAgent(live)
    callback = agent.authorize(url, REDIRECT, person)
    assert agent.steps == steps
    got = parse_qs(urlsplit(callback).query)
    assert "error" not in got, got
    assert got["state"] == [state]
    # RFC 9207 §2.4: the client compares iss with the issuer it discovered (Authlib does not)
    assert got["iss"] == [meta["issuer"]]
    return callback, state, verifier, nonce


def assert_profile(claims: dict[str, Any], person: Person) -> None:
    assert claims["sub"] == person.id
    assert claims["preferred_username"] == person.username
    assert claims["name"] == person.username.title()
    assert claims["email"] == f"{person.username}@example.com"
    assert claims["email_verified"] is False
    assert "order:view" in claims["roles"]


def oauth_error(exc: pytest.ExceptionInfo[OAuthError]) -> str:
    return str(exc.value.error)


# --- tests -----------------------------------------------------------------------------------
def test_discovery_metadata_is_usable_by_authlib(live: LiveServer) -> None:
    with new_client(live, "unused") as oauth:
        meta = discover(oauth, live)
        keys = fetch_jwks(oauth, meta)
    # OIDC Discovery §3 REQUIRED members, plus what the flows below rely on
    for member in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint",
                   "revocation_endpoint", "introspection_endpoint"):
        assert meta[member].startswith(live.url + "/"), member
    assert "code" in meta["response_types_supported"]
    assert "public" in meta["subject_types_supported"]
    assert "RS256" in meta["id_token_signing_alg_values_supported"]  # §3: MUST include RS256
    assert "S256" in meta["code_challenge_methods_supported"]
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} <= set(
        meta["token_endpoint_auth_methods_supported"])
    assert set(SCOPES) <= set(meta["scopes_supported"])
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert len(keys.keys) >= 1
    # the OAuth metadata (RFC 8414 §3) agrees with the OpenID one
    with httpx.Client(verify=tls(live), timeout=30) as http:
        oauth_meta = http.get(live.url + "/.well-known/oauth-authorization-server").json()
    assert oauth_meta["issuer"] == meta["issuer"]
    assert oauth_meta["token_endpoint"] == meta["token_endpoint"]


def test_code_flow_client_secret_basic_full_lifecycle(live: LiveServer, alice: Person) -> None:
    reg = register(live, "Authlib basic", REDIRECT)
    assert reg["token_endpoint_auth_method"] == "client_secret_basic"
    client_id = reg["client_id"]
    with new_client(live, client_id, reg["client_secret"]) as oauth:
        meta = discover(oauth, live)
        keys = fetch_jwks(oauth, meta)

        # authorization code + PKCE, exchanged by Authlib (state checked by Authlib)
        callback, state, verifier, nonce = authorize(oauth, meta, live, alice,
                                                     ["login", "consent"])
        token = oauth.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                  code_verifier=verifier, state=state)
        assert token["token_type"].lower() == "bearer"
        assert set(token["scope"].split()) == set(SCOPES)
        assert token["expires_in"] > 0 and "expires_at" in token
        assert token["refresh_token"]

        # ID token, validated by Authlib's CodeIDToken against the published JWKS
        claims = validate_id_token(token["id_token"], meta, keys, client_id, nonce=nonce,
                                   access_token=token["access_token"])
        assert claims["nonce"] == nonce
        assert claims["azp"] == client_id
        assert_profile(claims, alice)
        # ... and the same machinery does refuse a wrong nonce or a foreign access token
        decoded = jwt.decode(token["id_token"], keys)
        with pytest.raises(InvalidClaimError, match="nonce"):
            CodeIDToken(decoded.claims, decoded.header, None,
                        {"nonce": "another", "client_id": client_id}).validate(leeway=LEEWAY)
        with pytest.raises(InvalidClaimError, match="at_hash"):
            CodeIDToken(decoded.claims, decoded.header, None,
                        {"client_id": client_id, "access_token": "x" + token["access_token"]}
                        ).validate(leeway=LEEWAY)

        # UserInfo with the bearer token Authlib attaches
        resp = oauth.get(meta["userinfo_endpoint"])
        assert resp.status_code == 200, resp.text
        info = UserInfo(resp.json())
        assert info["sub"] == claims["sub"]  # OIDC Core §5.3.2: MUST match the ID token
        assert_profile(info, alice)

        # refresh (rotation: a new refresh token; OIDC Core §12.2 rules for the new ID token)
        refreshed = oauth.refresh_token(meta["token_endpoint"])
        assert refreshed["access_token"] != token["access_token"]
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert set(refreshed["scope"].split()) == set(SCOPES)
        new_claims = validate_id_token(refreshed["id_token"], meta, keys, client_id, nonce=None,
                                       access_token=refreshed["access_token"])
        for same in ("iss", "sub", "aud", "azp", "auth_time"):
            assert new_claims[same] == claims[same], same
        resp = oauth.get(meta["userinfo_endpoint"])  # Authlib now sends the new access token
        assert resp.status_code == 200 and resp.json()["sub"] == alice.id

        # introspection (RFC 7662) with client authentication, before revocation
        rt, at = refreshed["refresh_token"], refreshed["access_token"]
        before = oauth.introspect_token(meta["introspection_endpoint"], token=rt,
                                        token_type_hint="refresh_token")
        assert before.status_code == 200, before.text
        assert before.json()["active"] is True
        assert before.json()["client_id"] == client_id
        assert before.json()["sub"] == alice.id
        at_before = oauth.introspect_token(meta["introspection_endpoint"], token=at,
                                           token_type_hint="access_token").json()
        assert at_before["active"] is True and at_before["sub"] == alice.id

        # revocation (RFC 7009) of the refresh token
        revoked = oauth.revoke_token(meta["revocation_endpoint"], token=rt,
                                     token_type_hint="refresh_token")
        assert revoked.status_code == 200, revoked.text

        with pytest.raises(OAuthError) as after:
            oauth.refresh_token(meta["token_endpoint"], refresh_token=rt)
        assert oauth_error(after) == "invalid_grant"
        after_rt = oauth.introspect_token(meta["introspection_endpoint"], token=rt,
                                          token_type_hint="refresh_token")
        assert after_rt.status_code == 200 and after_rt.json() == {"active": False}
        # RFC 7009 §2.1: access tokens of the same grant SHOULD go too (Bastion does so)
        after_at = oauth.introspect_token(meta["introspection_endpoint"], token=at,
                                          token_type_hint="access_token")
        assert after_at.json() == {"active": False}
        resp = oauth.get(meta["userinfo_endpoint"])
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].lower().startswith("bearer")


def test_client_secret_post(live: LiveServer, alice: Person) -> None:
    reg = register_with_auth_method(live, "Authlib post", REDIRECT, "client_secret_post")
    client_id, secret = reg["client_id"], reg["client_secret"]
    seen: list[httpx.Request] = []
    with new_client(live, client_id, secret, token_endpoint_auth_method="client_secret_post",
                    revocation_endpoint_auth_method="client_secret_post",
                    event_hooks={"request": [seen.append]}) as oauth:
        meta = discover(oauth, live)
        keys = fetch_jwks(oauth, meta)
        callback, state, verifier, nonce = authorize(oauth, meta, live, alice,
                                                     ["login", "consent"])
        token = oauth.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                  code_verifier=verifier, state=state)
        # Authlib really sent the credentials in the body (RFC 6749 §2.3.1), not Basic
        sent = seen[-1]
        assert sent.url == meta["token_endpoint"] and "authorization" not in sent.headers
        body = parse_qs(sent.content.decode())
        assert body["client_id"] == [client_id] and body["client_secret"] == [secret]

        claims = validate_id_token(token["id_token"], meta, keys, client_id, nonce=nonce,
                                   access_token=token["access_token"])
        assert_profile(claims, alice)

        refreshed = oauth.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]
        rt = refreshed["refresh_token"]
        assert oauth.introspect_token(meta["introspection_endpoint"], token=rt).json()[
            "active"] is True
        assert oauth.revoke_token(meta["revocation_endpoint"], token=rt,
                                  token_type_hint="refresh_token").status_code == 200
        assert "client_secret" in parse_qs(seen[-1].content.decode())
        with pytest.raises(OAuthError) as after:
            oauth.refresh_token(meta["token_endpoint"], refresh_token=rt)
        assert oauth_error(after) == "invalid_grant"
        assert oauth.introspect_token(meta["introspection_endpoint"], token=rt).json() == {
            "active": False}

    # a wrong secret sent the same way is refused (RFC 6749 §5.2: invalid_client, 401)
    statuses: list[int] = []
    with new_client(live, client_id, secret + "x", token_endpoint_auth_method="client_secret_post",
                    event_hooks={"response": [lambda r: statuses.append(r.status_code)]}
                    ) as wrong:
        with pytest.raises(OAuthError) as bad:
            wrong.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
        assert oauth_error(bad) == "invalid_client" and statuses == [401]


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's ``PrivateKeyJWT`` with its own signing code, but assertions that live 300 s.

    Stock ``PrivateKeyJWT`` always signs ``exp = iat + 3600`` (``sign_jwt_bearer_assertion``'s
    default ``expires_in``; ``PrivateKeyJWT`` offers no way to change it), which Bastion
    refuses (it caps assertions at 600 s) — see ``test_private_key_jwt_stock_authlib``. This
    subclass lets the full private_key_jwt lifecycle run regardless.
    """

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return str(private_key_jwt_sign(auth.client_secret, client_id=auth.client_id,
                                        token_endpoint=token_endpoint, claims=self.claims,
                                        header=self.headers, alg=self.alg, expires_in=300))


def register_key_client(live: LiveServer, tmp_path: Path, name: str) -> tuple[ECKey, str]:
    """An EC P-256 key pair; its public JWKS registered with ``clients create --jwks-file``."""
    key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"}, auto_kid=True)
    jwks_file = tmp_path / "client-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    reg = register(live, name, REDIRECT, "--jwks-file", str(jwks_file))
    assert reg["token_endpoint_auth_method"] == "private_key_jwt"
    assert "client_secret" not in reg
    return key, reg["client_id"]


def test_private_key_jwt_stock_authlib(live: LiveServer, alice: Person, tmp_path: Path
                                       ) -> None:
    """Authlib's ``PrivateKeyJWT`` exactly as documented, at the token endpoint."""
    key, client_id = register_key_client(live, tmp_path, "Authlib stock private_key_jwt")
    with new_client(live, client_id, key, token_endpoint_auth_method="private_key_jwt") as oauth:
        meta = discover(oauth, live)
        # Authlib's default aud is the token endpoint URL; Bastion accepts only the issuer
        # identifier (rfc7523bis), which PrivateKeyJWT's first argument sets
        oauth.register_client_auth_method(PrivateKeyJWT(meta["issuer"], alg="ES256"))
        callback, state, verifier, nonce = authorize(oauth, meta, live, alice,
                                                     ["login", "consent"])
        token = oauth.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                  code_verifier=verifier, state=state)
        validate_id_token(token["id_token"], meta, fetch_jwks(oauth, meta), client_id,
                          nonce=nonce, access_token=token["access_token"])


def test_private_key_jwt_token_endpoint_audience_refused(live: LiveServer, alice: Person,
                                                         tmp_path: Path) -> None:
    """Authlib's default ``aud`` (the token endpoint URL) is refused: only the issuer
    identifier is accepted (rfc7523bis, the audience-injection attacks)."""
    key, client_id = register_key_client(live, tmp_path, "Authlib token endpoint aud")
    with new_client(live, client_id, key, token_endpoint_auth_method="private_key_jwt") as oauth:
        meta = discover(oauth, live)
        oauth.register_client_auth_method(
            ShortLivedPrivateKeyJWT(meta["token_endpoint"], alg="ES256"))
        callback, state, verifier, _ = authorize(oauth, meta, live, alice,
                                                 ["login", "consent"])
        with pytest.raises(OAuthError) as bad:
            oauth.fetch_token(meta["token_endpoint"], authorization_response=callback,
                              code_verifier=verifier, state=state)
        assert oauth_error(bad) == "invalid_client"


def test_private_key_jwt(live: LiveServer, alice: Person, tmp_path: Path) -> None:
    key, client_id = register_key_client(live, tmp_path, "Authlib private_key_jwt")

    seen: list[httpx.Request] = []
    with new_client(live, client_id, key, token_endpoint_auth_method="private_key_jwt",
                    revocation_endpoint_auth_method="private_key_jwt",
                    event_hooks={"request": [seen.append]}) as oauth:
        meta = discover(oauth, live)
        assert "ES256" in meta["token_endpoint_auth_signing_alg_values_supported"]
        oauth.register_client_auth_method(
            ShortLivedPrivateKeyJWT(meta["issuer"], alg="ES256"))
        keys = fetch_jwks(oauth, meta)
        callback, state, verifier, nonce = authorize(oauth, meta, live, alice,
                                                     ["login", "consent"])
        token = oauth.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                  code_verifier=verifier, state=state)
        body = parse_qs(seen[-1].content.decode())
        assert body["client_assertion_type"] == [
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
        assertion = jwt.decode(body["client_assertion"][0], key)
        assert assertion.header["alg"] == "ES256"
        assert assertion.claims["iss"] == assertion.claims["sub"] == client_id
        assert assertion.claims["aud"] == meta["issuer"] and assertion.claims["jti"]
        assert assertion.claims["exp"] - assertion.claims["iat"] == 300
        assert "authorization" not in seen[-1].headers

        claims = validate_id_token(token["id_token"], meta, keys, client_id, nonce=nonce,
                                   access_token=token["access_token"])
        assert_profile(claims, alice)

        refreshed = oauth.refresh_token(meta["token_endpoint"])
        rt = refreshed["refresh_token"]
        assert rt != token["refresh_token"]
        intro = oauth.introspect_token(meta["introspection_endpoint"], token=rt).json()
        assert intro["active"] is True and intro["client_id"] == client_id
        assert oauth.revoke_token(meta["revocation_endpoint"], token=rt,
                                  token_type_hint="refresh_token").status_code == 200
        with pytest.raises(OAuthError) as after:
            oauth.refresh_token(meta["token_endpoint"], refresh_token=rt)
        assert oauth_error(after) == "invalid_grant"
        assert oauth.introspect_token(meta["introspection_endpoint"], token=rt).json() == {
            "active": False}

    # an assertion signed with a key the client never registered is refused
    stranger = ECKey.generate_key("P-256", auto_kid=True)
    with new_client(live, client_id, stranger, token_endpoint_auth_method="private_key_jwt"
                    ) as forged:
        forged.register_client_auth_method(
            ShortLivedPrivateKeyJWT(meta["issuer"], alg="ES256"))
        with pytest.raises(OAuthError) as bad:
            forged.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
        assert oauth_error(bad) == "invalid_client"


def test_public_client_async(live: LiveServer, alice: Person) -> None:
    reg = register(live, "Authlib public", REDIRECT, "--public")
    assert reg["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in reg
    client_id = reg["client_id"]

    async def run() -> None:
        async with AsyncOAuth2Client(client_id=client_id, scope=SCOPE, redirect_uri=REDIRECT,
                                     code_challenge_method="S256", verify=tls(live),
                                     timeout=30) as oauth:
            assert oauth.token_endpoint_auth_method == "none"
            resp = await oauth.request("GET", live.url + "/.well-known/openid-configuration",
                                   withhold_token=True)
            meta = resp.json()
            assert meta["issuer"] == live.url
            keys = KeySet.import_key_set((await oauth.request("GET", meta["jwks_uri"],
                                                          withhold_token=True)).json())

            callback, state, verifier, nonce = authorize(oauth, meta, live, alice,
                                                         ["login", "consent"])
            token = await oauth.fetch_token(meta["token_endpoint"],
                                            authorization_response=callback,
                                            code_verifier=verifier, state=state)
            claims = validate_id_token(token["id_token"], meta, keys, client_id, nonce=nonce,
                                       access_token=token["access_token"])
            assert_profile(claims, alice)
            resp = await oauth.get(meta["userinfo_endpoint"])
            assert resp.status_code == 200 and resp.json()["sub"] == alice.id

            refreshed = await oauth.refresh_token(meta["token_endpoint"])
            rt = refreshed["refresh_token"]
            assert rt != token["refresh_token"]
            revoked = await oauth.revoke_token(meta["revocation_endpoint"], token=rt,
                                               token_type_hint="refresh_token")
            assert revoked.status_code == 200, revoked.text
            with pytest.raises(OAuthError) as after:
                await oauth.refresh_token(meta["token_endpoint"], refresh_token=rt)
            assert str(after.value.error) == "invalid_grant"

            # consent is remembered: a second authorization asks only for the password.
            # PKCE binds the code to its verifier: another verifier is refused (RFC 7636
            # §4.6), and the code is then spent (RFC 6749 §4.1.2: single use)
            callback, state, verifier, _ = authorize(oauth, meta, live, alice, ["login"])
            with pytest.raises(OAuthError) as pkce:
                await oauth.fetch_token(meta["token_endpoint"],
                                        authorization_response=callback,
                                        code_verifier=generate_token(64), state=state)
            assert str(pkce.value.error) == "invalid_grant"
            with pytest.raises(OAuthError) as spent:
                await oauth.fetch_token(meta["token_endpoint"],
                                        authorization_response=callback,
                                        code_verifier=verifier, state=state)
            assert str(spent.value.error) == "invalid_grant"

            # a code presented twice is refused, and the tokens issued from it are revoked
            # (RFC 6749 §4.1.2 SHOULD; RFC 9700 §4.5)
            callback, state, verifier, _ = authorize(oauth, meta, live, alice, ["login"])
            first = await oauth.fetch_token(meta["token_endpoint"],
                                            authorization_response=callback,
                                            code_verifier=verifier, state=state)
            with pytest.raises(OAuthError) as replay:
                await oauth.fetch_token(meta["token_endpoint"],
                                        authorization_response=callback,
                                        code_verifier=verifier, state=state)
            assert str(replay.value.error) == "invalid_grant"
            with pytest.raises(OAuthError) as gone:
                await oauth.refresh_token(meta["token_endpoint"],
                                          refresh_token=first["refresh_token"])
            assert str(gone.value.error) == "invalid_grant"

    asyncio.run(run())
