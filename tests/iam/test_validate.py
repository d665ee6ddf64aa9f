"""Validation findings by code and JSON path (cases/validation.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.iam import PolicyError, parse_policy, validate_policy
from tests.iam import ids
from tests.iam.cases.validation import CASES


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_findings(case: dict[str, Any]) -> None:
    findings = validate_policy(case["doc"], kind=case["kind"], max_size=case.get("max_size"))
    got = [(f.severity, f.code, f.path) for f in findings]
    for expected in case["findings"]:
        assert tuple(expected) in got, (expected, findings)
    if case["exact"]:
        assert sorted(got) == sorted(map(tuple, case["findings"])), findings
    for f in findings:
        assert f.message


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_parse_refuses_exactly_the_errors(case: dict[str, Any]) -> None:
    errors = [f for f in validate_policy(case["doc"], kind=case["kind"],
                                         max_size=case.get("max_size")) if f.severity == "ERROR"]
    if errors:
        with pytest.raises(PolicyError) as info:
            parse_policy(case["doc"], kind=case["kind"], max_size=case.get("max_size"))
        assert [f for f in info.value.findings if f.severity == "ERROR"] == errors
    else:
        policy = parse_policy(case["doc"], kind=case["kind"], max_size=case.get("max_size"))
        assert {(f.code, f.path) for f in policy.findings} == {
            (f.code, f.path) for f in validate_policy(case["doc"], kind=case["kind"],
                                                      max_size=case.get("max_size"))
        }


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * 1000, bytes(range(256)), "", "null", "1", '"x"', "{" * 5000,
     '{"Statement": ' * 3000, bytearray(b"{}"), memoryview(b"[]"), 3.5, None, ["Statement"]],
)
def test_validate_never_raises(garbage: Any) -> None:
    findings = validate_policy(garbage)
    assert any(f.severity == "ERROR" for f in findings)
