"""AWS JSON policy elements: Principal and NotPrincipal (resource-based and trust policies).

Accepted forms: ``"*"``, ``{"AWS": "*" | account-id | ARN | [...]}``, ``{"Service": ...}``,
``{"Federated": ...}``, ``{"CanonicalUser": ...}``. Wildcards inside a principal are not allowed
(only the whole value ``"*"``), and a group cannot be a principal.

Matching (``Principal``):

- ``"*"`` / ``{"AWS": "*"}``: everyone, anonymous included.
- A 12-digit account ID or ``arn:<p>:iam::<account>:root``: every principal of that account.
- ``arn:<p>:iam::<account>:role/<R>``: the role and every session assumed from it
  (``arn:<p>:sts::<account>:assumed-role/<R>/<session>``); the role's path is ignored for
  sessions, which carry only its name.
- Any other ARN, service or provider: that exact principal.

A match names the requester *directly* when the element holds ``Request.principal`` itself
(user, client, role session or federated-user ARN; service or provider name). Only direct grants
escape an implicit deny in permissions boundaries and session policies
(see :mod:`bastion.iam.evaluate`).

``NotPrincipal`` applies unless *every* principal the request is made as (itself, the role of a
session, its account: :meth:`Identity.chain`) is listed, as "AWS JSON policy elements:
NotPrincipal" describes for ``Deny``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bastion.iam.arn import ACCOUNT_RE, Identity, arn_problem, role_name, split_arn

PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")
_SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
Reach = Literal["direct", "role", "account"]


@dataclass(frozen=True, slots=True)
class PrincipalSpec:
    anyone: bool
    exact: frozenset[str]
    accounts: frozenset[str]  # "<account>" (any partition) or "<partition>:<account>"
    roles: frozenset[str]  # normalised role ARNs (path dropped)

    def match(self, ident: Identity) -> tuple[bool, bool]:
        """``(matched, direct)`` for the ``Principal`` element."""
        reach = self.reach(ident)
        return reach is not None, reach == "direct"

    def reach(self, ident: Identity) -> Reach | None:
        """How the ``Principal`` element reaches the requester, or None when it does not:
        ``direct`` (its own ARN), ``role`` (the role of a session), ``account`` (its account,
        or everyone)."""
        if ident.principal in self.exact:
            return "direct"
        if ident.role_arn and ident.role_arn in self.roles:
            return "role"
        if ident.account and (
            ident.account in self.accounts or f"{ident.partition}:{ident.account}" in self.accounts
        ):
            return "account"
        if self.anyone:
            return "account"
        return None

    def covers(self, name: str, ident: Identity) -> bool:
        """Whether ``NotPrincipal`` lists ``name`` (one entry of ``ident.chain()``)."""
        if self.anyone or name in self.exact or name in self.roles:
            return True
        if name == ident.root_arn:
            return ident.account in self.accounts or (
                f"{ident.partition}:{ident.account}" in self.accounts
            )
        return False

    def excludes(self, ident: Identity) -> bool:
        """``NotPrincipal`` applies to the request (some principal in its chain is unlisted)."""
        return not all(self.covers(name, ident) for name in ident.chain())


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def compile_principal(element: object) -> PrincipalSpec:
    """Compile a validated ``Principal``/``NotPrincipal`` value."""
    if element == "*":
        return PrincipalSpec(True, frozenset(), frozenset(), frozenset())
    anyone = False
    exact: set[str] = set()
    accounts: set[str] = set()
    roles: set[str] = set()
    if isinstance(element, dict):
        for ptype, value in element.items():
            for entry in _strings(value):
                if ptype != "AWS":
                    exact.add(entry)
                elif entry == "*":
                    anyone = True
                elif ACCOUNT_RE.fullmatch(entry):
                    accounts.add(entry)
                else:
                    _add_arn(entry, exact, accounts, roles)
    return PrincipalSpec(anyone, frozenset(exact), frozenset(accounts), frozenset(roles))


def _add_arn(entry: str, exact: set[str], accounts: set[str], roles: set[str]) -> None:
    parts = split_arn(entry)
    if parts is None:
        exact.add(entry)
        return
    _, partition, service, _region, account, resource = parts
    if service == "iam" and resource == "root":
        accounts.add(f"{partition}:{account}")
    elif service == "iam" and resource.startswith("role/"):
        exact.add(entry)
        roles.add(f"arn:{partition}:iam::{account}:role/{role_name(resource)}")
    else:
        exact.add(entry)


def principal_problems(element: object) -> Iterable[tuple[str, str, str]]:
    """``(sub-path, code, message)`` for each problem in a ``Principal``-like element."""
    if element == "*":
        return
    if not isinstance(element, dict):
        yield "", "INVALID_PRINCIPAL", 'Principal must be "*" or an object such as {"AWS": ...}'
        return
    if not element:
        yield "", "INVALID_PRINCIPAL", "Principal object is empty"
    for ptype, value in element.items():
        if ptype not in PRINCIPAL_TYPES:
            yield f".{ptype}", "INVALID_PRINCIPAL", f"unknown principal type {ptype!r}"
            continue
        entries: list[tuple[str, object]]
        if isinstance(value, list):
            if not value:
                yield f".{ptype}", "EMPTY_ARRAY", "principal list is empty"
            entries = [(f".{ptype}[{i}]", v) for i, v in enumerate(value)]
        else:
            entries = [(f".{ptype}", value)]
        for sub, entry in entries:
            if not isinstance(entry, str):
                yield sub, "INVALID_TYPE", "a principal must be a string"
                continue
            problem = _entry_problem(ptype, entry)
            if problem:
                yield sub, "INVALID_PRINCIPAL", problem


def _entry_problem(ptype: str, entry: str) -> str | None:
    if ptype == "AWS":
        if entry == "*" or ACCOUNT_RE.fullmatch(entry):
            return None
        if "*" in entry or "?" in entry:
            return "wildcards are not allowed in a principal (only the whole value '*')"
        problem = arn_problem(entry, wildcards=False)
        if problem:
            return f"invalid principal ARN: {problem}"
        parts = split_arn(entry)
        assert parts is not None
        service, account, resource = parts[2], parts[4], parts[5]
        if not ACCOUNT_RE.fullmatch(account):
            return "a principal ARN needs a 12-digit account ID"
        kind, _, rest = resource.partition("/")
        if service == "iam" and resource == "root":
            return None
        if service == "iam" and kind in ("user", "role", "client") and rest:
            return None
        if service == "iam" and kind == "group":
            return "a group cannot be a principal"
        if service == "sts" and kind == "assumed-role" and rest.count("/") >= 1:
            return None
        if service == "sts" and kind == "federated-user" and rest:
            return None
        return "not a user, role, client, root, assumed-role or federated-user ARN"
    if not entry.strip() or entry != entry.strip() or "*" in entry or "?" in entry:
        return f"invalid {ptype} principal"
    if ptype == "Service" and not _SERVICE_RE.fullmatch(entry):
        return "a service principal looks like 'orders.bastion' or 'ec2.amazonaws.com'"
    return None
