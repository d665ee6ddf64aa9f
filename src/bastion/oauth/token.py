"""The token endpoint — RFC 6749 §3.2 and §5: authenticate the client, then hand the request
to the handler registered for its ``grant_type``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.oauth.clientauth import authenticate_client
from bastion.oauth.errors import NO_STORE, InvalidRequest, OAuthError, UnsupportedGrantType
from bastion.oauth.grants.authorization_code import AuthorizationCodeGrant
from bastion.oauth.grants.base import GrantHandler, TokenRequest
from bastion.oauth.grants.client_credentials import ClientCredentialsGrant
from bastion.oauth.grants.refresh_token import RefreshTokenGrant
from bastion.oauth.params import form_params
from bastion.oauth.provider import Provider
from bastion.tokens.binding import BOUND_THUMBPRINT, request_thumbprint

log = logging.getLogger("bastion.oauth.token")


def default_grants() -> list[GrantHandler]:
    return [AuthorizationCodeGrant(), RefreshTokenGrant(), ClientCredentialsGrant()]


class TokenEndpoint:
    def __init__(self, provider: Provider, grants: Iterable[GrantHandler]) -> None:
        self.provider = provider
        self.grants = {g.grant_type: g for g in grants}

    async def handle(self, request: Request) -> Response:
        params: dict[str, str] = {}
        client_id: str | None = None
        try:
            if request.method != "POST":
                # §3.2: the client MUST use the HTTP POST method
                raise InvalidRequest("use POST")
            params = await form_params(request, self.provider.settings.max_body_bytes)
            grant_type = params.get("grant_type")
            if not grant_type:
                raise InvalidRequest("grant_type required")
            client = await authenticate_client(request, params, self.provider)
            client_id = client.client_id
            handler = self.grants.get(grant_type)
            if handler is None:
                raise UnsupportedGrantType("unsupported grant_type")
            # RFC 8705 §3: tokens issued over a connection with a client certificate are
            # bound to it (cnf.x5t#S256), whatever the client authentication was
            bound = BOUND_THUMBPRINT.set(request_thumbprint(request.scope))
            try:
                body = await handler.handle(TokenRequest(self.provider, client, params))
            finally:
                BOUND_THUMBPRINT.reset(bound)
        except OAuthError as exc:
            log.info("token request refused: %s (%s)", exc.error, exc.debug or exc.description)
            await self._audit(params, client_id, None, exc)
            return exc.response()
        await self._audit(params, client_id, body, None)
        # §5.1: Cache-Control: no-store
        return JSONResponse(body, headers=NO_STORE)

    async def _audit(self, params: dict[str, str], client_id: str | None,
                     body: dict[str, Any] | None, exc: OAuthError | None) -> None:
        """One record per token request, issued or refused; never the tokens themselves."""
        grant = params.get("grant_type", "")
        event = "RefreshToken" if grant == "refresh_token" else "IssueToken"
        request = {"grantType": grant[:64], "clientId": client_id,
                   "scope": params.get("scope")}
        response = None if body is None else {
            "tokenType": body.get("token_type"), "expiresIn": body.get("expires_in"),
            "scope": body.get("scope"),
            "issued": [k for k in ("access_token", "refresh_token", "id_token") if k in body]}
        identity = {"type": "Client", "principalId": client_id, "clientId": client_id} \
            if client_id else {"type": "Anonymous"}
        await self.provider.audit.emit(
            event, user_identity=identity, request_parameters=request,
            response_elements=response, error_code=exc.error if exc else None,
            error_message=(exc.description or exc.error)[:500] if exc else None)
