"""Attacks on the STS trust decision and on the admin API's ``bastion:admin`` scope gate,
driven over HTTP like an outside caller who has read the code.

Each test is named after the attack and passes when Bastion refuses it. Three attacks
succeeded when first written (a region in ``RoleArn`` dodging a Deny on the role, ``simulate``
authorized on a fixed ARN instead of the simulated principal's, a NUL in an admin path
reaching PostgreSQL before the scope gate); they are fixed and kept here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.flows import add_client, add_user, authorize, bearer, tokens_for

pytestmark = pytest.mark.anyio

ACCT = "000000000000"
ALICE = f"arn:bastion:iam::{ACCT}:user/alice"
READER = f"arn:bastion:iam::{ACCT}:role/reader"
BOSS = f"arn:bastion:iam::{ACCT}:role/boss"
ROOT = f"arn:bastion:iam::{ACCT}:root"
V = "2012-10-17"
MFA = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}
ALL = {"Version": V, "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
DOC = {"Version": V, "Statement": [
    {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}]}
ONLY_LIST = json.dumps(DOC)


# --- helpers -----------------------------------------------------------------------------

def mint(provider: Any, subject: str, *, scope: str = "order:view order:create",
         roles: tuple[str, ...] = (), ttl: int = 300, **extra: Any) -> str:
    """An access token as the token endpoint would issue it (tests/oauth/test_sts.py)."""
    return provider.tokens.access_token(subject=subject, client_id="attack-test",
                                        audience=provider.api_audience, scope=scope,
                                        ttl=ttl, roles=roles, extra=extra or None).token


def trust(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": V, "Statement": list(statements)}


def allow(principal: Any, action: Any = "sts:AssumeRole", **more: Any) -> dict[str, Any]:
    key = more.pop("key", "Principal")
    st: dict[str, Any] = {"Effect": "Allow", key: principal, **more}
    if action is not None:
        st["Action"] = action
    return st


def aws(arn: Any) -> dict[str, Any]:
    return {"AWS": arn}


async def assume(http: Any, token: str, role: str = READER, name: str = "job-1",
                 **params: str) -> Any:
    data = {"Action": "AssumeRole", "RoleArn": role, "RoleSessionName": name, **params}
    return await http.post("/sts", data=data, headers=bearer(token))


async def session(http: Any, token: str, role: str = READER, name: str = "job-1",
                  **params: str) -> str:
    r = await assume(http, token, role, name, **params)
    assert r.status_code == 200, r.text
    access: str = r.json()["Credentials"]["AccessToken"]
    return access


async def claims(provider: Any, token: str) -> dict[str, Any]:
    out: dict[str, Any] = (await provider.verifier.verify(token)).claims
    return out


async def may_assume(provider: Any, kind: str, name: str, resource: Any = "*",
                     deny: Any = None, not_resource: bool = False) -> None:
    """An identity policy allowing sts:AssumeRole (optionally with an explicit deny)."""
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": "sts:AssumeRole",
         ("NotResource" if not_resource else "Resource"): resource}]
    if deny is not None:
        statements.append({"Effect": "Deny", "Action": "sts:AssumeRole", "Resource": deny})
    await provider.iam_admin.put_inline(kind, name, "MayAssume",
                                        {"Version": V, "Statement": statements})


async def admin_api_refuses(http: Any, token: str) -> bool:
    """Whether every admin-API write and read of ``token`` is refused (and nothing changed)."""
    h = bearer(token)
    listed = await http.get("/admin/iam/policies", headers=h)
    created = await http.post("/admin/iam/policies", headers=h,
                              json={"name": "Pwned", "document": ALL})
    return listed.status_code in (401, 403) and created.status_code in (401, 403)


# --- STS: the trust statement must match on Principal, Action and Condition ---------------

async def test_uppercase_user_arn_in_trust_does_not_match_lowercase_user(provider, http,
                                                                          alice):
    """ARNs compare case-sensitively: a trust naming user/ALICE does not name alice."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(
        f"arn:bastion:iam::{ACCT}:user/ALICE"))))
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403 and r.json()["Error"]["Code"] == "AccessDenied"


@pytest.mark.parametrize("action", [
    "sts:AssumeRoleWithWebIdentity", "sts:AssumeRoleWithSAML", "sts:TagSession",
    "sts:AssumeRol", "sts:AssumeRole?"],
    ids=["web-identity", "saml", "tag-session", "truncated", "one-more-char"])
