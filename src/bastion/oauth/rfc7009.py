"""RFC 7009 — OAuth 2.0 Token Revocation. https://www.rfc-editor.org/rfc/rfc7009

Revoking a refresh token revokes its whole family (and denies the family's access tokens,
§2.1 "SHOULD also invalidate all access tokens based on the same authorization grant");
revoking an access token puts its ``jti`` on the denylist until it expires.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from bastion.identity.clients import ClientInfo
from bastion.oauth.clientauth import audit_refusal, authenticate_client
from bastion.oauth.errors import NO_STORE, InvalidRequest, OAuthError
from bastion.oauth.families import revoke_families
from bastion.oauth.lookup import find_access, find_refresh
from bastion.oauth.params import form_params
from bastion.oauth.provider import Provider

log = logging.getLogger("bastion.oauth.revoke")


async def revocation_endpoint(provider: Provider, request: Request) -> Response:
    params: dict[str, str] = {}
    client: ClientInfo | None = None
    try:
        if request.method != "POST":
            raise InvalidRequest("use POST")  # §2.1: HTTP POST
        params = await form_params(request, provider.settings.max_body_bytes)
        client = await authenticate_client(request, params, provider)
        token = params.get("token")
        if not token:
            raise InvalidRequest("token required")
        hint = params.get("token_type_hint")
        revoked = None
        order = ["access", "refresh"] if hint == "access_token" else ["refresh", "access"]
        for kind in order:
            if kind == "refresh":
                found = await find_refresh(provider, token)
                if found is None:
                    continue
                # §2.1: the server verifies the token was issued to the requesting client
                if found.family.client_id == client.client_id:
                    async with provider.fast.transaction() as tx:
                        await revoke_families(provider, tx, "id = :fid", fid=found.family.id)
                    revoked = "refresh_token"
                break
            access = await find_access(provider, token)
            if access is None:
                continue
            if access.client_id == client.client_id and access.jti:
                async with provider.fast.transaction() as tx:
                    await provider.denylist.revoke(tx, [(access.jti, access.expires_at)])
                revoked = "access_token"
            break
        await provider.audit.emit(
            "RevokeToken", user_identity={"type": "Client", "clientId": client.client_id},
            request_parameters={"tokenTypeHint": (hint or "")[:32]},
            response_elements={"revoked": revoked})
    except OAuthError as exc:
        # a refusal is a security decision too (failed client authentication above all)
        await audit_refusal(provider, "RevokeToken", request, params, exc, client)
        return exc.response()
    # §2.2: 200 also for invalid or unknown tokens (nothing to tell an attacker)
    return Response(status_code=200, headers=NO_STORE)
