"""Changing IAM state: policies, attachments, inline policies, boundaries, tags, roles and
resource policies. Every document is validated before it is written (the exact findings
come back in the error); every change bumps the generation and is an audited event.

Errors carry IAM's error codes (``NoSuchEntity``, ``EntityAlreadyExists``,
``MalformedPolicyDocument``, ``DeleteConflict``, ``InvalidInput``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bastion.iam import Finding, validate_policy
from bastion.iam import store as iam_store
from bastion.iam.scheme import (
    KINDS,
    NAME_RE,
    POLICY_NAME_RE,
    Kind,
    policy_arn,
    principal_arn,
)
from bastion.store.fast import FastStore, Tx


class Recorder(Protocol):
    """The audit trail as IAM needs it: records in the change's own transaction
    (``record_in``) and, for refused changes, on their own (``emit``)."""

    async def emit(self, event_name: str, **fields: Any) -> Any: ...
    async def record_in(self, tx: Tx, event_name: str, **fields: Any) -> None: ...
PolicyKind = Literal["identity", "resource", "trust", "boundary", "session"]

_EXISTS_SQL = {
    "user": "SELECT 1 FROM users WHERE username = :name",
    "group": "SELECT 1 FROM groups WHERE name = :name",
    "client": "SELECT 1 FROM clients WHERE client_id = :name",
    "role": "SELECT 1 FROM iam_roles WHERE name = :name",
}


class IamError(Exception):
    def __init__(self, code: str, message: str, findings: list[Finding] | None = None,
                 status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.findings = findings or []
        self.status = status
        self.audited = False  # set once the refusal is an audit record

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"Code": self.code, "Message": self.message}
        if self.findings:
            body["Findings"] = [f.to_dict() for f in self.findings]
        return body


def _document(document: str | Mapping[str, Any], kind: PolicyKind) -> str:
    text = document if isinstance(document, str) else json.dumps(document)
    findings = validate_policy(text, kind=kind)
    errors = [f for f in findings if f.severity == "ERROR"]
    if errors:
        first = errors[0]
        raise IamError("MalformedPolicyDocument", f"{first.path}: {first.message}", findings)
    return text


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise IamError("InvalidInput", f"principal kind must be one of {', '.join(KINDS)}")
    return kind


def _name(name: str, what: str = "name", pattern: Any = NAME_RE) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise IamError("InvalidInput", f"invalid {what}: must match {pattern.pattern}")
    return name


@dataclass
class IamAdmin:
    store: FastStore
    account: str
    audit: Recorder
    on_change: Callable[[], None] = lambda: None

    async def _changed(self, tx: Tx) -> None:
        await iam_store.bump(tx)

    async def _audit(self, event: str, actor: Mapping[str, Any] | None, params: dict[str, Any],
                     resources: list[dict[str, str]], error: IamError) -> None:
        await self.audit.emit(event, user_identity=actor, request_parameters=params,
                              resources=resources, error_code=error.code,
                              error_message=error.message)
        error.audited = True

    async def _require(self, tx: Tx, kind: Kind, name: str) -> None:
        if await tx.one(_EXISTS_SQL[kind], name=name) is None:
            raise IamError("NoSuchEntity", f"the {kind} {name} does not exist", status=404)

    async def _policy_exists(self, tx: Tx, name: str) -> bool:
        return await tx.one("SELECT 1 FROM iam_policies WHERE name = :n", n=name) is not None

    async def _run(self, event: str, actor: Mapping[str, Any] | None, params: dict[str, Any],
                   resources: list[dict[str, str]],
                   body: Callable[[Tx], Awaitable[Any]]) -> Any:
        """Run ``body``, bump the generation and record the change, in one transaction (no
        change without its record); a refused change is recorded on its own."""
        try:
            async with self.store.transaction() as tx:
                result = await body(tx)
                await self._changed(tx)
                await self.audit.record_in(tx, event, user_identity=actor,
                                           request_parameters=params, resources=resources)
        except IamError as exc:
            await self._audit(event, actor, params, resources, exc)
            raise
        self.on_change()
        return result

    def _policy_res(self, name: str) -> list[dict[str, str]]:
        return [{"type": "Bastion::IAM::Policy", "ARN": policy_arn(name, self.account)}]

    def _principal_res(self, kind: Kind, name: str) -> list[dict[str, str]]:
        return [{"type": f"Bastion::IAM::{kind.capitalize()}",
                 "ARN": principal_arn(kind, name, self.account)}]

    # --- managed policies -----------------------------------------------------------------
    async def create_policy(self, name: str, document: str | Mapping[str, Any], *,
                            description: str = "",
                            actor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        _name(name, "policy name", POLICY_NAME_RE)
        text = _document(document, "identity")

        async def body(tx: Tx) -> dict[str, Any]:
            if await self._policy_exists(tx, name):
                raise IamError("EntityAlreadyExists", f"policy {name} already exists",
                               status=409)
            now = int(time.time())
            await tx.run("INSERT INTO iam_policies (name, description, document, version, "
                         "created_at, updated_at) VALUES (:n, :d, :doc, 1, :t, :t)",
                         n=name, d=description[:1000], doc=text, t=now)
            return {"name": name, "arn": policy_arn(name, self.account), "version": 1}

        result: dict[str, Any] = await self._run(
            "CreatePolicy", actor, {"policyName": name, "description": description},
            self._policy_res(name), body)
        return result

    async def update_policy(self, name: str, document: str | Mapping[str, Any], *,
                            actor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        text = _document(document, "identity")

        async def body(tx: Tx) -> dict[str, Any]:
            row = await tx.one("UPDATE iam_policies SET document = :doc, version = version + 1,"
                               " updated_at = :t WHERE name = :n RETURNING version",
                               doc=text, t=int(time.time()), n=name)
            if row is None:
                raise IamError("NoSuchEntity", f"policy {name} does not exist", status=404)
            return {"name": name, "arn": policy_arn(name, self.account), "version": row[0]}

        result: dict[str, Any] = await self._run(
            "CreatePolicyVersion", actor, {"policyName": name}, self._policy_res(name), body)
        return result

    async def delete_policy(self, name: str, *,
                            actor: Mapping[str, Any] | None = None) -> None:
        async def body(tx: Tx) -> None:
            used = await tx.one("SELECT kind, name FROM iam_attachments WHERE policy = :n "
                                "UNION ALL SELECT kind, name FROM iam_principals WHERE "
                                "boundary = :n", n=name)
            if used is not None:
                raise IamError("DeleteConflict", f"policy {name} is attached to {used[0]} "
                               f"{used[1]}: detach it first", status=409)
            if await tx.run("DELETE FROM iam_policies WHERE name = :n", n=name) == 0:
                raise IamError("NoSuchEntity", f"policy {name} does not exist", status=404)

        await self._run("DeletePolicy", actor, {"policyName": name}, self._policy_res(name),
                        body)

    async def get_policy(self, name: str) -> dict[str, Any]:
        row = await self.store.one("SELECT name, description, document, version, created_at, "
                                   "updated_at FROM iam_policies WHERE name = :n", n=name)
        if row is None:
            raise IamError("NoSuchEntity", f"policy {name} does not exist", status=404)
        return _policy_dict(row, self.account)

    async def list_policies(self) -> list[dict[str, Any]]:
        rows = await self.store.all("SELECT name, description, document, version, created_at, "
                                    "updated_at FROM iam_policies ORDER BY name")
        return [_policy_dict(r, self.account) for r in rows]

    # --- attachments, inline policies, boundaries, tags -----------------------------------
    async def attach(self, kind: str, name: str, policy: str, *,
                     actor: Mapping[str, Any] | None = None) -> None:
        k = _kind(kind)

        async def body(tx: Tx) -> None:
            await self._require(tx, k, name)
            if not await self._policy_exists(tx, policy):
                raise IamError("NoSuchEntity", f"policy {policy} does not exist", status=404)
            await tx.run("INSERT INTO iam_attachments (kind, name, policy, attached_at) VALUES "
                         "(:k, :n, :p, :t) ON CONFLICT DO NOTHING", k=k, n=name, p=policy,
                         t=int(time.time()))

        await self._run(f"Attach{k.capitalize()}Policy", actor,
                        {f"{k}Name": name, "policyArn": policy_arn(policy, self.account)},
                        self._principal_res(k, name) + self._policy_res(policy), body)

    async def detach(self, kind: str, name: str, policy: str, *,
                     actor: Mapping[str, Any] | None = None) -> None:
        k = _kind(kind)

        async def body(tx: Tx) -> None:
            if await tx.run("DELETE FROM iam_attachments WHERE kind = :k AND name = :n AND "
                            "policy = :p", k=k, n=name, p=policy) == 0:
                raise IamError("NoSuchEntity", f"policy {policy} is not attached to {k} "
                               f"{name}", status=404)

        await self._run(f"Detach{k.capitalize()}Policy", actor,
                        {f"{k}Name": name, "policyArn": policy_arn(policy, self.account)},
                        self._principal_res(k, name) + self._policy_res(policy), body)

    async def put_inline(self, kind: str, name: str, policy_name: str,
                         document: str | Mapping[str, Any], *,
                         actor: Mapping[str, Any] | None = None) -> None:
        k = _kind(kind)
        _name(policy_name, "policy name", POLICY_NAME_RE)
        text = _document(document, "identity")

        async def body(tx: Tx) -> None:
            await self._require(tx, k, name)
            t = int(time.time())
            await tx.run("INSERT INTO iam_inline_policies (kind, name, policy_name, document, "
                         "updated_at) VALUES (:k, :n, :p, :d, :t) ON CONFLICT (kind, name, "
                         "policy_name) DO UPDATE SET document = :d, updated_at = :t",
                         k=k, n=name, p=policy_name, d=text, t=t)

        await self._run(f"Put{k.capitalize()}Policy", actor,
                        {f"{k}Name": name, "policyName": policy_name},
                        self._principal_res(k, name), body)

    async def delete_inline(self, kind: str, name: str, policy_name: str, *,
                            actor: Mapping[str, Any] | None = None) -> None:
        k = _kind(kind)

        async def body(tx: Tx) -> None:
            if await tx.run("DELETE FROM iam_inline_policies WHERE kind = :k AND name = :n "
                            "AND policy_name = :p", k=k, n=name, p=policy_name) == 0:
                raise IamError("NoSuchEntity", f"{k} {name} has no inline policy "
                               f"{policy_name}", status=404)

        await self._run(f"Delete{k.capitalize()}Policy", actor,
                        {f"{k}Name": name, "policyName": policy_name},
                        self._principal_res(k, name), body)

    async def _upsert_principal(self, tx: Tx, k: Kind, name: str) -> None:
        await tx.run("INSERT INTO iam_principals (kind, name, boundary, tags) VALUES "
                     "(:k, :n, NULL, :tags) ON CONFLICT (kind, name) DO NOTHING",
                     k=k, n=name, tags="{}")

    async def set_boundary(self, kind: str, name: str, policy: str | None, *,
                           actor: Mapping[str, Any] | None = None) -> None:
        k = _kind(kind)

        async def body(tx: Tx) -> None:
            await self._require(tx, k, name)
            if policy is not None and not await self._policy_exists(tx, policy):
                raise IamError("NoSuchEntity", f"policy {policy} does not exist", status=404)
            await self._upsert_principal(tx, k, name)
            await tx.run("UPDATE iam_principals SET boundary = :p WHERE kind = :k AND "
                         "name = :n", p=policy, k=k, n=name)

        verb = "Put" if policy else "Delete"
        await self._run(f"{verb}{k.capitalize()}PermissionsBoundary", actor,
                        {f"{k}Name": name, "permissionsBoundary":
                         policy_arn(policy, self.account) if policy else None},
                        self._principal_res(k, name), body)

    async def set_tags(self, kind: str, name: str, tags: Mapping[str, str], *,
                       actor: Mapping[str, Any] | None = None) -> None:
        k = _kind(kind)
        if len(tags) > 50 or any(not (0 < len(str(t)) <= 128) or len(str(v)) > 256
                                 for t, v in tags.items()):
            raise IamError("InvalidInput", "at most 50 tags; keys 1-128, values 0-256 chars")

        async def body(tx: Tx) -> None:
            await self._require(tx, k, name)
            await self._upsert_principal(tx, k, name)
            await tx.run("UPDATE iam_principals SET tags = :t WHERE kind = :k AND name = :n",
                         t=json.dumps({str(a): str(b) for a, b in tags.items()}), k=k, n=name)

        await self._run(f"Tag{k.capitalize()}", actor, {f"{k}Name": name, "tags": dict(tags)},
                        self._principal_res(k, name), body)

    async def principal(self, kind: str, name: str) -> dict[str, Any]:
        k = _kind(kind)
        if await self.store.one(_EXISTS_SQL[k], name=name) is None:
            raise IamError("NoSuchEntity", f"the {k} {name} does not exist", status=404)
        managed = await self.store.all("SELECT policy FROM iam_attachments WHERE kind = :k "
                                       "AND name = :n ORDER BY policy", k=k, n=name)
        inline = await self.store.all("SELECT policy_name FROM iam_inline_policies WHERE "
                                      "kind = :k AND name = :n ORDER BY policy_name",
                                      k=k, n=name)
        row = await self.store.one("SELECT boundary, tags FROM iam_principals WHERE "
                                   "kind = :k AND name = :n", k=k, n=name)
        return {"kind": k, "name": name, "arn": principal_arn(k, name, self.account),
                "attached_policies": [r[0] for r in managed],
                "inline_policies": [r[0] for r in inline],
                "permissions_boundary": row[0] if row else None,
                "tags": iam_store.json_value(row[1]) if row and row[1] else {}}

    # --- roles ---------------------------------------------------------------------------
    async def create_role(self, name: str, trust_policy: str | Mapping[str, Any], *,
                          description: str = "", max_session_duration: int = 3600,
                          actor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        _name(name, "role name")
        text = _document(trust_policy, "trust")
        if not 900 <= max_session_duration <= 43200:
            raise IamError("InvalidInput", "max session duration must be 900-43200 seconds")

        async def body(tx: Tx) -> dict[str, Any]:
            if await tx.one(_EXISTS_SQL["role"], name=name) is not None:
                raise IamError("EntityAlreadyExists", f"role {name} already exists", status=409)
            await tx.run("INSERT INTO iam_roles (name, description, trust_policy, "
                         "max_session_duration, created_at) VALUES (:n, :d, :t, :m, :c)",
                         n=name, d=description[:1000], t=text, m=max_session_duration,
                         c=int(time.time()))
            return {"name": name, "arn": principal_arn("role", name, self.account)}

        result: dict[str, Any] = await self._run(
            "CreateRole", actor, {"roleName": name, "description": description},
            self._principal_res("role", name), body)
        return result

    async def ensure_role(self, name: str, trust_policy: Mapping[str, Any], description: str,
                          policies: list[str]) -> bool:
        """Create a role with policies attached unless it exists (bootstrap). True if made."""
        if await self.store.one(_EXISTS_SQL["role"], name=name) is not None:
            return False
        await self.create_role(name, trust_policy, description=description)
        for policy in policies:
            await self.attach("role", name, policy)
        return True

    async def update_trust(self, name: str, trust_policy: str | Mapping[str, Any], *,
                           actor: Mapping[str, Any] | None = None) -> None:
        text = _document(trust_policy, "trust")

        async def body(tx: Tx) -> None:
            if await tx.run("UPDATE iam_roles SET trust_policy = :t WHERE name = :n",
                            t=text, n=name) == 0:
                raise IamError("NoSuchEntity", f"role {name} does not exist", status=404)

        await self._run("UpdateAssumeRolePolicy", actor, {"roleName": name},
                        self._principal_res("role", name), body)

    async def delete_role(self, name: str, *, actor: Mapping[str, Any] | None = None) -> None:
        async def body(tx: Tx) -> None:
            if await tx.one("SELECT 1 FROM iam_attachments WHERE kind = 'role' AND name = :n "
                            "UNION ALL SELECT 1 FROM iam_inline_policies WHERE kind = 'role' "
                            "AND name = :n", n=name) is not None:
                raise IamError("DeleteConflict", f"role {name} has policies: remove them "
                               "first", status=409)
            if await tx.run("DELETE FROM iam_roles WHERE name = :n", n=name) == 0:
                raise IamError("NoSuchEntity", f"role {name} does not exist", status=404)
            await tx.run("DELETE FROM iam_principals WHERE kind = 'role' AND name = :n", n=name)

        await self._run("DeleteRole", actor, {"roleName": name},
                        self._principal_res("role", name), body)

    async def get_role(self, name: str) -> dict[str, Any]:
        row = await self.store.one(iam_store.ROLE_SQL, name=name)
        if row is None:
            raise IamError("NoSuchEntity", f"role {name} does not exist", status=404)
        return {"name": row[0], "arn": principal_arn("role", row[0], self.account),
                "description": row[1], "trust_policy": json.loads(row[2]),
                "max_session_duration": row[3], "created_at": row[4]}

    async def list_roles(self) -> list[dict[str, Any]]:
        rows = await self.store.all("SELECT name FROM iam_roles ORDER BY name")
        return [await self.get_role(r[0]) for r in rows]

    # --- resource policies ---------------------------------------------------------------
    async def put_resource_policy(self, resource_arn: str, document: str | Mapping[str, Any],
                                  *, actor: Mapping[str, Any] | None = None) -> None:
        text = _document(document, "resource")
        if not resource_arn.startswith("arn:") or len(resource_arn) > 512 \
                or not resource_arn.isprintable():
            raise IamError("InvalidInput", "resource must be an ARN (at most 512 printable "
                           "chars)")

        async def body(tx: Tx) -> None:
            await tx.run("INSERT INTO iam_resource_policies (resource_arn, document, "
                         "updated_at) VALUES (:a, :d, :t) ON CONFLICT (resource_arn) DO "
                         "UPDATE SET document = :d, updated_at = :t", a=resource_arn, d=text,
                         t=int(time.time()))

        await self._run("PutResourcePolicy", actor, {"resourceArn": resource_arn},
                        [{"ARN": resource_arn}], body)


def _policy_dict(row: Any, account: str) -> dict[str, Any]:
    return {"name": row[0], "arn": policy_arn(row[0], account), "description": row[1],
            "document": json.loads(row[2]), "version": row[3], "created_at": row[4],
            "updated_at": row[5]}
