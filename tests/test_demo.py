"""The demo seed: idempotent, audited, and no password or secret in the trail."""

from __future__ import annotations

import json

import pytest

from bastion.demo import seed
from bastion.runtime import open_provider
from tests.conftest import _reset, make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def provider(tmp_path, database_url):
    settings = make_settings(tmp_path, database_url, issuer="http://127.0.0.1:8443")
    await _reset(settings.effective_database_url)
    p = await open_provider(settings)
    yield p
    await p.close()


async def test_seed_twice_is_audited_without_secrets(provider):
    first = await seed(provider)
    second = await seed(provider)
    await provider.audit.flush()
    records = [json.loads(bytes(r[0])) for r in await provider.fast.all(
        "SELECT body FROM audit_events ORDER BY seq")]
    names = [(r["eventName"], r.get("requestParameters", {}).get("userName"))
             for r in records]
    assert ("CreateUser", "alice") in names and ("ResetPassword", "alice") in names
    assert names.count(("RotateClientSecret", None)) == 2
    blob = json.dumps(records)
    for creds in (first, second):
        assert creds.client_secret not in blob
        assert all(p not in blob for p in creds.passwords.values())
