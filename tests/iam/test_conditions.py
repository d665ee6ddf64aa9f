"""Every condition operator, in an Allow and in a Deny statement (cases/condition_operators.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam import ACTION, ALLOW_ALL, check, ids
from tests.iam.cases.condition_operators import CASES


def _statement(case: dict[str, Any], effect: str) -> dict[str, Any]:
    return {
        "Version": case["version"],
        "Statement": [
            {"Sid": "Cond", "Effect": effect, "Action": ACTION, "Resource": "*",
             "Condition": case["condition"]},
        ],
    }


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_condition_in_allow(case: dict[str, Any]) -> None:
    """Allow applies only when the condition is true (unknown never allows)."""
    check({
        "rule": case["rule"],
        "identity": [_statement(case, "Allow")],
        "context": case["context"],
        "expect": "allowed" if case["expect"] is True else "implicitDeny",
    })


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_condition_in_deny(case: dict[str, Any]) -> None:
    """Deny applies when the condition is true or unknown (fail closed)."""
    check({
        "rule": case["rule"],
        "identity": [ALLOW_ALL, _statement(case, "Deny")],
        "context": case["context"],
        "expect": "allowed" if case["expect"] is False else "explicitDeny",
    })
