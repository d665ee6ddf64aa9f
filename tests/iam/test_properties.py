"""Property tests: the matcher against a naive reference, and evaluation invariants."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.iam import (
    Decision,
    PolicySet,
    Request,
    evaluate,
    parse_policy,
    validate_policy,
)
from bastion.iam._wildcard import compile_glob
from bastion.iam.arnmatch import compile_arn
from bastion.iam.variables import parse as parse_pieces
from tests.iam import ACCOUNT, ALICE, ROLE, SESSION

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def reference_glob(pattern: str, subject: str, *, ignore_case: bool = False) -> bool:
    """Naive reference: ``*`` → ``.*``, ``?`` → ``.``, everything else literal (no classes)."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, subject, flags) is not None


GLOB_CHARS = st.sampled_from("ab*?[]:/\\.$^\n")
SUBJECT_CHARS = st.sampled_from("ab[]:/\\.$^\n*?")


@SETTINGS
@given(st.text(GLOB_CHARS, max_size=12), st.text(SUBJECT_CHARS, max_size=16))
def test_glob_matches_reference(pattern: str, subject: str) -> None:
    assert compile_glob(pattern)(subject) == reference_glob(pattern, subject)


@SETTINGS
@given(st.text(GLOB_CHARS, max_size=8), st.data())
def test_glob_matches_reference_on_matching_subjects(pattern: str, data: st.DataObject) -> None:
    """Build a subject that the pattern should match, so positives are well covered."""
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(data.draw(st.text(SUBJECT_CHARS, max_size=3)))
        elif ch == "?":
            parts.append(data.draw(SUBJECT_CHARS))
        else:
            parts.append(ch)
    subject = "".join(parts)
    assert compile_glob(pattern)(subject) is True
    assert reference_glob(pattern, subject)


ACTION_CHARS = st.sampled_from("abAB:*?")


@SETTINGS
@given(st.text(ACTION_CHARS, min_size=1, max_size=10), st.text(st.sampled_from("abAB:"),
                                                                 max_size=10))
def test_action_matching_is_case_insensitive_glob(pattern: str, action: str) -> None:
    """IAM JSON policy elements: Action — case-insensitive, ``*``/``?`` wildcards."""
    expected = reference_glob(pattern, action, ignore_case=True)
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": pattern, "Resource": "*"}]}
    if any(f.severity == "ERROR" for f in validate_policy(doc)):
        return  # not an action pattern IAM accepts (e.g. no colon)
    decision = evaluate(Request(ALICE, action, "*"), PolicySet([parse_policy(doc)]))
    assert decision.allowed == expected


COMPONENT = st.text(st.sampled_from("ab*?/-"), max_size=5)
SUBJECT_COMPONENT = st.text(st.sampled_from("ab/-:"), max_size=5)


@SETTINGS
@given(st.lists(COMPONENT, min_size=5, max_size=5), st.text(st.sampled_from("ab*?:/"), max_size=6),
       st.lists(SUBJECT_COMPONENT, min_size=6, max_size=6))
def test_arn_matching_is_per_component(pattern_parts: list[str], resource_pattern: str,
                                       subject_parts: list[str]) -> None:
    """ArnLike: each of the first five components matched on its own; the resource part may
    hold ``:`` (the subject's split is at the first five colons)."""
    pattern = "arn:" + ":".join(pattern_parts[1:] + [resource_pattern])
    subject = "arn:" + ":".join(subject_parts[1:])
    comps = subject.split(":", 5)
    want_parts = ["arn", *pattern_parts[1:], resource_pattern]
    expected = len(comps) == 6 and all(
        reference_glob(p, s) for p, s in zip(want_parts, comps, strict=True)
    )
    matcher = compile_arn(parse_pieces(pattern, variables=False, wildcards=True))
    assert matcher(subject) == expected  # type: ignore[operator]


# -- random policies and requests -------------------------------------------------------------

ORDER = f"arn:bastion:orders:eu-1:{ACCOUNT}:order/1"
ACTIONS = ["orders:GetOrder", "orders:Get*", "orders:*", "*", "billing:Pay", "orders:?etOrder",
           "ORDERS:getorder"]
RESOURCES = ["*", ORDER, "arn:bastion:orders:*:*:order/*", f"arn:bastion:orders:eu-1:{ACCOUNT}:"
             "order/${aws:username}", "arn:bastion:billing:eu-1:*:*"]
