"""HTML login, second-factor and consent pages: server-rendered, no JavaScript needed,
CSRF-protected, never framed (RFC 9700 §4.16 clickjacking: frame-ancestors 'none')."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bastion.edge.http import csrf_ok, csrf_token, is_loopback_host
from bastion.iam.scheme import principal_arn
from bastion.identity import totp
from bastion.identity.passwords import verify_password
from bastion.identity.users import USERNAME_RE, get_user_by_name
from bastion.kms import UnwrapError
from bastion.oauth import errors
from bastion.oauth.authorize import (
    PendingRequest,
    RedirectError,
    error_redirect,
    issue_code,
    load_pending,
    resume,
    save_pending,
    take_pending,
)
from bastion.oauth.params import form_params, query_params
from bastion.oauth.provider import Provider
from bastion.oauth.sessions import (
    BROWSER_COOKIE,
    SESSION_COOKIE,
    create_session,
    end_session,
    load_session,
    read_cookie,
    set_cookie,
)
from bastion.store.models import Consent, User

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(default=True))

PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def csp_source(url: str) -> str | None:
    """The CSP source expression matching ``url``'s origin (or scheme, for private-use
    schemes of native apps), or None when it cannot be expressed safely."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        host = parts.hostname or ""
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
            return None
        netloc = f"[{host}]" if ":" in host else host
        # loopback redirect URIs may use any port (RFC 8252 §7.3)
        port = ":*" if is_loopback_host(host) else (f":{parts.port}" if parts.port else "")
        return f"{parts.scheme}://{netloc}{port}"
    if re.fullmatch(r"[a-z][a-z0-9+.\-]*", parts.scheme):
        return f"{parts.scheme}:"
    return None


def page_headers(form_targets: tuple[str, ...] = ()) -> dict[str, str]:
    """Security headers for a page. ``form-action`` also covers where a form's response
    redirects (browsers enforce it on the 303 to the client), so a page whose form can end
    at the client's redirect URI must name that origin."""
    sources = " ".join(["'self'", *(src for u in form_targets if (src := csp_source(u)))])
    return {**PAGE_HEADERS,
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       f"form-action {sources}; frame-ancestors 'none'; "
                                       "base-uri 'none'"}


SCOPE_TEXT = {
    "openid": "Confirm your identity",
    "profile": "See your name and username",
    "email": "See your email address",
    "offline_access": "Stay signed in (keep access when you are away)",
    "order:view": "View your orders",
    "order:create": "Place orders for you",
}


def render(template: str, status: int = 200, *, form_targets: tuple[str, ...] = (),
           **ctx: Any) -> HTMLResponse:
    html = _ENV.get_template(template).render(**ctx)
    return HTMLResponse(html, status_code=status, headers=page_headers(form_targets))


def error_page(message: str, status: int = 400, title: str = "Request refused") -> HTMLResponse:
    return render("error.html", status, title=title, message=message)


def _form_error(exc: errors.OAuthError) -> HTMLResponse:
    if isinstance(exc, errors.PayloadTooLarge):
        return error_page("The request is too large.", 413)
    return error_page("Malformed request.")


def expired_page() -> HTMLResponse:
    return error_page("Your sign-in request has expired or was started in another browser.",
                      400, "Sign-in expired")


def _browser(request: Request, provider: Provider) -> str | None:
    return read_cookie(request, BROWSER_COOKIE, provider.secure_cookies)


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _client_name(provider: Provider, req: PendingRequest) -> str:
    client = await provider.client(req.client_id)
    return client.name if client else req.client_id


async def _login_form(provider: Provider, req: PendingRequest, browser: str, *,
                      message: str | None = None, username: str = "",
                      status: int = 200) -> HTMLResponse:
    return render("login.html", status, form_targets=(req.redirect_uri,), title="Sign in",
                  request_id=req.id,
                  csrf=csrf_token(browser, req.id), client_name=await _client_name(provider, req),
                  message=message, username=username)


async def _signed_in(request: Request, provider: Provider, req: PendingRequest,
                     user: User, amr: list[str]) -> Response:
    async with provider.sessions.begin() as db:
        previous = await load_session(db, read_cookie(request, SESSION_COOKIE,
                                                      provider.secure_cookies))
        if previous is not None:  # a login always starts a new session (no fixation)
            await end_session(db, previous.sid)
        raw, _ = await create_session(db, user.id, amr, provider.settings.session_ttl)
    if "login" in req.prompt:  # prompt=login is now satisfied for this request
        req.prompt = [p for p in req.prompt if p != "login"]
        await save_pending(provider, req)
    # the new cookie is not on this request yet: resume against a request that carries it
    request.cookies[_cookie(provider, SESSION_COOKIE)] = raw
    try:
        response = await resume(request, provider, req)
    except RedirectError as exc:
        response = error_redirect(provider, exc)
    set_cookie(response, SESSION_COOKIE, raw, secure=provider.secure_cookies,
               max_age=provider.settings.session_ttl)
    return response


HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"


async def _audit_login(provider: Provider, event: str, username: str, req: PendingRequest,
                       error: str | None, message: str | None, *,
                       mfa_required: bool = False) -> None:
    """A sign-in attempt: who (as typed, for failures too), for which client, the outcome.
    The password or code itself never reaches the trail."""
    identity: dict[str, Any] = {"type": "IAMUser", "userName": username}
    if username != HIDDEN:
        identity["arn"] = principal_arn("user", username, provider.settings.account_id)
    await provider.audit.emit(
        event, user_identity=identity,
        request_parameters={"clientId": req.client_id},
        response_elements={"mfaRequired": mfa_required} if error is None else None,
        error_code=error, error_message=message)


def _cookie(provider: Provider, base: str) -> str:
    from bastion.oauth.sessions import cookie_name

    return cookie_name(base, provider.secure_cookies)


async def login_page(provider: Provider, request: Request) -> Response:
    browser = _browser(request, provider)
    try:
        params = query_params(request)
    except errors.OAuthError:
        return error_page("Malformed request.")
    req = await load_pending(provider, params.get("r"), browser)
    if req is None or browser is None:
        return expired_page()
    return await _login_form(provider, req, browser)


async def login_submit(provider: Provider, request: Request) -> Response:
    browser = _browser(request, provider)
    try:
        form = await form_params(request, provider.settings.max_body_bytes)
    except errors.OAuthError as exc:
        return _form_error(exc)
    req = await load_pending(provider, form.get("r"), browser)
    if req is None or browser is None:
        return expired_page()
    if not csrf_ok(browser, req.id, form.get("csrf")):
        return error_page("The form could not be verified. Please try again.", 403)
    username = form.get("username", "")[:128]
    password = form.get("password", "")
    ip = _client_ip(request)
    async with provider.sessions() as db:
        user = await get_user_by_name(db, username) if USERNAME_RE.fullmatch(username) else None
    # CloudTrail's rule: a name that is no account may be a mistyped password; not recorded
    who = username if user is not None else HIDDEN
    # counted before the password is checked: concurrent guesses cannot all pass the check
    attempt = await provider.throttle.reserve(username, ip)
    if not attempt.allowed:
        await _audit_login(provider, "Login", who, req, "Throttled",
                           "too many failed attempts")
        return await _login_form(provider, req, browser, username=username, status=429,
                                 message=f"Too many attempts. Try again in "
                                         f"{int(attempt.wait) + 1} seconds.")
    try:
        ok = await verify_password(user.password_hash if user else None, password)
    except BaseException:
        await provider.throttle.failed(attempt)  # an unfinished attempt counts (fail closed)
        raise
    if not ok or user is None or user.disabled:
        await provider.throttle.failed(attempt)
        await _audit_login(provider, "Login", who, req, "InvalidCredentials",
                           "unknown user, wrong password or disabled account")
        # identical answer for unknown users, wrong passwords and disabled accounts
        return await _login_form(provider, req, browser, username=username, status=401,
                                 message="Invalid username or password.")
    if user.totp_secret is not None:
        # not signed in yet: the password step resets no counter (the code step is throttled
        # by the same account counter)
        await provider.throttle.released(attempt)
    else:
        await provider.throttle.succeeded(attempt)
    await _audit_login(provider, "Login", username, req, None, None,
                       mfa_required=user.totp_secret is not None)
    if user.totp_secret is not None:
        req.user_id, req.amr = user.id, ["pwd"]
        await save_pending(provider, req)
        return RedirectResponse(f"/login/mfa?r={req.id}", status_code=303)
    return await _signed_in(request, provider, req, user, ["pwd"])


async def _mfa_form(req: PendingRequest, browser: str, message: str | None = None,
                    status: int = 200) -> HTMLResponse:
    return render("mfa.html", status, form_targets=(req.redirect_uri,), title="Verify",
                  request_id=req.id,
                  csrf=csrf_token(browser, req.id), message=message)


async def mfa_page(provider: Provider, request: Request) -> Response:
    browser = _browser(request, provider)
    try:
        params = query_params(request)
    except errors.OAuthError:
        return error_page("Malformed request.")
    req = await load_pending(provider, params.get("r"), browser)
    if req is None or browser is None or req.user_id is None:
        return expired_page()
    return await _mfa_form(req, browser)