async def test_trust_for_a_lookalike_action_does_not_allow_assume_role(provider, http,
                                                                       alice, action):
    """A statement naming alice for an action whose name merely starts like (or resembles)
    sts:AssumeRole does not apply to AssumeRole."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE), action)))
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403, r.text


@pytest.mark.parametrize("not_action", ["sts:AssumeRole", "STS:ASSUMEROLE", "sts:*", "*",
                                        ["sts:TagSession", "sts:Assume*"]],
                         ids=["exact", "case", "service-wildcard", "everything", "list"])
async def test_trust_with_not_action_covering_assume_role_does_not_allow(provider, http,
                                                                          alice, not_action):
    await provider.iam_admin.create_role("reader", trust(
        allow(aws(ALICE), None, NotAction=not_action)))
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403, r.text


async def test_allow_not_principal_trust_only_delegates_to_identity_policies(provider,
                                                                            http, alice):
    """Allow + NotPrincipal reaches the unlisted only as broadly as the account: without an
    identity policy alice may not assume; bob, listed with his account (AWS's NotPrincipal
    rule: a request is made as the user and as its account), may not even with one."""
    listed = [f"arn:bastion:iam::{ACCT}:user/bob", ROOT]
    await provider.iam_admin.create_role("reader", trust(
        allow(aws(listed), key="NotPrincipal")))
    token = mint(provider, alice)
    assert (await assume(http, token)).status_code == 403
    bob = await add_user(provider, "bob", roles=())
    await may_assume(provider, "user", "bob")
    assert (await assume(http, mint(provider, bob))).status_code == 403
    await may_assume(provider, "user", "alice")
    assert (await assume(http, token)).status_code == 200


@pytest.mark.parametrize("principal", ["*", {"AWS": "*"}, {"AWS": ["*"]}, {"AWS": ACCT},
                                       {"AWS": ROOT}],
                         ids=["star", "aws-star", "aws-star-list", "account-id", "root"])
async def test_wildcard_or_account_principal_in_trust_only_delegates(provider, http, alice,
                                                                      principal):
    await provider.iam_admin.create_role("reader", trust(allow(principal)))
    r = await assume(http, mint(provider, alice))
    assert r.status_code == 403, r.text


async def test_wildcard_account_principal_arn_is_refused_at_write_time(provider):
    from bastion.iam.admin import IamError

    for principal in ("arn:bastion:iam::*:user/alice", f"arn:bastion:iam::{ACCT}:user/*",
                      f"arn:bastion:iam::{ACCT}:user/al?ce"):
        with pytest.raises(IamError) as err:
            await provider.iam_admin.create_role("reader", trust(allow(aws(principal))))
        assert err.value.code == "MalformedPolicyDocument"


@pytest.mark.parametrize("condition", [
    {"BoolIfExists": {"aws:MultiFactorAuthPresent": "true"}},
    {"Bool": {"aws:multifactorauthpresent": "true"}},
    {"StringEquals": {"aws:MultiFactorAuthPresent": "true"}},
    {"Null": {"aws:MultiFactorAuthPresent": "true"}},
], ids=["bool-if-exists", "key-case", "string-equals", "null-key-missing"])
async def test_wildcard_account_principal_in_trust_does_not_bypass_mfa(provider, http, alice,
                                                                       condition):
    """Every MFA-requiring condition shape refuses a password-only caller, whether the
    statement names her directly or the account trusts her identity policies."""
    await provider.iam_admin.create_role("reader", trust(
        allow(aws(ALICE), Condition=condition), allow("*", Condition=condition)))
    await may_assume(provider, "user", "alice")
    r = await assume(http, mint(provider, alice, amr=["pwd"]))
    assert r.status_code == 403, r.text


async def test_user_carrying_role_in_token_claim_is_not_that_role_for_trust(provider, http):
    """A trust naming role/order:view is about sessions of that role, not about users whose
    token's roles claim lists it."""
    alice = await add_user(provider, "alice", roles=("order:view",))
    await provider.iam_admin.create_role("boss", trust(allow(aws(
        f"arn:bastion:iam::{ACCT}:role/order:view"))))
    await provider.iam_admin.attach("role", "boss", "AdministratorAccess")
    r = await assume(http, mint(provider, alice, roles=("order:view",)), BOSS)
    assert r.status_code == 403, r.text


@pytest.mark.parametrize("role_arn", [
    f"arn:bastion:iam::{ACCT}:role/BOSS",
    f"arn:bastion:IAM::{ACCT}:role/boss",
    f"arn:BASTION:iam::{ACCT}:role/boss",
    f"arn:aws:iam::{ACCT}:role/boss",
    f"arn:bastion:iam::{ACCT}:role/x/boss",
    f"arn:bastion:iam::{ACCT}:Role/boss",
], ids=["name-case", "service-case", "partition-case", "aws-partition", "path",
        "kind-case"])
