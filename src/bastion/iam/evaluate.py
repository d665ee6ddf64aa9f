"""Policy evaluation logic (AWS IAM User Guide, "Policy evaluation logic").

Order, as "How AWS enforcement code logic evaluates requests to allow or deny access" gives it
(without Organizations SCPs/RCPs, which Bastion does not have):

1. **Explicit deny.** A matching ``Deny`` statement in any identity-based policy, the
   resource-based policy (when its ``Principal`` matches), the permissions boundary or the session
   policy decides ``explicitDeny``. Every matching Deny is reported.
2. **Resource-based policy.** Within one account, identity-based and resource-based allows are a
   union. A resource-based allow whose ``Principal`` names the requester *directly* (the IAM user
   ARN, the assumed-role *session* ARN, the client ARN) is not limited by an implicit deny in the
   permissions boundary or the session policy ("Permissions boundaries for IAM entities ›
   Resource-based policies"). An allow that reaches the requester through the role ARN, the
   account, ``"*"`` or ``NotPrincipal`` is limited by them, like an identity-based allow.
   **Role trust policies** (a ``resource_policy`` of kind ``trust``, for ``sts:AssumeRole``)
   follow "IAM roles › Role trust policy" and "Cross-account policy evaluation logic": the trust
   policy must allow (Principal, Action and Condition all matching); an identity-based allow
   alone never assumes a role. A statement that names the caller's own ARN (user or session)
   needs nothing more and is not limited by boundary or session policy; one that names the
   caller's role (a session assuming another role) is limited by them; one that trusts the
   account (``root``, the account ID, ``"*"``) or uses ``NotPrincipal`` only *delegates* to
   the account's identity-based policies, which must then allow ``sts:AssumeRole`` on the role
   too (and are limited by boundary and session policy like any identity-based allow).
3. **Permissions boundary** (when given): must also allow (intersection).
4. **Session policy** (when given): must also allow (intersection).
5. Otherwise ``implicitDeny``; ``reason`` names the gate that failed.

Cross-account ("Cross-account policy evaluation logic"): when the principal's account and the
resource's account (the account field of the resource ARN; for an ARN without one, such as
``arn:bastion:orders:::order/1`` or ``*``, the ``aws:ResourceAccount`` context key) are both known
and differ, the resource-based policy *and* the identity side (identity ∩ boundary ∩ session) must
both allow.

AWS quirk kept: a ``Deny`` with ``NotPrincipal`` in a resource-based policy always denies a
principal that has a permissions boundary ("Permissions boundaries for IAM entities", Important).
The account root user is *not* special here (AWS grants it everything): Bastion decides that
outside the engine.

**Fail-closed rule.** A statement's match is three-valued: true, false, or unknown (an
evaluation error: unreadable or mistyped context value, unresolvable policy variable, non-mapping
context). Unknown never allows and never lifts a deny:

- an ``Allow`` statement applies only when it matches *true*;
- a ``Deny`` statement applies when it matches *true or unknown*.

So ``Deny`` + ``StringNotEquals {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}`` still denies
when the resource tag is missing, and a ``Resource`` whose variable cannot be resolved grants
nothing in an Allow while still denying in a Deny. Anything unexpected outside a statement (a
non-string principal/action/resource, an exception outside statement matching) yields
``implicitDeny``; an exception while matching one statement is contained to that statement
(unknown, as above). :func:`evaluate` never raises.
"""

from __future__ import annotations

import functools

from bastion.iam._index import Selection
from bastion.iam.conditions import evaluate_all
from bastion.iam.context import RequestState
from bastion.iam.decision import Decision, MatchedStatement, Source
from bastion.iam.policy import Policy, Statement
from bastion.iam.policyset import PolicySet
from bastion.iam.principal import Reach
from bastion.iam.request import Request

Tri = bool | None

EMPTY = Selection(())
MALFORMED = Decision("implicitDeny", (), "malformed request: principal, action and resource must "
                     "be strings")
