"""From an authenticated principal to a decision: load its policies (own, groups', the roles
its token carries, boundary, session policy), compile them once, cache them, evaluate.

The cache is keyed by the principal and the roles/session policy its credentials carry. An
IAM change made by this process drops it at once; changes made elsewhere (the CLI, other
instances) are seen through the generation counter, read at most every ``cache_ttl``
seconds. Anything that cannot be loaded or compiled denies (fail closed). Every cache is a
bounded LRU: a caller asking for many distinct ARNs (or holding many distinct tokens)
evicts the least recently used entries, never everyone's at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache

from bastion.iam import Decision, Policy, PolicySet, Request, evaluate, parse_policy
from bastion.iam import store as iam_store
from bastion.iam.scheme import Kind, principal_arn, session_arn
from bastion.store.fast import FastStore

log = logging.getLogger("bastion.iam")
PRINCIPALS_CACHED = 20_000
RESOURCE_POLICIES_CACHED = 50_000  # per resource ARN, "none stored" included
RESOURCE_POLICIES_PARSED = 1_000


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking, as the credentials say. ``key`` is the user id for users (tokens carry
    it as ``sub``), the name otherwise."""

    kind: Kind
    key: str
    roles: tuple[str, ...] = ()
    session: str | None = None  # assumed-role session name
    session_policy: str | None = None
    client_id: str | None = None
    scopes: tuple[str, ...] = ()
    mfa: bool = False


@dataclass(frozen=True)
class Principal:
    """A resolved subject: its ARN, names and compiled policies."""

    arn: str
    name: str
    user_id: str | None
    identity: PolicySet
    boundary: PolicySet | None
    session: PolicySet | None
    tags: dict[str, str]
    policy_ids: tuple[str, ...]


@dataclass
class Authorizer:
    store: FastStore
    account: str
    cache_ttl: float = 2.0
    _cache: LRUCache[Subject, Principal | None] = field(
        default_factory=lambda: LRUCache(maxsize=PRINCIPALS_CACHED))
    _generation: int = -1
    _checked_at: float = 0.0
    _resource_policies: LRUCache[tuple[str, str], Policy] = field(
        default_factory=lambda: LRUCache(maxsize=RESOURCE_POLICIES_PARSED))
    _stored_resource_policies: LRUCache[str, str | None] = field(
        default_factory=lambda: LRUCache(maxsize=RESOURCE_POLICIES_CACHED))

    def invalidate(self) -> None:
        self._cache.clear()
        self._stored_resource_policies.clear()
        self._checked_at = 0.0

    async def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.cache_ttl:
            return
        current = await iam_store.generation(self.store)
        if current != self._generation:
            self._cache.clear()
            self._stored_resource_policies.clear()
            self._generation = current
        self._checked_at = now

    async def stored_resource_policy(self, resource_arn: str) -> str | None:
        """The resource-based policy stored for this ARN (``iam resource-policy``), cached
        like principals' policies."""
        if len(resource_arn) > 512 or not resource_arn.isprintable():
            return None  # no stored policy can be on it (put_resource_policy refuses those)
        await self._fresh()
        try:
            return self._stored_resource_policies[resource_arn]
        except KeyError:
            pass
        stored = await iam_store.resource_policy(self.store, resource_arn)
        self._stored_resource_policies[resource_arn] = stored
        return stored

    async def principal(self, subject: Subject) -> Principal | None:
        """The resolved principal, or None when it does not exist (or is disabled)."""
        await self._fresh()
        try:
            return self._cache[subject]
        except KeyError:
            pass
        try:
            resolved = await self._load(subject)
        except ValueError:  # a stored policy no longer compiles: deny, loudly
            log.exception("IAM policies of %s %s do not compile", subject.kind, subject.key)
            resolved = None
        self._cache[subject] = resolved
        return resolved

    async def _load(self, subject: Subject) -> Principal | None:
        groups: tuple[str, ...] = ()
        user_id = None
        name = subject.key
        if subject.kind == "user":
            row = await self.store.one(iam_store.USER_SQL, id=subject.key)
            if row is None or row[2]:
                return None
            user_id, name = row[0], row[1]
            groups = await iam_store.user_groups(self.store, user_id)
        elif subject.kind == "role":
            if await self.store.one(iam_store.ROLE_SQL, name=subject.key) is None:
                return None
        pols = await iam_store.principal_policies(self.store, subject.kind, name, groups,
                                                  subject.roles)
        identity = PolicySet(parse_policy(d.document, policy_id=d.policy_id)
                             for d in pols.identity)
        boundary = PolicySet([parse_policy(pols.boundary.document, kind="boundary",
                                           policy_id=pols.boundary.policy_id)]) \
            if pols.boundary is not None else None
        session = PolicySet([parse_policy(subject.session_policy, kind="session",
                                          policy_id="session")]) \
            if subject.session_policy else None
        arn = session_arn(name, subject.session, self.account) if subject.session \
            else principal_arn(subject.kind, name, self.account)
        return Principal(arn, name, user_id, identity, boundary, session, pols.tags,
                         tuple(d.policy_id for d in pols.identity))

    def _resource_policy(self, text: str, resource: str) -> Policy:
        """Parsed once per document text (a ``Policy`` is immutable and carries its index)."""
        hit = self._resource_policies.get((text, resource))
        if hit is None:
            hit = parse_policy(text, kind="resource", policy_id=resource)
            self._resource_policies[(text, resource)] = hit
        return hit

    def context(self, subject: Subject, principal: Principal, *, source_ip: str | None,
                secure: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The request context: AWS global keys and Bastion's own, filled from the
        credentials and the connection, never from anything the client merely claims."""
        now = time.time()
        ctx: dict[str, Any] = {
            "aws:PrincipalArn": principal.arn,
            "aws:userid": principal.user_id or subject.key,
            "aws:SecureTransport": "true" if secure else "false",
            "aws:CurrentTime": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:EpochTime": str(int(now)),
            "aws:MultiFactorAuthPresent": "true" if subject.mfa else "false",
            "bastion:Scope": list(subject.scopes),
        }
        if subject.kind == "user":
            ctx["aws:username"] = principal.name
        if source_ip:
            ctx["aws:SourceIp"] = source_ip
        if subject.client_id:
            ctx["bastion:ClientId"] = subject.client_id
        for key, value in principal.tags.items():
            ctx[f"aws:PrincipalTag/{key}"] = value
        if extra:
            ctx.update(extra)
        return ctx

    async def decide(self, subject: Subject, action: str, resource: str, *,
                     source_ip: str | None = None, secure: bool = True,
                     extra: dict[str, Any] | None = None,
                     resource_policy: str | None = None) -> tuple[Principal | None, Decision]:
        principal = await self.principal(subject)
        if principal is None:
            return None, Decision("implicitDeny", (), "unknown or disabled principal")
        ctx = self.context(subject, principal, source_ip=source_ip, secure=secure,
                           extra=extra)
        if resource_policy is None:
            resource_policy = await self.stored_resource_policy(resource)
        try:
            rp = self._resource_policy(resource_policy, resource) if resource_policy else None
        except ValueError:  # a stored policy that no longer compiles: deny, loudly
            log.exception("the resource policy of %s does not compile", resource)
            return principal, Decision("implicitDeny", (), "invalid resource policy")
        decision = evaluate(Request(principal.arn, action, resource, ctx), principal.identity,
                            resource_policy=rp, boundary=principal.boundary,
                            session=principal.session)
        return principal, decision