CONDITIONS: list[dict[str, Any]] = [
    {},
    {"StringEquals": {"aws:username": "alice"}},
    {"StringNotEquals": {"aws:username": "bob"}},
    {"StringLike": {"aws:username": "a*"}},
    {"NumericLessThan": {"orders:n": "10"}},
    {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
    {"Bool": {"aws:SecureTransport": "true"}},
    {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"ArnLike": {"aws:PrincipalArn": "arn:bastion:iam::*:user/*"}},
    {"Null": {"aws:TokenIssueTime": "true"}},
    {"ForAllValues:StringEquals": {"bastion:Scope": ["openid", "order:view"]}},
    {"ForAnyValue:StringLike": {"bastion:Scope": "order:*"}},
    {"StringEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}},
    {"BinaryEquals": {"orders:b": "b3RoZXI="}},
]


@st.composite
def statements(draw: st.DrawFn, effect: str | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": effect or draw(st.sampled_from(["Allow", "Deny"])),
        draw(st.sampled_from(["Action", "NotAction"])): draw(
            st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3)),
        draw(st.sampled_from(["Resource", "Resource", "NotResource"])): draw(
            st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2)),
    }
    condition = draw(st.sampled_from(CONDITIONS))
    if condition:
        statement["Condition"] = condition
    return statement


def policy(statement_list: list[dict[str, Any]], index: int, kind: str = "identity") -> Any:
    return parse_policy({"Version": "2012-10-17", "Statement": statement_list},
                        policy_id=f"{kind}{index}", kind=kind)  # type: ignore[arg-type]


POLICY_LISTS = st.lists(st.lists(statements(), min_size=1, max_size=3), max_size=4)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.binary(max_size=10),
    st.sampled_from(["alice", "bob", "10.1.2.3", "2026-01-01T00:00:00Z", "true", "false", "5",
                     "openid", "order:view", "red", ALICE, "b3RoZXI="]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=12,
)
KEYS = st.sampled_from(["aws:username", "AWS:UserName", "orders:n", "aws:CurrentTime",
                        "aws:SecureTransport", "aws:MultiFactorAuthPresent", "aws:SourceIp",
                        "aws:PrincipalArn", "aws:TokenIssueTime", "bastion:Scope",
                        "aws:PrincipalTag/team", "aws:ResourceTag/team", "orders:b",
                        "aws:ResourceAccount"])
CONTEXTS = st.dictionaries(KEYS, VALUES, max_size=8)
REQUESTS = st.builds(
    Request,
    principal=st.sampled_from([ALICE, SESSION, ROLE, "", "orders.bastion"]),
    action=st.sampled_from(["orders:GetOrder", "billing:Pay", "orders:DeleteOrder"]),
    resource=st.sampled_from([ORDER, "*", f"arn:bastion:orders:eu-1:{ACCOUNT}:order/alice",
                              f"arn:bastion:orders:eu-1:{ACCOUNT}:order/12", "order/1",
                              "arn:bastion:billing:eu-1:444455556666:invoice/1"]),
    context=CONTEXTS,
)


def _sets(identity: list[list[dict[str, Any]]], boundary: list[list[dict[str, Any]]] | None,
          session: list[list[dict[str, Any]]] | None) -> dict[str, Any]:
    return {
        "identity": PolicySet(policy(s, i) for i, s in enumerate(identity)),
        "boundary": None if boundary is None else PolicySet(
            policy(s, i, "boundary") for i, s in enumerate(boundary)),
        "session": None if session is None else PolicySet(
            policy(s, i, "session") for i, s in enumerate(session)),
    }


@SETTINGS
@given(POLICY_LISTS, st.none() | POLICY_LISTS, st.none() | POLICY_LISTS, REQUESTS,
       st.sampled_from(["identity", "boundary", "session", "resource"]))
def test_matching_deny_always_wins(identity: Any, boundary: Any, session: Any,
                                   request: Request, where: str) -> None:
    """Policy evaluation logic: an applicable explicit Deny anywhere decides explicitDeny."""
    deny = {"Effect": "Deny", "Action": request.action, "Resource": "*"}
    resource_policy = None
    if where == "resource":
        resource_policy = policy([{**deny, "Principal": "*"}], 0, "resource")
    else:
        target = {"identity": identity, "boundary": boundary, "session": session}[where]
        target = [*(target or []), [deny]]
        identity, boundary, session = (target if where == w else v for w, v in
                                       (("identity", identity), ("boundary", boundary),
                                        ("session", session)))
    decision = evaluate(request, **_sets(identity, boundary, session),
                        resource_policy=resource_policy)
    assert decision.decision == "explicitDeny"
    assert decision.statements


@SETTINGS
@given(POLICY_LISTS, st.none() | POLICY_LISTS, st.none() | POLICY_LISTS, REQUESTS,
       statements(effect="Allow"))
def test_adding_an_allow_never_denies(identity: Any, boundary: Any, session: Any,
                                      request: Request, extra: dict[str, Any]) -> None:
    """Monotonicity: an extra Allow statement can only keep or grant access."""
    before = evaluate(request, **_sets(identity, boundary, session))
    after = evaluate(request, **_sets([*identity, [extra]], boundary, session))
    if before.allowed:
        assert after.allowed
    if before.decision == "explicitDeny":
        assert after.decision == "explicitDeny"


