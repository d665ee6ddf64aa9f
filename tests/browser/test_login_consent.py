"""The login and consent pages in headless Chromium against a real ``bastion serve`` over TLS.

The authorization code flow as a user sees it (RFC 6749 §4.1, PKCE RFC 7636, ``iss`` RFC 9207),
session reuse and remembered consent, ``prompt=login``/``prompt=consent`` (OIDC Core §3.1.2.1),
wrong passwords and denial, clickjacking protection (RFC 9700 §4.16) and pages that work without
JavaScript.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Response, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import SCOPES, RelyingParty
from tests.live import LiveServer

pytestmark = pytest.mark.browser


@dataclass
class AuthRequest:
    url: str
    state: str
    nonce: str
    verifier: str


def authorize_url(server: LiveServer, client: dict[str, Any], rp: RelyingParty, **extra: str
                  ) -> AuthRequest:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    params = {"response_type": "code", "client_id": client["client_id"],
              "redirect_uri": rp.redirect_uri, "scope": " ".join(SCOPES), "state": state,
              "nonce": nonce, "code_challenge": challenge.rstrip(b"=").decode(),
              "code_challenge_method": "S256", **extra}
    return AuthRequest(f"{server.url}/authorize?{urlencode(params)}", state, nonce, verifier)


def path_of(url: str) -> str:
    return urlsplit(url).path


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def at_callback(rp: RelyingParty) -> Callable[[str], bool]:
    return lambda url: url.startswith(rp.redirect_uri + "?")


def track_navigations(page: Page) -> list[str]:
    """Every URL the main frame commits to, in order."""
    urls: list[str] = []
    page.on("framenavigated", lambda f: urls.append(f.url) if f == page.main_frame else None)
    return urls


def _login_re(server: LiveServer) -> re.Pattern[str]:
    return re.compile(re.escape(server.url) + r"/login\?r=[\w-]+$")


def _consent_re(server: LiveServer) -> re.Pattern[str]:
    return re.compile(re.escape(server.url) + r"/consent\?r=[\w-]+$")


def login(page: Page, server: LiveServer, username: str, password: str) -> None:
    expect(page).to_have_url(_login_re(server))
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#submit")


def wait_for_callback(page: Page, rp: RelyingParty) -> None:
    """Wait until the browser lands on the client's redirect URI; if it does not, say where
    it is stuck and what the browser complained about (e.g. a CSP violation)."""
    try:
        page.wait_for_url(at_callback(rp))
    except PlaywrightTimeoutError:
        errors = [m.text for m in page.console_messages() if m.type == "error"]
        raise AssertionError(f"never reached {rp.redirect_uri}: stuck on {page.url}; "
                             f"browser console errors: {errors}") from None
    expect(page.locator("#cb")).to_have_text("Callback")  # really landed on our server


def callback_params(page: Page, rp: RelyingParty, req: AuthRequest, server: LiveServer
                    ) -> dict[str, str]:
    wait_for_callback(page, rp)
    params = query_of(page.url)
    assert params["state"] == req.state
    assert params["iss"] == server.url  # RFC 9207 §2
    return params


def exchange(server: LiveServer, client: dict[str, Any], rp: RelyingParty, code: str, verifier: str
             ) -> httpx.Response:
    with server.http() as http:
        return http.post("/token", auth=(client["client_id"], client["client_secret"]),
                         data={"grant_type": "authorization_code", "code": code,
                               "redirect_uri": rp.redirect_uri, "code_verifier": verifier})


def check_tokens(server: LiveServer, client: dict[str, Any], rp: RelyingParty, code: str,
                 req: AuthRequest, username: str) -> dict[str, Any]:
    r = exchange(server, client, rp, code, req.verifier)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["access_token"]
    assert set(tokens["scope"].split()) == set(SCOPES)
    with server.http() as http:
        jwks_uri = http.get("/.well-known/openid-configuration").json()["jwks_uri"]
        keys = KeySet.import_key_set(http.get(jwks_uri).json())
        claims = jwt.decode(tokens["id_token"], keys).claims
        info = http.get("/userinfo",
                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert claims["iss"] == server.url
    assert claims["aud"] in (client["client_id"], [client["client_id"]])
    assert claims["nonce"] == req.nonce
    assert info.status_code == 200, info.text
    assert info.json()["preferred_username"] == username
    return dict(tokens)


def full_flow(page: Page, server: LiveServer, client: dict[str, Any], rp: RelyingParty,
              user: tuple[str, str], **extra: str) -> tuple[AuthRequest, dict[str, str]]:
    req = authorize_url(server, client, rp, **extra)
    page.goto(req.url)
    login(page, server, *user)
    expect(page).to_have_url(_consent_re(server))
    page.click("#allow")
    return req, callback_params(page, rp, req, server)


# --- 1. the chapter's flow -------------------------------------------------------------------

def test_code_flow_login_consent_and_token(context: BrowserContext, live_server: LiveServer,
                                           client: dict[str, Any], relying_party: RelyingParty,
                                           user: tuple[str, str], artifacts: Path) -> None:
    page = context.new_page()
    req = authorize_url(live_server, client, relying_party)
    response = page.goto(req.url)
    assert response is not None and response.status == 200

    expect(page).to_have_url(_login_re(live_server))
    expect(page).to_have_title("Sign in · Bastion")
    expect(page.locator("h1")).to_have_text("Sign in")
    expect(page.locator("main")).to_contain_text(client["name"])
    expect(page.locator("#username")).to_be_focused()
    expect(page.locator("#password")).to_have_attribute("type", "password")
    expect(page.locator("[role=alert]")).to_have_count(0)
    page.screenshot(path=str(artifacts / "login.png"), full_page=True)

    page.fill("#username", user[0])
    page.fill("#password", user[1])
    page.click("#submit")

    expect(page).to_have_url(_consent_re(live_server))
    expect(page).to_have_title("Consent · Bastion")
    main = page.locator("main")
    expect(main).to_contain_text(client["name"])
    items = page.locator("main ul li")
    expect(items).to_have_count(3)
    expect(items.nth(0)).to_contain_text("openid")
    expect(items.nth(1)).to_contain_text("See your name and username")
    expect(items.nth(2)).to_contain_text("View your orders")
    expect(items.nth(2)).to_contain_text("order:view")
    expect(main).to_contain_text(f"Signed in as {user[0]}")
    expect(page.locator("#allow")).to_be_visible()
    expect(page.locator("#deny")).to_be_visible()
    page.screenshot(path=str(artifacts / "consent.png"), full_page=True)

    page.click("#allow")
    params = callback_params(page, relying_party, req, live_server)
    assert "error" not in params
    assert params["code"]
    tokens = check_tokens(live_server, client, relying_party, params["code"], req, user[0])
    assert tokens["access_token"]

    # the code is single-use (RFC 6749 §4.1.2)
    again = exchange(live_server, client, relying_party, params["code"], req.verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


# --- 2. session and remembered consent; prompt=consent, prompt=login -------------------------

def test_session_and_consent_are_remembered(context: BrowserContext, live_server: LiveServer,
                                            client: dict[str, Any], relying_party: RelyingParty,
                                            user: tuple[str, str]) -> None:
    page = context.new_page()
    full_flow(page, live_server, client, relying_party, user)

    # same browser: straight back with a code, no login page, no consent page
    seen = track_navigations(page)
    req = authorize_url(live_server, client, relying_party)
    page.goto(req.url)
    params = callback_params(page, relying_party, req, live_server)
    assert not any(path_of(u) in ("/login", "/consent") for u in seen), seen
    check_tokens(live_server, client, relying_party, params["code"], req, user[0])

    # prompt=consent: the consent page again, but no login
    seen.clear()
    req = authorize_url(live_server, client, relying_party, prompt="consent")
    page.goto(req.url)
    expect(page).to_have_url(_consent_re(live_server))
    assert not any(path_of(u) == "/login" for u in seen), seen
    expect(page.locator("main")).to_contain_text(f"Signed in as {user[0]}")
    page.click("#allow")
    params = callback_params(page, relying_party, req, live_server)
    check_tokens(live_server, client, relying_party, params["code"], req, user[0])

    # prompt=login: the login page again, even though the session is fresh; consent is still
    # remembered, so signing in goes straight back to the client
    seen.clear()
    req = authorize_url(live_server, client, relying_party, prompt="login")
    page.goto(req.url)
    expect(page).to_have_url(_login_re(live_server))
    login(page, live_server, *user)
    params = callback_params(page, relying_party, req, live_server)
    assert not any(path_of(u) == "/consent" for u in seen), seen
    check_tokens(live_server, client, relying_party, params["code"], req, user[0])


def test_prompt_login_right_after_signing_in(context: BrowserContext, live_server: LiveServer,
                                             client: dict[str, Any], relying_party: RelyingParty,
                                             user: tuple[str, str]) -> None:
    """prompt=login must re-authenticate even when the session is a moment old, e.g. started
    in the same wall-clock second as the new request (OIDC Core §3.1.2.1)."""
    page = context.new_page()
    page.goto(authorize_url(live_server, client, relying_party).url)
    expect(page).to_have_url(_login_re(live_server))
    page.fill("#username", user[0])
    page.fill("#password", user[1])
    time.sleep(1 - time.time() % 1)  # sign in at the start of a second ...
    page.click("#submit")
    expect(page).to_have_url(_consent_re(live_server))
    req = authorize_url(live_server, client, relying_party, prompt="login")
    page.goto(req.url)  # ... and ask again, with prompt=login, within that second
    expect(page).to_have_url(_login_re(live_server))
    expect(page.locator("#username")).to_be_visible()


# --- 3. wrong password; deny ----------------------------------------------------------------

def test_wrong_password_then_deny(context: BrowserContext, live_server: LiveServer,
                                  client: dict[str, Any], relying_party: RelyingParty,
                                  user: tuple[str, str], artifacts: Path) -> None:
    page = context.new_page()
    req = authorize_url(live_server, client, relying_party)
    page.goto(req.url)
    expect(page).to_have_url(_login_re(live_server))
    login_url = page.url

    page.fill("#username", user[0])
    page.fill("#password", "not the password")
    with page.expect_response(lambda r: r.request.method == "POST"
                              and path_of(r.url) == "/login") as posted:
        page.click("#submit")
    assert posted.value.status == 401

    alert = page.locator("[role=alert]")
    expect(alert).to_have_text("Invalid username or password.")
    expect(alert).to_be_visible()
    expect(page.locator("h1")).to_have_text("Sign in")
    expect(page.locator("#username")).to_have_value(user[0])  # kept for the retry
    expect(page.locator("#password")).to_have_value("")  # never echoed back
    assert not relying_party_hit(relying_party, req)
    page.screenshot(path=str(artifacts / "login-error.png"), full_page=True)

    # the same form works for the retry
    page.fill("#password", user[1])
    page.click("#submit")
    expect(page).to_have_url(_consent_re(live_server))
    assert page.url != login_url

    page.click("#deny")
    wait_for_callback(page, relying_party)
    params = query_of(page.url)
    assert params["error"] == "access_denied"
    assert params["state"] == req.state
    assert params["iss"] == live_server.url
    assert "code" not in params

    # denial is not remembered as consent: the next request asks again
    req = authorize_url(live_server, client, relying_party)
    page.goto(req.url)
    expect(page).to_have_url(_consent_re(live_server))


def relying_party_hit(rp: RelyingParty, req: AuthRequest) -> bool:
    return any(req.state in hit for hit in rp.hits)


# --- 4. clickjacking --------------------------------------------------------------------------

def test_pages_cannot_be_framed(context: BrowserContext, live_server: LiveServer,
                                client: dict[str, Any], relying_party: RelyingParty,
                                user: tuple[str, str]) -> None:
    page = context.new_page()
    req = authorize_url(live_server, client, relying_party)
    response = page.goto(req.url)
    assert response is not None
    expect(page).to_have_url(_login_re(live_server))
    login_url = page.url
    headers = response.all_headers()
    assert headers["x-frame-options"].upper() == "DENY"
    directives = [d.strip() for d in headers["content-security-policy"].split(";")]
    assert "frame-ancestors 'none'" in directives

    # the consent page carries the same headers
    page.fill("#username", user[0])
    page.fill("#password", user[1])
    with page.expect_response(lambda r: path_of(r.url) == "/consent"
                              and r.request.method == "GET") as consent:
        page.click("#submit")
    headers = consent.value.all_headers()
    assert headers["x-frame-options"].upper() == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    consent_url = page.url

    # a control: the hostile page can frame a page that allows it (its own callback)
    evil = context.new_page()
    evil.goto(relying_party.frame_page(relying_party.redirect_uri))
    expect(evil.frame_locator("#victim").locator("#cb")).to_have_text("Callback")

    # and an actual attempt on the login and consent pages (and on /authorize, which
    # redirects to the login page): the server answers, but Chromium refuses to render it
    for target in (login_url, consent_url, req.url):
        messages: list[str] = []
        answered: list[tuple[str, dict[str, str]]] = []

        def on_console(msg: ConsoleMessage, sink: list[str] = messages) -> None:
            sink.append(msg.text)

        def on_response(r: Response, sink: list[tuple[str, dict[str, str]]] = answered) -> None:
            if r.url.startswith(live_server.url) and not 300 <= r.status < 400:
                sink.append((path_of(r.url), r.headers))

        evil.on("console", on_console)
        evil.on("response", on_response)
        evil.goto(relying_party.frame_page(target))
        expect(evil.locator("h1")).to_have_text("Evil page")
        frames = evil.main_frame.child_frames
        assert len(frames) == 1
        victim = frames[0]
        deadline = time.monotonic() + 10
        while not messages and time.monotonic() < deadline:
            evil.wait_for_timeout(100)
        evil.remove_listener("console", on_console)
        evil.remove_listener("response", on_response)

        assert answered and answered[-1][0] in ("/login", "/consent"), (target, answered)
        assert answered[-1][1]["x-frame-options"].upper() == "DENY"
        assert any("frame-ancestors 'none'" in m for m in messages), (target, messages)
        assert victim.url.startswith("chrome-error://"), (target, victim.url)
        assert victim.locator("#username").count() == 0
        assert victim.locator("#allow").count() == 0
        assert victim.locator("form").count() == 0
        assert "Bastion" not in victim.title()


# --- 5. no JavaScript -------------------------------------------------------------------------

def test_login_and_consent_without_javascript(browser: Browser, live_server: LiveServer, client: dict[str, Any],
                                              relying_party: RelyingParty,
                                              user: tuple[str, str]) -> None:
    ctx = browser.new_context(ignore_https_errors=True, java_script_enabled=False)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        assert page.evaluate("1 + 1") == 2  # Playwright's own world still runs
        page.goto(f"{relying_party.base}/cb")
        # the page's own scripts do not: a <noscript> would show, a script would not run
        page.set_content("<p id=x>static</p><script>document.getElementById('x')"
                         ".textContent = 'scripted'</script>")
        expect(page.locator("#x")).to_have_text("static")

        req, params = full_flow(page, live_server, client, relying_party, user)
        check_tokens(live_server, client, relying_party, params["code"], req, user[0])
    finally:
        ctx.close()
