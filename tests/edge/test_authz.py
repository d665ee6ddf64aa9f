"""Authorization at the edge: Orders routes are IAM actions on ARNs, decided by policies
attached to the roles tokens carry, to users, groups and clients; boundaries, explicit
denies, conditions on the request context; denials are 403s in RFC 6750 shape and audited."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.flows import add_client, add_user, bearer

pytestmark = pytest.mark.anyio

VIEW, CREATE = "order:view", "order:create"
TEA = {"item": "tea", "quantity": 2, "unit_price_cents": 350}
ACCT = "000000000000"
ORDERS = f"arn:bastion:orders::{ACCT}:order/*"


def mint(provider: Any, subject: str, *, scope: str = f"{VIEW} {CREATE}",
         roles: tuple[str, ...] = (VIEW, CREATE), client_id: str = "orders-test",
         **extra: Any) -> str:
    return provider.tokens.access_token(subject=subject, client_id=client_id,
                                        audience=provider.api_audience, scope=scope, ttl=300,
                                        roles=roles, extra=extra or None).token


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


async def denials(provider: Any) -> list[dict[str, Any]]:
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'AccessDenied' ORDER BY seq")
    return [json.loads(bytes(r[0])) for r in rows]


async def test_roles_in_the_token_grant_through_their_policies(provider, http, alice):
    token = mint(provider, alice)
    r = await http.post("/orders", json=TEA, headers=bearer(token))
    assert r.status_code == 201, r.text
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200
    r = await http.get(r.headers["location"], headers=bearer(token))
    assert r.status_code == 200
    assert len(r.headers["x-request-id"]) == 24


async def test_denied_is_a_403_in_rfc6750_shape_and_audited(provider, http):
    bob = await add_user(provider, "bob", roles=(VIEW,))
    r = await http.post("/orders", json=TEA, headers=bearer(mint(provider, bob, roles=(VIEW,))))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    body = r.json()
    assert body["error"] == "insufficient_scope"
    assert f"arn:bastion:iam::{ACCT}:user/bob is not authorized to perform: " \
           f"orders:CreateOrder on resource: {ORDERS}" in body["error_description"]
    assert body["request_id"] == r.headers["x-request-id"]
    [record] = await denials(provider)
    assert record["errorCode"] == "AccessDenied"
    assert record["requestID"] == body["request_id"]
    assert record["userIdentity"]["arn"] == f"arn:bastion:iam::{ACCT}:user/bob"
    assert record["resources"][0]["ARN"] == ORDERS


async def test_role_without_the_oauth_scope_is_denied(provider, http, alice):
    """The bootstrap policies also require the token's scope (bastion:Scope)."""
    token = mint(provider, alice, scope=VIEW)
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200
    assert (await http.post("/orders", json=TEA, headers=bearer(token))).status_code == 403


async def test_loopback_grants_nothing(provider, http, alice):
    """The test transport connects from 127.0.0.1: a token without roles gets nothing."""
    token = mint(provider, alice, roles=())
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403


async def test_detaching_takes_effect_at_once(provider, http, alice):
    token = mint(provider, alice)
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200
    await provider.iam_admin.detach("role", VIEW, "BastionOrdersRead")
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403
    await provider.iam_admin.attach("role", VIEW, "BastionOrdersRead")
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200


async def test_explicit_deny_on_the_user_beats_the_role_allow(provider, http, alice):
    await provider.iam_admin.put_inline("user", "alice", "NoReading", policy(
        {"Effect": "Deny", "Action": "orders:GetOrder", "Resource": "*"}))
    token = mint(provider, alice)
    created = await http.post("/orders", json=TEA, headers=bearer(token))
    assert created.status_code == 201
    assert (await http.get(created.headers["location"], headers=bearer(token))).status_code \
        == 403
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200
    [record] = await denials(provider)
    statements = record["additionalEventData"]["decision"]["statements"]
    assert statements[0]["effect"] == "Deny"


async def test_group_policies_apply_to_members(provider, http):
    carol = await add_user(provider, "carol", roles=())
    from bastion.identity.users import add_member, create_group

    async with provider.sessions.begin() as db:
        await create_group(db, "buyers", [])
        await add_member(db, "buyers", "carol")
    token = mint(provider, carol, roles=())
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403
    await provider.iam_admin.attach("group", "buyers", "BastionOrdersRead")
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200


async def test_permissions_boundary_caps_what_roles_grant(provider, http, alice):
    await provider.iam_admin.create_policy("OnlyList", policy(
        {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}))
    await provider.iam_admin.set_boundary("user", "alice", "OnlyList")
    token = mint(provider, alice)
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200
    assert (await http.post("/orders", json=TEA, headers=bearer(token))).status_code == 403
    await provider.iam_admin.set_boundary("user", "alice", None)
    assert (await http.post("/orders", json=TEA, headers=bearer(token))).status_code == 201


