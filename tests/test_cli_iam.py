"""``bastion iam``: validate, simulate (stored principals and custom policies), CRUD with
--json, refusals with IAM's error codes, and every change in the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import run

ACCT = "000000000000"
ORDER = f"arn:bastion:orders::{ACCT}:order/abc"
ALLOW_LIST = {"Version": "2012-10-17", "Statement": [
    {"Sid": "List", "Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}]}


def write(path: Path, doc: object) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    r = run("users", "create", "carol", "--password-stdin", "--role", "order:view",
            data=tmp_path, stdin="s3cret-passw0rd\n")
    assert r.returncode == 0, r.stderr
    return tmp_path


def simulate(data: Path, *args: str) -> dict:
    r = run("iam", "simulate", *args, "--json", data=data)
    assert r.returncode == 0, r.stderr
    out: dict = json.loads(r.stdout)
    return out


def test_validate_reports_findings_with_paths(tmp_path):
    good = write(tmp_path / "good.json", ALLOW_LIST)
    r = run("iam", "validate", str(good), "--json", data=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"findings": []}
    broad = write(tmp_path / "broad.json", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    r = run("iam", "validate", str(broad), "--json", data=tmp_path)
    assert r.returncode == 0
    assert any(f["severity"] == "SECURITY_WARNING" for f in json.loads(r.stdout)["findings"])
    bad = write(tmp_path / "bad.json", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}}]})
    r = run("iam", "validate", str(bad), "--json", data=tmp_path)
    assert r.returncode == 1
    [finding] = [f for f in json.loads(r.stdout)["findings"] if f["severity"] == "ERROR"]
    assert finding["path"].startswith("Statement[0].Condition.IpAddress")
    garbage = write(tmp_path / "garbage.json", "{not json")
    assert run("iam", "validate", str(garbage), data=tmp_path).returncode == 1


def test_simulate_stored_principal(data):
    carol = f"arn:bastion:iam::{ACCT}:user/carol"
    d = simulate(data, "--principal", carol, "--action", "orders:GetOrder", "--resource", ORDER,
                 "--context", "bastion:Scope=order:view")
    assert d["decision"] == "allowed"
    assert d["statements"][0]["policy_id"] == "BastionOrdersRead"
    d = simulate(data, "--principal", carol, "--action", "orders:GetOrder", "--resource", ORDER)
    assert d["decision"] == "implicitDeny"  # no scope in the context
    d = simulate(data, "--principal", carol, "--action", "orders:CreateOrder",
                 "--resource", ORDER, "--context", "bastion:Scope=order:create")
    assert d["decision"] == "implicitDeny"


def test_simulate_custom_policies_with_multivalued_context(tmp_path):
    pol = write(tmp_path / "p.json", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/${aws:username}/*",
         "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}}]})
    deny = write(tmp_path / "d.json", {"Version": "2012-10-17", "Statement": [
        {"Sid": "NoNight", "Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}}]})
    base = ["--caller-arn", f"arn:bastion:iam::{ACCT}:user/alice", "--policy-file", str(pol),
            "--policy-file", str(deny), "--action", "s3:GetObject"]
    d = simulate(tmp_path, *base, "--resource", "arn:aws:s3:::b/alice/x",
                 "--context", "aws:TagKeys=a", "--context", "aws:TagKeys=b")
    assert d["decision"] == "allowed"
    d = simulate(tmp_path, *base, "--resource", "arn:aws:s3:::b/bob/x")
    assert d["decision"] == "implicitDeny"
    d = simulate(tmp_path, *base, "--resource", "arn:aws:s3:::b/alice/x",
                 "--context", "aws:TagKeys=c")
    assert d["decision"] == "implicitDeny"
    d = simulate(tmp_path, *base, "--resource", "arn:aws:s3:::b/alice/x",
                 "--context", "aws:CurrentTime=2031-01-01T00:00:00Z")
    assert d["decision"] == "explicitDeny"
    assert d["statements"][0]["sid"] == "NoNight"


def test_simulate_boundary_and_resource_policy_files(tmp_path):
    allow_all = write(tmp_path / "all.json", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    boundary = write(tmp_path / "b.json", ALLOW_LIST)
    base = ["--caller-arn", f"arn:bastion:iam::{ACCT}:user/alice", "--policy-file",
            str(allow_all), "--boundary-file", str(boundary), "--resource", ORDER]
    assert simulate(tmp_path, *base, "--action", "orders:ListOrders")["decision"] == "allowed"
    assert simulate(tmp_path, *base, "--action", "orders:GetOrder")["decision"] == \
        "implicitDeny"


@pytest.mark.parametrize("args,message", [
    (["--action", "a:b", "--resource", ORDER], "exactly one of"),
    (["--caller-arn", "arn:bastion:iam::000000000000:user/x", "--action", "a:b",
      "--resource", ORDER], "--policy-file"),
    (["--principal", "arn:bastion:iam::000000000000:user/x", "--action", "a:b",
      "--resource", ORDER, "--context", "novalue"], "KEY=VALUE"),
])
def test_simulate_usage_errors(tmp_path, args, message):
    r = run("iam", "simulate", *args, data=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr


def test_policy_crud_and_attachments_are_audited(data):
    pol = write(data / "p.json", ALLOW_LIST)
    r = run("iam", "policies", "create", "ListOnly", str(pol), "--json", data=data)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["arn"] == f"arn:bastion:iam::{ACCT}:policy/ListOnly"
    r = run("iam", "policies", "create", "ListOnly", str(pol), data=data)
    assert r.returncode == 1 and "EntityAlreadyExists" in r.stderr
    assert run("iam", "attach", "user", "carol", "ListOnly", data=data).returncode == 0
    shown = json.loads(run("iam", "show", "user", "carol", "--json", data=data).stdout)
    assert shown["attached_policies"] == ["ListOnly"]
    r = run("iam", "policies", "delete", "ListOnly", data=data)
    assert r.returncode == 1 and "DeleteConflict" in r.stderr
    assert run("iam", "detach", "user", "carol", "ListOnly", data=data).returncode == 0
    assert run("iam", "policies", "delete", "ListOnly", data=data).returncode == 0
    r = run("iam", "attach", "user", "nobody", "BastionOrdersRead", data=data)
    assert r.returncode == 1 and "NoSuchEntity" in r.stderr
    names = [json.loads(line)["eventName"] for line in run(
        "audit", "export", data=data).stdout.splitlines()]
    for name in ("CreatePolicy", "AttachUserPolicy", "DetachUserPolicy", "DeletePolicy"):
        assert name in names
    assert run("audit", "verify", data=data).returncode == 0


def test_malformed_policy_refused_at_write_time_with_the_exact_error(data):
    bad = write(data / "bad.json", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*",
         "Condition": {"DateLessThan": {"aws:CurrentTime": "yesterday"}}}]})
    r = run("iam", "policies", "create", "Bad", str(bad), data=data)
    assert r.returncode == 1
    assert "MalformedPolicyDocument" in r.stderr
    assert "Statement[0].Condition.DateLessThan" in r.stderr
    assert "Bad" not in run("iam", "policies", "list", data=data).stdout


def test_roles_inline_boundary_tags(data):
    trust = write(data / "trust.json", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:bastion:iam::{ACCT}:user/carol"},
         "Action": "sts:AssumeRole"}]})
    r = run("iam", "roles", "create", "reporter", "--trust-file", str(trust), "--json",
            data=data)
    assert r.returncode == 0, r.stderr
    roles = json.loads(run("iam", "roles", "list", "--json", data=data).stdout)
    assert "reporter" in [x["name"] for x in roles]
    pol = write(data / "p.json", ALLOW_LIST)
    assert run("iam", "inline", "put", "role", "reporter", "List", str(pol),
               data=data).returncode == 0
    r = run("iam", "roles", "delete", "reporter", data=data)
    assert r.returncode == 1 and "DeleteConflict" in r.stderr
    assert run("iam", "inline", "delete", "role", "reporter", "List", data=data).returncode == 0
    assert run("iam", "roles", "delete", "reporter", data=data).returncode == 0
    assert run("iam", "boundary", "user", "carol", "BastionOrdersRead",
               data=data).returncode == 0
    assert run("iam", "tag", "user", "carol", "dept=sales", data=data).returncode == 0
    shown = json.loads(run("iam", "show", "user", "carol", "--json", data=data).stdout)
    assert shown["permissions_boundary"] == "BastionOrdersRead"
    assert shown["tags"] == {"dept": "sales"}
    assert run("iam", "boundary", "user", "carol", "--clear", data=data).returncode == 0
    r = run("iam", "attach", "martian", "carol", "X", data=data)
    assert r.returncode == 1 and "InvalidInput" in r.stderr
