"""IAM policy elements: Variables and tags — in Resource and in condition values."""

from __future__ import annotations

from typing import Any

from tests.iam import ACCOUNT, ACTION, ALLOW_ALL

VARS = "IAM policy elements: Variables and tags"
WHERE = f"{VARS} › Where you can use policy variables"
DEFAULTS = f"{VARS} › Specifying default values"
SPECIAL = f"{VARS} › Special characters"
INFO = f"{VARS} › Request information that you can use for policy variables"
NO_VALUE = f"{VARS} › (a variable whose key is absent: the element does not match)"
VERSION = "IAM JSON policy elements: Version (2008-10-17: no policy variables)"
FAIL_CLOSED = "Bastion fail-closed rule (bastion.iam.evaluate): unresolvable variable in a Deny"
MULTI = "Single-valued vs. multivalued context keys › Key points (no multivalued keys as variables)"

ORDERS = f"arn:bastion:orders:eu-1:{ACCOUNT}:order"


def allow(resource: str | list[str], version: str | None = "2012-10-17",
          condition: dict[str, Any] | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"Sid": "Var", "Effect": "Allow", "Action": ACTION, "Resource": resource}
    if condition:
        st["Condition"] = condition
    doc: dict[str, Any] = {"Statement": [st]}
    if version:
        doc["Version"] = version
    return doc


