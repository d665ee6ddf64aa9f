"""Client authentication at the token, revocation and introspection endpoints.

RFC 6749 §2.3.1 (``client_secret_basic``, ``client_secret_post``), RFC 7523 §2.2 with OIDC
Core §9 (``private_key_jwt``), and ``none`` for public clients (RFC 6749 §2.1). A client
uses exactly one method, the one it registered (RFC 9700 §2.4 asks for sender-constrained or
authenticated clients; a client may not downgrade itself to ``none``).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from starlette.requests import Request

from bastion.identity.clients import ClientInfo, secret_matches
from bastion.oauth.errors import InvalidClient, InvalidRequest
from bastion.oauth.provider import Provider
from bastion.oauth.rfc7523 import verify_client_assertion

AUTH_METHODS_SUPPORTED = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")


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
                              provider: Provider, endpoint: str) -> ClientInfo:
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
        client_id = await verify_client_assertion(params, provider, endpoint)
    else:
        client_id = params.get("client_id", "")
        secret = params.get("client_secret", "")
    if not client_id:
        raise InvalidClient("client authentication required")

    client = await provider.client(client_id)
    if client is None or client.auth_method != method:
        # same answer for unknown clients and wrong methods: no client enumeration
        raise InvalidClient("client authentication failed")
    if method in ("client_secret_basic", "client_secret_post") and not secret_matches(
            provider.wrapper, client, secret):
        raise InvalidClient("client authentication failed")
    return client
