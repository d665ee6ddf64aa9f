"""AWS JSON policy elements: Principal and NotPrincipal, in a resource-based policy."""

from __future__ import annotations

from typing import Any

from tests.iam import ACCOUNT, ALICE, BOB, CLIENT, OTHER_ACCOUNT, ROLE, ROOT, SESSION

P = "AWS JSON policy elements: Principal"
ACCOUNTS = f"{P} › AWS account principals"
USERS = f"{P} › IAM user principals"
ROLES = f"{P} › IAM role principals"
SESSIONS = f"{P} › Role session principals"
ALL = f"{P} › All principals"
SERVICES = f"{P} › AWS service principals"
FEDERATED = f"{P} › Federated user principals"
CANONICAL = f"{P} › Canonical user principals"
BASTION = "Bastion ARN scheme (bastion.iam.arn): client/<client_id> principals"
NOTP = "AWS JSON policy elements: NotPrincipal"
NOTP_SESSION = f"{NOTP} › NotPrincipal and Deny (list the session, its role and its account)"
NOTP_ALLOW = f"{NOTP} › NotPrincipal with Allow"

OTHER_ROOT = f"arn:bastion:iam::{OTHER_ACCOUNT}:root"
OTHER_USER = f"arn:bastion:iam::{OTHER_ACCOUNT}:user/alice"
OTHER_SESSION = f"arn:bastion:sts::{ACCOUNT}:assumed-role/auditor/s1"
PATH_ROLE = f"arn:bastion:iam::{ACCOUNT}:role/team/ci/deployer"


def p(id: str, rule: str, principal: Any, who: str, expect: bool) -> dict[str, Any]:
    """``principal`` grants orders:GetOrder; ``who`` makes the request (no identity policies;
    the resource is in the caller's account when ``who`` has one)."""
    return {
        "id": id, "rule": rule, "identity": [], "principal": who,
        "resource": "arn:bastion:orders:eu-1::order/1",
        "resource_policy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "G", "Effect": "Allow", "Principal": principal, "Action": "orders:GetOrder",
             "Resource": "*"}]},
        "expect": "allowed" if expect else "implicitDeny",
    }


def np(id: str, rule: str, listed: Any, who: str, denied: bool) -> dict[str, Any]:
    """Deny + NotPrincipal ``listed`` next to an Allow for ``*``."""
    return {
        "id": id, "rule": rule, "identity": [], "principal": who,
        "resource": "arn:bastion:orders:eu-1::order/1",
        "resource_policy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "NP", "Effect": "Deny", "NotPrincipal": listed, "Action": "*",
             "Resource": "*"},
            {"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]},
        "expect": "explicitDeny" if denied else "allowed",
    }


