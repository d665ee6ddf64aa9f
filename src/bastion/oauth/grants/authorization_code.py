"""RFC 6749 §4.1.3 — Access Token Request with an authorization code, plus PKCE (RFC 7636
§4.5–4.6) and single use with revocation on replay (RFC 6749 §4.1.2)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update

from bastion.oauth import rfc7636
from bastion.oauth.errors import InvalidGrant, InvalidRequest, OAuthError, UnauthorizedClient
from bastion.oauth.families import issue_tokens, new_family, token_hash
from bastion.oauth.grants.base import TokenRequest
from bastion.store.models import AuthorizationCode, TokenFamily, User


class AuthorizationCodeGrant:
    grant_type = "authorization_code"

    async def handle(self, request: TokenRequest) -> dict[str, Any]:
        client, provider, params = request.client, request.provider, request.params
        if self.grant_type not in client.grant_types:
            raise UnauthorizedClient("client may not use the authorization code grant")
        code = params.get("code")
        if not code:
            raise InvalidRequest("code required")
        now = int(time.time())
        failure: OAuthError | None = None
        body: dict[str, Any] = {}
        async with provider.sessions.begin() as db:
            row = (await db.execute(
                update(AuthorizationCode)
                .where(AuthorizationCode.code_hash == token_hash(code),
                       AuthorizationCode.consumed_at.is_(None))
                .values(consumed_at=now).returning(AuthorizationCode))).scalar_one_or_none()
            if row is None:
                replayed = await db.get(AuthorizationCode, token_hash(code))
                if replayed is not None and replayed.family_id is not None:
                    # §4.1.2: a code used twice: SHOULD revoke all tokens issued from it
                    await provider.revoke_families(db, TokenFamily.id == replayed.family_id)
                failure = InvalidGrant("invalid authorization code")
            else:
                failure = self._check(row, params, client.client_id, now)
                user = await db.get(User, row.user_id) if failure is None else None
                if failure is None and (user is None or user.disabled):
                    failure = InvalidGrant("the user is no longer active")
                if failure is None and user is not None:
                    family = new_family(client, user, row.scope, row.sid, row.auth_time,
                                        row.amr, provider.settings.refresh_token_ttl)
                    db.add(family)
                    row.family_id = family.id
                    body = await issue_tokens(db, provider, family, client, user,
                                              row.scope.split(" "), nonce=row.nonce)
        # the code stays consumed even when the exchange failed: codes are single use
        if failure is not None:
            raise failure
        return body

    @staticmethod
    def _check(row: AuthorizationCode, params: dict[str, str], client_id: str,
               now: int) -> OAuthError | None:
        if row.client_id != client_id:
            return InvalidGrant("code was issued to another client")
        if row.expires_at <= now:
            return InvalidGrant("authorization code expired")
        # §4.1.3: redirect_uri REQUIRED if it was in the authorization request, identical
        if row.redirect_uri and params.get("redirect_uri") != row.redirect_uri:
            return InvalidGrant("redirect_uri does not match the authorization request")
        try:
            rfc7636.verify(row.code_challenge, params.get("code_verifier"))
        except OAuthError as exc:
            return exc
        return None
