"""OAuth errors carrying the wire contract: registered code, safe description, status.

``debug`` is for logs only and never reaches the client.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    error = "server_error"
    status_code = 400

    def __init__(self, description: str | None = None, *, debug: str | None = None,
                 state: str | None = None) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.debug = debug
        self.state = state

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error}
        if self.description:
            out["error_description"] = self.description
        return out

    def headers(self) -> dict[str, str]:
        return dict(NO_STORE)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers())


class InvalidRequest(OAuthError):
    """RFC 6749 §5.2: The request is missing a required parameter, includes an unsupported
    parameter value, repeats a parameter, or is otherwise malformed."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: Client authentication failed (unknown client, no client
    authentication included, or unsupported authentication method)."""

    error = "invalid_client"
    status_code = 401

    def headers(self) -> dict[str, str]:
        h = super().headers()
        # RFC 6749 §5.2: a 401 names the scheme the endpoint supports for client
        # authentication (HTTP Basic); it MUST do so when the client used Authorization
        h["WWW-Authenticate"] = 'Basic realm="bastion"'
        return h


class InvalidGrant(OAuthError):
    """RFC 6749 §5.2: The provided authorization grant or refresh token is invalid, expired,
    revoked, does not match the redirection URI, or was issued to another client."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """RFC 6749 §5.2: The authenticated client is not authorized to use this grant type."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 §5.2: The grant type is not supported by the authorization server."""

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """RFC 6749 §5.2: The requested scope is invalid, unknown, malformed, or exceeds the
    scope granted by the resource owner."""

    error = "invalid_scope"


class UnsupportedResponseType(OAuthError):
    """RFC 6749 §4.1.2.1: The server does not support obtaining a code with this method."""

    error = "unsupported_response_type"


class AccessDenied(OAuthError):
    """RFC 6749 §4.1.2.1: The resource owner or authorization server denied the request."""

    error = "access_denied"
    status_code = 403


class LoginRequired(OAuthError):
    """OIDC Core §3.1.2.6: prompt=none but the End-User is not authenticated."""

    error = "login_required"


class ConsentRequired(OAuthError):
    """OIDC Core §3.1.2.6: prompt=none but consent is required."""

    error = "consent_required"


class RequestNotSupported(OAuthError):
    """OIDC Core §3.1.2.6: the OP does not support the request parameter."""

    error = "request_not_supported"


class RequestUriNotSupported(OAuthError):
    """OIDC Core §3.1.2.6: the OP does not support the request_uri parameter."""

    error = "request_uri_not_supported"


class UnsupportedTokenType(OAuthError):
    """RFC 7009 §2.2.1: the server does not support revocation of this token type."""

    error = "unsupported_token_type"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