async def test_role_arn_case_and_shape_variants_do_not_reach_the_role(provider, http, alice,
                                                                      role_arn):
    """Alice may assume any role except boss (explicit deny); no spelling of boss's ARN
    reaches boss while slipping past the deny."""
    await provider.iam_admin.create_role("boss", trust(allow(aws(ROOT))))
    await provider.iam_admin.attach("role", "boss", "AdministratorAccess")
    await may_assume(provider, "user", "alice", deny=BOSS)
    r = await assume(http, mint(provider, alice), role_arn)
    assert r.status_code != 200, r.text


@pytest.mark.parametrize("region", ["x", "us-east-1", "*"])
async def test_region_in_role_arn_does_not_bypass_explicit_deny(provider, http, alice, region):
    await provider.iam_admin.create_role("boss", trust(allow(aws(ROOT))))
    await provider.iam_admin.attach("role", "boss", "AdministratorAccess")
    await may_assume(provider, "user", "alice", deny=BOSS)
    # the plain ARN is denied, as the policy says
    assert (await assume(http, mint(provider, alice), BOSS)).status_code == 403
    r = await assume(http, mint(provider, alice), f"arn:bastion:iam:{region}:{ACCT}:role/boss")
    assert r.status_code != 200, r.text


async def test_region_in_role_arn_does_not_bypass_not_resource(provider, http, alice):
    await provider.iam_admin.create_role("boss", trust(allow(aws(ROOT))))
    await may_assume(provider, "user", "alice", resource=BOSS, not_resource=True)
    assert (await assume(http, mint(provider, alice), BOSS)).status_code == 403
    r = await assume(http, mint(provider, alice), f"arn:bastion:iam:x:{ACCT}:role/boss")
    assert r.status_code != 200, r.text


# --- STS: role chaining cannot shed the session policy or the boundary ----------------------

async def test_session_cannot_reassume_own_role_to_shed_session_policy(provider, http, alice):
    """reader trusts alice and its own role: a session limited to ListOrders cannot re-assume
    reader (without the session policy) through the role statement."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE)),
                                                         allow(aws(READER))))
    await provider.iam_admin.attach("role", "reader", "BastionOrdersRead")
    limited = await session(http, mint(provider, alice), Policy=ONLY_LIST)
    r = await assume(http, limited, READER, "fresh")
    assert r.status_code == 403, r.text


async def test_three_hop_chain_cannot_shed_a_boundary_through_account_trust(provider, http,
                                                                           alice):
    """reader (boundary: orders read) → mid (trusts the account; reader's identity policy
    allows it) is refused by the boundary; so is boss, one more hop away."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE))))
    await provider.iam_admin.create_role("mid", trust(allow(aws(ROOT)), allow(aws(READER))))
    await provider.iam_admin.create_role("boss", trust(allow(aws(
        f"arn:bastion:iam::{ACCT}:role/mid"))))
    await provider.iam_admin.attach("role", "boss", "AdministratorAccess")
    await may_assume(provider, "role", "reader")
    await provider.iam_admin.set_boundary("role", "reader", "BastionOrdersRead")
    bounded = await session(http, mint(provider, alice))
    r = await assume(http, bounded, f"arn:bastion:iam::{ACCT}:role/mid", "hop2")
    assert r.status_code == 403, r.text


@pytest.mark.parametrize("target_trust", ["session-arn", "role", "account"])
async def test_session_policy_explicit_deny_blocks_every_kind_of_trust(provider, http, alice,
                                                                       target_trust):
    """An explicit Deny of sts:AssumeRole in the session policy wins, even over a trust
    statement naming the session ARN directly (which an implicit deny would not stop)."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE))))
    await may_assume(provider, "role", "reader")
    principal = {"session-arn": f"arn:bastion:sts::{ACCT}:assumed-role/reader/job-1",
                 "role": READER, "account": ROOT}[target_trust]
    await provider.iam_admin.create_role("boss", trust(allow(aws(principal))))
    policy = json.dumps({"Version": V, "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "sts:AssumeRole", "Resource": "*"}]})
    limited = await session(http, mint(provider, alice), Policy=policy)
    r = await assume(http, limited, BOSS, "hop2")
    assert r.status_code == 403, r.text


@pytest.mark.parametrize("policy", [
    "{}", '{"Version": "2012-10-17", "Statement": []}', "null", "[]", '"x"', "0",
    json.dumps({"Version": V, "Statement": [{"Effect": "Allow", "Principal": "*",
                                             "Action": "*", "Resource": "*"}]}),
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"}]}',
], ids=["empty-object", "no-statements", "null", "array", "string", "number", "principal",
        "no-resource"])
async def test_degenerate_session_policy_is_refused_not_ignored(provider, http, alice,
                                                                policy):
    """A session policy that would compile to "no session policy" (or is not one) must be
    refused, never silently dropped, which would hand out the role's full permissions."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE))))
    await provider.iam_admin.attach("role", "reader", "BastionOrdersRead")
    r = await assume(http, mint(provider, alice), Policy=policy)
    assert r.status_code == 400, r.text
    assert r.json()["Error"]["Code"] in ("MalformedPolicyDocument", "ValidationError")


