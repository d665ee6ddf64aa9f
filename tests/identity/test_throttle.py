"""The login throttle reserves an attempt before it is verified (issue 8 item 5): concurrent
guesses cannot all pass the check before a failure is counted, on memory and on Redis, at the
component and over HTTP. RFC 6819 §5.1.4.2.3, NIST SP 800-63B §5.2.2."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import update

from bastion.app import build_app
from bastion.config import Settings
from bastion.identity.throttle import LoginThrottle, ThrottlePolicy
from bastion.store.kv import KV, MemoryKV, RedisKV
from bastion.store.models import User
from tests.conftest import ISSUER, make_settings, raised_rate_limits
from tests.flows import PASSWORD, add_client, add_user, hidden_fields, pkce
from tests.identity.test_login_throttle import signed_in, throttled, wrong_code

pytestmark = pytest.mark.anyio

LIMIT = 3
GUESSES = 12
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KV]:
    store: KV = MemoryKV() if request.param == "memory" else RedisKV(
        REDIS, prefix=f"bastion-test:{secrets.token_hex(4)}:")
    yield store
    await store.close()


def policy(limit: int = LIMIT) -> ThrottlePolicy:
    return ThrottlePolicy(max_failures_account=limit, max_failures_ip=100, backoff_base=30,
                          backoff_max=60, window=900)


async def guess(throttle: LoginThrottle, verified: list[int], i: int, ip: str = "192.0.2.1"
                ) -> None:
    attempt = await throttle.reserve("alice", ip)
    if attempt.allowed:
        verified.append(i)
        await asyncio.sleep(0.01)  # the password hash takes time: others arrive meanwhile
        await throttle.failed(attempt)


async def test_concurrent_guesses_verified_at_most_the_limit(kv):
    """N concurrent wrong guesses: only the free attempts are verified, the rest refused
    before verification (the check is the atomic increment, not a read)."""
    throttle = LoginThrottle(kv, policy())
    verified: list[int] = []
    await asyncio.gather(*(guess(throttle, verified, i) for i in range(GUESSES)))
    assert len(verified) == LIMIT
    refused = await throttle.reserve("alice", "192.0.2.1")
    assert not refused.allowed and refused.wait > 1


async def test_concurrent_guesses_from_many_addresses_still_capped(kv):
    """Each guess from its own address: the account counter alone caps them."""
    throttle = LoginThrottle(kv, policy())
    verified: list[int] = []
    await asyncio.gather(*(guess(throttle, verified, i, f"198.51.100.{i}")
                           for i in range(GUESSES)))
    assert len(verified) == LIMIT


async def test_one_attempt_at_a_time_past_the_limit(kv):
    """Past the free attempts and after the backoff, concurrent guesses get one verification
    between them (the busy gate), not one each."""
    throttle = LoginThrottle(kv, ThrottlePolicy(LIMIT, 100, 0.001, 0.001, 900))
    for _ in range(LIMIT):
        await throttle.failed(await throttle.reserve("alice", "192.0.2.1"))
    await asyncio.sleep(0.01)  # the (tiny) backoff has passed
    verified: list[int] = []
    await asyncio.gather(*(guess(throttle, verified, i) for i in range(GUESSES)))
    assert len(verified) == 1


async def test_refused_attempts_are_not_counted(kv):
    """A refused reservation is given back: waiting out the backoff is enough."""
    throttle = LoginThrottle(kv, ThrottlePolicy(1, 100, 0.05, 0.05, 900))
    await throttle.failed(await throttle.reserve("alice", "192.0.2.1"))
    for _ in range(5):
        assert not (await throttle.reserve("alice", "192.0.2.1")).allowed
    await asyncio.sleep(0.1)
    attempt = await throttle.reserve("alice", "192.0.2.1")
    assert attempt.allowed
    await throttle.succeeded(attempt)


async def test_released_first_factor_resets_nothing(kv):
    """A right password before a second factor is no sign-in: it must not reset the
    failures of the code step (the known-password reset attack)."""
    throttle = LoginThrottle(kv, policy())
    for _ in range(LIMIT):
        await throttle.failed(await throttle.reserve("alice", "192.0.2.1"))
    password_step = await throttle.reserve("alice", "192.0.2.2")
    assert not password_step.allowed  # backing off: the password step is refused too
    assert not (await throttle.reserve("alice", "192.0.2.1")).allowed


async def test_release_gives_the_attempt_back(kv):
    throttle = LoginThrottle(kv, policy())
    for _ in range(LIMIT * 3):
        attempt = await throttle.reserve("alice", "192.0.2.1")
        assert attempt.allowed
        await throttle.released(attempt)


async def test_success_resets_the_account_not_the_address(kv):
    throttle = LoginThrottle(kv, ThrottlePolicy(LIMIT, LIMIT + 1, 30, 60, 900))
    for i in range(LIMIT - 1):
        await throttle.failed(await throttle.reserve(f"user{i}", "192.0.2.1"))
    await throttle.failed(await throttle.reserve("alice", "192.0.2.1"))
    attempt = await throttle.reserve("alice", "192.0.2.1")
    await throttle.succeeded(attempt)
    assert not attempt.allowed  # an ended attempt cannot be used again
    # alice's failure is forgotten; the address keeps its LIMIT failures (one free left)
    attempt = await throttle.reserve("alice", "192.0.2.1")
    assert attempt.allowed
    await throttle.failed(attempt)
    assert not (await throttle.reserve("bob", "192.0.2.1")).allowed


# --- over HTTP ----------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Any, database_url: str) -> Settings:
    # the edge's rate limits are raised: these tests send concurrent guesses from 127.0.0.1
    # to prove the throttle behind them caps them
    over: dict[str, Any] = {"redis_url": REDIS} if request.param == "redis" else {}
    return make_settings(tmp_path, database_url, login_max_failures_account=LIMIT,
                         login_max_failures_ip=100, login_backoff_base=30.0,
                         login_backoff_max=60.0, rate_limit_rules=raised_rate_limits(), **over)


@pytest.fixture
async def person(provider: Any) -> str:
    # a name and an address of this test only: Redis is shared with other test runs
    name = f"user-{secrets.token_hex(4)}"
    await add_user(provider, name)
    return name


@pytest.fixture
async def agent(provider: Any) -> AsyncIterator[httpx.AsyncClient]:
    ip = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    transport = httpx.ASGITransport(app=build_app(provider), client=(ip, 50200))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


async def login_fields(http: httpx.AsyncClient, provider: Any) -> dict[str, str]:
    client = await add_client(provider)
    _, challenge = pkce()
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uri, "scope": "openid", "state": "s",
        "code_challenge": challenge, "code_challenge_method": "S256"}, follow_redirects=True)
    assert r.status_code == 200 and "/login" in str(r.url), r.text
    return hidden_fields(r.text)


async def test_concurrent_password_guesses_over_http_capped(provider, agent, person):
    """Before the fix every concurrent guess passed the throttle check (all 401)."""
    fields = await login_fields(agent, provider)
    answers = await asyncio.gather(*(
        agent.post("/login", data={**fields, "username": person, "password": f"guess-{i}"})
        for i in range(GUESSES)))
    statuses = [r.status_code for r in answers]
    assert statuses.count(401) == LIMIT, statuses  # verified and wrong
    assert statuses.count(429) == GUESSES - LIMIT, statuses  # refused unverified
    r = await agent.post("/login", data={**fields, "username": person, "password": PASSWORD})
    assert throttled(r) and not signed_in(r)


async def test_concurrent_totp_guesses_over_http_capped(provider, agent, person):
    secret = pyotp.random_base32(32)
    async with provider.sessions.begin() as db:
        await db.execute(update(User).where(User.username == person).values(
            totp_secret=provider.wrapper.wrap(secret.encode(), "totp")))
    fields = await login_fields(agent, provider)
    r = await agent.post("/login", data={**fields, "username": person, "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"].startswith("/login/mfa")
    mfa = hidden_fields((await agent.get(r.headers["location"])).text)
    code = wrong_code(pyotp.TOTP(secret))
    answers = await asyncio.gather(*(agent.post("/login/mfa", data={**mfa, "code": code})
                                     for _ in range(GUESSES)))
    statuses = [r.status_code for r in answers]
    assert statuses.count(401) == LIMIT and statuses.count(429) == GUESSES - LIMIT, statuses
    r = await agent.post("/login/mfa", data={**mfa, "code": pyotp.TOTP(secret).now()})
    assert r.status_code == 429 and not signed_in(r)
