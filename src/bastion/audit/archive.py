"""Retention: move the oldest records out of the database into archive segments that stay
verifiable on their own and keep the live trail verifiable after them.

A segment is a JSON Lines file: a header, then one line per record (``seq``, ``hash``, and
the exact canonical ``body`` as a JSON string). The header carries where the segment starts
(the previous hash and Merkle compact range), where it ends (last hash and compact range),
and the signed checkpoints inside it. Archiving first signs a checkpoint over everything, so
every archived record is under a signature; then, in one transaction, it records the segment
in ``audit_archives`` and deletes the rows (the append-only triggers allow deleting rows up to
an archived segment's end, and nothing else).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit.chain import GENESIS, Fault, VerifyReport, verify_chain
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.merkle import CompactRange
from bastion.audit.notary import Notary
from bastion.store.fast import FastStore

FORMAT = "bastion-audit-archive/v1"


class ArchiveError(Exception):
    pass


@dataclass(frozen=True)
class Segment:
    path: Path
    first_seq: int
    last_seq: int
    records: int


def _hexes(values: list[bytes]) -> list[str]:
    return [v.hex() for v in values]


async def archive(store: FastStore, notary: Notary, directory: Path, *,
                  before_ms: int | None = None, upto_seq: int | None = None) -> Segment | None:
    """Archive records older than ``before_ms`` (or up to ``upto_seq``). None if nothing."""
    await notary.checkpoint()
    prev = await store.one("SELECT last_seq, last_hash, frontier FROM audit_archives "
                           "ORDER BY last_seq DESC LIMIT 1")
    first = int(prev[0]) + 1 if prev else 1
    start_prev = bytes(prev[1]) if prev else GENESIS
    frontier = [bytes.fromhex(h) for h in json.loads(prev[2])] if prev else []
    rng = CompactRange.from_state(first - 1, frontier)
    limit_row = await store.one(
        "SELECT MAX(seq) AS m FROM audit_events WHERE event_time < :t AND seq <= :s",
        t=before_ms if before_ms is not None else 2**62,
        s=upto_seq if upto_seq is not None else 2**62)
    last = int(limit_row[0]) if limit_row and limit_row[0] is not None else 0
    covered = max((cp.tree_size for cp in await notary.checkpoints()), default=0)
    last = min(last, covered)  # never archive past the newest signed checkpoint
    if last < first:
        return None
    # an operator's command (bastion audit archive), not a request path: plain file I/O
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # noqa: ASYNC240
    path = directory / f"audit-{first:012d}-{last:012d}.jsonl"
    tmp = path.with_suffix(".partial")
    start_state = {"size": rng.size, "frontier": _hexes(rng.frontier())}
    cps = [json.loads(cp.to_json()) for cp in await notary.checkpoints()
           if first <= cp.tree_size <= last]
    count, last_hash, expected = 0, start_prev, first
    with open(tmp, "w", encoding="ascii") as out:  # noqa: ASYNC230
        out.write(json.dumps({"format": FORMAT, "first_seq": first, "last_seq": last,
                              "start_prev": start_prev.hex(), "start": start_state,
                              "checkpoints": cps}, sort_keys=True) + "\n")
        after = first - 1
        while after < last:
            rows = await store.all("SELECT seq, body, hash FROM audit_events WHERE seq > :a "
                                   "AND seq <= :l ORDER BY seq LIMIT 5000", a=after, l=last)
            if not rows:
                break
            for row in rows:
                seq, body, leaf = int(row[0]), bytes(row[1]), bytes(row[2])
                if seq != expected:
                    raise ArchiveError(f"gap before seq {seq}: run 'bastion audit verify' "
                                       "before archiving")
                out.write(json.dumps({"seq": seq, "hash": leaf.hex(),
                                      "body": body.decode("ascii")}) + "\n")
                rng.append(leaf)
                last_hash, expected, count = leaf, seq + 1, count + 1
            after = int(rows[-1][0])
        out.write(json.dumps({"end": {"last_hash": last_hash.hex(), "size": rng.size,
                                      "frontier": _hexes(rng.frontier())}}) + "\n")
        out.flush()
        os.fsync(out.fileno())
    if count != last - first + 1:
        tmp.unlink()
        raise ArchiveError("records under the checkpoint are missing")
    os.replace(tmp, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    async with store.transaction() as tx:
        await tx.run("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, "
                     "sha256, frontier, created_at) VALUES (:l, :f, :h, :p, :d, :fr, :t)",
                     l=last, f=first, h=last_hash, p=str(path), d=digest,
                     fr=json.dumps(_hexes(rng.frontier())), t=int(time.time()))
        await tx.run("DELETE FROM audit_events WHERE seq <= :l", l=last)
    return Segment(path, first, last, count)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="ascii") as f:
        for line in f:
            yield json.loads(line)


def verify_segment(path: Path, public_keys: dict[str, Ed25519PublicKey]) -> VerifyReport:
    """Verify one archive file on its own: its chain, its checkpoints' signatures and roots."""
    lines = _lines(path)
    try:
        header = next(lines)
    except (StopIteration, ValueError) as exc:
        raise ArchiveError(f"{path} is not an audit archive") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchiveError(f"{path} is not an audit archive")
    start = header["start"]
    rng = CompactRange.from_state(int(start["size"]),
                                  [bytes.fromhex(h) for h in start["frontier"]])
    cps = [Checkpoint.from_json(c) for c in header["checkpoints"]]
    end: dict[str, Any] = {}

    def rows() -> Iterator[tuple[int, bytes, bytes]]:
        for item in lines:
            if "end" in item:
                end.update(item["end"])
                return
            yield int(item["seq"]), str(item["body"]).encode("ascii"), bytes.fromhex(
                item["hash"])

    report = verify_chain(rows(), start_seq=int(header["first_seq"]),
                          start_prev=bytes.fromhex(header["start_prev"]), checkpoints=cps,
                          public_keys=public_keys, start_range=rng)
    last_seq = int(header["last_seq"])
    if report.ok and (report.last_seq != last_seq
                      or end.get("last_hash") != report.last_hash.hex()):
        fault = Fault(report.last_seq + 1, "truncated",
                      f"the segment should end at seq {last_seq} with its end line")
        return replace(report, ok=False, faults=(fault,))
    return report
