"""The public facade: names, dataclass shapes, errors (the contract other modules code against)."""

from __future__ import annotations

import dataclasses

import pytest

import bastion.iam as iam
from bastion.iam import (
    GLOBAL_CONDITION_KEY_PREFIXES,
    GLOBAL_CONDITION_KEYS,
    Decision,
    Finding,
    MatchedStatement,
    Policy,
    PolicyError,
    PolicySet,
    Request,
    evaluate,
    parse_policy,
    validate_policy,
)
from tests.iam import ACTION, ALICE, RESOURCE

DOC = {
    "Version": "2012-10-17",
    "Id": "orders-read",
    "Statement": [
        {"Sid": "Read", "Effect": "Allow", "Action": "orders:Get*", "Resource": "*"},
        {"Sid": "NoDelete", "Effect": "Deny", "Action": "orders:DeleteOrder", "Resource": "*"},
    ],
}


def test_facade_exports() -> None:
    for name in ("parse_policy", "validate_policy", "PolicyError", "Finding", "Policy",
                 "PolicySet", "Request", "Decision", "MatchedStatement", "evaluate",
                 "GLOBAL_CONDITION_KEYS", "GLOBAL_CONDITION_KEY_PREFIXES"):
        assert name in iam.__all__
        assert hasattr(iam, name)


def test_policy_attributes() -> None:
    policy = parse_policy(DOC, policy_id="p-1", kind="boundary")
    assert isinstance(policy, Policy)
    assert (policy.policy_id, policy.version, policy.kind) == ("p-1", "2012-10-17", "boundary")
    assert [s.sid for s in policy.statements] == ["Read", "NoDelete"]
    assert policy.document == DOC and policy.document is not DOC
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.policy_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize("form", ["str", "bytes", "mapping", "mapping-proxy"])
def test_parse_accepts_text_bytes_and_mappings(form: str) -> None:
    import json
    from types import MappingProxyType

    text = json.dumps(DOC)
    proxy = MappingProxyType({**DOC, "Statement": [MappingProxyType(s) for s in DOC["Statement"]]})
    doc = {"str": text, "bytes": text.encode(), "mapping": DOC, "mapping-proxy": proxy}[form]
    assert parse_policy(doc).document == DOC  # type: ignore[arg-type]


def test_policy_error_is_value_error_with_findings() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({"Version": "2012-10-17", "Statement": [{"Effect": "Permit"}]})
    assert isinstance(info.value, ValueError)
    codes = {f.code for f in info.value.findings}
    assert {"INVALID_EFFECT", "MISSING_ACTION", "MISSING_RESOURCE"} <= codes
    assert "INVALID_EFFECT" in str(info.value)


def test_finding_shape() -> None:
    finding = validate_policy({"Statement": [ {"Effect": "Allow", "Action": "*",
                                                "Resource": "*"}]})[0]
    assert isinstance(finding, Finding)
    assert set(finding.to_dict()) == {"severity", "code", "message", "path"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.code = "x"  # type: ignore[misc]


def test_decision_shape() -> None:
    policy_set = PolicySet([parse_policy(DOC, policy_id="p")])
    allowed = evaluate(Request(ALICE, ACTION, RESOURCE), policy_set)
    assert allowed.allowed and allowed.decision == "allowed"
    assert allowed.statements == (MatchedStatement("p", "Read", 0, "Allow", "identity"),)
    denied = evaluate(Request(ALICE, "orders:DeleteOrder", RESOURCE), policy_set)
    assert not denied.allowed and denied.decision == "explicitDeny"
    assert denied.to_dict() == {
        "decision": "explicitDeny", "allowed": False, "reason": denied.reason,
        "statements": [{"policy_id": "p", "sid": "NoDelete", "index": 1, "effect": "Deny",
                        "source": "identity"}],
    }
    implicit = evaluate(Request(ALICE, "billing:Pay", RESOURCE), policy_set)
    assert implicit == Decision("implicitDeny", (), implicit.reason) and implicit.reason
    with pytest.raises(dataclasses.FrozenInstanceError):
        allowed.decision = "implicitDeny"  # type: ignore[misc]


def test_request_is_frozen_and_hashable() -> None:
    request = Request(ALICE, ACTION, RESOURCE, {"aws:username": "alice"})
    assert request.context == {"aws:username": "alice"}
    assert Request(ALICE, ACTION, RESOURCE).context == {}
    hash(request)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.action = "x"  # type: ignore[misc]


def test_policy_set_is_immutable_and_rejects_resource_policies() -> None:
    policy_set = PolicySet([parse_policy(DOC)])
    assert len(policy_set) == 1 and list(policy_set) == list(policy_set.policies)
    with pytest.raises(AttributeError):
        policy_set.extra = 1  # type: ignore[attr-defined]
    resource = parse_policy({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
         "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}, kind="resource")
    with pytest.raises(ValueError, match="resource_policy"):
        PolicySet([resource])
    with pytest.raises(TypeError):
        PolicySet([DOC])  # type: ignore[list-item]


def test_global_condition_keys() -> None:
    assert isinstance(GLOBAL_CONDITION_KEYS, frozenset)
    assert all(k == k.lower() for k in GLOBAL_CONDITION_KEYS)
    for key in ("aws:sourceip", "aws:currenttime", "aws:epochtime", "aws:securetransport",
                "aws:multifactorauthpresent", "aws:principalarn", "aws:userid", "aws:username",
                "bastion:clientid", "bastion:scope", "bastion:mtlsspiffeid"):
        assert key in GLOBAL_CONDITION_KEYS
    assert "aws:principaltag/" in GLOBAL_CONDITION_KEY_PREFIXES
    assert "aws:requesttag/" in GLOBAL_CONDITION_KEY_PREFIXES


def test_index_candidates_and_memo_are_bounded() -> None:
    from bastion.iam import _index

    policy_set = PolicySet([parse_policy(DOC)])
    for i in range(_index.MEMO_SIZE + 10):
        evaluate(Request(ALICE, f"orders:Get{i}", RESOURCE), policy_set)
    assert len(policy_set._index._memo) <= _index.MEMO_SIZE
    evaluate(Request(ALICE, "orders:Get" + "x" * 1000, RESOURCE), policy_set)
    assert "orders:get" + "x" * 1000 not in policy_set._index._memo
