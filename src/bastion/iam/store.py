"""IAM state on the fast store: managed and inline policies, attachments, boundaries, tags,
roles with trust policies, resource policies, and the generation counter that tells every
instance to drop its compiled policies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bastion.store.fast import FastStore, Tx

GENERATION_SQL = "SELECT generation FROM iam_generation WHERE id = 1"
BUMP_SQL = ("INSERT INTO iam_generation (id, generation) VALUES (1, 1) ON CONFLICT (id) "
            "DO UPDATE SET generation = iam_generation.generation + 1")
MANAGED_SQL = ("SELECT p.name, p.document FROM iam_attachments a JOIN iam_policies p "
               "ON p.name = a.policy WHERE a.kind = :kind AND a.name = :name ORDER BY p.name")
INLINE_SQL = ("SELECT policy_name, document FROM iam_inline_policies WHERE kind = :kind AND "
              "name = :name ORDER BY policy_name")
PRINCIPAL_SQL = ("SELECT s.boundary, s.tags, p.document FROM iam_principals s LEFT JOIN "
                 "iam_policies p ON p.name = s.boundary WHERE s.kind = :kind AND s.name = :name")
USER_SQL = "SELECT id, username, disabled FROM users WHERE id = :id"
USER_BY_NAME_SQL = "SELECT id, username, disabled FROM users WHERE username = :name"
GROUPS_SQL = ("SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id "
              "WHERE m.user_id = :id ORDER BY g.name")
ROLE_SQL = ("SELECT name, description, trust_policy, max_session_duration, created_at "
            "FROM iam_roles WHERE name = :name")
RESOURCE_POLICY_SQL = "SELECT document FROM iam_resource_policies WHERE resource_arn = :arn"


@dataclass(frozen=True)
class PolicyDoc:
    """A stored policy document: ``policy_id`` names it in decisions (``inline:<name>`` for
    an inline policy, the policy name for a managed one)."""

    policy_id: str
    document: str


@dataclass(frozen=True)
class PrincipalPolicies:
    identity: tuple[PolicyDoc, ...]
    boundary: PolicyDoc | None
    tags: dict[str, str]


def json_value(value: Any) -> Any:
    """A JSON column as read back: SQLite and asyncpg hand over text."""
    return json.loads(value) if isinstance(value, str | bytes) else value


async def generation(store: FastStore) -> int:
    row = await store.one(GENERATION_SQL)
    return int(row[0]) if row is not None else 0


async def bump(tx: Tx) -> None:
    await tx.run(BUMP_SQL)


async def own_policies(store: FastStore, kind: str, name: str) -> list[PolicyDoc]:
    docs = [PolicyDoc(r[0], r[1]) for r in await store.all(MANAGED_SQL, kind=kind, name=name)]
    docs += [PolicyDoc(f"{kind}/{name}/inline:{r[0]}", r[1])
             for r in await store.all(INLINE_SQL, kind=kind, name=name)]
    return docs


async def principal_policies(store: FastStore, kind: str, name: str,
                             groups: tuple[str, ...] = (),
                             roles: tuple[str, ...] = ()) -> PrincipalPolicies:
    """Identity policies of a principal: its own, its groups' and those of the roles its
    token carries; plus its permission boundary and tags."""
    docs = await own_policies(store, kind, name)
    for group in groups:
        docs += await own_policies(store, "group", group)
    for role in roles:
        docs += await own_policies(store, "role", role)
    unique = tuple({d.policy_id: d for d in reversed(docs)}.values())[::-1]
    row = await store.one(PRINCIPAL_SQL, kind=kind, name=name)
    boundary = PolicyDoc(row[0], row[2]) if row is not None and row[0] else None
    tags = json_value(row[1]) if row is not None and row[1] else {}
    return PrincipalPolicies(unique, boundary, {str(k): str(v) for k, v in tags.items()})


async def user_groups(store: FastStore, user_id: str) -> tuple[str, ...]:
    return tuple(r[0] for r in await store.all(GROUPS_SQL, id=user_id))


async def resource_policy(store: FastStore, resource_arn: str) -> str | None:
    row = await store.one(RESOURCE_POLICY_SQL, arn=resource_arn)
    return str(row[0]) if row is not None else None
