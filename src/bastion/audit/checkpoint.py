"""Signed checkpoints: Ed25519-signed tree heads, each chained to the one before it.

A checkpoint commits to the trail at ``tree_size``: the RFC 9162 Merkle root over the record
hashes (``root_hash``), the chain hash of the last record (``last_hash``), the time, and the
hash of the previous checkpoint's signed body (``previous``), like CloudTrail digest files
chain to their predecessor. Operators copy them off the box (``to_json``); a verifier that
holds one detects truncation, rewriting and forks even if the database was replaced whole.

The signed body is canonical ASCII text with a domain-separation line, so it can never be
confused with another signed object (RFC 8032 Ed25519 signs it as is)::

    bastion-audit-checkpoint/v1
    tree_size 1234
    root_hash <64 hex>
    last_hash <64 hex>
    timestamp <unix ms>
    previous <64 hex>
    key_id <printable ASCII, no spaces>
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.audit.chain import GENESIS, Fault

FORMAT = "bastion-audit-checkpoint/v1"
MAX_DOCUMENT = 4096  # bytes of JSON accepted by from_json, checked before parsing
_KEY_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII without spaces: one line, one token
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_MAX_INT = 2**63 - 1


class CheckpointFormatError(ValueError):
    """A checkpoint document or field that is not well formed."""


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: bytes  # RFC 9162 MTH over the record hashes 1..tree_size
    last_hash: bytes  # chain hash of record tree_size (GENESIS for an empty trail)
    timestamp: int  # unix milliseconds
    previous: bytes  # checkpoint_hash of the previous checkpoint; GENESIS for the first
    key_id: str
    signature: bytes  # Ed25519 over checkpoint_body(...)

    def body(self) -> bytes:
        return checkpoint_body(self.tree_size, self.root_hash, self.last_hash, self.timestamp,
                               self.previous, self.key_id)

    def verify(self, public_keys: Mapping[str, Ed25519PublicKey]) -> bool:
        return verify_checkpoint(self, public_keys)

    def to_json(self) -> str:
        return to_json(self)

    @classmethod
    def from_json(cls, document: str | bytes | Mapping[str, Any]) -> Checkpoint:
        return from_json(document)


def _check_fields(tree_size: int, root_hash: bytes, last_hash: bytes, timestamp: int,
                  previous: bytes, key_id: str) -> None:
    for name, value in (("tree_size", tree_size), ("timestamp", timestamp)):
        if type(value) is not int or not 0 <= value <= _MAX_INT:
            raise CheckpointFormatError(f"{name} must be an integer in 0..2**63-1")
    for name, digest in (("root_hash", root_hash), ("last_hash", last_hash),
                         ("previous", previous)):
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise CheckpointFormatError(f"{name} must be 32 bytes")
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise CheckpointFormatError("key_id must be 1-128 printable ASCII characters, no spaces")


def checkpoint_body(tree_size: int, root_hash: bytes, last_hash: bytes, timestamp: int,
                    previous: bytes, key_id: str) -> bytes:
    """The canonical, domain-separated bytes that are signed and hashed."""
    _check_fields(tree_size, root_hash, last_hash, timestamp, previous, key_id)
    return (f"{FORMAT}\ntree_size {tree_size}\nroot_hash {root_hash.hex()}\n"
            f"last_hash {last_hash.hex()}\ntimestamp {timestamp}\nprevious {previous.hex()}\n"
            f"key_id {key_id}\n").encode("ascii")


def sign_checkpoint(private_key: Ed25519PrivateKey, key_id: str, tree_size: int,
                    root_hash: bytes, last_hash: bytes, timestamp: int,
                    previous: bytes = GENESIS) -> Checkpoint:
    body = checkpoint_body(tree_size, root_hash, last_hash, timestamp, previous, key_id)
    return Checkpoint(tree_size=tree_size, root_hash=root_hash, last_hash=last_hash,
                      timestamp=timestamp, previous=previous, key_id=key_id,
                      signature=private_key.sign(body))


def verify_checkpoint(cp: Checkpoint, public_keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """True when ``cp`` is well formed and signed by the key named ``cp.key_id``."""
    key = public_keys.get(cp.key_id) if isinstance(cp.key_id, str) else None
    if key is None or not isinstance(cp.signature, bytes) or len(cp.signature) != 64:
        return False
    try:
        key.verify(cp.signature, cp.body())
    except (InvalidSignature, CheckpointFormatError):
        return False
    return True


def checkpoint_hash(cp: Checkpoint) -> bytes:
    """What the next checkpoint's ``previous`` holds: SHA-256 of this one's signed body."""
    return hashlib.sha256(cp.body()).digest()


def to_json(cp: Checkpoint) -> str:
    """One line of JSON, for a file or a table the operator keeps elsewhere."""
    _check_fields(cp.tree_size, cp.root_hash, cp.last_hash, cp.timestamp, cp.previous,
                  cp.key_id)
    return json.dumps({"format": FORMAT, "tree_size": cp.tree_size,
                       "root_hash": cp.root_hash.hex(), "last_hash": cp.last_hash.hex(),
                       "timestamp": cp.timestamp, "previous": cp.previous.hex(),
                       "key_id": cp.key_id, "signature": cp.signature.hex()},
                      sort_keys=True, separators=(",", ":"))


_FIELDS = frozenset({"format", "tree_size", "root_hash", "last_hash", "timestamp", "previous",
                     "key_id", "signature"})


def from_json(document: str | bytes | Mapping[str, Any]) -> Checkpoint:
    """Parse ``to_json`` output (or the object it encodes) strictly: exact keys, lowercase
    hex, integers, and the document's size capped before parsing."""
    data: Any
    if isinstance(document, Mapping):
        data = dict(document)
    else:
        if len(document) > MAX_DOCUMENT:
            raise CheckpointFormatError("checkpoint document too large")
        try:
            data = json.loads(document)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # 4 KiB of "[" nests
            # deeper than the recursion limit: malformed like any other
            raise CheckpointFormatError("checkpoint document is not JSON") from exc
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise CheckpointFormatError(f"checkpoint fields must be exactly {sorted(_FIELDS)}")
    if data["format"] != FORMAT:
        raise CheckpointFormatError(f"unknown checkpoint format {data['format']!r}")

    def digest(name: str, pattern: re.Pattern[str] = _HEX64) -> bytes:
        value = data[name]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise CheckpointFormatError(f"{name} must be lowercase hex")
        return bytes.fromhex(value)

    cp = Checkpoint(tree_size=data["tree_size"], root_hash=digest("root_hash"),
                    last_hash=digest("last_hash"), timestamp=data["timestamp"],
                    previous=digest("previous"), key_id=data["key_id"],
                    signature=digest("signature", _HEX128))
    _check_fields(cp.tree_size, cp.root_hash, cp.last_hash, cp.timestamp, cp.previous,
                  cp.key_id)
    return cp