async def mfa_submit(provider: Provider, request: Request) -> Response:
    browser = _browser(request, provider)
    try:
        form = await form_params(request, provider.settings.max_body_bytes)
    except errors.OAuthError as exc:
        return _form_error(exc)
    req = await load_pending(provider, form.get("r"), browser)
    if req is None or browser is None or req.user_id is None:
        return expired_page()
    if not csrf_ok(browser, req.id, form.get("csrf")):
        return error_page("The form could not be verified. Please try again.", 403)
    async with provider.sessions() as db:
        user = await db.get(User, req.user_id)
    if user is None or user.totp_secret is None or user.disabled:
        return expired_page()
    try:
        secret = provider.wrapper.unwrap(user.totp_secret, "totp").decode()
    except UnwrapError:
        return error_page("Two-step verification is unavailable for this account.", 500)
    attempt = await provider.throttle.reserve(user.username, _client_ip(request))
    if not attempt.allowed:
        await _audit_login(provider, "VerifyMfa", user.username, req, "Throttled",
                           "too many failed attempts")
        return await _mfa_form(req, browser, "Too many attempts. Try again later.", 429)
    try:
        valid = await totp.verify_code(secret, form.get("code", ""), user.id, provider.kv)
    except BaseException:
        await provider.throttle.failed(attempt)  # an unfinished attempt counts (fail closed)
        raise
    if not valid:
        await provider.throttle.failed(attempt)
        await _audit_login(provider, "VerifyMfa", user.username, req, "InvalidMfaCode",
                           "the one-time code was not valid")
        return await _mfa_form(req, browser, "That code is not valid.", 401)
    await provider.throttle.succeeded(attempt)  # only now is the user authenticated
    await _audit_login(provider, "VerifyMfa", user.username, req, None, None)
    return await _signed_in(request, provider, req, user, ["pwd", "otp", "mfa"])


async def consent_page(provider: Provider, request: Request) -> Response:
    browser = _browser(request, provider)
    try:
        params = query_params(request)
    except errors.OAuthError:
        return error_page("Malformed request.")
    req = await load_pending(provider, params.get("r"), browser)
    if req is None or browser is None:
        return expired_page()
    async with provider.sessions() as db:
        session = await load_session(db, read_cookie(request, SESSION_COOKIE,
                                                     provider.secure_cookies))
        user = await db.get(User, session.user_id) if session else None
    if session is None or user is None:
        return RedirectResponse(f"/login?r={req.id}", status_code=303)
    scopes = [{"name": s, "text": SCOPE_TEXT.get(s, s)} for s in req.scopes]
    return render("consent.html", form_targets=(req.redirect_uri,), title="Consent",
                  request_id=req.id,
                  csrf=csrf_token(browser, req.id), client_name=await _client_name(provider, req),
                  scopes=scopes, username=user.username)


async def consent_submit(provider: Provider, request: Request) -> Response:
    browser = _browser(request, provider)
    try:
        form = await form_params(request, provider.settings.max_body_bytes)
    except errors.OAuthError as exc:
        return _form_error(exc)
    req = await load_pending(provider, form.get("r"), browser)
    if req is None or browser is None:
        return expired_page()
    if not csrf_ok(browser, req.id, form.get("csrf")):
        return error_page("The form could not be verified. Please try again.", 403)
    async with provider.sessions.begin() as db:
        session = await load_session(db, read_cookie(request, SESSION_COOKIE,
                                                     provider.secure_cookies))
        if session is None:
            return RedirectResponse(f"/login?r={req.id}", status_code=303)
        # one decision per pending request: of concurrent posts, only one takes it
        if not await take_pending(provider, req):
            return expired_page()
        consent = {"clientId": req.client_id, "scope": " ".join(req.scopes)}
        actor = {"type": "IAMUser", "principalId": session.user_id}
        if form.get("decision") != "allow":
            await provider.audit.emit("GrantConsent", user_identity=actor,
                                      request_parameters=consent, error_code="ConsentDenied",
                                      error_message="the user denied the request")
            return error_redirect(provider, RedirectError(
                errors.AccessDenied("the user denied the request"), req.redirect_uri, req.state))
        existing = await db.scalar(select(Consent).where(Consent.user_id == session.user_id,
                                                         Consent.client_id == req.client_id))
        now = int(time.time())
        if existing is None:
            db.add(Consent(user_id=session.user_id, client_id=req.client_id,
                           scopes=sorted(set(req.scopes)), granted_at=now))
        else:
            existing.scopes = sorted(set(existing.scopes) | set(req.scopes))
            existing.granted_at = now
    await provider.audit.emit("GrantConsent", user_identity=actor, request_parameters=consent)
    return await issue_code(provider, req, session, taken=True)
