"""Bastion IAM policy engine: AWS IAM policy grammar and evaluation semantics (stdlib only).

Public API::

    policy = parse_policy(doc, policy_id="p1", kind="identity")     # PolicyError on ERROR findings
    findings = validate_policy(doc, kind="resource")               # never raises
    decision = evaluate(Request(principal, action, resource, context), PolicySet([policy]),
                        resource_policy=..., boundary=PolicySet(...), session=PolicySet(...))

Semantics and the fail-closed rule: :mod:`bastion.iam.evaluate`; operators:
:mod:`bastion.iam.conditions`; variables: :mod:`bastion.iam.variables`; principals:
:mod:`bastion.iam.principal`; validation codes: :mod:`bastion.iam.validate`.
"""

from bastion.iam.conditions import OPERATORS
from bastion.iam.context import MAX_CONTEXT_VALUES
from bastion.iam.decision import Decision, MatchedStatement
from bastion.iam.evaluate import evaluate
from bastion.iam.keys import GLOBAL_CONDITION_KEY_PREFIXES, GLOBAL_CONDITION_KEYS, MULTIVALUED_KEYS
from bastion.iam.policy import Policy, Statement, parse_policy
from bastion.iam.policyset import PolicySet
from bastion.iam.request import Request
from bastion.iam.validate import (
    DEFAULT_MAX_SIZE,
    INLINE_USER_MAX_SIZE,
    Finding,
    PolicyError,
    validate_policy,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "GLOBAL_CONDITION_KEYS",
    "GLOBAL_CONDITION_KEY_PREFIXES",
    "INLINE_USER_MAX_SIZE",
    "MAX_CONTEXT_VALUES",
    "MULTIVALUED_KEYS",
    "OPERATORS",
    "Decision",
    "Finding",
    "MatchedStatement",
    "Policy",
    "PolicyError",
    "PolicySet",
    "Request",
    "Statement",
    "evaluate",
    "parse_policy",
    "validate_policy",
]
