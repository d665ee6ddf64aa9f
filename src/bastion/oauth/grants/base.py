"""The grant handler contract (fosite style): ``can_handle`` then ``handle``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bastion.identity.clients import ClientInfo
from bastion.oauth.errors import InvalidScope
from bastion.oauth.provider import Provider


@dataclass(frozen=True)
class TokenRequest:
    provider: Provider
    client: ClientInfo
    params: dict[str, str]

    @property
    def grant_type(self) -> str:
        return self.params.get("grant_type", "")


class GrantHandler(Protocol):
    grant_type: str

    async def handle(self, request: TokenRequest) -> dict[str, Any]:
        """Return the RFC 6749 §5.1 response body, or raise an ``OAuthError``."""
        ...


def narrow_scope(requested: str | None, granted: list[str]) -> list[str]:
    """RFC 6749 §6: a requested scope MUST NOT include any scope not originally granted."""
    if requested is None:
        return granted
    scopes = requested.split(" ")
    if any(not s for s in scopes) or not set(scopes) <= set(granted):
        raise InvalidScope("scope exceeds the granted scope")
    return scopes
