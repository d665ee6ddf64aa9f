"""Interop fixtures: one real ``bastion serve`` over real TLS for the whole session, a user,
client registration, and a cookie-keeping user agent that signs in and consents over HTTP.

The relying-party logic itself (PKCE, token requests, ID token validation...) is never done
here: it belongs to the third-party libraries under test (Authlib, openid-client).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import raised_rate_limits
from tests.live import LiveServer, start_live_server

SCOPES = ["openid", "profile", "email", "offline_access", "order:view"]
SCOPE = " ".join(SCOPES)
GRANTS = ["authorization_code", "refresh_token"]
USERNAME = "alice"
ROLE = "order:view"


@dataclass(frozen=True)
class Person:
    username: str
    password: str
    id: str


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # the third-party clients sign in many times a second from 127.0.0.1, far above what a
    # person does: the edge's rate limits are raised for this server (they stay on)
    rules = json.dumps([asdict(r) for r in raised_rate_limits()])
    yield from start_live_server(tmp_path_factory.mktemp("interop"),
                                 env_over={"BASTION_RATE_LIMIT_RULES": rules})


@pytest.fixture(scope="session")
def alice(live: LiveServer) -> Person:
    password = live.add_user(USERNAME, ROLE)
    users = {u["username"]: u for u in live.cli("users", "list")}
    return Person(USERNAME, password, users[USERNAME]["id"])


def tls(live: LiveServer) -> ssl.SSLContext:
    """Trust exactly the test CA (the server certificate is for localhost/127.0.0.1)."""
    return live.ssl_context()


def scope_args(scopes: list[str] = SCOPES, grants: list[str] = GRANTS) -> list[str]:
    args: list[str] = []
    for s in scopes:
        args += ["--scope", s]
    for g in grants:
        args += ["--grant-type", g]
    return args


def register(live: LiveServer, name: str, redirect_uri: str, *extra: str) -> dict[str, Any]:
    """Register a client with the real CLI (``bastion clients create ... --json``)."""
    return live.add_client(name, [redirect_uri], *scope_args(), *extra)


def register_with_auth_method(live: LiveServer, name: str, redirect_uri: str,
                              auth_method: str) -> dict[str, Any]:
    """Register a client with an explicit ``token_endpoint_auth_method`` (CLI
    ``--auth-method``)."""
    data = register(live, name, redirect_uri, "--auth-method", auth_method)
    assert data["token_endpoint_auth_method"] == auth_method
    return data


# --- a user agent that keeps cookies and fills in Bastion's forms -------------------------------
@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif self.forms and tag == "input" and a.get("type") == "hidden" and "name" in a:
            self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif self.forms and tag == "button" and "name" in a:
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))


def only_form(html: str) -> Form:
    parser = _Forms()
    parser.feed(html)
    assert len(parser.forms) == 1, f"expected one form, got {parser.forms!r}"
    form = parser.forms[0]
    assert form.method == "post"
    assert {"r", "csrf"} <= set(form.fields), form.fields
    return form


def _same_endpoint(url: str, redirect_uri: str) -> bool:
    a, b = urlsplit(url), urlsplit(redirect_uri)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


@dataclass
class UserAgent:
    """A browser stand-in: follows Bastion's redirects, signs in, allows consent, and stops
    at the redirect to the client (which is never fetched)."""

    live: LiveServer
    steps: list[str] = field(default_factory=list)

    def authorize(self, authorization_url: str, redirect_uri: str, person: Person,
                  decision: str = "allow") -> str:
        origin = self.live.url
        with httpx.Client(verify=tls(self.live), timeout=30, follow_redirects=False) as http:
            resp = http.get(authorization_url)
            for _ in range(12):
                if resp.status_code in (301, 302, 303, 307, 308):
                    target = urljoin(str(resp.url), resp.headers["location"])
                    if _same_endpoint(target, redirect_uri):
                        return target
                    assert target.startswith(origin + "/"), f"unexpected redirect {target}"
                    resp = http.get(target)
                    continue
                assert resp.status_code == 200, f"{resp.url}: {resp.status_code} {resp.text}"
                page = urlsplit(str(resp.url)).path
                form = only_form(resp.text)
                action = urljoin(str(resp.url), form.action)
                if page == "/login":
                    self.steps.append("login")
                    resp = http.post(action, data={**form.fields, "username": person.username,
                                                   "password": person.password})
                elif page == "/consent":
                    self.steps.append("consent")
                    assert ("decision", decision) in form.buttons, form.buttons
                    resp = http.post(action, data={**form.fields, "decision": decision})
                else:
                    raise AssertionError(f"unexpected page {resp.url}")
            raise AssertionError("too many steps before the redirect to the client")
