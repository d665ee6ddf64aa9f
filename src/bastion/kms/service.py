"""Bastion's KMS as one object: ``await kms.call("Encrypt", request, caller)`` takes and
returns the AWS KMS JSON 1.1 wire dicts (blobs as base64 strings, AWS member names) and
raises :class:`~bastion.kms.errors.KMSError` with the AWS error name. The wire layer (SigV4,
``X-Amz-Target: TrentService.<Operation>``, HTTP) calls it; so does ``bastion kms``.

Every call is audited as CloudTrail records KMS calls (event name = operation, the key ARN
as resource, the encryption context and key specs as request parameters) and never with a
plaintext, a data key, a ciphertext, a signature or a MAC. The record names the access key
of a SigV4-signed call (``userIdentity.accessKeyId``); an operation the KMS does not have is
recorded as ``UnknownOperation``, without reading the request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from bastion.kms import cryptoops, grants, manage
from bastion.kms import store as db
from bastion.kms.core import Call, Caller, Core, now_ms
from bastion.kms.errors import (
    KMSError,
    KMSInternalException,
    UnknownOperationException,
    ValidationException,
)
from bastion.kms.root import RootKeeper, open_root_keeper

if TYPE_CHECKING:
    from bastion.config import Settings
    from bastion.iam.authorizer import Authorizer
    from bastion.store.fast import FastStore

__all__ = ["KMS", "Caller", "open_kms"]
log = logging.getLogger("bastion.kms")
Handler = Callable[[Call], Awaitable[dict[str, Any]]]
_NAME_RE = re.compile(r"[A-Za-z]{1,64}")  # an operation name an audit record may copy

OPERATIONS: dict[str, Handler] = {
    "CreateKey": manage.create_key,
    "DescribeKey": manage.describe_key,
    "ListKeys": manage.list_keys,
    "EnableKey": manage.enable_key,
    "DisableKey": manage.disable_key,
    "ScheduleKeyDeletion": manage.schedule_key_deletion,
    "CancelKeyDeletion": manage.cancel_key_deletion,
    "UpdateKeyDescription": manage.update_key_description,
    "GetKeyPolicy": manage.get_key_policy,
    "PutKeyPolicy": manage.put_key_policy,
    "ListKeyPolicies": manage.list_key_policies,
    "CreateAlias": manage.create_alias,
    "UpdateAlias": manage.update_alias,
    "DeleteAlias": manage.delete_alias,
    "ListAliases": manage.list_aliases,
    "TagResource": manage.tag_resource,
    "UntagResource": manage.untag_resource,
    "ListResourceTags": manage.list_resource_tags,
    "EnableKeyRotation": manage.enable_key_rotation,
    "DisableKeyRotation": manage.disable_key_rotation,
    "GetKeyRotationStatus": manage.get_key_rotation_status,
    "RotateKeyOnDemand": manage.rotate_key_on_demand,
    "ListKeyRotations": manage.list_key_rotations,
    "CreateGrant": grants.create_grant,
    "ListGrants": grants.list_grants,
    "ListRetirableGrants": grants.list_retirable_grants,
    "RetireGrant": grants.retire_grant,
    "RevokeGrant": grants.revoke_grant,
    "Encrypt": cryptoops.encrypt,
    "Decrypt": cryptoops.decrypt,
    "ReEncrypt": cryptoops.re_encrypt,
    "GenerateDataKey": cryptoops.generate_data_key,
    "GenerateDataKeyWithoutPlaintext": cryptoops.generate_data_key_without_plaintext,
    "GenerateDataKeyPair": cryptoops.generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext": cryptoops.generate_data_key_pair_without_plaintext,
    "GenerateRandom": cryptoops.generate_random,
    "Sign": cryptoops.sign,
    "Verify": cryptoops.verify,
    "GetPublicKey": cryptoops.get_public_key,
    "GenerateMac": cryptoops.generate_mac,
    "VerifyMac": cryptoops.verify_mac,
}
#: response members an audit record may carry (nothing secret is in this list)
_AUDITED_RESPONSE = ("KeyId", "GrantId", "SourceKeyId", "EncryptionAlgorithm",
                     "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm",
                     "SigningAlgorithm", "MacAlgorithm", "KeyPairSpec", "KeyState",
                     "DeletionDate", "PendingWindowInDays", "SignatureValid", "MacValid")


class Recorder(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


def user_identity(caller: Caller) -> dict[str, Any]:
    if caller.operator:
        return {"type": "LocalOperator", "principalId": caller.principal_arn,
                "accountId": caller.account_id}
    ident: dict[str, Any] = {"type": "BastionPrincipal", "arn": caller.principal_arn,
                             "accountId": caller.account_id}
    if caller.subject is not None:
        ident["principalId"] = caller.subject.key
        if caller.subject.session:
            ident["type"] = "AssumedRole"
    if caller.via_service:
        ident["invokedBy"] = caller.via_service
    if caller.access_key_id:  # CloudTrail's userIdentity.accessKeyId
        ident["accessKeyId"] = caller.access_key_id
    return ident


class KMS(Core):
    """The KMS service object (``provider.kms``)."""

    def __init__(self, fast: FastStore, keeper: RootKeeper, authorizer: Authorizer,
                 audit: Recorder, **kw: Any) -> None:
        super().__init__(fast, keeper, authorizer, **kw)
        self.audit = audit

    async def call(self, operation: str, request: dict[str, Any],
                   caller: Caller) -> dict[str, Any]:
        handler = OPERATIONS.get(operation)
        call = Call(self, operation, request, caller)
        if handler is None:  # audited under a name of the catalogue; the request is not read
            unknown = UnknownOperationException(f"Unknown operation {operation[:64]!r}")
            call.params["operation"] = operation[:64] if _NAME_RE.fullmatch(operation) \
                else "(malformed)"
            await self._record(call, None, unknown, event="UnknownOperation")
            raise unknown
        try:
            if not isinstance(request, dict):
                raise ValidationException("the request body must be a JSON object")
            ref = request.get("KeyId")
            if isinstance(ref, str):
                call.params["keyId"] = ref[:2048]
            response = await handler(call)
        except KMSError as exc:
            await self._record(call, None, exc)
            raise
        except Exception:
            log.exception("KMS %s failed", operation)
            error = KMSInternalException("An internal error occurred.")
            await self._record(call, None, error)
            raise error from None
        await self._record(call, response, None)
        return response

    async def _record(self, call: Call, response: dict[str, Any] | None,
                      error: KMSError | None, *, event: str | None = None) -> None:
        caller = call.caller
        fields: dict[str, Any] = {
            "user_identity": user_identity(caller),
            "request_parameters": call.params or None,
            "resources": [{"ARN": arn, "type": "AWS::KMS::Key", "accountId": self.account}
                          for arn in dict.fromkeys(call.resources)],
        }
        if caller.request_id:
            fields["request_id"] = caller.request_id
        if caller.source_ip:
            fields["source_ip"] = caller.source_ip
        if caller.user_agent:
            fields["user_agent"] = caller.user_agent
        if error is not None:
            fields["error_code"] = error.code
            fields["error_message"] = error.message
        elif response is not None:
            elements = {k: response[k] for k in _AUDITED_RESPONSE if k in response}
            meta = response.get("KeyMetadata")
            if isinstance(meta, dict):
                elements["keyMetadata"] = {k: meta.get(k) for k in
                                           ("KeyId", "Arn", "KeyState", "KeySpec", "KeyUsage")}
            fields["response_elements"] = elements or None
        await self.audit.emit(event or call.operation, **fields)

    # --- housekeeping --------------------------------------------------------------------
    async def purge_deleted(self, now: int | None = None) -> list[str]:
        """Complete the deletions that are due: the key, its material, aliases and tags
        go; nothing it protected decrypts again. Returns the deleted key ids."""
        done = []
        for key_id in await db.due_deletions(self.fast, now if now is not None else now_ms()):
            async with self.fast.transaction() as tx:
                if await db.delete_key(tx, key_id):
                    done.append(key_id)
            self.forget(key_id)
            self.drop_material(key_id)
            await self.audit.emit("DeleteKey", user_identity={
                "type": "Bastion", "principalId": "kms-housekeeping"},
                resources=[{"ARN": self.key_arn(key_id), "type": "AWS::KMS::Key",
                            "accountId": self.account}])
        return done

    async def rotate_due(self, now: int | None = None) -> list[str]:
        """Rotate the keys whose automatic rotation is due."""
        done = []
        for key_id in await db.due_rotations(self.fast, now if now is not None else now_ms()):
            rec = await db.key(self.fast, key_id)
            if rec is None:
                continue
            call = Call(self, "RotateKey", {}, Caller("bastion", self.account, operator=True))
            await manage.rotate(call, rec, "AUTOMATIC")
            done.append(key_id)
            await self.audit.emit("RotateKey", user_identity={
                "type": "Bastion", "principalId": "kms-housekeeping"},
                resources=[{"ARN": self.key_arn(key_id), "type": "AWS::KMS::Key",
                            "accountId": self.account}])
        return done

    async def housekeeping(self) -> None:
        await self.purge_deleted()
        await self.rotate_due()

    def close(self) -> None:
        self.keeper.close()


def open_kms(settings: Settings, fast: FastStore, authorizer: Authorizer,
             audit: Recorder) -> KMS:
    """The KMS over the configured root keeper (``RootUnavailable`` at startup when the
    root cannot be reached: fail closed)."""
    return KMS(fast, open_root_keeper(settings), authorizer, audit,
               account=settings.account_id, region=settings.kms_region,
               cache_ttl=settings.kms_cache_ttl,
               material_size=settings.kms_material_cache_size,
               material_ttl=settings.kms_material_cache_ttl)
