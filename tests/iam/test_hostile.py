"""Hostile requests and contexts: evaluate() never raises and never allows on an error."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bastion.iam import Decision, PolicySet, Request, evaluate, parse_policy
from tests.iam import ACTION, ALICE, ALLOW_ALL, RESOURCE, check, document, ids
from tests.iam.cases.hostile_contexts import BROKEN_CONTEXTS, CASES


def _cond(case: dict[str, Any], effect: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": effect, "Action": ACTION, "Resource": "*", "Condition": case["condition"]}]}


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hostile_context_in_allow(case: dict[str, Any]) -> None:
    started = time.perf_counter()
    check({"rule": case["rule"], "identity": [_cond(case, "Allow")], "context": case["context"],
           "expect": "allowed" if case["expect"] is True else "implicitDeny"})
    assert time.perf_counter() - started < 2.0  # bounded work on hostile sizes


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hostile_context_in_deny(case: dict[str, Any]) -> None:
    check({"rule": case["rule"], "identity": [ALLOW_ALL, _cond(case, "Deny")],
           "context": case["context"],
           "expect": "allowed" if case["expect"] is False else "explicitDeny"})


@pytest.mark.parametrize(("name", "context"), BROKEN_CONTEXTS, ids=[n for n, _ in BROKEN_CONTEXTS])
def test_broken_context_fails_closed(name: str, context: Any) -> None:
    allow = PolicySet([parse_policy(_cond({"condition": {"StringEquals": {"aws:username": "a"}}},
                                          "Allow"))])
    negated_allow = PolicySet([parse_policy(_cond(
        {"condition": {"StringNotEquals": {"aws:username": "a"}}}, "Allow"))])
    deny = PolicySet([parse_policy(document(ALLOW_ALL)), parse_policy(_cond(
        {"condition": {"Null": {"aws:username": "false"}}}, "Deny"))])
    unconditional = PolicySet([parse_policy(document(ALLOW_ALL))])
    request = Request(ALICE, ACTION, RESOURCE, context)
    assert evaluate(request, allow).decision == "implicitDeny"
    assert evaluate(request, negated_allow).decision == "implicitDeny"
    assert evaluate(request, deny).decision == "explicitDeny"
    # statements without a Condition do not read the context
    assert evaluate(request, unconditional).decision == "allowed"


ALLOW_THEN_DENY = PolicySet([
    parse_policy(document(ALLOW_ALL)),
    parse_policy(document({"Effect": "Deny", "NotAction": "orders:GetOrder", "Resource": "*"})),
])


@pytest.mark.parametrize(
    ("principal", "action", "resource"),
    [
        (ALICE, 42, RESOURCE),
        (ALICE, ACTION, None),
        (None, ACTION, RESOURCE),
        (b"alice", ACTION, RESOURCE),
        (ALICE, ["orders:GetOrder"], RESOURCE),
    ],
    ids=["int-action", "none-resource", "none-principal", "bytes-principal", "list-action"],
)
def test_malformed_request_is_implicit_deny(principal: Any, action: Any, resource: Any) -> None:
    """Bastion fail-closed rule: a request that is not three strings is never allowed."""
    decision = evaluate(Request(principal, action, resource), ALLOW_THEN_DENY)
    assert decision.decision == "implicitDeny"
    assert "malformed" in decision.reason


@pytest.mark.parametrize(
    ("action", "resource", "expect"),
    [
        ("orders:GetOrder" + "x" * (1 << 20), RESOURCE, "explicitDeny"),
        ("orders:GetOrder", "arn:" + ":" * (1 << 20), "allowed"),
        ("órdenes:Obtener", RESOURCE, "explicitDeny"),
        ("", "", "explicitDeny"),
        ("orders:GetOrder\x00", RESOURCE, "explicitDeny"),
    ],
    ids=["megabyte-action", "megabyte-resource", "unicode-action", "empty", "nul-byte"],
)
def test_odd_strings(action: str, resource: str, expect: str) -> None:
    assert evaluate(Request(ALICE, action, resource), ALLOW_THEN_DENY).decision == expect


def test_megabyte_principal_with_resource_policy() -> None:
    rp = parse_policy(document({"Effect": "Allow", "Principal": {"AWS": ALICE},
                                "Action": "*", "Resource": "*"}), kind="resource")
    d = evaluate(Request("arn:bastion:iam::1:user/" + "a" * (1 << 20), ACTION, RESOURCE),
                 PolicySet(), resource_policy=rp)
    assert d.decision == "implicitDeny"


@pytest.mark.parametrize("identity", [None, "policies", 42, [ALLOW_ALL]],
                         ids=["none", "str", "int", "list"])
def test_wrong_argument_types_never_raise(identity: Any) -> None:
    decision = evaluate(Request(ALICE, ACTION, RESOURCE), identity)
    assert isinstance(decision, Decision)
    assert decision.decision == "implicitDeny"
    assert not decision.allowed


def test_exception_in_one_statement_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bastion fail-closed rule: an internal failure while matching a statement makes an Allow
    not apply and a Deny apply; the other statements still count."""
    from bastion.iam import conditions

    def broken(_value: object) -> tuple[int, int]:
        raise RuntimeError("matcher bug")

    monkeypatch.setattr(conditions, "parse_ip", broken)
    ip = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    request = Request(ALICE, ACTION, RESOURCE, {"aws:SourceIp": "10.1.1.1"})
    allows = PolicySet([
        parse_policy(document({"Sid": "Ip", "Effect": "Allow", "Action": "*", "Resource": "*",
                               "Condition": ip})),
        parse_policy(document({"Sid": "Plain", "Effect": "Allow", "Action": ACTION,
                               "Resource": "*"})),
    ])
    decision = evaluate(request, allows)
    assert decision.allowed and [s.sid for s in decision.statements] == ["Plain"]
    only_broken = PolicySet([allows.policies[0]])
    assert evaluate(request, only_broken).decision == "implicitDeny"
    deny = PolicySet([
        parse_policy(document(ALLOW_ALL)),
        parse_policy(document({"Sid": "IpDeny", "Effect": "Deny", "Action": "*",
                               "Resource": "*", "Condition": ip})),
    ])
    assert evaluate(request, deny).decision == "explicitDeny"
