"""Grants: a grantee runs the granted operations without any policy, within the encryption
context constraints; an explicit Deny still wins; retiring and revoking end it at once;
kms:GrantOperations limits who may grant what."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bastion.kms.errors import KMSError
from bastion.oauth.provider import Provider
from tests.flows import add_user
from tests.kms.conftest import admin_caller, b64, user_caller

pytestmark = pytest.mark.anyio
ACCT = "000000000000"
ALICE = f"arn:bastion:iam::{ACCT}:user/alice"
BOB = f"arn:bastion:iam::{ACCT}:user/bob"


@pytest.fixture
async def users(provider: Provider) -> dict[str, str]:
    return {"alice": await add_user(provider, "alice"), "bob": await add_user(provider, "bob")}


async def admin(p: Provider, op: str, **req: Any) -> dict[str, Any]:
    return await p.kms.call(op, req, admin_caller(p))


async def as_user(p: Provider, users: dict[str, str], name: str, op: str,
                  **req: Any) -> dict[str, Any]:
    return await p.kms.call(op, req, user_caller(p, users[name], name))


async def code_of(p: Provider, users: dict[str, str], name: str, op: str, **req: Any) -> str:
    with pytest.raises(KMSError) as info:
        await as_user(p, users, name, op, **req)
    return info.value.code


async def test_grant_allows_grantee_within_constraints(provider, users):
    key = (await admin(provider, "CreateKey"))["KeyMetadata"]["KeyId"]
    ctx = {"tenant": "acme"}
    req = {"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": ctx}
    assert await code_of(provider, users, "bob", "Encrypt", **req) == "AccessDeniedException"
    grant = await admin(provider, "CreateGrant", KeyId=key, GranteePrincipal=BOB,
                        RetiringPrincipal=ALICE, Operations=["Encrypt", "Decrypt"],
                        Constraints={"EncryptionContextSubset": ctx}, Name="bob-grant")
    assert grant["GrantToken"] and len(grant["GrantId"]) == 64
    blob = (await as_user(provider, users, "bob", "Encrypt", **req))["CiphertextBlob"]
    await as_user(provider, users, "bob", "Encrypt", KeyId=key, Plaintext=b64(b"x"),
                  EncryptionContext={"tenant": "acme", "more": "ok"})  # a superset
    for other in ({}, {"tenant": "evil"}):
        assert await code_of(provider, users, "bob", "Encrypt", KeyId=key,
                             Plaintext=b64(b"x"), EncryptionContext=other) == \
            "AccessDeniedException"
    await as_user(provider, users, "bob", "Decrypt", CiphertextBlob=blob, EncryptionContext=ctx)
    assert await code_of(provider, users, "bob", "GenerateDataKey", KeyId=key,
                         KeySpec="AES_256", EncryptionContext=ctx) == "AccessDeniedException"
    assert await code_of(provider, users, "alice", "Encrypt", **req) == "AccessDeniedException"
    # the same request with the same Name is idempotent
    again = await admin(provider, "CreateGrant", KeyId=key, GranteePrincipal=BOB,
                        RetiringPrincipal=ALICE, Operations=["Encrypt", "Decrypt"],
                        Constraints={"EncryptionContextSubset": ctx}, Name="bob-grant")
    assert again["GrantId"] == grant["GrantId"]

    listed = (await admin(provider, "ListGrants", KeyId=key))["Grants"]
    assert [(g["GrantId"], g["GranteePrincipal"], g["Operations"]) for g in listed] == [
        (grant["GrantId"], BOB, ["Encrypt", "Decrypt"])]
    retirable = (await admin(provider, "ListRetirableGrants", RetiringPrincipal=ALICE))
    assert [g["GrantId"] for g in retirable["Grants"]] == [grant["GrantId"]]

    # bob (grantee without RetireGrant) may not retire it; alice (retiring principal) may
    assert await code_of(provider, users, "bob", "RetireGrant",
                         GrantToken=grant["GrantToken"]) == "AccessDeniedException"
    await as_user(provider, users, "alice", "RetireGrant", KeyId=key, GrantId=grant["GrantId"])
    assert await code_of(provider, users, "bob", "Encrypt", **req) == "AccessDeniedException"
    assert (await admin(provider, "ListGrants", KeyId=key))["Grants"] == []


async def test_equals_constraint_and_revoke(provider, users):
    key = (await admin(provider, "CreateKey"))["KeyMetadata"]["KeyId"]
    g = await admin(provider, "CreateGrant", KeyId=key, GranteePrincipal=BOB,
                    Operations=["GenerateDataKey"],
                    Constraints={"EncryptionContextEquals": {"a": "1"}})
    await as_user(provider, users, "bob", "GenerateDataKey", KeyId=key, KeySpec="AES_256",
                  EncryptionContext={"a": "1"})
    assert await code_of(provider, users, "bob", "GenerateDataKey", KeyId=key,
                         KeySpec="AES_256", EncryptionContext={"a": "1", "b": "2"}) == \
        "AccessDeniedException"
    await admin(provider, "RevokeGrant", KeyId=key, GrantId=g["GrantId"])
    assert await code_of(provider, users, "bob", "GenerateDataKey", KeyId=key,
                         KeySpec="AES_256", EncryptionContext={"a": "1"}) == \
        "AccessDeniedException"
    with pytest.raises(KMSError) as info:
        await admin(provider, "RevokeGrant", KeyId=key, GrantId=g["GrantId"])
    assert info.value.code == "NotFoundException"


async def test_explicit_deny_beats_a_grant(provider, users):
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:bastion:iam::{ACCT}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": BOB}, "Action": "kms:Encrypt",
         "Resource": "*"}]}
    key = (await admin(provider, "CreateKey", Policy=json.dumps(policy)))["KeyMetadata"]["KeyId"]
    await admin(provider, "CreateGrant", KeyId=key, GranteePrincipal=BOB,
                Operations=["Encrypt"])
    assert await code_of(provider, users, "bob", "Encrypt", KeyId=key,
                         Plaintext=b64(b"x")) == "AccessDeniedException"


@pytest.mark.parametrize(("req", "code"), [
    ({"GranteePrincipal": BOB, "Operations": ["Sign"]}, "ValidationException"),
    ({"GranteePrincipal": BOB, "Operations": []}, "ValidationException"),
    ({"GranteePrincipal": BOB, "Operations": ["Fly"]}, "ValidationException"),
    ({"GranteePrincipal": "bob", "Operations": ["Encrypt"]}, "InvalidArnException"),
    ({"Operations": ["Encrypt"]}, "ValidationException"),
    ({"GranteePrincipal": BOB, "Operations": ["Encrypt"],
      "Constraints": {"EncryptionContextEquals": {"a": "1"},
                      "EncryptionContextSubset": {"a": "1"}}}, "ValidationException"),
    ({"GranteePrincipal": BOB, "Operations": ["Encrypt"], "Name": "bad name"},
     "ValidationException"),
], ids=["sign-on-symmetric", "no-operations", "unknown-operation", "grantee-not-arn",
        "no-grantee", "two-constraints", "bad-name"])
async def test_create_grant_bad_input(provider, req, code):
    key = (await admin(provider, "CreateKey"))["KeyMetadata"]["KeyId"]
    with pytest.raises(KMSError) as info:
        await admin(provider, "CreateGrant", KeyId=key, **req)
    assert info.value.code == code
    assert (await admin(provider, "ListGrants", KeyId=key))["Grants"] == []


async def test_grant_operations_condition_limits_granting(provider, users):
    key = (await admin(provider, "CreateKey"))["KeyMetadata"]["KeyId"]
    await provider.iam_admin.put_inline("user", "alice", "grants", {
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "kms:CreateGrant", "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"kms:GrantOperations": [
                "Decrypt", "DescribeKey"]}}}]})
    assert await code_of(provider, users, "alice", "CreateGrant", KeyId=key,
                         GranteePrincipal=BOB, Operations=["Decrypt", "Encrypt"]) == \
        "AccessDeniedException"
    await as_user(provider, users, "alice", "CreateGrant", KeyId=key, GranteePrincipal=BOB,
                  Operations=["Decrypt"])
    # a grant with CreateGrant lets its grantee grant only what it holds itself
    await admin(provider, "CreateGrant", KeyId=key, GranteePrincipal=BOB,
                Operations=["CreateGrant", "DescribeKey"])
    await as_user(provider, users, "bob", "CreateGrant", KeyId=key, GranteePrincipal=ALICE,
                  Operations=["DescribeKey"])
    assert await code_of(provider, users, "bob", "CreateGrant", KeyId=key,
                         GranteePrincipal=ALICE, Operations=["Encrypt"]) == \
        "AccessDeniedException"


async def test_key_deletion_removes_grants(provider, users):
    key = (await admin(provider, "CreateKey"))["KeyMetadata"]["KeyId"]
    await admin(provider, "CreateGrant", KeyId=key, GranteePrincipal=BOB,
                Operations=["DescribeKey"], RetiringPrincipal=ALICE)
    out = await admin(provider, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=7)
    await provider.kms.purge_deleted(now=int(out["DeletionDate"] * 1000) + 1)
    assert (await admin(provider, "ListRetirableGrants", RetiringPrincipal=ALICE))[
        "Grants"] == []