def verify_checkpoint_chain(cps: Sequence[Checkpoint],
                            public_keys: Mapping[str, Ed25519PublicKey], *,
                            first_previous: bytes | None = GENESIS) -> list[Fault]:
    """Every fault in a series of checkpoints, oldest first: bad signatures, a missing or
    replaced checkpoint (``previous`` does not match), tree size or time going backwards, and
    forks (two different roots for one size). ``first_previous=None`` accepts a series that
    starts after the first checkpoint ever made."""
    faults: list[Fault] = []
    for i, cp in enumerate(cps):
        t = cp.tree_size
        if not verify_checkpoint(cp, public_keys):
            faults.append(Fault(t, "bad_signature", f"checkpoint {i} (tree size {t}, key "
                                f"{cp.key_id!r}) does not verify"))
        if i == 0:
            if first_previous is not None and cp.previous != first_previous:
                faults.append(Fault(t, "checkpoint_gap", "the first checkpoint does not link "
                                    "to the expected start: earlier checkpoints are missing"))
            continue
        before = cps[i - 1]
        try:
            expected = checkpoint_hash(before)
        except CheckpointFormatError:
            expected = None
        if cp.previous != expected:
            faults.append(Fault(t, "checkpoint_gap", f"checkpoint {i} does not link to "
                                f"checkpoint {i - 1}: one between them is missing or was "
                                f"replaced"))
        if t < before.tree_size or cp.timestamp < before.timestamp:
            faults.append(Fault(t, "checkpoint_rollback", f"checkpoint {i} goes back (tree size "
                                f"{before.tree_size} -> {t}, time {before.timestamp} -> "
                                f"{cp.timestamp})"))
        elif t == before.tree_size and cp.root_hash != before.root_hash:
            faults.append(Fault(t, "checkpoint_mismatch", f"two checkpoints of tree size {t} "
                                f"with different roots: the log forked"))
    return faults
