"""Envelope encryption for Bastion's own services, with a caching materials manager.

A service seals a value under a *data key*; the data key is stored only encrypted by a KMS
key (its ``CiphertextBlob`` from ``GenerateDataKey``), and the KMS key's material only
wrapped by the root keeper: root → KMS key version → data key → value. Moving the root
re-wraps key versions; no stored value is re-encrypted.

:class:`CachingMaterials` is the AWS Encryption SDK's caching cryptographic materials
manager (AWS Encryption SDK Developer Guide, "Data key caching"): a data key is reused
while it is younger than ``max_age`` seconds and has sealed fewer than ``max_messages``
messages and ``max_bytes`` bytes; a miss calls ``GenerateDataKey`` through the KMS service
layer (authorized and audited like any KMS call). Entries are partitioned by the data key's
encryption context, as the SDK's cache ids are. Decryption caches unwrapped data keys by
their encrypted bytes and context, under the same bounds.

Message format (one value)::

    0x01 | u16 len(edk) | edk (a KMS ciphertext blob) | nonce (12) | AES-256-GCM body || tag

The associated data is a label, the bytes before the nonce (format and encrypted data key)
and the canonical encoding of the full encryption context (:mod:`bastion.kms.context`): the
data key's context plus the per-message pairs (an order id, an owner). A blob moved to
another row, account or context, truncated or altered, does not open; every such failure
is one opaque :class:`EnvelopeError`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.kms import store as db
from bastion.kms.context import canonical
from bastion.kms.errors import (
    AlreadyExistsException,
    InvalidCiphertextException,
    KMSError,
    NotFoundException,
)

if TYPE_CHECKING:
    from bastion.kms.core import Caller
    from bastion.kms.service import KMS

FORMAT = 0x01
_LEN = struct.Struct(">H")
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_EDK = 6144  # a KMS CiphertextBlob is at most 6144 bytes
_LABEL = b"bastion/envelope/v1\x00"


class EnvelopeError(Exception):
    """A sealed value does not open: malformed, truncated, altered, moved to another
    context, or its data key does not decrypt. Deliberately one opaque error."""


class KeyUnavailable(Exception):
    """The KMS could not provide a data key now (key disabled or pending deletion, root
    keeper unreachable): an operational failure, not a bad ciphertext. ``code`` is the
    KMS error name, for logs and audit records."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# --- the KMS key a service owns ---------------------------------------------------------------
async def service_key(kms: KMS, caller: Caller, alias: str, *, description: str, policy: str,
                      tag: tuple[str, str]) -> str:
    """The id of the symmetric KMS key ``alias`` names, created on first use. Two servers
    racing to create it agree on the alias's key; the loser's key is scheduled for deletion
    (it protected nothing)."""
    found = await db.alias_target(kms.fast, alias)  # not the TTL cache: it may hold a miss
    if found is not None:
        return found
    out = await kms.call("CreateKey", {
        "KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT",
        "Description": description, "Policy": policy, "BypassPolicyLockoutSafetyCheck": True,
        "Tags": [{"TagKey": tag[0], "TagValue": tag[1]}]}, caller)
    key_id = str(out["KeyMetadata"]["KeyId"])
    try:
        await kms.call("CreateAlias", {"AliasName": alias, "TargetKeyId": key_id}, caller)
    except AlreadyExistsException:
        winner = await db.alias_target(kms.fast, alias)
        await kms.call("ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7},
                       caller)
        if winner is None:
            raise NotFoundException(f"{alias} vanished while it was created") from None
        return winner
    return key_id


def service_key_policy(account: str, sid: str) -> str:
    """A key policy under which no principal can use the key through the KMS API (only the
    owning service, in-process, does); reading its metadata is delegated to IAM."""
    import json

    read = ["kms:DescribeKey", "kms:ListResourceTags", "kms:GetKeyPolicy",
            "kms:ListKeyPolicies", "kms:GetKeyRotationStatus", "kms:ListKeyRotations"]
    return json.dumps({"Version": "2012-10-17", "Id": sid, "Statement": [
        {"Sid": "OnlyItsServiceUsesThisKey", "Effect": "Deny", "Principal": "*",
         "NotAction": read, "Resource": "*"},
        {"Sid": "ReadMetadataThroughIam", "Effect": "Allow",
         "Principal": {"AWS": f"arn:bastion:iam::{account}:root"}, "Action": read,
         "Resource": "*"}]})


# --- the caching materials manager ------------------------------------------------------------
@dataclass(slots=True)
class _Entry:
    data_key: bytes
    encrypted_key: bytes
    born: float
    messages: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Bounds:
    """The caching CMM's security thresholds (the SDK's ``max_age``,
    ``max_messages_encrypted``, ``max_bytes_encrypted``) and the cache's capacity."""

    max_age: float = 300.0
    max_messages: int = 2**32
    max_bytes: int = 2**63 - 1
    capacity: int = 1000

    def __post_init__(self) -> None:
        if not self.max_age > 0:
            raise ValueError("max_age must be positive")
        if not 1 <= self.max_messages <= 2**32:
            raise ValueError("max_messages must be between 1 and 2^32")
        if not 1 <= self.max_bytes <= 2**63 - 1:
            raise ValueError("max_bytes must be between 1 and 2^63 - 1")
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")


