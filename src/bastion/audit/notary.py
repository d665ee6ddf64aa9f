"""Signed checkpoints of the trail, and verification of what is stored.

A checkpoint is a signed tree head (RFC 9162 Merkle root over the records' leaf hashes)
for the first ``tree_size`` records, chained to the previous checkpoint like CloudTrail's
digest files. The Ed25519 signing key is wrapped like Bastion's other secrets, by the KMS
key ``alias/bastion/secrets`` (kms/secrets.py; older values by the key-encryption key). The
tree's compact range ("frontier") is kept with each checkpoint so the next one continues in
O(new records).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio.from_thread
import anyio.to_thread
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.audit.archive import trusted_archives, values
from bastion.audit.chain import GENESIS, Fault, VerifyReport, link, verify_chain
from bastion.audit.checkpoint import Checkpoint, checkpoint_hash, sign_checkpoint
from bastion.audit.merkle import CompactRange
from bastion.audit.trail import ADVISORY_LOCK, search_columns
from bastion.kms import KeyWrapper, UnwrapError
from bastion.store.fast import FastStore, Tx

log = logging.getLogger("bastion.audit")
KEY_PURPOSE = "audit-checkpoint"
CHUNK = 10_000


@dataclass(frozen=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    frontier: list[bytes]


def _decode(document: Any) -> StoredCheckpoint:
    """A stored checkpoint document; raises ValueError for anything else (any type, any
    shape, any depth: orjson refuses nesting deeper than 1024 instead of recursing)."""
    try:
        doc = orjson.loads(document) if isinstance(document, str | bytes) else None
        if not isinstance(doc, dict) or not isinstance(doc.get("frontier"), list) \
                or not all(isinstance(h, str) for h in doc["frontier"]):
            raise ValueError("not a stored checkpoint document")
        stored = StoredCheckpoint(Checkpoint.from_json(doc["checkpoint"]),
                                  [bytes.fromhex(h) for h in doc["frontier"]])
    except ValueError:
        raise
    except Exception as exc:  # KeyError, TypeError, RecursionError, ...: malformed all the same
        raise ValueError(f"not a stored checkpoint document ({type(exc).__name__})") from exc
    return stored


def _continuable(document: Any) -> StoredCheckpoint:
    """A stored checkpoint the next one can continue from: readable, and its frontier fits
    its tree size. Raises ValueError otherwise."""
    stored = _decode(document)
    try:
        CompactRange.from_state(stored.checkpoint.tree_size, stored.frontier)
    except Exception as exc:
        raise ValueError("its frontier does not fit its tree size") from exc
    return stored


def _encode(cp: Checkpoint, frontier: Sequence[bytes]) -> str:
    return json.dumps({"checkpoint": cp.to_json(), "frontier": [h.hex() for h in frontier]},
                      sort_keys=True)


def _unwrapped(wrapper: KeyWrapper, kid: Any, wrapped: Any,
               public: Any) -> Ed25519PrivateKey | None:
    """The private key of one ``audit_signing_keys`` row, or None (logged) when the row does
    not hold a key wrapped by ``wrapper`` whose public key is the stored one. Never raises: a
    row someone added, of whatever type or size, cannot stop signing or verification."""
    if not isinstance(wrapped, bytes | bytearray | memoryview) \
            or not isinstance(public, bytes | bytearray | memoryview):
        log.warning("audit signing key %.80r: stored as %s/%s, not bytes: ignored", kid,
                    type(wrapped).__name__, type(public).__name__)
        return None
    try:
        found = Ed25519PrivateKey.from_private_bytes(wrapper.unwrap(bytes(wrapped),
                                                                    KEY_PURPOSE))
    except UnwrapError:
        log.error("audit signing key %.80r does not unwrap with %s: not used", kid,
                  wrapper.wrapped_by)
        return None
    except Exception as exc:  # a malformed row, whatever the wrapper makes of it
        log.error("audit signing key %.80r cannot be read (%s): not used", kid,
                  type(exc).__name__)
        return None
    if not hmac.compare_digest(found.public_key().public_bytes_raw(), bytes(public)):
        log.error("audit signing key %.80r: the stored public key is not the wrapped key's: "
                  "not used", kid)
        return None
    return found


async def _newest_readable(tx: Tx) -> StoredCheckpoint | None:
    """The newest stored checkpoint that can be read: the next one continues from it. One
    that cannot (altered: verify names it) is skipped, so it cannot stop signing."""
    last = await tx.one("SELECT tree_size, document FROM audit_checkpoints ORDER BY "
                        "tree_size DESC LIMIT 1")
    if last is None:
        return None
    try:
        return _continuable(last[1])
    except ValueError:
        pass
    for size, document in map(values, await tx.all(
            "SELECT tree_size, document FROM audit_checkpoints ORDER BY tree_size DESC")):
        try:
            return _continuable(document)
        except ValueError:
            log.error("stored audit checkpoint of tree size %.40r cannot be read: skipped; "
                      "run 'bastion audit verify'", size)
    return None


class Notary:
    def __init__(self, store: FastStore, wrapper: KeyWrapper, *, postgres: bool) -> None:
        self.store = store
        self.wrapper = wrapper
        self.postgres = postgres
        self._key: tuple[str, Ed25519PrivateKey] | None = None

    async def _signing_key(self, tx: Tx) -> tuple[str, Ed25519PrivateKey]:
        if self._key is not None:
            return self._key
        # the newest active key that unwraps with the KEK and matches its public key: a row
        # someone added cannot take over (or stop) signing
        for kid, wrapped, public in map(values, await tx.all(
                "SELECT kid, private_key, public_key FROM audit_signing_keys WHERE status = "
                "'active' ORDER BY created_at DESC")):
            found = _unwrapped(self.wrapper, kid, wrapped, public)
            if found is not None:
                self._key = (str(kid), found)
                return self._key
        key = Ed25519PrivateKey.generate()
        kid = "audit-" + secrets.token_hex(6)
        raw = key.private_bytes_raw()
        await tx.run("INSERT INTO audit_signing_keys (kid, private_key, public_key, "
                     "status, created_at) VALUES (:k, :p, :pub, 'active', :t)",
                     k=kid, p=self.wrapper.wrap(raw, KEY_PURPOSE),
                     pub=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                     t=int(time.time()))
        self._key = (kid, key)
        return self._key

    async def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The keys whose signatures verify trusts: only those whose private key unwraps with
        the KEK and matches the stored public key. A row someone added with a key of their
        own (they cannot wrap it) or whose public key was replaced is left out, so what it
        signed reads as a bad signature."""
        rows = await self.store.all("SELECT kid, private_key, public_key FROM "
                                    "audit_signing_keys")
        keys: dict[str, Ed25519PublicKey] = {}
        for kid, wrapped, public in map(values, rows):
            found = _unwrapped(self.wrapper, kid, wrapped, public)
            if found is not None:
                keys[str(kid)] = found.public_key()
        return keys

    async def signer(self, tx: Tx) -> tuple[str, Callable[[bytes], bytes]]:
        """``(key_id, sign)`` with the notary's key, for statements other than checkpoints
        (archive rows): Ed25519 over domain-separated text."""
        kid, key = await self._signing_key(tx)
        return kid, key.sign

    async def checkpoint(self) -> Checkpoint | None:
        """Sign a checkpoint over every record so far, if any came since the last one."""
        async with self.store.transaction() as tx:
            if self.postgres:
                await tx.one("SELECT pg_advisory_xact_lock(:k)", k=ADVISORY_LOCK)
            stored = await _newest_readable(tx)
            tree = CompactRange()
            previous = GENESIS
            link_from = GENESIS
            if stored is not None:
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
        """The stored checkpoints that can be read (``verify`` names the others)."""
        return (await self._stored_checkpoints())[0]

    async def _stored_checkpoints(self) -> tuple[list[Checkpoint], list[Fault]]:
        """The stored checkpoints; one whose document cannot be read is a fault, not a
        crash (it is signed data, so a broken one was tampered with)."""
        cps: list[Checkpoint] = []
        faults: list[Fault] = []
        for size, document in map(values, await self.store.all(
                "SELECT tree_size, document FROM audit_checkpoints ORDER BY tree_size")):
            try:
                cps.append(_decode(document).checkpoint)
            except ValueError as exc:  # _decode raises nothing else
                seq = size if type(size) is int and size > 0 else 1
                faults.append(Fault(seq, "bad_signature", f"the stored checkpoint of tree "
                                    f"size {size!r} cannot be read "
                                    f"({type(exc.__cause__ or exc).__name__}): "
                                    f"it was altered; it was not used"))
        return cps, faults

    async def verify(self, *, kept: Sequence[Checkpoint] = ()) -> VerifyReport:
        """Walk the stored trail and check every link, every stored checkpoint and every
        checkpoint ``kept`` elsewhere (which also reveals a truncated tail).

        Verification starts after the archived segments only as far as their rows are
        trusted (signed by the notary key: ``archive.trusted_archives``); a forged or
        altered archive row is a fault and the records it claims are checked as if never
        archived. Checkpoints over archived records are checked against the archive rows
        that vouch for them, never skipped. Each record's search columns are checked
        against its body, and a value stored with the wrong type is a fault, not a crash.
        A row verify does not walk (seq below 1, or inside a trusted archived range) is a
        fault (``inserted``), and so is a table or index that could hide rows from
        ``audit search`` (``schema_tampered``)."""
        keys = await self.public_keys()
        trusted = await trusted_archives(self.store, keys)
        stored, faults = await self._stored_checkpoints()
        start_seq = trusted.last_seq + 1
        faults += await self._unwalked_rows(start_seq)
        faults += await self._schema_faults()
        checkpoints = [*stored, *kept]
        verified_old = 0
        for cp in checkpoints:
            if cp.tree_size >= start_seq - 1:
                continue
            if not cp.verify(keys):
                faults.append(Fault(cp.tree_size, "bad_signature",
                                    f"checkpoint of tree size {cp.tree_size} (key "
                                    f"{cp.key_id!r}) does not verify; it was not used"))
                continue
            fault = trusted.check_old_checkpoint(cp)
            if fault is None:
                verified_old += 1
            else:
                faults.append(fault)
        row_faults: list[Fault] = []

        async def chunks() -> AsyncIterator[list[tuple[Any, ...]]]:
            after = start_seq - 1
            while True:
                rows = await self.store.all(_ROWS_SQL, s=after, n=CHUNK)
                if not rows:
                    return
                yield [values(r) for r in rows]
                seqs = [r[0] for r in rows if type(r[0]) is int]
                if not seqs or len(rows) < CHUNK:  # a non-integer seq sorts last (SQLite)
                    return
                after = max(seqs)

        source = chunks()

        async def next_chunk() -> list[tuple[Any, ...]]:
            try:
                return await source.__anext__()
            except StopAsyncIteration:
                return []

        def rows() -> Iterator[tuple[int, bytes, bytes]]:
            while chunk := anyio.from_thread.run(next_chunk):
                for stored_row in chunk:
                    row, fault = check_row(stored_row)
                    if fault is not None:
                        row_faults.append(fault)
                    yield row

        def run() -> VerifyReport:
            return verify_chain(rows(), start_seq=start_seq, start_prev=trusted.last_hash,
                                checkpoints=[cp for cp in checkpoints
                                             if cp.tree_size >= start_seq - 1],
                                public_keys=keys, start_range=trusted.start_range())

        report: VerifyReport = await anyio.to_thread.run_sync(run)
        # on a tie: a forged archive or checkpoint, or a value of the wrong type, names the
        # cause; then the chain's diagnosis (a swap also leaves the columns out of place);
        # then a search column that disagrees with an intact body
        ranked = [(f, 0) for f in [*trusted.faults, *faults]] + [
            (f, 0 if f.detail.startswith(_WRONG_TYPE) else 2) for f in row_faults] + [
            (f, 1) for f in report.faults]
        ordered = [f for f, _rank in sorted(ranked, key=lambda fr: (fr[0].seq, fr[1]))]
        if not ordered:
            return replace(report, checkpoints_verified=report.checkpoints_verified
                           + verified_old)
        return replace(report, ok=False, faults=tuple(ordered[:1]),
                       checkpoints_verified=report.checkpoints_verified + verified_old)

    async def _unwalked_rows(self, start_seq: int) -> list[Fault]:
        """Rows below where the walk starts: none can be there (seq starts at 1, retention
        deletes what it archives in the same transaction), yet ``audit search`` would show
        them. One query on the primary key."""
        found = await self.store.one("SELECT MIN(seq), MAX(seq), COUNT(*) FROM audit_events "
                                     "WHERE seq < :s", s=start_seq)
        if found is None or not found[2]:
            return []
        low, high, count = found[0], found[1], int(found[2])
        where = "below seq 1" if start_seq == 1 else (
            f"below seq 1 or inside the archived seq 1-{start_seq - 1}")
        return [Fault(low if type(low) is int and low > 0 else 1, "inserted",
                      f"{count} row(s) at seq {low!r}..{high!r} lie {where}, where no record "
                      f"can be: they were inserted (verify does not walk them, 'audit search' "
                      f"shows them)")]

    async def _schema_faults(self) -> list[Fault]:
        """Cheap checks that ``audit_events`` is what search relies on: a plain table whose
        indexes hold every row. An index that leaves a row out (partial, or relabelled as
        whole through SQLite's writable_schema), a view, a rule or a row-level security
        policy would hide records from ``audit search`` while verify reads them all."""
        problems: list[str] = []
        try:
            if self.postgres:
                problems = await self._postgres_schema()
            else:
                problems = await self._sqlite_schema()
        except Exception as exc:  # a catalog that cannot be read is itself the fault
            problems = [f"its catalog cannot be checked ({type(exc).__name__}: {exc})"[:300]]
        if not problems:
            return []
        return [Fault(1, "schema_tampered", "the audit_events table was altered so that "
                      "'audit search' may not show every record: " + "; ".join(problems))]

    async def _sqlite_schema(self) -> list[str]:
        problems = []
        for kind, name, sql in map(values, await self.store.all(
                "SELECT type, name, sql FROM sqlite_master WHERE name = 'audit_events' OR "
                "tbl_name = 'audit_events'")):
            if name == "audit_events" and kind != "table":
                problems.append(f"audit_events is a {kind}, not a table")
            elif kind == "index" and isinstance(sql, str) and _WHERE.search(sql):
                problems.append(f"index {name} is partial")
        if problems:
            return problems
        # the table and its indexes only; catches an index whose stored definition was
        # edited (PRAGMA writable_schema) to pass a partial one off as whole
        checked = [str(r[0]) for r in await self.store.all(
            "PRAGMA integrity_check(audit_events)")]
        if checked != ["ok"]:
            problems.append("PRAGMA integrity_check(audit_events): "
                            + "; ".join(checked[:5])[:500])
        return problems

    async def _postgres_schema(self) -> list[str]:
        found = await self.store.one(
            "SELECT c.relkind::text, c.relhasrules, c.relrowsecurity, c.relforcerowsecurity, "
            "(SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid "
            "AND i.indpred IS NOT NULL), "
            "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
            "FROM pg_class c WHERE c.oid = to_regclass('audit_events')")
        if found is None:
            return ["audit_events does not resolve to a relation"]
        kind, rules, rls, forced, partial, policies = values(found)
        problems = []
        if str(kind) != "r":
            problems.append(f"audit_events is not an ordinary table (relkind {kind!r})")
        if rules:
            problems.append("it has rewrite rules")
        if rls or forced or policies:
            problems.append("it has row-level security")
        if partial:
            problems.append(f"{partial} of its indexes are partial")
        return problems


