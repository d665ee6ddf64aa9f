"""IAM access keys: ``AccessKeyId``/``SecretAccessKey`` pairs for AWS Signature Version 4.

Shapes are AWS's (IAM User Guide, "Manage access keys for IAM users"; "Unique identifiers"):
the id is 20 characters, ``AKIA`` (long-term) or ``ASIA`` (temporary) then 16 of base32's
``A-Z2-7``, so tools that check the shape accept it; the secret is 40 characters of base64
(240 random bits). A key belongs to a user, to a client acting as a service account, or to a
role session; it is ``Active`` or ``Inactive``; an owner has at most two, as in AWS, so a key
can be rotated without downtime. Temporary keys of role sessions (``ASIA``, with a session
token whose SHA-256 only is stored, and an expiry) are issued by ``create_session_key``.

The secret is shown once, at creation, and stored only wrapped by the key-encryption key: the
SigV4 verifier needs it in clear (the signature is an HMAC keyed by it), so a hash would not
do. The wrapping's purpose binds the key id, its owner, expiry, session token hash and
session policy, so a wrapped secret moved to another row, or a row edited to another owner
or a longer life, does not open. It is never logged and never part of an error.

``AccessKeys`` is what the verifier reads: records cached per instance for ``cache_ttl``
seconds (a deactivation made elsewhere applies within that time; one made by this process
at once), unknown ids cached apart so that guessing ids cannot evict real ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from cachetools import LRUCache
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.iam import PolicyError, parse_policy
from bastion.iam.scheme import SESSION_NAME_RE
from bastion.identity.users import IdentityError, get_user_by_name
from bastion.kms import KeyWrapper, UnwrapError
from bastion.store.fast import FastStore
from bastion.store.models import AccessKey, Client, IamRole, User

OwnerKind = Literal["user", "client", "role"]
ACCESS_KEY_ID_RE = re.compile(r"(?:AKIA|ASIA)[A-Z2-7]{16}")
MAX_KEYS_PER_OWNER = 2  # IAM's quota: two access keys per user
ACTIVE, INACTIVE = "Active", "Inactive"
MIN_SESSION = 900  # seconds: STS's shortest session
TOUCH_EVERY = 300  # seconds between two writes of a key's "last used" (AWS: ~4 hours)
CACHED_KEYS = 10_000
CACHED_UNKNOWN = 10_000
log = logging.getLogger("bastion.identity.access_keys")
KEY_SQL = ("SELECT id, owner_kind, owner_id, secret, status, expires_at, session_token_hash, "
           "session, last_used_at FROM access_keys WHERE id = :id")
TOUCH_SQL = ("UPDATE access_keys SET last_used_at = :now, last_used_service = :service, "
             "last_used_region = :region WHERE id = :id")


def new_access_key_id(*, temporary: bool = False) -> str:
    """``AKIA`` + 16 base32 characters: 80 random bits."""
    tail = base64.b32encode(secrets.token_bytes(10)).decode()
    return ("ASIA" if temporary else "AKIA") + tail


def new_secret_access_key() -> str:
    """40 base64 characters (``A-Za-z0-9+/``): 240 random bits."""
    return base64.b64encode(secrets.token_bytes(30)).decode()


def _purpose(key_id: str, owner_kind: str, owner_id: str, expires_at: int | None = None,
             session_token_hash: str | None = None,
             session: dict[str, Any] | None = None) -> str:
    """The wrapping's associated data: everything that decides what the key may do. A row
    edited by someone holding only the database (another owner, a later expiry, no session
    policy, another session token) no longer unwraps, and the key fails closed."""
    bound = json.dumps([key_id, owner_kind, owner_id, expires_at, session_token_hash,
                        session], sort_keys=True, separators=(",", ":"))
    return "access-key:v2:" + hashlib.sha256(bound.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AccessKeyRecord:
    """What verifying a signature needs. ``secret`` is the SecretAccessKey (kept out of
    ``repr``)."""

    id: str
    owner_kind: OwnerKind
    owner_id: str
    secret: bytes = field(repr=False)
    active: bool
    expires_at: int | None = None
    session_token_hash: str | None = None
    session: dict[str, Any] | None = None
    last_used_at: int | None = None

    @property
    def temporary(self) -> bool:
        return self.id.startswith("ASIA")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key pair: the only time the secret leaves Bastion."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    owner_kind: OwnerKind
    owner_id: str
    owner_name: str
    created_at: int
    session_token: str | None = field(default=None, repr=False)
    expires_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AccessKeyId": self.access_key_id, "SecretAccessKey": self.secret_access_key,
            "Status": ACTIVE, "OwnerKind": self.owner_kind, "Owner": self.owner_name,
            "OwnerId": self.owner_id, "CreateDate": self.created_at}
        if self.session_token is not None:
            out["SessionToken"] = self.session_token
            out["Expiration"] = self.expires_at
        return out


# --- administration (the CLI; one ORM transaction with its audit record) --------------------
async def resolve_owner(db: AsyncSession, *, user: str | None = None,
                        client: str | None = None) -> tuple[OwnerKind, str, str]:
    """``(kind, id, display name)`` of the owner named by exactly one of ``user`` (username)
    and ``client`` (client id)."""
    if (user is None) == (client is None):
        raise IdentityError("name exactly one owner: --user NAME or --client ID")
    if user is not None:
        row = await get_user_by_name(db, user)
        if row is None:
            raise IdentityError(f"no such user: {user!r}")
        return "user", row.id, row.username
    found = await db.get(Client, client)
    if found is None:
        raise IdentityError(f"no such client: {client!r}")
    return "client", found.client_id, found.client_id


async def create_access_key(db: AsyncSession, wrapper: KeyWrapper, *, user: str | None = None,
                            client: str | None = None) -> CreatedKey:
    kind, owner_id, name = await resolve_owner(db, user=user, client=client)
    count = await db.scalar(select(func.count()).select_from(AccessKey).where(
        AccessKey.owner_kind == kind, AccessKey.owner_id == owner_id,
        AccessKey.expires_at.is_(None)))
    if (count or 0) >= MAX_KEYS_PER_OWNER:
        raise IdentityError(f"{kind} {name} already has {MAX_KEYS_PER_OWNER} access keys "
                            "(IAM's limit): delete one first")
    key_id, secret = new_access_key_id(), new_secret_access_key()
    now = int(time.time())
    db.add(AccessKey(id=key_id, owner_kind=kind, owner_id=owner_id,
                     secret=wrapper.wrap(secret.encode(), _purpose(key_id, kind, owner_id)),
                     status=ACTIVE,
                     created_at=now))
    await db.flush()
    return CreatedKey(key_id, secret, kind, owner_id, name, now)


async def create_session_key(db: AsyncSession, wrapper: KeyWrapper, role: str,
                             session_name: str, duration: int = 3600,
                             policy: str | None = None) -> CreatedKey:
    """Temporary credentials of a role session (``ASIA``, a session token, an expiry within
    the role's ``max_session_duration``), as STS AssumeRole returns them; issued by the
    operator, so the role's trust policy is not consulted. Expired ones are deleted here."""
    found = await db.get(IamRole, role)
    if found is None:
        raise IdentityError(f"no such role: {role!r}")
    if not SESSION_NAME_RE.fullmatch(session_name):
        raise IdentityError("a session name is 2-64 characters of letters, digits and "
                            "+=,.@_-")
    if not MIN_SESSION <= duration <= found.max_session_duration:
        raise IdentityError(f"the duration must be {MIN_SESSION} to "
                            f"{found.max_session_duration} seconds (the role's maximum)")
    session: dict[str, Any] = {"name": session_name}
    if policy is not None:
        try:
            parse_policy(policy, kind="session", policy_id="session")
        except PolicyError as exc:
            raise IdentityError(f"the session policy is not valid: {exc}") from None
        session["policy"] = policy
    now = int(time.time())
    await db.execute(delete(AccessKey).where(AccessKey.expires_at < now))
    key_id, secret = new_access_key_id(temporary=True), new_secret_access_key()
    token = base64.b64encode(secrets.token_bytes(48)).decode()
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    purpose = _purpose(key_id, "role", role, now + duration, token_hash, session)
    db.add(AccessKey(id=key_id, owner_kind="role", owner_id=role,
                     secret=wrapper.wrap(secret.encode(), purpose), status=ACTIVE,
                     created_at=now, expires_at=now + duration, session=session,
                     session_token_hash=token_hash))
    await db.flush()
    return CreatedKey(key_id, secret, "role", role, role, now, token, now + duration)


def _check_id(key_id: str) -> None:
    if not ACCESS_KEY_ID_RE.fullmatch(key_id):
        raise IdentityError("an access key id is AKIA or ASIA and 16 characters of A-Z, 2-7")


async def get_access_key(db: AsyncSession, key_id: str) -> AccessKey:
    _check_id(key_id)
    row = await db.get(AccessKey, key_id)
    if row is None:
        raise IdentityError(f"no such access key: {key_id}")
    return row


async def set_status(db: AsyncSession, key_id: str, status: str) -> AccessKey:
    if status not in (ACTIVE, INACTIVE):
        raise IdentityError("status is Active or Inactive")
    row = await get_access_key(db, key_id)
    row.status = status
    await db.flush()
    return row


async def delete_access_key(db: AsyncSession, key_id: str) -> AccessKey:
    row = await get_access_key(db, key_id)
    await db.delete(row)
    await db.flush()
    return row


async def owner_name(db: AsyncSession, row: AccessKey) -> str:
    """The username for a user's key (its id if the user is gone), else the owner id."""
    if row.owner_kind == "user":
        name = await db.scalar(select(User.username).where(User.id == row.owner_id))
        return name or row.owner_id
    return row.owner_id


async def list_access_keys(db: AsyncSession, *, user: str | None = None,
                           client: str | None = None) -> list[dict[str, Any]]:
    """Every key (or one owner's), without secrets, as IAM's ListAccessKeys and
    GetAccessKeyLastUsed show them."""
    query = select(AccessKey).order_by(AccessKey.owner_kind, AccessKey.owner_id,
                                       AccessKey.created_at)
    if user is not None or client is not None:
        kind, owner_id, _ = await resolve_owner(db, user=user, client=client)
        query = query.where(AccessKey.owner_kind == kind, AccessKey.owner_id == owner_id)
    out = []
    for row in (await db.scalars(query)).all():
        out.append(describe(row, await owner_name(db, row)))
    return out


def describe(row: AccessKey, name: str) -> dict[str, Any]:
    return {"AccessKeyId": row.id, "Status": row.status, "OwnerKind": row.owner_kind,
            "Owner": name, "OwnerId": row.owner_id, "CreateDate": row.created_at,
            "LastUsedDate": row.last_used_at, "LastUsedService": row.last_used_service,
            "LastUsedRegion": row.last_used_region, "Expiration": row.expires_at}


# --- the verifier's view: cached records ----------------------------------------------------
class AccessKeys:
    """Access key records for SigV4, read through the hot-path store and cached briefly."""

    def __init__(self, store: FastStore, wrapper: KeyWrapper, cache_ttl: float = 2.0) -> None:
        self._store = store
        self._wrapper = wrapper
        self._ttl = cache_ttl
        self._known: LRUCache[str, tuple[float, AccessKeyRecord]] = LRUCache(CACHED_KEYS)
        self._unknown: LRUCache[str, float] = LRUCache(CACHED_UNKNOWN)
        self._touched: LRUCache[str, float] = LRUCache(CACHED_KEYS)

    def invalidate(self, key_id: str | None = None) -> None:
        if key_id is None:
            self._known.clear()
            self._unknown.clear()
        else:
            self._known.pop(key_id, None)
            self._unknown.pop(key_id, None)

    async def get(self, key_id: str) -> AccessKeyRecord | None:
        """The key's record, or None for an id that is malformed, unknown or whose secret no
        longer unwraps (a row tampered with or moved: fail closed)."""
        if not ACCESS_KEY_ID_RE.fullmatch(key_id):
            return None
        now = time.monotonic()
        hit = self._known.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        miss = self._unknown.get(key_id)
        if miss is not None and miss > now:
            return None
        record = await self._load(key_id)
        if record is None:
            self._known.pop(key_id, None)
            self._unknown[key_id] = now + self._ttl
        else:
            self._known[key_id] = (now + self._ttl, record)
        return record

    async def _load(self, key_id: str) -> AccessKeyRecord | None:
        row = await self._store.one(KEY_SQL, id=key_id)
        if row is None:
            return None
        session = row["session"]
        if isinstance(session, str | bytes):
            session = json.loads(session)
        purpose = _purpose(key_id, row["owner_kind"], row["owner_id"], row["expires_at"],
                           row["session_token_hash"], session)
        try:
            secret = self._wrapper.unwrap(bytes(row["secret"]), purpose)
        except UnwrapError:
            log.warning("access key %s does not unwrap: its row was altered", key_id)
            return None
        return AccessKeyRecord(
            id=row["id"], owner_kind=row["owner_kind"], owner_id=row["owner_id"],
            secret=secret, active=row["status"] == ACTIVE, expires_at=row["expires_at"],
            session_token_hash=row["session_token_hash"],
            session=session if isinstance(session, dict) else None,
            last_used_at=row["last_used_at"])

    async def touch(self, record: AccessKeyRecord, service: str, region: str) -> None:
        """Record the key's last use, at most once every ``TOUCH_EVERY`` seconds per key
        and instance (one write, not one per request)."""
        now = time.time()
        last = self._touched.get(record.id) or float(record.last_used_at or 0)
        if now - last < TOUCH_EVERY:
            return
        self._touched[record.id] = now
        async with self._store.transaction() as tx:
            await tx.run(TOUCH_SQL, now=int(now), service=service[:64], region=region[:64],
                         id=record.id)
