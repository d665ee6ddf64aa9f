"""IAM JSON policy elements: Action, NotAction, Resource, NotResource, Statement, Version."""

from __future__ import annotations

from typing import Any

from tests.iam import ACCOUNT, ALLOW_ALL, RESOURCE

ACTION_R = "IAM JSON policy elements: Action"
NOTACTION = "IAM JSON policy elements: NotAction"
RESOURCE_R = "IAM JSON policy elements: Resource"
RESOURCE_WILD = f"{RESOURCE_R} › Including wildcard characters in the resource ARN"
NOTRESOURCE = "IAM JSON policy elements: NotResource"
ARN_FORMAT = "IAM identifiers › IAM ARNs (each of the six components matched separately)"
STATEMENT = "IAM JSON policy elements: Statement"
VERSION = "IAM JSON policy elements: Version"

ORDERS = f"arn:bastion:orders:eu-1:{ACCOUNT}"


def e(id: str, rule: str, statements: list[dict[str, Any]], action: str, resource: str,
      expect: str, version: str | None = "2012-10-17") -> dict[str, Any]:
    doc: dict[str, Any] = {"Statement": statements}
    if version:
        doc["Version"] = version
    return {"id": id, "rule": rule, "identity": [doc], "action": action, "resource": resource,
            "expect": expect}


def a(action: Any, resource: Any = "*", effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource}


