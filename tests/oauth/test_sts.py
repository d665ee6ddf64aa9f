"""Role assumption (AWS STS AssumeRole semantics within one account)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.flows import bearer, tokens_for, works

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
    ({"Policy": "x" * 3000}, "PackedPolicyTooLarge"),
    ({"Policy": "x" * 5000}, "ValidationError"),  # over the per-parameter cap of params.py
], ids=["action", "other-account", "not-arn", "user-arn", "short-session", "bad-session",
        "short-duration", "long-duration", "duration-nan", "policy-json", "policy-grammar",
        "policy-size", "param-size"])
async def test_bad_input(provider, http, alice, reader, params, code):
    r = await assume(http, mint(provider, alice), **params)
    assert r.status_code == 400, r.text
    assert r.json()["Error"]["Code"] == code
    assert (await last_assume_record(provider))["errorCode"] == code


async def test_unknown_role_is_access_denied(provider, http, alice):
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403


async def test_needs_a_bearer_token(http):
    r = await http.post("/sts", data={"Action": "AssumeRole"})
    assert r.status_code == 401


# --- issue 8 item 1: the trust decision is one evaluation (Principal, Action, Condition) ----

READER_SESSION = f"arn:bastion:sts::{ACCT}:assumed-role/reader/job-1"
ADMIN_ROLE = f"arn:bastion:iam::{ACCT}:role/boss"


def mint_with(provider: Any, subject: str, ttl: int = 300, **extra: Any) -> str:
    return provider.tokens.access_token(subject=subject, client_id="sts-test",
                                        audience=provider.api_audience,
                                        scope="order:view order:create", ttl=ttl,
                                        extra=extra or None).token


def statement(principal: str, action: str = "sts:AssumeRole", **more: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, **more}]}


async def last_assume_record(provider: Any) -> dict[str, Any]:
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'AssumeRole' ORDER BY seq")
    assert rows, "no AssumeRole audit record"
    record: dict[str, Any] = json.loads(bytes(rows[-1][0]))
    return record


MFA = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}


def with_account_statement(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the common delegation statement: the account may assume the role if its identity
    policies allow (alice has none here)."""
    doc["Statement"].append({"Effect": "Allow", "Principal": {"AWS": f"arn:bastion:iam::"
                                                             f"{ACCT}:root"},
                             "Action": "sts:AssumeRole"})
    return doc


async def test_trust_condition_mfa_required_refuses_password_only_caller(provider, http, alice):
    await provider.iam_admin.create_role(
        "reader", with_account_statement(statement(ALICE, Condition=MFA)))
    r = await assume(http, mint_with(provider, alice, amr=["pwd"]))
    assert r.status_code == 403 and r.json()["Error"]["Code"] == "AccessDenied"
    record = await last_assume_record(provider)
    assert record["errorCode"] == "AccessDenied"
    # the same statement lets the caller in with a second factor
    assert (await assume(http, mint_with(provider, alice, amr=["pwd", "otp"]))).status_code \
        == 200


async def test_trust_statement_for_tag_session_only_does_not_allow_assume_role(
        provider, http, alice):
    await provider.iam_admin.create_role(
        "reader", with_account_statement(statement(ALICE, "sts:TagSession")))
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403
    # with an identity policy, the account statement does let her in (delegation)
    await provider.iam_admin.put_inline("user", "alice", "MayAssume", {
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE}]})
    assert (await assume(http, mint(provider, alice))).status_code == 200


async def test_trust_deny_statement_wins_over_allow_naming_caller(provider, http, alice):
    doc = statement(ALICE)
    doc["Statement"].append({"Effect": "Deny", "Principal": {"AWS": ALICE},
                             "Action": "sts:AssumeRole"})
    await provider.iam_admin.create_role("reader", doc)
    assert (await assume(http, mint(provider, alice))).status_code == 403


async def _chain_setup(provider: Any) -> None:
    """reader trusts alice; boss trusts reader's role ARN and has AdministratorAccess."""
    await provider.iam_admin.create_role("reader", trust(ALICE))
    await provider.iam_admin.attach("role", "reader", "BastionOrdersRead")
    await provider.iam_admin.create_role("boss", trust(ROLE))
    await provider.iam_admin.attach("role", "boss", "AdministratorAccess")


