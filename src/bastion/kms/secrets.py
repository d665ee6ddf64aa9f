"""Bastion's own reversible secrets through the KMS hierarchy: token signing keys, TOTP
seeds, the audit notary's key, SigV4 secret access keys and ACME EAB MAC keys are wrapped by
the KMS key ``alias/bastion/secrets``, whose material the root keeper wraps. Root →
KMS key version → secret: ``bastion kms migrate-root`` re-wraps the key's versions and
never a secret, and the database without the root (file or HSM) opens none of them.

:class:`SecretWrapper` keeps the synchronous ``KeyWrapper`` interface its callers use. A
wrapped secret is ``0x02`` followed by a KMS ciphertext blob (:mod:`bastion.kms.ciphertext`:
it names the key and version) sealed with the encryption context
``{"bastion:purpose": <purpose>}``, so a secret moved to another purpose does not open.
Values wrapped before (``0x01``, the data dir's key-encryption key directly) still unwrap,
and :func:`rewrap_legacy` moves them under the hierarchy at start (audited as
``RewrapLegacySecrets`` with counts per table, never a secret).

The key is made on first start under a key policy that lets no principal use it through the
KMS API; its versions are unwrapped once at start (:func:`attach`). ``keyed_hash`` (client
secret hashes, the challenge key) stays on the key-encryption key: it is a one-way MAC key,
not a wrapped secret."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.kms import ciphertext
from bastion.kms import store as db
from bastion.kms.context import canonical
from bastion.kms.envelope import service_key, service_key_policy
from bastion.kms.errors import InvalidCiphertextException, KMSInternalException
from bastion.kms.keyfile import KeyWrapper, UnwrapError
from bastion.kms.root import RootUnavailable

if TYPE_CHECKING:
    from bastion.kms.service import KMS
    from bastion.store.fast import FastStore, Row

log = logging.getLogger("bastion.kms.secrets")
ALIAS = "alias/bastion/secrets"
FORMAT = b"\x02"
LEGACY = b"\x01"  # keyfile.KeyWrapper's format: the KEK directly
DONE_TAG = "bastion:legacy-rewrapped"  # on the secrets key: every KEK-wrapped value moved


class Recorder(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


class SecretsUnavailable(RootUnavailable):
    """The secrets key cannot be used (its material does not open under this root keeper,
    the root cannot be reached, the key is disabled or pending deletion): a clear startup
    error, as the root's own (nothing wrapped under it can be read)."""


def _context(purpose: str) -> bytes:
    return canonical({"bastion:purpose": purpose})


class SecretWrapper(KeyWrapper):
    """``KeyWrapper`` over the hierarchy once :func:`attach` ran; until then (and for
    ``0x01`` values) the key-encryption key itself."""

    def __init__(self, kek: bytes) -> None:
        super().__init__(kek)
        self._key_id: str | None = None
        self._versions: dict[int, AESGCM] = {}
        self._current = 0
        # the audit trail of the KMS it is attached through, and the key as an audit
        # resource: rewrap_legacy records what it moved there
        self.audit: Recorder | None = None
        self.resource: dict[str, str] | None = None

    @property
    def key_id(self) -> str | None:
        return self._key_id

    @property
    def wrapped_by(self) -> str:
        """What wraps new values, for log messages."""
        if self._key_id is None:
            return super().wrapped_by
        return f"the KMS key {ALIAS} (or the key-encryption key, for older values)"

    def attach(self, key_id: str, versions: Mapping[int, AESGCM], current: int, *,
               audit: Recorder | None = None, resource: dict[str, str] | None = None) -> None:
        if current not in versions:
            raise ValueError("the current version's material is needed")
        self._key_id, self._versions, self._current = key_id, dict(versions), current
        self.audit, self.resource = audit, resource

    def wrap(self, plaintext: bytes, purpose: str) -> bytes:
        if self._key_id is None:
            return super().wrap(plaintext, purpose)
        head = ciphertext.header(self._key_id, self._current)
        nonce = os.urandom(ciphertext.NONCE_BYTES)
        body = self._versions[self._current].encrypt(nonce, plaintext, head + _context(purpose))
        return FORMAT + ciphertext.pack(head, nonce, body)

    def unwrap(self, blob: bytes, purpose: str) -> bytes:
        if blob[:1] == LEGACY:
            return super().unwrap(blob, purpose)
        if blob[:1] != FORMAT or self._key_id is None:
            raise UnwrapError("malformed wrapped value")
        try:
            env = ciphertext.parse(blob[1:])
        except InvalidCiphertextException:
            raise UnwrapError("malformed wrapped value") from None
        aead = self._versions.get(env.version)
        if env.key_id != self._key_id or aead is None:
            raise UnwrapError("cannot unwrap")
        try:
            return aead.decrypt(env.nonce, env.body, env.header + _context(purpose))
        except InvalidTag:
            raise UnwrapError("cannot unwrap") from None