async def test_mfa_not_forged_through_three_hop_chain(provider, http, alice):
    """A password-only caller chains reader → mid (trust names the session directly) → boss
    (requires MFA of the role mid): no hop adds a second factor."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE))))
    await provider.iam_admin.create_role("mid", trust(allow(aws(
        f"arn:bastion:sts::{ACCT}:assumed-role/reader/job-1"))))
    await provider.iam_admin.create_role("boss", trust(allow(aws(
        f"arn:bastion:iam::{ACCT}:role/mid"), Condition=MFA)))
    s1 = await session(http, mint(provider, alice, amr=["pwd"]))
    s2 = await session(http, s1, f"arn:bastion:iam::{ACCT}:role/mid", "hop2")
    assert (await claims(provider, s2)).get("amr") == ["pwd"]
    r = await assume(http, s2, BOSS, "hop3")
    assert r.status_code == 403, r.text
    # with a second factor at the start, the same chain goes through
    m1 = await session(http, mint(provider, alice, amr=["pwd", "otp"]))
    m2 = await session(http, m1, f"arn:bastion:iam::{ACCT}:role/mid", "hop2")
    assert (await assume(http, m2, BOSS, "hop3")).status_code == 200


async def test_self_trusting_role_cannot_chain_forever_or_outlive_its_parent(provider, http,
                                                                           alice):
    await provider.iam_admin.create_role("loop", trust(allow(aws(ALICE)), allow(aws(
        f"arn:bastion:iam::{ACCT}:role/loop"))), max_session_duration=43200)
    loop = f"arn:bastion:iam::{ACCT}:role/loop"
    token = mint(provider, alice, ttl=1200)
    exp = (await claims(provider, token))["exp"]
    refused_at = None
    for hop in range(1, 20):
        r = await assume(http, token, loop, f"hop{hop}", DurationSeconds="43200")
        if r.status_code != 200:
            refused_at = hop
            break
        token = r.json()["Credentials"]["AccessToken"]
        child = (await claims(provider, token))["exp"]
        assert child <= exp, "a chained session outlives its parent"
        exp = child
    assert refused_at is not None and refused_at <= 9, refused_at


async def test_session_name_colliding_with_a_user_does_not_impersonate_her(provider, http,
                                                                          alice):
    """bob names his session "alice": the session stays bob's (act.sub), and a trust that
    ties the session name to the caller's username (sts:RoleSessionName) refuses him."""
    bob = await add_user(provider, "bob", roles=())
    bob_arn = f"arn:bastion:iam::{ACCT}:user/bob"
    await provider.iam_admin.create_role("reader", trust(allow(aws([ALICE, bob_arn]))))
    await provider.iam_admin.create_role("boss", trust(allow(aws([ALICE, bob_arn]), Condition={
        "StringEquals": {"sts:RoleSessionName": "${aws:username}"}})))
    s = await session(http, mint(provider, bob), READER, "alice")
    got = await claims(provider, s)
    assert got["act"]["sub"] == bob_arn and got["sub"].endswith("/reader/alice")
    r = await assume(http, mint(provider, bob), BOSS, "alice")
    assert r.status_code == 403, r.text


async def test_session_of_deleted_role_is_refused(provider, http, alice):
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE)), allow(aws(READER))))
    await provider.iam_admin.attach("role", "reader", "BastionOrdersRead")
    s = await session(http, mint(provider, alice))
    assert (await http.get("/orders", headers=bearer(s))).status_code == 200
    await provider.iam_admin.detach("role", "reader", "BastionOrdersRead")
    await provider.iam_admin.delete_role("reader")
    assert (await http.get("/orders", headers=bearer(s))).status_code == 403
    assert (await assume(http, s, READER, "again")).status_code == 403


@pytest.mark.parametrize("duration", ["1_000", "900.0", "9e2", "-900", "0x384", "0",
                                      "0000900", "43201", "00000000900"],
                         ids=["underscore", "decimal", "exponent", "negative", "hex", "zero",
                              "seven-digits", "over-max", "eleven-digits"])
async def test_duration_seconds_edge_values_refused(provider, http, alice, duration):
    await provider.iam_admin.create_role("reader", trust(allow(aws(ALICE))),
                                         max_session_duration=43200)
    r = await assume(http, mint(provider, alice, ttl=86400), DurationSeconds=duration)
    assert r.status_code == 400, r.text
    assert r.json()["Error"]["Code"] == "ValidationError"