async def _session(http: Any, token: str, **params: str) -> str:
    r = await assume(http, token, **params)
    assert r.status_code == 200, r.text
    access: str = r.json()["Credentials"]["AccessToken"]
    return access


async def test_role_chaining_refused_by_session_policy(provider, http, alice):
    """A session limited to orders:ListOrders cannot assume a role that trusts its role."""
    await _chain_setup(provider)
    only_list = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}]})
    limited = await _session(http, mint(provider, alice), Policy=only_list)
    r = await assume(http, limited, RoleArn=ADMIN_ROLE, RoleSessionName="escape")
    assert r.status_code == 403, r.text
    record = await last_assume_record(provider)
    assert record["errorCode"] == "AccessDenied"
    assert "session policy" in record["errorMessage"]
    # without a session policy, the trust naming the role is enough
    free = await _session(http, mint(provider, alice))
    assert (await assume(http, free, RoleArn=ADMIN_ROLE,
                         RoleSessionName="chain")).status_code == 200


async def test_role_chaining_refused_by_permissions_boundary(provider, http, alice):
    await _chain_setup(provider)
    await provider.iam_admin.set_boundary("role", "reader", "BastionOrdersRead")
    bounded = await _session(http, mint(provider, alice))
    assert (await http.get("/orders", headers=bearer(bounded))).status_code == 200
    r = await assume(http, bounded, RoleArn=ADMIN_ROLE, RoleSessionName="escape")
    assert r.status_code == 403, r.text


async def test_trust_naming_session_arn_directly_is_not_limited_by_session_policy(
        provider, http, alice):
    """AWS: a resource-based (trust) policy naming the session ARN itself is not limited by
    the session policy or the boundary."""
    await provider.iam_admin.create_role("reader", trust(ALICE))
    await provider.iam_admin.create_role("boss", trust(READER_SESSION))
    only_list = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}]})
    limited = await _session(http, mint(provider, alice), Policy=only_list)
    assert (await assume(http, limited, RoleArn=ADMIN_ROLE,
                         RoleSessionName="named")).status_code == 200


async def test_account_trust_refused_when_session_policy_does_not_allow(provider, http, alice):
    await provider.iam_admin.create_role("reader", trust(ALICE))
    await provider.iam_admin.create_role("boss", trust(f"arn:bastion:iam::{ACCT}:root"))
    await provider.iam_admin.put_inline("role", "reader", "MayAssume", {
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ADMIN_ROLE}]})
    only_list = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}]})
    limited = await _session(http, mint(provider, alice), Policy=only_list)
    assert (await assume(http, limited, RoleArn=ADMIN_ROLE,
                         RoleSessionName="x1")).status_code == 403
    free = await _session(http, mint(provider, alice))
    assert (await assume(http, free, RoleArn=ADMIN_ROLE, RoleSessionName="x2")).status_code \
        == 200


async def test_identity_policy_alone_does_not_assume_role(provider, http, alice):
    """The trust policy must allow: an identity allow for a role that trusts someone else
    is not enough."""
    await provider.iam_admin.create_role("reader", trust(f"arn:bastion:iam::{ACCT}:user/bob"))
    await provider.iam_admin.put_inline("user", "alice", "MayAssume", {
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]})
    assert (await assume(http, mint(provider, alice))).status_code == 403


async def test_chained_session_keeps_mfa_for_trust_conditions(provider, http, alice):
    await provider.iam_admin.create_role("reader", trust(ALICE))
    await provider.iam_admin.create_role("boss", statement(ROLE, Condition=MFA))
    with_mfa = await _session(http, mint_with(provider, alice, amr=["pwd", "otp"]))
    assert (await assume(http, with_mfa, RoleArn=ADMIN_ROLE,
                         RoleSessionName="m1")).status_code == 200
    without = await _session(http, mint_with(provider, alice, amr=["pwd"]))
    assert (await assume(http, without, RoleArn=ADMIN_ROLE,
                         RoleSessionName="m2")).status_code == 403


# --- issue 8 items 11/12: every refusal audited; strict parsing -------------------------

