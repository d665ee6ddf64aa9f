"""Validation findings (IAM Access Analyzer ``validate-policy`` style): code + JSON path.

Each row: a document, the policy kind, and findings that must be reported as
``(severity, code, path)``; with ``exact=True`` nothing else may be reported.
"""

from __future__ import annotations

from typing import Any

from tests.iam import ACCOUNT

GRAMMAR = "IAM JSON policy grammar"
ELEMENTS = "IAM JSON policy element reference"
VERSION = "IAM JSON policy elements: Version"
STATEMENT = "IAM JSON policy elements: Statement"
SID = "IAM JSON policy elements: Sid"
EFFECT = "IAM JSON policy elements: Effect"
ACTION = "IAM JSON policy elements: Action"
RESOURCE = "IAM JSON policy elements: Resource"
PRINCIPAL = "AWS JSON policy elements: Principal"
CONDITION = "IAM JSON policy elements: Condition operators"
VARS = "IAM policy elements: Variables and tags"
QUOTAS = "IAM and AWS STS quotas › IAM object quotas (policy size)"
AA = "IAM Access Analyzer policy validation › Access Analyzer policy check reference"
KEYS = "AWS global condition context keys"
MULTI = "Single-valued vs. multivalued context keys"

ORDER = f"arn:bastion:orders:eu-1:{ACCOUNT}:order/1"
V = "2012-10-17"


def st(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"Effect": "Allow", "Action": "orders:GetOrder", "Resource": ORDER}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def doc(*statements: dict[str, Any], version: Any = V) -> dict[str, Any]:
    d: dict[str, Any] = {"Statement": list(statements)}
    if version is not ...:
        d["Version"] = version
    return d


def r(id: str, rule: str, document: Any, findings: list[tuple[str, str, str]],
      kind: str = "identity", exact: bool = False, **extra: Any) -> dict[str, Any]:
    return {"id": id, "rule": rule, "doc": document, "kind": kind, "findings": findings,
            "exact": exact, **extra}


def cond(block: Any) -> dict[str, Any]:
    return doc(st(Condition=block))


RP = {"AWS": f"arn:bastion:iam::{ACCOUNT}:user/alice"}
E, W, S, SUG = "ERROR", "WARNING", "SECURITY_WARNING", "SUGGESTION"
C0 = "Statement[0].Condition"