async def test_session_of_client_credentials_token_dies_when_parent_revoked(provider, http,
                                                                           app):
    """A client_credentials token has no family; revoking it (RFC 7009) still denies the
    sessions minted from it, at the edge and at /sts."""
    await provider.iam_admin.create_role("reader", trust(allow(aws(
        f"arn:bastion:iam::{ACCT}:client/{app.client_id}"))))
    await provider.iam_admin.attach("role", "reader", "BastionOrdersRead")
    r = await http.post("/token", data={"grant_type": "client_credentials",
                                        "scope": "order:view"},
                        auth=(app.client_id, app.secret))
    assert r.status_code == 200, r.text
    parent = r.json()["access_token"]
    child = await session(http, parent)
    assert (await http.get("/orders", headers=bearer(child))).status_code == 200
    r = await http.post("/revoke", data={"token": parent, "token_type_hint": "access_token"},
                        auth=(app.client_id, app.secret))
    assert r.status_code == 200
    assert (await http.get("/orders", headers=bearer(child))).status_code == 401
    assert (await assume(http, child, READER, "again")).status_code in (401, 403)


# --- the admin API needs the bastion:admin scope ----------------------------------------------

async def test_sts_session_of_admin_role_minted_without_admin_scope_is_not_admin(provider,
                                                                                http, alice):
    """A token alice gave a third-party client (scope openid) assumes ops, a role that
    trusts her and holds AdministratorAccess plus an unconditional allow-all: the session
    keeps scope openid and is no IAM-admin credential."""
    await provider.iam_admin.create_role("ops", trust(allow(aws(ALICE))))
    await provider.iam_admin.attach("role", "ops", "AdministratorAccess")
    await provider.iam_admin.put_inline("role", "ops", "Everything", ALL)
    s = await session(http, mint(provider, alice, scope="openid"),
                      f"arn:bastion:iam::{ACCT}:role/ops")
    assert "bastion:admin" not in (await claims(provider, s))["scope"].split()
    assert await admin_api_refuses(http, s)
    r = await http.post("/admin/iam/users/alice/policies/AdministratorAccess",
                        headers=bearer(s))
    assert r.status_code == 403
    assert (await provider.iam_admin.principal("user", "alice"))["attached_policies"] == []


async def test_openid_token_of_admin_cannot_assume_builtin_admin_role(provider, http):
    """The bootstrap admin role trusts the account (delegation); the admin's identity policy
    AdministratorAccess needs bastion:admin, so an openid token cannot assume it."""
    root = await add_user(provider, "root", roles=("admin",))
    r = await assume(http, mint(provider, root, scope="openid", roles=("admin",)),
                     f"arn:bastion:iam::{ACCT}:role/admin")
    assert r.status_code == 403, r.text


async def test_target_role_boundary_caps_admin_session_even_with_admin_scope(provider, http,
                                                                            alice):
    await provider.iam_admin.create_role("boss", trust(allow(aws(ALICE))))
    await provider.iam_admin.attach("role", "boss", "AdministratorAccess")
    await provider.iam_admin.set_boundary("role", "boss", "BastionOrdersRead")
    s = await session(http, mint(provider, alice, scope="bastion:admin"), BOSS)
    assert await admin_api_refuses(http, s)