GET = "orders:GetOrder"
CASES = [
    e("action-exact", ACTION_R, [a(GET)], GET, RESOURCE, "allowed"),
    e("action-case-insensitive-request", ACTION_R, [a(GET)], "ORDERS:getorder", RESOURCE,
      "allowed"),
    e("action-case-insensitive-policy", ACTION_R, [a("Orders:GETORDER")], GET, RESOURCE,
      "allowed"),
    e("action-other", ACTION_R, [a(GET)], "orders:ListOrders", RESOURCE, "implicitDeny"),
    e("action-prefix-wildcard", ACTION_R, [a("orders:Get*")], GET, RESOURCE, "allowed"),
    e("action-prefix-wildcard-other", ACTION_R, [a("orders:Get*")], "orders:ListOrders", RESOURCE,
      "implicitDeny"),
    e("action-service-wildcard", ACTION_R, [a("orders:*")], "orders:DeleteOrder", RESOURCE,
      "allowed"),
    e("action-star", ACTION_R, [a("*")], "billing:Pay", RESOURCE, "allowed"),
    e("action-qmark", ACTION_R, [a("orders:Get?rder")], GET, RESOURCE, "allowed"),
    e("action-qmark-one-char-only", ACTION_R, [a("orders:Get?rder")], "orders:GetXXrder",
      RESOURCE, "implicitDeny"),
    e("action-middle-star", ACTION_R, [a("orders:*Order")], "orders:UpdateOrder", RESOURCE,
      "allowed"),
    e("action-star-in-service", ACTION_R, [a("ord*:GetOrder")], GET, RESOURCE, "allowed"),
    e("action-star-in-service-other", ACTION_R, [a("ord*:GetOrder")], "billing:GetOrder",
      RESOURCE, "implicitDeny"),
    e("action-other-service-same-name", ACTION_R, [a("billing:GetOrder")], GET, RESOURCE,
      "implicitDeny"),
    e("action-service-prefix-is-not-wildcard", ACTION_R, [a("order:*")], GET, RESOURCE,
      "implicitDeny"),
    e("action-list", ACTION_R, [a(["billing:Pay", GET])], GET, RESOURCE, "allowed"),
    e("action-no-service-request", ACTION_R, [a("orders:*")], "GetOrder", RESOURCE,
      "implicitDeny"),
    e("action-star-matches-no-service-request", ACTION_R, [a("*")], "GetOrder", RESOURCE,
      "allowed"),
    e("not-action-allow-unlisted", NOTACTION,
      [{"Effect": "Allow", "NotAction": "orders:Delete*", "Resource": "*"}], GET, RESOURCE,
      "allowed"),
    e("not-action-allow-listed", NOTACTION,
      [{"Effect": "Allow", "NotAction": "orders:Delete*", "Resource": "*"}], "orders:DeleteOrder",
      RESOURCE, "implicitDeny"),
    e("not-action-allow-other-service", NOTACTION,
      [{"Effect": "Allow", "NotAction": "orders:*", "Resource": "*"}], "billing:Pay", RESOURCE,
      "allowed"),
    e("not-action-case-insensitive", NOTACTION,
      [{"Effect": "Allow", "NotAction": "ORDERS:DELETE*", "Resource": "*"}], "orders:deleteorder",
      RESOURCE, "implicitDeny"),
    e("not-action-deny-unlisted", NOTACTION,
      [ALLOW_ALL, {"Effect": "Deny", "NotAction": "orders:*", "Resource": "*"}], "billing:Pay",
      RESOURCE, "explicitDeny"),
    e("not-action-deny-listed-passes", NOTACTION,
      [ALLOW_ALL, {"Effect": "Deny", "NotAction": "orders:*", "Resource": "*"}], GET, RESOURCE,
      "allowed"),
    e("not-action-list", NOTACTION,
      [{"Effect": "Allow", "NotAction": ["orders:Delete*", "billing:*"], "Resource": "*"}],
      "billing:Pay", RESOURCE, "implicitDeny"),
    e("resource-exact", RESOURCE_R, [a(GET, RESOURCE)], GET, RESOURCE, "allowed"),
    e("resource-case-sensitive", RESOURCE_R, [a(GET, f"{ORDERS}:Order/1")], GET, RESOURCE,
      "implicitDeny"),
    e("resource-star-any-arn", RESOURCE_R, [a(GET, "*")], GET, RESOURCE, "allowed"),
    e("resource-star-non-arn", RESOURCE_R, [a(GET, "*")], GET, "whatever", "allowed"),
    e("resource-arn-pattern-non-arn-request", RESOURCE_R, [a(GET, f"{ORDERS}:*")], GET,
      "order/1", "implicitDeny"),
    e("resource-wildcard-crosses-slash", RESOURCE_WILD, [a(GET, f"{ORDERS}:order/*")], GET,
      f"{ORDERS}:order/1/items/2", "allowed"),
    e("resource-wildcard-resource-part-colons", RESOURCE_WILD,
      [a(GET, f"arn:bastion:logs:eu-1:{ACCOUNT}:log-group:*")], GET,
      f"arn:bastion:logs:eu-1:{ACCOUNT}:log-group:app:stream:1", "allowed"),
    e("resource-wildcard-region", RESOURCE_WILD,
      [a(GET, f"arn:bastion:orders:*:{ACCOUNT}:order/1")], GET, RESOURCE, "allowed"),
    e("resource-wildcard-account", RESOURCE_WILD, [a(GET, "arn:bastion:orders:eu-1:*:order/1")],
      GET, RESOURCE, "allowed"),
    e("resource-wildcard-stays-in-component", ARN_FORMAT,
      [a(GET, f"arn:bastion:orders:eu-*:{ACCOUNT}:order/1")], GET,
      f"arn:bastion:orders:eu-1:x:{ACCOUNT}:order/1", "implicitDeny"),
    e("resource-wildcard-region-empty-component", ARN_FORMAT,
      [a(GET, f"arn:bastion:orders:*:{ACCOUNT}:order/1")], GET,
      f"arn:bastion:orders::{ACCOUNT}:order/1", "allowed"),
    e("resource-qmark", RESOURCE_WILD, [a(GET, f"{ORDERS}:order/?")], GET, RESOURCE, "allowed"),
    e("resource-qmark-one-char", RESOURCE_WILD, [a(GET, f"{ORDERS}:order/?")], GET,
      f"{ORDERS}:order/12", "implicitDeny"),
    e("resource-list", RESOURCE_R, [a(GET, [f"{ORDERS}:order/2", RESOURCE])], GET, RESOURCE,
      "allowed"),
    e("resource-prefix-needs-wildcard", RESOURCE_R, [a(GET, f"{ORDERS}:order/")], GET, RESOURCE,
      "implicitDeny"),
    e("resource-all-components-wild", RESOURCE_WILD, [a(GET, "arn:*:*:*:*:*")], GET, RESOURCE,
      "allowed"),
    e("resource-partition-mismatch", ARN_FORMAT, [a(GET, f"arn:aws:orders:eu-1:{ACCOUNT}:order/1")],
      GET, RESOURCE, "implicitDeny"),
    e("not-resource-allow-unlisted", NOTRESOURCE,
      [{"Effect": "Allow", "Action": GET, "NotResource": f"{ORDERS}:order/secret*"}], GET,
      RESOURCE, "allowed"),
    e("not-resource-allow-listed", NOTRESOURCE,
      [{"Effect": "Allow", "Action": GET, "NotResource": f"{ORDERS}:order/secret*"}], GET,
      f"{ORDERS}:order/secret-1", "implicitDeny"),
    e("not-resource-deny-outside", NOTRESOURCE,
      [ALLOW_ALL, {"Effect": "Deny", "Action": "*", "NotResource": f"{ORDERS}:order/*"}], GET,
      f"{ORDERS}:invoice/1", "explicitDeny"),
    e("not-resource-deny-inside", NOTRESOURCE,
      [ALLOW_ALL, {"Effect": "Deny", "Action": "*", "NotResource": f"{ORDERS}:order/*"}], GET,
      RESOURCE, "allowed"),
    e("not-resource-star-matches-nothing", NOTRESOURCE,
      [{"Effect": "Allow", "Action": GET, "NotResource": "*"}], GET, RESOURCE, "implicitDeny"),
    e("not-action-and-not-resource", NOTRESOURCE,
      [{"Effect": "Allow", "NotAction": "billing:*", "NotResource": f"{ORDERS}:order/9"}], GET,
      RESOURCE, "allowed"),
    e("statement-second-matches", STATEMENT, [a("billing:Pay"), a(GET)], GET, RESOURCE,
      "allowed"),
    e("statement-single-object", STATEMENT, a(GET), GET, RESOURCE, "allowed"),  # type: ignore[arg-type]
    e("version-2008-plain-matching", VERSION, [a(GET, "arn:bastion:orders:*:*:order/*")], GET,
      RESOURCE, "allowed", version="2008-10-17"),
    e("version-absent-plain-matching", VERSION, [a(GET)], GET, RESOURCE, "allowed",
      version=None),
]