@pytest.mark.parametrize("params,code", [
    ({"DurationSeconds": "\u0663\u0666\u0660\u0660"}, "ValidationError"),  # Arabic-Indic 3600
    ({"DurationSeconds": "\uff13\uff16\uff10\uff10"}, "ValidationError"),  # fullwidth 3600
    ({"DurationSeconds": "+3600"}, "ValidationError"),
    ({"DurationSeconds": " 3600"}, "ValidationError"),
    ({"DurationSeconds": "3600\n"}, "ValidationError"),
    ({"RoleSessionName": "job-1\n"}, "ValidationError"),
    ({"RoleSessionName": "j\u00f6b-1"}, "ValidationError"),
    ({"RoleArn": ROLE + "\n"}, "ValidationError"),
    ({"RoleArn": f"arn:bastion:iam::{ACCT}:role/r\u0435ader"}, "ValidationError"),  # Cyrillic e
], ids=["arabic-indic-digits", "fullwidth-digits", "plus-sign", "leading-space",
        "duration-newline", "session-newline", "session-unicode", "arn-newline",
        "arn-lookalike"])
async def test_lookalike_and_trailing_newline_inputs_refused_and_audited(
        provider, http, alice, reader, params, code):
    r = await assume(http, mint(provider, alice), **params)
    assert r.status_code == 400, r.text
    assert r.json()["Error"]["Code"] == code
    assert (await last_assume_record(provider))["errorCode"] == code


async def test_every_validation_error_is_an_audit_record(provider, http, alice, reader):
    r = await assume(http, mint(provider, alice), Action="GetCallerIdentity")
    assert r.status_code == 400
    record = await last_assume_record(provider)
    assert record["errorCode"] == "InvalidAction"
    assert record["requestParameters"]["roleArn"] == ROLE