async def test_source_ip_condition(provider, http, alice):
    await provider.iam_admin.put_inline("user", "alice", "OfficeOnly", policy(
        {"Effect": "Deny", "Action": "orders:*", "Resource": "*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}))
    assert (await http.get("/orders", headers=bearer(mint(provider, alice)))).status_code \
        == 403


async def test_principal_tags_and_policy_variables(provider, http, alice):
    token = mint(provider, alice, roles=())
    await provider.iam_admin.put_inline("user", "alice", "SalesReads", policy(
        {"Effect": "Allow", "Action": ["orders:ListOrders"], "Resource": ORDERS,
         "Condition": {"StringEquals": {"aws:PrincipalTag/dept": "sales",
                                        "aws:username": "${aws:username}"}}}))
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403
    await provider.iam_admin.set_tags("user", "alice", {"dept": "sales"})
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200


async def test_mfa_condition_reads_amr(provider, http, alice):
    await provider.iam_admin.put_inline("user", "alice", "NeedMfa", policy(
        {"Effect": "Deny", "Action": "orders:CreateOrder", "Resource": "*",
         "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}}))
    plain = mint(provider, alice, amr=["pwd"])
    assert (await http.post("/orders", json=TEA, headers=bearer(plain))).status_code == 403
    strong = mint(provider, alice, amr=["pwd", "otp"])
    assert (await http.post("/orders", json=TEA, headers=bearer(strong))).status_code == 201


async def test_client_credentials_principal(provider, http):
    client = await add_client(provider, scopes=[VIEW])
    r = await http.post("/token", data={"grant_type": "client_credentials", "scope": VIEW},
                        auth=(client.client_id, client.secret or ""))
    token = r.json()["access_token"]
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403
    await provider.iam_admin.attach("client", client.client_id, "BastionOrdersRead")
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200


async def test_unknown_user_is_denied(provider, http):
    token = mint(provider, "no-such-user-id")
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403


async def test_changes_made_elsewhere_are_seen_through_the_generation(provider, http, alice,
                                                                      settings):
    """Another process (the CLI, another instance) changes IAM: seen once the cache TTL
    passes, by the generation counter."""
    from bastion.runtime import open_provider

    provider.iam.cache_ttl = 0.0
    token = mint(provider, alice)
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200
    other = await open_provider(settings)
    try:
        await other.iam_admin.detach("role", VIEW, "BastionOrdersRead")
    finally:
        await other.close()
    assert (await http.get("/orders", headers=bearer(token))).status_code == 403


async def trail(provider: Any) -> list[dict[str, Any]]:
    await provider.audit.flush()
    return [json.loads(bytes(r[0])) for r in await provider.fast.all(
        "SELECT body FROM audit_events ORDER BY seq")]


async def test_orders_access_and_every_statement_are_audited(provider, http, alice):
    """Who read or changed which order, and each SQL statement (pgaudit-like: command, text,
    parameter names but not values, rows), correlated by the request id."""
    token = mint(provider, alice)
    created = await http.post("/orders", json={**TEA, "item": "secret-sauce"},
                              headers=bearer(token))
    order_id = created.json()["id"]
    got = await http.get(f"/orders/{order_id}", headers=bearer(token))
    records = await trail(provider)
    by_request = [r for r in records if r.get("requestID") == got.headers["x-request-id"]]
    assert [r["eventName"] for r in by_request] == ["SqlStatement", "GetOrder"]
    sql, access = by_request
    assert sql["requestParameters"]["command"] == "SELECT"
    assert sql["requestParameters"]["parameters"] == ["id"]
    assert sql["responseElements"] == {"rows": 1}
    assert access["resources"][0]["ARN"] == f"arn:bastion:orders::{ACCT}:order/{order_id}"
    assert access["userIdentity"]["arn"] == f"arn:bastion:iam::{ACCT}:user/alice"
    insert = [r for r in records if r.get("requestID") == created.headers["x-request-id"]
              and r["eventName"] == "SqlStatement"][0]
    assert insert["requestParameters"]["class"] == "WRITE"
    assert "secret-sauce" not in json.dumps(insert)  # statement parameters: names only


async def test_stored_resource_policies_apply(provider, http, alice):
    """A resource-based policy stored for an ARN joins the decision: its Allow grants a
    principal with no identity policy (same account), its Deny beats the role's Allow."""
    token = mint(provider, alice)
    created = await http.post("/orders", json=TEA, headers=bearer(token))
    order_arn = f"arn:bastion:orders::{ACCT}:order/{created.json()['id']}"
    await provider.iam_admin.put_resource_policy(order_arn, policy(
        {"Effect": "Deny", "Principal": {"AWS": f"arn:bastion:iam::{ACCT}:user/alice"},
         "Action": "orders:GetOrder", "Resource": order_arn}))
    assert (await http.get(created.headers["location"], headers=bearer(token))).status_code \
        == 403
    bare = mint(provider, alice, roles=())
    await provider.iam_admin.put_resource_policy(order_arn, policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:bastion:iam::{ACCT}:user/alice"},
         "Action": "orders:GetOrder", "Resource": order_arn}))
    assert (await http.get(created.headers["location"], headers=bearer(bare))).status_code \
        == 200
