"""RFC 6749 §4.1.3 — Access Token Request with an authorization code, plus PKCE (RFC 7636
§4.5–4.6) and single use with revocation on replay (RFC 6749 §4.1.2)."""

from __future__ import annotations

import json
import time
from typing import Any

from bastion.oauth import rfc7636
from bastion.oauth.codes import AuthorizationCodes, SqlAuthorizationCodes
from bastion.oauth.errors import InvalidGrant, InvalidRequest, OAuthError, UnauthorizedClient
from bastion.oauth.families import (
    create_family,
    issue_tokens,
    load_subject,
    revoke_families,
    token_hash,
)
from bastion.oauth.grants.base import TokenRequest
from bastion.store.fast import Row


class AuthorizationCodeGrant:
    grant_type = "authorization_code"

    def __init__(self, codes: AuthorizationCodes | None = None) -> None:
        self.codes: AuthorizationCodes = codes or SqlAuthorizationCodes()

    async def handle(self, request: TokenRequest) -> dict[str, Any]:
        client, provider, params = request.client, request.provider, request.params
        if self.grant_type not in client.grant_types:
            raise UnauthorizedClient("client may not use the authorization code grant")
        code = params.get("code")
        if not code:
            raise InvalidRequest("code required")
        h = token_hash(code)
        now = int(time.time())
        failure: OAuthError | None = None
        body: dict[str, Any] = {}
        replayed_family: str | None = None
        async with provider.fast.transaction() as tx:
            # atomic single use: of two concurrent redemptions only one gets the row
            row = await self.codes.consume(tx, h, now)
            if row is None:
                replayed_family = await self.codes.family_of(tx, h)
                if replayed_family is not None:
                    # §4.1.2: a code used twice: SHOULD revoke all tokens issued from it
                    await revoke_families(provider, tx, "id = :fid", fid=replayed_family)
                failure = InvalidGrant("invalid authorization code")
            else:
                failure = self._check(row, params, client.client_id, now)
                user = await load_subject(tx, row["user_id"]) if failure is None else None
                if failure is None and (user is None or user.disabled):
                    failure = InvalidGrant("the user is no longer active")
                if failure is None and user is not None:
                    amr = row["amr"]
                    family = await create_family(
                        tx, client, user.id, row["scope"], row["sid"], row["auth_time"],
                        json.loads(amr) if isinstance(amr, str) else list(amr or []),
                        provider.settings.refresh_token_ttl)
                    await self.codes.bind_family(tx, h, family.id)
                    body = await issue_tokens(tx, provider, family, client, user,
                                              row["scope"].split(" "), nonce=row["nonce"])
        # the code stays consumed even when the exchange failed: codes are single use
        if replayed_family is not None:
            await provider.audit.emit(
                "CodeReplayDetected",
                user_identity={"type": "Client", "clientId": client.client_id},
                request_parameters={"familyId": replayed_family},
                error_code="invalid_grant", error_message="tokens issued from the code revoked")
        if failure is not None:
            raise failure
        return body

    @staticmethod
    def _check(row: Row, params: dict[str, str], client_id: str, now: int) -> OAuthError | None:
        if row["client_id"] != client_id:
            return InvalidGrant("code was issued to another client")
        if row["expires_at"] <= now:
            return InvalidGrant("authorization code expired")
        # §4.1.3: redirect_uri REQUIRED if it was in the authorization request, identical
        if row["redirect_uri"] and params.get("redirect_uri") != row["redirect_uri"]:
            return InvalidGrant("redirect_uri does not match the authorization request")
        try:
            rfc7636.verify(row["code_challenge"], params.get("code_verifier"))
        except OAuthError as exc:
            return exc
        return None
