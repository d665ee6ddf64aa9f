"""The demo seed: idempotent (a second start keeps every credential), audited in the same
transaction, no password or secret in the trail; and a second server on a busy port changes
nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from typing import Any

import httpx
import pytest

from bastion.demo import CREDENTIALS_FILE, seed
from bastion.identity.passwords import verify_password
from bastion.identity.users import get_user_by_name
from bastion.runtime import open_provider
from bastion.store.models import Client
from tests.conftest import _reset, make_settings
from tests.live import BASTION, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def provider(tmp_path, database_url):
    settings = make_settings(tmp_path, database_url, issuer="http://127.0.0.1:8443")
    await _reset(settings.effective_database_url)
    p = await open_provider(settings)
    yield p
    await p.close()


async def records(provider: Any) -> list[dict[str, Any]]:
    await provider.audit.flush()
    return [json.loads(bytes(r[0])) for r in await provider.fast.all(
        "SELECT body FROM audit_events ORDER BY seq")]


async def test_second_seed_keeps_every_credential(provider):
    """Item 13: seeding again (a second ``make run``) resets no password and rotates no
    secret: the first start's credentials keep working."""
    first = await seed(provider)
    assert set(first.created) == {"client", "alice", "bob"}
    async with provider.sessions() as db:
        secret_hash = (await db.get(Client, "xyz")).secret_hash
    second = await seed(provider)
    assert second.created == () and second == first.__class__(
        first.client_id, first.client_secret, first.redirect_uri, first.passwords, ())
    async with provider.sessions() as db:
        assert (await db.get(Client, "xyz")).secret_hash == secret_hash
        for name, password in first.passwords.items():
            user = await get_user_by_name(db, name)
            assert await verify_password(user.password_hash, password)


async def test_seed_is_audited_once_without_secrets(provider):
    first = await seed(provider)
    await seed(provider)
    seeded = [(r["eventName"], r.get("requestParameters", {}).get("userName"))
              for r in await records(provider) if r["userIdentity"].get("principalId")
              == "demo-seed"]
    assert sorted(seeded) == [("CreateClient", None), ("CreateUser", "alice"),
                              ("CreateUser", "bob")]
    blob = json.dumps(await records(provider))
    assert first.client_secret not in blob
    assert all(p not in blob for p in first.passwords.values())


async def test_credentials_file_is_owner_only(provider):
    creds = await seed(provider)
    path = provider.settings.data_dir / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = json.loads(path.read_text())
    assert kept["client_secret"] == creds.client_secret and kept["passwords"] == creds.passwords


async def test_seed_adds_the_callback_of_a_new_address(provider, tmp_path, database_url):
    await seed(provider)
    moved = make_settings(tmp_path, database_url, issuer="http://127.0.0.1:9443")
    other = await open_provider(moved)
    try:
        again = await seed(other)
        assert again.created == () and again.redirect_uri == "http://127.0.0.1:9443/demo/callback"
        async with other.sessions() as db:
            uris = (await db.get(Client, "xyz")).redirect_uris
        assert "http://127.0.0.1:8443/demo/callback" in uris and again.redirect_uri in uris
    finally:
        await other.close()


def test_second_make_run_on_a_busy_port_changes_nothing(tmp_path):
    """Item 13: a second ``bastion serve --dev --demo`` while one runs stops at the busy port
    before touching the data: the running server's demo credentials keep working."""
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_ADMIN_PASSWORD"] = "correct horse battery staple"
    args = [BASTION, "serve", "--dev", "--demo", "--port", str(port), "--data-dir", str(data)]
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.2)
        kept = (data / CREDENTIALS_FILE).read_text()
        secret = json.loads(kept)["client_secret"]

        second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60,
                                check=False)
        assert second.returncode == 1 and "already in use" in second.stderr, second.stderr
        assert secret not in second.stdout + second.stderr
        assert (data / CREDENTIALS_FILE).read_text() == kept
        r = httpx.post(base + "/token", data={"grant_type": "client_credentials",
                                              "scope": "order:view"},
                       auth=("xyz", secret), timeout=10)
        assert r.status_code == 200, r.text
    finally:
        first.terminate()
        first.wait(timeout=15)
