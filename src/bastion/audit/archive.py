"""Retention: move the oldest records out of the database into archive segments that stay
verifiable on their own and keep the live trail verifiable after them.

A segment is a JSON Lines file: a header, then one line per record (``seq``, ``hash``, and
the exact canonical ``body`` as a JSON string). The header carries where the segment starts
(the previous hash and Merkle compact range), where it ends (last hash and compact range),
and the signed checkpoints inside it. Archiving first signs a checkpoint over everything, so
every archived record is under a signature, and checks the records it moves (every link, and
every stored checkpoint in the range). Then, in one transaction, it records the segment in
``audit_archives`` and deletes the rows (the triggers allow deleting only rows an archive row
covers).

An archive row is what lets records disappear from the database, so it is signed: the
notary's Ed25519 key (wrapped by the KEK) signs :func:`archive_statement`, and
``bastion audit verify`` trusts a row only when that signature verifies and the row
continues the one before it. Someone with write access to the database but not the key file
cannot make a row that verify accepts. A row written before signatures existed is trusted
only when its segment file is there and verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit.chain import GENESIS, Fault, VerifyReport, link, verify_chain
from bastion.audit.checkpoint import Checkpoint, checkpoint_hash
from bastion.audit.merkle import CompactRange
from bastion.store.fast import FastStore, Row

if TYPE_CHECKING:
    from bastion.audit.notary import Notary

FORMAT = "bastion-audit-archive/v1"
STATEMENT = "bastion-audit-archive-row/v1"
MAX_LEGACY_SEGMENT = 1 << 30  # bytes: an unsigned row's segment file larger than this is
# not read by verify (use 'bastion audit verify-archive' on it)
ROWS_SQL = ("SELECT first_seq, last_seq, start_prev, last_hash, frontier, sha256, path, "
            "checkpoints, key_id, signature FROM audit_archives ORDER BY last_seq")


class ArchiveError(Exception):
    pass


@dataclass(frozen=True)
class Segment:
    path: Path
    first_seq: int
    last_seq: int
    records: int


def values(row: Row) -> tuple[Any, ...]:
    """A result row's values, by position."""
    return tuple(row[i] for i in range(len(row)))