def deny(resource: str, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"Sid": "Var", "Effect": "Deny", "Action": ACTION, "Resource": resource}
    if condition:
        st["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [st]}


def v(id: str, rule: str, policy: dict[str, Any], resource: str, context: dict[str, Any],
      expect: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": id, "rule": rule, "identity": [*(extra or []), policy], "resource": resource,
            "context": context, "expect": expect}


HOME = f"{ORDERS}/${{aws:username}}/*"
CASES = [
    v("resource-username-own", WHERE, allow(HOME), f"{ORDERS}/alice/1", {"aws:username": "alice"},
      "allowed"),
    v("resource-username-other", WHERE, allow(HOME), f"{ORDERS}/bob/1", {"aws:username": "alice"},
      "implicitDeny"),
    v("resource-username-absent-allow", NO_VALUE, allow(HOME), f"{ORDERS}/alice/1", {},
      "implicitDeny"),
    v("resource-username-absent-deny", FAIL_CLOSED, deny(HOME), f"{ORDERS}/alice/1", {},
      "explicitDeny", [ALLOW_ALL]),
    v("resource-username-deny-other-user", WHERE, deny(HOME), f"{ORDERS}/bob/1",
      {"aws:username": "alice"}, "allowed", [ALLOW_ALL]),
    v("resource-key-name-case-insensitive", INFO, allow(f"{ORDERS}/${{AWS:UserName}}/*"),
      f"{ORDERS}/alice/1", {"aws:username": "alice"}, "allowed"),
    v("resource-value-case-sensitive", WHERE, allow(HOME), f"{ORDERS}/Alice/1",
      {"aws:username": "alice"}, "implicitDeny"),
    v("resource-default-used", DEFAULTS, allow(f"{ORDERS}/${{aws:username, 'guest'}}/*"),
      f"{ORDERS}/guest/1", {}, "allowed"),
    v("resource-default-ignored-when-present", DEFAULTS,
      allow(f"{ORDERS}/${{aws:username, 'guest'}}/*"), f"{ORDERS}/guest/1",
      {"aws:username": "alice"}, "implicitDeny"),
    v("resource-default-no-spaces", DEFAULTS, allow(f"{ORDERS}/${{aws:username,'guest'}}/*"),
      f"{ORDERS}/guest/1", {}, "allowed"),
    v("resource-principal-tag", INFO, allow(f"{ORDERS}/${{aws:PrincipalTag/team}}/*"),
      f"{ORDERS}/red/1", {"aws:PrincipalTag/team": "red"}, "allowed"),
    v("resource-special-star-literal", SPECIAL, allow(f"{ORDERS}/${{*}}"), f"{ORDERS}/*",
      {}, "allowed"),
    v("resource-special-star-not-wildcard", SPECIAL, allow(f"{ORDERS}/${{*}}"), f"{ORDERS}/1",
      {}, "implicitDeny"),
    v("resource-special-qmark-literal", SPECIAL, allow(f"{ORDERS}/a${{?}}"), f"{ORDERS}/a?", {},
      "allowed"),
    v("resource-special-qmark-not-wildcard", SPECIAL, allow(f"{ORDERS}/a${{?}}"),
      f"{ORDERS}/ab", {}, "implicitDeny"),
    v("resource-special-dollar", SPECIAL, allow(f"{ORDERS}/${{$}}{{x}}"), f"{ORDERS}/${{x}}", {},
      "allowed"),
    v("resource-substituted-star-is-literal", WHERE, allow(f"{ORDERS}/${{aws:username}}/x"),
      f"{ORDERS}/anyone/x", {"aws:username": "*"}, "implicitDeny"),
    v("resource-substituted-star-matches-itself", WHERE,
      allow(f"{ORDERS}/${{aws:username}}/x"), f"{ORDERS}/*/x", {"aws:username": "*"}, "allowed"),
    v("resource-substituted-colon-does-not-split", WHERE,
      allow(f"{ORDERS}/${{aws:username}}"), f"{ORDERS}/a:b", {"aws:username": "a:b"}, "allowed"),
    v("resource-variable-in-region", WHERE,
      allow(f"arn:bastion:orders:${{aws:RequestedRegion}}:{ACCOUNT}:order/*"), f"{ORDERS}/1",
      {"aws:RequestedRegion": "eu-1"}, "allowed"),
    v("resource-variable-in-region-other", WHERE,
      allow(f"arn:bastion:orders:${{aws:RequestedRegion}}:{ACCOUNT}:order/*"), f"{ORDERS}/1",
      {"aws:RequestedRegion": "eu-2"}, "implicitDeny"),
    v("resource-variable-multivalued-unresolvable", MULTI,
      allow(f"{ORDERS}/${{bastion:Scope}}/*"), f"{ORDERS}/a/1", {"bastion:Scope": ["a", "b"]},
      "implicitDeny"),
    v("resource-variable-one-element-list", MULTI, allow(f"{ORDERS}/${{bastion:Scope}}/*"),
      f"{ORDERS}/a/1", {"bastion:Scope": ["a"]}, "allowed"),
    v("resource-variable-int-value", INFO, allow(f"{ORDERS}/${{bastion:Tenant}}/*"),
      f"{ORDERS}/42/1", {"bastion:Tenant": 42}, "allowed"),
    v("resource-variable-dict-value-unknown", FAIL_CLOSED, deny(HOME), f"{ORDERS}/alice/1",
      {"aws:username": {"nested": "alice"}}, "explicitDeny", [ALLOW_ALL]),
    v("resource-list-second-pattern-resolves", WHERE,
      allow([f"{ORDERS}/${{aws:PrincipalTag/team}}/*", f"{ORDERS}/shared/*"]),
      f"{ORDERS}/shared/1", {}, "allowed"),
    v("resource-2008-literal-text", VERSION, allow(HOME, version="2008-10-17"),
      f"{ORDERS}/alice/1", {"aws:username": "alice"}, "implicitDeny"),
    v("resource-2008-literal-matches-itself", VERSION, allow(HOME, version="2008-10-17"),
      f"{ORDERS}/${{aws:username}}/1", {"aws:username": "alice"}, "allowed"),
    v("resource-no-version-is-2008", VERSION, allow(HOME, version=None), f"{ORDERS}/alice/1",
      {"aws:username": "alice"}, "implicitDeny"),
    v("condition-tag-matches-resource-tag", WHERE,
      allow("*", condition={"StringEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}}),
      f"{ORDERS}/1", {"aws:PrincipalTag/team": "red", "aws:ResourceTag/team": "red"}, "allowed"),
    v("condition-tag-differs", WHERE,
      allow("*", condition={"StringEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}}),
      f"{ORDERS}/1", {"aws:PrincipalTag/team": "red", "aws:ResourceTag/team": "blue"},
      "implicitDeny"),
    v("condition-variable-absent-allow", NO_VALUE,
      allow("*", condition={"StringEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}}),
      f"{ORDERS}/1", {"aws:PrincipalTag/team": "red"}, "implicitDeny"),
    v("condition-variable-absent-negated-deny", FAIL_CLOSED,
      deny("*", {"StringNotEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}}),
      f"{ORDERS}/1", {"aws:PrincipalTag/team": "red"}, "explicitDeny", [ALLOW_ALL]),
    v("condition-variable-present-negated-deny-same", WHERE,
      deny("*", {"StringNotEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}}),
      f"{ORDERS}/1", {"aws:PrincipalTag/team": "red", "aws:ResourceTag/team": "red"}, "allowed",
      [ALLOW_ALL]),
    v("condition-variable-default", DEFAULTS,
      allow("*", condition={"StringEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team, 'red'}"}}),
      f"{ORDERS}/1", {"aws:PrincipalTag/team": "red"}, "allowed"),
    v("condition-like-home-prefix", WHERE,
      allow("*", condition={"StringLike": {"orders:prefix": "home/${aws:username}/*"}}),
      f"{ORDERS}/1", {"aws:username": "alice", "orders:prefix": "home/alice/docs"}, "allowed"),
    v("condition-like-home-prefix-other", WHERE,
      allow("*", condition={"StringLike": {"orders:prefix": "home/${aws:username}/*"}}),
      f"{ORDERS}/1", {"aws:username": "alice", "orders:prefix": "home/bob/docs"}, "implicitDeny"),
    v("condition-like-substituted-star-literal", WHERE,
      allow("*", condition={"StringLike": {"orders:prefix": "home/${aws:username}/*"}}),
      f"{ORDERS}/1", {"aws:username": "*", "orders:prefix": "home/bob/docs"}, "implicitDeny"),
    v("condition-like-special-star", SPECIAL,
      allow("*", condition={"StringLike": {"orders:prefix": "a${*}b"}}),
      f"{ORDERS}/1", {"orders:prefix": "a*b"}, "allowed"),
    v("condition-like-special-star-not-wildcard", SPECIAL,
      allow("*", condition={"StringLike": {"orders:prefix": "a${*}b"}}),
      f"{ORDERS}/1", {"orders:prefix": "axyzb"}, "implicitDeny"),
    v("condition-ignore-case-variable", WHERE,
      allow("*", condition={"StringEqualsIgnoreCase": {"orders:owner": "${aws:username}"}}),
      f"{ORDERS}/1", {"aws:username": "Alice", "orders:owner": "ALICE"}, "allowed"),
    v("condition-arn-variable", WHERE,
      allow("*", condition={"ArnEquals": {"aws:SourceArn":
                                          f"arn:bastion:sns:eu-1:{ACCOUNT}:${{aws:username}}"}}),
      f"{ORDERS}/1", {"aws:username": "alice",
                      "aws:SourceArn": f"arn:bastion:sns:eu-1:{ACCOUNT}:alice"}, "allowed"),
    v("condition-arn-variable-other", WHERE,
      allow("*", condition={"ArnEquals": {"aws:SourceArn":
                                          f"arn:bastion:sns:eu-1:{ACCOUNT}:${{aws:username}}"}}),
      f"{ORDERS}/1", {"aws:username": "alice",
                      "aws:SourceArn": f"arn:bastion:sns:eu-1:{ACCOUNT}:bob"}, "implicitDeny"),
    v("condition-bool-variable", WHERE,
      allow("*", condition={"Bool": {"aws:SecureTransport": "${orders:expected}"}}),
      f"{ORDERS}/1", {"aws:SecureTransport": True, "orders:expected": "true"}, "allowed"),
    v("condition-2008-literal", VERSION,
      allow("*", version="2008-10-17", condition={"StringEquals": {"orders:owner": "${aws:username}"}}),
      f"{ORDERS}/1", {"aws:username": "alice", "orders:owner": "alice"}, "implicitDeny"),
    v("condition-2008-literal-matches-itself", VERSION,
      allow("*", version="2008-10-17", condition={"StringEquals": {"orders:owner": "${aws:username}"}}),
      f"{ORDERS}/1", {"aws:username": "alice", "orders:owner": "${aws:username}"}, "allowed"),
]
