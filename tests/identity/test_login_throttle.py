"""Login: identical answers for unknown users and wrong passwords, throttling per account and
per client IP with exponential backoff, and the TOTP second factor (RFC 6238) with replay
refused. References: RFC 6819 §4.4.3.6 / §5.1.4.2.3 (online guessing), NIST SP 800-63B
§5.2.2 (rate limiting), RFC 6238 §5.2 (one-time use)."""

from __future__ import annotations

import re
import time
import types
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
from joserfc import jwt
from sqlalchemy import update

from bastion.app import build_app
from bastion.config import Settings
from bastion.identity import throttle as throttle_module
from bastion.store.models import User
from tests.conftest import ISSUER, make_settings, raised_rate_limits
from tests.flows import (
    PASSWORD,
    CodeResult,
    Registered,
    add_user,
    exchange,
    hidden_fields,
    pkce,
)

pytestmark = pytest.mark.anyio

ACCOUNT_LIMIT = 2
IP_LIMIT = 4
BACKOFF = 30.0
BACKOFF_MAX = 60.0


@pytest.fixture
def settings(tmp_path: Any, database_url: str) -> Settings:
    """Small limits, long backoffs: waiting is done by moving the throttle's clock. The
    edge's rate limits are raised: these tests guess far faster than 30 sign-ins a minute,
    to exercise the throttle behind them."""
    return make_settings(tmp_path, database_url, login_max_failures_account=ACCOUNT_LIMIT,
                         login_max_failures_ip=IP_LIMIT, login_backoff_base=BACKOFF,
                         login_backoff_max=BACKOFF_MAX, rate_limit_rules=raised_rate_limits())


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(throttle_module, "time", types.SimpleNamespace(time=c.time))
    return c




def browser(provider: Any, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(provider), client=(ip, 50100))
    return httpx.AsyncClient(transport=transport, base_url=ISSUER)


