"""RFC 7636 — Proof Key for Code Exchange (PKCE). https://www.rfc-editor.org/rfc/rfc7636

Only ``S256`` is accepted (RFC 9700 §2.1.1: ``plain`` SHOULD NOT be used; OAuth 2.1 drops it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from bastion.oauth.errors import InvalidGrant, InvalidRequest

# §4.1: code_verifier = 43*128unreserved
VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # used with fullmatch
# §4.2: S256 challenge is BASE64URL(SHA256(verifier)) = 43 characters, no padding
CHALLENGE_RE = re.compile(r"[A-Za-z0-9\-_]{43}")


def check_challenge(challenge: str | None, method: str | None, *, required: bool) -> None:
    """Validate the authorization request's PKCE parameters (§4.3)."""
    if challenge is None:
        if method is not None:
            raise InvalidRequest("code_challenge_method without code_challenge")
        if required:
            raise InvalidRequest("code_challenge required (PKCE with S256)")
        return
    # §4.3: defaults to "plain" when absent; we refuse plain, so the method is required
    if method != "S256":
        raise InvalidRequest("code_challenge_method must be S256")
    if not CHALLENGE_RE.fullmatch(challenge):
        raise InvalidRequest("malformed code_challenge")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(challenge: str | None, verifier: str | None) -> None:
    """§4.6: the server verifies code_verifier against the stored challenge."""
    if challenge is None:
        if verifier is not None:
            # RFC 9700 §2.1.1: a code_verifier for a code issued without a challenge MUST
            # be refused (PKCE downgrade attack)
            raise InvalidGrant("code_verifier sent but no code_challenge was used")
        return
    if verifier is None:
        raise InvalidGrant("code_verifier required")
    if not VERIFIER_RE.fullmatch(verifier):
        raise InvalidGrant("malformed code_verifier")
    if not hmac.compare_digest(s256(verifier), challenge):
        raise InvalidGrant("code_verifier does not match code_challenge")
