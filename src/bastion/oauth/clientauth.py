"""Client authentication at the token, revocation and introspection endpoints.

RFC 6749 §2.3.1 (``client_secret_basic``, ``client_secret_post``), RFC 7523 §2.2 with OIDC
Core §9 (``private_key_jwt``), and ``none`` for public clients (RFC 6749 §2.1). A request
uses exactly one method, one the client registered (RFC 9700 §2.4 asks for
sender-constrained or authenticated clients; a client may not downgrade itself to ``none``).
A client registered without choosing a method accepts either secret method
(``ClientInfo.auth_methods``); an explicit method pins it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import unquote

from cryptography import x509
from starlette.requests import Request

from bastion.identity.clients import CLIENT_ID_RE, ClientInfo, secret_matches
from bastion.oauth.errors import InvalidClient, InvalidRequest, OAuthError
from bastion.oauth.provider import Provider
from bastion.oauth.rfc7523 import verify_client_assertion
from bastion.tokens.binding import client_certificate

AUTH_METHODS_SUPPORTED = ("client_secret_basic", "client_secret_post", "private_key_jwt",
                          "tls_client_auth", "none")


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise InvalidClient("unsupported authorization scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials")
    # §2.3.1: client_id and secret are form-urlencoded before Basic encoding
    return unquote(user), unquote(password)


async def authenticate_client(request: Request, params: dict[str, str],
                              provider: Provider) -> ClientInfo:
    """Identify and authenticate the calling client, or raise ``InvalidClient``."""
    auth = request.headers.get("authorization")
    assertion_type = params.get("client_assertion_type")
    methods = [m for m, present in (
        ("client_secret_basic", auth is not None),
        ("client_secret_post", "client_secret" in params),
        ("private_key_jwt", "client_assertion" in params or assertion_type is not None),
    ) if present]
    if len(methods) > 1:
        # RFC 6749 §2.3: the client MUST NOT use more than one authentication method
        raise InvalidRequest("more than one client authentication method used")
    method = methods[0] if methods else "none"

    if method == "client_secret_basic":
        client_id, secret = _basic(auth or "")
        if params.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id does not match the authenticated client")
    elif method == "private_key_jwt":
        client_id = await verify_client_assertion(params, provider)
    else:
        client_id = params.get("client_id", "")
        secret = params.get("client_secret", "")
    if not client_id:
        raise InvalidClient("client authentication required")

    client = await provider.client(client_id)
    if method == "none" and client is not None and client.auth_method == "tls_client_auth":
        method = "tls_client_auth"  # RFC 8705 §2: the certificate is the credential
    if client is None or method not in client.auth_methods:
        # same answer for unknown clients and wrong methods: no client enumeration
        raise InvalidClient("client authentication failed")
    if method in ("client_secret_basic", "client_secret_post") and not secret_matches(
            provider.wrapper, client, secret):
        raise InvalidClient("client authentication failed")
    if method == "tls_client_auth" and not await _certificate_matches(request, client,
                                                                      provider):
        raise InvalidClient("client authentication failed")
    return client


def _names(cert: x509.Certificate, kind: str) -> list[str]:
    if kind == "subject_dn":
        return [cert.subject.rfc4514_string()]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    if kind == "san_dns":
        return [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    if kind == "san_uri":
        return san.get_values_for_type(x509.UniformResourceIdentifier)
    if kind == "san_ip":
        return [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    return san.get_values_for_type(x509.RFC822Name)


async def _certificate_matches(request: Request, client: ClientInfo,
                               provider: Provider) -> bool:
    """RFC 8705 §2.1: the certificate the TLS layer verified (chain to the trust bundle,
    validity, EKU) carries the one name the client registered, and is not revoked."""
    found = client_certificate(request.scope)
    meta = client.tls_client_auth or {}
    if found is None or len(meta) != 1:
        return False
    cert = found[0]
    (kind, expected), = meta.items()
    if kind == "subject_dn":
        try:
            expected = x509.Name.from_rfc4514_string(expected).rfc4514_string()
        except ValueError:
            return False
    if not any(hmac.compare_digest(n.encode(), expected.encode()) for n in _names(cert, kind)):
        return False
    return await provider.ca.status(cert.serial_number) != "revoked"


def claimed_client_id(request: Request, params: dict[str, str]) -> str | None:
    """The client_id a refused request claimed (Basic user name or ``client_id``), for the
    audit trail: only when it has the shape of a client id, never the secret."""
    claimed = params.get("client_id")
    auth = request.headers.get("authorization")
    if claimed is None and auth is not None:
        try:
            claimed = _basic(auth)[0]
        except InvalidClient:
            return None
    return claimed if claimed is not None and CLIENT_ID_RE.fullmatch(claimed) else None


async def audit_refusal(provider: Provider, event: str, request: Request,
                        params: dict[str, str], exc: OAuthError,
                        client: ClientInfo | None) -> None:
    """One record for a refused revocation or introspection request: the client if it
    authenticated, else the client_id it claimed; the error. Never the token, the secret or
    the assertion."""
    identity = {"type": "Client", "principalId": client.client_id,
                "clientId": client.client_id} if client else {"type": "Anonymous"}
    await provider.audit.emit(
        event, user_identity=identity,
        request_parameters={"clientId": client.client_id if client else
                            claimed_client_id(request, params),
                            "tokenTypeHint": params.get("token_type_hint", "")[:32] or None},
        error_code=exc.error, error_message=(exc.description or exc.error)[:500])
