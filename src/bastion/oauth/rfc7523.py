"""RFC 7523 — JWT Profile for OAuth 2.0 Client Authentication (``private_key_jwt``, as
profiled by OpenID Connect Core §9). https://www.rfc-editor.org/rfc/rfc7523

The client signs a short-lived JWT with a key whose public half it registered. Its ``aud``
must be exactly the issuer identifier, as a single string: not the token endpoint URL, not
an array (draft-ietf-oauth-rfc7523bis, the 2025 audience-injection attacks, where an
assertion made for one endpoint or server is replayed at another).
"""

from __future__ import annotations

import json
import time
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.oauth.errors import InvalidClient, InvalidRequest
from bastion.tokens.algorithms import ALLOWED, ALLOWED_SORTED

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = list(ALLOWED_SORTED)  # the one allow-list: bastion.tokens.algorithms
MAX_ASSERTION = 8192
MAX_LIFETIME = 3600  # §3 4.: "unreasonably far in the future" is refused; Authlib signs 1 h


async def verify_client_assertion(params: dict[str, str], provider: Any) -> str:
    """Return the authenticated client_id, or raise ``InvalidClient``."""
    if params.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidRequest("unsupported client_assertion_type")
    assertion = params.get("client_assertion", "")
    if not assertion or len(assertion) > MAX_ASSERTION:
        raise InvalidClient("malformed client_assertion")
    try:
        unverified = jws.extract_compact(assertion.encode())
        payload = json.loads(unverified.payload)
        header = unverified.protected
    except (JoseError, ValueError, TypeError):
        raise InvalidClient("malformed client_assertion") from None
    if not isinstance(payload, dict) or not isinstance(header, dict):
        raise InvalidClient("malformed client_assertion")
    client_id = payload.get("sub")
    # §3 1.: iss and sub MUST both be the client_id
    if not isinstance(client_id, str) or payload.get("iss") != client_id:
        raise InvalidClient("client_assertion iss and sub must be the client_id")
    if params.get("client_id", client_id) != client_id:
        raise InvalidRequest("client_id does not match client_assertion")
    if header.get("alg") not in ALLOWED or any(h in header for h in ("jku", "x5u", "jwk",
                                                                           "crit")):
        raise InvalidClient("client_assertion algorithm or header not allowed")
    client = await provider.client(client_id)
    if client is None or client.auth_method != "private_key_jwt" or not client.jwks:
        raise InvalidClient("client authentication failed")
    try:
        keyset = KeySet.import_key_set(client.jwks)
        token = jwt.decode(assertion, keyset, algorithms=ALGORITHMS)
    except (JoseError, ValueError, TypeError):
        # same answer as for an unknown client: no client enumeration (RFC 6819 §5.2.3)
        raise InvalidClient("client authentication failed") from None
    c = token.claims
    now = int(time.time())
    # §3 3.: aud MUST identify the authorization server. rfc7523bis: the issuer identifier
    # and nothing else, as a string (an array or an endpoint URL could be another server's)
    aud = c.get("aud")
    if not isinstance(aud, str) or aud != provider.issuer_url:
        raise InvalidClient("client_assertion audience must be the issuer identifier")
    # §3 4.: exp MUST be present and in the future; we also cap the lifetime
    exp, iat = c.get("exp"), c.get("iat", now)
    if not isinstance(exp, int) or isinstance(exp, bool) or exp < now - 30 or \
            exp > now + MAX_LIFETIME or not isinstance(iat, int) or iat > now + 30:
        raise InvalidClient("client_assertion expired or lifetime too long")
    # §3 7.: jti: the authorization server MAY ensure JWTs are not replayed — we do
    jti = c.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidClient("client_assertion jti required")
    # remember the jti for as long as the assertion could still be accepted
    if not await provider.kv.add(f"assertion:{client_id}:{jti}", b"1", max(1, exp - now + 60)):
        raise InvalidClient("client_assertion replayed")
    return client_id
