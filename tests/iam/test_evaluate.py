"""Table-driven decisions: elements, variables, evaluation logic, principals (tests/iam/cases)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam import check, ids
from tests.iam.cases import evaluation_logic, policy_elements, policy_variables, principals


@pytest.mark.parametrize("case", policy_elements.CASES, ids=ids(policy_elements.CASES))
def test_policy_elements(case: dict[str, Any]) -> None:
    check(case)


@pytest.mark.parametrize("case", policy_variables.CASES, ids=ids(policy_variables.CASES))
def test_policy_variables(case: dict[str, Any]) -> None:
    check(case)


@pytest.mark.parametrize("case", evaluation_logic.CASES, ids=ids(evaluation_logic.CASES))
def test_evaluation_logic(case: dict[str, Any]) -> None:
    check(case)


@pytest.mark.parametrize("case", principals.CASES, ids=ids(principals.CASES))
def test_principals(case: dict[str, Any]) -> None:
    check(case)
