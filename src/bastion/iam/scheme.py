"""Bastion's ARN scheme for principals and the resources it serves.

    arn:bastion:iam::<account>:user/<username>
    arn:bastion:iam::<account>:group/<group>
    arn:bastion:iam::<account>:role/<role>
    arn:bastion:iam::<account>:client/<client_id>        OAuth clients (service accounts)
    arn:bastion:iam::<account>:policy/<policy>
    arn:bastion:sts::<account>:assumed-role/<role>/<session>
    arn:bastion:orders::<account>:order/<order_id>

Role names follow IAM's ``[\\w+=,.@-]`` plus ``:`` (so that token roles such as
``order:view`` name roles directly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PARTITION = "bastion"
Kind = Literal["user", "group", "role", "client"]
KINDS: tuple[Kind, ...] = ("user", "group", "role", "client")
# ASCII only, as IAM: ``\w`` would also accept lookalikes ("ＡdministratorΑccess") and
# other scripts' digits. Use with ``fullmatch`` (``$`` lets a trailing newline through).
NAME_RE = re.compile(r"[\w+=,.@:-]{1,128}", re.ASCII)
POLICY_NAME_RE = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


def arn(service: str, account: str, resource: str, region: str = "") -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def principal_arn(kind: Kind, name: str, account: str) -> str:
    return arn("iam", account, f"{kind}/{name}")


def policy_arn(name: str, account: str) -> str:
    return arn("iam", account, f"policy/{name}")


def session_arn(role: str, session: str, account: str) -> str:
    return arn("sts", account, f"assumed-role/{role}/{session}")


@dataclass(frozen=True, slots=True)
class PrincipalRef:
    """A principal named by ARN: kind and name (for an assumed-role session, the role)."""

    kind: Kind
    name: str
    session: str | None = None


def parse_principal_arn(value: str, account: str) -> PrincipalRef | None:
    """The principal an ARN of this account names, or None. IAM and STS ARNs are global:
    an ARN with a region names nothing (so one principal has exactly one spelling, and a
    policy naming its canonical ARN cannot be dodged by another)."""
    parts = value.split(":", 5)
    if (len(parts) != 6 or parts[0] != "arn" or parts[1] != PARTITION or parts[3] != ""
            or parts[4] != account):
        return None
    service, resource = parts[2], parts[5]
    if service == "sts" and resource.startswith("assumed-role/"):
        role, _, session = resource[len("assumed-role/"):].partition("/")
        if NAME_RE.fullmatch(role) and SESSION_NAME_RE.fullmatch(session):
            return PrincipalRef("role", role, session)
        return None
    if service != "iam":
        return None
    kind, _, name = resource.partition("/")
    if kind in KINDS and NAME_RE.fullmatch(name):
        return PrincipalRef(kind, name)
    return None