async def attach(kms: KMS, wrapper: SecretWrapper) -> str:
    """Find (or on first start make) the secrets key, unwrap its versions through the root
    keeper and attach them to ``wrapper``. Returns the key id. ``SecretsUnavailable`` when
    the root cannot open them (wrong keeper, unreachable) or the key is not Enabled."""
    from bastion.kms.core import Caller

    caller = Caller("bastion:secrets", kms.account, operator=True, user_agent="bastion-secrets")
    key_id = await service_key(
        kms, caller, ALIAS, description="Bastion: wraps Bastion's own secrets (signing keys, "
        "TOTP seeds, the audit key, access key secrets)",
        policy=service_key_policy(kms.account, "bastion-secrets-key"),
        tag=("bastion:service", "secrets"))
    rec = await db.key(kms.fast, key_id)
    if rec is None or rec.state != "Enabled":
        raise SecretsUnavailable(f"the secrets key {key_id} is "
                                 f"{'missing' if rec is None else rec.state}")
    versions: dict[int, AESGCM] = {}
    for number in range(1, rec.current_version + 1):
        try:
            aead = (await kms.material(rec, number)).aead
        except KMSInternalException as exc:
            raise SecretsUnavailable(
                f"the secrets key {key_id} does not open under the '{kms.keeper.name}' root "
                f"keeper (KMSInternalException: {exc.message}); is root_keeper the keeper "
                "that wraps it?") from None
        assert aead is not None
        versions[number] = aead
    wrapper.attach(key_id, versions, rec.current_version, audit=kms.audit, resource={
        "ARN": kms.key_arn(key_id), "type": "AWS::KMS::Key", "accountId": kms.account})
    return key_id


# --- moving values wrapped by the KEK under the hierarchy -----------------------------------
@dataclass(frozen=True)
class Column:
    """A column holding wrapped secrets, and the purpose its values were wrapped with."""

    table: str
    key: str
    column: str
    purpose: Callable[[Row], str]
    extra: tuple[str, ...] = ()


def _access_key_purpose(row: Row) -> str:
    from bastion.identity.access_keys import _purpose

    session = row["session"]
    if isinstance(session, str | bytes):
        session = json.loads(session)
    return _purpose(str(row["id"]), row["owner_kind"], row["owner_id"], row["expires_at"],
                    row["session_token_hash"], session)


COLUMNS = (
    Column("signing_keys", "kid", "private_key", lambda _: "signing-key"),
    Column("users", "id", "totp_secret", lambda _: "totp"),
    Column("audit_signing_keys", "kid", "private_key", lambda _: "audit-checkpoint"),
    Column("acme_eab_keys", "kid", "mac_key", lambda _: "acme-eab"),
    Column("access_keys", "id", "secret", _access_key_purpose,
           ("owner_kind", "owner_id", "expires_at", "session_token_hash", "session")),
)


async def rewrap_legacy(fast: FastStore, wrapper: SecretWrapper,
                        columns: tuple[Column, ...] = COLUMNS, *,
                        force: bool = False) -> dict[str, int]:
    """Re-wrap every value still wrapped by the KEK (``0x01``) under the secrets key: the
    same secret, a new wrapping (compare-and-set: a value changed meanwhile is left for the
    next start). A value that does not unwrap (a row someone altered) is left as it is, for
    its reader to refuse. Runs once (a tag on the secrets key records it) unless ``force``.
    A pass that found KEK-wrapped values is one ``RewrapLegacySecrets`` record, in the trail
    of the KMS the wrapper was attached through, with the counts per table, before the tag
    is set. Returns the count re-wrapped per table."""
    key_id = wrapper.key_id
    if key_id is None:
        raise SecretsUnavailable("the secrets key is not attached")
    if not force and any(k == DONE_TAG for k, _ in await db.tags(fast, key_id)):
        return {}
    done: dict[str, int] = {}
    left: dict[str, int] = {}  # KEK-wrapped values that did not open: not moved
    for col in columns:
        cols = ", ".join((col.key, col.column, *col.extra))
        sql = f"SELECT {cols} FROM {col.table} WHERE {col.column} IS NOT NULL"  # noqa: S608
        count = 0
        async with fast.transaction() as tx:
            for row in await tx.all(sql):
                old = row[col.column]
                if not isinstance(old, bytes | bytearray | memoryview) \
                        or bytes(old[:1]) != LEGACY:
                    continue
                try:
                    purpose = col.purpose(row)
                    secret = KeyWrapper.unwrap(wrapper, bytes(old), purpose)
                except Exception as exc:  # UnwrapError, a malformed row: its reader refuses it
                    log.warning("%s %.80r: not re-wrapped (%s)", col.table, row[col.key],
                                type(exc).__name__)
                    left[col.table] = left.get(col.table, 0) + 1
                    continue
                count += await tx.run(
                    f"UPDATE {col.table} SET {col.column} = :new WHERE {col.key} = :key "  # noqa: S608
                    f"AND {col.column} = :old", new=wrapper.wrap(secret, purpose),
                    key=row[col.key], old=bytes(old))
        if count:
            log.info("%d %s.%s value(s) moved under %s", count, col.table, col.column, ALIAS)
            done[col.table] = count
    if wrapper.audit is not None and (done or left):
        await wrapper.audit.emit(
            "RewrapLegacySecrets", user_identity={"type": "Bastion",
                                                  "principalId": "bastion:secrets"},
            resources=[wrapper.resource] if wrapper.resource else (),
            request_parameters={"force": force},
            response_elements={"rewrapped": done, "notRewrapped": left,
                               "total": sum(done.values())})
    async with fast.transaction() as tx:
        await db.put_tags(tx, key_id, [(DONE_TAG, "true")])
    return done