class CachingMaterials:
    """Data keys for one KMS key, from a bounded cache in front of ``GenerateDataKey`` and
    ``Decrypt`` (called as ``caller`` through ``kms.call``: authorized and audited)."""

    def __init__(self, kms: KMS, key_id: str, caller: Caller, bounds: Bounds | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.kms = kms
        self.key_id = key_id
        self.caller = caller
        self.bounds = bounds or Bounds()
        self._clock = clock
        self._encrypt: OrderedDict[bytes, _Entry] = OrderedDict()
        self._decrypt: OrderedDict[tuple[bytes, bytes], _Entry] = OrderedDict()
        self._lock = asyncio.Lock()

    def clear(self) -> None:
        self._encrypt.clear()
        self._decrypt.clear()

    def _fresh(self, entry: _Entry, size: int) -> bool:
        b = self.bounds
        return (self._clock() - entry.born < b.max_age and entry.messages + 1 <= b.max_messages
                and entry.bytes + size <= b.max_bytes)

    @staticmethod
    def _use(cache: OrderedDict[Any, _Entry], key: Any, entry: _Entry, size: int,
             bounds: Bounds) -> None:
        entry.messages += 1
        entry.bytes += size
        if entry.messages >= bounds.max_messages or entry.bytes >= bounds.max_bytes:
            cache.pop(key, None)  # spent: the next message gets a new data key
        else:
            cache.move_to_end(key)

    def _put(self, cache: OrderedDict[Any, _Entry], key: Any, entry: _Entry) -> None:
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > self.bounds.capacity:
            cache.popitem(last=False)

    async def for_encryption(self, context: Mapping[str, str], size: int) -> tuple[bytes, bytes]:
        """``(data key, encrypted data key)`` to seal ``size`` bytes under ``context``."""
        b = self.bounds
        if size > b.max_bytes:  # the SDK bypasses the cache for a message over the limit
            return await self._generate(context)
        part = canonical(context)
        async with self._lock:
            entry = self._encrypt.get(part)
            if entry is None or not self._fresh(entry, size):
                data_key, edk = await self._generate(context)
                entry = _Entry(data_key, edk, self._clock())
                self._put(self._encrypt, part, entry)
                # what it seals is read back soon: the data key is known, no Decrypt needed
                self._put(self._decrypt, (edk, part), _Entry(data_key, edk, entry.born))
            self._use(self._encrypt, part, entry, size, b)
            return entry.data_key, entry.encrypted_key

    async def for_decryption(self, encrypted_key: bytes, context: Mapping[str, str],
                             size: int) -> bytes:
        """The data key ``encrypted_key`` holds (``EnvelopeError`` when the KMS does not
        open it under ``context``)."""
        ref = (encrypted_key, canonical(context))
        async with self._lock:
            entry = self._decrypt.get(ref)
            if entry is None or not self._fresh(entry, size):
                entry = _Entry(await self._decrypt_key(encrypted_key, context), encrypted_key,
                               self._clock())
                self._put(self._decrypt, ref, entry)
            self._use(self._decrypt, ref, entry, size, self.bounds)
            return entry.data_key

    async def _generate(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        try:
            out = await self.kms.call("GenerateDataKey", {
                "KeyId": self.key_id, "KeySpec": "AES_256",
                "EncryptionContext": dict(context)}, self.caller)
        except KMSError as exc:
            raise KeyUnavailable(exc.code) from None
        return base64.b64decode(out["Plaintext"]), base64.b64decode(out["CiphertextBlob"])

    async def _decrypt_key(self, encrypted_key: bytes, context: Mapping[str, str]) -> bytes:
        try:
            out = await self.kms.call("Decrypt", {
                "KeyId": self.key_id, "CiphertextBlob": base64.b64encode(encrypted_key).decode(),
                "EncryptionContext": dict(context)}, self.caller)
        except (InvalidCiphertextException, NotFoundException):
            raise EnvelopeError("the value does not open") from None
        except KMSError as exc:
            if exc.code in ("IncorrectKeyException", "ValidationException"):
                raise EnvelopeError("the value does not open") from None
            raise KeyUnavailable(exc.code) from None
        data_key = base64.b64decode(out["Plaintext"])
        if len(data_key) != 32:
            raise EnvelopeError("the value does not open")
        return data_key


# --- sealing ----------------------------------------------------------------------------------
def _merged(key_context: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    clash = set(key_context) & set(extra)
    if clash:
        raise ValueError(f"encryption context keys given twice: {sorted(clash)}")
    return {**key_context, **extra}


async def seal(materials: CachingMaterials, plaintext: bytes, key_context: Mapping[str, str],
               extra: Mapping[str, str]) -> bytes:
    """Seal ``plaintext``: a data key for ``key_context`` (cached), the whole context
    (``key_context`` and the per-message ``extra``) bound as associated data."""
    context = _merged(key_context, extra)
    data_key, edk = await materials.for_encryption(key_context, len(plaintext))
    head = bytes([FORMAT]) + _LEN.pack(len(edk)) + edk
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(data_key).encrypt(nonce, plaintext, _LABEL + head + canonical(context))
    return head + nonce + body


def encrypted_key(blob: bytes) -> bytes:
    """The encrypted data key a sealed value names (``EnvelopeError`` if malformed)."""
    if len(blob) < 3 or blob[0] != FORMAT:
        raise EnvelopeError("the value does not open")
    (n,) = _LEN.unpack_from(blob, 1)
    if not 1 <= n <= MAX_EDK or len(blob) < 3 + n + NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError("the value does not open")
    return blob[3:3 + n]


async def open_sealed(materials: CachingMaterials, blob: bytes,
                      key_context: Mapping[str, str], extra: Mapping[str, str]) -> bytes:
    """The plaintext of a :func:`seal` result, under the same contexts."""
    edk = encrypted_key(blob)
    context = _merged(key_context, extra)
    split = 3 + len(edk)
    data_key = await materials.for_decryption(edk, key_context, len(blob) - split)
    try:
        return AESGCM(data_key).decrypt(blob[split:split + NONCE_BYTES],
                                        blob[split + NONCE_BYTES:],
                                        _LABEL + blob[:split] + canonical(context))
    except InvalidTag:
        raise EnvelopeError("the value does not open") from None

