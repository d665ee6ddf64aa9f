"""RFC 8414 — OAuth 2.0 Authorization Server Metadata. https://www.rfc-editor.org/rfc/rfc8414

Built from what is enabled, never written by hand.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.oauth.clientauth import AUTH_METHODS_SUPPORTED
from bastion.oauth.provider import Provider
from bastion.oauth.rfc7523 import ALGORITHMS as ASSERTION_ALGS


def metadata(provider: Provider, grant_types: list[str]) -> dict[str, Any]:
    u = provider.url
    return {
        "issuer": provider.issuer_url,
        "authorization_endpoint": u("/authorize"),
        "token_endpoint": u("/token"),
        "jwks_uri": u("/jwks.json"),
        "revocation_endpoint": u("/revoke"),
        "introspection_endpoint": u("/introspect"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS_SUPPORTED),
        # RFC 8705 §3.3: access tokens are bound to the client certificate of the request
        "tls_client_certificate_bound_access_tokens": True,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS_SUPPORTED),
        "introspection_endpoint_auth_methods_supported": [
            m for m in AUTH_METHODS_SUPPORTED if m != "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access", "order:view",
                             "order:create"],
        # RFC 9207 §3
        "authorization_response_iss_parameter_supported": True,
    }


async def metadata_endpoint(provider: Provider, grant_types: list[str],
                            request: Request) -> Response:
    del request
    return JSONResponse(metadata(provider, grant_types),
                        headers={"Cache-Control": "public, max-age=300"})
