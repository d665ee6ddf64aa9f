"""Grants (AWS KMS Developer Guide, "Grants in AWS KMS"; API Reference: CreateGrant,
ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant).

A grant lets its grantee principal run some operations on one key, without a policy
change. It allows on its own (like a key-policy statement naming the grantee), but an
explicit Deny in the key policy or an identity policy still wins. A grantee that is a role
ARN covers the role's sessions. Constraints bind the grant to the encryption context of the
request: ``EncryptionContextEquals`` (exactly that map) or ``EncryptionContextSubset``
(those pairs, others allowed). Grants take effect at once here (AWS: eventually); the
``GrantToken`` returned only names the grant.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.iam.arn import parse_identity_cached
from bastion.kms import crypto
from bastion.kms import fields as f
from bastion.kms.context import parse_context
from bastion.kms.core import Call, now_ms
from bastion.kms.errors import (
    AccessDeniedException,
    InvalidArnException,
    NotFoundException,
    ValidationException,
)
from bastion.kms.store import KeyRecord
from bastion.store.fast import Reader, Row

GRANT_OPERATIONS = (
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom", "ReEncryptTo", "Sign", "Verify", "GetPublicKey", "CreateGrant",
    "RetireGrant", "DescribeKey", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac", "VerifyMac", "DeriveSharedSecret")
_ANY_KEY = ("CreateGrant", "RetireGrant", "DescribeKey")
_SYMMETRIC = ("Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
              "ReEncryptFrom", "ReEncryptTo", "GenerateDataKeyPair",
              "GenerateDataKeyPairWithoutPlaintext")
_RSA_ENCRYPT = ("Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey")
_SIGN = ("Sign", "Verify", "GetPublicKey")
_MAC = ("GenerateMac", "VerifyMac")
_CONSTRAINTS = ("EncryptionContextEquals", "EncryptionContextSubset")
_COLUMNS = ("grant_id, key_id, name, grantee, retiring, operations, constraints, issuer, "
            "created_at")
TOKEN_PREFIX = "bgt1."  # noqa: S105 - a format marker, not a secret
MAX_GRANTS_PER_KEY = 50_000  # AWS's quota


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    key_id: str
    name: str | None
    grantee: str
    retiring: str | None
    operations: tuple[str, ...]
    constraints: dict[str, dict[str, str]] | None
    issuer: str
    created_at: int

    def covers(self, principal: str, operation: str, context: Mapping[str, str] | None) -> bool:
        if operation not in self.operations:
            return False
        if principal != self.grantee:
            ident = parse_identity_cached(principal) if len(principal) <= 512 else None
            if ident is None or not ident.role_arn or ident.role_arn != self.grantee:
                return False
        if not self.constraints:
            return True
        ctx = dict(context or {})
        equals = self.constraints.get("EncryptionContextEquals")
        if equals is not None and ctx != equals:
            return False
        subset = self.constraints.get("EncryptionContextSubset")
        return subset is None or all(ctx.get(k) == v for k, v in subset.items())


def _grant(row: Row) -> Grant:
    return Grant(str(row[0]), str(row[1]), row[2], str(row[3]), row[4],
                 tuple(json.loads(row[5])), json.loads(row[6]) if row[6] else None,
                 str(row[7]), int(row[8]))


async def for_key(db: Reader, key_id: str) -> list[Grant]:
    rows = await db.all(f"SELECT {_COLUMNS} FROM kms_grants WHERE key_id = :k "  # noqa: S608
                        "ORDER BY grant_id", k=key_id)
    return [_grant(r) for r in rows]


def allowed_for(spec: str, usage: str) -> tuple[str, ...]:
    if spec == crypto.SYMMETRIC:
        return _ANY_KEY + _SYMMETRIC
    if usage == "ENCRYPT_DECRYPT":
        return _ANY_KEY + _RSA_ENCRYPT
    if usage == "SIGN_VERIFY":
        return _ANY_KEY + _SIGN
    return _ANY_KEY + _MAC


def _principal(req: dict[str, Any], field: str, required: bool) -> str | None:
    value = f.string(req, field, required=required, max_len=256)
    if value is not None and not (value.startswith("arn:") and value.count(":") >= 5
                                  and value.isprintable()):
        raise InvalidArnException(f"{field} must be a principal ARN")
    return value


def _constraints(value: Any) -> dict[str, dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(_CONSTRAINTS) or len(value) != 1:
        raise ValidationException("Constraints holds one of EncryptionContextEquals and "
                                  "EncryptionContextSubset")
    name, ctx = next(iter(value.items()))
    return {name: parse_context(ctx, f"Constraints.{name}")}


async def create_grant(call: Call) -> dict[str, Any]:
    req, core = call.request, call.core
    ref = f.required_string(req, "KeyId", max_len=2048)
    grantee = _principal(req, "GranteePrincipal", True)
    retiring = _principal(req, "RetiringPrincipal", False)
    ops = f.string_list(req, "Operations", max_items=len(GRANT_OPERATIONS), required=True)
    assert ops is not None and grantee is not None
    if not ops or any(o not in GRANT_OPERATIONS for o in ops):
        raise ValidationException("Operations must list grant operations: "
                                  + ", ".join(GRANT_OPERATIONS))
    constraints = _constraints(req.get("Constraints"))
    name = f.string(req, "Name", max_len=256)
    if name is not None and not all(c.isalnum() or c in ":/_-" for c in name):
        raise ValidationException("Name holds only letters, digits, :, /, _ and -")
    f.grant_tokens(req)
    rec, _ = await core.resolve(ref, aliases=False)
    call.resources.append(core.key_arn(rec.id))
    ops = list(dict.fromkeys(ops))
    call.params.update(granteePrincipal=grantee, retiringPrincipal=retiring, operations=ops,
                       constraints=constraints, name=name)
    extra: dict[str, Any] = {"kms:GrantOperations": ops, "kms:GranteePrincipal": grantee,
                             "kms:GrantIsForAWSResource": False}
    if retiring:
        extra["kms:RetiringPrincipal"] = retiring
    if constraints:
        extra["kms:GrantConstraintType"] = next(iter(constraints))
    await core.authorize(call, "CreateGrant", rec, extra, grant_subset=ops)
    core.not_pending(rec)
    if any(o not in allowed_for(rec.spec, rec.usage) for o in ops):
        raise ValidationException(f"Operations are not all valid for key spec {rec.spec} "
                                  f"and key usage {rec.usage}")
    if constraints and rec.spec != crypto.SYMMETRIC:
        raise ValidationException("Grant constraints apply to symmetric encryption keys only")
    if f.boolean(req, "DryRun"):
        from bastion.kms.errors import DryRunOperationException

        raise DryRunOperationException("The request would have succeeded, but the DryRun "
                                       "flag is set.")
    existing = await for_key(core.fast, rec.id)
    if name is not None:  # AWS: the same request with the same Name is idempotent
        for g in existing:
            if (g.name, g.grantee, g.retiring, list(g.operations), g.constraints) == \
                    (name, grantee, retiring, ops, constraints):
                return {"GrantId": g.grant_id, "GrantToken": TOKEN_PREFIX + g.grant_id}
    if len(existing) >= MAX_GRANTS_PER_KEY:
        from bastion.kms.errors import LimitExceededException

        raise LimitExceededException("the key has too many grants")
    grant_id = secrets.token_hex(32)
    async with core.fast.transaction() as tx:
        await tx.run(f"INSERT INTO kms_grants ({_COLUMNS}) VALUES (:g, :k, :n, :ge, :r, "  # noqa: S608
                     ":o, :c, :i, :t)", g=grant_id, k=rec.id, n=name, ge=grantee, r=retiring,
                     o=json.dumps(ops), c=json.dumps(constraints) if constraints else None,
                     i=call.caller.principal_arn, t=now_ms())
    core.forget_grants(rec.id)
    return {"GrantId": grant_id, "GrantToken": TOKEN_PREFIX + grant_id}


def _listing(call: Call, rec_arn: str, g: Grant) -> dict[str, Any]:
    out: dict[str, Any] = {"KeyId": rec_arn, "GrantId": g.grant_id,
                           "CreationDate": g.created_at / 1000, "GranteePrincipal": g.grantee,
                           "IssuingAccount": f"arn:bastion:iam::{call.core.account}:root",
                           "Operations": list(g.operations)}
    if g.name is not None:
        out["Name"] = g.name
    if g.retiring is not None:
        out["RetiringPrincipal"] = g.retiring
    if g.constraints:
        out["Constraints"] = g.constraints
    return out


def _paged(items: list[dict[str, Any]], limit: int, after: str) -> dict[str, Any]:
    from bastion.kms.manage import _next_marker

    items = [i for i in items if i["GrantId"] > after]
    out: dict[str, Any] = {"Grants": items[:limit], "Truncated": len(items) > limit}
    if len(items) > limit:
        out["NextMarker"] = _next_marker(items[limit - 1]["GrantId"])
    return out


async def list_grants(call: Call) -> dict[str, Any]:
    from bastion.kms.manage import _marker

    req, core = call.request, call.core
    ref = f.required_string(req, "KeyId", max_len=2048)
    limit = f.integer(req, "Limit", 1, 100, default=50)
    assert limit is not None
    after = _marker(f.string(req, "Marker", max_len=1024))
    grant_id = f.string(req, "GrantId", max_len=128)
    grantee = _principal(req, "GranteePrincipal", False)
    rec, _ = await core.resolve(ref, aliases=False)
    call.resources.append(core.key_arn(rec.id))
    await core.authorize(call, "ListGrants", rec)
    grants = [g for g in await for_key(core.fast, rec.id)
              if (grant_id is None or g.grant_id == grant_id)
              and (grantee is None or g.grantee == grantee)]
    return _paged([_listing(call, core.key_arn(rec.id), g) for g in grants], limit, after)


async def list_retirable_grants(call: Call) -> dict[str, Any]:
    from bastion.kms.manage import _marker

    req, core = call.request, call.core
    retiring = _principal(req, "RetiringPrincipal", True)
    limit = f.integer(req, "Limit", 1, 100, default=50)
    assert limit is not None
    after = _marker(f.string(req, "Marker", max_len=1024))
    await core.authorize(call, "ListRetirableGrants", None)
    rows = await core.fast.all(f"SELECT {_COLUMNS} FROM kms_grants WHERE "  # noqa: S608
                               "retiring = :r ORDER BY grant_id", r=retiring)
    return _paged([_listing(call, core.key_arn(g.key_id), g) for g in map(_grant, rows)],
                  limit, after)


async def _find(call: Call, key: KeyRecord, grant_id: str) -> Grant:
    for g in await for_key(call.core.fast, key.id):
        if g.grant_id == grant_id:
            return g
    raise NotFoundException(f"Grant ID {grant_id} not found")


async def _delete(call: Call, g: Grant) -> None:
    async with call.core.fast.transaction() as tx:
        await tx.run("DELETE FROM kms_grants WHERE grant_id = :g", g=g.grant_id)
    call.core.forget_grants(g.key_id)


async def retire_grant(call: Call) -> dict[str, Any]:
    """Who may retire: the retiring principal, the grantee when the grant includes
    RetireGrant, the account (root), and the local operator."""
    req, core = call.request, call.core
    token = f.string(req, "GrantToken", max_len=8192)
    ref = f.string(req, "KeyId", max_len=2048)
    grant_id = f.string(req, "GrantId", max_len=128)
    if token is not None:
        if not token.startswith(TOKEN_PREFIX):
            raise ValidationException("GrantToken is not valid")
        grant_id = token[len(TOKEN_PREFIX):]
    if grant_id is None:
        raise ValidationException("Give GrantToken, or KeyId and GrantId")
    if ref is not None:
        rec, _ = await core.resolve(ref, aliases=False)
    else:
        row = await core.fast.one("SELECT key_id FROM kms_grants WHERE grant_id = :g",
                                  g=grant_id)
        found = await core.key(str(row[0])) if row is not None else None
        if found is None:
            raise NotFoundException(f"Grant ID {grant_id} not found")
        rec = found
    call.resources.append(core.key_arn(rec.id))
    g = await _find(call, rec, grant_id)
    caller = call.caller
    who = caller.principal_arn
    if not (caller.operator or who == g.retiring or who == f"arn:bastion:iam::{core.account}"
            ":root" or g.covers(who, "RetireGrant", None)):
        raise AccessDeniedException(f"User: {who} is not authorized to perform: "
                                    f"kms:RetireGrant on this grant")
    await _delete(call, g)
    return {}


async def revoke_grant(call: Call) -> dict[str, Any]:
    req, core = call.request, call.core
    ref = f.required_string(req, "KeyId", max_len=2048)
    grant_id = f.required_string(req, "GrantId", max_len=128)
    rec, _ = await core.resolve(ref, aliases=False)
    call.resources.append(core.key_arn(rec.id))
    await core.authorize(call, "RevokeGrant", rec)
    await _delete(call, await _find(call, rec, grant_id))
    return {}