@pytest.mark.parametrize("policy", [
    {"Version": V, "Statement": [{"Effect": "Allow", "Action": ["iam:Get*", "iam:List*"],
                                  "Resource": "*"}]},
    {"Version": V, "Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]},
], ids=["read-only", "not-action-iam"])
async def test_session_policy_caps_admin_session_on_admin_api(provider, http, alice, policy):
    await provider.iam_admin.create_role("boss", trust(allow(aws(ALICE))))
    await provider.iam_admin.attach("role", "boss", "AdministratorAccess")
    s = await session(http, mint(provider, alice, scope="bastion:admin"), BOSS,
                      Policy=json.dumps(policy))
    r = await http.post("/admin/iam/policies", headers=bearer(s),
                        json={"name": "Pwned", "document": ALL})
    assert r.status_code == 403, r.text
    r = await http.post("/admin/iam/users/alice/policies/AdministratorAccess",
                        headers=bearer(s))
    assert r.status_code == 403, r.text


async def test_client_credentials_client_with_admin_role_but_no_admin_scope_is_refused(
        provider, http):
    """A service account holding the admin role and an unconditional allow-all policy, but
    not registered for bastion:admin, is no IAM admin."""
    svc = await add_client(provider, roles=["admin"],
                           scopes=["order:view", "order:create"])
    await provider.iam_admin.put_inline("client", svc.client_id, "Everything", ALL)
    r = await http.post("/token", data={"grant_type": "client_credentials"},
                        auth=(svc.client_id, svc.secret))
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert await admin_api_refuses(http, token)
    r = await http.post("/token", data={"grant_type": "client_credentials",
                                        "scope": "bastion:admin"},
                        auth=(svc.client_id, svc.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("body", [
    "grant_type=client_credentials&scope=bastion:admin%20",
    "grant_type=client_credentials&scope=%20bastion:admin",
    "grant_type=client_credentials&scope=BASTION:ADMIN",
    "grant_type=client_credentials&scope=order:view%09bastion:admin",
    "grant_type=client_credentials&scope=order:view%C2%A0bastion:admin",
    "grant_type=client_credentials&scope=order:view%0Abastion:admin",
    "grant_type=client_credentials&scope=order:view%E2%80%A8bastion:admin",
    "grant_type=client_credentials&scope=order:view%1Fbastion:admin",
    "grant_type=client_credentials&scope=order:view&scope=bastion:admin",
    "grant_type=client_credentials&scope=&scope=bastion:admin",
    "grant_type=client_credentials&scope%5B%5D=bastion:admin",
    "grant_type=client_credentials&scope=bastion%3Aadmin",
], ids=["trailing-space", "leading-space", "upper", "tab", "nbsp", "newline",
        "line-separator", "unit-separator", "repeated", "empty-then-admin", "array",
        "encoded-colon"])
async def test_scope_string_tricks_cannot_obtain_admin_scope(provider, http, body):
    """Whatever the /token endpoint makes of a scope string, the token it issues never
    carries bastion:admin (the verifier splits on any whitespace) for a client that is not
    registered for it."""
    svc = await add_client(provider, roles=["admin"], scopes=["order:view", "order:create"])
    r = await http.post("/token", content=body, auth=(svc.client_id, svc.secret),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    if r.status_code == 200:
        token = r.json()["access_token"]
        assert "bastion:admin" not in (await provider.verifier.verify(token)).scopes
        assert await admin_api_refuses(http, token)
    else:
        assert r.status_code == 400, r.text


async def test_scope_as_json_array_is_not_accepted_by_token_endpoint(provider, http):
    svc = await add_client(provider, roles=["admin"], scopes=["order:view"])
    r = await http.post("/token", json={"grant_type": "client_credentials",
                                        "scope": ["bastion:admin"]},
                        auth=(svc.client_id, svc.secret))
    assert r.status_code == 400, r.text
    assert "access_token" not in r.json()


@pytest.fixture
async def admin_client(provider: Any) -> Any:
    """A client an operator registered for bastion:admin (a legitimate admin console)."""
    return await add_client(provider, scopes=["openid", "profile", "offline_access",
                                              "order:view", "bastion:admin"])


@pytest.mark.parametrize("scope", ["openid bastion:admin", "bastion:admin",
                                   "openid order:view\u00a0bastion:admin",
                                   "openid order:view offline_access bastion:admin"],
                         ids=["add", "only-admin", "nbsp-smuggled", "superset"])
async def test_refresh_grant_cannot_widen_scope_to_admin(provider, http, admin_client, scope):
    """The user consented to openid order:view for the admin console; a refresh cannot add
    bastion:admin to the grant."""
    await add_user(provider, "root", roles=("admin",))
    grant = await tokens_for(http, admin_client, scope="openid order:view offline_access",
                             username="root")
    r = await http.post("/token", data={"grant_type": "refresh_token",
                                        "refresh_token": grant["refresh_token"],
                                        "scope": scope},
                        auth=(admin_client.client_id, admin_client.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text
    assert await admin_api_refuses(http, grant["access_token"])


async def test_prompt_none_cannot_add_admin_scope_without_fresh_consent(provider, http,
                                                                       admin_client):
    await add_user(provider, "root", roles=("admin",))
    await tokens_for(http, admin_client, scope="openid order:view", username="root")
    res = await authorize(http, admin_client, scope="openid bastion:admin", username="root",
                          extra={"prompt": "none"})
    assert res.code == "", res.params
    assert res.params.get("error") == "consent_required", res.params


async def test_silent_reauthorization_with_admin_scope_goes_through_consent(provider, http,
                                                                           admin_client):
    """Without prompt=none, the wider request stops at the consent page (not a code)."""
    await add_user(provider, "root", roles=("admin",))
    await tokens_for(http, admin_client, scope="openid order:view", username="root")
    from tests.flows import pkce
    _, challenge = pkce()
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": admin_client.client_id,
        "redirect_uri": admin_client.redirect_uri, "scope": "openid bastion:admin",
        "state": "s", "nonce": "n", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert r.status_code in (302, 303)
    assert r.headers["location"].startswith("/consent"), r.headers["location"]


async def test_client_not_registered_for_admin_scope_cannot_authorize_it(provider, http,
                                                                        alice, app):
    res = await authorize(http, app, scope="openid bastion:admin")
    assert res.code == "" and res.params.get("error") == "invalid_scope", res.params


async def test_id_token_is_not_accepted_as_admin_or_sts_credential(provider, http,
                                                                  admin_client):
    """The id_token (aud: the client, typ JWT) of an admin is no access token."""
    await add_user(provider, "root", roles=("admin",))
    grant = await tokens_for(http, admin_client, scope="openid bastion:admin",
                             username="root")
    assert (await http.get("/admin/iam/policies",
                           headers=bearer(grant["access_token"]))).status_code == 200
    id_token = grant["id_token"]
    assert (await http.get("/admin/iam/policies", headers=bearer(id_token))).status_code == 401
    r = await assume(http, id_token, f"arn:bastion:iam::{ACCT}:role/admin")
    assert r.status_code == 401


# --- the admin API's delegation keys -------------------------------------------------------

async def _helpdesk(provider: Any, document: dict[str, Any]) -> dict[str, str]:
    await provider.iam_admin.create_policy("Delegate", document)
    helpdesk = await add_user(provider, "helpdesk", roles=())
    await provider.iam_admin.attach("user", "helpdesk", "Delegate")
    await add_user(provider, "carol", roles=())
    return bearer(mint(provider, helpdesk, scope="bastion:admin"))


DENY_ADMIN = {"Version": V, "Statement": [
    {"Effect": "Allow", "Action": ["iam:Attach*", "iam:Detach*", "iam:Get*"],
     "Resource": "*"},
    {"Effect": "Deny", "Action": "iam:Attach*", "Resource": "*", "Condition": {
        "ArnEquals": {"iam:PolicyARN": f"arn:bastion:iam::{ACCT}:policy/AdministratorAccess"}}}]}


@pytest.mark.parametrize("path", [
    "/admin/iam/users/helpdesk/policies/AdministratorAccess",
    "/admin/iam/users/helpdesk/policies/%41dministratorAccess",
    "/admin/iam/users/helpdesk/policies/administratoraccess",
    "/admin/iam/users/helpdesk/policies/AdministratorAccess%20",
    "/admin/iam/users/helpdesk/policies/AdministratorAccess%0A",
    "/admin/iam/users/helpdesk/policies/.%2FAdministratorAccess",
    "/admin/iam/users/helpdesk/policies/AdministratorAccess/",
    "/admin/iam/users/helpdesk/policies/%EF%BC%A1dministratorAccess",
    "/admin/iam/groups/support/policies/AdministratorAccess",
    "/admin/iam/roles/admin/policies/AdministratorAccess",
    "/admin/iam/clients/x/policies/AdministratorAccess",
], ids=["plain", "percent-encoded", "lowercase", "trailing-space", "newline",
        "dot-slash", "trailing-slash", "fullwidth", "group", "role", "client"])
async def test_deny_attach_admin_policy_not_bypassed_by_name_spelling(provider, http, path):
    h = await _helpdesk(provider, DENY_ADMIN)
    r = await http.post(path, headers=h)
    assert r.status_code in (307, 400, 403, 404, 405), r.text  # 307: to the plain path
    shown = await provider.iam_admin.principal("user", "helpdesk")
    assert shown["attached_policies"] == ["Delegate"]




@pytest.mark.parametrize("method,path", [
    ("POST", "/admin/iam/users/helpdesk/policies/AdministratorAccess%00"),
    ("POST", "/admin/iam/users/carol%00/policies/BastionOrdersRead"),
    ("GET", "/admin/iam/policies/Delegate%00"),
    ("GET", "/admin/iam/users/carol%00"),
], ids=["attach-policy", "attach-user", "get-policy", "get-user"])
async def test_nul_byte_in_admin_path_is_refused_cleanly_and_audited(request, provider, http,
                                                                    method, path):
    """Names are matched as whole ASCII strings: a NUL is a 4xx refusal with its audit
    record, never an unhandled database error (and never an attachment)."""
    h = await _helpdesk(provider, DENY_ADMIN)
    await provider.audit.flush()
    before = (await provider.fast.one("SELECT count(*) FROM audit_events"))[0]
    r = await http.request(method, path, headers=h)
    assert 400 <= r.status_code < 500, r.text
    await provider.audit.flush()
    after = (await provider.fast.one("SELECT count(*) FROM audit_events"))[0]
    assert after > before, "the refusal left no audit record"
    shown = await provider.iam_admin.principal("user", "helpdesk")
    assert shown["attached_policies"] == ["Delegate"]


async def test_nul_byte_in_admin_path_from_unprivileged_token_is_refused_and_audited(
        request, provider, http):
    """The condition-key hook runs before the decision and the scope check: a caller with
    no IAM permission and no bastion:admin must still get an audited 4xx."""
    nobody = await add_user(provider, "nobody", roles=())
    await provider.audit.flush()
    before = (await provider.fast.one("SELECT count(*) FROM audit_events"))[0]
    r = await http.get("/admin/iam/users/x%00", headers=bearer(mint(provider, nobody,
                                                                    scope="openid")))
    assert r.status_code == 403, r.text
    await provider.audit.flush()
    assert (await provider.fast.one("SELECT count(*) FROM audit_events"))[0] > before


async def test_deny_on_policy_arn_is_not_lifted_by_detach_then_attach_elsewhere(provider,
                                                                               http):
    """The helpdesk may detach policies; detaching its own Delegate (with the deny) is
    allowed, but it loses the attach permission with it: no window to escalate."""
    h = await _helpdesk(provider, DENY_ADMIN)
    r = await http.delete("/admin/iam/users/helpdesk/policies/Delegate", headers=h)
    assert r.status_code == 204, r.text
    r = await http.post("/admin/iam/users/helpdesk/policies/AdministratorAccess", headers=h)
    assert r.status_code == 403, r.text


async def test_string_not_equals_if_exists_policy_arn_allow_cannot_attach_admin(provider,
                                                                               http):
    """Allow attaching anything but AdministratorAccess with a negated …IfExists operator:
    the key is always present, so AdministratorAccess stays refused."""
    doc = {"Version": V, "Statement": [
        {"Effect": "Allow", "Action": "iam:AttachUserPolicy", "Resource": "*",
         "Condition": {"ArnNotEqualsIfExists": {
             "iam:PolicyARN": f"arn:bastion:iam::{ACCT}:policy/AdministratorAccess"}}}]}
    h = await _helpdesk(provider, doc)
    r = await http.post("/admin/iam/users/helpdesk/policies/AdministratorAccess", headers=h)
    assert r.status_code == 403, r.text
    r = await http.post("/admin/iam/users/carol/policies/BastionOrdersRead", headers=h)
    assert r.status_code == 204, r.text


# --- simulate ------------------------------------------------------------------------------

async def test_simulate_deny_on_other_principal_is_enforced(provider, http):
    await add_user(provider, "root", roles=("admin",))
    doc = {"Version": V, "Statement": [
        {"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:SimulatePrincipalPolicy",
         "Resource": f"arn:bastion:iam::{ACCT}:user/root"}]}
    h = await _helpdesk(provider, doc)
    r = await http.post("/admin/iam/simulate", headers=h, json={
        "principal": f"arn:bastion:iam::{ACCT}:user/carol", "action": "orders:ListOrders",
        "resource": f"arn:bastion:orders::{ACCT}:order/*"})
    assert r.status_code == 200, r.text
    r = await http.post("/admin/iam/simulate", headers=h, json={
        "principal": f"arn:bastion:iam::{ACCT}:user/root", "action": "iam:CreatePolicy",
        "resource": "*", "context": {"bastion:Scope": ["bastion:admin"]}})
    assert r.status_code == 403, r.text


async def test_simulate_has_no_side_effects_and_needs_admin_scope(provider, http):
    """simulate with a forged context is only a simulation: it changes nothing and the
    caller's real requests are still decided on its real context; without bastion:admin it
    is refused outright."""
    doc = {"Version": V, "Statement": [
        {"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", "Resource": "*"}]}
    h = await _helpdesk(provider, doc)
    r = await http.post("/admin/iam/simulate", headers=h, json={
        "principal": f"arn:bastion:iam::{ACCT}:user/helpdesk",
        "action": "iam:AttachUserPolicy", "resource": "*",
        "context": {"aws:PrincipalArn": f"arn:bastion:iam::{ACCT}:user/root",
                    "bastion:Scope": ["bastion:admin"]}})
    assert r.status_code == 200 and r.json()["decision"] == "implicitDeny", r.text
    r = await http.post("/admin/iam/users/helpdesk/policies/AdministratorAccess", headers=h)
    assert r.status_code == 403
    helpdesk = (await provider.fast.one("SELECT id FROM users WHERE username = 'helpdesk'"))[0]
    r = await http.post("/admin/iam/simulate", headers=bearer(mint(provider, helpdesk,
                                                                   scope="openid")),
                        json={"principal": ALICE, "action": "x:Y", "resource": "*"})
    assert r.status_code == 403
