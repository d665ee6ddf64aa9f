"""JWT access tokens: signing keys (issuer side) and verification (resource server side).

A resource server needs only the verification side::

    from bastion.tokens import BearerAuthMiddleware, RemoteJWKS, TokenVerifier

    verifier = TokenVerifier(issuer="https://id.example.com",
                             audience="https://id.example.com",
                             jwks=RemoteJWKS("https://id.example.com/jwks.json"))
    app.add_middleware(BearerAuthMiddleware, verifier=verifier)
"""

from bastion.tokens.errors import BearerError, InsufficientScope, InvalidRequest, InvalidToken
from bastion.tokens.jwks import CallableJWKS, JWKSource, RemoteJWKS, StaticJWKS
from bastion.tokens.starlette import (
    BearerAuthMiddleware,
    BearerToken,
    authorize,
    bearer_error_response,
    require_scopes,
)
from bastion.tokens.verify import TokenVerifier, VerifiedToken

__all__ = [
    "BearerAuthMiddleware", "BearerError", "BearerToken", "CallableJWKS", "InsufficientScope",
    "InvalidRequest", "InvalidToken", "JWKSource", "RemoteJWKS", "StaticJWKS",
    "TokenVerifier", "VerifiedToken", "authorize", "bearer_error_response", "require_scopes",
]
