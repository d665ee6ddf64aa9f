"""Access keys on the real database (SQLite and PostgreSQL): shapes, owners, IAM's two-key
limit, the secret stored only wrapped (bound to its key id), status changes, and the
verifier's cached view of them with botocore-signed requests."""

from __future__ import annotations

import base64
import time

import pytest
from sqlalchemy import select, update

from bastion.edge import sigv4
from bastion.edge.sigv4 import SigV4Verifier
from bastion.identity import access_keys as ak
from bastion.identity.users import IdentityError
from bastion.oauth.provider import Provider
from bastion.store.kv import MemoryKV
from bastion.store.models import AccessKey
from tests.edge.test_sigv4 import botocore_signed
from tests.flows import add_client, add_user

pytestmark = pytest.mark.anyio


def test_shapes() -> None:
    ids = {ak.new_access_key_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(ak.ACCESS_KEY_ID_RE.fullmatch(i) and i.startswith("AKIA") and len(i) == 20
               for i in ids)
    assert ak.new_access_key_id(temporary=True).startswith("ASIA")
    secret = ak.new_secret_access_key()
    assert len(secret) == 40 and len(base64.b64decode(secret)) == 30


async def create(p: Provider, **owner: str) -> ak.CreatedKey:
    async with p.sessions.begin() as db:
        return await ak.create_access_key(db, p.wrapper, **owner)


async def test_create_for_user_and_client(provider: Provider) -> None:
    user_id = await add_user(provider, "alice")
    client = await add_client(provider)
    key = await create(provider, user="alice")
    assert (key.owner_kind, key.owner_id, key.owner_name) == ("user", user_id, "alice")
    assert key.secret_access_key not in repr(key)
    svc = await create(provider, client=client.client_id)
    assert (svc.owner_kind, svc.owner_id) == ("client", client.client_id)
    async with provider.sessions() as db:
        listed = await ak.list_access_keys(db)
        mine = await ak.list_access_keys(db, user="alice")
    assert {r["AccessKeyId"] for r in listed} == {key.access_key_id, svc.access_key_id}
    assert [r["Owner"] for r in mine] == ["alice"]
    assert all("SecretAccessKey" not in r for r in listed)


async def test_secret_is_stored_wrapped_and_bound_to_its_id(provider: Provider) -> None:
    await add_user(provider, "alice")
    first, second = await create(provider, user="alice"), await create(provider, user="alice")
    async with provider.sessions() as db:
        rows = {r.id: r for r in (await db.scalars(select(AccessKey))).all()}
    stored = rows[first.access_key_id].secret
    assert first.secret_access_key.encode() not in stored
    keys = ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=0)
    record = await keys.get(first.access_key_id)
    assert record is not None and record.secret == first.secret_access_key.encode()
    # a wrapped secret moved to another row does not open there: the key fails closed
    async with provider.sessions.begin() as db:
        await db.execute(update(AccessKey).where(AccessKey.id == second.access_key_id)
                         .values(secret=stored))
    assert await keys.get(second.access_key_id) is None


async def test_two_keys_per_owner(provider: Provider) -> None:
    await add_user(provider, "alice")
    await create(provider, user="alice")
    await create(provider, user="alice")
    with pytest.raises(IdentityError, match="already has 2 access keys"):
        await create(provider, user="alice")


@pytest.mark.parametrize("owner", [{}, {"user": "alice", "client": "c"}, {"user": "nobody"},
                                   {"client": "nobody"}], ids=["none", "both", "no-user",
                                                               "no-client"])
async def test_bad_owners(provider: Provider, owner: dict[str, str]) -> None:
    await add_user(provider, "alice")
    with pytest.raises(IdentityError):
        await create(provider, **owner)


@pytest.mark.parametrize("key_id", ["", "AKIA", "akiaaaaaaaaaaaaaaaaa", "AKIA" + "1" * 16,
                                    "AKIA" + "A" * 17, "AKIA" + "A" * 15 + "\n"])
async def test_malformed_ids_are_refused(provider: Provider, key_id: str) -> None:
    async with provider.sessions.begin() as db:
        with pytest.raises(IdentityError):
            await ak.set_status(db, key_id, ak.INACTIVE)
    assert await ak.AccessKeys(provider.fast, provider.wrapper).get(key_id) is None


async def test_status_and_delete(provider: Provider) -> None:
    await add_user(provider, "alice")
    key = await create(provider, user="alice")
    keys = ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=60)
    assert (await keys.get(key.access_key_id)).active  # type: ignore[union-attr]
    async with provider.sessions.begin() as db:
        await ak.set_status(db, key.access_key_id, ak.INACTIVE)
        with pytest.raises(IdentityError):
            await ak.set_status(db, key.access_key_id, "Disabled")
    # cached for its TTL (another process's change), then seen; invalidate sees it at once
    assert (await keys.get(key.access_key_id)).active  # type: ignore[union-attr]
    keys.invalidate(key.access_key_id)
    assert not (await keys.get(key.access_key_id)).active  # type: ignore[union-attr]
    async with provider.sessions.begin() as db:
        await ak.delete_access_key(db, key.access_key_id)
        with pytest.raises(IdentityError, match="no such access key"):
            await ak.delete_access_key(db, key.access_key_id)
    keys.invalidate()
    assert await keys.get(key.access_key_id) is None


