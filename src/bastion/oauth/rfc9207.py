"""RFC 9207 — OAuth 2.0 Authorization Server Issuer Identification.
https://www.rfc-editor.org/rfc/rfc9207

§2: the ``iss`` parameter is added to every authorization response, success or error, so
clients can detect mix-up attacks (RFC 9700 §4.4).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit


def redirect_url(redirect_uri: str, params: dict[str, str | None], issuer: str) -> str:
    """Append response parameters to the redirect URI's query (RFC 6749 §4.1.2), keeping
    its own query components, plus ``iss`` (§2)."""
    parts = urlsplit(redirect_uri)
    clean = {k: v for k, v in params.items() if v is not None}
    clean["iss"] = issuer
    query = parts.query + ("&" if parts.query else "") + urlencode(clean)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