CASES = [
    # -- clean documents -------------------------------------------------------------------
    r("clean-identity", GRAMMAR, doc(st(Sid="Read")), [], exact=True),
    r("clean-single-statement-object", STATEMENT,
      {"Version": V, "Statement": st(Sid="Read")}, [], exact=True),
    r("clean-resource-policy", PRINCIPAL, doc(st(Principal=RP)), [], kind="resource",
      exact=True),
    r("clean-trust-policy", PRINCIPAL,
      doc({"Effect": "Allow", "Principal": {"Service": "orders.bastion"},
           "Action": "sts:AssumeRole"}), [], kind="trust", exact=True),
    r("clean-every-operator", CONDITION, cond({
        "StringEquals": {"aws:username": "alice"}, "StringLike": {"orders:prefix": "a/*"},
        "NumericLessThan": {"orders:n": 10}, "DateGreaterThan": {"aws:CurrentTime": "2020-01-01"},
        "Bool": {"aws:SecureTransport": "true"}, "BinaryEquals": {"orders:b": "b3RoZXI="},
        "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]},
        "ArnLike": {"aws:SourceArn": "arn:bastion:sns:*:*:*"}, "Null": {"aws:TokenIssueTime": "false"},
        "ForAnyValue:StringEquals": {"aws:TagKeys": "a"}, "StringEqualsIfExists": {"orders:x": "y"},
    }), [], exact=True),
    r("clean-variables", VARS, doc(st(Resource=f"arn:bastion:orders:eu-1:{ACCOUNT}:order/"
                                      "${aws:username, 'guest'}/${*}"))
      , [], exact=True),
    # -- document level --------------------------------------------------------------------
    r("invalid-json-text", GRAMMAR, "{not json", [(E, "INVALID_JSON", "")], exact=True),
    r("invalid-json-bytes", GRAMMAR, b"\xff\xfe\x00garbage", [(E, "INVALID_JSON", "")],
      exact=True),
    r("invalid-json-nan", GRAMMAR, '{"Version": NaN}', [(E, "INVALID_JSON", "")], exact=True),
    r("invalid-json-deep", GRAMMAR, "[" * 100_000 + "]" * 100_000, [(E, "INVALID_JSON", "")],
      exact=True),
    r("invalid-json-object", GRAMMAR, object(), [(E, "INVALID_JSON", "")], exact=True),
    r("invalid-json-mapping-with-nan", GRAMMAR, {"Version": float("nan")},
      [(E, "INVALID_JSON", "")], exact=True),
    r("policy-not-object", GRAMMAR, "[]", [(E, "INVALID_TYPE", "")], exact=True),
    r("unknown-top-level", GRAMMAR, {**doc(st()), "Statements": []},
      [(E, "UNKNOWN_ELEMENT", "Statements")]),
    r("duplicate-key", GRAMMAR,
      '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Effect": "Deny", '
      '"Action": "orders:GetOrder", "Resource": "*"}]}',
      [(E, "DUPLICATE_KEY", "Statement[0].Effect")]),
    r("duplicate-condition-operator", GRAMMAR,
      '{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "a:b", '
      '"Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}, '
      '"Bool": {"aws:MultiFactorAuthPresent": "true"}}}}',
      [(E, "DUPLICATE_KEY", "Statement.Condition.Bool")]),
    r("missing-version", VERSION, doc(st(), version=...), [(W, "MISSING_VERSION", "Version")],
      exact=True),
    r("invalid-version", VERSION, doc(st(), version="2012-10-18"),
      [(E, "INVALID_VERSION", "Version")]),
    r("invalid-version-type", VERSION, doc(st(), version=2012), [(E, "INVALID_VERSION", "Version")]),
    r("id-not-string", GRAMMAR, {**doc(st()), "Id": 5}, [(E, "INVALID_TYPE", "Id")]),
    r("missing-statement", STATEMENT, {"Version": V}, [(E, "MISSING_STATEMENT", "Statement")]),
    r("empty-statement-list", STATEMENT, {"Version": V, "Statement": []},
      [(E, "EMPTY_ARRAY", "Statement")]),
    r("statement-wrong-type", STATEMENT, {"Version": V, "Statement": "Allow"},
      [(E, "INVALID_TYPE", "Statement")]),
    r("statement-item-wrong-type", STATEMENT, {"Version": V, "Statement": [st(), 3]},
      [(E, "INVALID_TYPE", "Statement[1]")]),
    r("size-identity", QUOTAS,
      doc(st(Action=[f"orders:Action{i:05d}" for i in range(400)])),
      [(E, "POLICY_SIZE_EXCEEDED", "")]),
    r("size-inline-user-parameter", QUOTAS,
      doc(st(Action=[f"orders:Action{i:05d}" for i in range(100)])),
      [(E, "POLICY_SIZE_EXCEEDED", "")], max_size=2048),
    r("size-resource-allows-more", QUOTAS,
      doc(st(Principal=RP, Action=[f"orders:Action{i:05d}" for i in range(400)])), [],
      kind="resource", exact=True),
    r("size-whitespace-not-counted", QUOTAS,
      '{"Version":"2012-10-17",' + " " * 10_000 + '"Statement":{"Effect":"Allow",'
      '"Action":"a:b","Resource":"*"}}', [], exact=True),
    r("size-raw-input-cap", QUOTAS, " " * (2 << 20) + "{}", [(E, "POLICY_SIZE_EXCEEDED", "")],
      exact=True),
    r("invalid-kind", GRAMMAR, doc(st()), [(E, "INVALID_KIND", "")], kind="scp", exact=True),
    # -- statement elements ----------------------------------------------------------------
    r("unknown-statement-element", ELEMENTS, doc(st(Actions="orders:GetOrder")),
      [(E, "UNKNOWN_ELEMENT", "Statement[0].Actions")]),
    r("sid-not-string", SID, doc(st(Sid=1)), [(E, "INVALID_TYPE", "Statement[0].Sid")]),
    r("sid-invalid-chars-identity", SID, doc(st(Sid="read orders")),
      [(E, "INVALID_SID", "Statement[0].Sid")]),
    r("sid-spaces-ok-in-resource-policy", SID, doc(st(Sid="read orders", Principal=RP)), [],
      kind="resource", exact=True),
    r("duplicate-sid", SID, doc(st(Sid="A"), st(Sid="A")),
      [(E, "DUPLICATE_SID", "Statement[1].Sid")]),
    r("missing-effect", EFFECT, doc(st(Effect=...)), [(E, "MISSING_EFFECT", "Statement[0]")]),
    r("invalid-effect", EFFECT, doc(st(Effect="allow")), [(E, "INVALID_EFFECT",
                                                            "Statement[0].Effect")]),
    r("missing-action", ACTION, doc(st(Action=...)), [(E, "MISSING_ACTION", "Statement[0]")]),
    r("action-and-not-action", ACTION, doc(st(NotAction="orders:Delete*")),
      [(E, "ACTION_AND_NOT_ACTION", "Statement[0]")]),
    r("empty-action-list", ACTION, doc(st(Action=[])), [(E, "EMPTY_ARRAY", "Statement[0].Action")]),
    r("action-wrong-type", ACTION, doc(st(Action={"orders": "GetOrder"})),
      [(E, "INVALID_TYPE", "Statement[0].Action")]),
    r("action-item-wrong-type", ACTION, doc(st(Action=["orders:GetOrder", 7])),
      [(E, "INVALID_TYPE", "Statement[0].Action[1]")]),
    r("action-no-service", ACTION, doc(st(Action="GetOrder")),
      [(E, "INVALID_ACTION", "Statement[0].Action")]),
    r("action-bad-chars", ACTION, doc(st(Action=["orders:GetOrder", "orders:Get Order"])),
      [(E, "INVALID_ACTION", "Statement[0].Action[1]")]),
    r("action-variable", VARS, doc(st(Action="orders:${aws:username}")),
      [(E, "INVALID_ACTION", "Statement[0].Action")]),
    r("not-action-bad", ACTION, doc(st(Action=..., NotAction=[":x"])),
      [(E, "INVALID_ACTION", "Statement[0].NotAction[0]")]),
    r("duplicate-action", AA, doc(st(Action=["orders:GetOrder", "orders:GetOrder"])),
      [(SUG, "DUPLICATE_VALUE", "Statement[0].Action[1]")], exact=True),
    r("missing-resource", RESOURCE, doc(st(Resource=...)),
      [(E, "MISSING_RESOURCE", "Statement[0]")]),
    r("resource-and-not-resource", RESOURCE, doc(st(NotResource="*")),
      [(E, "RESOURCE_AND_NOT_RESOURCE", "Statement[0]")]),
    r("resource-not-arn", RESOURCE, doc(st(Resource="order/1")),
      [(E, "INVALID_ARN", "Statement[0].Resource")]),
    r("resource-arn-five-components", RESOURCE, doc(st(Resource="arn:bastion:orders:eu-1:order")),
      [(E, "INVALID_ARN", "Statement[0].Resource")]),
    r("resource-arn-bad-account", RESOURCE,
      doc(st(Resource=["*", "arn:bastion:orders:eu-1:1234:order/1"])),
      [(E, "INVALID_ARN", "Statement[0].Resource[1]")]),
    r("resource-arn-empty-resource", RESOURCE, doc(st(Resource=f"arn:bastion:orders:eu-1:{ACCOUNT}:")),
      [(E, "INVALID_ARN", "Statement[0].Resource")]),
    r("resource-arn-wildcard-account-ok", RESOURCE, doc(st(Resource="arn:bastion:orders:*:*:order/*")),
      [], exact=True),
    r("resource-in-trust-policy", PRINCIPAL,
      doc({"Effect": "Allow", "Principal": RP, "Action": "sts:AssumeRole", "Resource": "*"}),
      [(E, "RESOURCE_NOT_ALLOWED", "Statement[0].Resource")], kind="trust"),
    r("resource-variable-malformed", VARS,
      doc(st(Resource=f"arn:bastion:orders:eu-1:{ACCOUNT}:order/${{aws:username")),
      [(E, "INVALID_VARIABLE", "Statement[0].Resource")]),
    r("resource-variable-bad-default", VARS,
      doc(st(Resource=f"arn:bastion:orders:eu-1:{ACCOUNT}:order/${{aws:username, guest}}")),
      [(E, "INVALID_VARIABLE", "Statement[0].Resource")]),
    r("resource-variable-empty", VARS,
      doc(st(Resource=f"arn:bastion:orders:eu-1:{ACCOUNT}:order/${{}}")),
      [(E, "INVALID_VARIABLE", "Statement[0].Resource")]),
    r("variables-in-2008", VARS,
      doc(st(Resource=f"arn:bastion:orders:eu-1:{ACCOUNT}:order/${{aws:username}}"),
          version="2008-10-17"),
      [(W, "VARIABLES_IN_2008_POLICY", "Statement[0].Resource")], exact=True),
    r("variables-without-version", VARS,
      doc(st(Condition={"StringEquals": {"orders:owner": "${aws:username}"}}), version=...),
      [(W, "MISSING_VERSION", "Version"),
       (W, "VARIABLES_IN_2008_POLICY", "Statement[0].Condition.StringEquals.orders:owner")],
      exact=True),
    # -- principals --------------------------------------------------------------------------
    r("principal-in-identity-policy", PRINCIPAL, doc(st(Principal=RP)),
      [(E, "PRINCIPAL_NOT_ALLOWED", "Statement[0].Principal")]),
    r("not-principal-in-boundary", PRINCIPAL, doc(st(NotPrincipal=RP)),
      [(E, "PRINCIPAL_NOT_ALLOWED", "Statement[0].NotPrincipal")], kind="boundary"),
    r("principal-in-session-policy", PRINCIPAL, doc(st(Principal="*")),
      [(E, "PRINCIPAL_NOT_ALLOWED", "Statement[0].Principal")], kind="session"),
    r("missing-principal", PRINCIPAL, doc(st()), [(E, "MISSING_PRINCIPAL", "Statement[0]")],
      kind="resource"),
    r("principal-and-not-principal", PRINCIPAL, doc(st(Principal=RP, NotPrincipal=RP)),
      [(E, "PRINCIPAL_AND_NOT_PRINCIPAL", "Statement[0]")], kind="resource"),
    r("principal-wrong-type", PRINCIPAL, doc(st(Principal=["*"])),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal")], kind="resource"),
    r("principal-unknown-type", PRINCIPAL, doc(st(Principal={"User": "alice"})),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal.User")], kind="resource"),
    r("principal-empty-object", PRINCIPAL, doc(st(Principal={})),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal")], kind="resource"),
    r("principal-partial-wildcard", PRINCIPAL,
      doc(st(Principal={"AWS": f"arn:bastion:iam::{ACCOUNT}:user/*"})),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal.AWS")], kind="resource"),
    r("principal-group", PRINCIPAL,
      doc(st(Principal={"AWS": [f"arn:bastion:iam::{ACCOUNT}:group/admins"]})),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal.AWS[0]")], kind="resource"),
    r("principal-malformed-arn", PRINCIPAL, doc(st(Principal={"AWS": "arn:bastion:iam"})),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal.AWS")], kind="resource"),
    r("principal-bad-account", PRINCIPAL, doc(st(Principal={"AWS": "12345"})),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal.AWS")], kind="resource"),
    r("principal-not-string", PRINCIPAL, doc(st(Principal={"AWS": [1]})),
      [(E, "INVALID_TYPE", "Statement[0].Principal.AWS[0]")], kind="resource"),
    r("principal-empty-list", PRINCIPAL, doc(st(Principal={"AWS": []})),
      [(E, "EMPTY_ARRAY", "Statement[0].Principal.AWS")], kind="resource"),
    r("principal-bad-service", PRINCIPAL, doc(st(Principal={"Service": "orders bastion"})),
      [(E, "INVALID_PRINCIPAL", "Statement[0].Principal.Service")], kind="resource"),
    r("principal-session-and-client-ok", PRINCIPAL, doc(st(Principal={"AWS": [
        f"arn:bastion:sts::{ACCOUNT}:assumed-role/deployer/ci",
        f"arn:bastion:iam::{ACCOUNT}:client/orders-sync", f"arn:bastion:iam::{ACCOUNT}:root",
        f"arn:aws:iam::{ACCOUNT}:role/path/admin", ACCOUNT]})), [], kind="resource", exact=True),
    # -- conditions --------------------------------------------------------------------------
    r("condition-not-object", CONDITION, doc(st(Condition=["StringEquals"])),
      [(E, "INVALID_TYPE", C0)]),
    r("condition-empty", CONDITION, doc(st(Condition={})), [(SUG, "EMPTY_CONDITION", C0)],
      exact=True),
    r("unknown-operator", CONDITION, cond({"StringEqual": {"aws:username": "a"}}),
      [(E, "UNKNOWN_OPERATOR", f"{C0}.StringEqual")]),
    r("unknown-operator-case", CONDITION, cond({"stringequals": {"aws:username": "a"}}),
      [(E, "UNKNOWN_OPERATOR", f"{C0}.stringequals")]),
    r("unknown-set-operator", CONDITION, cond({"ForSomeValues:StringEquals": {"aws:TagKeys": "a"}}),
      [(E, "UNKNOWN_OPERATOR", f"{C0}.ForSomeValues:StringEquals")]),
    r("null-if-exists", CONDITION, cond({"NullIfExists": {"aws:username": "true"}}),
      [(E, "INVALID_OPERATOR_QUALIFIER", f"{C0}.NullIfExists")]),
    r("null-with-set-operator", CONDITION, cond({"ForAllValues:Null": {"aws:TagKeys": "true"}}),
      [(E, "INVALID_OPERATOR_QUALIFIER", f"{C0}.ForAllValues:Null")]),
    r("operator-not-object", CONDITION, cond({"StringEquals": "aws:username"}),
      [(E, "INVALID_TYPE", f"{C0}.StringEquals")]),
    r("operator-empty", CONDITION, cond({"StringEquals": {}}),
      [(E, "EMPTY_OPERATOR", f"{C0}.StringEquals")]),
    r("condition-key-no-prefix", CONDITION, cond({"StringEquals": {"username": "a"}}),
      [(E, "INVALID_CONDITION_KEY", f"{C0}.StringEquals.username")]),
    r("condition-values-empty", CONDITION, cond({"StringEquals": {"aws:username": []}}),
      [(E, "EMPTY_ARRAY", f"{C0}.StringEquals.aws:username")]),
    r("condition-value-object", CONDITION, cond({"StringEquals": {"aws:username": {"a": 1}}}),
      [(E, "INVALID_TYPE", f"{C0}.StringEquals.aws:username")]),
    r("condition-value-null", CONDITION, cond({"StringEquals": {"aws:username": [None]}}),
      [(E, "INVALID_TYPE", f"{C0}.StringEquals.aws:username[0]")]),
    r("condition-string-float", CONDITION, cond({"StringEquals": {"aws:username": 1.5}}),
      [(E, "INVALID_TYPE", f"{C0}.StringEquals.aws:username")]),
    r("numeric-not-a-number", CONDITION, cond({"NumericLessThan": {"orders:n": "ten"}}),
      [(E, "INVALID_NUMBER", f"{C0}.NumericLessThan.orders:n")]),
    r("numeric-variable-not-allowed", VARS, cond({"NumericEquals": {"orders:n": "${orders:m}"}}),
      [(E, "INVALID_NUMBER", f"{C0}.NumericEquals.orders:n")]),
    r("numeric-bool", CONDITION, cond({"NumericEquals": {"orders:n": [1, True]}}),
      [(E, "INVALID_NUMBER", f"{C0}.NumericEquals.orders:n[1]")]),
    r("date-invalid", CONDITION, cond({"DateLessThan": {"aws:CurrentTime": "2020-13-45"}}),
      [(E, "INVALID_DATE", f"{C0}.DateLessThan.aws:CurrentTime")]),
    r("date-words", CONDITION, cond({"DateGreaterThan": {"aws:CurrentTime": ["2020-01-01",
                                                                             "tomorrow"]}}),
      [(E, "INVALID_DATE", f"{C0}.DateGreaterThan.aws:CurrentTime[1]")]),
    r("bool-invalid", CONDITION, cond({"Bool": {"aws:SecureTransport": "yes"}}),
      [(E, "INVALID_BOOLEAN", f"{C0}.Bool.aws:SecureTransport")]),
    r("null-invalid", CONDITION, cond({"Null": {"aws:username": "maybe"}}),
      [(E, "INVALID_BOOLEAN", f"{C0}.Null.aws:username")]),
    r("binary-invalid", CONDITION, cond({"BinaryEquals": {"orders:b": "not base64!"}}),
      [(E, "INVALID_BASE64", f"{C0}.BinaryEquals.orders:b")]),
    r("cidr-invalid", CONDITION, cond({"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}),
      [(E, "INVALID_CIDR", f"{C0}.IpAddress.aws:SourceIp")]),
    r("cidr-invalid-v6", CONDITION, cond({"NotIpAddress": {"aws:SourceIp": ["::1", "2001:db8::g/32"]}}),
      [(E, "INVALID_CIDR", f"{C0}.NotIpAddress.aws:SourceIp[1]")]),
    r("arn-condition-malformed", CONDITION, cond({"ArnLike": {"aws:SourceArn": "sns:topic"}}),
      [(E, "INVALID_ARN", f"{C0}.ArnLike.aws:SourceArn")]),
    r("arn-condition-variable-ok", VARS,
      cond({"ArnEquals": {"aws:SourceArn": "arn:bastion:sns:eu-1:${aws:PrincipalAccount}:t"}}),
      [], exact=True),
    r("condition-variable-malformed", VARS,
      cond({"StringLike": {"orders:prefix": "home/${aws:username/*"}}),
      [(E, "INVALID_VARIABLE", f"{C0}.StringLike.orders:prefix")]),
    r("unknown-global-key", KEYS, cond({"StringEquals": {"aws:UserNmae": "alice"}}),
      [(W, "UNKNOWN_GLOBAL_CONDITION_KEY", f"{C0}.StringEquals.aws:UserNmae")], exact=True),
    r("global-key-any-case-known", KEYS, cond({"StringEquals": {"AWS:SOURCEVPCE": "vpce-1"}}), [],
      exact=True),
    r("tag-prefix-known", KEYS, cond({"StringEquals": {"aws:PrincipalTag/Dept": "eng"}}), [],
      exact=True),
    r("multivalued-key-without-set-operator", MULTI,
      cond({"StringEquals": {"aws:TagKeys": "a"}}),
      [(W, "MISSING_SET_OPERATOR", f"{C0}.StringEquals.aws:TagKeys")], exact=True),
    r("set-operator-on-single-valued-key", MULTI,
      cond({"ForAllValues:StringEquals": {"aws:username": "a"}}),
      [(W, "SET_OPERATOR_ON_SINGLE_VALUED_KEY", f"{C0}.ForAllValues:StringEquals.aws:username")],
      exact=True),
    # -- security warnings -------------------------------------------------------------------
    r("allow-star-star", AA, doc(st(Action="*", Resource="*")),
      [(S, "ALLOW_ALL_ACTIONS_ALL_RESOURCES", "Statement[0]")], exact=True),
    r("allow-star-star-in-lists", AA, doc(st(Action=["orders:GetOrder", "*"], Resource=["*"])),
      [(S, "ALLOW_ALL_ACTIONS_ALL_RESOURCES", "Statement[0]")], exact=True),
    r("deny-star-star-is-fine", AA, doc(st(Effect="Deny", Action="*", Resource="*")), [],
      exact=True),
    r("allow-not-action", AA, doc(st(Action=..., NotAction="orders:Delete*")),
      [(S, "ALLOW_WITH_NOT_ACTION", "Statement[0].NotAction")], exact=True),
    r("allow-not-resource", AA, doc(st(Resource=..., NotResource=ORDER)),
      [(S, "ALLOW_WITH_NOT_RESOURCE", "Statement[0].NotResource")], exact=True),
    r("allow-not-principal", AA, doc(st(NotPrincipal=RP)),
      [(S, "ALLOW_WITH_NOT_PRINCIPAL", "Statement[0].NotPrincipal")], kind="resource",
      exact=True),
    r("public-principal", AA, doc(st(Principal="*")),
      [(S, "PUBLIC_PRINCIPAL", "Statement[0].Principal")], kind="resource", exact=True),
    r("public-aws-star-in-list", AA, doc(st(Principal={"AWS": [ACCOUNT, "*"]})),
      [(S, "PUBLIC_PRINCIPAL", "Statement[0].Principal")], kind="resource", exact=True),
    r("public-principal-with-condition", AA,
      doc(st(Principal="*", Condition={"Bool": {"aws:SecureTransport": "true"}})), [],
      kind="resource", exact=True),
    r("public-principal-deny-fine", AA, doc(st(Effect="Deny", Principal="*")), [],
      kind="resource", exact=True),
]
