"""Policy evaluation logic: deny precedence, unions, boundaries, session policies, cross-account."""

from __future__ import annotations

from typing import Any

from tests.iam import (
    ACCOUNT,
    ACTION,
    ALICE,
    ALLOW_ALL,
    BOB,
    CLIENT,
    OTHER_ACCOUNT,
    RESOURCE,
    ROLE,
    ROOT,
    SESSION,
)

EVAL = "Policy evaluation logic"
DENYALLOW = ("How AWS enforcement code logic evaluates requests to allow or deny access › "
             "Deny evaluation")
IMPLICIT = ("How AWS enforcement code logic evaluates requests to allow or deny access › "
            "implicit deny")
UNION = f"{EVAL} › Evaluating identity-based policies with resource-based policies"
SINGLE = "Policy evaluation for requests within a single account"
BOUNDARY = "Permissions boundaries for IAM entities › Evaluating effective permissions with boundaries"
B_IDENTITY = f"{BOUNDARY} › Identity-based policies with boundaries"
B_RESOURCE_USER = f"{BOUNDARY} › Resource-based policies (IAM user ARN: not limited)"
B_RESOURCE_ROLE = f"{BOUNDARY} › Resource-based policies (IAM role ARN: limited)"
B_RESOURCE_SESSION = f"{BOUNDARY} › Resource-based policies (role session ARN: not limited)"
B_NOTPRINCIPAL = "Permissions boundaries for IAM entities (Important: Deny + NotPrincipal)"
SESSION_R = "Policies and permissions in IAM › Session policies"
SESSION_RB = f"{SESSION_R} (resource-based policy naming the session ARN: not limited)"
SESSION_ROLE = f"{SESSION_R} (resource-based policy naming the role ARN: limited)"
CROSS = "Cross-account policy evaluation logic"
ACCOUNT_PRINCIPAL = ("AWS JSON policy elements: Principal › AWS account principals (Bastion: "
                     "limited by boundary/session, bastion.iam.principal)")
STAR_PRINCIPAL = ("AWS JSON policy elements: Principal › All principals (Bastion: limited by "
                  "boundary/session)")
TRUST = "AWS JSON policy elements: Principal › IAM role principals (role trust policy)"
SERVICE = "AWS JSON policy elements: Principal › AWS service principals"
FEDERATED = "AWS JSON policy elements: Principal › Federated user principals"

OTHER_RESOURCE = f"arn:bastion:orders:eu-1:{OTHER_ACCOUNT}:order/1"
OTHER_USER = f"arn:bastion:iam::{OTHER_ACCOUNT}:user/mallory"


def allow(action: str = ACTION, resource: str = "*", sid: str | None = None,
          **extra: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource, **extra}
    if sid:
        st["Sid"] = sid
    return st


def deny(action: str = ACTION, resource: str = "*", sid: str | None = None,
         **extra: Any) -> dict[str, Any]:
    return {**allow(action, resource, sid, **extra), "Effect": "Deny"}


def grant(principal: Any, effect: str = "Allow", action: str = ACTION, sid: str = "Grant",
          key: str = "Principal", **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": effect, key: principal, "Action": action, "Resource": "*",
            **extra}


def e(id: str, rule: str, expect: str, **case: Any) -> dict[str, Any]:
    return {"id": id, "rule": rule, "expect": expect, **case}


BILLING = "billing:*"
TRUST_RULES = ("IAM roles › Role trust policy; Permissions boundaries for IAM entities › "
               "Resource-based policies; Session policies")
TARGET_ROLE = f"arn:bastion:iam::{ACCOUNT}:role/target"
MFA_COND = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}


def _account_trust() -> dict[str, Any]:
    return grant(ROOT, action="sts:AssumeRole", sid="Account")


def _trust(*statements: dict[str, Any]) -> dict[str, Any]:
    """A request for sts:AssumeRole on TARGET_ROLE against a trust policy of ``statements``
    (Resource dropped: trust policies have none)."""
    body = []
    for st in statements:
        st = {k: v for k, v in st.items() if k != "Resource"}
        if isinstance(st["Principal"], str) and st["Principal"] != "*":
            st["Principal"] = {"AWS": st["Principal"]}
        if st["Action"] == ACTION:
            st["Action"] = "sts:AssumeRole"
        body.append(st)
    return {"action": "sts:AssumeRole", "resource": TARGET_ROLE, "resource_kind": "trust",
            "resource_policy": {"Version": "2012-10-17", "Statement": body}}
