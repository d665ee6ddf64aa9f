"""RFC 7662 — OAuth 2.0 Token Introspection. https://www.rfc-editor.org/rfc/rfc7662

Callers authenticate as confidential clients (§2.1 "MUST require some form of
authorization"). Refresh tokens are described only to the client they were issued to.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.identity.clients import ClientInfo
from bastion.oauth.clientauth import audit_refusal, authenticate_client
from bastion.oauth.errors import NO_STORE, InvalidClient, InvalidRequest, OAuthError
from bastion.oauth.lookup import find_access, find_refresh
from bastion.oauth.params import form_params
from bastion.oauth.provider import Provider

INACTIVE = {"active": False}


async def introspection_endpoint(provider: Provider, request: Request) -> Response:
    params: dict[str, str] = {}
    client: ClientInfo | None = None
    try:
        if request.method != "POST":
            raise InvalidRequest("use POST")  # §2.1
        params = await form_params(request, provider.settings.max_body_bytes)
        client = await authenticate_client(request, params, provider)
        if client.public:
            raise InvalidClient("public clients may not introspect")
        token = params.get("token")
        if not token:
            raise InvalidRequest("token required")
        body = await _describe(provider, client.client_id, token,
                               params.get("token_type_hint"))
    except OAuthError as exc:
        # a refusal is a security decision too (failed client authentication above all)
        await audit_refusal(provider, "IntrospectToken", request, params, exc, client)
        return exc.response()
    await provider.audit.emit(
        "IntrospectToken", user_identity={"type": "Client", "clientId": client.client_id},
        response_elements={"active": body.get("active"), "sub": body.get("sub")})
    return JSONResponse(body, headers=NO_STORE)


async def _describe(provider: Provider, caller: str, token: str, hint: str | None
                    ) -> dict[str, Any]:
    del hint  # §2.1: the hint only orders the search; both kinds are always tried
    access = await find_access(provider, token)
    if access is not None:
        c = access.claims
        out = {"active": True, "token_type": "Bearer", "scope": c.get("scope", ""),
               "client_id": access.client_id, "sub": access.subject, "exp": access.expires_at,
               "iat": c.get("iat"), "nbf": c.get("nbf"), "iss": c.get("iss"),
               "aud": c.get("aud"), "jti": access.jti,
               "cnf": c.get("cnf")}  # RFC 8705 §3.2: the certificate it is bound to
        return {k: v for k, v in out.items() if v is not None}
    now = int(time.time())
    found = await find_refresh(provider, token)
    if found is None or found.family.client_id != caller:
        return INACTIVE
    fam = found.family
    if fam.revoked_at is not None or fam.expires_at <= now or (
            found.rotated_at is not None and
            now - found.rotated_at >= provider.settings.refresh_grace_seconds):
        return INACTIVE
    out = {"active": True, "token_type": "refresh_token", "scope": fam.scope,
           "client_id": fam.client_id, "sub": fam.user_id, "exp": fam.expires_at,
           "iat": found.created_at, "iss": provider.issuer_url}
    return {k: v for k, v in out.items() if v is not None}
