"""Helpers shared by the IAM engine tests: build policy sets and requests from case tables.

A case is a dict (see ``tests/iam/cases/``):

- ``id``, ``rule`` (the AWS documentation page › section it checks), ``expect``
  (``allowed`` | ``explicitDeny`` | ``implicitDeny``);
- ``identity``: identity-based policies; each item is a full document (has ``Statement``) or a
  bare statement (wrapped in a ``2012-10-17`` document); ``boundary`` / ``session`` likewise,
  ``None`` or absent meaning "not given";
- ``resource_policy`` (+ ``resource_kind``, default ``resource``): one document or statement;
- ``principal``, ``action``, ``resource``, ``context``: the request (defaults below);
- optional ``statements``: the reported statements as ``"source:policy_id:sid-or-#index"``,
  optional ``reason``: a substring of ``Decision.reason``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bastion.iam import Decision, Policy, PolicySet, Request, evaluate, parse_policy

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
ALICE = f"arn:bastion:iam::{ACCOUNT}:user/alice"
BOB = f"arn:bastion:iam::{ACCOUNT}:user/bob"
ROOT = f"arn:bastion:iam::{ACCOUNT}:root"
ROLE = f"arn:bastion:iam::{ACCOUNT}:role/deployer"
SESSION = f"arn:bastion:sts::{ACCOUNT}:assumed-role/deployer/ci-42"
CLIENT = f"arn:bastion:iam::{ACCOUNT}:client/orders-sync"
ACTION = "orders:GetOrder"
RESOURCE = f"arn:bastion:orders:eu-1:{ACCOUNT}:order/1"
V2012 = "2012-10-17"

ALLOW_ALL = {"Effect": "Allow", "Action": "*", "Resource": "*"}


def document(item: dict[str, Any], version: str | None = V2012) -> dict[str, Any]:
    if "Statement" in item:
        return item
    doc: dict[str, Any] = {"Statement": [item]}
    if version is not None:
        doc["Version"] = version
    return doc


def policies(items: Iterable[dict[str, Any]] | None, prefix: str, kind: str) -> list[Policy]:
    return [
        parse_policy(document(item), policy_id=f"{prefix}{i}", kind=kind)  # type: ignore[arg-type]
        for i, item in enumerate(items or [])
    ]


def run(case: dict[str, Any]) -> Decision:
    identity = PolicySet(policies(case.get("identity"), "p", "identity"))
    boundary = case.get("boundary")
    session = case.get("session")
    resource_policy = None
    if case.get("resource_policy") is not None:
        kind = case.get("resource_kind", "resource")
        resource_policy = parse_policy(document(case["resource_policy"]), policy_id="rp",
                                       kind=kind)
    request = Request(
        case.get("principal", ALICE),
        case.get("action", ACTION),
        case.get("resource", RESOURCE),
        case.get("context", {}),
    )
    return evaluate(
        request,
        identity,
        resource_policy=resource_policy,
        boundary=None if boundary is None else PolicySet(policies(boundary, "b", "boundary")),
        session=None if session is None else PolicySet(policies(session, "s", "session")),
    )


def check(case: dict[str, Any]) -> None:
    decision = run(case)
    assert decision.decision == case["expect"], (decision, case["rule"])
    if case["expect"] == "implicitDeny":
        assert decision.statements == ()
    if "statements" in case:
        got = [
            f"{s.source}:{s.policy_id}:{s.sid if s.sid else '#' + str(s.index)}"
            for s in decision.statements
        ]
        assert got == case["statements"], decision
    if "reason" in case:
        assert case["reason"] in decision.reason, decision


def ids(cases: list[dict[str, Any]]) -> list[str]:
    seen: set[str] = set()
    for c in cases:
        assert c["id"] not in seen, f"duplicate case id {c['id']}"
        assert c.get("rule"), f"case {c['id']} cites no rule"
        seen.add(c["id"])
    return [c["id"] for c in cases]