CASES = [
    e("no-policies-implicit-deny", IMPLICIT, "implicitDeny", identity=[],
      reason="no identity-based or resource-based policy"),
    e("identity-allow", SINGLE, "allowed", identity=[allow(sid="A")],
      statements=["identity:p0:A"]),
    e("identity-allow-other-action", IMPLICIT, "implicitDeny", identity=[allow("billing:Pay")]),
    e("deny-beats-allow-same-policy", DENYALLOW, "explicitDeny",
      identity=[{"Version": "2012-10-17", "Statement": [allow(sid="A"), deny(sid="D")]}],
      statements=["identity:p0:D"]),
    e("deny-beats-allow-other-policy", DENYALLOW, "explicitDeny",
      identity=[allow(), deny(sid="D")], statements=["identity:p1:D"]),
    e("deny-reports-every-match", DENYALLOW, "explicitDeny",
      identity=[deny(sid="D1"), allow(), deny("orders:*", sid="D2")],
      statements=["identity:p0:D1", "identity:p2:D2"]),
    e("deny-unnamed-statement-by-index", DENYALLOW, "explicitDeny",
      identity=[allow(), deny()], statements=["identity:p1:#0"], reason="'p1' statement #0"),
    e("deny-other-action-ignored", DENYALLOW, "allowed", identity=[allow(), deny("billing:Pay")]),
    e("deny-other-resource-ignored", DENYALLOW, "allowed",
      identity=[allow(), deny(resource=f"arn:bastion:orders:eu-1:{ACCOUNT}:order/2")]),
    e("deny-condition-false-ignored", DENYALLOW, "allowed",
      identity=[allow(), deny(Condition={"Bool": {"aws:SecureTransport": "false"}})],
      context={"aws:SecureTransport": True}),
    e("deny-wildcard-beats-exact-allow", DENYALLOW, "explicitDeny",
      identity=[allow(), deny("*")]),
    e("allow-reports-every-granting-statement", SINGLE, "allowed",
      identity=[allow(sid="A"), allow("orders:Get*", sid="B"), allow("billing:Pay", sid="C")],
      statements=["identity:p0:A", "identity:p1:B"]),
    # -- resource-based policies, one account ------------------------------------------------
    e("resource-policy-alone-allows-user", UNION, "allowed", identity=[],
      resource_policy=grant({"AWS": ALICE}), statements=["resource:rp:Grant"]),
    e("resource-policy-other-principal", UNION, "implicitDeny", identity=[],
      resource_policy=grant({"AWS": BOB})),
    e("resource-policy-union-identity-allows", UNION, "allowed", identity=[allow(sid="A")],
      resource_policy=grant({"AWS": BOB}), statements=["identity:p0:A"]),
    e("resource-policy-deny-beats-identity-allow", DENYALLOW, "explicitDeny",
      identity=[allow()], resource_policy=grant({"AWS": ALICE}, "Deny", sid="RD"),
      statements=["resource:rp:RD"]),
    e("resource-policy-deny-other-principal-ignored", DENYALLOW, "allowed", identity=[allow()],
      resource_policy=grant({"AWS": BOB}, "Deny")),
    e("identity-deny-beats-resource-allow", DENYALLOW, "explicitDeny", identity=[deny()],
      resource_policy=grant({"AWS": ALICE})),
    e("resource-policy-action-mismatch", UNION, "implicitDeny", identity=[],
      resource_policy=grant({"AWS": ALICE}, action="orders:ListOrders")),
    e("resource-policy-condition", UNION, "allowed", identity=[],
      resource_policy=grant({"AWS": ALICE}, Condition={"Bool": {"aws:SecureTransport": "true"}}),
      context={"aws:SecureTransport": "true"}),
    e("resource-policy-client-principal", UNION, "allowed", identity=[], principal=CLIENT,
      resource_policy=grant({"AWS": CLIENT})),
    # -- permissions boundaries --------------------------------------------------------------
    e("boundary-allows", B_IDENTITY, "allowed", identity=[allow(sid="A")],
      boundary=[allow("orders:*", sid="B")], statements=["identity:p0:A", "boundary:b0:B"]),
    e("boundary-does-not-allow", B_IDENTITY, "implicitDeny", identity=[allow()],
      boundary=[allow(BILLING)], reason="permissions boundary"),
    e("boundary-grants-nothing-alone", B_IDENTITY, "implicitDeny", identity=[],
      boundary=[allow("*")], reason="no identity-based"),
    e("boundary-explicit-deny", B_IDENTITY, "explicitDeny", identity=[allow()],
      boundary=[allow("*"), deny(sid="BD")], statements=["boundary:b1:BD"]),
    e("boundary-empty-set-denies", B_IDENTITY, "implicitDeny", identity=[allow()], boundary=[]),
    e("boundary-resource-scoped", B_IDENTITY, "implicitDeny", identity=[allow()],
      boundary=[allow("*", f"arn:bastion:orders:eu-1:{ACCOUNT}:order/2")]),
    e("boundary-condition-unknown-no-allow", B_IDENTITY, "implicitDeny", identity=[allow()],
      boundary=[allow("*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})],
      context={"aws:SourceIp": "garbage"}),
    e("boundary-user-arn-grant-not-limited", B_RESOURCE_USER, "allowed", identity=[],
      boundary=[allow(BILLING)], resource_policy=grant({"AWS": ALICE}),
      reason="names the principal directly"),
    e("boundary-deny-still-beats-direct-grant", B_RESOURCE_USER, "explicitDeny", identity=[],
      boundary=[allow("*"), deny()], resource_policy=grant({"AWS": ALICE})),
    e("boundary-role-arn-grant-limited", B_RESOURCE_ROLE, "implicitDeny", identity=[],
      principal=SESSION, boundary=[allow(BILLING)], resource_policy=grant({"AWS": ROLE}),
      reason="permissions boundary"),
    e("boundary-role-arn-grant-within-boundary", B_RESOURCE_ROLE, "allowed", identity=[],
      principal=SESSION, boundary=[allow("orders:*")], resource_policy=grant({"AWS": ROLE})),
    e("boundary-session-arn-grant-not-limited", B_RESOURCE_SESSION, "allowed", identity=[],
      principal=SESSION, boundary=[allow(BILLING)], resource_policy=grant({"AWS": SESSION})),
    e("boundary-account-grant-limited", ACCOUNT_PRINCIPAL, "implicitDeny", identity=[],
      boundary=[allow(BILLING)], resource_policy=grant({"AWS": ACCOUNT})),
    e("boundary-star-grant-limited", STAR_PRINCIPAL, "implicitDeny", identity=[],
      boundary=[allow(BILLING)], resource_policy=grant("*")),
    e("boundary-not-principal-deny-always-denies", B_NOTPRINCIPAL, "explicitDeny",
      identity=[allow()], boundary=[allow("*")],
      resource_policy={"Version": "2012-10-17", "Statement": [
          grant({"AWS": [ALICE, ROOT]}, "Deny", key="NotPrincipal", sid="NP"),
          grant({"AWS": ALICE}, sid="G")]}, statements=["resource:rp:NP"]),
    e("no-boundary-not-principal-deny-exempts", "AWS JSON policy elements: NotPrincipal",
      "allowed", identity=[allow()],
      resource_policy={"Version": "2012-10-17", "Statement": [
          grant({"AWS": [ALICE, ROOT]}, "Deny", key="NotPrincipal", sid="NP"),
          grant({"AWS": ALICE}, sid="G")]}),
    # -- session policies --------------------------------------------------------------------
    e("session-allows", SESSION_R, "allowed", identity=[allow()], principal=SESSION,
      session=[allow("orders:*", sid="S")], statements=["identity:p0:#0", "session:s0:S"]),
    e("session-does-not-allow", SESSION_R, "implicitDeny", identity=[allow()], principal=SESSION,
      session=[allow(BILLING)], reason="session policy"),
    e("session-grants-nothing-alone", SESSION_R, "implicitDeny", identity=[], principal=SESSION,
      session=[allow("*")]),
    e("session-explicit-deny", SESSION_R, "explicitDeny", identity=[allow()], principal=SESSION,
      session=[allow("*"), deny(sid="SD")], statements=["session:s1:SD"]),
    e("session-and-boundary-both-allow", SESSION_R, "allowed", identity=[allow()],
      principal=SESSION, boundary=[allow("orders:*")], session=[allow("*")]),
    e("session-and-boundary-session-refuses", SESSION_R, "implicitDeny", identity=[allow()],
      principal=SESSION, boundary=[allow("orders:*")], session=[allow(BILLING)]),
    e("session-and-boundary-boundary-refuses", B_IDENTITY, "implicitDeny", identity=[allow()],
      principal=SESSION, boundary=[allow(BILLING)], session=[allow("*")],
      reason="permissions boundary"),
    e("session-arn-grant-not-limited", SESSION_RB, "allowed", identity=[], principal=SESSION,
      session=[allow(BILLING)], resource_policy=grant({"AWS": SESSION})),
    e("session-role-arn-grant-limited", SESSION_ROLE, "implicitDeny", identity=[],
      principal=SESSION, session=[allow(BILLING)], resource_policy=grant({"AWS": ROLE}),
      reason="session policy"),
    e("session-role-arn-grant-within-session", SESSION_ROLE, "allowed", identity=[],
      principal=SESSION, session=[allow("orders:GetOrder")], resource_policy=grant({"AWS": ROLE})),
    # -- cross-account -----------------------------------------------------------------------
    e("cross-account-identity-only", CROSS, "implicitDeny", identity=[allow()],
      resource=OTHER_RESOURCE, reason="cross-account"),
    e("cross-account-resource-only", CROSS, "implicitDeny", identity=[],
      resource=OTHER_RESOURCE, resource_policy=grant({"AWS": ALICE}),
      reason="no identity-based policy"),
    e("cross-account-both", CROSS, "allowed", identity=[allow()], resource=OTHER_RESOURCE,
      resource_policy=grant({"AWS": ACCOUNT}), reason="cross-account"),
    e("cross-account-resource-deny", CROSS, "explicitDeny", identity=[allow()],
      resource=OTHER_RESOURCE, resource_policy=grant({"AWS": ACCOUNT}, "Deny")),
    e("cross-account-boundary-still-applies", CROSS, "implicitDeny", identity=[allow()],
      resource=OTHER_RESOURCE, resource_policy=grant({"AWS": ALICE}), boundary=[allow(BILLING)]),
    e("cross-account-context-resource-account", CROSS, "implicitDeny", identity=[allow()],
      resource="*", context={"aws:ResourceAccount": OTHER_ACCOUNT}),
    e("cross-account-arn-account-wins-over-context", CROSS, "implicitDeny", identity=[allow()],
      resource=OTHER_RESOURCE, context={"aws:ResourceAccount": ACCOUNT}),
    e("cross-account-context-for-arn-without-account", CROSS, "implicitDeny",
      identity=[allow()], resource="arn:bastion:orders:::order/1",
      context={"AWS:RESOURCEACCOUNT": OTHER_ACCOUNT}),
    e("cross-account-context-same-account", CROSS, "allowed", identity=[allow()],
      resource="arn:bastion:orders:::order/1", context={"aws:ResourceAccount": ACCOUNT}),
    e("cross-account-caller-from-other-account", CROSS, "allowed", principal=OTHER_USER,
      identity=[allow()], resource_policy=grant({"AWS": OTHER_ACCOUNT})),
    e("cross-account-caller-no-resource-policy", CROSS, "implicitDeny", principal=OTHER_USER,
      identity=[allow()]),
    e("resource-without-account-is-same-account", SINGLE, "allowed", principal=OTHER_USER,
      identity=[allow()], resource="arn:bastion:orders:::order/1"),
    # -- trust policies ----------------------------------------------------------------------
    e("trust-account-may-assume", TRUST, "allowed", identity=[allow("sts:AssumeRole")],
      action="sts:AssumeRole", resource=ROLE, resource_kind="trust",
      resource_policy={"Version": "2012-10-17", "Statement": [
          {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}]}),
    e("trust-other-account-denied-without-identity", TRUST, "implicitDeny", principal=OTHER_USER,
      identity=[], action="sts:AssumeRole", resource=ROLE, resource_kind="trust",
      resource_policy={"Version": "2012-10-17", "Statement": [
          {"Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "sts:AssumeRole"}]}),
    e("trust-other-account-with-identity", TRUST, "allowed", principal=OTHER_USER,
      identity=[allow("sts:AssumeRole")], action="sts:AssumeRole", resource=ROLE,
      resource_kind="trust",
      resource_policy={"Version": "2012-10-17", "Statement": [
          {"Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "sts:AssumeRole"}]}),
    e("trust-service-principal", SERVICE, "allowed", principal="orders.bastion", identity=[],
      action="sts:AssumeRole", resource=ROLE, resource_kind="trust",
      resource_policy={"Version": "2012-10-17", "Statement": [
          {"Effect": "Allow", "Principal": {"Service": "orders.bastion"},
           "Action": "sts:AssumeRole"}]}),
    e("trust-other-service", SERVICE, "implicitDeny", principal="billing.bastion", identity=[],
      action="sts:AssumeRole", resource=ROLE, resource_kind="trust",
      resource_policy={"Version": "2012-10-17", "Statement": [
          {"Effect": "Allow", "Principal": {"Service": "orders.bastion"},
           "Action": "sts:AssumeRole"}]}),
    e("trust-federated-with-condition", FEDERATED, "allowed", principal="accounts.example.com",
      identity=[], action="sts:AssumeRoleWithWebIdentity", resource=ROLE, resource_kind="trust",
      context={"accounts.example.com:aud": "bastion"},
      resource_policy={"Version": "2012-10-17", "Statement": [
          {"Effect": "Allow", "Principal": {"Federated": "accounts.example.com"},
           "Action": "sts:AssumeRoleWithWebIdentity",
           "Condition": {"StringEquals": {"accounts.example.com:aud": "bastion"}}}]}),
    e("trust-federated-wrong-audience", FEDERATED, "implicitDeny",
      principal="accounts.example.com", identity=[], action="sts:AssumeRoleWithWebIdentity",
      resource=ROLE, resource_kind="trust", context={"accounts.example.com:aud": "other"},
      resource_policy={"Version": "2012-10-17", "Statement": [
          {"Effect": "Allow", "Principal": {"Federated": "accounts.example.com"},
           "Action": "sts:AssumeRoleWithWebIdentity",
           "Condition": {"StringEquals": {"accounts.example.com:aud": "bastion"}}}]}),
    # role trust policies: Principal, Action and Condition must all match; the account only
    # delegates; the role ARN is limited by boundary and session policy (issue 8 item 1)
    e("trust-names-user-directly", TRUST_RULES, "allowed", identity=[], **_trust(grant(ALICE))),
    e("trust-names-user-condition-false", TRUST_RULES, "implicitDeny", identity=[],
      context={"aws:MultiFactorAuthPresent": "false"},
      **_trust(grant(ALICE, Condition=MFA_COND), _account_trust())),
    e("trust-names-user-condition-true", TRUST_RULES, "allowed", identity=[],
      context={"aws:MultiFactorAuthPresent": "true"}, **_trust(grant(ALICE, Condition=MFA_COND))),
    e("trust-names-user-other-action", TRUST_RULES, "implicitDeny", identity=[],
      **_trust(grant(ALICE, action="sts:TagSession"), _account_trust())),
    e("trust-account-without-identity", TRUST_RULES, "implicitDeny", identity=[],
      reason="trusts the account", **_trust(_account_trust())),
    e("trust-star-without-identity", TRUST_RULES, "implicitDeny", identity=[],
      **_trust(grant("*", action="sts:AssumeRole"))),
    e("trust-identity-only", TRUST_RULES, "implicitDeny", identity=[allow("sts:AssumeRole")],
      reason="trust policy does not allow", **_trust(grant(BOB))),
    e("trust-names-role-session-limited-by-session-policy", TRUST_RULES, "implicitDeny",
      principal=SESSION, identity=[], session=[allow("orders:ListOrders")],
      **_trust(grant(ROLE))),
    e("trust-names-role-limited-by-boundary", TRUST_RULES, "implicitDeny", principal=SESSION,
      identity=[], boundary=[allow("orders:*")], **_trust(grant(ROLE))),
    e("trust-names-role-no-limits", TRUST_RULES, "allowed", principal=SESSION, identity=[],
      **_trust(grant(ROLE))),
    e("trust-names-session-directly-not-limited", TRUST_RULES, "allowed", principal=SESSION,
      identity=[], session=[allow("orders:ListOrders")], boundary=[allow("orders:*")],
      **_trust(grant(SESSION))),
    e("trust-account-identity-limited-by-session-policy", TRUST_RULES, "implicitDeny",
      principal=SESSION, identity=[allow("sts:AssumeRole")],
      session=[allow("orders:ListOrders")], **_trust(_account_trust())),
    e("trust-explicit-deny-wins", TRUST_RULES, "explicitDeny", identity=[],
      **_trust(grant(ALICE), grant(ALICE, effect="Deny", action="sts:AssumeRole",
                                   sid="No"))),
    e("identity-policy-in-resource-position-deny-fails-closed",
      "Bastion fail-closed rule (a resource_policy without Principal: Deny matches everyone)",
      "explicitDeny", identity=[allow()], resource_policy=deny(), resource_kind="identity"),
]

# ``resource_kind="identity"`` above: a policy compiled as identity-kind passed as the resource
# policy has no Principal; its Deny applies to everyone and its Allow to no one.
_ = (ACTION, RESOURCE, ALLOW_ALL)
