"""Certificate-bound access tokens (RFC 8705 §3) and the client certificate of a request.

The TLS layer puts the verified client certificate chain in the ASGI scope as the ASGI TLS
extension specifies: ``scope["extensions"]["tls"]["client_cert_chain"]``, a list of PEM
strings, leaf first. From it:

- the token endpoint binds the access tokens it issues to that certificate: the claim
  ``cnf: {"x5t#S256": base64url(SHA-256(DER))}`` (set through :data:`BOUND_THUMBPRINT` for
  the duration of one token request);
- a resource server refuses a token carrying ``cnf.x5t#S256`` unless the request came over
  a connection with the same certificate (:func:`check_binding`), so a stolen bound token is
  useless without the client's private key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from contextvars import ContextVar
from typing import Any

from cachetools import LRUCache
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.tokens.errors import InvalidToken

#: the certificate thumbprint the token being issued is bound to (None: unbound)
BOUND_THUMBPRINT: ContextVar[str | None] = ContextVar("bastion_bound_thumbprint", default=None)
_PARSED: LRUCache[str, tuple[x509.Certificate, bytes] | None] = LRUCache(maxsize=4096)


def _leaf_pem(scope: Any) -> str | None:
    ext = scope.get("extensions") or {}
    tls = ext.get("tls") if isinstance(ext, dict) else None
    if not isinstance(tls, dict):
        return None
    chain = tls.get("client_cert_chain")
    if not isinstance(chain, list | tuple) or not chain or not isinstance(chain[0], str):
        return None
    return chain[0]


def client_certificate(scope: Any) -> tuple[x509.Certificate, bytes] | None:
    """The request's verified client certificate and its DER, or None (no TLS, no
    certificate, or one that does not parse)."""
    pem = _leaf_pem(scope)
    if pem is None:
        return None
    try:
        return _PARSED[pem]
    except KeyError:
        pass
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        parsed: tuple[x509.Certificate, bytes] | None = (
            cert, cert.public_bytes(serialization.Encoding.DER))
    except ValueError:
        parsed = None
    _PARSED[pem] = parsed
    return parsed


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1: base64url (no padding) of the SHA-256 of the certificate's DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def request_thumbprint(scope: Any) -> str | None:
    found = client_certificate(scope)
    return None if found is None else thumbprint(found[1])


def bound_claims() -> dict[str, Any]:
    """The ``cnf`` claim for the token being issued, if the request is bound."""
    x5t = BOUND_THUMBPRINT.get()
    return {} if x5t is None else {"cnf": {"x5t#S256": x5t}}


def check_binding(claims: dict[str, Any], scope: Any) -> None:
    """Refuse (``InvalidToken``, RFC 8705 §3 / RFC 6750 §3.1) a certificate-bound token
    presented without the certificate it is bound to."""
    cnf = claims.get("cnf")
    if cnf is None:
        return
    expected = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if not isinstance(expected, str):
        if isinstance(cnf, dict) and not cnf:
            return
        raise InvalidToken("the token's confirmation method is not supported",
                           debug="cnf without x5t#S256")
    presented = request_thumbprint(scope)
    if presented is None:
        raise InvalidToken("the token is bound to a client certificate; present it",
                           debug="certificate-bound token without a client certificate")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise InvalidToken("the token is bound to another client certificate",
                           debug="x5t#S256 mismatch")