async def test_repeated_parameter_refused(provider, http, alice, reader):
    body = (f"Action=AssumeRole&RoleArn={ROLE}&RoleSessionName=a1&RoleSessionName=a2")
    r = await http.post("/sts", content=body, headers={
        **bearer(mint(provider, alice)), "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["Error"]["Code"] == "ValidationError"
    assert (await last_assume_record(provider))["errorCode"] == "ValidationError"


async def test_oversized_body_refused_before_parsing(provider, http, alice, reader):
    body = "Action=AssumeRole&" + "&".join(f"x{i}=" + "y" * 1000 for i in range(100))
    r = await http.post("/sts", content=body, headers={
        **bearer(mint(provider, alice)), "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert r.json()["Error"]["Code"] == "RequestEntityTooLarge"
    assert (await last_assume_record(provider))["errorCode"] == "RequestEntityTooLarge"


async def test_wrong_content_type_refused(provider, http, alice, reader):
    r = await http.post("/sts", json={"Action": "AssumeRole"},
                        headers=bearer(mint(provider, alice)))
    assert r.status_code == 400 and r.json()["Error"]["Code"] == "ValidationError"


# --- issue 8 item 4: STS credentials die with their grant and their parents ---------------

async def _claims(provider: Any, token: str) -> dict[str, Any]:
    claims: dict[str, Any] = (await provider.verifier.verify(token)).claims
    return claims


@pytest.fixture
async def chain_roles(provider: Any) -> None:
    """reader trusts alice; boss trusts reader's role; both read orders."""
    await provider.iam_admin.create_role("reader", trust(ALICE))
    await provider.iam_admin.attach("role", "reader", "BastionOrdersRead")
    await provider.iam_admin.create_role("boss", trust(ROLE))
    await provider.iam_admin.attach("role", "boss", "BastionOrdersRead")


async def _granted_session_and_child(http: Any, app: Any) -> tuple[dict[str, Any], str, str]:
    grant = await tokens_for(http, app)
    session = await _session(http, grant["access_token"])
    child = await _session(http, session, RoleArn=ADMIN_ROLE, RoleSessionName="child")
    assert await works(http, session) and await works(http, child)
    return grant, session, child


async def test_sts_token_denied_after_parent_refresh_token_revoked(provider, http, app,
                                                                   chain_roles):
    grant, session, child = await _granted_session_and_child(http, app)
    rows = await provider.fast.all(
        "SELECT jti, family_id FROM issued_access_tokens WHERE jti IN (:a, :b, :c)",
        a=(await _claims(provider, grant["access_token"]))["jti"],
        b=(await _claims(provider, session))["jti"], c=(await _claims(provider, child))["jti"])
    assert len(rows) == 3 and len({r["family_id"] for r in rows}) == 1  # one family
    r = await http.post("/revoke", data={"token": grant["refresh_token"]},
                        auth=(app.client_id, app.secret))
    assert r.status_code == 200
    assert not await works(http, session)
    assert not await works(http, child)


async def test_sts_token_denied_after_logout(provider, http, app, chain_roles):
    grant, session, child = await _granted_session_and_child(http, app)
    r = await http.get("/logout", params={"id_token_hint": grant["id_token"]})
    assert r.status_code in (200, 303)
    assert not await works(http, session)
    assert not await works(http, child)


async def test_child_session_revoked_with_its_parent_session(provider, http, app, chain_roles):
    """Revoking the parent session's access token alone (RFC 7009) denies its children."""
    _, session, child = await _granted_session_and_child(http, app)
    r = await http.post("/revoke", data={"token": session, "token_type_hint": "access_token"},
                        auth=(app.client_id, app.secret))
    assert r.status_code == 200
    assert not await works(http, session)
    assert not await works(http, child)
    # and the child cannot mint a grandchild either
    r = await assume(http, child, RoleArn=ADMIN_ROLE, RoleSessionName="grandchild")
    assert r.status_code == 403
    assert "revoked" in (await last_assume_record(provider))["errorMessage"]


async def test_child_of_familyless_token_revoked_with_its_parent(provider, http, alice,
                                                                 chain_roles):
    parent = mint(provider, alice)
    session = await _session(http, parent)
    child = await _session(http, session, RoleArn=ADMIN_ROLE, RoleSessionName="child")
    jti = (await _claims(provider, parent))["jti"]
    async with provider.fast.transaction() as tx:
        await provider.denylist.revoke(tx, [(jti, int(time.time()) + 300)])
    assert not await works(http, session)
    assert not await works(http, child)


@pytest.mark.parametrize("parents", [["x"] * 17, "abc", [1], []],
                         ids=["too-many", "not-a-list", "not-strings", "empty"])
async def test_malformed_parent_list_fails_closed(provider, http, alice, chain_roles,
                                                  parents):
    forged = provider.tokens.access_token(
        subject=READER_SESSION, client_id="sts-test", audience=provider.api_audience,
        scope="order:view", ttl=300,
        extra={"principal_arn": READER_SESSION, "sts_parents": parents}).token
    assert not await works(http, forged)


async def test_session_lifetime_capped_by_parent_and_key_retention(provider, http, alice):
    await provider.iam_admin.create_role("reader", trust(ALICE), max_session_duration=43200)
    parent = mint_with(provider, alice, ttl=300)
    r = await assume(http, parent, DurationSeconds="3600")
    assert r.status_code == 200, r.text
    child = await _claims(provider, r.json()["Credentials"]["AccessToken"])
    assert child["exp"] <= (await _claims(provider, parent))["exp"]
    long_parent = mint_with(provider, alice, ttl=86400)
    r = await assume(http, long_parent, DurationSeconds="43200")
    assert r.status_code == 200, r.text
    claims = await _claims(provider, r.json()["Credentials"]["AccessToken"])
    assert claims["exp"] - claims["iat"] <= provider.settings.max_jwt_ttl


async def test_session_of_revoked_family_is_not_minted(provider, http, app, chain_roles):
    grant = await tokens_for(http, app)
    fam = await provider.fast.one("SELECT family_id FROM issued_access_tokens WHERE jti = :j",
                                  j=(await _claims(provider, grant["access_token"]))["jti"])
    # the family is revoked but this instance's denylist has not heard yet
    async with provider.fast.transaction() as tx:
        await tx.run("UPDATE token_families SET revoked_at = 1 WHERE id = :f",
                     f=fam["family_id"])
    r = await assume(http, grant["access_token"])
    assert r.status_code == 403
    assert "revoked" in (await last_assume_record(provider))["errorMessage"]