async def test_unknown_ids_are_cached_apart(provider: Provider) -> None:
    await add_user(provider, "alice")
    keys = ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=60)
    created = await create(provider, user="alice")
    assert await keys.get(created.access_key_id) is not None
    for _ in range(3):
        assert await keys.get(ak.new_access_key_id()) is None
    assert len(keys._unknown) == 3 and created.access_key_id in keys._known


async def test_touch_records_last_use_once_per_period(provider: Provider) -> None:
    await add_user(provider, "alice")
    key = await create(provider, user="alice")
    keys = ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=0)
    record = await keys.get(key.access_key_id)
    assert record is not None
    await keys.touch(record, "kms", "us-east-1")
    async with provider.sessions() as db:
        row = await db.get(AccessKey, key.access_key_id)
        assert row is not None and row.last_used_service == "kms"
        first = row.last_used_at
    assert first is not None and abs(first - time.time()) < 5
    await keys.touch(record, "kms", "eu-west-1")  # within the period: no write
    async with provider.sessions() as db:
        row = await db.get(AccessKey, key.access_key_id)
        assert row is not None and row.last_used_region == "us-east-1"


async def test_verifier_over_stored_keys(provider: Provider) -> None:
    """botocore signs with the pair the CLI printed; the verifier reads the stored key."""
    await add_user(provider, "alice")
    key = await create(provider, user="alice")
    keys = ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=0)
    verifier = SigV4Verifier(keys, MemoryKV(), service="kms")
    record = ak.AccessKeyRecord(key.access_key_id, "user", key.owner_id,
                                key.secret_access_key.encode(), True)
    verified = await verifier.verify(*botocore_signed(record))
    assert verified.key.id == key.access_key_id and verified.key.owner_kind == "user"
    async with provider.sessions.begin() as db:
        await ak.set_status(db, key.access_key_id, ak.INACTIVE)
    with pytest.raises(sigv4.UnrecognizedClient):
        await verifier.verify(*botocore_signed(record, body=b"{}"))


async def _role(p: Provider, name: str = "worker", max_session: int = 3600) -> None:
    trust = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": '
             '"sts:AssumeRole", "Principal": {"AWS": "arn:bastion:iam::000000000000:root"}}]}')
    await p.iam_admin.create_role(name, trust, max_session_duration=max_session)


async def test_role_session_keys(provider: Provider) -> None:
    await _role(provider)
    async with provider.sessions.begin() as db:
        key = await ak.create_session_key(db, provider.wrapper, "worker", "job-1", 900)
    assert key.access_key_id.startswith("ASIA") and key.session_token
    assert key.expires_at == key.created_at + 900
    assert key.session_token not in repr(key) and key.secret_access_key not in repr(key)
    keys = ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=0)
    record = await keys.get(key.access_key_id)
    assert record is not None and record.temporary and record.session == {"name": "job-1"}
    verifier = SigV4Verifier(keys, MemoryKV(), service="kms")
    signing = ak.AccessKeyRecord(key.access_key_id, "role", "worker",
                                 key.secret_access_key.encode(), True)
    assert await verifier.verify(*botocore_signed(signing, token=key.session_token))
    with pytest.raises(sigv4.UnrecognizedClient):
        await verifier.verify(*botocore_signed(signing, body=b"{}"))
    late = SigV4Verifier(keys, MemoryKV(), service="kms", max_skew=3600,
                         clock=lambda: time.time() + 901)
    with pytest.raises(sigv4.ExpiredToken):
        await late.verify(*botocore_signed(signing, token=key.session_token, body=b"[]"))
    # temporary keys do not count against the owner's two long-term keys
    async with provider.sessions.begin() as db:
        for name in ("job-2", "job-3"):
            await ak.create_session_key(db, provider.wrapper, "worker", name, 900)


@pytest.mark.parametrize(("args", "message"), [
    (("nobody", "s1", 900), "no such role"),
    (("worker", "x", 900), "session name"),
    (("worker", "bad name", 900), "session name"),
    (("worker", "s1", 899), "duration"),
    (("worker", "s1", 3601), "duration"),
])
async def test_role_session_refusals(provider: Provider, args: tuple[str, str, int],
                                     message: str) -> None:
    await _role(provider)
    async with provider.sessions.begin() as db:
        with pytest.raises(IdentityError, match=message):
            await ak.create_session_key(db, provider.wrapper, *args)


async def test_role_session_policy_is_validated(provider: Provider) -> None:
    await _role(provider)
    async with provider.sessions.begin() as db:
        with pytest.raises(IdentityError, match="session policy"):
            await ak.create_session_key(db, provider.wrapper, "worker", "s1", 900, "{nope")


async def test_expired_session_keys_are_deleted(provider: Provider) -> None:
    await _role(provider)
    async with provider.sessions.begin() as db:
        old = await ak.create_session_key(db, provider.wrapper, "worker", "old", 900)
        await db.execute(update(AccessKey).where(AccessKey.id == old.access_key_id)
                         .values(expires_at=int(time.time()) - 1))
    async with provider.sessions.begin() as db:
        await ak.create_session_key(db, provider.wrapper, "worker", "new", 900)
    async with provider.sessions() as db:
        assert await db.get(AccessKey, old.access_key_id) is None
