"""openid-client v6 (npm; a certified OpenID relying party) against a real ``bastion serve``
over TLS, run with node by ``node/rp.mjs``: discovery, authorization code + PKCE S256 with
nonce and state, ID token validation (signature included), UserInfo, refresh, introspection,
revocation. The script prints a JSON summary; the assertions are here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import (
    SCOPE,
    SCOPES,
    Person,
    register,
    register_with_auth_method,
)
from tests.live import LiveServer

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).parent / "node"
REDIRECT = "http://127.0.0.1:9/cb"


def run_rp(live: LiveServer, person: Person, client_id: str, client_secret: str | None,
           auth: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node (20+) is required for the openid-client interop tests"
    assert (NODE_DIR / "node_modules" / "openid-client").is_dir(), \
        "run `npm ci` in tests/interop/node (make test does)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "NODE_"))}
    env["NODE_EXTRA_CA_CERTS"] = str(live.ca_file)
    payload = {"issuer": live.url, "client_id": client_id, "client_secret": client_secret,
               "auth": auth, "redirect_uri": REDIRECT, "scope": SCOPE,
               "username": person.username, "password": person.password}
    out = subprocess.run([node, str(NODE_DIR / "rp.mjs")], input=json.dumps(payload),
                         capture_output=True, text=True, cwd=NODE_DIR, env=env, timeout=120,
                         check=False)
    assert out.returncode == 0, f"rp.mjs failed:\n{out.stderr}\n{out.stdout}"
    summary: dict[str, Any] = json.loads(out.stdout)
    return summary


def failed_with(result: dict[str, Any], error: str) -> bool:
    """The call failed with this OAuth ``error`` — from openid-client's ResponseBodyError, or
    from the JSON body of a 401 that openid-client reported as a WWW-Authenticate challenge
    (it raises those without reading the body)."""
    if result["ok"] is not False:
        return False
    err = result["error"]
    if err["code"] == "OAUTH_WWW_AUTHENTICATE_CHALLENGE":
        return err["status"] == 401 and (err.get("body") or {}).get("error") == error
    return bool(err["error"] == error)


@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post", "none",
                                  "defaults"])
def test_openid_client_code_flow_lifecycle(live: LiveServer, alice: Person, auth: str) -> None:
    """``defaults`` (issue 8 item 16): a client from ``bastion clients create`` without
    --auth-method, used with openid-client's documented shorthand (client_secret_post by
    default). Such a client accepts either secret method; it used to get an opaque 401
    challenge because it only allowed client_secret_basic."""
    if auth == "client_secret_basic":
        reg = register_with_auth_method(live, "openid-client basic", REDIRECT, auth)
    elif auth == "client_secret_post":
        reg = register_with_auth_method(live, "openid-client post", REDIRECT, auth)
    elif auth == "defaults":
        reg = register(live, "openid-client defaults", REDIRECT)
        # the registered metadata keeps RFC 7591 §2's default value
        assert reg["token_endpoint_auth_method"] == "client_secret_basic"
        auth = "client_secret_post"  # what openid-client's shorthand sends
    else:
        reg = register(live, "openid-client public", REDIRECT, "--public")
    assert reg["token_endpoint_auth_method"] in (auth, "client_secret_basic")
    client_id = reg["client_id"]
    s = run_rp(live, alice, client_id, reg.get("client_secret"), auth)

    # discovery: openid-client accepted the metadata (it enforces issuer == discovery URL)
    d = s["discovery"]
    assert d["issuer"] == live.url
    assert d["token_endpoint"] == live.url + "/token"
    assert d["jwks_uri"] == live.url + "/jwks.json"
    assert d["supportsPKCE"] is True

    # the authorization request openid-client built, and the response it accepted
    req = s["authorization_request"]
    assert req["response_type"] == "code" and req["client_id"] == client_id
    assert req["code_challenge_method"] == "S256"
    assert req["code_challenge"] == s["pkce"]["challenge"]
    assert req["nonce"] == s["nonce"] and req["state"]
    assert s["steps"] == ["login", "consent"]
    assert s["callback"]["code"] == "<present>"
    assert s["callback"]["state"] == req["state"]
    assert s["callback"]["iss"] == live.url  # RFC 9207 (openid-client checks it too)

    # tokens and the ID token openid-client validated (signature, iss, aud, exp, nonce...)
    t = s["tokens"]
    assert t["token_type"].lower() == "bearer"
    assert set(t["scope"].split()) == set(SCOPES)
    assert t["expires_in"] > 0 and t["has_refresh_token"] is True
    assert t["id_token_header"]["alg"] in ("ES256", "RS256", "EdDSA")
    assert t["id_token_header"]["kid"]
    c = s["id_token_claims"]
    assert c["iss"] == live.url and c["sub"] == alice.id
    assert c["aud"] in (client_id, [client_id])
    assert c["nonce"] == s["nonce"]
    assert c["at_hash"] and c["auth_time"] <= c["iat"] < c["exp"]
    assert c["preferred_username"] == alice.username
    assert c["email"] == f"{alice.username}@example.com"
    assert "order:view" in c["roles"]

    # UserInfo, with openid-client's subject check (OIDC Core §5.3.4)
    assert s["userinfo"]["ok"] is True, s["userinfo"]
    info = s["userinfo"]["value"]
    assert info["sub"] == alice.id
    assert info["preferred_username"] == alice.username and info["name"] == "Alice"
    assert info["email"] == f"{alice.username}@example.com"
    assert s["userinfo_wrong_subject"]["ok"] is False  # the RP's own check does bite

    # refresh: a new refresh token (rotation) and a valid new ID token for the same user
    r = s["refresh"]
    assert r["ok"] is True, r
    assert r["new_refresh_token"] is True and r["new_access_token"] is True
    assert set(r["scope"].split()) == set(SCOPES)
    assert r["id_token_claims"]["sub"] == alice.id
    assert r["id_token_claims"]["auth_time"] == c["auth_time"]  # OIDC Core §12.2

    # revocation (RFC 7009), then the refresh token is dead
    assert s["revocation"] == {"ok": True, "value": None}, s["revocation"]
    assert failed_with(s["refresh_after_revocation"], "invalid_grant"), \
        s["refresh_after_revocation"]
    assert s["userinfo_after_revocation"]["ok"] is False
    assert s["userinfo_after_revocation"]["error"]["status"] == 401

    if auth == "none":
        # RFC 7662 §2.1: introspection needs authorization; a public client has none
        assert failed_with(s["introspection_before"], "invalid_client")
        assert failed_with(s["introspection_after"], "invalid_client")
    else:
        before = s["introspection_before"]
        assert before["ok"] is True, before
        assert before["value"]["active"] is True
        assert before["value"]["client_id"] == client_id
        assert before["value"]["sub"] == alice.id
        assert s["introspection_after"] == {"ok": True, "value": {"active": False}}
        # RFC 7009 §2.1: the grant's access tokens SHOULD be revoked too (Bastion does)
        assert s["access_token_introspection_after"] == {"ok": True,
                                                         "value": {"active": False}}

    # the code is single use (RFC 6749 §4.1.2): replaying it through openid-client fails
    assert failed_with(s["code_replay"], "invalid_grant"), s["code_replay"]
