"""Identifiers are ASCII as IAM's, and whole-string matches (issue 8 item 12): no Unicode
lookalikes, other scripts' digits or trailing newlines."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.iam import validate_policy
from bastion.iam.admin import IamError
from bastion.iam.arn import ACCOUNT_RE
from bastion.iam.scheme import parse_principal_arn

ACCT = "000000000000"
LOOKALIKE_NAMES = [
    pytest.param("\uff21dministrator\u0391ccess", id="fullwidth-A-and-greek-alpha"),
    pytest.param("Administrator\u0410ccess", id="cyrillic-A"),
    pytest.param("AdministratorAccess\n", id="trailing-newline"),
    pytest.param("Policy\u0660", id="arabic-indic-digit"),
    pytest.param("caf\u00e9", id="latin-1-letter"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("name", LOOKALIKE_NAMES)
async def test_lookalike_policy_name_refused(provider: Any, name: str) -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "orders:ListOrders", "Resource": "*"}]}
    with pytest.raises(IamError) as err:
        await provider.iam_admin.create_policy(name, doc)
    assert err.value.code == "InvalidInput"


@pytest.mark.parametrize("arn", [
    f"arn:bastion:iam::{ACCT}:user/alice\n",
    f"arn:bastion:iam::{ACCT}:user/\uff41lice",
    f"arn:bastion:iam::{ACCT}:role/r\u0435ader",
    f"arn:bastion:sts::{ACCT}:assumed-role/reader/job\u00b2",
], ids=["newline", "fullwidth", "cyrillic", "superscript-digit"])
def test_lookalike_principal_arn_refused(arn: str) -> None:
    assert parse_principal_arn(arn, ACCT) is None


@pytest.mark.parametrize("account", ["\u0660" * 12, "000000000000\n", "０" * 12],
                         ids=["arabic-indic", "newline", "fullwidth"])
def test_account_id_is_twelve_ascii_digits(account: str) -> None:
    assert ACCOUNT_RE.fullmatch(account) is None


@pytest.mark.parametrize("action", ["orders:ListOrders\n", "orders:List\uff2frders"],
                         ids=["newline", "fullwidth"])
def test_action_with_trailing_newline_or_lookalike_is_invalid(action: str) -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": action, "Resource": "*"}]}
    assert any(f.severity == "ERROR" for f in validate_policy(doc))


@pytest.mark.parametrize("value", ["\u0663", "1\n", "\uff11"],
                         ids=["arabic-indic", "newline", "fullwidth"])
def test_numeric_condition_value_is_ascii(value: str) -> None:
    from bastion.iam.values import parse_number

    with pytest.raises(ValueError):
        parse_number(value)
