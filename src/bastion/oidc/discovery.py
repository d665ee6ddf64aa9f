"""OpenID Connect Discovery 1.0 §3 — provider metadata, derived from RFC 8414 metadata."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.oauth.provider import Provider
from bastion.oauth.rfc8414 import metadata
from bastion.tokens.algorithms import SIGNING


def openid_configuration(provider: Provider, grant_types: list[str]) -> dict[str, Any]:
    out = metadata(provider, grant_types)
    alg = provider.keyring.signing_alg
    out.update({
        "userinfo_endpoint": provider.url("/userinfo"),
        "end_session_endpoint": provider.url("/logout"),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": sorted({alg, *SIGNING}),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid",
                             "amr", "azp", "at_hash", "name", "preferred_username", "email",
                             "email_verified", "roles"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "claims_parameter_supported": False,
    })
    return out


async def discovery_endpoint(provider: Provider, grant_types: list[str],
                             request: Request) -> Response:
    del request
    return JSONResponse(openid_configuration(provider, grant_types),
                        headers={"Cache-Control": "public, max-age=300"})


async def jwks_endpoint(provider: Provider, request: Request) -> Response:
    del request
    # short cache: a rotation must reach resource servers within the key's publication lead
    return JSONResponse(provider.keyring.jwks, headers={"Cache-Control": "public, max-age=60"})
