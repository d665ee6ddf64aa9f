"""Bastion's own secrets through the KMS hierarchy (bastion.kms.secrets): signing keys, TOTP
seeds, the audit notary's key, access key secrets and EAB keys are wrapped by the secrets
KMS key, whose material the root keeper wraps; values wrapped by the KEK directly (before)
still open and are moved under the hierarchy."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import update

from bastion.identity import access_keys as ak
from bastion.kms import ciphertext
from bastion.kms import secrets as ks
from bastion.kms.core import Caller
from bastion.kms.filekeeper import FileKeeper
from bastion.kms.keyfile import KeyWrapper, UnwrapError, read_or_create_kek
from bastion.kms.service import KMS
from bastion.oauth.provider import Provider
from bastion.runtime import open_provider
from bastion.store.models import User
from tests.flows import add_user

pytestmark = pytest.mark.anyio


def names_key(blob: bytes, key_id: str) -> int:
    """The secrets-key version a hierarchy-wrapped value names (asserting its key)."""
    assert blob[:1] == ks.FORMAT
    env = ciphertext.parse(blob[1:])
    assert env.key_id == key_id
    return env.version


async def secrets_key(provider: Provider) -> str:
    key_id = await provider.kms.alias(ks.ALIAS)
    assert key_id is not None and provider.wrapper.key_id == key_id  # type: ignore[attr-defined]
    return key_id


async def test_stored_secrets_are_wrapped_by_the_secrets_key(provider: Provider) -> None:
    key_id = await secrets_key(provider)
    for row in await provider.fast.all("SELECT private_key FROM signing_keys"):
        names_key(bytes(row[0]), key_id)
    async with provider.fast.transaction() as tx:
        await provider.notary.signer(tx)
    (audit_key,) = await provider.fast.all("SELECT private_key FROM audit_signing_keys")
    names_key(bytes(audit_key[0]), key_id)
    alice = await add_user(provider)
    async with provider.sessions.begin() as db:
        created = await ak.create_access_key(db, provider.wrapper, user="alice")
        await db.execute(update(User).where(User.id == alice).values(
            totp_secret=provider.wrapper.wrap(b"JBSWY3DPEHPK3PXP", "totp")))
    row = await provider.fast.one("SELECT secret FROM access_keys WHERE id = :id",
                                  id=created.access_key_id)
    assert row is not None
    names_key(bytes(row[0]), key_id)
    record = await ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=0).get(
        created.access_key_id)
    assert record is not None and record.secret == created.secret_access_key.encode()
    totp = await provider.fast.one("SELECT totp_secret FROM users WHERE id = :id", id=alice)
    assert totp is not None
    names_key(bytes(totp[0]), key_id)
    assert provider.wrapper.unwrap(bytes(totp[0]), "totp") == b"JBSWY3DPEHPK3PXP"


async def test_the_secrets_key_is_kept_from_api_callers(provider: Provider) -> None:
    key_id = await secrets_key(provider)
    op = Caller("op", provider.settings.account_id, operator=True)
    policy = json.loads((await provider.kms.call("GetKeyPolicy", {"KeyId": key_id},
                                                 op))["Policy"])
    assert policy["Statement"][0]["Effect"] == "Deny"
    assert "kms:Decrypt" not in policy["Statement"][0]["NotAction"]


async def test_a_reopened_server_reads_its_secrets_with_one_key(provider: Provider) -> None:
    key_id = await secrets_key(provider)
    again = await open_provider(provider.settings)
    try:
        assert again.wrapper.key_id == key_id  # type: ignore[attr-defined]
        assert again.keyring.signing.as_dict(private=False) == \
            provider.keyring.signing.as_dict(private=False)
    finally:
        await again.close()
    tagged = await provider.fast.all("SELECT key_id FROM kms_tags WHERE tag_key = :k AND "
                                     "tag_value = 'secrets'", k="bastion:service")
    assert [str(r[0]) for r in tagged] == [key_id]


async def test_values_wrapped_by_the_kek_open_and_are_moved(provider: Provider) -> None:
    key_id = await secrets_key(provider)
    kek = KeyWrapper(read_or_create_kek(provider.settings.data_dir))
    alice = await add_user(provider)
    async with provider.sessions.begin() as db:
        await db.execute(update(User).where(User.id == alice).values(
            totp_secret=kek.wrap(b"legacy-seed", "totp")))
        legacy_key = await ak.create_access_key(db, kek, user="alice")
    async with provider.fast.transaction() as tx:
        await tx.run("UPDATE signing_keys SET private_key = :p WHERE status = 'next'",
                     p=kek.wrap(b"not a pem", "signing-key"))
    # before the move: the old format still opens
    row = await provider.fast.one("SELECT totp_secret FROM users WHERE id = :id", id=alice)
    assert row is not None and bytes(row[0])[:1] == ks.LEGACY
    assert provider.wrapper.unwrap(bytes(row[0]), "totp") == b"legacy-seed"
    moved = await ks.rewrap_legacy(provider.fast, provider.wrapper,  # type: ignore[arg-type]
                                   force=True)
    assert moved == {"users": 1, "access_keys": 1, "signing_keys": 1}
    row = await provider.fast.one("SELECT totp_secret FROM users WHERE id = :id", id=alice)
    assert row is not None
    names_key(bytes(row[0]), key_id)
    assert provider.wrapper.unwrap(bytes(row[0]), "totp") == b"legacy-seed"
    record = await ak.AccessKeys(provider.fast, provider.wrapper, cache_ttl=0).get(
        legacy_key.access_key_id)
    assert record is not None and record.secret == legacy_key.secret_access_key.encode()
    # the KEK alone no longer opens anything moved
    with pytest.raises(UnwrapError):
        kek.unwrap(bytes(row[0]), "totp")
    # once done, a start does not scan again; a forced pass finds nothing left
    assert await ks.rewrap_legacy(provider.fast, provider.wrapper) == {}  # type: ignore[arg-type]
    assert await ks.rewrap_legacy(provider.fast, provider.wrapper,  # type: ignore[arg-type]
                                  force=True) == {}


async def test_altered_legacy_rows_are_left_for_their_reader(provider: Provider) -> None:
    alice = await add_user(provider)
    stranger = KeyWrapper(os.urandom(32))
    async with provider.sessions.begin() as db:
        await db.execute(update(User).where(User.id == alice).values(
            totp_secret=stranger.wrap(b"planted", "totp")))
    assert await ks.rewrap_legacy(provider.fast, provider.wrapper,  # type: ignore[arg-type]
                                  force=True) == {}
    row = await provider.fast.one("SELECT totp_secret FROM users WHERE id = :id", id=alice)
    assert row is not None
    with pytest.raises(UnwrapError):
        provider.wrapper.unwrap(bytes(row[0]), "totp")


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1:]


@pytest.mark.parametrize("garble", [
    lambda b: b[:-1], lambda b: b[:20], lambda b: b"", lambda b: _flip(b, 1),
    lambda b: _flip(b, 5), lambda b: _flip(b, len(b) - 1), lambda b: b"\x03" + b[1:],
    lambda b: b + b"x", lambda b: b[:18] + b"\x00\x00\x00\x09" + b[22:]],
    ids=["truncated", "header-only", "empty", "format-byte", "key-id", "tag",
         "unknown-format", "appended", "unknown-version"])
async def test_garbled_values_do_not_open(provider: Provider, garble) -> None:  # type: ignore[no-untyped-def]
    blob = provider.wrapper.wrap(b"seed", "totp")
    with pytest.raises(UnwrapError):
        provider.wrapper.unwrap(garble(blob), "totp")


async def test_a_value_moved_to_another_purpose_does_not_open(provider: Provider) -> None:
    blob = provider.wrapper.wrap(b"seed", "totp")
    with pytest.raises(UnwrapError):
        provider.wrapper.unwrap(blob, "signing-key")


async def test_the_database_without_the_root_opens_nothing(provider: Provider) -> None:
    """Every row, every wrapped key version, and a root that is not this one."""
    other = KMS(provider.fast, FileKeeper(KeyWrapper(os.urandom(32))), provider.iam,
                provider.audit, account=provider.settings.account_id, cache_ttl=0)
    with pytest.raises(ks.SecretsUnavailable, match="does not open under"):
        await ks.attach(other, ks.SecretWrapper(os.urandom(32)))
    blob = bytes((await provider.fast.all("SELECT private_key FROM signing_keys"))[0][0])
    with pytest.raises(UnwrapError):
        ks.SecretWrapper(os.urandom(32)).unwrap(blob, "signing-key")


async def test_rotating_the_secrets_key_keeps_old_values(provider: Provider) -> None:
    key_id = await secrets_key(provider)
    old = provider.wrapper.wrap(b"before", "totp")
    op = Caller("op", provider.settings.account_id, operator=True)
    await provider.kms.call("RotateKeyOnDemand", {"KeyId": key_id}, op)
    provider.kms.forget()
    wrapper = provider.wrapper
    assert isinstance(wrapper, ks.SecretWrapper)
    await ks.attach(provider.kms, wrapper)
    new = wrapper.wrap(b"after", "totp")
    assert names_key(old, key_id) == 1 and names_key(new, key_id) == 2
    assert wrapper.unwrap(old, "totp") == b"before" and wrapper.unwrap(new, "totp") == b"after"


async def test_a_disabled_secrets_key_stops_a_start(provider: Provider) -> None:
    key_id = await secrets_key(provider)
    op = Caller("op", provider.settings.account_id, operator=True)
    await provider.kms.call("DisableKey", {"KeyId": key_id}, op)
    with pytest.raises(ks.SecretsUnavailable):
        await open_provider(provider.settings)
    await provider.kms.call("EnableKey", {"KeyId": key_id}, op)
    again = await open_provider(provider.settings)
    await again.close()


async def _rewrap_records(provider: Provider) -> list[dict[str, Any]]:
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'RewrapLegacySecrets' ORDER BY seq")
    return [json.loads(bytes(r[0])) for r in rows]


async def test_the_rewrap_is_audited_once_with_counts_never_a_secret(
        provider: Provider) -> None:
    key_id = await secrets_key(provider)
    assert await _rewrap_records(provider) == []  # a first start finds nothing to move
    kek = KeyWrapper(read_or_create_kek(provider.settings.data_dir))
    alice = await add_user(provider)
    bob = await add_user(provider, "bob")
    async with provider.sessions.begin() as db:
        await db.execute(update(User).where(User.id == alice).values(
            totp_secret=kek.wrap(b"LEGACYSEEDALICE", "totp")))
        await db.execute(update(User).where(User.id == bob).values(  # does not open
            totp_secret=KeyWrapper(os.urandom(32)).wrap(b"LEGACYSEEDBOB", "totp")))
        legacy_key = await ak.create_access_key(db, kek, user="alice")
    async with provider.fast.transaction() as tx:  # the next start's pass runs again
        await tx.run("DELETE FROM kms_tags WHERE key_id = :k AND tag_key = :t", k=key_id,
                     t=ks.DONE_TAG)
    again = await open_provider(provider.settings)  # the re-wrap at start
    await again.close()
    assert await ks.rewrap_legacy(provider.fast, provider.wrapper) == {}  # type: ignore[arg-type]
    again = await open_provider(provider.settings)  # done: not again
    await again.close()
    records = await _rewrap_records(provider)
    assert len(records) == 1
    (record,) = records
    assert record["responseElements"] == {"rewrapped": {"users": 1, "access_keys": 1},
                                          "notRewrapped": {"users": 1}, "total": 2}
    assert record["resources"][0]["ARN"] == provider.kms.key_arn(key_id)
    assert record["userIdentity"] == {"type": "Bastion", "principalId": "bastion:secrets"}
    assert record["eventType"] == "ServiceEvent" and "errorCode" not in record
    text = json.dumps(record)
    for secret in ("LEGACYSEEDALICE", "LEGACYSEEDBOB", legacy_key.secret_access_key):
        assert secret not in text


async def test_an_unreadable_notary_key_is_logged_as_what_wraps_it(
        provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    """The log names the secrets key (not 'the KEK', which no longer wraps it)."""
    stranger = ks.SecretWrapper(os.urandom(32))  # the same key id, other material
    stranger.attach(await secrets_key(provider), {1: AESGCM(os.urandom(32))}, 1)
    async with provider.fast.transaction() as tx:
        await tx.run("INSERT INTO audit_signing_keys (kid, private_key, public_key, status, "
                     "created_at) VALUES ('audit-planted', :p, :pub, 'active', 1)",
                     p=stranger.wrap(os.urandom(32), "audit-checkpoint"), pub=b"\x00" * 32)
    with caplog.at_level(logging.ERROR, logger="bastion"):
        assert "audit-planted" not in await provider.notary.public_keys()
    (message,) = [r.getMessage() for r in caplog.records if "audit-planted" in r.getMessage()]
    assert ks.ALIAS in message and "KEK" not in message