FAILED = Decision("implicitDeny", (), "evaluation error: denied (fail closed)")
NO_ALLOW = Decision("implicitDeny", (), "no identity-based or resource-based policy allows the "
                    "action")
NO_BOUNDARY = Decision("implicitDeny", (), "the permissions boundary does not allow the action")
NO_SESSION = Decision("implicitDeny", (), "the session policy does not allow the action")
NO_TRUST = Decision("implicitDeny", (), "the role's trust policy does not allow the principal "
                   "to perform the action")
TRUST_DELEGATES = Decision("implicitDeny", (), "the role's trust policy trusts the account: no "
                           "identity-based policy allows the action")
CROSS_NO_RESOURCE = Decision("implicitDeny", (), "cross-account request: the resource-based "
                             "policy does not allow it")
CROSS_NO_IDENTITY = Decision("implicitDeny", (), "cross-account request: no identity-based "
                             "policy allows it")


def evaluate(request: Request, identity: PolicySet, *, resource_policy: Policy | None = None,
             boundary: PolicySet | None = None, session: PolicySet | None = None) -> Decision:
    """Decide ``request`` against the principal's policies; never raises, never allows on error.

    ``identity``: the principal's identity-based policies. ``resource_policy``: the policy attached
    to the resource (or a role's trust policy for ``sts:AssumeRole``). ``boundary`` and
    ``session``: ``None`` when the principal has none (no intersection is applied).
    """
    try:
        return _evaluate(request, identity, resource_policy, boundary, session)
    except Exception:
        return FAILED


def _match(st: Statement, state: RequestState, resource_matched: bool = False) -> Tri:
    """Resource and Condition of a statement whose action matched (the index did that).

    ``resource_matched``: the index's pre-filter already matched the Resource element.
    Otherwise statements with a static Resource are tested by their C-level ``check`` first.
    An exception is contained here: the statement's match is unknown (an Allow does not apply,
    a Deny does) and the other statements still count."""
    try:
        if not resource_matched:
            resources = st.resources
            if resources is None or resources.check is None:
                return st.test(state)
            if not resources.check(state.resource):
                return False
        if not st.conditions:
            return True
        return evaluate_all(st.conditions, state.ctx)
    except Exception:
        return None


def _collect(selection: Selection, state: RequestState, source: Source,
             deny: bool) -> list[MatchedStatement]:
    """The statements of ``selection`` that apply: true, or for Deny also unknown."""
    out = []
    for _, st, matched in selection.select(state.resource):
        r = _match(st, state, matched)
        if r is True or (deny and r is None):
            out.append(st.matched[source])
    return out


def _resource_match(st: Statement, state: RequestState,
                    has_boundary: bool) -> tuple[Tri, Reach | None]:
    """(match, reach) of a resource-based statement: Principal first, then the rest.
    ``reach`` says how the Principal element names the requester (``NotPrincipal``: as
    broadly as an account)."""
    spec = st.principal
    if spec is None:  # an identity-kind policy in the resource position
        return None, None
    reach: Reach | None
    try:
        if st.not_principal:
            applies = True if (st.is_deny and has_boundary) else spec.excludes(state.identity)
            reach = "account" if applies else None
        else:
            reach = spec.reach(state.identity)
    except Exception:
        return None, None
    if reach is None:
        return False, None
    return _match(st, state), reach


def _account(arn: str) -> str:
    if not arn.startswith("arn:"):
        return ""
    parts = arn.split(":", 5)
    return parts[4] if len(parts) == 6 else ""


def _is_cross_account(state: RequestState) -> bool:
    """Principal and resource accounts both known and different (see module docstring)."""
    account = _account(state.principal)
    if not account:
        return False
    resource_account: object = _account(state.resource)
    if not resource_account:
        resource_account = state.ctx.peek("aws:resourceaccount")
        if not isinstance(resource_account, str):
            return False
    return bool(resource_account) and resource_account != account


