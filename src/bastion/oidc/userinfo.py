"""OpenID Connect Core §5.3 — UserInfo endpoint, protected by a bearer access token
(RFC 6750) carrying the ``openid`` scope."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.identity.users import effective_roles
from bastion.oauth.families import profile_claims
from bastion.oauth.provider import Provider
from bastion.store.models import User
from bastion.tokens.errors import BearerError, InsufficientScope, InvalidToken
from bastion.tokens.starlette import bearer_error_response


async def userinfo_endpoint(provider: Provider, request: Request) -> Response:
    token = request.scope.get("state", {}).get("token")
    try:
        if token is None:
            raise InvalidToken("access token required")
        if "openid" not in token.scopes:
            raise InsufficientScope("the openid scope is required")
        async with provider.sessions() as db:
            user = await db.get(User, token.subject)
            if user is None or user.disabled:
                raise InvalidToken("the user is no longer active")
            roles = await effective_roles(db, user)
    except BearerError as err:
        return bearer_error_response(err, "bastion")
    body = {"sub": user.id, **profile_claims(user, sorted(token.scopes), roles)}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
