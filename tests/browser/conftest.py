"""Fixtures for browser tests: a real ``bastion serve`` over TLS, a tiny local HTTP server
that plays the client's redirect URI (and a hostile framing page), and headless Chromium.

One server and one browser per session; each test gets a fresh browser context, client and
user, so cookies, remembered consents and login throttling never leak between tests.
"""

from __future__ import annotations

import html
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

from tests.conftest import raised_rate_limits
from tests.live import LiveServer, free_port, start_live_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
SCOPES = ["openid", "profile", "order:view"]

_ids = itertools.count(1)


@dataclass
class RelyingParty:
    """The local HTTP server: ``/cb`` answers 200 (the redirect URI), ``/frame?src=URL``
    serves a page that tries to put URL in an iframe."""

    base: str
    hits: list[str] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        return self.base + "/cb"

    def frame_page(self, src: str) -> str:
        from urllib.parse import quote

        return f"{self.base}/frame?src={quote(src, safe='')}"


def _handler(rp: RelyingParty) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            rp.hits.append(self.path)
            url = urlsplit(self.path)
            if url.path == "/cb":
                body = "<!doctype html><title>callback</title><h1 id='cb'>Callback</h1>"
            elif url.path == "/frame":
                src = html.escape(parse_qs(url.query).get("src", [""])[0], quote=True)
                body = ("<!doctype html><title>framer</title><h1>Evil page</h1>"
                        f"<iframe id='victim' name='victim' src='{src}' width='600' "
                        "height='500'></iframe>")
            else:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture(scope="session")
def relying_party() -> Iterator[RelyingParty]:
    port = free_port()
    rp = RelyingParty(f"http://127.0.0.1:{port}")
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(rp))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="relying-party", daemon=True)
    thread.start()
    try:
        yield rp
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # one server for every browser test of the session: more sign-ins from 127.0.0.1 than a
    # person makes, so the limits are raised (they stay on)
    rules = json.dumps([asdict(r) for r in raised_rate_limits()])
    yield from start_live_server(tmp_path_factory.mktemp("bastion-live"),
                                 env_over={"BASTION_RATE_LIMIT_RULES": rules})


# module scope: Playwright's sync API keeps an event loop running in this thread while it is
# open, which would stop every later async test from starting its own
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(ignore_https_errors=True)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def client(live_server: LiveServer, relying_party: RelyingParty) -> dict[str, Any]:
    n = next(_ids)
    args = [a for s in SCOPES for a in ("--scope", s)]
    data = live_server.add_client(f"Shop App {n}", [relying_party.redirect_uri], *args)
    assert data.get("client_secret"), data
    return data


@pytest.fixture
def user(live_server: LiveServer) -> tuple[str, str]:
    name = f"alice{next(_ids)}"
    return name, live_server.add_user(name, "order:view", "order:create")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
