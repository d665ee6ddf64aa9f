"""Signed checkpoints of the trail, and verification of what is stored.

A checkpoint is a signed tree head (RFC 9162 Merkle root over the records' leaf hashes)
for the first ``tree_size`` records, chained to the previous checkpoint like CloudTrail's
digest files. The Ed25519 signing key is wrapped by the key-encryption key, like the token
signing keys (and by the KMS once it exists). The tree's compact range ("frontier") is kept
with each checkpoint so the next one continues in O(new records).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.audit.chain import GENESIS, VerifyReport, link, verify_chain
from bastion.audit.checkpoint import Checkpoint, checkpoint_hash, sign_checkpoint
from bastion.audit.merkle import CompactRange
from bastion.audit.trail import ADVISORY_LOCK
from bastion.kms import KeyWrapper
from bastion.store.fast import FastStore, Tx

log = logging.getLogger("bastion.audit")
KEY_PURPOSE = "audit-checkpoint"
CHUNK = 10_000


@dataclass(frozen=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    frontier: list[bytes]


def _decode(document: str) -> StoredCheckpoint:
    doc = json.loads(document)
    return StoredCheckpoint(Checkpoint.from_json(doc["checkpoint"]),
                            [bytes.fromhex(h) for h in doc["frontier"]])


def _encode(cp: Checkpoint, frontier: Sequence[bytes]) -> str:
    return json.dumps({"checkpoint": cp.to_json(), "frontier": [h.hex() for h in frontier]},
                      sort_keys=True)


class Notary:
    def __init__(self, store: FastStore, wrapper: KeyWrapper, *, postgres: bool) -> None:
        self.store = store
        self.wrapper = wrapper
        self.postgres = postgres
        self._key: tuple[str, Ed25519PrivateKey] | None = None

    async def _signing_key(self, tx: Tx) -> tuple[str, Ed25519PrivateKey]:
        if self._key is not None:
            return self._key
        row = await tx.one("SELECT kid, private_key FROM audit_signing_keys WHERE status = "
                           "'active' ORDER BY created_at DESC LIMIT 1")
        if row is None:
            key = Ed25519PrivateKey.generate()
            kid = "audit-" + secrets.token_hex(6)
            raw = key.private_bytes_raw()
            await tx.run("INSERT INTO audit_signing_keys (kid, private_key, public_key, "
                         "status, created_at) VALUES (:k, :p, :pub, 'active', :t)",
                         k=kid, p=self.wrapper.wrap(raw, KEY_PURPOSE),
                         pub=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                         t=int(time.time()))
            self._key = (kid, key)
        else:
            raw = self.wrapper.unwrap(bytes(row[1]), KEY_PURPOSE)
            self._key = (row[0], Ed25519PrivateKey.from_private_bytes(raw))
        return self._key

    async def public_keys(self) -> dict[str, Ed25519PublicKey]:
        rows = await self.store.all("SELECT kid, public_key FROM audit_signing_keys")
        return {r[0]: Ed25519PublicKey.from_public_bytes(bytes(r[1])) for r in rows}

    async def checkpoint(self) -> Checkpoint | None:
        """Sign a checkpoint over every record so far, if any came since the last one."""
        async with self.store.transaction() as tx:
            if self.postgres:
                await tx.one("SELECT pg_advisory_xact_lock(:k)", k=ADVISORY_LOCK)
            last = await tx.one("SELECT document FROM audit_checkpoints ORDER BY tree_size "
                                "DESC LIMIT 1")
            tree = CompactRange()
            previous = GENESIS
            link_from = GENESIS
            if last is not None:
                stored = _decode(last[0])
                tree = CompactRange.from_state(stored.checkpoint.tree_size, stored.frontier)
                previous = checkpoint_hash(stored.checkpoint)
                link_from = stored.checkpoint.last_hash
            start = tree.size
            last_hash = None
            while True:
                rows = await tx.all("SELECT seq, body, hash FROM audit_events WHERE seq > :s "
                                    "ORDER BY seq LIMIT :n", s=tree.size, n=CHUNK)
                for row in rows:
                    seq, leaf = int(row[0]), bytes(row[2])
                    # never sign over a damaged trail: a signature would blur the diagnosis
                    if seq != tree.size + 1 or link(link_from, bytes(row[1])) != leaf:
                        log.error("audit trail damaged at seq %d: not signing; run "
                                  "'bastion audit verify'", seq)
                        return None
                    tree.append(leaf)
                    last_hash = link_from = leaf
                if len(rows) < CHUNK:
                    break
            if tree.size == start or last_hash is None:
                return None
            kid, key = await self._signing_key(tx)
            cp = sign_checkpoint(key, kid, tree.size, tree.root(), last_hash,
                                 int(time.time() * 1000), previous)
            await tx.run("INSERT INTO audit_checkpoints (tree_size, document, created_at) "
                         "VALUES (:n, :d, :t) ON CONFLICT (tree_size) DO NOTHING",
                         n=cp.tree_size, d=_encode(cp, tree.frontier()), t=int(time.time()))
            return cp

    async def checkpoints(self) -> list[Checkpoint]:
        rows = await self.store.all("SELECT document FROM audit_checkpoints ORDER BY tree_size")
        return [_decode(r[0]).checkpoint for r in rows]

    async def verify(self, *, kept: Sequence[Checkpoint] = ()) -> VerifyReport:
        """Walk the stored trail (from the last archived segment on) and check every link,
        every stored checkpoint and every checkpoint ``kept`` elsewhere (which also reveals
        a truncated tail)."""
        archived = await self.store.one("SELECT last_seq, last_hash, frontier FROM "
                                        "audit_archives ORDER BY last_seq DESC LIMIT 1")
        start_seq = int(archived[0]) + 1 if archived else 1
        start_prev = bytes(archived[1]) if archived else GENESIS
        start_range = CompactRange.from_state(
            start_seq - 1, [bytes.fromhex(h) for h in json.loads(archived[2])]) \
            if archived else None
        checkpoints = [*await self.checkpoints(), *kept]
        keys = await self.public_keys()

        async def chunks() -> AsyncIterator[list[tuple[int, bytes, bytes]]]:
            after = start_seq - 1
            while True:
                rows = await self.store.all("SELECT seq, body, hash FROM audit_events WHERE "
                                            "seq > :s ORDER BY seq LIMIT :n", s=after, n=CHUNK)
                if not rows:
                    return
                yield [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]
                after = int(rows[-1][0])

        source = chunks()

        async def next_chunk() -> list[tuple[int, bytes, bytes]]:
            try:
                return await source.__anext__()
            except StopAsyncIteration:
                return []

        def rows() -> Iterator[tuple[int, bytes, bytes]]:
            while chunk := anyio.from_thread.run(next_chunk):
                yield from chunk

        def run() -> VerifyReport:
            return verify_chain(rows(), start_seq=start_seq, start_prev=start_prev,
                                checkpoints=checkpoints, public_keys=keys,
                                start_range=start_range)

        report: VerifyReport = await anyio.to_thread.run_sync(run)
        return report


def kept_checkpoint(data: dict[str, Any]) -> Checkpoint:
    """A checkpoint exported with ``bastion audit checkpoint`` and kept elsewhere."""
    return Checkpoint.from_json(data)
