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


def mint(provider: Any, subject: str, roles: tuple[str, ...]) -> str:
    return provider.tokens.access_token(subject=subject, client_id="admin-test",
                                        audience=provider.api_audience, scope="", ttl=300,
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
async def test_bad_input(http, admin_token, body, ctype, status, code):
    r = await http.post("/admin/iam/policies", content=body,
                        headers={**bearer(admin_token), "content-type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["Error"]["Code"] == code


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
