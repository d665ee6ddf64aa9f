"""Bearer token errors: RFC 6750 — The OAuth 2.0 Authorization Framework: Bearer Token Usage.

https://www.rfc-editor.org/rfc/rfc6750#section-3.1

Each error carries its wire contract: the registered ``error`` code, the HTTP ``status_code``
and a short ``description`` that is safe to send (it never contains the token or key
material). ``debug`` is for logs only and never reaches the client.
"""

from __future__ import annotations

import re
from typing import ClassVar

__all__ = [
    "BearerError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "MissingToken",
]

# RFC 6750 §3: error_description and scope values exclude '"' and '\' (and controls).
_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_REALM_OK = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*')


def _clean(value: str, limit: int = 200) -> str:
    return _UNSAFE.sub("", value)[:limit]


def check_realm(realm: str) -> str:
    """Return ``realm`` if it can be sent as a quoted-string without escaping, else raise."""
    if not isinstance(realm, str) or not _REALM_OK.fullmatch(realm):
        raise ValueError("realm must be printable ASCII without '\"' or '\\'")
    return realm


class BearerError(Exception):
    """Base error for the bearer token protocol (RFC 6750 §3.1)."""

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400
    default_description: ClassVar[str] = "invalid request"

    def __init__(self, description: str | None = None, *, debug: str | None = None) -> None:
        self.description: str = _clean(description or self.default_description)
        #: Private detail for logs; never rendered to the client.
        self.debug: str | None = debug
        super().__init__(self.description)

    def challenge_params(self, scope: str | None) -> list[str]:
        params = [f'error="{self.error}"', f'error_description="{self.description}"']
        if scope:
            params.append(f'scope="{_clean(scope, 1000)}"')
        return params

    def www_authenticate(self, realm: str = "bastion", scope: str | None = None) -> str:
        """The ``WWW-Authenticate`` challenge for this error (RFC 6750 §3)."""
        params = [f'realm="{check_realm(realm)}"', *self.challenge_params(scope)]
        return "Bearer " + ", ".join(params)

    def headers(self, realm: str = "bastion", scope: str | None = None) -> dict[str, str]:
        """Response headers: the challenge, and no caching of the error (RFC 6750 §3)."""
        return {
            "WWW-Authenticate": self.www_authenticate(realm, scope),
            "Cache-Control": "no-store",
        }

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(BearerError):
    """RFC 6750 §3.1: "The request is missing a required parameter, includes an unsupported
    parameter or parameter value, repeats the same parameter, uses more than one method for
    including an access token, or is otherwise malformed." → 400."""

    error = "invalid_request"
    status_code = 400
    default_description = "invalid request"


class InvalidToken(BearerError):
    """RFC 6750 §3.1: "The access token provided is expired, revoked, malformed, or invalid
    for other reasons." → 401."""

    error = "invalid_token"
    status_code = 401
    default_description = "invalid token"


class MissingToken(InvalidToken):
    """RFC 6750 §3.1: "If the request lacks any authentication information (e.g., the client
    was unaware that authentication is necessary or attempted using an unsupported
    authentication method), the resource server SHOULD NOT include an error code or other
    error information." → 401 with a bare ``Bearer realm="..."`` challenge.

    The JSON body still says ``invalid_token`` so that clients parsing bodies get a code.
    """

    default_description = "access token required"

    def challenge_params(self, scope: str | None) -> list[str]:
        return []


class InsufficientScope(BearerError):
    """RFC 6750 §3.1: "The request requires higher privileges than provided by the access
    token." → 403, with the ``scope`` needed in the challenge."""

    error = "insufficient_scope"
    status_code = 403
    default_description = "insufficient scope"

    def __init__(
        self, description: str | None = None, *, scope: str | None = None, debug: str | None = None
    ) -> None:
        super().__init__(description, debug=debug)
        #: Space-separated scopes the request needs (RFC 6750 §3 ``scope`` attribute).
        self.scope = scope

    def www_authenticate(self, realm: str = "bastion", scope: str | None = None) -> str:
        return super().www_authenticate(realm, scope if scope is not None else self.scope)