CASES = [
    p("star-user", ALL, "*", ALICE, True),
    p("star-anonymous", ALL, "*", "", True),
    p("star-other-account", ALL, "*", OTHER_USER, True),
    p("aws-star-user", ALL, {"AWS": "*"}, ALICE, True),
    p("aws-star-anonymous", ALL, {"AWS": "*"}, "", True),
    p("account-id-user", ACCOUNTS, {"AWS": ACCOUNT}, ALICE, True),
    p("account-id-session", ACCOUNTS, {"AWS": ACCOUNT}, SESSION, True),
    p("account-id-client", ACCOUNTS, {"AWS": ACCOUNT}, CLIENT, True),
    p("account-id-other-account", ACCOUNTS, {"AWS": ACCOUNT}, OTHER_USER, False),
    p("account-id-anonymous", ACCOUNTS, {"AWS": ACCOUNT}, "", False),
    p("account-root-arn-user", ACCOUNTS, {"AWS": ROOT}, ALICE, True),
    p("account-root-arn-session", ACCOUNTS, {"AWS": ROOT}, SESSION, True),
    p("account-root-arn-other-account", ACCOUNTS, {"AWS": OTHER_ROOT}, ALICE, False),
    p("account-root-arn-other-partition", ACCOUNTS, {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
      ALICE, False),
    p("account-root-itself", ACCOUNTS, {"AWS": ACCOUNT}, ROOT, True),
    p("user-exact", USERS, {"AWS": ALICE}, ALICE, True),
    p("user-other", USERS, {"AWS": BOB}, ALICE, False),
    p("user-name-case-sensitive", USERS, {"AWS": f"arn:bastion:iam::{ACCOUNT}:user/Alice"},
      ALICE, False),
    p("user-other-partition", USERS, {"AWS": f"arn:aws:iam::{ACCOUNT}:user/alice"}, ALICE, False),
    p("user-does-not-cover-account", USERS, {"AWS": ALICE}, ROOT, False),
    p("user-list", USERS, {"AWS": [BOB, ALICE]}, ALICE, True),
    p("role-matches-its-session", ROLES, {"AWS": ROLE}, SESSION, True),
    p("role-other-session", ROLES, {"AWS": ROLE}, OTHER_SESSION, False),
    p("role-with-path-matches-session", ROLES, {"AWS": PATH_ROLE}, SESSION, True),
    p("role-does-not-match-user", ROLES, {"AWS": ROLE}, ALICE, False),
    p("session-exact", SESSIONS, {"AWS": SESSION}, SESSION, True),
    p("session-other-session-same-role", SESSIONS, {"AWS": SESSION},
      f"arn:bastion:sts::{ACCOUNT}:assumed-role/deployer/other", False),
    p("client-exact", BASTION, {"AWS": CLIENT}, CLIENT, True),
    p("client-other", BASTION, {"AWS": f"arn:bastion:iam::{ACCOUNT}:client/other"}, CLIENT, False),
    p("service-exact", SERVICES, {"Service": "orders.bastion"}, "orders.bastion", True),
    p("service-not-user", SERVICES, {"Service": "orders.bastion"}, ALICE, False),
    p("service-list", SERVICES, {"Service": ["billing.bastion", "orders.bastion"]},
      "orders.bastion", True),
    p("federated-exact", FEDERATED, {"Federated": "accounts.example.com"}, "accounts.example.com",
      True),
    p("federated-other", FEDERATED, {"Federated": "accounts.example.com"}, "login.example.org",
      False),
    p("canonical-user", CANONICAL, {"CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e"},
      "79a59df900b949e55d96a1e698fbacedfd6e", True),
    p("mixed-types", P, {"AWS": BOB, "Service": "orders.bastion"}, "orders.bastion", True),
    np("not-principal-listed-user-and-account", NOTP, {"AWS": [ALICE, ROOT]}, ALICE, False),
    np("not-principal-unlisted-user", NOTP, {"AWS": [ALICE, ROOT]}, BOB, True),
    np("not-principal-user-without-account", NOTP, {"AWS": ALICE}, ALICE, True),
    np("not-principal-account-id-form", NOTP, {"AWS": [ALICE, ACCOUNT]}, ALICE, False),
    np("not-principal-account-alone-not-users", NOTP, {"AWS": ACCOUNT}, ALICE, True),
    np("not-principal-session-all-three", NOTP_SESSION, {"AWS": [SESSION, ROLE, ROOT]}, SESSION,
       False),
    np("not-principal-session-role-and-account-only", NOTP_SESSION, {"AWS": [ROLE, ROOT]},
       SESSION, True),
    np("not-principal-session-without-role", NOTP_SESSION, {"AWS": [SESSION, ROOT]}, SESSION,
       True),
    np("not-principal-service", NOTP, {"Service": "orders.bastion"}, "orders.bastion", False),
    np("not-principal-anonymous", NOTP, {"AWS": [ALICE, ROOT]}, "", True),
    {"id": "not-principal-allow", "rule": NOTP_ALLOW, "identity": [], "principal": ALICE,
     "resource": "arn:bastion:orders:eu-1::order/1",
     "resource_policy": {"Version": "2012-10-17", "Statement": [
         {"Effect": "Allow", "NotPrincipal": {"AWS": BOB}, "Action": "*", "Resource": "*"}]},
     "expect": "allowed"},
    {"id": "not-principal-allow-listed", "rule": NOTP_ALLOW, "identity": [], "principal": BOB,
     "resource": "arn:bastion:orders:eu-1::order/1",
     "resource_policy": {"Version": "2012-10-17", "Statement": [
         {"Effect": "Allow", "NotPrincipal": {"AWS": [BOB, ROOT]}, "Action": "*",
          "Resource": "*"}]},
     "expect": "implicitDeny"},
]