def _deny_reason(first: MatchedStatement, count: int) -> str:
    name = repr(first.sid) if first.sid else f"#{first.index}"
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"explicit deny in {first.source} policy {first.policy_id!r} statement {name}{more}"


def _evaluate(request: Request, identity: PolicySet, resource_policy: Policy | None,
              boundary: PolicySet | None, session: PolicySet | None) -> Decision:
    principal, action, resource = request.principal, request.action, request.resource
    if not (isinstance(principal, str) and isinstance(action, str)
            and isinstance(resource, str)):
        return MALFORMED
    state = RequestState(principal, action, resource, request.context)
    act = state.action
    id_deny, id_allow = identity.candidates(act)
    b_deny, b_allow = boundary.candidates(act) if boundary is not None else (EMPTY, EMPTY)
    s_deny, s_allow = session.candidates(act) if session is not None else (EMPTY, EMPTY)
    r_deny, r_allow = (resource_policy.index.candidates(act) if resource_policy is not None
                       else (EMPTY, EMPTY))

    # 1. explicit deny anywhere (unknown counts as a match)
    denies: list[MatchedStatement] = []
    sources: tuple[tuple[Selection, Source], ...] = (
        (id_deny, "identity"), (b_deny, "boundary"), (s_deny, "session"))
    for statements, source in sources:
        if statements:
            denies += _collect(statements, state, source, True)
    for st in r_deny:
        if _resource_match(st, state, boundary is not None)[0] is not False:
            denies.append(st.matched["resource"])
    if denies:
        return Decision("explicitDeny", tuple(denies), _deny_reason(denies[0], len(denies)))

    # 2. allows (only a true match counts)
    granted = _collect(id_allow, state, "identity", False) if id_allow else []
    direct: list[MatchedStatement] = []
    indirect: list[MatchedStatement] = []
    via_role = False
    for st in r_allow:
        applies, reach = _resource_match(st, state, False)
        if applies is True:
            (direct if reach == "direct" else indirect).append(st.matched["resource"])
            via_role = via_role or reach == "role"
    if resource_policy is not None and resource_policy.kind == "trust":
        if not (direct or indirect):
            return NO_TRUST
        if not (direct or via_role or granted):  # account-wide trust only delegates
            return TRUST_DELEGATES
    if not (granted or direct or indirect):
        return NO_ALLOW
    cross = _is_cross_account(state)
    if cross:
        if not (direct or indirect):
            return CROSS_NO_RESOURCE
        if not granted:
            return CROSS_NO_IDENTITY
    elif direct:
        return Decision("allowed", tuple(granted + direct + indirect),
                        "allowed: the resource-based policy names the principal directly (not "
                        "limited by a permissions boundary or session policy)")

    # 3./4. boundary and session policy intersect with what remains
    gates: list[MatchedStatement] = []
    if boundary is not None:
        passed = _collect(b_allow, state, "boundary", False)
        if not passed:
            return NO_BOUNDARY
        gates += passed
    if session is not None:
        passed = _collect(s_allow, state, "session", False)
        if not passed:
            return NO_SESSION
        gates += passed
    reason = _allow_reason(cross, bool(granted), bool(indirect), boundary is not None,
                           session is not None)
    if not gates and not indirect and len(granted) == 1:
        return Decision("allowed", (granted[0],), reason)
    return Decision("allowed", tuple(granted + direct + indirect + gates), reason)


@functools.lru_cache(maxsize=64)
def _allow_reason(cross: bool, granted: bool, indirect: bool, boundary: bool,
                  session: bool) -> str:
    reason = ["allowed by"]
    if cross:
        reason.append("both the identity-based and the resource-based policy (cross-account)")
    elif granted and indirect:
        reason.append("identity-based and resource-based policies")
    elif granted:
        reason.append("an identity-based policy")
    else:
        reason.append("the resource-based policy")
    if boundary:
        reason.append("within the permissions boundary")
    if session:
        reason.append("and the session policy" if boundary else "within the session policy")
    return " ".join(reason)