def _hexes(hashes: Sequence[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def archive_statement(*, first_seq: int, last_seq: int, start_prev: bytes, last_hash: bytes,
                      frontier: Sequence[bytes], checkpoints: Sequence[tuple[int, bytes]],
                      sha256: str, key_id: str) -> bytes:
    """The domain-separated ASCII text the notary signs for one archive row: the segment's
    place in the trail (seqs, the hash before it and its last hash, the Merkle frontier the
    live trail continues from), the checkpoints its records were checked against (tree size
    and ``checkpoint_hash``) and the file's SHA-256."""
    cps = ",".join(f"{size}:{digest.hex()}" for size, digest in checkpoints) or "-"
    return (f"{STATEMENT}\nfirst_seq {first_seq}\nlast_seq {last_seq}\n"
            f"start_prev {start_prev.hex()}\nlast_hash {last_hash.hex()}\n"
            f"frontier {','.join(_hexes(frontier)) or '-'}\ncheckpoints {cps}\n"
            f"sha256 {sha256}\nkey_id {key_id}\n").encode("ascii")


@dataclass(frozen=True)
class ArchiveRow:
    """One ``audit_archives`` row, parsed (``ArchiveRow.parse`` refuses malformed ones)."""

    first_seq: int
    last_seq: int
    start_prev: bytes | None
    last_hash: bytes
    frontier: list[bytes]
    sha256: str
    path: str
    checkpoints: list[tuple[int, bytes]] | None
    key_id: str | None
    signature: bytes | None

    @classmethod
    def parse(cls, row: Sequence[Any]) -> ArchiveRow:
        """Raises ValueError for anything stored with the wrong type or shape."""
        first, last, start_prev, last_hash, frontier, sha, path, cps, kid, sig = row

        def blob(value: Any, size: int | None = None) -> bytes:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise ValueError(f"a {type(value).__name__} where bytes belong")
            out = bytes(value)
            if size is not None and len(out) != size:
                raise ValueError(f"{len(out)} bytes where {size} belong")
            return out

        if type(first) is not int or type(last) is not int or not 1 <= first <= last:
            raise ValueError("first_seq and last_seq must be integers, 1 <= first <= last")
        hexes = _json(frontier)
        if not isinstance(hexes, list) or not all(isinstance(h, str) for h in hexes):
            raise ValueError("frontier must be a JSON list of hex strings")
        checkpoints = None
        if cps is not None:
            items = _json(cps)
            if not isinstance(items, list) or not all(
                    isinstance(i, list) and len(i) == 2 and type(i[0]) is int
                    and isinstance(i[1], str) for i in items):
                raise ValueError("checkpoints must be a JSON list of [tree_size, hex]")
            checkpoints = [(int(i[0]), bytes.fromhex(i[1])) for i in items]
        parsed = cls(first_seq=first, last_seq=last,
                     start_prev=None if start_prev is None else blob(start_prev, 32),
                     last_hash=blob(last_hash, 32),
                     frontier=[bytes.fromhex(h) for h in hexes],
                     sha256=sha if isinstance(sha, str) else "", path=str(path),
                     checkpoints=checkpoints,
                     key_id=kid if isinstance(kid, str) else None,
                     signature=None if sig is None else blob(sig))
        parsed.end_range()  # the frontier fits last_seq
        return parsed

    def end_range(self) -> CompactRange:
        return CompactRange.from_state(self.last_seq, self.frontier)

    def statement(self) -> bytes:
        return archive_statement(first_seq=self.first_seq, last_seq=self.last_seq,
                                 start_prev=self.start_prev or b"", last_hash=self.last_hash,
                                 frontier=self.frontier, checkpoints=self.checkpoints or [],
                                 sha256=self.sha256, key_id=self.key_id or "")


@dataclass
class TrustedArchives:
    """The archive rows verify may start after: a contiguous run from seq 1, each signed
    (or, before signatures, vouched for by its verified segment file)."""

    rows: list[ArchiveRow] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # tree size -> checkpoint_hash of every checkpoint an archived range was checked against
    covered: dict[int, bytes] = field(default_factory=dict)

    @property
    def last_seq(self) -> int:
        return self.rows[-1].last_seq if self.rows else 0

    @property
    def last_hash(self) -> bytes:
        return self.rows[-1].last_hash if self.rows else GENESIS

    def start_range(self) -> CompactRange | None:
        return self.rows[-1].end_range() if self.rows else None

    def check_old_checkpoint(self, cp: Checkpoint) -> Fault | None:
        """A checkpoint (kept elsewhere or stored) over records that were archived: it must
        match the archive row that ends at its size, or be one of the checkpoints an archived
        range was checked against when it was archived. Anything else is a fault."""
        t = cp.tree_size
        row = next((r for r in self.rows if r.first_seq - 1 <= t <= r.last_seq), None)
        if row is None:  # cannot happen: trusted rows run from seq 1 without gaps
            return Fault(max(t, 1), "deleted", f"the records under the checkpoint of tree "
                         f"size {t} are gone and no trusted archive covers them")
        end = next((r for r in self.rows if r.last_seq == t), None)
        if end is not None:
            if end.last_hash == cp.last_hash and end.end_range().root() == cp.root_hash:
                return None
            return Fault(t, "checkpoint_mismatch",
                         f"the checkpoint of tree size {t} does not match the end of the "
                         f"archived segment {end.first_seq}-{end.last_seq}")
        signed = self.covered.get(t)
        if signed is not None and signed == checkpoint_hash(cp):
            return None
        return Fault(t, "checkpoint_mismatch",
                     f"the checkpoint of tree size {t} is not one the archived segment "
                     f"{row.first_seq}-{row.last_seq} was checked against: its records may "
                     f"have been altered before they were archived (verify the segment file "
                     f"with 'bastion audit verify-archive')")


def _json(text: Any) -> Any:
    """A JSON column's value, or None when it is not a string of JSON. Never raises: orjson
    refuses nesting deeper than 1024 levels where json.loads would recurse and crash."""
    if not isinstance(text, str):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _row_fault(row: Sequence[Any], reason: str) -> Fault:
    first = row[0] if type(row[0]) is int else 1
    last = row[1] if type(row[1]) is int else "?"
    return Fault(max(first, 1), "bad_signature",
                 f"the archive row for seq {first}-{last} is not vouched for ({reason}): it "
                 f"was forged or altered, so the records it lets retention delete are not "
                 f"covered by a signed archive")


def _signature_ok(row: ArchiveRow, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    key = keys.get(row.key_id) if row.key_id is not None else None
    if key is None or row.signature is None or len(row.signature) != 64:
        return False
    try:
        key.verify(row.signature, row.statement())
    except (InvalidSignature, ValueError):  # ValueError: a key id or digest that is not ASCII
        return False
    return True


def _legacy_segment(row: ArchiveRow, keys: Mapping[str, Ed25519PublicKey],
                    start_prev: bytes) -> tuple[str | None, dict[int, bytes]]:
    """A row written before rows were signed: trusted only if its segment file is there and
    verifies (chain, checkpoint signatures and roots), and its ends match the row."""
    path = Path(row.path)
    try:
        digest = _file_digest(path)
        if digest is None:
            return (f"unsigned, and its path is not a regular file of at most "
                    f"{MAX_LEGACY_SEGMENT} bytes"), {}
        if digest != row.sha256:
            return "unsigned, and its segment file does not match its digest", {}
        with open(path, encoding="utf-8") as f:
            header = json.loads(f.readline())
        report = verify_segment(path, keys)
        cps = [Checkpoint.from_json(c) for c in header.get("checkpoints", [])]
    except Exception:  # whatever the file holds, the row is not vouched for
        return "unsigned, and its segment file cannot be read or verified", {}
    if not report.ok or header.get("first_seq") != row.first_seq \
            or report.last_seq != row.last_seq or report.last_hash != row.last_hash \
            or header.get("start_prev") != start_prev.hex() \
            or report.root_hash != row.end_range().root():
        return "unsigned, and its segment file does not verify against it", {}
    return None, {cp.tree_size: checkpoint_hash(cp) for cp in cps}


def _file_digest(path: Path) -> str | None:
    """SHA-256 (hex) of a regular file of at most MAX_LEGACY_SEGMENT bytes, read in chunks;
    None for anything else (a device such as /dev/zero, a FIFO, a directory, a larger file).
    Opened non-blocking so a FIFO cannot hang verify; the type is checked on the open file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LEGACY_SEGMENT:
            return None
        h = hashlib.sha256()
        read = 0
        while chunk := f.read(1 << 20):
            read += len(chunk)
            if read > MAX_LEGACY_SEGMENT:  # grew while being read
                return None
            h.update(chunk)
    return h.hexdigest()


async def trusted_archives(store: FastStore,
                           keys: Mapping[str, Ed25519PublicKey]) -> TrustedArchives:
    """The archive rows that verify, from seq 1 on; the first one that does not is a fault,
    and no row after it is trusted (its records are checked as if never archived)."""
    out = TrustedArchives()
    for raw in await store.all(ROWS_SQL):
        start, start_prev = out.last_seq + 1, out.last_hash
        try:
            row = ArchiveRow.parse(values(raw))
        except Exception as exc:  # stored data of any type or shape: the row is malformed
            out.faults.append(_row_fault(values(raw), f"malformed: {exc}"[:300]))
            return out
        if row.first_seq != start:
            out.faults.append(Fault(start, "deleted", f"the archive rows for seq {start}-"
                                    f"{row.first_seq - 1} are missing: they were deleted"))
            return out
        if row.signature is not None or row.start_prev is not None:
            if row.start_prev != start_prev:
                out.faults.append(_row_fault(values(raw), "it does not start where the "
                                             "archive before it ends"))
                return out
            if not _signature_ok(row, keys):
                out.faults.append(_row_fault(values(raw), "its signature does not verify "
                                             "with a trusted audit key"))
                return out
            covered = dict(row.checkpoints or [])
        else:
            reason, covered = _legacy_segment(row, keys, start_prev)
            if reason is not None:
                out.faults.append(_row_fault(values(raw), reason))
                return out
        out.rows.append(row)
        out.covered.update(covered)
    return out


async def archive(store: FastStore, notary: Notary, directory: Path, *,
                  before_ms: int | None = None, upto_seq: int | None = None) -> Segment | None:
    """Archive records older than ``before_ms`` (or up to ``upto_seq``). None if nothing.

    Refuses (``ArchiveError``) when an earlier archive row is not trusted, or when the
    records to archive do not link or do not match a stored checkpoint: a signature over a
    damaged range would vouch for the damage."""
    await notary.checkpoint()
    keys = await notary.public_keys()
    trusted = await trusted_archives(store, keys)
    if trusted.faults:
        raise ArchiveError(f"archive rows are not trusted ({trusted.faults[0].detail}): run "
                           "'bastion audit verify'")
    first, start_prev = trusted.last_seq + 1, trusted.last_hash
    rng = trusted.start_range() or CompactRange()
    limit_row = await store.one(
        "SELECT MAX(seq) AS m FROM audit_events WHERE event_time < :t AND seq <= :s",
        t=before_ms if before_ms is not None else 2**62,
        s=upto_seq if upto_seq is not None else 2**62)
    last = int(limit_row[0]) if limit_row and limit_row[0] is not None else 0
    stored = [cp for cp in await notary.checkpoints() if cp.verify(keys)]
    covered = max((cp.tree_size for cp in stored), default=0)
    last = min(last, covered)  # never archive past the newest signed checkpoint
    if last < first:
        return None
    inside = [cp for cp in stored if first <= cp.tree_size <= last]
    by_size = {cp.tree_size: cp for cp in inside}
    # an operator's command (bastion audit archive), not a request path: plain file I/O
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # noqa: ASYNC240
    path = directory / f"audit-{first:012d}-{last:012d}.jsonl"
    tmp = path.with_suffix(".partial")
    start_state = {"size": rng.size, "frontier": _hexes(rng.frontier())}
    count, last_hash, expected = 0, start_prev, first
    try:
        with open(tmp, "w", encoding="utf-8") as out:  # noqa: ASYNC230
            out.write(json.dumps({"format": FORMAT, "first_seq": first, "last_seq": last,
                                  "start_prev": start_prev.hex(), "start": start_state,
                                  "checkpoints": [json.loads(cp.to_json()) for cp in inside]},
                                 sort_keys=True) + "\n")
            after = first - 1
            while after < last:
                rows = await store.all("SELECT seq, body, hash FROM audit_events WHERE "
                                       "seq > :a AND seq <= :l ORDER BY seq LIMIT 5000",
                                       a=after, l=last)
                if not rows:
                    break
                for row in rows:
                    seq, body, leaf = row[0], row[1], row[2]
                    if type(seq) is not int or seq != expected \
                            or not isinstance(body, bytes | memoryview) \
                            or not isinstance(leaf, bytes | memoryview) \
                            or link(last_hash, bytes(body)) != bytes(leaf):
                        raise ArchiveError(f"the trail is damaged at seq {expected}: run "
                                           "'bastion audit verify' before archiving")
                    body, leaf = bytes(body), bytes(leaf)
                    out.write(json.dumps({"seq": seq, "hash": leaf.hex(),
                                          "body": body.decode("utf-8")}) + "\n")
                    rng.append(leaf)
                    last_hash, expected, count = leaf, seq + 1, count + 1
                    cp = by_size.get(seq)
                    if cp is not None and (cp.last_hash != leaf or cp.root_hash != rng.root()):
                        raise ArchiveError(f"the records do not match the checkpoint of tree "
                                           f"size {seq}: run 'bastion audit verify'")
                after = int(rows[-1][0])
            out.write(json.dumps({"end": {"last_hash": last_hash.hex(), "size": rng.size,
                                          "frontier": _hexes(rng.frontier())}}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        if count != last - first + 1:
            raise ArchiveError("records under the checkpoint are missing")
    except (ArchiveError, UnicodeDecodeError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, UnicodeDecodeError):
            raise ArchiveError(f"the trail is damaged at seq {expected}: a body is not "
                               "UTF-8") from None
        raise
    os.replace(tmp, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    checkpoints = [(cp.tree_size, checkpoint_hash(cp)) for cp in inside]
    frontier = rng.frontier()
    async with store.transaction() as tx:
        kid, sign = await notary.signer(tx)
        signature = sign(archive_statement(
            first_seq=first, last_seq=last, start_prev=start_prev, last_hash=last_hash,
            frontier=frontier, checkpoints=checkpoints, sha256=digest, key_id=kid))
        await tx.run("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, "
                     "sha256, frontier, created_at, start_prev, checkpoints, key_id, "
                     "signature) VALUES (:l, :f, :h, :p, :d, :fr, :t, :sp, :cps, :k, :sig)",
                     l=last, f=first, h=last_hash, p=str(path), d=digest,
                     fr=json.dumps(_hexes(frontier)), t=int(time.time()), sp=start_prev,
                     cps=json.dumps([[n, h.hex()] for n, h in checkpoints]), k=kid,
                     sig=signature)
        await tx.run("DELETE FROM audit_events WHERE seq <= :l", l=last)
    return Segment(path, first, last, count)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def verify_segment(path: Path, public_keys: Mapping[str, Ed25519PublicKey]) -> VerifyReport:
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
            yield int(item["seq"]), str(item["body"]).encode("utf-8"), bytes.fromhex(
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