@pytest.fixture
async def other_ip(provider: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(provider, "192.0.2.7") as client:
        yield client


async def login_form(http: httpx.AsyncClient, client: Registered) -> dict[str, str]:
    verifier, challenge = pkce()
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uri, "scope": "openid order:view", "state": "s",
        "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
    assert r.status_code == 303 and urlsplit(r.headers["location"]).path == "/login"
    page = await http.get(r.headers["location"])
    fields = hidden_fields(page.text)
    fields["_verifier"] = verifier
    return fields


async def submit(http: httpx.AsyncClient, fields: dict[str, str], username: str,
                 password: str) -> httpx.Response:
    data = {k: v for k, v in fields.items() if not k.startswith("_")}
    r = await http.post("/login", data={**data, "username": username, "password": password})
    assert r.status_code < 500
    assert password not in r.text or password == ""  # the password is never echoed
    return r


def signed_in(r: httpx.Response) -> bool:
    return r.status_code == 303 and "bastion_session=" in r.headers.get("set-cookie", "")


def throttled(r: httpx.Response) -> bool:
    return r.status_code == 429 and "Too many attempts" in r.text and "location" not in r.headers


def wait_seconds(r: httpx.Response) -> int:
    m = re.search(r"Try again in (\d+) seconds", r.text)
    assert m, r.text
    return int(m.group(1))


# --- identical answers ----------------------------------------------------------------------------

def _normalized(r: httpx.Response, username: str) -> tuple[int, str, str]:
    """Status, page and content type, with the echoed username, the wait and the form's
    per-request fields blanked."""
    text = r.text.replace(f'value="{username}"', 'value="USER"')
    text = re.sub(r"Try again in \d+ seconds", "Try again in N seconds", text)
    text = re.sub(r'name="(r|csrf)" value="[^"]*"', r'name="\1" value=""', text)
    text = text.replace(" autofocus", "")  # focus follows whether a username was typed
    return (r.status_code, text, r.headers["content-type"])


@pytest.mark.parametrize("case", ["unknown-user", "disabled-user", "empty-username"])
async def test_unknown_user_answers_like_wrong_password(http, provider, app, case):
    """RFC 6819 §5.1.4.2.3 / OWASP: the answer (status and page) for an unknown or disabled
    account is the one for a wrong password, so accounts cannot be enumerated."""
    fields = await login_form(http, app)
    wrong = await submit(http, fields, "alice", "wrong password")
    assert wrong.status_code == 401 and "Invalid username or password" in wrong.text
    if case == "disabled-user":
        await add_user(provider, "bob")
        async with provider.sessions.begin() as db:
            await db.execute(update(User).where(User.username == "bob").values(disabled=True))
        other, password = "bob", PASSWORD  # even the right password
    elif case == "unknown-user":
        other, password = "mallory", "wrong password"
    else:
        other, password = "", "wrong password"
    r = await submit(http, fields, other, password)
    assert not signed_in(r)
    assert _normalized(r, other) == _normalized(wrong, "alice")


# --- per-account throttle -------------------------------------------------------------------------

async def test_account_throttled_even_with_right_password(http, app, clock):
    """After N failures the account answers 429 until the backoff passes — the right
    password included — then a success clears the counter."""
    fields = await login_form(http, app)
    for _ in range(ACCOUNT_LIMIT):
        assert (await submit(http, fields, "alice", "wrong")).status_code == 401
    r = await submit(http, fields, "alice", PASSWORD)
    assert throttled(r) and not signed_in(r)
    assert 0 < wait_seconds(r) <= BACKOFF + 1
    clock.advance(BACKOFF - 5)
    assert throttled(await submit(http, fields, "alice", PASSWORD))
    clock.advance(10)
    r = await submit(http, fields, "alice", PASSWORD)
    assert signed_in(r), r.text


async def test_success_resets_the_account_counter(http, provider, app, clock):
    fields = await login_form(http, app)
    for _ in range(ACCOUNT_LIMIT):
        await submit(http, fields, "alice", "wrong")
    clock.advance(BACKOFF + 1)
    assert signed_in(await submit(http, fields, "alice", PASSWORD))
    async with browser(provider, "127.0.0.1") as again:
        fields = await login_form(again, app)
        assert (await submit(again, fields, "alice", "wrong")).status_code == 401
        assert signed_in(await submit(again, fields, "alice", PASSWORD))


async def test_backoff_doubles(http, app, clock):
    """Each failure past the limit doubles the wait (capped)."""
    fields = await login_form(http, app)
    for _ in range(ACCOUNT_LIMIT):
        await submit(http, fields, "alice", "wrong")
    first = wait_seconds(await submit(http, fields, "alice", PASSWORD))
    clock.advance(BACKOFF + 1)
    assert (await submit(http, fields, "alice", "wrong")).status_code == 401
    second = wait_seconds(await submit(http, fields, "alice", PASSWORD))
    assert second > first and second <= BACKOFF_MAX + 1


@pytest.mark.parametrize("variant", ["ALICE", " alice ", "Alice"])
async def test_account_throttle_ignores_case_and_spaces(http, app, clock, variant):
    """Varying the case or padding of the username does not reset the account's counter."""
    fields = await login_form(http, app)
    for _ in range(ACCOUNT_LIMIT):
        await submit(http, fields, variant, "wrong")
    assert throttled(await submit(http, fields, "alice", PASSWORD))


async def test_unknown_account_throttled_like_a_real_one(http, other_ip, app, clock):
    """Throttling reveals nothing about which accounts exist (each account from its own
    address, so that only the account counters are at work)."""
    answers = {}
    for name, client in (("alice", http), ("mallory", other_ip)):
        fields = await login_form(client, app)
        for _ in range(ACCOUNT_LIMIT):
            assert (await submit(client, fields, name, "wrong")).status_code == 401
        answers[name] = await submit(client, fields, name, "wrong")
        assert throttled(answers[name])
    assert _normalized(answers["alice"], "alice") == _normalized(answers["mallory"], "mallory")


async def test_account_throttle_applies_from_every_ip(http, other_ip, app, clock):
    """The account counter is shared: moving to another address does not help."""
    fields = await login_form(http, app)
    for _ in range(ACCOUNT_LIMIT):
        await submit(http, fields, "alice", "wrong")
    fields2 = await login_form(other_ip, app)
    assert throttled(await submit(other_ip, fields2, "alice", PASSWORD))


async def test_one_account_throttled_others_not(http, provider, app, clock):
    await add_user(provider, "bob")
    fields = await login_form(http, app)
    for _ in range(ACCOUNT_LIMIT):
        await submit(http, fields, "alice", "wrong")
    assert throttled(await submit(http, fields, "alice", PASSWORD))
    assert signed_in(await submit(http, fields, "bob", PASSWORD))


# --- per-IP throttle --------------------------------------------------------------------------------

async def test_ip_throttled_across_usernames(http, other_ip, app, clock):
    """Spraying one password over many accounts from one address is throttled per IP; another
    address is unaffected."""
    fields = await login_form(http, app)
    for i in range(IP_LIMIT):
        assert (await submit(http, fields, f"user{i}", "wrong")).status_code == 401
    assert throttled(await submit(http, fields, "alice", PASSWORD))
    fields2 = await login_form(other_ip, app)
    assert signed_in(await submit(other_ip, fields2, "alice", PASSWORD))
    clock.advance(BACKOFF + 1)
    assert signed_in(await submit(http, fields, "alice", PASSWORD))


# --- TOTP second factor ------------------------------------------------------------------------------

SECRET = pyotp.random_base32(32)


def wrong_code(totp: pyotp.TOTP) -> str:
    """A well-formed code that no accepted time step (now, one before, one after) yields."""
    now = time.time()
    valid = {totp.at(now + d) for d in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


@pytest.fixture
async def totp_alice(provider: Any, alice: str) -> pyotp.TOTP:
    async with provider.sessions.begin() as db:
        await db.execute(update(User).where(User.id == alice).values(
            totp_secret=provider.wrapper.wrap(SECRET.encode(), "totp")))
    return pyotp.TOTP(SECRET)


async def password_step(http: httpx.AsyncClient, app: Registered) -> dict[str, str]:
    """Password accepted: the second-factor form's fields."""
    fields = await login_form(http, app)
    r = await submit(http, fields, "alice", PASSWORD)
    assert r.status_code == 303 and urlsplit(r.headers["location"]).path == "/login/mfa"
    assert "bastion_session=" not in r.headers.get("set-cookie", "")
    page = await http.get(r.headers["location"])
    assert page.status_code == 200
    mfa = hidden_fields(page.text)
    mfa["_verifier"] = fields["_verifier"]
    return mfa


async def send_code(http: httpx.AsyncClient, fields: dict[str, str], code: str
                    ) -> httpx.Response:
    data = {k: v for k, v in fields.items() if not k.startswith("_")}
    r = await http.post("/login/mfa", data={**data, "code": code})
    assert r.status_code < 500
    return r


async def test_totp_login(http, provider, app, totp_alice):
    fields = await password_step(http, app)
    r = await send_code(http, fields, totp_alice.now())
    assert signed_in(r)
    page = await http.get(r.headers["location"])
    r = await http.post("/consent", data={**hidden_fields(page.text), "decision": "allow"})
    code = dict(p.split("=", 1) for p in urlsplit(r.headers["location"]).query.split("&"))["code"]
    tokens = await exchange(http, app, CodeResult(code, fields["_verifier"], "s", "n", {}))
    assert tokens.status_code == 200, tokens.text
    amr = jwt.decode(tokens.json()["id_token"], provider.keyring.signing).claims["amr"]
    assert {"pwd", "otp"} <= set(amr)


async def test_totp_code_cannot_be_replayed(http, provider, app, totp_alice):
    """RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the same OTP after
    the successful validation has been issued for the first OTP"."""
    code = totp_alice.now()
    assert signed_in(await send_code(http, await password_step(http, app), code))
    async with browser(provider, "127.0.0.1") as second:
        fields = await password_step(second, app)
        r = await send_code(second, fields, code)
        assert r.status_code == 401 and not signed_in(r)


@pytest.mark.parametrize("code", [
    pytest.param("", id="empty"),
    pytest.param("12345", id="too-short"),
    pytest.param("1234567", id="too-long"),
    pytest.param("abcdef", id="letters"),
    pytest.param("١٢٣٤٥٦", id="arabic-indic-digits"),
    pytest.param("¹²³⁴⁵⁶", id="superscript-digits"),
    pytest.param("1" * 4000, id="huge"),
    pytest.param("12345\x00", id="nul"),
    pytest.param("wrong", id="wrong"),
])
async def test_totp_malformed_codes_refused(http, app, totp_alice, code):
    fields = await password_step(http, app)
    if code == "wrong":
        code = wrong_code(totp_alice)
    r = await send_code(http, fields, code)
    assert r.status_code == 401 and not signed_in(r)
    assert "That code is not valid" in r.text


@pytest.mark.parametrize("csrf", [
    pytest.param(None, id="rfc9700-4.7/csrf-missing"),
    pytest.param("0" * 64, id="rfc9700-4.7/csrf-wrong"),
    pytest.param("é" * 64, id="rfc9700-4.7/csrf-non-ascii"),
])
async def test_totp_form_refuses_bad_csrf(http, app, totp_alice, csrf):
    fields = await password_step(http, app)
    data = {"r": fields["r"], "code": totp_alice.now()}
    if csrf is not None:
        data["csrf"] = csrf
    r = await http.post("/login/mfa", data=data)
    assert r.status_code == 403 and not signed_in(r)


async def test_totp_cannot_be_skipped(http, app, totp_alice):
    """After the password step only, no page treats the user as signed in."""
    fields = await password_step(http, app)
    r = await http.get("/consent", params={"r": fields["r"]})
    assert r.status_code in (303, 400) and not signed_in(r)
    if r.status_code == 303:
        assert urlsplit(r.headers["location"]).path == "/login"
    r = await http.post("/consent", data={"r": fields["r"], "csrf": fields["csrf"],
                                          "decision": "allow"})
    assert r.status_code in (303, 400, 403)
    assert not r.headers.get("location", "").startswith(app.redirect_uri)
    fresh = await login_form(http, app)  # a new request still asks for the password
    assert set(fresh) >= {"r", "csrf"}


async def test_totp_failures_throttled(http, app, totp_alice, clock):
    fields = await password_step(http, app)
    for _ in range(ACCOUNT_LIMIT):
        assert (await send_code(http, fields, wrong_code(totp_alice))).status_code == 401
    r = await send_code(http, fields, totp_alice.now())
    assert r.status_code == 429 and not signed_in(r)
    clock.advance(BACKOFF + 1)
    assert signed_in(await send_code(http, fields, totp_alice.now()))


async def test_known_password_does_not_reset_totp_throttle(http, app, totp_alice, clock):
    """Issue 8 item 5: someone who knows the password alternates password and code guesses.
    The right password used to reset the account counter (success was counted after the
    password step), giving unlimited code guesses; now only a full sign-in resets it."""
    verified = 0
    for _ in range(4 * ACCOUNT_LIMIT):
        fields = await login_form(http, app)
        r = await submit(http, fields, "alice", PASSWORD)
        if r.status_code != 303:
            assert throttled(r)
            continue
        mfa = hidden_fields((await http.get(r.headers["location"])).text)
        r = await send_code(http, mfa, wrong_code(totp_alice))
        if r.status_code == 401:
            verified += 1
        else:
            assert r.status_code == 429
    assert verified == ACCOUNT_LIMIT
    r = await send_code(http, mfa, totp_alice.now())
    assert r.status_code == 429 and not signed_in(r)
    clock.advance(BACKOFF + 1)  # the backoff passes: the right code now signs in
    assert signed_in(await send_code(http, mfa, totp_alice.now()))
