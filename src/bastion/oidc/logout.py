"""OpenID Connect RP-Initiated Logout 1.0 — the ``end_session_endpoint``.

With an ``id_token_hint`` for the current session the user is signed out at once; otherwise
the user confirms on a CSRF-protected page (§2 "the OP SHOULD ask the End-User"). Signing
out ends the session and revokes every token family issued under it, so their access tokens
stop working at once. ``post_logout_redirect_uri`` must be registered exactly (§3).
"""

from __future__ import annotations

from urllib.parse import urlencode

from joserfc import jwt
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion.edge.http import csrf_ok, csrf_token
from bastion.identity.clients import CLIENT_ID_RE
from bastion.oauth import errors
from bastion.oauth.authorize import CONTROL_RE
from bastion.oauth.families import revoke_families
from bastion.oauth.pages import error_page, render
from bastion.oauth.params import form_params, query_params
from bastion.oauth.provider import Provider
from bastion.oauth.sessions import (
    BROWSER_COOKIE,
    SESSION_COOKIE,
    browser_id,
    cookie_name,
    end_session,
    load_session,
    read_cookie,
    set_cookie,
)
from bastion.tokens.algorithms import SIGNING

_CARRY = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id")


def _hint_claims(provider: Provider, hint: str | None) -> dict[str, object] | None:
    """Claims of an ID token we issued (signature and issuer checked; expiry may be past,
    §2: "the OP need not accept expired hints" but accepting them is more useful)."""
    if not hint or len(hint) > 8192:
        return None
    try:
        token = jwt.decode(hint, lambda obj: provider.keyring.public[obj.headers()["kid"]],
                           algorithms=list(SIGNING))
    except (JoseError, KeyError, ValueError, TypeError):
        return None
    claims = token.claims
    return claims if claims.get("iss") == provider.issuer_url else None


async def _audit_refusal(provider: Provider, params: dict[str, str], code: str, message: str,
                         client_id: str | None = None) -> None:
    """A refused logout request; never the id_token_hint itself."""
    client_id = client_id or params.get("client_id")
    await provider.audit.emit(
        "Logout", user_identity={"type": "Anonymous"},
        request_parameters={
            "clientId": client_id if client_id and CLIENT_ID_RE.fullmatch(client_id) else None,
            "postLogoutRedirectUri": params.get("post_logout_redirect_uri", "")[:512] or None,
            "idTokenHint": "present" if params.get("id_token_hint") else None},
        error_code=code, error_message=message)




async def logout_endpoint(provider: Provider, request: Request) -> Response:
    secure = provider.secure_cookies
    try:
        if request.method == "POST":
            params = await form_params(request, provider.settings.max_body_bytes)
        else:
            params = query_params(request)
    except errors.PayloadTooLarge:
        return error_page("The request is too large.", 413)
    except errors.OAuthError:
        return error_page("Malformed request.")
    hint = _hint_claims(provider, params.get("id_token_hint"))
    if params.get("id_token_hint") and hint is None:
        await _audit_refusal(provider, params, "InvalidIdTokenHint",
                             "the id_token_hint is not an ID token of this issuer")
        return error_page("The id_token_hint is not valid.")
    client_id = params.get("client_id") or (str(hint["aud"]) if hint else None)
    if hint and params.get("client_id") and params["client_id"] != hint.get("aud"):
        await _audit_refusal(provider, params, "ClientIdMismatch",
                             "client_id does not match the id_token_hint")
        return error_page("client_id does not match the id_token_hint.")
    target = params.get("post_logout_redirect_uri")
    client = await provider.client(client_id) if client_id else None
    if target is not None and (client is None or target not in client.post_logout_redirect_uris):
        await _audit_refusal(provider, params, "UnregisteredPostLogoutRedirectUri",
                             "the post_logout_redirect_uri is not registered for the client",
                             client_id)
        return error_page("The post_logout_redirect_uri is not registered for this client.")
    if "state" in params and CONTROL_RE.search(params["state"]):
        # the state is echoed to the client: no control characters (NUL, CR, LF...)
        await _audit_refusal(provider, params, "InvalidRequest", "state is not text",
                             client_id)
        return error_page("Malformed request.")

    async with provider.sessions() as db:
        session = await load_session(db, read_cookie(request, SESSION_COOKIE, secure))
    browser, fresh = browser_id(request, secure)
    confirmed = request.method == "POST" and params.get("confirm") == "yes" and \
        csrf_ok(browser, "logout", params.get("csrf"))
    hint_matches = hint is not None and session is not None and hint.get("sid") == session.sid
    if session is not None and not (confirmed or hint_matches):
        carry = {k: params[k] for k in _CARRY if k in params}
        response: Response = render("logout.html", title="Sign out", signed_in=True,
                                    form_targets=(target,) if target else (),
                                    client_name=client.name if client else None,
                                    csrf=csrf_token(browser, "logout"), carry=carry)
        if fresh:
            set_cookie(response, BROWSER_COOKIE, browser, secure=secure, max_age=None)
        return response
    if session is not None:
        async with provider.fast.transaction() as tx:
            await revoke_families(provider, tx, "sid = :sid", sid=session.sid)
        async with provider.sessions.begin() as db:
            await end_session(db, session.sid)
        await provider.audit.emit("Logout", user_identity={
            "type": "IAMUser", "principalId": session.user_id},
            request_parameters={"clientId": client.client_id if client else None})
    if target is not None:
        url = target
        if "state" in params:
            url += ("&" if "?" in target else "?") + urlencode({"state": params["state"]})
        response = RedirectResponse(url, status_code=303)
    else:
        response = render("logout.html", title="Signed out", signed_in=False)
    response.delete_cookie(cookie_name(SESSION_COOKIE, secure), path="/", secure=secure,
                           httponly=True, samesite="lax")
    return response
