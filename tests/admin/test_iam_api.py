"""The IAM admin API: authorized by IAM (admin role, narrower policies, nothing for others),
IAM error shapes, audited changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.flows import add_user, bearer

pytestmark = pytest.mark.anyio

ACCT = "000000000000"
DOC = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}]}


def mint(provider: Any, subject: str, roles: tuple[str, ...],
         scope: str = "bastion:admin") -> str:
    return provider.tokens.access_token(subject=subject, client_id="admin-test",
                                        audience=provider.api_audience, scope=scope, ttl=300,
                                        roles=roles).token


@pytest.fixture
async def admin_token(provider: Any) -> str:
    return mint(provider, await add_user(provider, "root", roles=("admin",)), ("admin",))


async def test_admin_manages_policies(provider, http, admin_token):
    h = bearer(admin_token)
    r = await http.post("/admin/iam/policies", json={"name": "ListOnly", "document": DOC},
                        headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["arn"] == f"arn:bastion:iam::{ACCT}:policy/ListOnly"
    names = [p["name"] for p in (await http.get("/admin/iam/policies", headers=h)).json()[
        "Policies"]]
    assert "ListOnly" in names and "AdministratorAccess" in names
    await add_user(provider, "carol", roles=())
    r = await http.post("/admin/iam/users/carol/policies/ListOnly", headers=h)
    assert r.status_code == 204
    shown = (await http.get("/admin/iam/users/carol", headers=h)).json()
    assert shown["attached_policies"] == ["ListOnly"]
    r = await http.delete("/admin/iam/policies/ListOnly", headers=h)
    assert r.status_code == 409 and r.json()["Error"]["Code"] == "DeleteConflict"
    r = await http.post("/admin/iam/simulate", headers=h, json={
        "principal": f"arn:bastion:iam::{ACCT}:user/carol", "action": "orders:ListOrders",
        "resource": f"arn:bastion:orders::{ACCT}:order/*"})
    assert r.json()["decision"] == "allowed"
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'AttachUserPolicy'")
    record = json.loads(bytes(rows[-1][0]))
    assert record["userIdentity"]["arn"] == f"arn:bastion:iam::{ACCT}:user/root"


async def test_others_get_nothing_even_from_loopback(provider, http):
    token = mint(provider, await add_user(provider, "mallory", roles=("order:view",)),
                 ("order:view",))
    r = await http.post("/admin/iam/policies", json={"name": "Mine", "document": DOC},
                        headers=bearer(token))
    assert r.status_code == 403
    assert "iam:CreatePolicy" in r.json()["error_description"]
    assert (await http.get("/admin/iam/policies")).status_code == 401


async def test_a_narrow_policy_allows_reads_only(provider, http):
    await provider.iam_admin.create_policy("IamRead", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iam:Get*", "iam:List*"], "Resource": "*"}]})
    auditor = await add_user(provider, "auditor", roles=())
    await provider.iam_admin.attach("user", "auditor", "IamRead")
    h = bearer(mint(provider, auditor, ()))
    assert (await http.get("/admin/iam/policies", headers=h)).status_code == 200
    assert (await http.get("/admin/iam/policies/IamRead", headers=h)).status_code == 200
    r = await http.put("/admin/iam/policies/IamRead", headers=h, json={"document": DOC})
    assert r.status_code == 403


@pytest.mark.parametrize("body,ctype,status,code", [
    (b"{", "application/json", 400, "InvalidInput"),
    (b"[]", "application/json", 400, "InvalidInput"),
    (b'{"name": "x"}', "application/json", 400, "InvalidInput"),
    (b'{"name": "bad name!", "document": {}}', "application/json", 400, "InvalidInput"),
    (b'{"name": "x", "document": {"Statement": 5}}', "application/json", 400,
     "MalformedPolicyDocument"),
    (b"name=x", "application/x-www-form-urlencoded", 415, "InvalidInput"),
], ids=["not-json", "not-object", "no-document", "bad-name", "bad-grammar", "form"])
async def test_bad_input(provider, http, admin_token, body, ctype, status, code):
    r = await http.post("/admin/iam/policies", content=body,
                        headers={**bearer(admin_token), "content-type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["Error"]["Code"] == code
    # every refusal is an audit record, the ones refused before the admin layer included
    record = await last_record(provider, "CreatePolicy")
    assert record["errorCode"] == code
    assert record["userIdentity"]["arn"] == f"arn:bastion:iam::{ACCT}:user/root"


async def test_malformed_document_lists_findings(http, admin_token):
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "x:Y",
                                                   "Resource": "*", "Condition": {
                                                       "NumericLessThan": {"a:b": "ten"}}}]}
    r = await http.post("/admin/iam/policies", json={"name": "Bad", "document": bad},
                        headers=bearer(admin_token))
    assert r.status_code == 400
    findings = r.json()["Error"]["Findings"]
    assert any(f["path"].startswith("Statement[0].Condition.NumericLessThan")
               for f in findings)


async def test_missing_things_are_404(http, admin_token):
    h = bearer(admin_token)
    assert (await http.get("/admin/iam/policies/Nope", headers=h)).status_code == 404
    r = await http.post("/admin/iam/users/nobody/policies/AdministratorAccess", headers=h)
    assert r.status_code == 404 and r.json()["Error"]["Code"] == "NoSuchEntity"


async def last_record(provider: Any, event: str) -> dict[str, Any]:
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = :e "
                                   "ORDER BY seq", e=event)
    assert rows, f"no {event} audit record"
    record: dict[str, Any] = json.loads(bytes(rows[-1][0]))
    return record


async def test_simulate_invalid_json_is_audited(provider, http, admin_token):
    r = await http.post("/admin/iam/simulate", content=b"{nope",
                        headers={**bearer(admin_token), "content-type": "application/json"})
    assert r.status_code == 400
    record = await last_record(provider, "AccessDenied")
    assert record["errorCode"] == "InvalidInput"
    assert record["requestParameters"]["path"] == "/admin/iam/simulate"


# --- issue 8 item 3: the admin API needs the bastion:admin scope ------------------------

@pytest.mark.parametrize("scope", ["openid", "", "openid profile order:view order:create",
                                   "bastion:Admin", "bastion:admin:x", "bastion:*"],
                         ids=["openid", "none", "orders", "case", "suffix", "wildcard"])
async def test_admin_token_for_third_party_client_without_admin_scope_is_refused(
        provider, http, scope):
    token = mint(provider, await add_user(provider, "root", roles=("admin",)), ("admin",),
                 scope=scope)
    h = bearer(token)
    r = await http.get("/admin/iam/policies", headers=h)
    assert r.status_code == 403, r.text
    assert "bastion:admin" in r.json()["error_description"]
    r = await http.post("/admin/iam/policies", json={"name": "Mine", "document": DOC},
                        headers=h)
    assert r.status_code == 403
    r = await http.post("/admin/iam/users/root/policies/AdministratorAccess", headers=h)
    assert r.status_code == 403
    record = await last_record(provider, "AccessDenied")
    assert record["errorCode"] == "AccessDenied"
    # the same admin's orders access through AdministratorAccess needs the scope too
    assert (await http.get("/orders", headers=h)).status_code == 403


async def test_admin_token_with_admin_scope_works(provider, http):
    token = mint(provider, await add_user(provider, "root", roles=("admin",)), ("admin",),
                 scope="openid bastion:admin")
    assert (await http.get("/admin/iam/policies", headers=bearer(token))).status_code == 200


async def test_admin_scope_alone_grants_nothing_without_policy(provider, http):
    token = mint(provider, await add_user(provider, "eve", roles=()), ())
    assert (await http.get("/admin/iam/policies", headers=bearer(token))).status_code == 403


async def test_client_cannot_obtain_admin_scope_it_is_not_registered_for(provider, http, app):
    """The default test client (and by default every client) is not registered for
    bastion:admin, so no grant yields it."""
    r = await http.post("/token", data={"grant_type": "client_credentials",
                                        "scope": "bastion:admin"},
                        auth=(app.client_id, app.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


async def test_unchanged_legacy_administrator_access_is_upgraded_at_start(provider):
    from bastion.iam.bootstrap import ADMIN_SCOPE, LEGACY, bootstrap

    await provider.iam_admin.update_policy("AdministratorAccess",
                                           LEGACY["AdministratorAccess"])
    await bootstrap(provider.iam_admin)
    doc = (await provider.iam_admin.get_policy("AdministratorAccess"))["document"]
    assert doc["Statement"][0]["Condition"] == {
        "ForAnyValue:StringEquals": {"bastion:Scope": ADMIN_SCOPE}}
    # an operator's own version is left alone
    mine = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:Get*", "Resource": "*"}]}
    await provider.iam_admin.update_policy("AdministratorAccess", mine)
    await bootstrap(provider.iam_admin)
    assert (await provider.iam_admin.get_policy("AdministratorAccess"))["document"] == mine


# --- issue 8 item 6: condition keys of the admin actions ------------------------------

DELEGATE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iam:AttachUserPolicy", "Resource": "*",
     "Condition": {"ArnEquals": {"iam:PolicyARN":
                                 f"arn:bastion:iam::{ACCT}:policy/BastionOrdersRead"}}}]}


async def _delegate(provider: Any, document: dict[str, Any]) -> dict[str, str]:
    await provider.iam_admin.create_policy("Delegate", document)
    helpdesk = await add_user(provider, "helpdesk", roles=())
    await provider.iam_admin.attach("user", "helpdesk", "Delegate")
    await add_user(provider, "carol", roles=())
    return bearer(mint(provider, helpdesk, ()))


async def test_delegation_pattern_policy_arn_allows_the_named_policy(provider, http):
    h = await _delegate(provider, DELEGATE)
    r = await http.post("/admin/iam/users/carol/policies/BastionOrdersRead", headers=h)
    assert r.status_code == 204, r.text


async def test_delegation_pattern_policy_arn_refuses_other_policies(provider, http):
    h = await _delegate(provider, DELEGATE)
    r = await http.post("/admin/iam/users/carol/policies/AdministratorAccess", headers=h)
    assert r.status_code == 403, r.text


async def test_if_exists_policy_arn_condition_does_not_allow_self_escalation(provider, http):
    doc = json.loads(json.dumps(DELEGATE).replace('"ArnEquals"', '"ArnEqualsIfExists"'))
    h = await _delegate(provider, doc)
    r = await http.post("/admin/iam/users/helpdesk/policies/AdministratorAccess", headers=h)
    assert r.status_code == 403, r.text
    shown = await provider.iam_admin.principal("user", "helpdesk")
    assert shown["attached_policies"] == ["Delegate"]
    r = await http.post("/admin/iam/users/carol/policies/BastionOrdersRead", headers=h)
    assert r.status_code == 204, r.text


async def test_resource_tag_and_boundary_keys_of_the_target(provider, http):
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iam:AttachUserPolicy", "iam:GetUser"],
         "Resource": "*", "Condition": {
             "StringEquals": {"iam:ResourceTag/team": "support"},
             "ArnEquals": {"iam:PermissionsBoundary":
                           f"arn:bastion:iam::{ACCT}:policy/BastionOrdersRead"}}}]}
    h = await _delegate(provider, doc)
    assert (await http.get("/admin/iam/users/carol", headers=h)).status_code == 403
    await provider.iam_admin.set_tags("user", "carol", {"team": "support"})
    assert (await http.get("/admin/iam/users/carol", headers=h)).status_code == 403
    await provider.iam_admin.set_boundary("user", "carol", "BastionOrdersRead")
    assert (await http.get("/admin/iam/users/carol", headers=h)).status_code == 200
    r = await http.post("/admin/iam/users/carol/policies/BastionOrdersCreate", headers=h)
    assert r.status_code == 204, r.text
    await provider.iam_admin.set_tags("user", "carol", {"team": "sales"})
    assert (await http.get("/admin/iam/users/carol", headers=h)).status_code == 403
