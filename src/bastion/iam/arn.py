"""Amazon Resource Names as Bastion uses them, and ARN pattern matching.

Format: ``arn:partition:service:region:account-id:resource``. Bastion's principals:

- ``arn:bastion:iam::<account>:user/<name>``, ``:group/<name>``, ``:role/<path/><name>``,
  ``:client/<client_id>`` (OAuth clients / service accounts), ``:root`` (the account);
- ``arn:bastion:sts::<account>:assumed-role/<role>/<session>`` (an assumed-role session),
  ``arn:bastion:sts::<account>:federated-user/<name>``.

Any partition (``aws`` too) is accepted syntactically.

Matching follows "IAM JSON policy elements: Condition operators › Amazon Resource Name (ARN)
condition operators": "Each of the six colon-delimited components of the ARN is checked
separately and each can include multi-character match wildcards (*) or single-character match
wildcards (?)". The resource component is everything after the fifth colon, so it may itself
contain ``:`` and ``/``; wildcards never cross the first five colons. The same rule is used for
the ``Resource`` element.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

ACCOUNT_RE = re.compile(r"[0-9]{12}")
_PARTITION_RE = re.compile(r"[a-z0-9-]+")


def split_arn(text: str) -> list[str] | None:
    """The six components of an ARN, or ``None`` when ``text`` is not one."""
    if not text.startswith("arn:"):
        return None
    parts = text.split(":", 5)
    if len(parts) != 6:
        return None
    return parts


def arn_problem(text: str, *, wildcards: bool) -> str | None:
    """Why ``text`` is not a well-formed ARN (pattern), or ``None``.

    Components holding a wildcard or a ``${...}`` variable are not checked further.
    """
    parts = split_arn(text)
    if parts is None:
        return "an ARN is arn:partition:service:region:account:resource (six components)"
    _, partition, service, _region, account, resource = parts

    def dynamic(component: str) -> bool:
        return "${" in component or (wildcards and ("*" in component or "?" in component))

    if not partition or not (dynamic(partition) or _PARTITION_RE.fullmatch(partition)):
        return "invalid partition"
    if not service:
        return "missing service"
    if not dynamic(service) and not re.fullmatch(r"[a-z0-9-]+", service):
        return "invalid service"
    if account and not dynamic(account) and not (ACCOUNT_RE.fullmatch(account) or account == "aws"):
        return "the account must be a 12-digit account ID"
    if not resource:
        return "missing resource"
    if not wildcards and ("*" in text or "?" in text):
        return "wildcards are not allowed here"
    return None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is making a request, parsed from ``Request.principal``.

    ``kind`` is ``user``, ``role``, ``session`` (assumed role), ``client``, ``root``,
    ``federated-user``, ``group`` or ``other`` (service principal, web-identity provider,
    anonymous...). ``role_arn`` is set for sessions: the role they were assumed from.
    """

    principal: str
    kind: str
    partition: str = ""
    account: str = ""
    role_arn: str = ""

    @property
    def root_arn(self) -> str:
        if not self.account:
            return ""
        return f"arn:{self.partition}:iam::{self.account}:root"

    def chain(self) -> tuple[str, ...]:
        """Every principal the request is made as: itself, its role, its account.

        "AWS JSON policy elements: NotPrincipal": a request is checked as each of these; with
        ``Deny`` + ``NotPrincipal`` the principal, its role and its account must all be listed.
        """
        out = [self.principal]
        if self.role_arn:
            out.append(self.role_arn)
        root = self.root_arn
        if root and root != self.principal:
            out.append(root)
        return tuple(out)


def parse_identity(principal: str) -> Identity:
    parts = split_arn(principal)
    if parts is None:
        return Identity(principal, "other")
    _, partition, service, _region, account, resource = parts
    if not account:
        return Identity(principal, "other")
    if service == "iam":
        if resource == "root":
            return Identity(principal, "root", partition, account)
        kind, _, rest = resource.partition("/")
        if rest and kind in ("user", "role", "client", "group"):
            return Identity(principal, kind, partition, account)
    elif service == "sts":
        kind, _, rest = resource.partition("/")
        if kind == "assumed-role":
            role, sep, session = rest.partition("/")
            if role and sep and session:
                role_arn = f"arn:{partition}:iam::{account}:role/{role}"
                return Identity(principal, "session", partition, account, role_arn)
        elif kind == "federated-user" and rest:
            return Identity(principal, "federated-user", partition, account)
    return Identity(principal, "other", partition, account)


parse_identity_cached = functools.lru_cache(maxsize=4096)(parse_identity)


def role_name(role_arn_resource: str) -> str:
    """``role/path/to/Name`` → ``Name`` (sessions carry the role's name without its path)."""
    return role_arn_resource.rsplit("/", 1)[-1]
