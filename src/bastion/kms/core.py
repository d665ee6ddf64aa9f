"""What every KMS operation shares: the caller, key lookup (key id, key ARN, alias name,
alias ARN), key state rules, authorization against key policy + identity policies, and the
unwrapped key material (a bounded cache in front of the root keeper)."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache, TTLCache

from bastion.iam import Request, evaluate
from bastion.iam.authorizer import Authorizer, Subject
from bastion.iam.evaluate import NO_TRUST, TRUST_DELEGATES
from bastion.iam.policyset import PolicySet
from bastion.iam.scheme import PARTITION
from bastion.kms import crypto
from bastion.kms import store as db
from bastion.kms.errors import (
    AccessDeniedException,
    DisabledException,
    KMSInternalException,
    KMSInvalidStateException,
    NotFoundException,
)
from bastion.kms.policy import PolicyCache
from bastion.kms.root import RootKeeper, RootUnavailable, RootUnwrapError
from bastion.store.fast import FastStore

# the evaluator words key-policy outcomes as for role trust policies (same semantics)
_REASONS = {
    NO_TRUST.reason: "the key policy does not allow the action",
    TRUST_DELEGATES.reason: "the key policy delegates to IAM and no identity-based policy "
                            "allows the action",
}
ALIAS_NAME_RE = re.compile(r"alias/[a-zA-Z0-9/_-]{1,250}")
_EMPTY = PolicySet()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls, as the wire layer authenticated it. ``subject`` is what the IAM engine
    resolves to policies; ``operator`` marks the local administrator (the CLI, which can
    read the data dir and so the root key itself): it passes authorization, and is
    audited as such."""

    principal_arn: str
    account_id: str
    subject: Subject | None = None
    source_ip: str | None = None
    via_service: str | None = None
    request_id: str = ""
    operator: bool = False
    secure: bool = True
    user_agent: str | None = None
    access_key_id: str | None = None  # the SigV4 key that signed the call (never its secret)


@dataclass(slots=True)
class Call:
    """One operation in progress: its request, caller, and what its audit record says."""

    core: Core
    operation: str
    request: dict[str, Any]
    caller: Caller
    params: dict[str, Any] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)


def now_ms() -> int:
    return int(time.time() * 1000)


