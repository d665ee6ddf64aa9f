"""ACME problem documents (RFC 8555 §6.7, on RFC 7807/9457): ``urn:ietf:params:acme:error:*``
types served as ``application/problem+json`` with the status codes §6.7 and the sections that
raise them name. ``debug`` never reaches the client."""

from __future__ import annotations

from typing import Any, ClassVar, cast

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


def _problem(type_: str, status: int, doc: str, *, name: str | None = None,
             base: type[AcmeProblem] = AcmeProblem) -> type[AcmeProblem]:
    """A subclass of ``base`` for one row of the table below: named after its ``type``
    (``badNonce``: ``BadNonce``) unless ``name`` is given, with the RFC's words as its
    docstring."""
    name = name or type_[0].upper() + type_[1:]
    return cast(type[AcmeProblem], type(name, (base,), {
        "type": type_, "status": status, "__doc__": doc, "__module__": __name__,
        "__qualname__": name}))


# One row a problem type: its type, status and what the RFC says of it.
Malformed = _problem("malformed", 400, '"The request message was malformed" (§6.7).')
BadNonce = _problem("badNonce", 400, '"The client sent an unacceptable anti-replay nonce" '
                    "(§6.5: answered with a fresh Replay-Nonce so the client can retry).")
BadSignatureAlgorithm = _problem("badSignatureAlgorithm", 400, '"The JWS was signed with an '
                                 'algorithm the server does not support" (§6.2).')
BadPublicKey = _problem("badPublicKey", 400, '"The JWS was signed by a public key the server '
                        'does not support" (§6.7).')
Unauthorized = _problem("unauthorized", 403,
                        '"The client lacks sufficient authorization" (§6.7).')
AccountDoesNotExist = _problem("accountDoesNotExist", 400, '"The request specified an account '
                               'that does not exist" (§7.3.1).')
ExternalAccountRequired = _problem("externalAccountRequired", 403, '"The request must include '
                                   'a value for the externalAccountBinding field" (§7.3.4).')
RejectedIdentifier = _problem("rejectedIdentifier", 403, '"The server will not issue '
                              'certificates for the identifier" (§7.4).')
UnsupportedIdentifier = _problem("unsupportedIdentifier", 400,
                                 '"An identifier is of an unsupported type" (§6.7).')
BadCSR = _problem("badCSR", 400,
                  '"The CSR is unacceptable (e.g., due to a short key)" (§7.4).')
OrderNotReady = _problem("orderNotReady", 403, '"The request attempted to finalize an order '
                         'that is not ready to be finalized" (§7.4).')
BadRevocationReason = _problem("badRevocationReason", 400, '"The revocation reason provided '
                               'is not allowed by the server" (§7.6).')
AlreadyRevoked = _problem("alreadyRevoked", 400, '"The request specified a certificate to be '
                          'revoked that has already been revoked" (§7.6).')
IncorrectResponse = _problem("incorrectResponse", 403, '"Response received didn\'t match the '
                             'challenge\'s requirements" (§8).')
Connection = _problem("connection", 400,
                      '"The server could not connect to validation target" (§8).')
Dns = _problem("dns", 400, '"There was a problem with a DNS query during identifier '
               'validation" (§8.4).')
Tls = _problem("tls", 400, '"The server received a TLS error during validation" (RFC 8737).')
ServerInternal = _problem("serverInternal", 500,
                          '"The server experienced an internal error" (§6.7).')
# malformed requests answered with another status
NotFound = _problem("malformed", 404, "A resource URL naming nothing this account may see "
                    "(404, as Boulder and pebble).", name="NotFound", base=Malformed)
MethodNotAllowed = _problem("malformed", 405, "A GET on a resource that needs POST-as-GET "
                            "(§6.3: 405).", name="MethodNotAllowed", base=Malformed)
UnsupportedMediaType = _problem("malformed", 415, "A JWS POST without ``Content-Type: "
                                "application/jose+json`` (§6.2: 415).",
                                name="UnsupportedMediaType", base=Malformed)
