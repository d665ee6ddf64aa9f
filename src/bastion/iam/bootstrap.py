"""Policies and roles every Bastion starts with: the Orders roles that tokens carry
(``order:view``, ``order:create``) and ``admin``. Created once; an operator may change or
detach them afterwards and Bastion leaves them alone, with one exception: a stored
``AdministratorAccess`` still exactly as earlier versions wrote it (no scope condition, so
any token of an admin, even one a third-party client got for ``openid``, was an IAM-admin
credential) is upgraded to require the ``bastion:admin`` scope."""

from __future__ import annotations

import contextlib
from typing import Any

from bastion.iam.admin import IamAdmin, IamError

ADMIN_SCOPE = "bastion:admin"  # the OAuth scope of administration (never granted by default)


def _allow(actions: list[str], resource: str, scope: str | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resource}
    if scope is not None:  # the token must also carry the OAuth scope
        statement["Condition"] = {"ForAnyValue:StringEquals": {"bastion:Scope": scope}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def managed_policies(account: str) -> dict[str, tuple[str, dict[str, Any]]]:
    orders = f"arn:bastion:orders::{account}:order/*"
    return {
        "BastionOrdersRead": ("Read one's orders (with scope order:view).",
                              _allow(["orders:ListOrders", "orders:GetOrder"], orders,
                                     "order:view")),
        "BastionOrdersCreate": ("Place orders (with scope order:create).",
                                _allow(["orders:CreateOrder"], orders, "order:create")),
        "AdministratorAccess": (f"Every action on every resource (with scope {ADMIN_SCOPE}).",
                                _allow(["*"], "*", ADMIN_SCOPE)),
    }


ROLES = {
    "order:view": ("Orders: read access", ["BastionOrdersRead"]),
    "order:create": ("Orders: place orders", ["BastionOrdersCreate"]),
    "admin": ("Full administration", ["AdministratorAccess"]),
}


# what versions before the admin scope stored: upgraded in place when still unchanged
LEGACY = {"AdministratorAccess": _allow(["*"], "*")}


async def bootstrap(admin: IamAdmin) -> None:
    existing = {p["name"]: p for p in await admin.list_policies()}
    actor = {"type": "Bastion", "principalId": "bootstrap"}
    for name, (description, document) in managed_policies(admin.account).items():
        if name not in existing:
            with contextlib.suppress(IamError):  # another instance made it first
                await admin.create_policy(name, document, description=description,
                                          actor=actor)
        elif name in LEGACY and existing[name]["document"] == LEGACY[name]:
            await admin.update_policy(name, document, actor=actor)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:bastion:iam::{admin.account}:root"},
        "Action": "sts:AssumeRole"}]}
    for role, (description, policies) in ROLES.items():
        with contextlib.suppress(IamError):
            await admin.ensure_role(role, trust, description, policies)
