"""Role assumption (AWS STS AssumeRole semantics within one account)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.flows import bearer

pytestmark = pytest.mark.anyio

ACCT = "000000000000"
ALICE = f"arn:bastion:iam::{ACCT}:user/alice"
ROLE = f"arn:bastion:iam::{ACCT}:role/reader"


def mint(provider: Any, subject: str, roles: tuple[str, ...] = ()) -> str:
    return provider.tokens.access_token(subject=subject, client_id="sts-test",
                                        audience=provider.api_audience,
                                        scope="order:view order:create", ttl=300,
                                        roles=roles).token


def trust(principal: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]}


async def assume(http: Any, token: str, **params: str) -> Any:
    data = {"Action": "AssumeRole", "RoleArn": ROLE, "RoleSessionName": "job-1", **params}
    return await http.post("/sts", data=data, headers=bearer(token))


@pytest.fixture
async def reader(provider: Any) -> None:
    await provider.iam_admin.create_role("reader", trust(ALICE))
    await provider.iam_admin.attach("role", "reader", "BastionOrdersRead")


async def test_assume_role_named_in_trust(provider, http, alice, reader):
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 200, r.text
    body = r.json()
    session = f"arn:bastion:sts::{ACCT}:assumed-role/reader/job-1"
    assert body["AssumedRoleUser"]["Arn"] == session
    token = body["Credentials"]["AccessToken"]
    claims = (await provider.verifier.verify(token)).claims
    assert claims["sub"] == session and claims["act"] == {"sub": ALICE}
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200
    # the role reads, it does not create
    assert (await http.post("/orders", json={"item": "x", "quantity": 1,
                                             "unit_price_cents": 1},
                            headers=bearer(token))).status_code == 403
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'AssumeRole'")
    assert json.loads(bytes(rows[-1][0]))["responseElements"]["assumedRoleUser"] == session


async def test_account_trust_delegates_to_identity_policies(provider, http, alice):
    await provider.iam_admin.create_role("reader", trust(f"arn:bastion:iam::{ACCT}:root"))
    token = mint(provider, alice)
    assert (await assume(http, token)).status_code == 403
    await provider.iam_admin.put_inline("user", "alice", "MayAssume", {
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE}]})
    assert (await assume(http, token)).status_code == 200


async def test_trust_not_naming_caller_is_denied(provider, http, alice):
    await provider.iam_admin.create_role("reader", trust(f"arn:bastion:iam::{ACCT}:user/bob"))
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403 and r.json()["Error"]["Code"] == "AccessDenied"


async def test_session_policy_intersects(provider, http, alice, reader):
    only_get = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "orders:GetOrder", "Resource": "*"}]})
    r = await assume(http, mint(provider, alice), Policy=only_get)
    assert r.status_code == 200, r.text
    token = r.json()["Credentials"]["AccessToken"]
    # ListOrders: the role allows it, the session policy does not
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403


@pytest.mark.parametrize("params,code", [
    ({"Action": "GetCallerIdentity"}, "InvalidAction"),
    ({"RoleArn": "arn:bastion:iam::111111111111:role/reader"}, "ValidationError"),
    ({"RoleArn": "not-an-arn"}, "ValidationError"),
    ({"RoleArn": f"arn:bastion:iam::{ACCT}:user/alice"}, "ValidationError"),
    ({"RoleSessionName": "x"}, "ValidationError"),
    ({"RoleSessionName": "bad name!"}, "ValidationError"),
    ({"DurationSeconds": "60"}, "ValidationError"),
    ({"DurationSeconds": "999999"}, "ValidationError"),
    ({"DurationSeconds": "soon"}, "ValidationError"),
    ({"Policy": "{not json"}, "MalformedPolicyDocument"),
    ({"Policy": json.dumps({"Statement": [{"Effect": "Maybe"}]})}, "MalformedPolicyDocument"),
    ({"Policy": "x" * 5000}, "PackedPolicyTooLarge"),
], ids=["action", "other-account", "not-arn", "user-arn", "short-session", "bad-session",
        "short-duration", "long-duration", "duration-nan", "policy-json", "policy-grammar",
        "policy-size"])
async def test_bad_input(provider, http, alice, reader, params, code):
    r = await assume(http, mint(provider, alice), **params)
    assert r.status_code == 400, r.text
    assert r.json()["Error"]["Code"] == code


async def test_unknown_role_is_access_denied(provider, http, alice):
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403


async def test_needs_a_bearer_token(http):
    r = await http.post("/sts", data={"Action": "AssumeRole"})
    assert r.status_code == 401
