"""ACME problem documents (RFC 8555 §6.7, on RFC 7807/9457): ``urn:ietf:params:acme:error:*``
types served as ``application/problem+json`` with the status codes §6.7 and the sections that
raise them name. ``debug`` never reaches the client."""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_TYPE = "application/problem+json"
NS = "urn:ietf:params:acme:error:"


class AcmeProblem(Exception):
    """One ACME error type; subclasses set ``type`` and ``status``."""

    type: ClassVar[str] = "serverInternal"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, *, debug: str | None = None,
                 subproblems: list[dict[str, Any]] | None = None,
                 identifier: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.debug = debug
        self.subproblems = subproblems
        self.identifier = identifier

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": NS + self.type, "detail": self.detail,
                               "status": self.status}
        if self.subproblems:
            doc["subproblems"] = self.subproblems
        if self.identifier:
            doc["identifier"] = self.identifier
        return doc


class Malformed(AcmeProblem):
    """"The request message was malformed" (§6.7)."""
    type, status = "malformed", 400


class BadNonce(AcmeProblem):
    """"The client sent an unacceptable anti-replay nonce" (§6.5: answered with a fresh
    Replay-Nonce so the client can retry)."""
    type, status = "badNonce", 400


class BadSignatureAlgorithm(AcmeProblem):
    """"The JWS was signed with an algorithm the server does not support" (§6.2)."""
    type, status = "badSignatureAlgorithm", 400


class BadPublicKey(AcmeProblem):
    """"The JWS was signed by a public key the server does not support" (§6.7)."""
    type, status = "badPublicKey", 400


class Unauthorized(AcmeProblem):
    """"The client lacks sufficient authorization" (§6.7)."""
    type, status = "unauthorized", 403


class AccountDoesNotExist(AcmeProblem):
    """"The request specified an account that does not exist" (§7.3.1)."""
    type, status = "accountDoesNotExist", 400


class ExternalAccountRequired(AcmeProblem):
    """"The request must include a value for the externalAccountBinding field" (§7.3.4)."""
    type, status = "externalAccountRequired", 403


class RejectedIdentifier(AcmeProblem):
    """"The server will not issue certificates for the identifier" (§7.4)."""
    type, status = "rejectedIdentifier", 403


class UnsupportedIdentifier(AcmeProblem):
    """"An identifier is of an unsupported type" (§6.7)."""
    type, status = "unsupportedIdentifier", 400


class BadCSR(AcmeProblem):
    """"The CSR is unacceptable (e.g., due to a short key)" (§7.4)."""
    type, status = "badCSR", 400


class OrderNotReady(AcmeProblem):
    """"The request attempted to finalize an order that is not ready to be finalized"
    (§7.4)."""
    type, status = "orderNotReady", 403


class BadRevocationReason(AcmeProblem):
    """"The revocation reason provided is not allowed by the server" (§7.6)."""
    type, status = "badRevocationReason", 400


class AlreadyRevoked(AcmeProblem):
    """"The request specified a certificate to be revoked that has already been revoked"
    (§7.6)."""
    type, status = "alreadyRevoked", 400


class IncorrectResponse(AcmeProblem):
    """"Response received didn't match the challenge's requirements" (§8)."""
    type, status = "incorrectResponse", 403


class Connection(AcmeProblem):
    """"The server could not connect to validation target" (§8)."""
    type, status = "connection", 400


class Dns(AcmeProblem):
    """"There was a problem with a DNS query during identifier validation" (§8.4)."""
    type, status = "dns", 400


class Tls(AcmeProblem):
    """"The server received a TLS error during validation" (RFC 8737)."""
    type, status = "tls", 400


class NotFound(Malformed):
    """A resource URL naming nothing this account may see (404, as Boulder and pebble)."""
    status = 404


class MethodNotAllowed(Malformed):
    """A GET on a resource that needs POST-as-GET (§6.3: 405)."""
    status = 405


class UnsupportedMediaType(Malformed):
    """A JWS POST without ``Content-Type: application/jose+json`` (§6.2: 415)."""
    status = 415


class ServerInternal(AcmeProblem):
    """"The server experienced an internal error" (§6.7)."""
    type, status = "serverInternal", 500