@SETTINGS
@given(POLICY_LISTS, st.none() | POLICY_LISTS, REQUESTS, st.sampled_from(CONDITIONS))
def test_evaluate_never_raises_on_random_contexts(identity: Any, boundary: Any,
                                                  request: Request,
                                                  condition: dict[str, Any]) -> None:
    resource_statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "NotPrincipal": {"AWS": [ALICE]}, "Action": "billing:*",
         "Resource": "*"},
    ]
    if condition:
        resource_statements[0]["Condition"] = condition
    decision = evaluate(request, **_sets(identity, boundary, None),
                        resource_policy=policy(resource_statements, 0, "resource"))
    assert isinstance(decision, Decision)
    assert decision.decision in ("allowed", "explicitDeny", "implicitDeny")
    assert decision.allowed == (decision.decision == "allowed")
    assert bool(decision.statements) == (decision.decision != "implicitDeny")


@SETTINGS
@given(st.sampled_from([c for c in CONDITIONS if c]), CONTEXTS)
def test_a_condition_never_allows_what_it_would_not_deny(condition: dict[str, Any],
                                                         context: dict[str, Any]) -> None:
    """Fail-closed: the same condition in an Allow and in a Deny statement — if the Allow form
    grants, the Deny form denies (true counts for both; unknown only for Deny)."""
    allow = policy([{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": condition}],
                   0)
    deny = policy([{"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": condition}], 1)
    everything = policy([{"Effect": "Allow", "Action": "*", "Resource": "*"}], 2)
    request = Request(ALICE, "orders:GetOrder", ORDER, context)
    allowed = evaluate(request, PolicySet([allow])).allowed
    denied = evaluate(request, PolicySet([everything, deny])).decision == "explicitDeny"
    assert denied or not allowed


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["Version", "Statement", "Effect", "Action", "NotAction", "Resource",
                         "Principal", "Condition", "Sid", "AWS", "StringEquals", "Id", "x"]),
        inner, max_size=5),
    max_leaves=25,
)


@SETTINGS
@given(JSON | st.binary(max_size=64) | st.text(max_size=64),
       st.sampled_from(["identity", "resource", "trust", "boundary", "session"]))
def test_validate_never_raises(doc: Any, kind: str) -> None:
    findings = validate_policy(doc, kind=kind)  # type: ignore[arg-type]
    assert all(f.severity in ("ERROR", "SECURITY_WARNING", "WARNING", "SUGGESTION")
               for f in findings)
    if not any(f.severity == "ERROR" for f in findings):
        parse_policy(doc, kind=kind)  # type: ignore[arg-type]


def test_reference_is_not_fnmatch() -> None:
    """fnmatch treats ``[...]`` as a class; IAM (and this reference) do not."""
    assert reference_glob("a[b]", "a[b]") and not reference_glob("a[bc]", "ab")


PREFILTER_RESOURCES = [*RESOURCES, "arn:bastion:orders:eu-1:111122223333:order/*",
                       "arn:bastion:orders:eu-1:111122223333:order/1*",
                       "arn:bastion:orders:eu-1:111122223333:ord*",
                       "arn:bastion:orders:eu-1:111122223333:order/?"]


@st.composite
def indexed_statements(draw: st.DrawFn) -> dict[str, Any]:
    statement = draw(statements())
    key = "NotResource" if "NotResource" in statement else "Resource"
    statement[key] = draw(st.lists(st.sampled_from(PREFILTER_RESOURCES), min_size=1, max_size=3))
    return statement


def brute_force(request: Request, policy_set: PolicySet) -> str:
    """Reference for identity-only decisions: every statement, reference glob for the action,
    ``Statement.test`` (no index, no resource pre-filter) for the rest."""
    from bastion.iam.context import RequestState

    state = RequestState(request.principal, request.action, request.resource, request.context)
    allowed = False
    for p in policy_set:
        for s in p.statements:
            hit = any(reference_glob(a, request.action, ignore_case=True) for a in s.actions)
            if hit == s.not_action:
                continue
            r = s.test(state)
            if s.is_deny and r is not False:
                return "explicitDeny"
            allowed = allowed or (not s.is_deny and r is True)
    return "allowed" if allowed else "implicitDeny"


@SETTINGS
@given(st.lists(st.lists(indexed_statements(), min_size=1, max_size=4), max_size=5), REQUESTS)
def test_index_and_prefilter_agree_with_brute_force(policies_: Any, request: Request) -> None:
    policy_set = PolicySet(policy(s, i) for i, s in enumerate(policies_))
    if request.resource.startswith("arn:") and request.resource.split(":")[4] not in ("",
                                                                                      ACCOUNT):
        return  # cross-account: not modelled by the reference
    assert evaluate(request, policy_set).decision == brute_force(request, policy_set)