class Core:
    def __init__(self, fast: FastStore, keeper: RootKeeper, authorizer: Authorizer, *,
                 account: str, region: str = "", cache_ttl: float = 1.0,
                 material_size: int = 10_000, material_ttl: float = 300.0) -> None:
        self.fast = fast
        self.keeper = keeper
        self.authorizer = authorizer
        self.account = account
        self.region = region
        self._arn_prefix = f"arn:{PARTITION}:kms:{region}:{account}:"
        self._policies = PolicyCache()
        self._keys: TTLCache[str, db.KeyRecord] | None = (
            TTLCache(maxsize=50_000, ttl=cache_ttl) if cache_ttl > 0 else None)
        self._aliases: TTLCache[str, str | None] | None = (
            TTLCache(maxsize=50_000, ttl=cache_ttl) if cache_ttl > 0 else None)
        self._grants: TTLCache[str, list[Any]] | None = (
            TTLCache(maxsize=50_000, ttl=cache_ttl) if cache_ttl > 0 else None)
        self._material: TTLCache[tuple[str, int], crypto.Material] = TTLCache(
            maxsize=material_size, ttl=material_ttl)
        self._public: LRUCache[tuple[str, int], bytes | None] = LRUCache(maxsize=10_000)

    # --- names ---------------------------------------------------------------------------
    def key_arn(self, key_id: str) -> str:
        return f"{self._arn_prefix}key/{key_id}"

    def alias_arn(self, name: str) -> str:
        return self._arn_prefix + name

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached metadata after a change made here (others see it within the TTL)."""
        if self._keys is not None:
            if key_id is None:
                self._keys.clear()
            else:
                self._keys.pop(key_id, None)
        if self._aliases is not None:
            self._aliases.clear()

    def drop_material(self, key_id: str) -> None:
        self.forget_grants(key_id)
        for k in [k for k in list(self._material) if k[0] == key_id]:
            self._material.pop(k, None)

    # --- lookup --------------------------------------------------------------------------
    async def key(self, key_id: str) -> db.KeyRecord | None:
        if self._keys is not None:
            hit = self._keys.get(key_id)
            if hit is not None:
                return hit
        rec = await db.key(self.fast, key_id)
        if rec is not None and self._keys is not None:
            self._keys[key_id] = rec
        return rec

    async def alias(self, name: str) -> str | None:
        if self._aliases is not None and name in self._aliases:
            return self._aliases[name]
        target = await db.alias_target(self.fast, name)
        if self._aliases is not None:
            self._aliases[name] = target
        return target

    def parse_key_ref(self, ref: str, *, aliases: bool) -> tuple[str | None, str | None]:
        """``(key id, alias name)``: exactly one is set. Raises NotFoundException for a
        reference that cannot name anything here."""
        alias: str | None = None
        key_id: str | None = None
        if ref.startswith("arn:"):
            if not ref.startswith(self._arn_prefix):
                raise NotFoundException(f"Invalid arn {ref}")
            rest = ref[len(self._arn_prefix):]
            if rest.startswith("key/"):
                key_id = rest[4:]
            elif rest.startswith("alias/"):
                alias = rest
            else:
                raise NotFoundException(f"Invalid arn {ref}")
        elif ref.startswith("alias/"):
            alias = ref
        else:
            key_id = ref
        if alias is not None:
            if not aliases:
                raise NotFoundException(f"Invalid keyId {ref}: this operation takes a key "
                                        "ID or key ARN, not an alias")
            if not ALIAS_NAME_RE.fullmatch(alias):
                raise NotFoundException(f"Alias {self.alias_arn(alias)} is not found.")
            return None, alias
        assert key_id is not None
        try:
            canonical = str(uuid.UUID(key_id))
        except ValueError:
            raise NotFoundException(f"Invalid keyId {ref}") from None
        if canonical != key_id:
            raise NotFoundException(f"Invalid keyId {ref}")
        return key_id, None

    async def resolve(self, ref: str, *, aliases: bool = True) -> tuple[db.KeyRecord, str | None]:
        """The key a reference names, and the alias used (for ``kms:RequestAlias``)."""
        key_id, alias = self.parse_key_ref(ref, aliases=aliases)
        if alias is not None:
            key_id = await self.alias(alias)
            if key_id is None:
                raise NotFoundException(f"Alias {self.alias_arn(alias)} is not found.")
        assert key_id is not None
        rec = await self.key(key_id)
        if rec is None:
            raise NotFoundException(f"Key '{self.key_arn(key_id)}' does not exist")
        return rec, alias

    # --- state ---------------------------------------------------------------------------
    def usable(self, rec: db.KeyRecord) -> None:
        """Cryptographic operations need an Enabled key (AWS KMS Developer Guide, "Key
        states of AWS KMS keys")."""
        if rec.state == "Enabled":
            return
        arn = self.key_arn(rec.id)
        if rec.state == "Disabled":
            raise DisabledException(f"{arn} is disabled.")
        raise KMSInvalidStateException(f"{arn} is pending deletion.")

    def not_pending(self, rec: db.KeyRecord) -> None:
        if rec.state == "PendingDeletion":
            raise KMSInvalidStateException(f"{self.key_arn(rec.id)} is pending deletion.")

    # --- authorization -------------------------------------------------------------------
    def _context(self, caller: Caller, extra: dict[str, Any] | None) -> dict[str, Any]:
        ctx: dict[str, Any] = {"kms:CallerAccount": caller.account_id}
        if caller.via_service:
            ctx["kms:ViaService"] = caller.via_service
        if extra:
            ctx.update(extra)
        return ctx

    async def grants(self, key_id: str) -> list[Any]:
        """The key's grants (cached like key metadata)."""
        from bastion.kms.grants import for_key

        if self._grants is not None and key_id in self._grants:
            return self._grants[key_id]
        found = await for_key(self.fast, key_id)
        if self._grants is not None:
            self._grants[key_id] = found
        return found

    def forget_grants(self, key_id: str) -> None:
        if self._grants is not None:
            self._grants.pop(key_id, None)

    async def authorize(self, call: Call, action: str, rec: db.KeyRecord | None,
                        extra: dict[str, Any] | None = None, *,
                        resource: str | None = None,
                        context: dict[str, str] | None = None,
                        grant_subset: list[str] | None = None) -> None:
        """``kms:<action>`` on the key (key policy + identity policies, see
        :mod:`bastion.kms.policy`, then the key's grants unless a policy denies
        explicitly: :mod:`bastion.kms.grants`) or, without a key, on ``resource``
        (identity policies only: CreateKey, ListKeys, GenerateRandom, aliases).
        ``context``: the request's encryption context, for grant constraints;
        ``grant_subset``: CreateGrant's operations, which a grant allowing CreateGrant
        must all hold. AccessDeniedException otherwise; fails closed."""
        caller = call.caller
        if caller.operator:
            return
        target = self.key_arn(rec.id) if rec is not None else (resource or "*")
        denied = AccessDeniedException(
            f"User: {caller.principal_arn} is not authorized to perform: kms:{action} on "
            f"resource: {target}")
        subject = caller.subject
        if subject is None:
            raise denied
        principal = await self.authorizer.principal(subject)
        if principal is None:
            raise denied
        ctx = self.authorizer.context(subject, principal, source_ip=caller.source_ip,
                                      secure=caller.secure,
                                      extra=self._context(caller, extra))
        if rec is not None:
            ctx["kms:KeySpec"] = rec.spec
            ctx["kms:KeyUsage"] = rec.usage
            ctx["kms:KeyOrigin"] = "AWS_KMS"
            try:
                key_policy = self._policies.get(rec.policy, target)
            except ValueError:
                raise denied from None  # a stored policy that no longer compiles
            decision = evaluate(Request(principal.arn, f"kms:{action}", target, ctx),
                                principal.identity, resource_policy=key_policy,
                                boundary=principal.boundary, session=principal.session)
        else:
            decision = evaluate(Request(principal.arn, f"kms:{action}", target, ctx),
                                principal.identity, boundary=principal.boundary,
                                session=principal.session)
        if not decision.allowed and rec is not None and decision.decision != "explicitDeny":
            for grant in await self.grants(rec.id):
                if grant.covers(principal.arn, action, context) and (
                        grant_subset is None or set(grant_subset) <= set(grant.operations)):
                    call.params["grantId"] = grant.grant_id
                    return
        if not decision.allowed:
            reason = _REASONS.get(decision.reason, decision.reason)
            raise AccessDeniedException(f"{denied.message} because {reason}")

    # --- material ------------------------------------------------------------------------
    async def material(self, rec: db.KeyRecord, number: int) -> crypto.Material:
        """The unwrapped material of one key version (cached; KMSInternalException when
        the root keeper cannot be reached, fail closed)."""
        hit = self._material.get((rec.id, number))
        if hit is not None:
            return hit
        row = await db.version(self.fast, rec.id, number)
        if row is None:
            raise NotFoundException("key version not found")
        keeper, wrapped, _public = row
        if keeper != self.keeper.name:  # mid root migration, the other wrapping is kept
            other = await db.other_wrapping(self.fast, rec.id, number, self.keeper.name)
            if other is None:
                raise KMSInternalException("the key material is wrapped by another root "
                                           "keeper")
            wrapped = other
        try:
            secret = await self.keeper.unwrap(wrapped, wrap_context(rec.id, number))
        except RootUnavailable:
            raise KMSInternalException("the root key is unavailable") from None
        except RootUnwrapError:
            raise KMSInternalException("the key material does not open under the root key") \
                from None
        loaded = crypto.load(rec.spec, secret)
        self._material[(rec.id, number)] = loaded
        return loaded

    async def wrap(self, key_id: str, number: int, secret: bytes) -> bytes:
        try:
            return await self.keeper.wrap(secret, wrap_context(key_id, number))
        except RootUnavailable:
            raise KMSInternalException("the root key is unavailable") from None


def wrap_context(key_id: str, number: int) -> str:
    return f"kms:key/{key_id}/v{number}"