_WHERE = re.compile(r"\bWHERE\b", re.IGNORECASE)
_ROWS_SQL = ("SELECT seq, body, hash, event_time, event_name, actor, resource, outcome, "
             "request_id FROM audit_events WHERE seq > :s ORDER BY seq LIMIT :n")
_WRONG_TYPE = "stored with the wrong type"
_SEARCH = ("event_time", "event_name", "actor", "resource", "outcome", "request_id")


def check_row(stored: Sequence[Any]) -> tuple[tuple[int, bytes, bytes], Fault | None]:
    """One stored row as ``(seq, body, hash)`` for the chain, and the fault in it that the
    chain cannot see: a value stored with the wrong type (SQLite keeps whatever it is given),
    a body that is not a JSON object, or a search column that disagrees with the body (the
    columns are outside the hash: editing one would hide a record from ``audit search``)."""
    seq, body, leaf = stored[0], stored[1], stored[2]
    fault_seq = seq if type(seq) is int else 0
    problems = []
    if isinstance(body, memoryview | bytearray):
        body = bytes(body)
    if not isinstance(body, bytes):
        problems.append(f"its body is stored as {type(body).__name__}, not bytes")
        body = b""
    if isinstance(leaf, memoryview | bytearray):
        leaf = bytes(leaf)
    if not isinstance(leaf, bytes):
        problems.append(f"its hash is stored as {type(leaf).__name__}, not bytes")
        leaf = b""
    if not problems:
        try:
            record = orjson.loads(body)
        except Exception:  # stored data: any failure to parse it is the fault
            record = None
        if not isinstance(record, dict):
            problems.append("its body is not a JSON object")
        else:
            try:
                expected = search_columns(body, record)
            except Exception:  # search_columns is total; fail closed all the same
                expected = None
            if expected is None:
                problems.append("its body does not have the shape of a record")
            else:
                for name, value in zip(_SEARCH, stored[3:], strict=True):
                    if value != expected[name]:
                        problems.append(f"its search column {name} is {value!r} but the "
                                        f"body says {expected[name]!r}")
    row = (seq, body, leaf)
    if not problems:
        return row, None
    wrong_type = any(" is stored as " in p for p in problems)
    lead = _WRONG_TYPE if wrong_type else "tampered with outside the hash"
    return row, Fault(max(fault_seq, 1), "modified",
                      f"{lead}: seq {seq!r}: " + "; ".join(problems))


def kept_checkpoint(data: dict[str, Any]) -> Checkpoint:
    """A checkpoint exported with ``bastion audit checkpoint`` and kept elsewhere."""
    return Checkpoint.from_json(data)
