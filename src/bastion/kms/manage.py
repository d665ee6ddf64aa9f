"""Key management operations (AWS KMS API Reference): CreateKey, DescribeKey, ListKeys,
EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion, aliases, tags, rotation
settings, key policies. Each change commits with its audit record."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import replace
from typing import Any

from bastion.kms import crypto
from bastion.kms import fields as f
from bastion.kms import store as db
from bastion.kms.core import ALIAS_NAME_RE, Call, now_ms
from bastion.kms.errors import (
    AccessDeniedException,
    AlreadyExistsException,
    InvalidAliasNameException,
    InvalidMarkerException,
    KMSInvalidStateException,
    MalformedPolicyDocumentException,
    NotFoundException,
    TagException,
    UnsupportedOperationException,
    ValidationException,
)
from bastion.kms.policy import POLICY_NAME, check, default_policy

DAY_MS = 86_400_000
MAX_TAGS = 50


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def metadata(call: Call, rec: db.KeyRecord) -> dict[str, Any]:
    """``KeyMetadata`` (AWS KMS API Reference, "KeyMetadata")."""
    meta: dict[str, Any] = {
        "AWSAccountId": call.core.account, "KeyId": rec.id, "Arn": call.core.key_arn(rec.id),
        "CreationDate": rec.created_at / 1000, "Enabled": rec.state == "Enabled",
        "Description": rec.description, "KeyUsage": rec.usage, "KeyState": rec.state,
        "Origin": "AWS_KMS", "KeyManager": "CUSTOMER", "CustomerMasterKeySpec": rec.spec,
        "KeySpec": rec.spec, "MultiRegion": False,
    }
    if rec.deletion_at is not None:
        meta["DeletionDate"] = rec.deletion_at / 1000
        meta["PendingDeletionWindowInDays"] = rec.pending_days
    enc = crypto.encryption_algorithms(rec.spec, rec.usage)
    if enc:
        meta["EncryptionAlgorithms"] = enc
    sig = crypto.signing_algorithms(rec.spec, rec.usage)
    if sig:
        meta["SigningAlgorithms"] = sig
    mac = crypto.mac_algorithms(rec.spec)
    if mac:
        meta["MacAlgorithms"] = mac
    return meta


def _key_ref(call: Call, field: str = "KeyId") -> str:
    return f.required_string(call.request, field, max_len=2048)


async def _key(call: Call, *, aliases: bool = False, field: str = "KeyId") -> db.KeyRecord:
    rec, _ = await call.core.resolve(_key_ref(call, field), aliases=aliases)
    call.resources.append(call.core.key_arn(rec.id))
    return rec


def _tags(value: Any, field: str = "Tags") -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise ValidationException(f"{field} must be a list of at most {MAX_TAGS} tags")
    out: dict[str, str] = {}
    for tag in value:
        if not isinstance(tag, dict) or set(tag) - {"TagKey", "TagValue"}:
            raise ValidationException(f"{field} entries are {{TagKey, TagValue}}")
        k, v = tag.get("TagKey"), tag.get("TagValue")
        if not isinstance(k, str) or not 1 <= len(k) <= 128:
            raise ValidationException("TagKey must be a string of 1 to 128 characters")
        if not isinstance(v, str) or len(v) > 256:
            raise ValidationException("TagValue must be a string of 0 to 256 characters")
        if k.lower().startswith("aws:"):
            raise TagException("Tag keys beginning with aws: are reserved")
        out[k] = v
    return list(out.items())


def _marker(value: str | None) -> str:
    if value is None:
        return ""
    try:
        raw = base64.urlsafe_b64decode(value.encode()).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidMarkerException("Marker is invalid") from None
    if not raw.startswith("m1:"):
        raise InvalidMarkerException("Marker is invalid")
    return raw[3:]


def _next_marker(last: str) -> str:
    return base64.urlsafe_b64encode(b"m1:" + last.encode()).decode()


def _page(items: list[Any], limit: int, last: Any) -> dict[str, Any]:
    if len(items) > limit:
        return {"Truncated": True, "NextMarker": _next_marker(last(items[limit - 1]))}
    return {"Truncated": False}


# --- keys -----------------------------------------------------------------------------------
async def _lockout_check(call: Call, rec: db.KeyRecord, bypass: bool | None) -> None:
    """AWS's policy lockout safety check: the caller must still be allowed
    ``kms:PutKeyPolicy`` under the policy being set, unless it says
    ``BypassPolicyLockoutSafetyCheck`` (and a key nobody can manage is then its choice)."""
    if bypass:
        return
    try:
        await call.core.authorize(call, "PutKeyPolicy", rec)
    except AccessDeniedException:
        raise MalformedPolicyDocumentException(
            "The new key policy will not allow you to update the key policy in the future"
        ) from None


async def create_key(call: Call) -> dict[str, Any]:
    req, core = call.request, call.core
    usage = f.enum(req, "KeyUsage", crypto.KEY_USAGES, default="ENCRYPT_DECRYPT")
    spec = f.enum(req, "KeySpec", crypto.ALL_KEY_SPECS)
    legacy = f.enum(req, "CustomerMasterKeySpec", crypto.ALL_KEY_SPECS)
    if spec is not None and legacy is not None:
        raise ValidationException("KeySpec and CustomerMasterKeySpec are mutually exclusive")
    spec = spec or legacy or crypto.SYMMETRIC
    assert usage is not None
    description = f.string(req, "Description", min_len=0, max_len=8192) or ""
    origin = f.enum(req, "Origin", ("AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"),
                    default="AWS_KMS")
    if origin != "AWS_KMS":
        raise UnsupportedOperationException(f"Origin {origin} is not supported")
    if f.string(req, "CustomKeyStoreId", max_len=64) or f.string(req, "XksKeyId", max_len=128):
        raise UnsupportedOperationException("custom key stores are not supported")
    if f.boolean(req, "MultiRegion"):
        raise UnsupportedOperationException("multi-Region keys are not supported")
    bypass = f.boolean(req, "BypassPolicyLockoutSafetyCheck")
    policy_text = f.string(req, "Policy", max_len=32768)
    tags = _tags(req.get("Tags"))
    if spec not in crypto.KEY_SPECS:
        raise UnsupportedOperationException(f"KeySpec {spec} is not supported")
    if usage not in crypto.KEY_SPECS[spec]:
        raise ValidationException(f"KeySpec {spec} is not valid for KeyUsage {usage}")
    policy = check(policy_text) if policy_text is not None else default_policy(core.account)
    call.params.update(keySpec=spec, keyUsage=usage, description=description,
                       tags={k: v for k, v in tags})
    await core.authorize(call, "CreateKey", None)
    key_id = str(uuid.uuid4())
    secret, public = crypto.generate(spec)
    wrapped = await core.wrap(key_id, 1, secret)
    now = now_ms()
    rec = db.KeyRecord(key_id, spec, usage, "Enabled", description, policy, now, None, None,
                       None, None, 1)
    if policy_text is not None:
        await _lockout_check(call, rec, bypass)
    call.resources.append(core.key_arn(key_id))
    async with core.fast.transaction() as tx:
        await db.insert_key(tx, rec)
        await db.insert_version(tx, key_id, 1, core.keeper.name, wrapped, public, None, now)
        if tags:
            await db.put_tags(tx, key_id, tags)
    return {"KeyMetadata": metadata(call, rec)}


async def describe_key(call: Call) -> dict[str, Any]:
    rec = await _key(call, aliases=True)
    f.grant_tokens(call.request)
    await call.core.authorize(call, "DescribeKey", rec)
    return {"KeyMetadata": metadata(call, rec)}


async def list_keys(call: Call) -> dict[str, Any]:
    limit = f.integer(call.request, "Limit", 1, 1000, default=100)
    assert limit is not None
    after = _marker(f.string(call.request, "Marker", max_len=1024))
    await call.core.authorize(call, "ListKeys", None)
    ids = await db.list_keys(call.core.fast, after, limit + 1)
    out: dict[str, Any] = {"Keys": [{"KeyId": i, "KeyArn": call.core.key_arn(i)}
                                    for i in ids[:limit]]}
    out.update(_page(ids, limit, lambda i: i))
    return out


async def _set_state(call: Call, action: str, state: str) -> dict[str, Any]:
    rec = await _key(call)
    await call.core.authorize(call, action, rec)
    call.core.not_pending(rec)
    async with call.core.fast.transaction() as tx:
        changed = await db.update_key(tx, rec.id, state=state) if rec.state != state else 1
        if not changed:
            raise NotFoundException(f"Key '{call.core.key_arn(rec.id)}' does not exist")
    call.core.forget(rec.id)
    return {}


async def enable_key(call: Call) -> dict[str, Any]:
    return await _set_state(call, "EnableKey", "Enabled")


async def disable_key(call: Call) -> dict[str, Any]:
    return await _set_state(call, "DisableKey", "Disabled")


async def schedule_key_deletion(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    days = f.integer(call.request, "PendingWindowInDays", 7, 30, default=30)
    assert days is not None
    call.params["pendingWindowInDays"] = days
    await call.core.authorize(call, "ScheduleKeyDeletion", rec)
    call.core.not_pending(rec)
    when = now_ms() + days * DAY_MS
    async with call.core.fast.transaction() as tx:
        await db.update_key(tx, rec.id, state="PendingDeletion", deletion_at=when,
                            pending_days=days)
    call.core.forget(rec.id)
    return {"KeyId": call.core.key_arn(rec.id), "DeletionDate": when / 1000,
            "KeyState": "PendingDeletion", "PendingWindowInDays": days}


async def cancel_key_deletion(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    await call.core.authorize(call, "CancelKeyDeletion", rec)
    if rec.state != "PendingDeletion":
        raise KMSInvalidStateException(f"{call.core.key_arn(rec.id)} is not pending deletion.")
    async with call.core.fast.transaction() as tx:
        await db.update_key(tx, rec.id, state="Disabled", deletion_at=None, pending_days=None)
    call.core.forget(rec.id)
    return {"KeyId": call.core.key_arn(rec.id)}


async def update_key_description(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    description = f.string(call.request, "Description", required=True, min_len=0,
                           max_len=8192)
    await call.core.authorize(call, "UpdateKeyDescription", rec)
    call.core.not_pending(rec)
    async with call.core.fast.transaction() as tx:
        await db.update_key(tx, rec.id, description=description)
    call.core.forget(rec.id)
    return {}


# --- key policy -----------------------------------------------------------------------------
def _policy_name(call: Call) -> None:
    name = f.string(call.request, "PolicyName", max_len=128)
    if name is not None and name != POLICY_NAME:
        raise NotFoundException(f"No such policy exists: {name}")


async def get_key_policy(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    _policy_name(call)
    await call.core.authorize(call, "GetKeyPolicy", rec)
    return {"Policy": rec.policy, "PolicyName": POLICY_NAME}


async def put_key_policy(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    _policy_name(call)
    text = check(f.required_string(call.request, "Policy", max_len=32768))
    bypass = f.boolean(call.request, "BypassPolicyLockoutSafetyCheck")
    await call.core.authorize(call, "PutKeyPolicy", rec)
    call.core.not_pending(rec)
    await _lockout_check(call, replace(rec, policy=text), bypass)
    async with call.core.fast.transaction() as tx:
        await db.update_key(tx, rec.id, policy=text)
    call.core.forget(rec.id)
    return {}


async def list_key_policies(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    f.integer(call.request, "Limit", 1, 1000)
    await call.core.authorize(call, "ListKeyPolicies", rec)
    return {"PolicyNames": [POLICY_NAME], "Truncated": False}


# --- aliases --------------------------------------------------------------------------------
def _alias_name(call: Call, *, creating: bool) -> str:
    name = f.required_string(call.request, "AliasName", max_len=256)
    call.params["aliasName"] = name
    if not ALIAS_NAME_RE.fullmatch(name):
        raise ValidationException("AliasName must begin with alias/ and hold only "
                                  "letters, digits, /, _ and -")
    if name.startswith("alias/aws/") and creating:
        raise InvalidAliasNameException("Aliases beginning with alias/aws/ are reserved "
                                        "for AWS managed keys")
    return name


async def _alias_allowed(call: Call, action: str, name: str) -> None:
    await call.core.authorize(call, action, None, resource=call.core.alias_arn(name))


async def create_alias(call: Call) -> dict[str, Any]:
    name = _alias_name(call, creating=True)
    rec = await _key(call, field="TargetKeyId")
    await _alias_allowed(call, "CreateAlias", name)
    await call.core.authorize(call, "CreateAlias", rec)
    call.core.not_pending(rec)
    if await db.alias_target(call.core.fast, name) is not None:
        raise AlreadyExistsException(f"An alias with the name {call.core.alias_arn(name)} "
                                     "already exists")
    try:
        async with call.core.fast.transaction() as tx:
            await db.insert_alias(tx, name, rec.id, now_ms())
    except Exception as exc:  # a concurrent CreateAlias won the primary key
        if await db.alias_target(call.core.fast, name) is not None:
            raise AlreadyExistsException(f"An alias with the name "
                                         f"{call.core.alias_arn(name)} already exists") \
                from None
        raise exc
    call.core.forget()
    return {}


async def update_alias(call: Call) -> dict[str, Any]:
    name = _alias_name(call, creating=True)
    rec = await _key(call, field="TargetKeyId")
    current = await db.alias_target(call.core.fast, name)
    if current is None:
        raise NotFoundException(f"Alias {call.core.alias_arn(name)} is not found.")
    old = await call.core.key(current)
    await _alias_allowed(call, "UpdateAlias", name)
    await call.core.authorize(call, "UpdateAlias", rec)
    if old is not None:
        await call.core.authorize(call, "UpdateAlias", old)
        if (old.spec == crypto.SYMMETRIC) != (rec.spec == crypto.SYMMETRIC) \
                or old.usage != rec.usage:
            raise ValidationException("the new target key must have the same key type and "
                                      "key usage as the current one")
    call.core.not_pending(rec)
    async with call.core.fast.transaction() as tx:
        await db.retarget_alias(tx, name, rec.id, now_ms())
    call.core.forget()
    return {}


async def delete_alias(call: Call) -> dict[str, Any]:
    name = _alias_name(call, creating=False)
    current = await db.alias_target(call.core.fast, name)
    if current is None:
        raise NotFoundException(f"Alias {call.core.alias_arn(name)} is not found.")
    await _alias_allowed(call, "DeleteAlias", name)
    rec = await call.core.key(current)
    if rec is not None:
        call.resources.append(call.core.key_arn(rec.id))
        await call.core.authorize(call, "DeleteAlias", rec)
    async with call.core.fast.transaction() as tx:
        await db.delete_alias(tx, name)
    call.core.forget()
    return {}


async def list_aliases(call: Call) -> dict[str, Any]:
    req, core = call.request, call.core
    limit = f.integer(req, "Limit", 1, 100, default=50)
    assert limit is not None
    after = _marker(f.string(req, "Marker", max_len=1024))
    key_id = None
    if req.get("KeyId") is not None:
        rec = await _key(call)
        key_id = rec.id
    await core.authorize(call, "ListAliases", None)
    rows = await db.list_aliases(core.fast, after, limit + 1, key_id)
    out: dict[str, Any] = {"Aliases": [
        {"AliasName": n, "AliasArn": core.alias_arn(n), "TargetKeyId": k,
         "CreationDate": c / 1000, "LastUpdatedDate": u / 1000} for n, k, c, u in rows[:limit]]}
    out.update(_page(rows, limit, lambda r: r[0]))
    return out


# --- tags -----------------------------------------------------------------------------------
async def tag_resource(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    if call.request.get("Tags") is None:
        raise ValidationException("Tags must not be null")
    tags = _tags(call.request.get("Tags"))
    call.params["tags"] = dict(tags)
    await call.core.authorize(call, "TagResource", rec)
    call.core.not_pending(rec)
    existing = {k for k, _ in await db.tags(call.core.fast, rec.id)}
    if len(existing | {k for k, _ in tags}) > MAX_TAGS:
        raise TagException(f"a key holds at most {MAX_TAGS} tags")
    async with call.core.fast.transaction() as tx:
        await db.put_tags(tx, rec.id, tags)
    return {}


async def untag_resource(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    keys = f.string_list(call.request, "TagKeys", max_items=MAX_TAGS, required=True)
    assert keys is not None
    call.params["tagKeys"] = keys
    await call.core.authorize(call, "UntagResource", rec)
    call.core.not_pending(rec)
    async with call.core.fast.transaction() as tx:
        await db.delete_tags(tx, rec.id, keys)
    return {}


async def list_resource_tags(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    limit = f.integer(call.request, "Limit", 1, 50, default=50)
    assert limit is not None
    after = _marker(f.string(call.request, "Marker", max_len=1024))
    await call.core.authorize(call, "ListResourceTags", rec)
    pairs = [p for p in await db.tags(call.core.fast, rec.id) if p[0] > after]
    out: dict[str, Any] = {"Tags": [{"TagKey": k, "TagValue": v} for k, v in pairs[:limit]]}
    out.update(_page(pairs, limit, lambda p: p[0]))
    return out


# --- rotation -------------------------------------------------------------------------------
def _rotatable(call: Call, rec: db.KeyRecord) -> None:
    if rec.spec != crypto.SYMMETRIC:
        raise UnsupportedOperationException(f"{call.core.key_arn(rec.id)} key type does not "
                                            "support automatic or on-demand rotation")


async def enable_key_rotation(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    days = f.integer(call.request, "RotationPeriodInDays", 90, 2560, default=365)
    assert days is not None
    call.params["rotationPeriodInDays"] = days
    await call.core.authorize(call, "EnableKeyRotation", rec)
    call.core.usable(rec)
    _rotatable(call, rec)
    async with call.core.fast.transaction() as tx:
        await db.update_key(tx, rec.id, rotation_period=days,
                            next_rotation_at=now_ms() + days * DAY_MS)
    call.core.forget(rec.id)
    return {}


async def disable_key_rotation(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    await call.core.authorize(call, "DisableKeyRotation", rec)
    call.core.usable(rec)
    _rotatable(call, rec)
    async with call.core.fast.transaction() as tx:
        await db.update_key(tx, rec.id, rotation_period=None, next_rotation_at=None)
    call.core.forget(rec.id)
    return {}


async def get_key_rotation_status(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    await call.core.authorize(call, "GetKeyRotationStatus", rec)
    out: dict[str, Any] = {"KeyId": call.core.key_arn(rec.id),
                           "KeyRotationEnabled": rec.rotation_period is not None}
    if rec.rotation_period is not None:
        out["RotationPeriodInDays"] = rec.rotation_period
        out["NextRotationDate"] = _seconds(rec.next_rotation_at)
    return out


async def rotate(call: Call, rec: db.KeyRecord, rotation_type: str) -> int:
    """Add a version and make it current, in one transaction with nothing else: a crash
    leaves the key on the old or the new version, both decrypting. A concurrent rotation
    (another request or instance) makes this one retry on top of it."""
    core = call.core
    for _ in range(5):
        number = rec.current_version + 1
        secret, public = crypto.generate(rec.spec)
        wrapped = await core.wrap(rec.id, number, secret)
        now = now_ms()
        nxt = rec.next_rotation_at
        if rotation_type == "AUTOMATIC" and rec.rotation_period is not None:
            nxt = now + rec.rotation_period * DAY_MS
        async with core.fast.transaction() as tx:
            # compare-and-set first: on PostgreSQL the row lock makes a concurrent rotation
            # wait here and then find the version moved (no duplicate version)
            won = await tx.run("UPDATE kms_keys SET current_version = :n, next_rotation_at "
                               "= :nxt WHERE id = :id AND current_version = :old",
                               n=number, nxt=nxt, id=rec.id, old=rec.current_version)
            if won:
                await db.insert_version(tx, rec.id, number, core.keeper.name, wrapped,
                                        public, rotation_type, now)
        if won:
            core.forget(rec.id)
            return number
        core.forget(rec.id)
        fresh = await db.key(core.fast, rec.id)
        if fresh is None:
            raise NotFoundException(f"Key '{core.key_arn(rec.id)}' does not exist")
        rec = fresh
    raise KMSInvalidStateException("the key is being rotated concurrently; retry")


async def rotate_key_on_demand(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    await call.core.authorize(call, "RotateKeyOnDemand", rec)
    call.core.usable(rec)
    _rotatable(call, rec)
    await rotate(call, rec, "ON_DEMAND")
    return {"KeyId": call.core.key_arn(rec.id)}


async def list_key_rotations(call: Call) -> dict[str, Any]:
    rec = await _key(call)
    limit = f.integer(call.request, "Limit", 1, 1000, default=100)
    assert limit is not None
    after = _marker(f.string(call.request, "Marker", max_len=1024))
    await call.core.authorize(call, "ListKeyRotations", rec)
    _rotatable(call, rec)
    start = int(after) if after.isdigit() else 0
    rows = [r for r in await db.rotations(call.core.fast, rec.id) if r[2] and r[0] > start]
    arn = call.core.key_arn(rec.id)
    out: dict[str, Any] = {"Rotations": [
        {"KeyId": arn, "RotationDate": at / 1000, "RotationType": kind}
        for _, at, kind in rows[:limit]]}
    out.update(_page(rows, limit, lambda r: str(r[0])))
    return out
