"""Who may use a key: the key policy (resource-based, IAM grammar) combined with identity
policies as AWS KMS does, and the kms: condition keys. Real IAM users, policies stored
through IamAdmin, decisions by the IAM engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bastion.kms.errors import KMSError
from bastion.oauth.provider import Provider
from tests.flows import add_user
from tests.kms.conftest import admin_caller, b64, unb64, user_caller

pytestmark = pytest.mark.anyio
ACCT = "000000000000"
ALICE = f"arn:bastion:iam::{ACCT}:user/alice"
BOB = f"arn:bastion:iam::{ACCT}:user/bob"
ROOT = f"arn:bastion:iam::{ACCT}:root"


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions: Any, principal: str | None = None, resource: str = "*",
          condition: dict[str, Any] | None = None, effect: str = "Allow") -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": effect, "Action": actions, "Resource": resource}
    if principal is not None:
        st["Principal"] = {"AWS": principal}
    if condition:
        st["Condition"] = condition
    return st


@pytest.fixture
async def alice(provider: Provider) -> str:
    return await add_user(provider, "alice")


async def key(p: Provider, key_policy: str | None = None) -> str:
    req = {} if key_policy is None else {"Policy": key_policy}
    return str((await p.kms.call("CreateKey", req, admin_caller(p)))["KeyMetadata"]["KeyId"])


async def identity(p: Provider, *statements: dict[str, Any]) -> None:
    await p.iam_admin.put_inline("user", "alice", "kms", policy(*statements))


async def as_alice(p: Provider, alice: str, op: str, **req: Any) -> dict[str, Any]:
    return await p.kms.call(op, req, user_caller(p, alice, "alice"))


async def denied(p: Provider, alice: str, op: str, **req: Any) -> str:
    with pytest.raises(KMSError) as info:
        await as_alice(p, alice, op, **req)
    assert info.value.code == "AccessDeniedException", info.value.message
    assert ALICE in info.value.message and f"kms:{op}" in info.value.message
    return info.value.message


async def test_default_key_policy_delegates_to_identity_policies(provider, alice):
    k = await key(provider)
    msg = await denied(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"x"))
    assert msg.endswith("the key policy delegates to IAM and no identity-based policy allows "
                        "the action")
    await denied(provider, alice, "CreateKey")
    await identity(provider, allow(["kms:Encrypt"], resource=f"arn:bastion:kms::{ACCT}:key/*"))
    out = await as_alice(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"x"))
    await denied(provider, alice, "Decrypt", CiphertextBlob=out["CiphertextBlob"])
    await denied(provider, alice, "CreateKey")
    await identity(provider, allow(["kms:Encrypt", "kms:Decrypt", "kms:CreateKey"]))
    back = await as_alice(provider, alice, "Decrypt", CiphertextBlob=out["CiphertextBlob"])
    assert unb64(back["Plaintext"]) == b"x"
    created = await as_alice(provider, alice, "CreateKey")
    assert created["KeyMetadata"]["KeyState"] == "Enabled"


async def test_key_policy_without_delegation_ignores_identity_policies(provider, alice):
    await add_user(provider, "bob")
    k = await key(provider, policy(allow("kms:*", BOB)))
    await identity(provider, allow("kms:*"))
    msg = await denied(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"x"))
    assert msg.endswith("because the key policy does not allow the action")
    await denied(provider, alice, "DescribeKey", KeyId=k)


async def test_key_policy_naming_the_user_allows_without_identity_policy(provider, alice):
    k = await key(provider, policy(allow(["kms:Encrypt", "kms:Decrypt"], ALICE)))
    out = await as_alice(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"direct"))
    back = await as_alice(provider, alice, "Decrypt", CiphertextBlob=out["CiphertextBlob"])
    assert unb64(back["Plaintext"]) == b"direct"
    await denied(provider, alice, "DisableKey", KeyId=k)  # not in the key policy


async def test_explicit_deny_in_key_policy_wins(provider, alice):
    k = await key(provider, policy(allow("kms:*", ROOT),
                                   allow("kms:Decrypt", ALICE, effect="Deny")))
    await identity(provider, allow("kms:*"))
    out = await as_alice(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"x"))
    await denied(provider, alice, "Decrypt", CiphertextBlob=out["CiphertextBlob"])


async def test_denied_change_changes_nothing_and_is_audited(provider, alice):
    k = await key(provider)
    await denied(provider, alice, "DisableKey", KeyId=k)
    meta = (await provider.kms.call("DescribeKey", {"KeyId": k},
                                    admin_caller(provider)))["KeyMetadata"]
    assert meta["KeyState"] == "Enabled"
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'DisableKey' ORDER BY seq")
    record = json.loads(bytes(rows[-1][0]))
    assert record["errorCode"] == "AccessDeniedException"
    assert record["userIdentity"]["arn"] == ALICE


@pytest.mark.parametrize(("context", "ok"), [
    ({"tenant": "acme"}, True), ({"tenant": "evil"}, False), ({}, False),
    ({"tenant": "acme", "extra": "1"}, True)])
async def test_encryption_context_condition(provider, alice, context, ok):
    k = await key(provider)
    await identity(provider, allow("kms:Encrypt", condition={
        "StringEquals": {"kms:EncryptionContext:tenant": "acme"}}))
    req = {"KeyId": k, "Plaintext": b64(b"x"), "EncryptionContext": context}
    if ok:
        await as_alice(provider, alice, "Encrypt", **req)
    else:
        await denied(provider, alice, "Encrypt", **req)


@pytest.mark.parametrize(("context", "ok"), [
    ({"tenant": "a"}, True), ({"tenant": "a", "other": "b"}, False)])
async def test_encryption_context_keys_condition(provider, alice, context, ok):
    k = await key(provider)
    await identity(provider, allow("kms:Encrypt", condition={
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant"]},
        "Null": {"kms:EncryptionContextKeys": "false"}}))
    req = {"KeyId": k, "Plaintext": b64(b"x"), "EncryptionContext": context}
    if ok:
        await as_alice(provider, alice, "Encrypt", **req)
    else:
        await denied(provider, alice, "Encrypt", **req)


async def test_via_service_and_caller_account(provider, alice):
    k = await key(provider, policy(allow("kms:Encrypt", ALICE, condition={
        "StringEquals": {"kms:ViaService": "orders.bastion", "kms:CallerAccount": ACCT}})))
    req = {"KeyId": k, "Plaintext": b64(b"x")}
    await denied(provider, alice, "Encrypt", **req)
    via = user_caller(provider, alice, "alice", via_service="orders.bastion")
    await provider.kms.call("Encrypt", req, via)
    other = user_caller(provider, alice, "alice", via_service="evil.bastion")
    with pytest.raises(KMSError) as info:
        await provider.kms.call("Encrypt", req, other)
    assert info.value.code == "AccessDeniedException"


async def test_request_alias_condition(provider, alice):
    k = await key(provider)
    await provider.kms.call("CreateAlias", {"AliasName": "alias/app", "TargetKeyId": k},
                            admin_caller(provider))
    await identity(provider, allow("kms:Encrypt", condition={
        "StringEquals": {"kms:RequestAlias": "alias/app"}}))
    await as_alice(provider, alice, "Encrypt", KeyId="alias/app", Plaintext=b64(b"x"))
    await denied(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"x"))


async def test_unknown_or_disabled_principal_is_denied(provider, alice):
    k = await key(provider)
    await identity(provider, allow("kms:*"))
    ghost = user_caller(provider, "no-such-user-id", "ghost")
    with pytest.raises(KMSError) as info:
        await provider.kms.call("Encrypt", {"KeyId": k, "Plaintext": b64(b"x")}, ghost)
    assert info.value.code == "AccessDeniedException"


async def test_put_key_policy_changes_access(provider, alice):
    k = await key(provider)
    await denied(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"x"))
    await provider.kms.call("PutKeyPolicy", {"KeyId": k, "PolicyName": "default", "Policy":
                                             policy(allow("kms:Encrypt", ALICE))},
                            admin_caller(provider))
    await as_alice(provider, alice, "Encrypt", KeyId=k, Plaintext=b64(b"x"))
