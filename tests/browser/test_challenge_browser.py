"""Under attack mode in a real headless Chromium against a real ``bastion serve`` (TLS):
the browser gets the challenge page, its script solves the proof of work with WebCrypto,
and it ends on the real page with a Secure, HttpOnly pass cookie."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserContext

from tests.live import LiveServer, start_live_server


@pytest.fixture(scope="module")
def attacked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from start_live_server(tmp_path_factory.mktemp("bastion-under-attack"),
                                 env_over={"BASTION_UNDER_ATTACK": "on",
                                           "BASTION_UNDER_ATTACK_DIFFICULTY": "10"})


def test_browser_solves_the_challenge_and_reaches_the_login_page(
        attacked_server: LiveServer, context: BrowserContext) -> None:
    server = attacked_server
    rp = server.add_client("Attacked App", ["https://rp.example/cb"], "--scope", "openid")
    url = f"{server.url}/authorize?" + urlencode({
        "response_type": "code", "client_id": rp["client_id"], "scope": "openid",
        "redirect_uri": "https://rp.example/cb", "state": "s1", "nonce": "n1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGyCUt4c8w",
        "code_challenge_method": "S256"})
    with server.http() as http:  # without a browser: the challenge, not the page
        r = http.get(url, headers={"accept": "text/html"})
        assert r.status_code == 503 and "data-challenge" in r.text
        assert http.get("/healthz").status_code == 200  # exempt
        # machine clients pass the challenge and meet the next layers: the token endpoint
        # (exempt) judges the client's credentials, a made-up bearer token is a 401
        token = http.post("/token", data={"grant_type": "client_credentials"},
                          auth=(rp["client_id"], "wrong secret"))
        assert token.status_code == 401 and token.json()["error"] == "invalid_client"
        fake = http.get("/userinfo", headers={"authorization": "Bearer made-up"})
        assert fake.status_code == 401 and "data-challenge" not in fake.text

    page = context.new_page()
    statuses: list[int] = []
    page.on("response", lambda resp: statuses.append(resp.status))
    page.goto(url)
    page.wait_for_url(lambda u: urlsplit(u).path == "/login", timeout=30_000)
    page.wait_for_selector("input[name=password]")
    assert 503 in statuses and 303 in statuses  # challenged, then verified
    cookies = {c["name"]: c for c in context.cookies()}
    pass_cookie = cookies["__Host-bastion-pass"]
    assert pass_cookie["httpOnly"] and pass_cookie["secure"]
    assert pass_cookie["sameSite"] == "Lax"
    # the cookie is worth nothing from another client without it
    with httpx.Client(verify=server.ssl_context()) as other:
        r = other.get(url, headers={"accept": "text/html"})
        assert r.status_code == 503
