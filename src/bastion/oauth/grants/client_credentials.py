"""RFC 6749 §4.4 — Client Credentials Grant: a confidential client acting for itself."""

from __future__ import annotations

from typing import Any

from bastion.iam.scheme import principal_arn
from bastion.oauth.errors import InvalidScope, UnauthorizedClient
from bastion.oauth.grants.base import TokenRequest

NOT_FOR_CLIENTS = {"openid", "offline_access", "profile", "email"}


class ClientCredentialsGrant:
    grant_type = "client_credentials"

    async def handle(self, request: TokenRequest) -> dict[str, Any]:
        client, provider = request.client, request.provider
        # §4.4: MUST only be used by confidential clients
        if client.public or self.grant_type not in client.grant_types:
            raise UnauthorizedClient("client may not use client_credentials")
        allowed = sorted(client.scopes - NOT_FOR_CLIENTS)
        raw = request.params.get("scope")
        scopes = raw.split(" ") if raw is not None else allowed
        if any(not s for s in scopes) or not set(scopes) <= set(allowed):
            raise InvalidScope("scope not allowed for this client")
        ttl = provider.settings.access_token_ttl
        scope = " ".join(scopes)
        token = provider.tokens.access_token(
            subject=client.client_id, client_id=client.client_id,
            audience=provider.api_audience, scope=scope, ttl=ttl, roles=client.roles,
            extra={"principal_arn": principal_arn("client", client.client_id,
                                                  provider.settings.account_id)})
        # §4.4.3: a refresh token SHOULD NOT be included
        return {"access_token": token.token, "token_type": "Bearer", "expires_in": ttl,
                "scope": scope}
