"""The authorization endpoint — RFC 6749 §4.1.1–§4.1.2, OpenID Connect Core §3.1.2, and the
Security BCP (RFC 9700 §2.1, §4.1): code flow only, PKCE S256, exact redirect URIs.

Flow: validate the request → remember it as a *pending request* (KV, bound to this browser)
→ login page → (TOTP) → consent page → redirect with a single-use code, ``state`` and ``iss``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion.edge.http import is_loopback_host
from bastion.identity.clients import CLIENT_ID_RE, ClientInfo
from bastion.oauth import errors, rfc7636, rfc9207
from bastion.oauth.params import form_params, query_params
from bastion.oauth.provider import Provider
from bastion.oauth.sessions import (
    BROWSER_COOKIE,
    SESSION_COOKIE,
    browser_id,
    load_session,
    read_cookie,
    set_cookie,
)
from bastion.store.models import AuthorizationCode, Consent, Session, User

PROMPTS = {"none", "login", "consent", "select_account"}
MAX_STATE = 2048
MAX_NONCE = 512
MAX_AGE_RE = re.compile(r"[0-9]{1,9}")
# C0 and C1 control characters (NUL included): never accepted in text that is echoed back
# (state) or copied into tokens (nonce)
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class PendingRequest:
    id: str
    client_id: str
    redirect_uri: str  # where the response goes (validated)
    redirect_uri_param: str  # as sent, "" if omitted: must be repeated at /token
    scopes: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: list[str]
    max_age: int | None
    created_at: int
    browser_hash: str
    user_id: str | None = None  # set after the password step while a second factor is due
    amr: list[str] = field(default_factory=list)

    def key(self) -> str:
        return f"authreq:{self.id}"


class PageError(Exception):
    """An error shown to the user, never redirected (unknown client or bad redirect URI:
    RFC 6749 §4.1.2.1 — the server MUST NOT redirect). ``code`` names it in the audit."""

    def __init__(self, message: str, status: int = 400, code: str = "InvalidRequest") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class RedirectError(Exception):
    def __init__(self, error: errors.OAuthError, redirect_uri: str, state: str | None) -> None:
        super().__init__(error.error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state


def match_redirect_uri(client: ClientInfo, uri: str) -> bool:
    """RFC 9700 §2.1: exact string matching, except the port of loopback URIs, which may
    vary (RFC 8252 §7.3)."""
    if len(uri) > 2000:
        return False
    if uri in client.redirect_uris:
        return True
    got = urlsplit(uri)
    if got.scheme != "http" or not is_loopback_host(got.hostname):
        return False
    try:
        port = got.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        return False
    if got.netloc.rsplit(":", 1)[-1] != str(port) and port is not None:
        return False  # e.g. "127.0.0.1:9000:80" or a port with leading zeros
    for registered in client.redirect_uris:
        reg = urlsplit(registered)
        if reg.scheme == "http" and reg.hostname == got.hostname and reg.path == got.path \
                and reg.query == got.query and not got.fragment \
                and reg.username is None and got.username is None:
            return True
    return False


def _browser_hash(browser: str) -> str:
    return hashlib.sha256(browser.encode()).hexdigest()


async def parse_request(params: dict[str, str], provider: Provider, browser: str
                        ) -> PendingRequest:
    client_id = params.get("client_id")
    if not client_id:
        raise PageError("The request has no client_id.", code="MissingClientId")
    client = await provider.client(client_id)
    if client is None:
        raise PageError("Unknown client.", code="UnknownClient")
    redirect_param = params.get("redirect_uri", "")
    if redirect_param:
        if not match_redirect_uri(client, redirect_param):
            raise PageError("The redirect_uri is not registered for this client.",
                            code="UnregisteredRedirectUri")
        redirect_uri = redirect_param
    elif len(client.redirect_uris) == 1 and "openid" not in params.get("scope", "").split():
        redirect_uri = client.redirect_uris[0]  # RFC 6749 §3.1.2.3
    else:
        raise PageError("The request has no redirect_uri.", code="MissingRedirectUri")

    state = params.get("state")
    if state is not None and (len(state) > MAX_STATE or CONTROL_RE.search(state)):
        state = None  # never echo oversized values or control characters back

    def fail(err: errors.OAuthError) -> RedirectError:
        return RedirectError(err, redirect_uri, state)

    if "request" in params:
        raise fail(errors.RequestNotSupported("request objects are not supported"))
    if "request_uri" in params:
        raise fail(errors.RequestUriNotSupported("request_uri is not supported"))
    if params.get("state") is not None and state is None:
        raise fail(errors.InvalidRequest("state too long or not text"))
    response_type = params.get("response_type")
    if response_type is None:
        raise fail(errors.InvalidRequest("response_type required"))
    if response_type != "code":
        # RFC 9700 §2.1.2: the implicit grant SHOULD NOT be used; we offer code only
        raise fail(errors.UnsupportedResponseType("only response_type=code is supported"))
    if params.get("response_mode", "query") != "query":
        raise fail(errors.InvalidRequest("only response_mode=query is supported"))
    if "authorization_code" not in client.grant_types:
        raise fail(errors.UnauthorizedClient("client may not use the authorization code grant"))

    scope = params.get("scope", "")
    scopes = scope.split(" ") if scope else []
    if not scopes or any(not s for s in scopes):
        raise fail(errors.InvalidScope("scope required"))
    if not set(scopes) <= client.scopes:
        raise fail(errors.InvalidScope("scope not allowed for this client"))

    try:
        rfc7636.check_challenge(params.get("code_challenge"), params.get("code_challenge_method"),
                                required=True)
    except errors.OAuthError as exc:
        raise fail(exc) from None

    nonce = params.get("nonce")
    if nonce is not None and (len(nonce) > MAX_NONCE or CONTROL_RE.search(nonce)):
        raise fail(errors.InvalidRequest("nonce too long or not text"))
    prompt = params.get("prompt", "").split()
    if any(p not in PROMPTS for p in prompt):
        raise fail(errors.InvalidRequest("unknown prompt value"))
    if "none" in prompt and len(prompt) > 1:
        # OIDC Core §3.1.2.1: none MUST NOT be combined with other values
        raise fail(errors.InvalidRequest("prompt=none cannot be combined"))
    max_age_raw = params.get("max_age")
    max_age = None
    if max_age_raw is not None:
        if not MAX_AGE_RE.fullmatch(max_age_raw):
            raise fail(errors.InvalidRequest("max_age must be a non-negative integer"))
        max_age = int(max_age_raw)

    return PendingRequest(
        id=secrets.token_urlsafe(18), client_id=client.client_id, redirect_uri=redirect_uri,
        redirect_uri_param=redirect_param, scopes=scopes, state=state, nonce=nonce,
        code_challenge=params.get("code_challenge"), prompt=prompt, max_age=max_age,
        created_at=int(time.time()), browser_hash=_browser_hash(browser),
    )


async def save_pending(provider: Provider, req: PendingRequest) -> None:
    await provider.kv.set(req.key(), json.dumps(asdict(req)).encode(),
                          provider.settings.pending_request_ttl)


async def load_pending(provider: Provider, request_id: str | None, browser: str | None
                       ) -> PendingRequest | None:
    """The pending request, if it exists and was started by this browser."""
    if not request_id or len(request_id) > 64 or not browser:
        return None
    raw = await provider.kv.get(f"authreq:{request_id}")
    if raw is None:
        return None
    req = PendingRequest(**json.loads(raw))
    if not secrets.compare_digest(req.browser_hash, _browser_hash(browser)):
        return None
    return req


def error_redirect(provider: Provider, exc: RedirectError) -> Response:
    # RFC 6749 §4.1.2.1 error response, with iss (RFC 9207 §2)
    params = {"error": exc.error.error, "error_description": exc.error.description,
              "state": exc.state}
    return RedirectResponse(rfc9207.redirect_url(exc.redirect_uri, params, provider.issuer_url),
                            status_code=303)


def _login_is_fresh(req: PendingRequest, session: Session) -> bool:
    now = int(time.time())
    if req.max_age is not None and now - session.auth_time > req.max_age:
        return False  # OIDC Core §3.1.2.1 max_age: MUST actively re-authenticate
    if "login" in req.prompt:
        return False  # prompt=login: MUST reauthenticate (cleared once the user has)
    return True


async def resume(request: Request, provider: Provider, req: PendingRequest) -> Response:
    """Decide the next step for a pending request: login, consent, or the code."""
    secure = provider.secure_cookies
    async with provider.sessions() as db:
        session = await load_session(db, read_cookie(request, SESSION_COOKIE, secure))
        user = await db.get(User, session.user_id) if session else None
        if session is None or user is None or user.disabled or not _login_is_fresh(req, session):
            if "none" in req.prompt:
                raise RedirectError(errors.LoginRequired("login required"), req.redirect_uri,
                                    req.state)
            return RedirectResponse(f"/login?r={req.id}", status_code=303)
        consent = await db.get(Consent, (user.id, req.client_id))
    needs_consent = "consent" in req.prompt or consent is None or \
        not set(req.scopes) <= set(consent.scopes)
    if needs_consent:
        if "none" in req.prompt:
            raise RedirectError(errors.ConsentRequired("consent required"), req.redirect_uri,
                                req.state)
        return RedirectResponse(f"/consent?r={req.id}", status_code=303)
    return await issue_code(provider, req, session)


async def take_pending(provider: Provider, req: PendingRequest) -> bool:
    """Consume the pending request with one atomic get-and-delete (KV ``pop``: Redis GETDEL):
    of two concurrent submissions only one gets True, so a pending request yields at most
    one code, one consent decision."""
    raw = await provider.kv.pop(req.key())
    if raw is None:
        return False
    taken = PendingRequest(**json.loads(raw))
    return secrets.compare_digest(taken.browser_hash, req.browser_hash)


async def issue_code(provider: Provider, req: PendingRequest, session: Session, *,
                     taken: bool = False) -> Response:
    """Redirect to the client with a new code. ``taken``: the caller already consumed the
    pending request with ``take_pending``."""
    if not taken and not await take_pending(provider, req):
        from bastion.oauth.pages import expired_page  # pages import this module

        return expired_page()
    code = secrets.token_urlsafe(32)
    now = int(time.time())
    async with provider.sessions.begin() as db:
        db.add(AuthorizationCode(
            code_hash=hashlib.sha256(code.encode()).hexdigest(), client_id=req.client_id,
            user_id=session.user_id, sid=session.sid, redirect_uri=req.redirect_uri_param,
            scope=" ".join(req.scopes), nonce=req.nonce, code_challenge=req.code_challenge,
            auth_time=session.auth_time, amr=session.amr,
            expires_at=now + provider.settings.code_ttl, consumed_at=None, family_id=None))
    await provider.audit.emit("Authorize", user_identity={
        "type": "IAMUser", "principalId": session.user_id},
        request_parameters={"clientId": req.client_id, "scope": " ".join(req.scopes),
                            "redirectUri": req.redirect_uri},
        response_elements={"codeIssued": True})
    url = rfc9207.redirect_url(req.redirect_uri, {"code": code, "state": req.state},
                               provider.issuer_url)
    return RedirectResponse(url, status_code=303)


async def _audit_refusal(provider: Provider, params: dict[str, str], code: str,
                         message: str) -> None:
    """A refused authorization request: which client and redirect URI were asked for (never
    ``state``, ``nonce`` or the PKCE challenge)."""
    client_id = params.get("client_id")
    await provider.audit.emit(
        "Authorize", user_identity={"type": "Anonymous"},
        request_parameters={
            "clientId": client_id if client_id and CLIENT_ID_RE.fullmatch(client_id) else None,
            "redirectUri": params.get("redirect_uri", "")[:512] or None,
            "responseType": params.get("response_type", "")[:64] or None,
            "scope": params.get("scope", "")[:512] or None},
        error_code=code, error_message=message[:500])


async def authorize_endpoint(provider: Provider, request: Request) -> Response:
    from bastion.oauth.pages import error_page  # pages import this module

    browser, fresh = browser_id(request, provider.secure_cookies)
    params: dict[str, str] = {}
    try:
        if request.method == "POST":  # OIDC Core §3.1.2.1: GET and POST MUST be supported
            params = await form_params(request, provider.settings.max_body_bytes)
        else:
            params = query_params(request)
        req = await parse_request(params, provider, browser)
        await save_pending(provider, req)
        response = await resume(request, provider, req)
    except PageError as exc:
        await _audit_refusal(provider, params, exc.code, exc.message)
        return error_page(exc.message, exc.status)
    except errors.PayloadTooLarge:
        return error_page("The request is too large.", 413)
    except errors.OAuthError as exc:
        await _audit_refusal(provider, params, exc.error, exc.description or exc.error)
        return error_page(exc.description or exc.error, 400)
    except RedirectError as exc:
        if exc.error.error not in ("login_required", "consent_required"):  # not refusals
            await _audit_refusal(provider, params, exc.error.error,
                                 exc.error.description or exc.error.error)
        response = error_redirect(provider, exc)
    if fresh:
        set_cookie(response, BROWSER_COOKIE, browser, secure=provider.secure_cookies,
                   max_age=None)
    return response
